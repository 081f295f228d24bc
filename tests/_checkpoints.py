"""The tests' tiny network and training settings, and small random-init checkpoints for counting
tests (no trained default model is needed). ``tests/conftest.py`` offers them as fixtures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from napari_twinvae.core import ModelConfig, TwinVAE, save_checkpoint
from napari_twinvae.core.intensity import Normalization

SMALL = ModelConfig(
    encoder_channels=(4, 8, 8, 16), shared_channels=16, latent_dim=8, regressor_hidden=(8, 4)
)
"""The tiny network the tests train and count with: seconds on a CPU."""
TINY = SMALL

TINY_TRAINING = {
    "init": "scratch",
    "model": TINY,
    "epochs": 2,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "synthetic_ratio": 1.0,
    "regressor_delay": 0,
    "validation_share": 0.25,
    "device": "cpu",
}
"""A short run of the tiny network, pinned to the CPU: the same seed gives the same model there,
so the suite passes unchanged on a machine where torch sees a GPU."""


def tiny_train_config(**changes):
    """``TrainConfig`` for a short run of the tiny network on the CPU, with ``changes``."""
    from napari_twinvae.core.train import TrainConfig

    return TrainConfig(**{**TINY_TRAINING, **changes})


def small_model(seed: int = 0) -> TwinVAE:
    """A tiny Twin-VAE whose regressor gives counts of a few cells, not all near zero."""
    torch.manual_seed(seed)
    model = TwinVAE(SMALL)
    with torch.no_grad():
        model.regressor[-1].bias.fill_(5.0)  # spread estimates around a few cells
        model.regressor[-1].weight.mul_(20.0)
    return model.eval()


def small_checkpoint(path: Path, seed: int = 0, normalization: Normalization | None = None) -> Path:
    return save_checkpoint(path, small_model(seed), normalization=normalization)


def density_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny model with a density head whose maps hold a few peaks per crop."""
    torch.manual_seed(seed)
    model = TwinVAE(dataclasses.replace(SMALL, head="density"))
    with torch.no_grad():
        model.density_head.fine[-1].weight.mul_(20.0)
    return save_checkpoint(path, model.eval(), normalization=Normalization())
