"""The "Count cells" dock: counting in a worker, owned layers, growth curve, CSV export."""

import csv

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_twinvae._widgets import _count
from napari_twinvae._widgets._count import CountDock
from napari_twinvae._widgets._count_layers import (
    COUNT_ROLE,
    RECONSTRUCTION_ROLE,
    SYNTHETIC_VIEW_ROLE,
)
from napari_twinvae._widgets._layers import OWNER_KEY, find_owned
from napari_twinvae.core.io import load_checkpoint
from napari_twinvae.core.model_view import ModelView
from napari_twinvae.core.predict import DEFAULT_VIEWS, count

PLUGIN = "napari-twinvae"


def _count_now(dock, qtbot):
    """Click Count and wait for the worker to finish."""
    with qtbot.waitSignal(dock._count_button.native.clicked, timeout=1000):
        dock._count_button.native.click()
    qtbot.waitUntil(lambda: not dock._runner.running, timeout=30000)


def _dock(viewer, model_file):
    dock = CountDock(viewer)
    viewer.window.add_dock_widget(dock, name="Count cells")
    dock.use_model(model_file)
    return dock


def test_counting_adds_the_owned_layers_and_the_growth_curve(
    make_napari_viewer, qtbot, model_file, series
):
    viewer = make_napari_viewer()
    image = viewer.add_image(series, name="cells")
    dock = _dock(viewer, model_file)
    assert dock._image.value is image and dock._chambers.value is None
    _count_now(dock, qtbot)
    expected = count(series, load_checkpoint(model_file), device="cpu")
    np.testing.assert_allclose(dock.result.estimates, expected.estimates, atol=1e-5)

    counts = find_owned(viewer, COUNT_ROLE, image)
    assert counts is not None and counts.nshapes == 1
    viewer.dims.set_current_step(0, 7)
    assert counts.features["count"].tolist() == [expected.counts[7, 0]]
    assert counts.text.values.tolist() == [str(expected.counts[7, 0])]
    for role in (RECONSTRUCTION_ROLE, SYNTHETIC_VIEW_ROLE):
        layer = find_owned(viewer, role, image)
        assert isinstance(layer.data, ModelView) and layer.data.shape == series.shape
        assert not layer.visible  # shown on request, they would cover the frames
    assert dock._plot.counts.shape == (12, 1) and dock._plot.current == 7
    assert "12 frames" in dock._status.value and dock._export_button.enabled


def test_rerun_updates_the_layers_in_place_and_keeps_the_users_choices(
    make_napari_viewer, qtbot, model_file, series
):
    viewer = make_napari_viewer()
    image = viewer.add_image(series, name="cells")
    dock = _dock(viewer, model_file)
    _count_now(dock, qtbot)
    layers = {role: find_owned(viewer, role, image) for role in (COUNT_ROLE, RECONSTRUCTION_ROLE)}
    layers[RECONSTRUCTION_ROLE].visible = True
    chambers = viewer.add_shapes(
        [[[0, 0], [0, 64], [128, 64], [128, 0]], [[0, 64], [0, 128], [128, 128], [128, 64]]],
        shape_type="rectangle",
        name="chambers",
    )
    assert dock._chambers.value is None  # the new layer is a choice, not chosen for the user
    dock._chambers.value = chambers
    _count_now(dock, qtbot)
    n_layers = len(viewer.layers)
    assert find_owned(viewer, COUNT_ROLE, image) is layers[COUNT_ROLE]
    assert find_owned(viewer, RECONSTRUCTION_ROLE, image) is layers[RECONSTRUCTION_ROLE]
    assert layers[COUNT_ROLE].nshapes == 2 and layers[RECONSTRUCTION_ROLE].visible
    assert dock.result.regions == [(0, 0, 128, 64), (0, 64, 128, 128)]
    assert dock._plot.counts.shape == (12, 2)
    assert dock._views.value == DEFAULT_VIEWS  # the four turns, unless the user wants speed
    dock._views.value = 1
    _count_now(dock, qtbot)
    assert len(viewer.layers) == n_layers
    fast = count(series, load_checkpoint(model_file), dock.result.regions, device="cpu", views=1)
    np.testing.assert_allclose(dock.result.estimates, fast.estimates, atol=1e-5)
    # The plugin's own layers are never offered as input.
    assert [layer for _, layer in dock._chamber_choices() if layer is not None] == [chambers]
    assert [layer for _, layer in dock._image_choices()] == [image]


