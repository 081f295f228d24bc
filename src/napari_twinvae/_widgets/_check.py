"""The Count cells dock's "Check these frames" list: the counts most likely wrong, first.

The order is core's (:func:`core.uncertainty.check_order`): counts that break the growth series
or lie outside the model's range first, then by the chance that the rounded count is wrong. A
click on a row asks the dock to show that frame and chamber (:attr:`CheckList.picked`).
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Container, Label, Table
from psygnal import Signal
from qtpy.QtWidgets import QAbstractItemView, QHeaderView

from napari_twinvae.core.uncertainty import check_order

COLUMNS = ["frame", "chamber", "count", "P(wrong)", "flag"]
MOST_ROWS = 500  # a table of thousands of rows fills slowly; nobody checks that many by hand
HEADING = "<b>Check these frames</b>"


def doubtful_counts(result) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(row, chamber) of the counts to check, most doubtful first, and the flag of every count:
    the growth-series flag, else the range flag (``"above 30"``), else ``""``."""
    series = np.asarray(result.series_flags, dtype=object)
    flags = np.where(series != "", series, np.asarray(result.flags, dtype=object))
    doubt = result.uncertainty
    if doubt is None:  # counted without uncertainty: only the flags say what to check
        doubt = np.zeros(result.counts.shape, dtype=np.float32)
    return check_order(doubt, flags), flags


class CheckList(Container):
    """A table of the counts to check; ``picked(frame, chamber)`` when a row is clicked."""

    picked = Signal(int, int)

    def __init__(self) -> None:
        super().__init__(labels=False)
        self.heading = Label(value=f"{HEADING}: count to see them")
        self.table = Table(value={"data": [], "index": [], "columns": COLUMNS})
        native = self.table.native
        native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        native.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        native.verticalHeader().setVisible(False)
        native.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        native.setMinimumHeight(120)
        native.setToolTip(
            "counts that break the growth series first, then those most likely wrong; "
            "click one to go to its frame"
        )
        self.entries: list[tuple[int, int]] = []  # (frame, chamber) of each row
        self.extend([self.heading, self.table])
        native.cellClicked.connect(self._on_row_clicked)

    def show_result(self, result) -> np.ndarray:
        """List the counts of a :class:`core.predict.CountResult` worth checking; returns (T, R)
        bool, True for every count listed (shown or past :data:`MOST_ROWS`), for the plot."""
        order, flags = doubtful_counts(result)
        doubt = result.uncertainty
        listed = np.zeros(result.counts.shape, dtype=bool)
        rows = []
        self.entries = []
        for t, r in order:
            listed[t, r] = True
            if len(rows) == MOST_ROWS:
                continue
            frame = int(result.frames[t])
            sure = "" if doubt is None else f"{float(doubt[t, r]):.2f}"
            rows.append([frame, r, int(result.counts[t, r]), sure, str(flags[t, r])])
            self.entries.append((frame, r))
        self.table.value = {"data": rows, "index": [], "columns": COLUMNS}
        if not order:
            self.heading.value = (
                f"{HEADING}: none; every count is more likely right than wrong and fits the series"
            )
        else:
            shown = f" (the first {MOST_ROWS} shown)" if len(order) > MOST_ROWS else ""
            self.heading.value = (
                f"{HEADING}: {len(order):,} of {result.counts.size:,} counts{shown}, click to go"
            )
        return listed

    def _on_row_clicked(self, row: int, column: int = 0) -> None:
        if 0 <= row < len(self.entries):
            self.picked.emit(*self.entries[row])


def center_on_chamber(viewer, image, region) -> None:
    """Centre the canvas on a chamber, (top, left, bottom, right) in ``image``'s pixels."""
    top, left, bottom, right = region
    middle = np.array([(top + bottom) / 2, (left + right) / 2])
    world = middle * np.asarray(image.scale[-2:]) + np.asarray(image.translate[-2:])
    camera = _camera(viewer)
    center = list(camera.center)
    center[-2:] = world.tolist()
    camera.center = tuple(center)


def _camera(viewer):
    """napari 0.9 moved the camera to ``viewer.scene`` (the old attribute warns); 0.5 has none."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera
