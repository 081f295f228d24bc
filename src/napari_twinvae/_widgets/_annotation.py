"""The annotation a user clicks: image frames, a Points layer of cells, frames with no cells.

A frame's count is the number of points on it; frames the user marked as having no cells are
listed in the Points layer's metadata, so they stay with the layer (and its saved files). The
plugin's reader and writer (``*.cells.csv``: napari's Points CSV and, beside it, the
``.frames.csv`` of every labeled frame) keep those marks when the layer is saved and opened
through napari's File menu, which napari's own Points CSV would lose.
"""

from __future__ import annotations

import os

import numpy as np

from napari_twinvae.core.chambers import as_frames
from napari_twinvae.core.labels import load_annotation, save_annotation

ANNOTATION_ROLE = "annotation"
PREDICTED_CELLS_ROLE = "predicted cells"  # the density head's peaks, from the Count cells dock
EMPTY_FRAMES_KEY = "twinvae_empty_frames"
"""Points-layer metadata: the frames the user marked as holding no cells."""
CELLS_SUFFIX = ".cells.csv"
"""The annotation files of the plugin's reader and writer."""


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


# -- napari reader and writer (see napari.yaml) ----------------------------------------------
def write_cells(path: str, data, meta: dict) -> list[str]:
    """napari writer: a Points layer as ``<name>.cells.csv`` and its labeled frames beside it,
    so the frames marked 'no cells' survive a save from napari's File menu."""
    points = np.asarray(data, dtype=np.float64)
    if points.ndim == 2 and points.shape[1] == 2:  # a single image: frame 0
        points = np.column_stack([np.zeros(len(points)), points])
    marked = (meta.get("metadata") or {}).get(EMPTY_FRAMES_KEY, ())
    written = save_annotation(path, points, [int(t) for t in marked])
    return [str(p) for p in written]


def get_cells_reader(path):
    """napari reader: ``*.cells.csv`` as a Points layer with its 'no cells' marks."""
    if not isinstance(path, str) or not path.lower().endswith(CELLS_SUFFIX):
        return None
    return read_cells


def read_cells(path: str) -> list[tuple]:
    annotation = load_annotation(path)
    with_cells = np.rint(annotation.points[:, 0]).astype(np.int64)
    marked = np.setdiff1d(annotation.labeled_frames, with_cells).tolist()
    name = os.path.basename(path)[: -len(CELLS_SUFFIX)] or "cells"
    meta = {
        "name": name,
        "ndim": 3,
        "face_color": "#ffd400",
        "border_color": "black",
        "out_of_slice_display": False,
        "metadata": {EMPTY_FRAMES_KEY: marked},
    }
    return [(annotation.points, meta, "points")]
