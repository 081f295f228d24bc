"""The "Count cells" dock: count every chamber in every frame of an image layer.

Counting runs in a worker (``core.predict.iter_count``) with napari's progress bar and a Stop
button. The results go into layers this plugin owns (``_count_layers``), one set per image
layer, updated in place on re-runs: the chamber rectangles with each chamber's count for the
current frame as text (counts in the features table), the model's reconstruction and its
"synthetic view" (natural encoder, synthetic decoder; computed lazily, frame by frame). A
growth-curve plot docks beside.

No ``from __future__ import annotations`` here: magicgui reads annotations at runtime.
"""

import contextlib
import dataclasses
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, SpinBox
from napari.layers import Image, Shapes
from napari.utils.notifications import show_error, show_info, show_warning

from napari_twinvae._widgets._check import CheckList, center_on_chamber
from napari_twinvae._widgets._count_layers import (
    OWN_ROLES,
    show_cells,
    show_counts,
    show_frame_counts,
    show_model_views,
)
from napari_twinvae._widgets._growth import GrowthCurve
from napari_twinvae._widgets._layers import (
    current_frame,
    frame_axis,
    go_to_frame,
    role_of,
)
from napari_twinvae._widgets._workers import Runner
from napari_twinvae.core.chambers import fit_regions, regions_from_shapes, resized_whole_frame
from napari_twinvae.core.device import available_devices
from napari_twinvae.core.io import default_model_path, load_model, resolve_model
from napari_twinvae.core.predict import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_VIEWS,
    VIEWS,
    iter_count,
)
from napari_twinvae.core.predict import write_counts_csv as _write_counts_csv

DEFAULT_MODEL, MODEL_FILE = "default model", "model file"


def count_job(frames, model, regions, batch_size, device, views=DEFAULT_VIEWS):
    """Worker body: load the checkpoint, count, return both (the views need the model). A model
    with a density head also finds the cells."""
    checkpoint = load_model(model, device=device)
    cells = checkpoint.model.density_head is not None
    result = yield from iter_count(
        frames, checkpoint, regions, batch_size, device, views=views, cells=cells
    )
    return checkpoint, result


@dataclasses.dataclass
class _Run:
    """The last finished count: what the plot and the CSV export show."""

    image: Image
    result: object  # core.predict.CountResult
    frame_axis: dict  # where the frame axis lies in the viewer (see _layers.frame_axis)


