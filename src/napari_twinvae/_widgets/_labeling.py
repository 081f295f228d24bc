"""The labeling half of the "Label & train" dock: one click per cell, frames with no cells, and
a table of the labeled frames (saving and loading them: :mod:`~._label_files`).

Counts follow ``core.labels``: a frame with points is labeled with their number, a frame the
user marked as having no cells counts 0, and every other frame is unlabeled. The marked frames
live in the Points layer's metadata, so they stay with the layer.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, Table
from napari.layers import Image, Points, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QAbstractItemView, QComboBox, QHeaderView

from napari_twinvae._widgets._annotation import (
    ANNOTATION_ROLE,
    EMPTY_FRAMES_KEY,
    PREDICTED_CELLS_ROLE,
    empty_frames,
    frame_points,
    image_stack,
)
from napari_twinvae._widgets._forms import form, row, wrapping
from napari_twinvae._widgets._label_files import LabelFiles
from napari_twinvae._widgets._layers import (
    current_frame,
    find_owned,
    go_to_frame,
    role_of,
    update_or_add,
)
from napari_twinvae.core.chambers import Region, fit_regions, regions_from_shapes
from napari_twinvae.core.config import IMAGE_SIZE
from napari_twinvae.core.labels import Annotation, Labels, annotation_of

_DONE = ("added", "removed", "changed")  # napari's data events also fire before each change


class LabelingPanel(Container):
    """Pick an image, click its cells, mark empty frames, and see the labeled frames."""

    def __init__(self, viewer) -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self._points_layer = None  # the layers whose data events we follow
        self._shapes_layer = None
        self.image = self._layer_picker("image", Image, "frames to label (T x H x W or 2D)")
        self.cells = self._layer_picker(
            "cells",
            Points,
            "Points layer of clicked cells; a new one is made for the image when empty",
            none="(new layer)",
        )
        self.chambers = self._layer_picker(
            "chambers",
            Shapes,
            "one rectangle per chamber (shared with Count cells); empty: the whole frame",
            none="(whole frame)",
        )
        self.frame_info = Label(value="")
        self._click = PushButton(text="Click cells", tooltip="add a point on every cell")
        self._empty = PushButton(text="Frame has no cells")
        self._predicted = PushButton(
            text="Use predicted cells",
            tooltip="copy this frame's predicted cells (Count cells with a density model) into the "
            "annotation, to correct them instead of clicking every cell",
        )
        self.summary = Label(value="")
        self.table = Table(value={"data": [], "index": [], "columns": ["frame", "cells"]})
        self.table.native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.native.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.native.verticalHeader().setVisible(False)
        self.table.native.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.native.setMinimumHeight(120)
        self.files = LabelFiles(self)
        self._table_frames: list[int] = []
        for label in (self.frame_info, self.summary):
            wrapping(label)
        self.extend(
            [
                form(self.image, self.cells, self.chambers),
                self.frame_info,
                row(self._click, self._empty),
                self._predicted,
                self.summary,
                self.table,
                self.files,
            ]
        )
        self.image.changed.connect(self._on_image_changed)
        self.cells.changed.connect(self._on_cells_changed)
        self.chambers.changed.connect(self._on_chambers_changed)
        self._click.changed.connect(self._on_click_cells)
        self._empty.changed.connect(self._on_empty_frame)
        self._predicted.changed.connect(self.use_predicted_cells)
        self.table.native.cellClicked.connect(self._on_row_clicked)
        for event in ("inserted", "removed", "reordered"):
            getattr(viewer.layers.events, event).connect(self._on_layers_changed)
        viewer.dims.events.current_step.connect(self._on_frame_changed)
        self._on_image_changed()

    # -- what the other half of the dock uses ----------------------------------------------
    def n_frames(self) -> int:
        return image_stack(self.image.value).shape[0]

    def regions(self) -> list[Region] | None:
        """The chambers' rectangles, checked against the frame; None without chambers."""
        return self.fitted_regions()[0]

    def fitted_regions(self) -> tuple[list[Region] | None, list[str]]:
        """The chambers' rectangles clipped to the frame and a note for each one clipped
        (:func:`core.chambers.fit_regions`); (None, []) without chambers."""
        shapes = self.chambers.value
        if shapes is None or len(shapes.data) == 0:
            return None, []
        frame_shape = image_stack(self.image.value).shape[1:]
        return fit_regions(regions_from_shapes(shapes.data, shapes.shape_type), frame_shape)

    def snapshot(self) -> Annotation:
        """A copy of what the user clicked: the cells and the frames marked as holding none."""
        layer = self.cells.value
        return annotation_of(frame_points(layer).copy(), empty_frames(layer))

    def labels(self, max_count: int | None = None) -> Labels:
        """Counts (T, R) and which of them are labeled, from the clicked cells and marked frames,
        checked as training checks them (points outside the image are refused)."""
        stack = image_stack(self.image.value)
        annotation = self.snapshot()
        return annotation.labels(stack.shape[0], stack.shape[1:], self.regions(), max_count)

    def current_frame(self) -> int | None:
        """The frame of the image the viewer shows, or None without an image."""
        image = self.image.value
        if image is None:
            return None
        return current_frame(self._viewer, image)

    def go_to_frame(self, frame: int) -> None:
        if self.image.value is not None:
            go_to_frame(self._viewer, self.image.value, frame)

    def ensure_annotation(self):
        """The Points layer to click cells into: the chosen one, the image's own, or a new one."""
        layer = self.cells.value
        if layer is not None:
            return layer
        image = self.image.value
        stack = image_stack(image)
        layer = find_owned(self._viewer, ANNOTATION_ROLE, image)
        if layer is None:
            try:
                regions = self.regions()
            except ValueError:  # told in the summary; the size is only a first guess
                regions = None
            sides = [min(b - t, r - x) for t, x, b, r in regions] if regions else stack.shape[1:]
            options = {
                "name": f"{image.name} cells",
                "ndim": image.ndim,
                "size": float(np.clip(6 * np.median(sides) / IMAGE_SIZE, 3, 40)),
                "face_color": "#ffd400",
                "border_color": "black",
                "border_width": 0.1,
                "scale": image.scale,
                "translate": image.translate,
                "out_of_slice_display": False,
                "metadata": {EMPTY_FRAMES_KEY: []},
            }
            empty = np.zeros((0, image.ndim))
            layer = update_or_add(self._viewer, empty, options, "points", ANNOTATION_ROLE, image)
        self.cells.reset_choices()
        self.cells.value = layer
        return layer

    # -- display ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Recount: the table of labeled frames, the summary, and the current frame."""
        try:
            labels = self.labels()
            problem = ""
        except ValueError as err:
            labels, problem = None, str(err)
        self._fill_table(labels)
        if problem:
            self.summary.value = f"⚠ {problem}"
        elif labels is not None and labels.labeled.any():
            frames = labels.labeled[:, 0]
            zero = int((labels.counts[frames].sum(axis=1) == 0).sum())
            self.summary.value = (
                f"{int(frames.sum())} labeled frames ({zero} with no cells), "
                f"{int(labels.counts.sum())} cells"
            )
        else:
            self.summary.value = "no labeled frames yet"
        self._show_frame(labels)

    def _fill_table(self, labels: Labels | None) -> None:
        columns = ["frame", "cells"]
        rows: list[list[int]] = []
        self._table_frames = []
        if labels is not None:
            if self.chambers.value is not None and labels.counts.shape[1] > 1:
                columns += [f"chamber {r + 1}" for r in range(labels.counts.shape[1])]
            for frame in np.flatnonzero(labels.labeled[:, 0]).tolist():
                per_chamber = labels.counts[frame].tolist()
                extra = per_chamber if len(columns) > 2 else []
                rows.append([frame, sum(per_chamber), *extra])
                self._table_frames.append(frame)
        self.table.value = {"data": rows, "index": [], "columns": columns}

    def _show_frame(self, labels: Labels | None) -> None:
        frame = self.current_frame()
        self._empty.enabled = frame is not None
        if frame is None:
            self.frame_info.value = "pick an image layer"
            return
        marked = frame in empty_frames(self.cells.value)
        clicked = int((np.rint(frame_points(self.cells.value)[:, 0]) == frame).sum())
        self._empty.text = "Undo 'no cells'" if marked and not clicked else "Frame has no cells"
        self._empty.enabled = not clicked
        where = f"frame {frame}" if self.image.value.ndim == 3 else "image"
        if clicked:
            text = f"{where}: {clicked} cell{'s' if clicked != 1 else ''}"
            if labels is not None and self.chambers.value is not None:
                inside = labels.counts[frame]
                text += f" (chambers: {', '.join(map(str, inside.tolist()))}"
                outside = clicked - int(inside.sum())
                text += f"; {outside} outside)" if outside else ")"
        elif marked:
            text = f"{where}: no cells (marked)"
        else:
            text = f"{where}: not labeled yet"
        self.frame_info.value = text

    # -- choices ---------------------------------------------------------------------------
    def _layer_picker(self, label: str, kind, tooltip: str, none: str | None = None) -> ComboBox:
        """A choice of the viewer's layers of one kind; ``none`` names the choice of no layer
        (none: a layer must be picked). Long layer names do not widen the dock."""

        def layers(widget=None):
            return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)]

        combo = ComboBox(label=label, choices=layers, nullable=none is not None, tooltip=tooltip)
        if none is not None:
            combo.null_string = none
        combo.reset_choices()
        combo.native.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        combo.native.setMinimumContentsLength(12)
        return combo

    # -- callbacks -------------------------------------------------------------------------

    def _on_layers_changed(self, event=None) -> None:
        self.reset_choices()

    def _on_image_changed(self, value=None) -> None:
        image = self.image.value
        current = self.cells.value
        owned = find_owned(self._viewer, ANNOTATION_ROLE, image) if image is not None else None
        if owned is not None:
            self.cells.value = owned
        elif current is not None and role_of(current) == ANNOTATION_ROLE:
            self.cells.value = None  # another image's annotation, not this one's
        self._on_cells_changed()

    def _on_cells_changed(self, value=None) -> None:
        self._points_layer = _follow(self._points_layer, self.cells.value, self._on_layer_data)
        self.refresh()

    def _on_chambers_changed(self, value=None) -> None:
        self._shapes_layer = _follow(self._shapes_layer, self.chambers.value, self._on_layer_data)
        self.refresh()

    def _on_layer_data(self, event=None) -> None:
        if str(getattr(event, "action", "changed")) in _DONE:
            self.refresh()

    def _on_frame_changed(self, event=None) -> None:
        try:
            labels = self.labels()
        except ValueError:
            labels = None
        self._show_frame(labels)

    def _on_row_clicked(self, row: int, column: int = 0) -> None:
        if 0 <= row < len(self._table_frames):
            self.go_to_frame(self._table_frames[row])

    def _on_click_cells(self, value=None) -> None:
        try:
            layer = self.ensure_annotation()
        except ValueError as err:
            show_error(str(err))
            return
        self._viewer.layers.selection.active = layer
        layer.mode = "add"

    def _frame_to_label(self):
        """(frame on screen, annotation layer), or None after saying what is missing."""
        frame = self.current_frame()
        if frame is None:
            show_error("pick the image layer to label first")
            return None
        try:
            return frame, self.ensure_annotation()
        except ValueError as err:
            show_error(str(err))
            return None

    def _on_empty_frame(self, value=None) -> None:
        target = self._frame_to_label()
        if target is None:
            return
        frame, layer = target
        marked = set(empty_frames(layer))
        if frame in marked:
            marked.discard(frame)
        elif (np.rint(frame_points(layer)[:, 0]) == frame).any():
            show_warning(f"frame {frame} holds clicked cells; delete them to mark it empty")
            return
        else:
            marked.add(frame)
        layer.metadata[EMPTY_FRAMES_KEY] = sorted(marked)
        self.refresh()

    def use_predicted_cells(self, value=None) -> None:
        """Proofreading: the predicted cells of the frame on screen become its clicked cells
        (none predicted: the frame is marked as holding no cells); the user then corrects them."""
        image = self.image.value
        predicted = find_owned(self._viewer, PREDICTED_CELLS_ROLE, image) if image else None
        if image is not None and predicted is None:
            show_error(
                f"no predicted cells for {image.name}: count it in Count cells with a model that "
                "has a density head first"
            )
            return
        target = self._frame_to_label()
        if target is None:
            return
        frame, layer = target
        clicked = frame_points(layer)
        if (np.rint(clicked[:, 0]) == frame).any() or frame in empty_frames(layer):
            show_warning(f"frame {frame} is labeled already; delete its cells to start over")
            return
        cells = frame_points(predicted)
        cells = cells[np.rint(cells[:, 0]) == frame]
        if len(cells):
            new = cells if layer.ndim == 3 else cells[:, 1:]
            layer.data = np.concatenate([np.asarray(layer.data), new])
        else:
            layer.metadata[EMPTY_FRAMES_KEY] = sorted({*empty_frames(layer), frame})
        self.refresh()
        show_info(
            f"frame {frame}: {len(cells)} predicted cell(s) copied into {layer.name}; move, add or "
            "delete points where they are wrong"
        )


def _follow(old, new, callback):
    """Move a data-event connection from layer ``old`` to layer ``new``; returns ``new``."""
    if old is not None:
        old.events.data.disconnect(callback)
    if new is not None:
        new.events.data.connect(callback)
    return new
