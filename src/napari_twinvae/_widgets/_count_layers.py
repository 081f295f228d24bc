"""The layers a count makes over its image: the chambers with their counts, the predicted cells,
and what the model sees (reconstruction, synthetic view). Each is updated in place on re-runs
(``_layers.update_or_add``)."""

import numpy as np
from napari.layers import Image

from napari_twinvae._widgets._annotation import PREDICTED_CELLS_ROLE
from napari_twinvae._widgets._layers import (
    current_frame,
    find_owned,
    frame_axis,
    role_of,
    update_or_add,
)
from napari_twinvae.core.metrics import count_flags
from napari_twinvae.core.model_view import ModelView

COUNT_ROLE = "counts"
RECONSTRUCTION_ROLE = "reconstruction"
SYNTHETIC_VIEW_ROLE = "synthetic view"
OWN_ROLES = (COUNT_ROLE, RECONSTRUCTION_ROLE, SYNTHETIC_VIEW_ROLE, PREDICTED_CELLS_ROLE)


def show_counts(viewer, image: Image, result) -> None:
    """The chamber rectangles over ``image``, each with its count for the current frame as text
    (the counts of every frame in the layer's metadata, :func:`show_frame_counts`)."""
    rectangles = [
        np.array([[top, left], [top, right], [bottom, right], [bottom, left]], dtype=float)
        for top, left, bottom, right in result.regions
    ]
    frame = frame_axis(image)
    kwargs = {
        "name": f"{image.name} {COUNT_ROLE}",
        "shape_type": "rectangle",
        "edge_color": "#ffd21f",
        "face_color": "transparent",
        "edge_width": 2,
        "scale": tuple(image.scale[-2:]),
        "translate": tuple(image.translate[-2:]),
        "features": _features(result, 0),
        "text": {"string": "{label}", "anchor": "upper_left", "size": 14, "color": "#ffd21f"},
        "metadata": {
            "counts": result.counts.tolist(),
            "estimates": result.estimates.tolist(),
            "frame_axis": frame,
        },
    }
    update_or_add(viewer, rectangles, kwargs, "shapes", COUNT_ROLE, image)


def show_frame_counts(viewer) -> None:
    """Each count layer's text and features for the frame the viewer is on."""
    for layer in list(viewer.layers):
        if role_of(layer) == COUNT_ROLE and "counts" in layer.metadata:
            t = current_frame(viewer, layer.metadata["frame_axis"], len(layer.metadata["counts"]))
            if len(layer.data) == len(layer.metadata["counts"][t]):
                layer.features = _features_of(layer.metadata, t)


def show_model_views(viewer, image: Image, frames, checkpoint, regions) -> None:
    """The model's reconstruction and synthetic view of every chamber, computed lazily frame by
    frame (core.model_view); hidden when new, since they would cover the frames."""
    for role, decoder in ((RECONSTRUCTION_ROLE, "natural"), (SYNTHETIC_VIEW_ROLE, "synthetic")):
        view = ModelView(frames, checkpoint, regions, decoder)
        kwargs = {
            "name": f"{image.name} {role}",
            "contrast_limits": (0.0, 1.0),
            "scale": tuple(image.scale),
            "translate": tuple(image.translate),
            "metadata": {"model": str(checkpoint.path)},
        }
        if find_owned(viewer, role, image) is None:
            kwargs["visible"] = False
        update_or_add(viewer, view, kwargs, "image", role, image)


def show_cells(viewer, image: Image, result) -> None:
    """The density head's peaks as a Points layer over the image, frame by frame; Label &
    train copies a frame's cells from it into the annotation for proofreading."""
    columns = [0, 2, 3] if image.ndim == 3 else [2, 3]
    kwargs = {
        "name": f"{image.name} {PREDICTED_CELLS_ROLE}",
        "ndim": image.ndim,
        "size": float(np.clip(np.median(image.data.shape[-2:]) / 25, 3, 20)),
        "face_color": "transparent",
        "border_color": "#3ce0ff",
        "border_width": 0.15,
        "scale": tuple(image.scale),
        "translate": tuple(image.translate),
        "out_of_slice_display": False,
    }
    data = result.cells[:, columns].astype(float)
    update_or_add(viewer, data, kwargs, "points", PREDICTED_CELLS_ROLE, image)


def _features(result, t: int) -> dict:
    return _features_of({"counts": result.counts, "estimates": result.estimates}, t)


def _features_of(metadata: dict, t: int) -> dict:
    counts = np.asarray(metadata["counts"][t], dtype=np.int64)
    estimates = np.asarray(metadata["estimates"][t], dtype=np.float64)
    flags = count_flags(estimates)
    return {
        "chamber": np.arange(len(counts)),
        "count": counts,
        "estimate": np.round(estimates, 2),
        "flag": flags,
        "label": [
            f"{n} ({flag})" if flag else str(n) for n, flag in zip(counts, flags, strict=True)
        ],
    }