def test_export_csv_writes_the_last_count(make_napari_viewer, qtbot, model_file, series, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(series, name="cells")
    dock = _dock(viewer, model_file)
    with pytest.raises(ValueError, match="count first"):
        dock.export_csv(tmp_path / "none.csv")
    _count_now(dock, qtbot)
    path = dock.export_csv(tmp_path / "counts.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = ["frame", "chamber", "count", "estimate", "flag", "uncertainty", "series_flag"]
    assert rows[0] == header and len(rows) == 13
    assert all(0.0 <= float(row[5]) <= 1.0 for row in rows[1:])  # export keeps the uncertainty
    assert [int(r[2]) for r in rows[1:]] == dock.result.counts[:, 0].tolist()


def test_the_plot_jumps_to_the_clicked_frame(make_napari_viewer, qtbot, model_file, series):
    viewer = make_napari_viewer()
    viewer.add_image(series, name="cells")
    dock = _dock(viewer, model_file)
    _count_now(dock, qtbot)
    plot = dock._plot
    plot.resize(400, 240)
    x = plot._to_pixel(9, 0).x()
    qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=QPoint(round(x), 100))
    assert viewer.dims.current_step[0] == 9 and plot.current == 9


def test_whole_frames_that_are_not_128_are_resized_with_a_warning(
    make_napari_viewer, qtbot, model_file, monkeypatch
):
    warnings = []
    monkeypatch.setattr(_count, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((3, 200, 150)), name="big")
    dock = _dock(viewer, model_file)
    _count_now(dock, qtbot)
    assert len(warnings) == 1 and "resized to 128x128" in warnings[0]
    assert dock.result.regions == [(0, 0, 200, 150)]


def test_bad_choices_are_reported_not_raised(make_napari_viewer, model_file, monkeypatch, tmp_path):
    errors = []
    monkeypatch.setattr(_count, "show_error", errors.append)
    viewer = make_napari_viewer()
    dock = _dock(viewer, model_file)
    dock._on_count()
    assert "choose an image layer" in errors[-1]
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="rgb", rgb=True)
    dock._on_count()
    assert "RGB" in errors[-1]
    viewer.layers.clear()
    viewer.add_image(np.zeros((4, 64, 64), np.uint8), name="frames")
    far = viewer.add_shapes([[[100, 100], [100, 140], [140, 140], [140, 100]]], name="far")
    dock._chambers.value = far
    dock._on_count()
    assert "outside" in errors[-1]
    dock._chambers.value = None
    dock.use_model(tmp_path / "missing.pt")
    dock._on_count()
    assert "model file" in errors[-1]
    monkeypatch.setattr("napari_twinvae.core.io.default_model_path", lambda: tmp_path / "no.pt")
    dock._model.value = "default model"
    dock._on_count()
    assert "no default model" in errors[-1]
    assert not dock._runner.running and dock._count_button.enabled


def test_stop_cancels_and_resets_the_buttons(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((300, 128, 128), dtype=np.float32))
    dock = _dock(viewer, model_file)
    dock._batch.value = 1  # 300 batches: Stop lands long before the end
    dock._count_button.native.click()
    assert dock._stop_button.enabled and not dock._count_button.enabled
    dock._stop_button.native.click()
    qtbot.waitUntil(lambda: not dock._runner.running, timeout=30000)
    assert dock.result is None and "stopped" in dock._status.value
    assert dock._count_button.enabled and not dock._stop_button.enabled
    assert not [layer for layer in viewer.layers if OWNER_KEY in layer.metadata]


