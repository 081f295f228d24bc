"""The Twin-VAE model core: no napari, Qt or magicgui imports here.

Heavy names (torch models, training, counting) are loaded on first use, so that
``napari_twinvae.core.synthetic`` and friends stay cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ModelConfig": "napari_twinvae.core.config",
    "LossWeights": "napari_twinvae.core.config",
    "TwinVAE": "napari_twinvae.core.model",
    "TwinOutput": "napari_twinvae.core.model",
    "DOMAINS": "napari_twinvae.core.model",
    "select_device": "napari_twinvae.core.device",
    "save_checkpoint": "napari_twinvae.core.io",
    "load_checkpoint": "napari_twinvae.core.io",
    "Checkpoint": "napari_twinvae.core.io",
    "CheckpointError": "napari_twinvae.core.io",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
