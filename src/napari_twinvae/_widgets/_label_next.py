"""The Label & train dock's "Label next" button: go to the unlabeled frame whose label would help
most.

The first press counts the image with the dock's model in a worker (the same job as Count
cells); :func:`core.uncertainty.label_next` then ranks the unlabeled frames by the chance that
their counts are wrong, spread over the series. Each press goes to the best frame not labeled
and not suggested yet. With a density head the count also gives the predicted cells, so the
loop is: Label next, *Use predicted cells*, fix them, Label next.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from magicgui.widgets import Container, Label, PushButton
from napari.utils.notifications import show_error, show_info

from napari_twinvae._widgets._annotation import image_stack
from napari_twinvae._widgets._count import count_job
from napari_twinvae._widgets._count_layers import show_cells
from napari_twinvae._widgets._forms import wrapping
from napari_twinvae._widgets._workers import Runner
from napari_twinvae.core.io import resolve_model
from napari_twinvae.core.predict import DEFAULT_BATCH_SIZE
from napari_twinvae.core.uncertainty import label_next


def ranking_model(trained, start: str, model_file) -> Path:
    """The checkpoint that ranks the frames: the model last trained and saved in the dock, else
    its start model; ValueError (CheckpointError) when there is none."""
    if trained is not None:
        return Path(trained)
    if start == "file":
        path = Path(model_file)
        if not path.is_file():
            raise ValueError("choose the model file to start from; Label next counts with it")
        return path
    if start == "default":
        return resolve_model("default")
    raise ValueError(
        "no model to rank the frames with: train one first, or start from the default model "
        "or a model file"
    )


class LabelNext(Container):
    """The "Label next" button and its status line, under the labeling panel."""

    def __init__(self, viewer, labeling, model, device) -> None:
        """``labeling``: the dock's LabelingPanel; ``model`` and ``device``: callables giving the
        checkpoint to rank with (:func:`ranking_model`) and the device to count on."""
        super().__init__(labels=False)
        self._viewer, self._labeling = viewer, labeling
        self._model, self._device = model, device
        self.button = PushButton(
            text="Label next",
            tooltip="go to the unlabeled frame whose count is most likely wrong, spread over the "
            "series (the first press counts the image with the model)",
        )
        self.status = wrapping(Label(value=""))
        self.extend([self.button, self.status])
        self._runner = Runner()
        self._ranked: tuple[tuple, np.ndarray] | None = None  # (what was counted, uncertainty)
        self._suggested: set[int] = set()  # frames shown since the ranking, labeled or skipped
        self.button.changed.connect(self._on_next)
        self.native.destroyed.connect(self._on_destroyed)

    def go_next(self):
        """Go to the next suggested frame, counting the image first when needed; returns the
        worker when it counts (None otherwise, also after saying what is missing)."""
        if self._runner.running:
            return None
        image = self._labeling.image.value
        if image is None:
            show_error("Label next: pick the image layer to label first")
            return None
        try:
            model = self._model()
            regions = self._labeling.regions()
            self._labeling.labels()  # labels that training would refuse are said now
        except ValueError as err:  # CheckpointError too
            show_error(f"Label next: {err}")
            return None
        frames = image_stack(image)
        key = (image.unique_id, str(model), _mtime(model), str(regions), frames.shape)
        if self._ranked is not None and self._ranked[0] == key:
            self._go()
            return None
        self._ranked, self._suggested = None, set()
        self.button.enabled = False
        self.status.value = f"counting {image.name} to rank its frames…"
        return self._runner.start(
            count_job,
            frames,
            model,
            regions,
            DEFAULT_BATCH_SIZE,
            self._device(),
            yielded=self._on_progress,
            returned=lambda out: self._on_counted(key, image, out[1]),
            errored=self._on_errored,
            finished=self._on_finished,
            desc="Label next: counting",
        )

    # -- callbacks -------------------------------------------------------------------------
    def _on_next(self, value=None) -> None:
        self.go_next()

    def _on_progress(self, step) -> None:
        self._runner.advance(step.done, step.total)

    def _on_counted(self, key, image, result) -> None:
        if result.uncertainty is None:  # counting always asks for it; a guard, not a path
            self.status.value = "the count gave no uncertainty; nothing to rank"
            return
        self._ranked = (key, result.uncertainty)
        if result.cells is not None and image in self._viewer.layers:
            show_cells(self._viewer, image, result)  # for Use predicted cells
        if self._labeling.image.value is image:
            self._go()

    def _on_errored(self, exc: BaseException) -> None:
        self.status.value = f"could not rank the frames: {exc}"

    def _on_finished(self, stopped: bool) -> None:
        self.button.enabled = True

    def _on_destroyed(self, *_) -> None:
        self._runner.let_go()

    # -- helpers ---------------------------------------------------------------------------
    def _go(self) -> None:
        try:
            labels = self._labeling.labels()
        except ValueError as err:
            show_error(f"Label next: {err}")
            return
        uncertainty = self._ranked[1]
        labeled = set(np.flatnonzero(labels.labeled.any(axis=1)).tolist())
        picks = label_next(uncertainty, sorted(labeled | self._suggested), n=1)
        if not len(picks) and self._suggested - labeled:  # all shown once: start a new round
            self._suggested = set()
            picks = label_next(uncertainty, sorted(labeled), n=1)
        if not len(picks):
            show_info("Label next: every frame is labeled")
            self.status.value = "every frame is labeled"
            return
        frame = int(picks[0])
        self._suggested.add(frame)
        self._labeling.go_to_frame(frame)
        doubt = float(np.max(uncertainty[frame]))
        self.status.value = (
            f"frame {frame}: count {doubt:.0%} likely wrong; label it (Use predicted cells, "
            "then fix them), then Label next"
        )


def _mtime(path) -> float:
    """A retrained model saved to the same file must be counted again."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