class CountDock(Container):
    """Count cells per frame and chamber with a Twin-VAE checkpoint."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._image = ComboBox(label="image", choices=self._image_choices)
        has_default = default_model_path().is_file()
        self._model = ComboBox(
            label="model",
            choices=(DEFAULT_MODEL, MODEL_FILE),
            value=DEFAULT_MODEL if has_default else MODEL_FILE,
            tooltip="the model shipped with the plugin, or a checkpoint file (.pt)",
        )
        self._model_file = FileEdit(label="model file", mode="r", filter="*.pt")
        self._chambers = ComboBox(
            label="chambers",
            choices=self._chamber_choices,
            tooltip="a Shapes layer with one rectangle per chamber; none: the whole frame",
        )
        self._batch = SpinBox(
            label="batch size", min=1, max=4096, value=DEFAULT_BATCH_SIZE, tooltip="images per pass"
        )
        self._views = ComboBox(
            label="orientations",
            choices=[(f"{n} (fastest)" if n == 1 else str(n), n) for n in VIEWS],
            value=DEFAULT_VIEWS,
            tooltip="each chamber is counted turned and mirrored this many ways and the counts "
            "averaged: 8 counts best, 1 runs the network an eighth as often",
        )
        self._device = ComboBox(
            label="device", choices=[(label, value) for value, label in available_devices()]
        )
        self._count_button = PushButton(text="Count")
        self._stop_button = PushButton(text="Stop", enabled=False)
        self._export_button = PushButton(text="Export CSV", enabled=False)
        self._status = Label(value="")
        self._check = CheckList()
        self.extend(
            [
                self._image,
                self._model,
                self._model_file,
                self._chambers,
                self._batch,
                self._views,
                self._device,
                Container(
                    widgets=[self._count_button, self._stop_button, self._export_button],
                    layout="horizontal",
                    labels=False,
                ),
                self._status,
                self._check,
            ]
        )
        self._model_file.visible = self._model.value == MODEL_FILE
        self._runner = Runner()
        self._run: _Run | None = None
        self._plot = GrowthCurve()
        self._plot_dock = None
        self._model.changed.connect(self._on_model_changed)
        self._count_button.changed.connect(self._on_count)
        self._stop_button.changed.connect(self._on_stop)
        self._export_button.changed.connect(self._on_export)
        self._plot.frame_clicked.connect(self._on_plot_clicked)
        self._check.picked.connect(self._on_check_picked)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.reset_choices)
        viewer.dims.events.current_step.connect(self._on_frame)
        self.native.destroyed.connect(self._disconnect)

    # -- public --------------------------------------------------------------------------------
    def use_model(self, path) -> None:
        """Count with the checkpoint file ``path`` (e.g. a model just trained)."""
        self._model.value = MODEL_FILE
        self._model_file.value = Path(path)

    def export_csv(self, path) -> Path:
        """Write the last count as ``frame,chamber,count,estimate,flag,uncertainty,series_flag``
        (core.predict.write_counts_csv), atomically."""
        if self._run is None:
            raise ValueError("count first: there is nothing to export yet")
        return _write_counts_csv(path, self._run.result)

    @property
    def result(self):
        """The last finished :class:`core.predict.CountResult`, or None."""
        return None if self._run is None else self._run.result

    # -- choices -------------------------------------------------------------------------------
    def _image_choices(self, widget=None) -> list:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and role_of(layer) not in OWN_ROLES
        ]

    def _chamber_choices(self, widget=None) -> list:
        shapes = [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Shapes) and role_of(layer) not in OWN_ROLES
        ]
        return [("whole frame", None), *shapes]

    def _on_model_changed(self, value: str) -> None:
        self._model_file.visible = value == MODEL_FILE

    # -- counting ------------------------------------------------------------------------------
    def _on_count(self) -> None:
        try:
            job = self._snapshot()
        except ValueError as err:  # CheckpointError too
            show_error(str(err))
            self._status.value = f"not counted: {err}"
            return
        image, frames, model, regions, notes = job
        notes = [f"{image.name}: {note}" for note in notes]
        if resized_whole_frame(frames.shape, regions):
            notes.append(
                f"{image.name}: whole {frames.shape[-2]}x{frames.shape[-1]} frames are resized "
                "to 128x128; for better counts, mark each chamber with a rectangle in a Shapes "
                "layer and choose it as chambers"
            )
        self._set_running(True)
        self._status.value = f"counting {image.name} ..."
        self._runner.start(
            count_job,
            frames,
            model,
            regions,
            int(self._batch.value),
            self._device.value,
            int(self._views.value),
            yielded=self._on_progress,
            returned=lambda out: self._on_counted(image, regions, *out, notes),
            errored=self._on_errored,
            finished=self._on_finished,
            desc="Counting cells",
        )

    def _snapshot(self):
        """Inputs for the worker, taken on the GUI thread; ValueError with the reason."""
        image = self._image.value
        if image is None:
            raise ValueError("choose an image layer to count")
        if image.rgb:
            raise ValueError(f"{image.name} is an RGB image; convert it to one gray channel first")
        # A reference, not a copy: stacks can be larger than RAM (memory maps, dask), and napari
        # replaces layer data on edits rather than writing into it.
        frames = image.data[0] if image.multiscale else image.data
        if frames.ndim not in (2, 3):
            raise ValueError(
                f"{image.name} has {frames.ndim} dimensions; counting takes one frame or a "
                "(frames, height, width) stack"
            )
        if self._model.value == DEFAULT_MODEL:
            model = resolve_model("default")
        else:
            model = Path(self._model_file.value)
            if not model.is_file():
                raise ValueError(f"choose a model file (.pt); {model} is not a file")
        regions, notes = None, []
        if self._chambers.value is not None:
            regions = _regions_in(self._chambers.value, image)
            _, notes = fit_regions(regions, frames.shape[-2:])
        return image, frames, model, regions, notes

    def _set_running(self, running: bool) -> None:
        self._count_button.enabled = not running
        self._stop_button.enabled = running
        self._export_button.enabled = not running and self._run is not None

    def _on_progress(self, step) -> None:
        self._runner.advance(step.done, step.total)

    def _on_stop(self) -> None:
        if self._runner.stop():
            self._status.value = "stopping ..."

    def _on_errored(self, exc: BaseException) -> None:
        self._status.value = f"counting failed: {exc}; nothing was changed"

    def _on_finished(self, stopped: bool) -> None:
        if stopped:
            self._status.value = "stopped; nothing was changed"
        self._set_running(False)

    def _on_counted(self, image: Image, regions, checkpoint, result, notes=()) -> None:
        """Put the result into this image's layers, the plot and the status line, then say the
        ``notes`` on the inputs (a clipped chamber, resized frames): after the count, as the
        command line does, so that an input the worker refuses gets its one error alone."""
        if image not in self._viewer.layers:
            show_info(f"{image.name} was removed while counting; the counts are not shown")
            return
        self._run = _Run(image, result, frame_axis(image))
        frames = image.data[0] if image.multiscale else image.data
        show_counts(self._viewer, image, result)
        if result.cells is not None:
            show_cells(self._viewer, image, result)
        show_model_views(self._viewer, image, frames, checkpoint, regions)
        self._show_plot(result, doubtful=self._check.show_result(result))
        self._on_frame()
        n_frames, n_chambers = result.counts.shape
        rate = n_frames * n_chambers / max(result.elapsed_s, 1e-9)
        self._status.value = (
            f"{n_frames:,} frames x {n_chambers} chamber(s) in {result.elapsed_s:.1f} s "
            f"({rate:,.0f} images/s)"
        )
        for note in notes:
            show_warning(note)
        flagged = int((result.flags != "").sum())
        if flagged:
            self._status.value += f"; {flagged:,} counts outside 0-30 flagged"
            show_warning(
                f"{image.name}: {flagged:,} of {result.counts.size:,} counts lie outside 0-30, the "
                "cells per chamber the model counts; they are marked in the count layer, the "
                "growth curve and the exported CSV (a chamber drawn wrong, or not a chamber?)"
            )

    # -- frames and the plot -------------------------------------------------------------------
    def _show_plot(self, result, doubtful=None) -> None:
        marks = {"flagged": result.flags != "", "doubtful": doubtful}
        try:
            self._plot.set_counts(result.frames, result.counts, **marks)
            docked = self._plot_dock is not None and self._plot_dock.isVisible()
        except RuntimeError:  # the user closed the plot's dock: Qt deleted the widget
            self._plot = GrowthCurve()
            self._plot.frame_clicked.connect(self._on_plot_clicked)
            self._plot.set_counts(result.frames, result.counts, **marks)
            self._plot_dock, docked = None, False
        if not docked:
            self._plot_dock = self._viewer.window.add_dock_widget(
                self._plot, name="Growth curve", area="bottom"
            )

    def _on_frame(self, event=None) -> None:
        """Show each count layer's counts for the frame the viewer is on."""
        show_frame_counts(self._viewer)
        if self._run is not None:
            with contextlib.suppress(RuntimeError):  # the user closed the plot's dock
                run = self._run
                self._plot.set_current(
                    current_frame(self._viewer, run.frame_axis, len(run.result.counts))
                )

    def _on_plot_clicked(self, frame: int) -> None:
        if self._run is not None:
            go_to_frame(self._viewer, self._run.frame_axis, frame)

    def _on_check_picked(self, frame: int, chamber: int) -> None:
        """A row of Check these frames: go to its frame and, among several, its chamber."""
        if self._run is None:
            return
        go_to_frame(self._viewer, self._run.frame_axis, frame)
        regions = self._run.result.regions
        if len(regions) > 1:
            center_on_chamber(self._viewer, self._run.image, regions[chamber])

    def _on_export(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        name = f"{self._run.image.name} counts.csv" if self._run is not None else "counts.csv"
        path, _ = QFileDialog.getSaveFileName(self.native, "Export counts", name, "CSV (*.csv)")
        if path:
            try:
                show_info(f"wrote {self.export_csv(path)}")
            except (OSError, ValueError) as err:
                show_error(f"could not write {path}: {err}")

    def _disconnect(self, *args) -> None:
        for event in (self._viewer.layers.events.inserted, self._viewer.layers.events.removed):
            event.disconnect(self.reset_choices)
        self._viewer.dims.events.current_step.disconnect(self._on_frame)
        self._runner.let_go()


# -- helpers ---------------------------------------------------------------------------------
def _regions_in(shapes: Shapes, image: Image) -> list:
    """The rectangles of ``shapes`` in ``image``'s pixel coordinates (both layers' scales)."""
    if len(shapes.data) == 0:
        raise ValueError(f"{shapes.name} holds no rectangles; draw one per chamber")
    vertices = []
    for shape in shapes.data:
        points = []
        for vertex in np.asarray(shape):
            world = np.asarray(shapes.data_to_world(vertex))[-2:]
            position = np.concatenate([np.zeros(image.ndim - 2), world])
            points.append(np.asarray(image.world_to_data(position))[-2:])
        vertices.append(np.array(points))
    return regions_from_shapes(vertices, shapes.shape_type)
