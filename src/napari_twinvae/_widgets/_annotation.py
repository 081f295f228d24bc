"""The annotation a user clicks: image frames, a Points layer of cells, frames with no cells.

A frame's count is the number of points on it; frames the user marked as having no cells are
listed in the Points layer's metadata, so they stay with the layer (and its saved files).
"""

from __future__ import annotations

import numpy as np

from napari_twinvae.core.chambers import as_frames

ANNOTATION_ROLE = "annotation"
EMPTY_FRAMES_KEY = "twinvae_empty_frames"
"""Points-layer metadata: the frames the user marked as holding no cells."""


def image_stack(image) -> np.ndarray:
    """The image layer's frames as a (T, H, W) array (no copy), or a ValueError that says why."""
    if image is None:
        raise ValueError("pick the image layer to label first")
    if image.multiscale:
        raise ValueError(f"{image.name}: multiscale images are not supported; open one scale")
    if image.rgb:
        raise ValueError(f"{image.name}: an RGB image; convert it to one gray channel first")
    return as_frames(image.data)


def empty_frames(layer) -> list[int]:
    """The frames marked as holding no cells in a Points layer."""
    if layer is None:
        return []
    return sorted({int(t) for t in layer.metadata.get(EMPTY_FRAMES_KEY, ())})


def frame_points(layer) -> np.ndarray:
    """A Points layer's data as (N, 3) rows of (frame, y, x); a 2D layer is frame 0."""
    if layer is None:
        return np.zeros((0, 3))
    data = np.asarray(layer.data, dtype=np.float64).reshape(-1, layer.ndim)
    if layer.ndim == 2:
        return np.column_stack([np.zeros(len(data)), data])
    if layer.ndim != 3:
        raise ValueError(f"{layer.name}: points must be (frame, y, x), the layer is {layer.ndim}D")
    return data


def already_clicked(new: np.ndarray, old: np.ndarray, tolerance: float = 0.01) -> np.ndarray:
    """Which rows of ``new`` already have a point at the same place in ``old`` (per frame)."""
    found = np.zeros(len(new), dtype=bool)
    new_frame, old_frame = np.rint(new[:, 0]), np.rint(old[:, 0])
    for frame in np.unique(new_frame):
        here, there = new_frame == frame, old_frame == frame
        if there.any():
            gap = np.abs(new[here][:, None, 1:] - old[there][None, :, 1:]).max(axis=-1)
            found[here] = (gap < tolerance).any(axis=1)
    return found