def test_closing_the_viewer_while_counting_stops_the_worker(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((300, 128, 128), dtype=np.float32))
    dock = _dock(viewer, model_file)
    dock._batch.value = 1  # 300 batches: the viewer closes long before the end
    dock._count_button.native.click()
    worker = dock._runner.worker
    qtbot.waitUntil(
        lambda: dock._runner.pbar is not None and dock._runner.pbar.n > 0, timeout=30000
    )
    viewer.close()  # the dock's widgets go with it; no late signal may reach them
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30000)


def test_chambers_follow_the_layers_scale(make_napari_viewer, qtbot, model_file, series):
    viewer = make_napari_viewer()
    image = viewer.add_image(series, name="cells", scale=(1, 0.5, 0.5))  # microns per pixel
    chambers = viewer.add_shapes([[[0, 0], [0, 32], [64, 32], [64, 0]]], name="chambers")
    dock = _dock(viewer, model_file)
    dock._chambers.value = chambers
    _count_now(dock, qtbot)
    assert dock.result.regions == [(0, 0, 128, 64)]  # world 64x32 = pixels 128x64
    counts = find_owned(viewer, COUNT_ROLE, image)
    assert tuple(counts.scale) == (0.5, 0.5)


def test_the_dock_opens_from_the_manifest(make_napari_viewer, qtbot, model_file, series):
    viewer = make_napari_viewer()
    viewer.add_image(series, name="cells")
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Count cells")
    assert isinstance(dock, CountDock)
    dock.use_model(model_file)
    _count_now(dock, qtbot)
    assert dock.result.counts.shape == (12, 1)


def _messages(monkeypatch):
    seen = {"error": [], "warning": [], "info": []}
    for kind, shown in seen.items():
        monkeypatch.setattr(_count, f"show_{kind}", shown.append)
    return seen


def test_a_chamber_mostly_outside_the_frame_is_refused_a_slight_overhang_clipped(
    make_napari_viewer, qtbot, model_file, monkeypatch
):
    # found on a new-user walk: drawn at 100-300 on a 128-px frame, the 28x28 corner inside
    # was blown up and counted as 48-49 cells
    seen = _messages(monkeypatch)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 128, 128), np.float32), name="frames")
    far = viewer.add_shapes([[[100, 100], [100, 300], [300, 300], [300, 100]]], name="far")
    dock = _dock(viewer, model_file)
    dock._chambers.value = far
    dock._on_count()
    assert "98% outside the 128x128 frame" in seen["error"][-1]
    assert not dock._runner.running and dock._status.value.startswith("not counted: ")
    near = viewer.add_shapes([[[-3, 0], [-3, 128], [128, 128], [128, 0]]], name="near")
    dock._chambers.value = near
    _count_now(dock, qtbot)
    assert any("reaches past" in w for w in seen["warning"])
    assert dock.result.regions == [(0, 0, 128, 128)]


def test_counts_above_30_are_flagged_in_the_layer_the_curve_and_the_status(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, series
):
    from napari_twinvae.core.io import save_checkpoint
    from tests._checkpoints import small_model

    seen = _messages(monkeypatch)
    crowded = small_model()
    crowded.regressor[-1].bias.data.fill_(48.0)
    viewer = make_napari_viewer()
    image = viewer.add_image(series, name="cells")
    dock = _dock(viewer, save_checkpoint(tmp_path / "crowded.pt", crowded))
    _count_now(dock, qtbot)
    flagged = dock.result.counts > 30
    assert flagged.any()
    layer = find_owned(viewer, COUNT_ROLE, image)
    t = int(np.flatnonzero(flagged[:, 0])[0])
    viewer.dims.set_current_step(0, t)
    assert layer.features["flag"].tolist() == ["above 30"]
    assert layer.features["label"].tolist() == [f"{dock.result.counts[t, 0]} (above 30)"]
    np.testing.assert_array_equal(dock._plot.flagged[:, 0], flagged[:, 0])
    assert not dock._plot.grab().isNull()  # the limit line and the rings paint
    assert f"{int(flagged.sum())} counts outside 0-30 flagged" in dock._status.value
    assert "outside 0-30" in seen["warning"][-1]


