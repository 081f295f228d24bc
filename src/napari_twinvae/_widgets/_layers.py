"""Core results <-> napari layers; update-or-add the layers this plugin owns.

The plugin marks the layers it creates in ``layer.metadata["napari_twinvae"]`` with a role and
the unique id of the layer they were derived from, and only ever updates layers so marked. It
never matches layer names, so a user's own layer is never overwritten.
"""

from __future__ import annotations

from typing import Any

OWNER_KEY = "napari_twinvae"


def owner_tag(role: str, source=None) -> dict[str, Any]:
    """The metadata entry that marks a plugin layer of ``role`` derived from layer ``source``."""
    return {OWNER_KEY: {"role": role, "source": _source_id(source)}}


def find_owned(viewer, role: str, source=None):
    """The plugin's layer of ``role`` derived from ``source`` (any source when None), or None."""
    wanted = _source_id(source)
    for layer in viewer.layers:
        tag = layer.metadata.get(OWNER_KEY)
        if (
            isinstance(tag, dict)
            and tag.get("role") == role
            and (source is None or tag.get("source") == wanted)
        ):
            return layer
    return None


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
