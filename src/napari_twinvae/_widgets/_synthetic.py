"""The "Synthetic cells" dock and the synthetic sample time series.

The dock generates in a worker (``core.synthetic.iter_generate``) with napari's progress bar
and a Stop button, and adds an image stack and a Points layer of the true cell centres, whose
features hold each point's frame and that frame's count; a new run adds new layers beside the
earlier ones. It also shows the count of the frame the viewer is on. The samples return the
same two layers as layer data tuples. All generation happens in ``core.synthetic``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox
from napari.layers import Image, Points
from napari.types import LayerDataTuple
from napari.utils.notifications import show_error

from napari_twinvae._widgets._annotation import empty_frames, frame_points
from napari_twinvae._widgets._layers import current_frame, owner_tag, role_of
from napari_twinvae._widgets._workers import Runner
from napari_twinvae.core.chambers import as_frames
from napari_twinvae.core.counts import (
    MAX_COUNT,
    histogram_count_weights,
    labeled_count_weights,
    paper_count_weights,
)
from napari_twinvae.core.labels import annotation_of
from napari_twinvae.core.synthetic import (
    DEFAULT_PRESET,
    PRESETS,
    SynthBatch,
    SynthConfig,
    background_image,
    estimate_background,
    iter_generate,
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


def _top_synthetic_images(viewer):
    """The topmost visible synthetic image stack: the one the user is looking at."""
    for layer in reversed(viewer.layers):
        if layer.visible and role_of(layer) == IMAGES_ROLE:
            return layer
    return None


def count_weights(distribution: str, labeled=None) -> np.ndarray:
    """Count weights for a distribution name; ``labeled`` is the Points layer whose labeled
    frames (frames with cells and frames marked 'no cells', never the untouched ones) to match."""
    if distribution == "uniform 0-30":
        return histogram_count_weights(np.ones(MAX_COUNT + 1))
    if distribution == "match labeled points":
        if labeled is None:
            raise ValueError("choose the Points layer of your labeled frames to match its counts")
        counts = annotation_of(frame_points(labeled), empty_frames(labeled)).frame_counts()
        if not counts:
            raise ValueError(f"{labeled.name} labels no frame yet: click some cells first")
        return labeled_count_weights(list(counts.values()))
    if distribution == "paper weights":
        return paper_count_weights()
    raise ValueError(f"unknown count distribution {distribution!r}")


def _generate_job(n: int, config: SynthConfig, seed: int, frames) -> Generator:
    """Worker: the chamber background from the user's frames (if any), then the images."""
    chamber = None
    if frames is not None:
        chamber = estimate_background(frames) if frames.ndim == 3 else background_image(frames)
    return (yield from iter_generate(n, config, rng=seed, background=chamber))


