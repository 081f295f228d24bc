"""The twin loss of Kenneweg, Stallmann & Hammer (2023), as pure functions.

Twin_loss(x, l) = C_rec * Rec(x) + C_reg * Reg(x, l) + C_kld * KLD(x), one domain per batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from napari_twinvae.core.config import IMAGE_SIZE, RECONSTRUCTION_KINDS, LossWeights
from napari_twinvae.core.density import map_counts


class LossTerms(NamedTuple):
    total: torch.Tensor
    reconstruction: torch.Tensor  # unweighted
    regression: torch.Tensor  # unweighted
    kld: torch.Tensor  # unweighted


CELL_WEIGHT = 20.0
"""With ``kind="cells"``: the weight of an image's most distinct pixel, over 1 for its background."""


def reconstruction_loss(
    reconstruction: torch.Tensor, x: torch.Tensor, kind: str = "mse"
) -> torch.Tensor:
    """Per pixel: mean squared error (phase contrast), binary cross-entropy (bright field), or
    ``"cells"``, a squared error weighted by how far each pixel lies from its image's median gray
    (the chamber's background), from 1 there to 1 + CELL_WEIGHT at the image's most distinct
    pixel, over the mean weight. Cells are faint and a few percent of the pixels: under plain MSE
    a decoder that draws only the empty chamber is nearly as good as one that draws the cells
    (docs/default-model.md)."""
    if kind == "mse":
        return F.mse_loss(reconstruction, x)
    if kind == "bce":
        # Autocast would refuse BCE in half precision; the loss is cheap, compute it in float32.
        return F.binary_cross_entropy(reconstruction.float(), x.float())
    if kind == "cells":
        r, x = reconstruction.float(), x.float()
        background = x.flatten(1).median(dim=1).values.view(-1, *([1] * (x.ndim - 1)))
        distinct = (x - background).abs()
        peak = distinct.flatten(1).amax(dim=1).view_as(background).clamp_min(1e-6)
        weight = 1.0 + CELL_WEIGHT * distinct / peak
        return (weight * (r - x) ** 2).mean() / weight.mean()
    raise ValueError(
        f"reconstruction kind must be one of {', '.join(RECONSTRUCTION_KINDS)}, got {kind!r}"
    )


def regression_loss(
    estimate: torch.Tensor, count: torch.Tensor, labeled: torch.Tensor
) -> torch.Tensor:
    """Mean squared count error over the labeled images only.

    ``labeled`` is a boolean mask: a count of 0 is a real label, an unlabeled image is not 0.
    With no labeled image in the batch the term is an exact zero that keeps the graph intact.
    """
    labeled = labeled.bool()
    if not bool(labeled.any()):
        return estimate.sum() * 0.0
    diff = estimate[labeled] - count[labeled].to(estimate.dtype)
    return (diff * diff).mean()


class DensityTerms(NamedTuple):
    map: torch.Tensor  # pixel MSE of the maps with known cells (x AMPLITUDE squared)
    sum: torch.Tensor  # mean absolute error of the map sums, in cells, on labeled images


def density_loss(
    density: torch.Tensor,
    targets: torch.Tensor,
    known: torch.Tensor,
    counts: torch.Tensor,
    labeled: torch.Tensor,
) -> DensityTerms:
    """The density head's terms (FCRN's pixel loss, plus a count term on the sum): images with
    known cells train the map, every labeled image its sum, unlabeled images neither."""
    zero = density.sum() * 0.0
    known = known & labeled
    pixel = F.mse_loss(density[known], targets[known]) if bool(known.any()) else zero
    if not bool(labeled.any()):
        return DensityTerms(pixel, zero)
    sums = map_counts(density[labeled])
    return DensityTerms(pixel, (sums - counts[labeled].to(sums.dtype)).abs().mean())


def kld_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The VAE's KL divergence to N(0, I), scaled by 1 / (batch * 128 * 128) as the authors did."""
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return kld / (mu.shape[0] * IMAGE_SIZE * IMAGE_SIZE)


def reconstruction_weight(weights: LossWeights, epoch: int) -> float:
    """C_rec after ``epoch`` epochs: decays by ``reconstruction_decay`` per epoch (BCE in the paper)."""
    return weights.reconstruction * math.exp(-weights.reconstruction_decay * epoch)


def twin_loss(
    x: torch.Tensor,
    reconstruction: torch.Tensor | None,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    estimate: torch.Tensor,
    count: torch.Tensor,
    labeled: torch.Tensor,
    weights: LossWeights,
    epoch: int = 0,
    regress: bool = True,
) -> LossTerms:
    """The weighted loss of one twin's batch.

    ``reconstruction=None`` (decoder switched off) drops the reconstruction term; ``regress=False``
    drops the regression term (the regressor delay when training from scratch).
    """
    zero = mu.sum() * 0.0
    rec = (
        reconstruction_loss(reconstruction, x, weights.reconstruction_kind)
        if reconstruction is not None
        else zero
    )
    reg = regression_loss(estimate, count, labeled) if regress else zero
    kld = kld_loss(mu, logvar)
    total = (
        reconstruction_weight(weights, epoch) * rec + weights.regression * reg + weights.kld * kld
    )
    return LossTerms(total, rec.detach(), reg.detach(), kld.detach())