def test_a_failed_count_says_so_in_the_status_line(
    make_napari_viewer, qtbot, model_file, monkeypatch
):
    # found on a new-user walk: "counting ..." stayed after an error
    seen = _messages(monkeypatch)
    monkeypatch.setattr(_count, "show_error", seen["error"].append)
    monkeypatch.setattr("napari_twinvae._widgets._workers.show_error", seen["error"].append)
    viewer = make_napari_viewer()
    frames = np.zeros((3, 128, 128), np.float32)
    frames[1, 4, 4] = np.nan
    viewer.add_image(frames, name="nan")
    dock = _dock(viewer, model_file)
    _count_now(dock, qtbot)
    assert "NaN" in seen["error"][-1]
    assert dock._status.value.startswith("counting failed: frame 1: ")
    assert dock._count_button.enabled and dock.result is None


def test_a_density_model_shows_its_predicted_cells_and_they_can_be_proofread(
    make_napari_viewer, qtbot, tmp_path, series, monkeypatch
):
    from napari_twinvae._widgets import _labeling
    from napari_twinvae._widgets._annotation import PREDICTED_CELLS_ROLE, empty_frames
    from napari_twinvae._widgets._labeling import LabelingPanel
    from tests._checkpoints import density_checkpoint

    model = density_checkpoint(tmp_path / "density.pt")
    viewer = make_napari_viewer()
    image = viewer.add_image(series, name="cells")
    dock = _dock(viewer, model)
    _count_now(dock, qtbot)
    expected = count(series, load_checkpoint(model), device="cpu", cells=True).cells
    predicted = find_owned(viewer, PREDICTED_CELLS_ROLE, image)
    assert predicted is not None and predicted.name == "cells predicted cells"
    np.testing.assert_allclose(predicted.data, expected[:, [0, 2, 3]], atol=1e-4)

    said = {"info": [], "warning": []}
    monkeypatch.setattr(_labeling, "show_info", said["info"].append)
    monkeypatch.setattr(_labeling, "show_warning", said["warning"].append)
    panel = LabelingPanel(viewer)
    panel.image.value = image
    frame = int(expected[0, 0])
    panel.go_to_frame(frame)
    panel.use_predicted_cells()
    annotation = panel.cells.value
    mine = expected[expected[:, 0] == frame][:, [0, 2, 3]]
    np.testing.assert_allclose(annotation.data, mine, atol=1e-4)
    assert f"{len(mine)} predicted cell(s) copied" in said["info"][-1]
    panel.use_predicted_cells()  # once labeled, a frame is not overwritten
    assert len(annotation.data) == len(mine) and "labeled already" in said["warning"][-1]
    empty = sorted(set(range(12)) - set(expected[:, 0].astype(int).tolist()))
    if empty:  # a frame without predicted cells is marked as holding none
        panel.go_to_frame(empty[0])
        panel.use_predicted_cells()
        assert empty[0] in empty_frames(annotation)


def test_a_regressor_model_shows_no_predicted_cells(make_napari_viewer, qtbot, model_file, series):
    from napari_twinvae._widgets._annotation import PREDICTED_CELLS_ROLE

    viewer = make_napari_viewer()
    image = viewer.add_image(series, name="cells")
    _count_now(_dock(viewer, model_file), qtbot)
    assert find_owned(viewer, PREDICTED_CELLS_ROLE, image) is None