class SyntheticCellsDock(Container):
    """Generate synthetic chamber images with their true cell centres, in the background."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._preset = ComboBox(
            label="preset",
            choices=PRESETS,
            value=DEFAULT_PRESET,
            tooltip="bf: bright field, pc: phase contrast",
        )
        self._n_images = SpinBox(label="images", min=1, max=MAX_IMAGES, value=200)
        self._seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self._background = ComboBox(
            label="background",
            choices=self._layers(Image),
            nullable=True,
            tooltip="your own frames: their empty chamber becomes the background",
        )
        self._distribution = ComboBox(label="counts", choices=DISTRIBUTIONS)
        self._labeled = ComboBox(
            label="labeled",
            choices=self._layers(Points),
            nullable=True,
            tooltip="points you placed on your frames (axis 0 = frame)",
        )
        self._generate = PushButton(text="Generate")
        self._stop = PushButton(text="Stop", enabled=False)
        self.status = Label(value="")
        self.frame_info = Label(value="cells in this frame: -")
        self.extend(
            [
                self._preset,
                self._n_images,
                self._seed,
                self._background,
                self._distribution,
                self._labeled,
                Container(widgets=[self._generate, self._stop], layout="horizontal", labels=False),
                self.status,
                self.frame_info,
            ]
        )
        self._runner = Runner()
        self._generate.changed.connect(self._on_generate)
        self._stop.changed.connect(self._on_stop)
        for event in ("inserted", "removed", "moved"):
            getattr(viewer.layers.events, event).connect(self._on_layers)
        viewer.dims.events.current_step.connect(self._on_frame)
        self.native.destroyed.connect(self._on_destroyed)
        self._on_frame()

    # -- public ----------------------------------------------------------------------------
    def generate(self):
        """Snapshot the settings and generate in a worker; returns it (None when refused)."""
        if self._runner.running:
            return None
        preset = self._preset.value
        try:
            weights = count_weights(self._distribution.value, self._labeled.value)
            frames = None
            if self._background.value is not None:
                layer = self._background.value
                if layer.rgb:
                    raise ValueError(f"{layer.name}: the background must be gray, not RGB")
                frames = as_frames(layer.data).copy()
                if frames.shape[0] == 1:
                    frames = frames[0]
        except ValueError as err:
            show_error(str(err))
            self.status.value = f"not generated: {err}"
            return None
        config = dataclasses.replace(
            SynthConfig.preset(preset), count_weights=tuple(weights.tolist())
        )
        n, seed = int(self._n_images.value), int(self._seed.value)
        self._set_running(True)
        self.status.value = f"generating {n:,} images ..."
        return self._runner.start(
            _generate_job,
            n,
            config,
            seed,
            frames,
            yielded=self._on_progress,
            returned=lambda batch: self._on_generated(batch, preset, seed, config),
            errored=self._on_errored,
            finished=self._on_finished,
            desc="Synthetic cells",
            total=n,
        )

    def stop(self) -> None:
        """Stop after the current chunk of images; nothing is added."""
        if self._runner.stop():
            self.status.value = "stopping ..."

    # -- worker slots ----------------------------------------------------------------------
    def _on_progress(self, step) -> None:
        done, total = step
        self.status.value = f"generating: {done:,} of {total:,} images"
        self._runner.advance(done, total)

    def _on_generated(self, batch: SynthBatch, preset: str, seed: int, config) -> None:
        name = f"synthetic cells ({preset}, seed {seed})"
        added = [
            getattr(self._viewer, f"add_{kind}")(data, **kwargs)
            for data, kwargs, kind in synthetic_layers(batch, name, config)
        ]
        self.status.value = f"added {added[0].name} and its centres ({len(batch.counts):,} images)"
        if added[0].name != name:
            self.status.value += f"; the earlier '{name}' is kept"
        self._on_frame()

    def _on_errored(self, exc: BaseException) -> None:
        self.status.value = f"not generated: {exc}"

    def _on_finished(self, stopped: bool) -> None:
        if stopped:
            self.status.value = "stopped; nothing was added"
        self._set_running(False)

    # -- callbacks -------------------------------------------------------------------------
    def _on_generate(self, value=None) -> None:
        self.generate()

    def _on_stop(self, value=None) -> None:
        self.stop()

    def _on_layers(self, event=None) -> None:
        self.reset_choices()
        self._on_frame()

    def _on_frame(self, event=None) -> None:
        """Show the true count of the frame the viewer is on, of the topmost synthetic stack."""
        layer = _top_synthetic_images(self._viewer)
        if layer is None:
            self.frame_info.value = "cells in this frame: -"
            return
        counts = layer.metadata["counts"]
        frame = current_frame(self._viewer, layer, len(counts))
        self.frame_info.value = f"cells in frame {frame}: {counts[frame]}"
        self.frame_info.tooltip = f"true count in {layer.name}"

    def _on_destroyed(self, *_) -> None:
        """The viewer closed: stop a run and leave the widgets (gone now) alone."""
        self._runner.let_go()

    def _layers(self, kind):
        def layers(widget=None):
            return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)]

        return layers

    def _set_running(self, running: bool) -> None:
        self._generate.enabled = not running
        self._stop.enabled = running


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
