"""Intensity normalisation of natural frames, decided once and stored in the checkpoint so that
training and counting scale every frame the same way."""

from __future__ import annotations

import dataclasses

import numpy as np

from napari_twinvae.core.config import JsonConfig

NORMALIZATION_MODES = ("percentile", "fixed")


@dataclasses.dataclass(frozen=True)
class Normalization(JsonConfig):
    """Raw gray values -> [0, 1].

    ``percentile``: each frame is stretched between its own ``low`` and ``high`` percentiles, which
    makes uint8, uint16 and float data from any camera comparable (the default).
    ``fixed``: every frame is stretched between the gray values ``low`` and ``high``.
    """

    mode: str = "percentile"
    low: float = 0.5
    high: float = 99.5

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZATION_MODES:
            raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}")
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            raise ValueError("normalization needs finite low and high values")
        if not self.low < self.high:
            raise ValueError("normalization needs low < high")
        if self.mode == "percentile" and not (self.low >= 0.0 and self.high <= 100.0):
            raise ValueError("percentiles must lie in [0, 100]")


def normalize_frames(frames: np.ndarray, normalization: Normalization | None = None) -> np.ndarray:
    """Frames (..., H, W) of any real dtype -> float32 in [0, 1], one scale per frame.

    Raises ``ValueError`` on NaN or infinite values: they would silently poison every count.
    """
    norm = normalization if normalization is not None else Normalization()
    data = np.asarray(frames)
    if data.dtype.kind not in "uif" and data.dtype != bool:
        raise ValueError(f"frames must hold numbers, got dtype {data.dtype}")
    if data.ndim < 2:
        raise ValueError(f"frames must be at least 2D, got shape {data.shape}")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise ValueError("frames contain NaN or infinite values; clean or mask them first")
    if norm.mode == "fixed":
        low = np.float32(norm.low)
        high = np.float32(norm.high)
    else:
        flat = data.reshape(*data.shape[:-2], -1)
        low, high = np.percentile(flat, [norm.low, norm.high], axis=-1)
        low = low.astype(np.float32)[..., None, None]
        high = high.astype(np.float32)[..., None, None]
    span = np.maximum(high - low, np.float32(1e-12))  # a flat frame maps to 0, not to NaN
    return np.clip((data - low) / span, 0.0, 1.0).astype(np.float32, copy=False)
