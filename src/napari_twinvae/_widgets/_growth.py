"""The growth curve: count against frame, one line per chamber, the current frame marked.

A small QPainter widget (napari brings no plotting library): clicking or dragging on it asks the
viewer to go to that frame through the ``frame_clicked`` signal.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_twinvae._widgets._forms import plot_painter
from napari_twinvae.core.synthetic import MAX_COUNT

# Distinct line colours that read on napari's dark and light themes (Tableau 10).
COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
MARGINS = (44, 12, 12, 30)  # left, top, right, bottom: room for the tick labels
LEGEND_WIDTH = 96  # extra room on the right for the legend when there are several chambers
FLAG_COLOR = "#ff4040"  # counts outside 0..30: the limit line and the rings around them
DOUBT_COLOR = "#ffb000"  # counts to check (likely wrong, or breaking the series): dots on them


def nice_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    span = max(high - low, 1e-9)
    raw = span / max(most, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0)  # frames and cells are whole numbers
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) // step) + 1)]


class GrowthCurve(QWidget):
    """Counts per frame and chamber as lines; click or drag to choose a frame."""

    frame_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("napari-twinvae growth curve")
        self.setMinimumSize(240, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(False)
        self.frames = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros((0, 0), dtype=np.int64)
        self.names: list[str] = []
        self.flagged = np.zeros((0, 0), dtype=bool)
        self.doubtful = np.zeros((0, 0), dtype=bool)
        self.current: int | None = None
        self._lines: tuple[tuple[int, int], list[QPolygonF]] | None = None  # (size, polylines)

    def sizeHint(self) -> QSize:
        return QSize(380, 260)

    # -- data ----------------------------------------------------------------------------------
    def set_counts(
        self, frames, counts, names: list[str] | None = None, flagged=None, doubtful=None
    ) -> None:
        """Frame numbers (T,) and counts (T, R); ``names`` label the chambers in the legend;
        ``flagged`` (T, R) marks counts outside the model's range, drawn ringed in red;
        ``doubtful`` (T, R) the counts to check first (Check these frames), drawn as dots."""
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        order = np.argsort(frames, kind="stable")  # counted frames may come in any order
        self.frames = frames[order]
        self.counts = np.asarray(counts).reshape(len(frames), -1)[order]
        if flagged is None:
            flagged = self.counts > MAX_COUNT
        self.flagged = np.asarray(flagged, dtype=bool).reshape(self.counts.shape)[order]
        if doubtful is None:
            doubtful = np.zeros(self.counts.shape, dtype=bool)
        self.doubtful = np.asarray(doubtful, dtype=bool).reshape(self.counts.shape)[order]
        self.names = list(names) if names else [f"chamber {r}" for r in range(self.counts.shape[1])]
        self._lines = None
        self.update()

    def set_current(self, frame: int | None) -> None:
        """Mark ``frame`` (None: no marker)."""
        self.current = None if frame is None else int(frame)
        self.update()

    # -- geometry ------------------------------------------------------------------------------
    def _plot_rect(self) -> QRectF:
        left, top, right, bottom = MARGINS
        if len(self.names) > 1:
            right += LEGEND_WIDTH
        return QRectF(
            left, top, max(self.width() - left - right, 1), max(self.height() - top - bottom, 1)
        )

    def _ranges(self) -> tuple[float, float, float, float]:
        if self.frames.size == 0:
            return 0.0, 1.0, 0.0, 1.0
        x0, x1 = float(self.frames.min()), float(self.frames.max())
        if x1 == x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        y1 = max(float(self.counts.max(initial=0)), 1.0)
        return x0, x1, 0.0, y1 * 1.08

    def _to_pixel(self, frame: float, count: float) -> QPointF:
        rect = self._plot_rect()
        x0, x1, y0, y1 = self._ranges()
        x = rect.left() + (frame - x0) / (x1 - x0) * rect.width()
        y = rect.bottom() - (count - y0) / (y1 - y0) * rect.height()
        return QPointF(x, y)

    def frame_at(self, x: float) -> int | None:
        """The counted frame nearest to the widget's x coordinate (None before any counting)."""
        if self.frames.size == 0:
            return None
        rect = self._plot_rect()
        x0, x1, _, _ = self._ranges()
        value = x0 + (x - rect.left()) / rect.width() * (x1 - x0)
        return int(self.frames[np.abs(self.frames - value).argmin()])

    # -- events --------------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        self._emit_frame(event)

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._emit_frame(event)

    def _emit_frame(self, event) -> None:
        position = event.position() if hasattr(event, "position") else event.localPos()
        frame = self.frame_at(position.x())
        if frame is not None and frame != self.current:
            self.frame_clicked.emit(frame)

    def paintEvent(self, event) -> None:
        painter, text, faint = plot_painter(self, faint=60)
        rect = self._plot_rect()
        if self.frames.size == 0:
            painter.setPen(text)
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "Count to see growth curves")
            return
        self._draw_axes(painter, rect, text, faint)
        for r, line in enumerate(self._polylines()):
            # A wide pen goes through Qt's stroker: ~1 s for a dense, jagged series; thin is fast.
            width = 2.0 if line.size() <= 300 else 1.0
            painter.setPen(QPen(QColor(COLORS[r % len(COLORS)]), width))
            if line.size() == 1:
                painter.drawEllipse(line.at(0), 2.5, 2.5)
            else:
                painter.drawPolyline(line)
        self._draw_doubtful(painter)
        self._draw_flagged(painter, rect)
        self._draw_current(painter, rect, text)
        self._draw_legend(painter, rect)

    def _polylines(self) -> list[QPolygonF]:
        """One polyline per chamber in pixels, kept until the data or the size change (moving
        the current frame repaints often). A series longer than the plot is wide is drawn as
        its lowest and highest count per pixel column: the same picture, a few hundred points."""
        size = (self.width(), self.height())
        if self._lines is None or self._lines[0] != size:
            rect = self._plot_rect()
            x0, x1, y0, y1 = self._ranges()
            xs = rect.left() + (self.frames - x0) / (x1 - x0) * rect.width()
            ys = rect.bottom() - (self.counts - y0) / (y1 - y0) * rect.height()
            if len(xs) > 2 * rect.width():
                columns, first = np.unique(np.floor(xs), return_index=True)
                low = np.minimum.reduceat(ys, first, axis=0)
                high = np.maximum.reduceat(ys, first, axis=0)
                xs = np.repeat(columns, 2)
                ys = np.stack([low, high], axis=1).reshape(-1, ys.shape[1])
            lines = [
                QPolygonF(
                    [QPointF(x, y) for x, y in zip(xs.tolist(), ys[:, r].tolist(), strict=True)]
                )
                for r in range(ys.shape[1])
            ]
            self._lines = (size, lines)
        return self._lines[1]

    def _draw_axes(self, painter: QPainter, rect: QRectF, text: QColor, faint: QColor) -> None:
        x0, x1, y0, y1 = self._ranges()
        metrics = painter.fontMetrics()
        for value in nice_ticks(y0, y1, 5):
            y = self._to_pixel(x0, value).y()
            painter.setPen(faint)
            painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
            painter.setPen(text)
            label = f"{value:g}"
            painter.drawText(
                QPointF(rect.left() - 6 - metrics.horizontalAdvance(label), y + 4), label
            )
        for value in nice_ticks(x0, x1, 6):
            x = self._to_pixel(value, y0).x()
            painter.setPen(text)
            painter.drawLine(QPointF(x, rect.bottom()), QPointF(x, rect.bottom() + 4))
            label = f"{value:g}"
            painter.drawText(
                QPointF(x - metrics.horizontalAdvance(label) / 2, rect.bottom() + 16), label
            )
        painter.drawRect(rect)
        painter.drawText(QPointF(rect.right() - 34, rect.bottom() + 28), "frame")
        painter.save()
        painter.translate(11, rect.center().y() + 14)
        painter.rotate(-90)
        painter.drawText(QPointF(0, 0), "cells")
        painter.restore()

    def _draw_flagged(self, painter: QPainter, rect: QRectF) -> None:
        """The 30-cell limit as a dashed red line, and a red ring on every count outside it."""
        if not self.flagged.any():
            return
        pen = QPen(QColor(FLAG_COLOR), 1, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        y = self._to_pixel(0, MAX_COUNT).y()
        if rect.top() <= y <= rect.bottom():
            painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
            painter.drawText(QPointF(rect.left() + 4, y - 3), f"{MAX_COUNT}: the most it counts")
        painter.setPen(QPen(QColor(FLAG_COLOR), 1.5))
        rows, chambers = np.nonzero(self.flagged)
        for t, r in zip(rows[:2000].tolist(), chambers[:2000].tolist(), strict=True):
            painter.drawEllipse(self._to_pixel(self.frames[t], self.counts[t, r]), 4.0, 4.0)

    def _draw_doubtful(self, painter: QPainter) -> None:
        """An amber dot on every count to check, so the eye finds where the curve is unsure."""
        if not self.doubtful.any():
            return
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(DOUBT_COLOR))
        rows, chambers = np.nonzero(self.doubtful)
        for t, r in zip(rows[:2000].tolist(), chambers[:2000].tolist(), strict=True):
            painter.drawEllipse(self._to_pixel(self.frames[t], self.counts[t, r]), 3.0, 3.0)
        painter.setBrush(Qt.BrushStyle.NoBrush)

    def _draw_current(self, painter: QPainter, rect: QRectF, text: QColor) -> None:
        rows = np.flatnonzero(self.frames == self.current) if self.current is not None else []
        if len(rows) == 0:
            return
        x = self._to_pixel(self.current, 0).x()
        painter.setPen(QPen(text, 1, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
        counts = ", ".join(str(int(c)) for c in self.counts[rows[0]])
        label = f"frame {self.current}: {counts}"
        width = painter.fontMetrics().horizontalAdvance(label)
        at = min(x + 4, rect.right() - width - 2)
        painter.setPen(text)
        painter.drawText(QPointF(max(at, rect.left() + 2), rect.top() + 14), label)

    def _draw_legend(self, painter: QPainter, rect: QRectF) -> None:
        if len(self.names) < 2:
            return
        y = rect.top() + 12
        shown = self.names if len(self.names) <= 12 else [*self.names[:11], "..."]
        for r, name in enumerate(shown):
            painter.setPen(QPen(QColor(COLORS[r % len(COLORS)]), 3))
            if name != "...":
                painter.drawLine(
                    QPointF(rect.right() + 8, y - 4), QPointF(rect.right() + 22, y - 4)
                )
            painter.drawText(QPointF(rect.right() + 26, y), name)
            y += 15
