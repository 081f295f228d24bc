"""The "Synthetic cells" widget and the synthetic sample time series.

Both return layer data tuples: the image stack, and a Points layer of the true cell centres
whose features hold each point's frame and that frame's count. The widget also shows the count
of the frame the viewer is on. All generation happens in ``core.synthetic``.

No ``from __future__ import annotations`` here: magicgui reads the annotations at runtime.
"""

import dataclasses

import numpy as np
from magicgui import magic_factory
from magicgui.widgets import Label
from napari.layers import Image, Points
from napari.types import LayerDataTuple

from napari_twinvae._widgets._layers import OWNER_KEY, owner_tag
from napari_twinvae.core.synthetic import (
    MAX_COUNT,
    PRESETS,
    SynthBatch,
    SynthConfig,
    background_image,
    counts_from_centres,
    estimate_background,
    generate,
    histogram_count_weights,
    labeled_count_weights,
    paper_count_weights,
    synthetic_timeseries,
    timeseries_config,
)

IMAGES_ROLE = "synthetic images"
CENTRES_ROLE = "synthetic centres"
DISTRIBUTIONS = ("paper weights", "uniform 0-30", "match labeled points")
MAX_IMAGES = 10_000  # about 10 s here; the command line makes larger sets


def synthetic_layers(batch: SynthBatch, name: str, config: SynthConfig) -> list[LayerDataTuple]:
    """An image stack and a Points layer of its true centres, both marked as the plugin's."""
    counts = batch.counts.tolist()
    frames = batch.centres[:, 0].astype(np.int64)
    image_meta = {**owner_tag(IMAGES_ROLE), "counts": counts, "synth_config": config.to_dict()}
    points_meta = {**owner_tag(CENTRES_ROLE), "counts": counts}
    features = {"frame": frames, "count": batch.counts[frames]}
    return [
        (
            batch.images,
            {"name": name, "contrast_limits": (0.0, 1.0), "metadata": image_meta},
            "image",
        ),
        (
            batch.centres,
            {
                "name": f"{name} centres",
                "features": features,
                "metadata": points_meta,
                "size": 3,
                "face_color": "#ff3df5",
                "border_width": 0,
                "out_of_slice_display": False,
            },
            "points",
        ),
    ]


def _frame_count_label(widget) -> None:
    """Add a label that follows the viewer's frame and shows its number of cells."""
    label = Label(value="cells in this frame: -")
    widget.append(label)
    viewer_ref = {}

    def _on_step(event=None) -> None:
        viewer = viewer_ref.get("viewer")
        layer = _top_synthetic_images(viewer) if viewer is not None else None
        if layer is None:
            label.value = "cells in this frame: -"
            return
        counts = layer.metadata["counts"]
        frame = int(viewer.dims.current_step[0]) if layer.ndim == 3 else 0
        frame = min(max(frame, 0), len(counts) - 1)
        label.value = f"cells in frame {frame}: {counts[frame]}"
        label.tooltip = f"true count in {layer.name}"

    def _on_parent_changed(event=None) -> None:
        import napari

        viewer = napari.current_viewer()
        if viewer is None or viewer_ref.get("viewer") is viewer:
            return
        viewer_ref["viewer"] = viewer
        viewer.dims.events.current_step.connect(_on_step)
        viewer.layers.events.inserted.connect(_on_step)
        viewer.layers.events.removed.connect(_on_step)
        viewer.layers.events.moved.connect(_on_step)
        widget.native.destroyed.connect(lambda *_: _disconnect(viewer))
        _on_step()

    def _disconnect(viewer) -> None:
        viewer.dims.events.current_step.disconnect(_on_step)
        viewer.layers.events.inserted.disconnect(_on_step)
        viewer.layers.events.removed.disconnect(_on_step)
        viewer.layers.events.moved.disconnect(_on_step)

    widget.native_parent_changed.connect(_on_parent_changed)
    widget.called.connect(lambda *_: (_on_parent_changed(), _on_step()))


def _top_synthetic_images(viewer):
    """The topmost visible synthetic image stack: the one the user is looking at."""
    for layer in reversed(viewer.layers):
        tag = layer.metadata.get(OWNER_KEY)
        if layer.visible and isinstance(tag, dict) and tag.get("role") == IMAGES_ROLE:
            return layer
    return None


@magic_factory(
    call_button="Generate",
    preset={"choices": PRESETS, "tooltip": "bf: bright field, pc: phase contrast"},
    n_images={"min": 1, "max": MAX_IMAGES, "label": "images"},
    seed={"min": 0, "max": 2**31 - 1},
    background={"tooltip": "your own frames: their empty chamber becomes the background"},
    distribution={"choices": DISTRIBUTIONS, "label": "counts"},
    labeled={"tooltip": "points you placed on your frames (axis 0 = frame)"},
    widget_init=_frame_count_label,
)
def synthetic_cells(
    preset: str = "pc",
    n_images: int = 200,
    seed: int = 0,
    background: Image | None = None,
    distribution: str = "paper weights",
    labeled: Points | None = None,
) -> list[LayerDataTuple]:
    """Synthetic chamber images with their true cell centres, for training and for checking."""
    config = SynthConfig.preset(preset)
    if distribution == "uniform 0-30":
        weights = histogram_count_weights(np.ones(MAX_COUNT + 1))
    elif distribution == "match labeled points":
        if labeled is None:
            raise ValueError("choose the Points layer of your labeled frames to match its counts")
        weights = labeled_count_weights(counts_from_centres(np.asarray(labeled.data)))
    else:
        weights = paper_count_weights()
    config = dataclasses.replace(config, count_weights=tuple(weights.tolist()))
    chamber = None
    if background is not None:
        frames = np.asarray(background.data)
        if background.rgb:
            raise ValueError("the background layer must be gray, not RGB")
        chamber = estimate_background(frames) if frames.ndim == 3 else background_image(frames)
    batch = generate(n_images, config, rng=seed, background=chamber)
    return synthetic_layers(batch, f"synthetic cells ({preset})", config)


def sample_phase_contrast() -> list[LayerDataTuple]:
    """Sample data: 60 frames of a phase-contrast chamber growing from 1 to about 16 cells."""
    return synthetic_layers(
        synthetic_timeseries("pc", 60, seed=0), "synthetic phase contrast", timeseries_config("pc")
    )


def sample_bright_field() -> list[LayerDataTuple]:
    """Sample data: 60 frames of a bright-field chamber growing from 1 to about 16 cells."""
    return synthetic_layers(
        synthetic_timeseries("bf", 60, seed=0), "synthetic bright field", timeseries_config("bf")
    )
