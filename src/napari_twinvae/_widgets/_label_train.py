"""The "Label & train" dock: click cells on your frames, then train a Twin-VAE on them.

Its parts: labeling (:mod:`~._labeling`), the live plot (:mod:`~._train_plot`), the choices and
the worker's run (:mod:`~._training`), the hand-off to Count cells (:mod:`~._count_handoff`).
Training snapshots the labels and settings on the GUI thread and runs ``core.train.Training`` in
a worker; Stop ends it within one batch and keeps the best model so far, saved through a chooser.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QMessageBox

from napari_twinvae._widgets._annotation import image_stack
from napari_twinvae._widgets._count_handoff import hand_to_count_dock
from napari_twinvae._widgets._forms import (
    default_folder,
    file_stem,
    form,
    row,
    scrolling,
    wrapping,
)
from napari_twinvae._widgets._label_next import LabelNext, ranking_model
from napari_twinvae._widgets._labeling import LabelingPanel
from napari_twinvae._widgets._train_plot import TrainingPlot, describe, outcome
from napari_twinvae._widgets._training import (
    HEADS_SHOWN,
    MODALITIES,
    START_HEAD,
    START_MODELS,
    STRATEGIES,
    TrainJob,
    prepare_and_train,
)
from napari_twinvae._widgets._workers import Runner
from napari_twinvae.core.chambers import resized_whole_frame
from napari_twinvae.core.config import IMAGE_SIZE
from napari_twinvae.core.device import available_devices
from napari_twinvae.core.io import default_model_path
from napari_twinvae.core.train import TrainConfig, Training, TrainProgress
from napari_twinvae.core.trainset import check_labels
from napari_twinvae.core.validation import HELD_OUT_NOTE

if TYPE_CHECKING:
    import napari


class LabelTrainDock(Container):
    """Label cells on an image stack and train (or transfer) a counting model on them."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self._runner = Runner()
        self._job: TrainJob | None = None
        self._trained: Training | None = None  # the last run with a result
        self.model_path: Path | None = None  # where that result was saved
        self.labeling = LabelingPanel(viewer)
        self.label_next = LabelNext(
            viewer, self.labeling, self._ranking_model, lambda: self._device.value
        )
        defaults = TrainConfig()  # every setting starts where the command line's does
        has_default = default_model_path().is_file()
        self._start_model = ComboBox(
            label="start from",
            choices=START_MODELS,
            value=defaults.init if has_default else "scratch",
            tooltip="transfer from a trained model (far fewer labels needed) or train anew",
        )
        self._model_file = FileEdit(label="model file", mode="r", filter="*.pt", visible=False)
        self._strategy = ComboBox(
            label="transfer",
            choices=STRATEGIES,
            value=defaults.freeze,
            tooltip="which layers keep the start weights",
        )
        self._decoder = CheckBox(
            text="train the decoders",
            value=defaults.decoder,
            tooltip="off: a transfer skips the decoders, about twice as fast and as accurate",
        )
        self._head = ComboBox(
            label="count with",
            choices=HEADS_SHOWN,
            value=START_HEAD if defaults.head is None else defaults.head,
            tooltip="density: learns from where you clicked the cells and shows the predicted "
            "cells in Count cells, to proofread",
        )
        self._modality = ComboBox(
            label="modality",
            choices=MODALITIES,
            value=defaults.preset,
            tooltip="the synthetic images to train with",
        )
        # 0 shows "no limit" (None in TrainConfig)
        self._epochs = SpinBox(label="epochs", min=0, max=1_000_000, value=defaults.epochs or 0)
        self._epochs.native.setSpecialValueText("no limit")
        self._minutes = FloatSpinBox(
            label="minutes", min=0, max=100_000, step=5, value=defaults.minutes or 0
        )
        self._minutes.native.setSpecialValueText("no limit")
        self._batch = SpinBox(label="batch size", min=2, max=4096, value=defaults.batch_size)
        self._device = ComboBox(
            label="device",
            choices=[(name, value) for value, name in available_devices()],
            value=defaults.device,
        )
        self._seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=defaults.seed)
        self._settings = form(
            self._start_model,
            self._model_file,
            self._strategy,
            self._decoder,
            self._head,
            self._modality,
            self._epochs,
            self._minutes,
            self._batch,
            self._device,
            self._seed,
        )
        self._start = PushButton(text="Start training")
        self._stop = PushButton(text="Stop", enabled=False)
        self.status = wrapping(Label(value=""))
        self._save = PushButton(text="Save model…", enabled=False)
        self._count = PushButton(text="Count with this model", enabled=False)
        self.plot = TrainingPlot()
        self._content = Container(
            labels=False,
            widgets=[
                Label(value="<b>Label cells</b>"),
                self.labeling,
                self.label_next,
                Label(value="<b>Train</b>"),
                self._settings,
                row(self._start, self._stop),
                self.status,
                row(self._save, self._count),
            ],
        )
        self._content.native.layout().addWidget(self.plot)
        self._content.native.layout().addStretch()
        self.native.layout().addWidget(scrolling(self._content.native))
        self.margins = (0, 0, 0, 0)
        self.native_parent_changed.connect(self._on_parent_changed)
        self.native.destroyed.connect(self._on_destroyed)
        self._start_model.changed.connect(self._on_start_model_changed)
        self._start.changed.connect(self._on_start)
        self._stop.changed.connect(self._on_stop)
        self._save.changed.connect(self._on_save_model)
        self._count.changed.connect(self._on_count_with_model)
        self._on_start_model_changed()

    # -- public API ------------------------------------------------------------------------
    def reset_choices(self, *_) -> None:
        """Refresh the layer choices (napari calls this when layers come and go)."""
        self._content.reset_choices()

    def config(self) -> TrainConfig:
        """The training settings as a (validated) TrainConfig."""
        start = self._start_model.value
        if start == "file":
            path = Path(self._model_file.value)
            if not path.is_file():
                raise ValueError("choose the model file to start from")
            init = str(path)
        elif start == "default" and not default_model_path().is_file():
            raise ValueError("no default model is installed: start from a model file or scratch")
        else:
            init = start
        return TrainConfig(
            init=init,
            freeze="none" if init == "scratch" else self._strategy.value,
            decoder=self._decoder.value,
            head=None if self._head.value == START_HEAD else self._head.value,
            epochs=self._epochs.value or None,
            minutes=self._minutes.value or None,
            preset=self._modality.value,
            batch_size=self._batch.value,
            seed=self._seed.value,
            device=self._device.value,
        )

    def start_training(self):
        """Snapshot the labels and settings and train in a worker; returns it (None on error)."""
        if self._runner.running:
            return None
        try:
            frames = image_stack(self.labeling.image.value)
            regions, notes = self.labeling.fitted_regions()
            annotation = self.labeling.snapshot()
            labels = check_labels(frames, annotation, regions)
            config = self.config()
        except ValueError as err:  # CheckpointError included: nothing has changed yet
            return self._refuse(str(err))
        if not labels.labeled.any():
            return self._refuse(
                "no labeled frames yet: click the cells of some frames (or mark them empty)"
            )
        unsaved = self._trained is not None and self.model_path is None
        if unsaved and not self._confirm("The last trained model is not saved. Discard it?"):
            return None
        notes = list(notes)
        if resized_whole_frame(frames.shape, regions):
            height, width = frames.shape[1:]
            notes.append(
                f"the frames are {height}x{width} and no chambers are marked, so each whole "
                f"frame is resized to {IMAGE_SIZE}x{IMAGE_SIZE}; draw one rectangle per chamber "
                "in a Shapes layer and choose it as 'chambers' to count per chamber"
            )
        self._trained, self.model_path = None, None
        self._job = TrainJob(config, notes)  # the notes are said once training begins
        self.plot.clear("preparing the frames…")
        self._set_running(True)
        self.status.value = "preparing the frames…"
        return self._runner.start(
            prepare_and_train,
            frames,
            regions,
            labels,
            config,
            self._job,
            yielded=self._on_progress,
            returned=self._on_returned,
            errored=self._on_errored,
            finished=self._on_finished,
            desc="Twin-VAE training: preparing",
            total=0,
        )

    def stop_training(self) -> None:
        """Stop after the current batch; the best model so far is kept."""
        if self._runner.stop():
            self._stop.enabled = False
            self.status.value = "stopping after this batch…"

    def save_model(self, path) -> Path:
        """Write the last trained model (with its normalisation and summary), atomically."""
        if self._trained is None or self._trained.result is None:
            raise ValueError("there is no trained model to save yet")
        self.model_path = self._trained.save(path)
        self._count.enabled = True
        return self.model_path

    # -- worker slots ----------------------------------------------------------------------
    def _on_progress(self, report) -> None:
        if isinstance(report, tuple):  # (frames cropped, frames) while preparing
            self.status.value = f"preparing frames: {report[0]} of {report[1]}"
            return
        if report.epoch_end:
            validation = report.validation or {}
            if report.epoch == 0:
                self.plot.clear("" if validation else f"no validation: {HELD_OUT_NOTE}")
            self.plot.add_epoch(report.epoch, report.losses, validation.get("accuracy"))
        self.status.value = describe(report)
        # last: napari's progress bar and notifications may process pending events (even the
        # run's end) before they return, and nothing here may overwrite what those did
        self._advance(report)
        for note in self._job.take_notes():  # training began: the inputs were usable
            show_warning(note)
        if report.message:
            show_info(report.message)

    def _on_returned(self, result) -> None:
        self._job.returned = True
        self._finish(self._job.training)

    def _on_errored(self, exc: BaseException) -> None:
        self._job.failed = True
        self.status.value = f"training failed: {exc}"
        self.plot.note = "training failed (see above); your labels are unchanged"
        self.plot.update()

    def _on_finished(self, stopped: bool) -> None:
        job = self._job
        self._set_running(False)
        if job.returned or job.failed:
            return
        if job.training is not None and job.training.result is not None:
            self._finish(job.training)  # stopped: the best model so far
        else:
            self.status.value = "stopped before training began"
            self.plot.clear(self.status.value)

    def _finish(self, training: Training) -> None:
        result = training.result
        if result.stopped.startswith("diverged") and not result.best.get("epoch"):
            self.status.value = (
                f"training {result.stopped}; no epoch did better than the start model: "
                "nothing to save"
            )
            show_warning(self.status.value)
            return
        self._trained = training
        self._save.enabled = True
        self.status.value = outcome(result)
        self._on_save_model()
        if result.stopped.startswith("diverged"):
            show_warning(f"training {result.stopped}; the best model so far is kept")

    # -- callbacks -------------------------------------------------------------------------
    def _on_parent_changed(self, parent=None) -> None:
        if parent is None:  # the dock was closed: a run stops, its model is still offered
            self.stop_training()

    def _on_destroyed(self, *_) -> None:
        """The viewer closed: stop a run and leave the widgets (gone now) alone."""
        self._runner.let_go()

    def _on_start(self, value=None) -> None:
        self.start_training()

    def _on_stop(self, value=None) -> None:
        self.stop_training()

    def _on_start_model_changed(self, value=None) -> None:
        start = self._start_model.value
        self._model_file.visible = start == "file"
        self._strategy.enabled = start != "scratch"

    def _on_save_model(self, value=None) -> None:
        image = self.labeling.image.value
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
        start = default_folder(image) / f"twinvae-{file_stem(image)}-{stamp}.pt"
        path, _ = QFileDialog.getSaveFileName(
            self.native, "Save the trained model", str(start), "Twin-VAE model (*.pt)"
        )
        if not path:
            self.status.value += " · not saved yet (Save model…)"
            return
        path = Path(path) if Path(path).suffix else Path(path).with_suffix(".pt")
        try:
            saved = self.save_model(path)
        except (ValueError, OSError) as err:
            show_error(f"model not saved: {err}")
            return
        show_info(f"saved the model to {saved}")

    def _on_count_with_model(self, value=None) -> None:
        hand_to_count_dock(self._viewer, self.model_path)

    # -- helpers ---------------------------------------------------------------------------
    def _ranking_model(self) -> Path:
        """Label next ranks with the model last trained here, else the start model."""
        return ranking_model(self.model_path, self._start_model.value, self._model_file.value)

    def _set_running(self, running: bool) -> None:
        self._start.enabled = not running
        self._stop.enabled = running
        self._settings.enabled = not running
        self._save.enabled = not running and self._trained is not None
        self._count.enabled = not running and self.model_path is not None

    def _advance(self, report: TrainProgress) -> None:
        """Move the napari progress bar: per epoch, or per minute with only a time budget."""
        pbar = self._runner.pbar
        if pbar is None:
            return
        if report.epochs is not None:
            total, done = report.epochs, report.epoch
        else:
            total, done = math.ceil(self._job.config.minutes), int(report.elapsed_s // 60)
        if pbar.total != total:
            pbar.total = total
        pbar.set_description(f"Twin-VAE training: {describe(report, short=True)}")
        if done > pbar.n and pbar is self._runner.pbar:  # not closed meanwhile by the run's end
            pbar.update(min(done, total) - pbar.n)

    def _refuse(self, reason: str) -> None:
        """Say why a run does not start, in a notification and in the status line."""
        show_error(reason)
        self.status.value = f"not started: {reason}"

    def _confirm(self, question: str) -> bool:
        answer = QMessageBox.question(self.native, "Label & train", question)
        return answer == QMessageBox.StandardButton.Yes
