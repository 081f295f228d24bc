"""Count cells' "Check these frames" list and the growth curve's marks of the counts to check."""

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor

from napari_twinvae._widgets import _check
from napari_twinvae._widgets._check import CheckList, _camera
from napari_twinvae._widgets._count import CountDock
from napari_twinvae._widgets._growth import DOUBT_COLOR, GrowthCurve
from napari_twinvae.core.io import load_checkpoint
from napari_twinvae.core.predict import CountResult, count
from napari_twinvae.core.uncertainty import check_order


def _counted_dock(viewer, qtbot, model_file, chambers=None):
    dock = CountDock(viewer)
    viewer.window.add_dock_widget(dock, name="Count cells")
    dock.use_model(model_file)
    dock._chambers.value = chambers
    dock._count_button.native.click()
    qtbot.waitUntil(lambda: not dock._runner.running, timeout=30000)
    assert dock.result is not None
    return dock


def _click_row(qtbot, table, row):
    """A real mouse click on the row's first cell, as the user makes it."""
    view = table.native
    view.scrollToItem(view.item(row, 0))
    center = view.visualItemRect(view.item(row, 0)).center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=center)


def _result(counts, uncertainty, frames=None):
    counts = np.asarray(counts, dtype=np.int64).reshape(len(counts), -1)
    return CountResult(
        estimates=counts.astype(np.float32),
        counts=counts,
        frames=np.arange(len(counts)) if frames is None else np.asarray(frames),
        regions=[(0, 0, 128, 128)] * counts.shape[1],
        uncertainty=np.asarray(uncertainty, dtype=np.float32).reshape(counts.shape),
    )


def test_the_list_puts_series_breaks_first_then_the_most_uncertain(qtbot):
    panel = CheckList()
    qtbot.addWidget(panel.native)
    # frame 4 drops two cells below frame 3 (a series flag) yet is fairly sure
    result = _result(
        [2, 2, 3, 5, 3, 5, 5, 6], [0.1, 0.9, 0.2, 0.6, 0.3, 0.1, 0.7, 0.2], frames=range(10, 18)
    )
    listed = panel.show_result(result)
    assert panel.entries == [(14, 0), (11, 0), (16, 0), (13, 0)]  # frame numbers, not rows
    assert panel.table.data.to_list()[0] == [14, 0, 3, "0.30", "drop"]
    assert [row[3] for row in panel.table.data.to_list()[1:]] == ["0.90", "0.70", "0.60"]
    np.testing.assert_array_equal(np.flatnonzero(listed[:, 0]), [1, 3, 4, 6])
    assert "4 of 8 counts" in panel.heading.value
    with qtbot.waitSignal(panel.picked) as picked:
        _click_row(qtbot, panel.table, 1)
    assert picked.args == [11, 0]
    panel.show_result(_result([1, 1, 2], [0.1, 0.2, 0.1]))
    assert panel.entries == [] and "none" in panel.heading.value


def test_a_long_list_shows_the_first_rows_and_marks_them_all(qtbot, monkeypatch):
    monkeypatch.setattr(_check, "MOST_ROWS", 3)
    panel = CheckList()
    qtbot.addWidget(panel.native)
    listed = panel.show_result(_result(np.full(6, 4), [0.9, 0.8, 0.7, 0.6, 0.55, 0.1]))
    assert panel.entries == [(0, 0), (1, 0), (2, 0)] and int(listed.sum()) == 5
    assert "5 of 6 counts (the first 3 shown)" in panel.heading.value


def test_counting_fills_the_list_in_core_order_and_a_click_goes_to_the_frame(
    make_napari_viewer, qtbot, model_file, series
):
    viewer = make_napari_viewer()
    viewer.add_image(series, name="cells")
    dock = _counted_dock(viewer, qtbot, model_file)
    result = dock.result
    expected = count(series, load_checkpoint(model_file), device="cpu")
    np.testing.assert_allclose(result.uncertainty, expected.uncertainty, atol=1e-5)
    order = check_order(expected.uncertainty, expected.series_flags)
    assert order  # the small model doubts some of these counts
    assert dock._check.entries == [(int(result.frames[t]), r) for t, r in order]
    shown = [float(row[3]) for row in dock._check.table.data.to_list()]
    assert shown == sorted(shown, reverse=True)  # no series flags here: most uncertain first
    listed = np.zeros(result.counts.shape, dtype=bool)
    listed[tuple(np.array(order).T)] = True
    np.testing.assert_array_equal(dock._plot.doubtful, listed)  # the growth curve marks them
    viewer.dims.set_current_step(0, 0)
    row = next(i for i, (frame, _) in enumerate(dock._check.entries) if frame != 0)
    _click_row(qtbot, dock._check.table, row)
    assert viewer.dims.current_step[0] == dock._check.entries[row][0]


def test_a_click_centres_the_canvas_on_the_rows_chamber(
    make_napari_viewer, qtbot, model_file, series
):
    wide = np.concatenate([series, series[::-1]], axis=2)  # two chambers side by side
    viewer = make_napari_viewer()
    viewer.add_image(wide, name="cells", scale=(1, 0.5, 0.5))
    chambers = viewer.add_shapes(
        [[[0, 0], [0, 64], [64, 64], [64, 0]], [[0, 64], [0, 128], [64, 128], [64, 64]]],
        shape_type="rectangle",
        name="chambers",
    )
    dock = _counted_dock(viewer, qtbot, model_file, chambers)
    rows = {chamber: i for i, (_, chamber) in reversed(list(enumerate(dock._check.entries)))}
    assert set(rows) == {0, 1}
    for chamber, row in rows.items():
        _click_row(qtbot, dock._check.table, row)
        assert viewer.dims.current_step[0] == dock._check.entries[row][0]
        # chamber 0 spans x 0-64 in world units (half-size pixels), chamber 1 x 64-128
        center = _camera(viewer).center
        assert center[-1] == pytest.approx(32 + 64 * chamber, abs=1)
        assert center[-2] == pytest.approx(32, abs=1)


def test_the_growth_curve_draws_a_dot_on_each_count_to_check(qtbot):
    plot = GrowthCurve()
    qtbot.addWidget(plot)
    plot.resize(400, 250)
    counts = np.array([[2], [2], [9], [3], [3]])
    doubtful = np.array([[False], [False], [True], [False], [False]])
    plot.set_counts(np.arange(5), counts, doubtful=doubtful)
    image = plot.grab().toImage()
    ratio = image.width() / plot.width()  # the screen's device pixel ratio

    def color_at(frame, n):
        point = plot._to_pixel(frame, n)
        return image.pixelColor(round(point.x() * ratio), round(point.y() * ratio))

    def amber(color):  # within the rounding of a 16-bit X display
        want = QColor(DOUBT_COLOR)
        return all(abs(a - b) <= 8 for a, b in zip(color.getRgb(), want.getRgb(), strict=True))

    assert amber(color_at(2, 9))
    assert not amber(color_at(0, 2))
    plot.set_counts(np.arange(5), counts)  # no marks given: none drawn
    assert not plot.doubtful.any()
