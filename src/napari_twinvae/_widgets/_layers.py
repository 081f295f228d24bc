"""Core results <-> napari layers; update-or-add the layers this plugin owns.

The plugin marks the layers it creates in ``layer.metadata["napari_twinvae"]`` with a role and
the unique id of the layer they were derived from, and only ever updates layers so marked. It
never matches layer names, so a user's own layer is never overwritten.
"""

from __future__ import annotations

import math
from typing import Any

OWNER_KEY = "napari_twinvae"


def role_of(layer) -> str | None:
    """The role under which the plugin made ``layer``, or None for a layer of the user's."""
    tag = layer.metadata.get(OWNER_KEY)
    return tag.get("role") if isinstance(tag, dict) else None


def owner_tag(role: str, source=None) -> dict[str, Any]:
    """The metadata entry that marks a plugin layer of ``role`` derived from layer ``source``."""
    return {OWNER_KEY: {"role": role, "source": _source_id(source)}}


def find_owned(viewer, role: str, source=None):
    """The plugin's layer of ``role`` derived from ``source`` (any source when None), or None."""
    wanted = _source_id(source)
    for layer in viewer.layers:
        if role_of(layer) == role and (
            source is None or layer.metadata[OWNER_KEY].get("source") == wanted
        ):
            return layer
    return None


def frame_axis(image) -> dict:
    """Where the frame axis of a (..., T, H, W) image lies among the viewer's axes (counted from
    the end), its scale and translate, and how many frames it has: enough to find the frame the
    viewer shows even after the image is gone (the count dock keeps it with its results)."""
    if image.ndim < 3:
        return {"axis": None, "scale": 1.0, "translate": 0.0, "frames": 1}
    first = image.ndim - 3  # (..., T, H, W): a multiscale or 3D stack has T third from the end
    return {
        "axis": -3,
        "scale": float(image.scale[first]),
        "translate": float(image.translate[first]),
        "frames": int(image.data[0].shape[first] if image.multiscale else image.data.shape[first]),
    }


def current_frame(viewer, image_or_axis, frames: int | None = None) -> int:
    """The frame the viewer shows of an image layer (or of a :func:`frame_axis` kept earlier),
    within 0 .. ``frames`` - 1 (the image's own frames when None); 0 for a single frame."""
    axis = image_or_axis if isinstance(image_or_axis, dict) else frame_axis(image_or_axis)
    if axis["axis"] is None or viewer.dims.ndim < -axis["axis"]:
        return 0
    world = viewer.dims.point[viewer.dims.ndim + axis["axis"]]
    t = math.floor((world - axis["translate"]) / axis["scale"] + 0.5)
    last = (axis["frames"] if frames is None else frames) - 1
    return min(max(t, 0), max(last, 0))


def go_to_frame(viewer, image_or_axis, frame: int) -> None:
    """Move the viewer to ``frame`` of an image layer (or of a :func:`frame_axis` kept earlier)."""
    axis = image_or_axis if isinstance(image_or_axis, dict) else frame_axis(image_or_axis)
    if axis["axis"] is None or viewer.dims.ndim < -axis["axis"]:
        return
    world = axis["translate"] + frame * axis["scale"]
    viewer.dims.set_point(viewer.dims.ndim + axis["axis"], world)


# Attributes a re-run may change on an existing layer of the same type.
_UPDATABLE = (
    "features",
    "text",
    "scale",
    "translate",
    "contrast_limits",
    "colormap",
    "face_color",
    "edge_color",
    "size",
    "opacity",
    "blending",
    "visible",
)


def update_or_add(viewer, data, kwargs: dict[str, Any], layer_type: str, role: str, source=None):
    """Put ``data`` into the plugin's ``role`` layer for ``source``: update it, or add it marked.

    ``kwargs`` are the napari ``add_<layer_type>`` keyword arguments; on update, data and the
    attributes above are set in place, so the user's view settings of other kinds survive.
    """
    layer = find_owned(viewer, role, source)
    # The class name, not napari's private _type_string: docks get layers through napari's
    # public-only proxy, which warns on private attributes.
    if layer is not None and layer.__class__.__name__.lower() == layer_type:
        layer.data = data
        for key in _UPDATABLE:
            if key in kwargs:
                setattr(layer, key, kwargs[key])
        layer.metadata.update(
            {k: v for k, v in kwargs.get("metadata", {}).items() if k != OWNER_KEY}
        )
        return layer
    if layer is not None:  # same role, other type: replace it
        viewer.layers.remove(layer)
    options = dict(kwargs)
    options["metadata"] = {**options.get("metadata", {}), **owner_tag(role, source)}
    return getattr(viewer, f"add_{layer_type}")(data, **options)


def _source_id(source) -> str | None:
    if source is None:
        return None
    if isinstance(source, str):
        return source
    return str(getattr(source, "unique_id", id(source)))
