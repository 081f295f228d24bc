"""Small pieces the plugin's docks share: grouped widgets, where files are offered, and how
the plots start painting."""

from __future__ import annotations

import re
from pathlib import Path

from magicgui.widgets import Container, Label
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QPainter, QPalette
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QWidget


def default_folder(layer) -> Path:
    """The folder of the layer's source file, else the home folder: where files are offered."""
    source = getattr(getattr(layer, "source", None), "path", None)
    return Path(source).parent if source else Path.home()


def file_stem(layer) -> str:
    """The layer's name, fit for a file name."""
    name = re.sub(r"[^\w.-]+", "_", layer.name if layer is not None else "").strip("._")
    return name or "cells"


def form(*widgets, layout: str = "vertical") -> Container:
    """Widgets grouped without extra margins: labeled in a column, unlabeled in a row."""
    box = Container(widgets=list(widgets), layout=layout, labels=layout == "vertical")
    box.margins = (0, 0, 0, 0)
    return box


def row(*widgets) -> Container:
    return form(*widgets, layout="horizontal")


def wrapping(label: Label) -> Label:
    """A label that takes the dock's width and wraps long text instead of widening the dock."""
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return label


def scrolling(content: QWidget) -> QScrollArea:
    """``content`` in a vertical scroll area, as wide as its widest row (napari docks do not scroll)."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(content)
    bar = area.verticalScrollBar().sizeHint().width()
    area.setMinimumWidth(content.minimumSizeHint().width() + bar)
    return area


def plot_painter(widget: QWidget, faint: int) -> tuple[QPainter, QColor, QColor]:
    """An antialiased painter on ``widget``, the theme's text colour and that colour at alpha
    ``faint`` (0-255) for grid lines: the plots follow napari's dark and light themes."""
    painter = QPainter(widget)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    text = widget.palette().color(QPalette.ColorRole.WindowText)
    thin = QColor(text)
    thin.setAlpha(faint)
    return painter, text, thin
