"""The growth-curve plot on its own: ticks, frame picking, painting any amount of data."""

import numpy as np
from qtpy.QtCore import QPoint, Qt

from napari_twinvae._widgets._growth import GrowthCurve, nice_ticks


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 59) == [0, 10, 20, 30, 40, 50]
    assert nice_ticks(0, 3.2, 5) == [0, 1, 2, 3]
    assert nice_ticks(0, 10_000)[-1] == 10_000


def test_clicks_pick_the_nearest_counted_frame(qtbot):
    plot = GrowthCurve()
    qtbot.addWidget(plot)
    plot.resize(400, 250)
    assert plot.frame_at(100) is None  # nothing counted yet
    frames = np.array([3, 5, 7, 9])  # only some frames were counted (e.g. the labeled ones)
    plot.set_counts(frames, np.array([[1, 0], [2, 1], [4, 1], [8, 2]]))
    assert plot.frame_at(plot._to_pixel(6.2, 0).x()) == 7
    with qtbot.waitSignal(plot.frame_clicked) as clicked:
        x = round(plot._to_pixel(9, 0).x())
        qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=QPoint(x, 120))
    assert clicked.args == [9]


def test_painting_long_series_and_single_frames(qtbot):
    plot = GrowthCurve()
    qtbot.addWidget(plot)
    for n in (1, 10_000):
        counts = np.random.default_rng(0).integers(0, 30, (n, 3))
        plot.set_counts(np.arange(n), counts)
        plot.set_current(n // 2)
        assert not plot.grab().isNull()  # runs paintEvent; an error there would surface here
        plot.set_current(n + 5)  # a frame that was not counted: no marker, no error
        plot.grab()
    assert plot._lines is not None and len(plot._lines[1]) == 3
