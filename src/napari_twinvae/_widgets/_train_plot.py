"""How a training run is shown: a small live plot of the loss per twin (log scale) and the
validation accuracy, and one-line summaries of its progress and outcome.

The plot is drawn with QPainter, so it needs nothing beyond Qt; it grows by one point per epoch.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_twinvae._widgets._forms import plot_painter

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
        painter, text, grid = plot_painter(self, faint=50)
        metrics = painter.fontMetrics()
        pad = metrics.height()
        top = self._legend(painter, self.width()) + pad * 0.4
        # room for the loss numbers on the left, the percentages on the right, epochs below
        area = QRectF(pad * 2.6, top, self.width() - pad * 5.0, self.height() - top - pad * 1.4)
        painter.setPen(QPen(grid, 1))
        painter.drawRect(area)
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

    def _legend(self, painter: QPainter, width: float) -> float:
        """Draw the legend along the top, wrapping to the width; returns its height."""
        metrics = painter.fontMetrics()
        line = metrics.height() * 1.2
        x, y = 4.0, metrics.ascent() + 2.0
        entries = [(f"{twin} loss", color) for twin, color in LOSS_SERIES.items()]
        entries.append(("validation accuracy", ACCURACY_COLOR))
        for name, color in entries:
            needed = 18 + metrics.horizontalAdvance(name)
            if x > 4 and x + needed > width:
                x, y = 4.0, y + line
            painter.setPen(QPen(QColor(color), 2))
            painter.drawLine(QPointF(x, y - 4), QPointF(x + 14, y - 4))
            painter.setPen(self.palette().color(QPalette.ColorRole.WindowText))
            painter.drawText(QPointF(x + 18, y), name)
            x += needed + 12
        return y + metrics.descent() + 4

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


def describe(report, short: bool = False) -> str:
    """One line on where a run stands."""
    limit = f"/{report.epochs}" if report.epochs is not None else ""
    text = f"epoch {report.epoch + (0 if report.epoch_end else 1)}{limit}"
    if not report.epoch_end and report.steps_per_epoch:
        text += f", batch {report.step}/{report.steps_per_epoch}"
    if report.remaining_s is not None:
        text += f", {_duration(report.remaining_s)} left"
    if short:
        return text
    if report.best and math.isfinite(report.best.get("accuracy", math.nan)):
        best = report.best
        on = "validation" if best.get("on") == "validation" else "training labels"
        text += (
            f" · best: epoch {best['epoch']}, {best['accuracy']:.0%} exact, "
            f"MAE {best['mae']:.2f} ({on})"
        )
    return text


def outcome(result) -> str:
    """One line on how a run ended and which model it kept."""
    best = result.best
    text = f"{result.stopped} after {result.epochs} epoch(s) in {_duration(result.seconds)}"
    if math.isfinite(best.get("accuracy", math.nan)):
        text += (
            f"; kept epoch {best['epoch']}: {best['accuracy']:.0%} exact, MAE {best['mae']:.2f}"
            f" on {best.get('on', 'validation')}"
        )
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
