"""A small live plot of a training run: loss per twin (log scale) and validation accuracy.

Drawn with QPainter, so it needs nothing beyond Qt: the curves grow by one point per epoch.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_SERIES = {"natural": "#4fc3f7", "synthetic": "#ffb74d"}  # twin -> colour
ACCURACY_COLOR = "#81c784"


class TrainingPlot(QWidget):
    """Loss of the natural and synthetic twins (left axis, log) and validation accuracy (right)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.losses: dict[str, list[tuple[float, float]]] = {twin: [] for twin in LOSS_SERIES}
        self.accuracy: list[tuple[float, float]] = []
        self.note = "the loss and validation accuracy appear here while training"
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(170)
        self.setToolTip("loss per twin (log scale, left) and validation accuracy (right) per epoch")

    def sizeHint(self) -> QSize:
        return QSize(320, 170)

    def clear(self, note: str = "") -> None:
        for points in self.losses.values():
            points.clear()
        self.accuracy.clear()
        self.note = note
        self.update()

    def add_epoch(self, epoch: int, losses: dict, accuracy: float | None) -> None:
        """One point per series: the epoch's mean total loss per twin and its accuracy (0-1)."""
        for twin, points in self.losses.items():
            value = (losses.get(twin) or {}).get("total", math.nan)
            if math.isfinite(value) and value > 0:
                points.append((float(epoch), float(value)))
        if accuracy is not None and math.isfinite(accuracy):
            self.accuracy.append((float(epoch), float(accuracy)))
        self.update()

    # -- drawing ---------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(QPalette.ColorRole.WindowText)
        grid = QColor(text)
        grid.setAlpha(50)
        metrics = painter.fontMetrics()
        pad = metrics.height()
        area = QRectF(
            pad * 2.6, pad * 1.6, self.width() - pad * 5.2, self.height() - pad * 3.0
        )  # room for both axes' numbers, the legend above and the epochs below
        painter.setPen(QPen(grid, 1))
        painter.drawRect(area)
        self._legend(painter, area, text)
        losses = [p for points in self.losses.values() for p in points]
        epochs = [e for e, _ in losses + self.accuracy]
        if not epochs:
            painter.setPen(text)
            painter.drawText(
                area, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.note
            )
            return
        x0, x1 = min(epochs), max(max(epochs), min(epochs) + 1)

        def x_at(epoch: float) -> float:
            return area.left() + (epoch - x0) / (x1 - x0) * area.width()

        painter.setPen(text)
        for epoch in (x0, x1):
            label = f"{epoch:g}"
            painter.drawText(
                QPointF(x_at(epoch) - metrics.horizontalAdvance(label) / 2, area.bottom() + pad),
                label,
            )
        painter.drawText(
            QPointF(
                area.center().x() - metrics.horizontalAdvance("epoch") / 2, area.bottom() + pad
            ),
            "epoch",
        )
        if losses:
            self._loss_curves(painter, area, x_at, text, grid, losses)
        self._accuracy_curve(painter, area, x_at, text)
        if self.note:
            painter.setPen(text)
            painter.drawText(area.adjusted(4, 2, -4, -2), Qt.AlignmentFlag.AlignTop, self.note)

    def _legend(self, painter: QPainter, area: QRectF, text: QColor) -> None:
        x = area.left()
        y = area.top() - painter.fontMetrics().height() * 0.5
        entries = [(f"{twin} loss", color) for twin, color in LOSS_SERIES.items()]
        entries.append(("validation accuracy", ACCURACY_COLOR))
        for name, color in entries:
            painter.setPen(QPen(QColor(color), 2))
            painter.drawLine(QPointF(x, y - 3), QPointF(x + 14, y - 3))
            painter.setPen(text)
            painter.drawText(QPointF(x + 18, y), name)
            x += 30 + painter.fontMetrics().horizontalAdvance(name)

    def _loss_curves(self, painter, area, x_at, text, grid, losses) -> None:
        logs = [math.log10(v) for _, v in losses]
        low, high = math.floor(min(logs)), math.ceil(max(logs))
        high = max(high, low + 1)

        def y_at(value: float) -> float:
            return area.bottom() - (math.log10(value) - low) / (high - low) * area.height()

        step = max(1, (high - low) // 4)
        for decade in range(low, high + 1, step):  # a grid line and a label per decade
            y = y_at(10.0**decade)
            painter.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
            painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            painter.setPen(text)
            label = f"{10.0**decade:g}"
            painter.drawText(
                QPointF(area.left() - painter.fontMetrics().horizontalAdvance(label) - 4, y + 4),
                label,
            )
        for twin, points in self.losses.items():
            _curve(painter, [(x_at(e), y_at(v)) for e, v in points], LOSS_SERIES[twin])

    def _accuracy_curve(self, painter, area, x_at, text) -> None:
        def y_at(value: float) -> float:
            return area.bottom() - value * area.height()

        painter.setPen(text)
        for value in (0.0, 0.5, 1.0):
            painter.drawText(QPointF(area.right() + 4, y_at(value) + 4), f"{value:.0%}")
        _curve(painter, [(x_at(e), y_at(v)) for e, v in self.accuracy], ACCURACY_COLOR)


def _curve(painter: QPainter, points: list[tuple[float, float]], color: str) -> None:
    if not points:
        return
    painter.setPen(QPen(QColor(color), 2))
    path = QPainterPath(QPointF(*points[0]))
    for x, y in points[1:]:
        path.lineTo(x, y)
    painter.drawPath(path)
    painter.setBrush(QColor(color))
    for x, y in points[-1:] if len(points) > 30 else points:  # dots while there are few epochs
        painter.drawEllipse(QPointF(x, y), 2.5, 2.5)
    painter.setBrush(Qt.BrushStyle.NoBrush)
