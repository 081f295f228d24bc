"""Small random-init checkpoints for counting tests (no trained default model is needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from napari_twinvae.core import ModelConfig, TwinVAE, save_checkpoint
from napari_twinvae.core.intensity import Normalization

SMALL = ModelConfig(
    encoder_channels=(4, 8, 8, 16), shared_channels=16, latent_dim=8, regressor_hidden=(8, 4)
)


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
