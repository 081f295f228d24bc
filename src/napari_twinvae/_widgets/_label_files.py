"""The labeling panel's labels on disk: its "Save labels…" and "Load labels…" buttons.

Saving writes the clicked cells as napari's Points CSV and every labeled frame beside it
(:func:`core.labels.save_annotation`), so frames marked 'no cells' survive. Loading merges a
file into the annotation without replacing a click, and refuses a file that does not fit
(:func:`core.labels.merge_fitting`) before anything changes.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog

from napari_twinvae._widgets._annotation import (
    CELLS_SUFFIX,
    EMPTY_FRAMES_KEY,
    empty_frames,
    frame_points,
    image_stack,
)
from napari_twinvae._widgets._forms import default_folder, file_stem
from napari_twinvae.core.labels import load_annotation, merge_fitting, save_annotation


class LabelFiles(Container):
    """A row of two buttons that save a :class:`~._labeling.LabelingPanel`'s labels to a file
    or merge a file's labels into them."""

    def __init__(self, panel) -> None:
        super().__init__(layout="horizontal", labels=False)
        self.margins = (0, 0, 0, 0)
        self._panel = panel
        self._save = PushButton(text="Save labels…")
        self._load = PushButton(text="Load labels…")
        self.extend([self._save, self._load])
        self._save.changed.connect(self._on_save_labels)
        self._load.changed.connect(self._on_load_labels)

    def save(self, path) -> tuple[Path, Path]:
        """Write the clicked cells (napari Points CSV) and the labeled frames, atomically."""
        layer = self._panel.cells.value
        if layer is None:
            raise ValueError("there are no labels to save yet: click some cells first")
        return save_annotation(path, frame_points(layer), empty_frames(layer))

    def load(self, path) -> str:
        """Merge a labels file into the annotation: nothing already clicked is replaced, and a
        file that does not fit (frames beyond the stack, points outside the image, more than 30
        cells in a chamber, cells where a frame is marked 'no cells' or the other way round, a
        ``frame,count`` table) is refused before anything changes."""
        panel, name = self._panel, Path(path).name
        image = panel.image.value
        stack = image_stack(image)
        loaded = load_annotation(path)
        if loaded.table is not None:
            raise ValueError(
                f"{name} is a frame,count table: counts without cell positions, and this dock "
                "labels by clicked cells. Train on it with `napari-twinvae train IMAGES --labels "
                f"{name}`, or load a napari Points CSV"
            )
        try:
            regions = panel.regions()
        except ValueError as err:
            raise ValueError(f"{name} does not fit {image.name}: {err}") from None
        new = merge_fitting(
            panel.snapshot(), loaded, stack.shape[0], stack.shape[1:], regions, name, image.name
        )
        layer = panel.ensure_annotation()
        layer.metadata[EMPTY_FRAMES_KEY] = sorted({*empty_frames(layer), *loaded.empty_frames()})
        if len(new):
            layer.add(new if layer.ndim == 3 else new[:, 1:])
        panel.refresh()
        kept = len(loaded.points) - len(new)
        return (
            f"loaded {len(loaded.labeled_frames)} labeled frames with {len(new)} new cells"
            + (f" ({kept} already there)" if kept else "")
            + f" into {layer.name}"
        )

    def _on_save_labels(self, value=None) -> None:
        if self._panel.cells.value is None:
            show_error("there are no labels to save yet: click some cells first")
            return
        image = self._panel.image.value
        start = default_folder(image) / f"{file_stem(image)}{CELLS_SUFFIX}"
        path, _ = QFileDialog.getSaveFileName(
            self._panel.native,
            "Save labels",
            str(start),
            "clicked cells (*.cells.csv);;napari Points CSV (*.csv)",
        )
        if not path:
            return
        try:
            points, frames = self.save(path)
        except (ValueError, OSError) as err:
            show_error(f"labels not saved: {err}")
            return
        show_info(f"saved the labels to {points.name} and the labeled frames to {frames.name}")

    def _on_load_labels(self, value=None) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self._panel.native,
            "Load labels",
            str(default_folder(self._panel.image.value)),
            "napari Points CSV (*.csv)",
        )
        if not path:
            return
        try:
            show_info(self.load(path))
        except (ValueError, OSError) as err:
            show_error(f"labels not loaded: {err}")
