import math

import pytest
import torch

from napari_twinvae.core.config import LossWeights
from napari_twinvae.core.losses import (
    kld_loss,
    reconstruction_loss,
    reconstruction_weight,
    regression_loss,
    twin_loss,
)


def test_mse_and_bce_by_hand():
    x = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    r = torch.tensor([[0.5, 0.5], [0.5, 1.0]])
    assert reconstruction_loss(r, x, "mse").item() == pytest.approx((0.25 + 0.25 + 0 + 0.25) / 4)
    bce = (
        -(
            math.log(0.5)
            + math.log(0.5)
            + math.log(0.5)
            + (0.5 * math.log(1e-12 + 1.0) + 0.5 * -100)
        )
        / 4
    )  # torch clamps log(0) at -100
    assert reconstruction_loss(r, x, "bce").item() == pytest.approx(bce, rel=1e-4)
    with pytest.raises(ValueError):
        reconstruction_loss(r, x, "l1")


def test_regression_is_masked_and_zero_is_a_label():
    estimate = torch.tensor([1.0, 2.0, 7.0, 0.5])
    count = torch.tensor([0.0, 4.0, 0.0, 0.0])
    labeled = torch.tensor([True, True, False, True])  # the 7.0 is unlabeled, not 0
    assert regression_loss(estimate, count, labeled).item() == pytest.approx((1 + 4 + 0.25) / 3)


def test_regression_without_labels_is_zero_with_graph():
    estimate = torch.tensor([3.0, 4.0], requires_grad=True)
    loss = regression_loss(estimate, torch.zeros(2), torch.zeros(2, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(estimate.grad, torch.zeros(2))


def test_kld_by_hand():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) = -0.5 * ((1 + 0 - 1 - 1) + (1 + ln2 - 0 - 2))
    expected = -0.5 * ((1 - 1 - 1) + (1 + math.log(2.0) - 2)) / (1 * 128 * 128)
    assert kld_loss(mu, logvar).item() == pytest.approx(expected)
    assert kld_loss(torch.zeros(4, 8), torch.zeros(4, 8)).item() == 0.0


def test_twin_loss_weights_and_switches():
    x = torch.full((2, 1, 128, 128), 0.5)
    rec = torch.full((2, 1, 128, 128), 0.7)
    mu, logvar = torch.tensor([[1.0], [1.0]]), torch.zeros(2, 1)
    estimate, count = torch.tensor([2.0, 5.0]), torch.tensor([1.0, 5.0])
    labeled = torch.tensor([True, True])
    w = LossWeights(reconstruction=100, regression=3, kld=2)
    terms = twin_loss(x, rec, mu, logvar, estimate, count, labeled, w)
    kld = 0.5 * 2 / (2 * 128 * 128)
    assert terms.reconstruction.item() == pytest.approx(0.04)
    assert terms.regression.item() == pytest.approx(0.5)
    assert terms.kld.item() == pytest.approx(kld)
    assert terms.total.item() == pytest.approx(100 * 0.04 + 3 * 0.5 + 2 * kld, rel=1e-5)
    no_decoder = twin_loss(x, None, mu, logvar, estimate, count, labeled, w, regress=False)
    assert no_decoder.total.item() == pytest.approx(2 * kld, rel=1e-5)


def test_cells_reconstruction_counts_a_missed_cell_more_than_plain_mse_does():
    """A decoder that draws only the empty chamber loses far more under "cells" than under MSE,
    relative to one that also draws the cell; a perfect reconstruction costs nothing."""
    x = torch.full((2, 1, 32, 32), 0.5)
    x[:, :, 10:14, 10:14] = 0.6  # one faint cell, 16 of 1,024 pixels
    chamber = torch.full_like(x, 0.5)
    noisy = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert reconstruction_loss(x, x, "cells").item() == 0.0
    mse_ratio = reconstruction_loss(chamber, x).item() / reconstruction_loss(noisy, x).item()
    cells_ratio = (
        reconstruction_loss(chamber, x, "cells").item()
        / reconstruction_loss(noisy, x, "cells").item()
    )
    assert cells_ratio > 5 * mse_ratio


def test_reconstruction_weight_decays():
    w = LossWeights(reconstruction=100, reconstruction_kind="bce", reconstruction_decay=3e-5)
    assert reconstruction_weight(w, 0) == 100
    assert reconstruction_weight(w, 10_000) == pytest.approx(100 * math.exp(-0.3))
    assert reconstruction_weight(LossWeights(), 10_000) == 100
    with pytest.raises(ValueError):
        LossWeights(reconstruction_kind="l2")
