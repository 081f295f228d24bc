import functools
from pathlib import Path

import npe2
import numpy as np
import pytest
from qtpy.QtWidgets import QFileDialog

from napari_twinvae._widgets import (
    _count_handoff,
    _label_files,
    _label_train,
    _labeling,
    _workers,
)
from napari_twinvae._widgets._annotation import ANNOTATION_ROLE, EMPTY_FRAMES_KEY
from napari_twinvae._widgets._label_train import LabelTrainDock
from napari_twinvae._widgets._layers import OWNER_KEY
from napari_twinvae._widgets._workers import start_worker
from napari_twinvae.core.config import ModelConfig
from napari_twinvae.core.io import load_checkpoint
from napari_twinvae.core.labels import load_annotation
from napari_twinvae.core.synthetic import SynthConfig, generate
from napari_twinvae.core.train import TrainConfig, TrainProgress

PLUGIN = "napari-twinvae"


@pytest.fixture
def messages(monkeypatch):
    """Notifications the dock shows, by kind."""
    seen = {"error": [], "warning": [], "info": []}
    for module in (_label_train, _labeling, _label_files, _workers, _count_handoff):
        for kind in seen:
            monkeypatch.setattr(module, f"show_{kind}", seen[kind].append, raising=False)
    return seen


class _Watch:
    """The worker's errors and reports, hooked up before the worker starts."""

    def __init__(self):
        self.errors, self.reports, self.on_report = [], [], None


@pytest.fixture
def watch(monkeypatch):
    seen = _Watch()

    def start(*args, yielded, errored, **kwargs):
        def on_yield(report):
            seen.reports.append(report)
            yielded(report)
            if seen.on_report is not None:
                seen.on_report(report)

        def on_error(exc):
            seen.errors.append(exc)
            errored(exc)

        return start_worker(*args, yielded=on_yield, errored=on_error, **kwargs)

    monkeypatch.setattr(_workers, "start_worker", start)
    return seen


def _wait_until_done(qtbot, dock, seconds=60):
    qtbot.waitUntil(lambda: not dock._runner.running, timeout=seconds * 1000)


@pytest.fixture
def dock_on(make_napari_viewer):
    def make(frames):
        viewer = make_napari_viewer()
        image = viewer.add_image(frames, name="movie")
        dock = LabelTrainDock(viewer)
        viewer.window.add_dock_widget(dock)
        return viewer, image, dock

    return make


def _click(button):
    button.native.click()


def test_live_count_and_frames_marked_empty(dock_on, messages):
    viewer, image, dock = dock_on(np.zeros((4, 64, 64), dtype=np.uint16))
    panel = dock.labeling
    _click(panel._click)
    cells = panel.cells.value
    assert cells.ndim == 3 and cells.mode == "add" and len(cells.data) == 0
    assert cells.metadata[OWNER_KEY]["role"] == ANNOTATION_ROLE
    assert viewer.layers.selection.active == cells
    viewer.dims.set_current_step(0, 1)
    assert panel.frame_info.value == "frame 1: not labeled yet"
    cells.add([[1, 10, 10], [1, 30, 30]])
    assert panel.frame_info.value == "frame 1: 2 cells"
    assert not panel._empty.enabled  # a frame with cells cannot be marked empty
    viewer.dims.set_current_step(0, 2)
    assert panel._empty.enabled
    _click(panel._empty)
    assert panel.frame_info.value == "frame 2: no cells (marked)"
    assert cells.metadata[EMPTY_FRAMES_KEY] == [2]
    labels = panel.labels()
    np.testing.assert_array_equal(labels.labeled[:, 0], [False, True, True, False])
    np.testing.assert_array_equal(labels.counts[:, 0], [0, 2, 0, 0])
    assert panel.summary.value == "2 labeled frames (1 with no cells), 2 cells"
    _click(panel._empty)  # undo
    assert panel.frame_info.value == "frame 2: not labeled yet"
    assert cells.metadata[EMPTY_FRAMES_KEY] == []
    cells.selected_data = {0}
    cells.remove_selected()
    viewer.dims.set_current_step(0, 1)
    assert panel.frame_info.value == "frame 1: 1 cell"
    assert messages["error"] == []


def test_table_lists_labeled_frames_per_chamber_and_jumps_to_them(dock_on):
    viewer, image, dock = dock_on(np.zeros((5, 64, 96), dtype=np.float32))
    panel = dock.labeling
    panel.table.native  # noqa: B018 (the table exists before any label)
    cells = panel.ensure_annotation()
    cells.add([[3, 10, 10], [3, 20, 60], [3, 40, 70], [0, 5, 5]])
    viewer.dims.set_current_step(0, 4)
    _click(panel._empty)
    assert panel.table.data.to_list() == [[0, 1], [3, 3], [4, 0]]
    chambers = viewer.add_shapes(
        [np.array([[0, 0], [64, 48]]), np.array([[0, 48], [64, 96]])], shape_type="rectangle"
    )
    panel.chambers.value = chambers
    assert panel.table.column_headers == ("frame", "cells", "chamber 1", "chamber 2")
    assert panel.table.data.to_list() == [[0, 1, 1, 0], [3, 3, 1, 2], [4, 0, 0, 0]]
    panel.table.native.cellClicked.emit(1, 0)
    assert viewer.dims.current_step[0] == 3
    assert panel.frame_info.value == "frame 3: 3 cells (chambers: 1, 2)"
    chambers.data = [np.array([[0, 0], [64, 30]])]  # a point now lies outside every chamber
    assert panel.frame_info.value == "frame 3: 3 cells (chambers: 1; 2 outside)"


def test_labels_round_trip_through_files_and_loading_merges(
    dock_on, tmp_path, messages, monkeypatch
):
    viewer, image, dock = dock_on(np.zeros((6, 64, 64), dtype=np.uint8))
    panel = dock.labeling
    cells = panel.ensure_annotation()
    cells.add([[0, 5.5, 6.25], [2, 10, 10], [2, 11, 40]])
    cells.metadata[EMPTY_FRAMES_KEY] = [4]
    target = tmp_path / "movie-cells.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(target), ""))
    _click(panel.files._save)
    saved = load_annotation(target)
    np.testing.assert_allclose(saved.points, cells.data)
    np.testing.assert_array_equal(saved.labeled_frames, [0, 2, 4])

    viewer.layers.remove(cells)  # a fresh start: the file restores the points and the empty frame
    assert panel.cells.value is None
    _click(panel.files._load)
    restored = panel.cells.value
    np.testing.assert_allclose(restored.data, saved.points)
    assert restored.metadata[EMPTY_FRAMES_KEY] == [4]
    np.testing.assert_array_equal(np.flatnonzero(panel.labels().labeled[:, 0]), [0, 2, 4])

    restored.add([[5, 30, 30]])  # loading again adds only what is new; clicks stay
    _click(panel.files._load)
    assert len(restored.data) == 4 and restored.metadata[EMPTY_FRAMES_KEY] == [4]
    assert "0 new cells (3 already there)" in messages["info"][-1]

    other = tmp_path / "long.csv"
    other.write_text("index,axis-0,axis-1,axis-2\n0,9,1,1\n")
    with pytest.raises(
        ValueError,
        match="long.csv does not fit movie: labels name frame 9, but the stack has only 6",
    ):
        panel.files.load(other)
    assert len(restored.data) == 4  # an error changes nothing


def test_the_docks_defaults_are_train_configs(dock_on):
    """One source for every setting: untouched, the dock trains with TrainConfig()."""
    _, _, dock = dock_on(np.zeros((3, 32, 32)))
    assert dock.config() == TrainConfig()


def test_the_annotation_layer_is_reused_not_duplicated(dock_on, tmp_path):
    viewer, image, dock = dock_on(np.zeros((3, 32, 32)))
    panel = dock.labeling
    _click(panel._click)
    first = panel.cells.value
    _click(panel._click)
    assert panel.cells.value == first
    points = [layer for layer in viewer.layers if layer._type_string == "points"]
    assert len(points) == 1
    second_dock = LabelTrainDock(viewer)  # e.g. the dock closed and opened again
    assert second_dock.labeling.cells.value == first
    other = viewer.add_image(np.zeros((32, 32)), name="single frame")
    panel.image.value = other
    assert panel.cells.value is None  # the movie's annotation does not belong to this image
    cells = panel.ensure_annotation()
    assert cells.ndim == 2 and cells != first
    cells.add([[4, 4]])
    assert panel.frame_info.value == "image: 1 cell"
    panel.files.save(tmp_path / "single.csv")  # a single frame is frame 0 in the files
    viewer.layers.remove(cells)
    panel.files.load(tmp_path / "single.csv")
    np.testing.assert_allclose(panel.cells.value.data, [[4, 4]])
    panel.image.value = image
    assert panel.cells.value == first


@pytest.fixture
def small_network(monkeypatch):
    """Train a narrow Twin-VAE: the dock's plumbing is under test here, not the paper's network."""
    small = ModelConfig(encoder_channels=(8, 8, 16, 16), shared_channels=32, latent_dim=16)
    monkeypatch.setattr(_label_train, "TrainConfig", functools.partial(TrainConfig, model=small))
    return small


def _tiny_movie(n=6, seed=0):
    batch = generate(n, SynthConfig.preset("pc"), rng=seed)
    return batch.images, batch.centres


def _train_dock(dock_on, epochs, n=7):
    images, centres = _tiny_movie(n)
    viewer, image, dock = dock_on(images)
    cells = dock.labeling.ensure_annotation()
    cells.add(centres[centres[:, 0] < 5])  # frames 0-4 labeled (one held out), 5-6 unlabeled
    dock._start_model.value = "scratch"
    dock._epochs.value = epochs
    dock._batch.value = 4
    dock._device.value = "cpu"
    return viewer, dock


@pytest.mark.usefixtures("hold_out_few")
def test_training_one_epoch_in_the_worker_saves_a_model(
    dock_on, qtbot, tmp_path, monkeypatch, watch, small_network
):
    viewer, dock = _train_dock(dock_on, epochs=1)
    dock._decoder.value = False  # half the compute: labeled frames and synthetic images only
    target = tmp_path / "model.pt"
    offered = []

    def choose(parent, title, start, file_filter):
        offered.append(start)
        return str(target), file_filter

    monkeypatch.setattr(QFileDialog, "getSaveFileName", choose)
    dock._start.native.click()
    assert dock._runner.running and not dock._start.enabled and dock._stop.enabled
    assert not dock._settings.enabled
    _wait_until_done(qtbot, dock)
    assert watch.errors == []
    assert any(getattr(r, "epoch_end", False) and r.epoch == 1 for r in watch.reports)
    assert target.is_file() and dock.model_path == target
    assert offered and offered[0].endswith(".pt") and "twinvae-movie-" in offered[0]
    checkpoint = load_checkpoint(target)
    assert checkpoint.config == small_network
    assert checkpoint.summary["epochs"] == 1 and checkpoint.summary["stopped"] == "finished"
    assert checkpoint.summary["config"]["batch_size"] == 4
    assert not checkpoint.summary["config"]["decoder"]
    assert dock.status.value.startswith("finished after 1 epoch(s)")
    assert dock._start.enabled and not dock._stop.enabled and dock._count.enabled
    assert dock._settings.enabled and dock._runner.pbar is None
    assert len(dock.plot.losses["synthetic"]) == 1 and len(dock.plot.accuracy) == 2
    assert not dock.plot.grab().isNull()  # the plot draws (Qt errors in paintEvent fail here)


def test_a_density_head_learns_from_the_clicked_cells_in_the_dock(
    dock_on, qtbot, tmp_path, monkeypatch, watch, small_network
):
    viewer, dock = _train_dock(dock_on, epochs=1)
    assert dock.config().head is None  # automatic unless asked (core: Run._start_model)
    dock._decoder.value = False
    dock._head.value = "density"
    target = tmp_path / "density.pt"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    dock._start.native.click()
    _wait_until_done(qtbot, dock)
    assert watch.errors == []
    checkpoint = load_checkpoint(target)
    assert checkpoint.config.head == "density" and checkpoint.summary["config"]["head"] == "density"
    losses = checkpoint.summary["config"]["loss"]
    assert losses["density"] > 0


def test_stop_keeps_the_best_model_so_far(
    dock_on, qtbot, tmp_path, monkeypatch, watch, small_network
):
    viewer, dock = _train_dock(dock_on, epochs=0)
    points = dock.labeling.cells.value.data.copy()
    dock._minutes.value = 30  # only a time budget: this run would go on for half an hour
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))

    def stop_in_training(report):
        if getattr(report, "step", 0) >= 1:  # a batch is done
            dock.stop_training()

    watch.on_report = stop_in_training
    dock.start_training()
    _wait_until_done(qtbot, dock)
    assert watch.errors == []
    result = dock._trained.result
    assert result.stopped == "cancelled" and result.best["epoch"] == 0
    np.testing.assert_array_equal(dock.labeling.cells.value.data, points)  # labels kept
    assert dock.status.value.startswith("cancelled after")
    assert dock.status.value.endswith("not saved yet (Save model…)")
    assert dock._save.enabled and not dock._count.enabled
    saved = dock.save_model(tmp_path / "stopped.pt")
    assert load_checkpoint(saved).summary["stopped"] == "cancelled"


def test_an_error_in_the_middle_of_training_leaves_the_labels_and_the_dock_usable(
    dock_on, qtbot, monkeypatch, watch, messages, small_network
):
    from napari_twinvae.core.loop import Run

    viewer, dock = _train_dock(dock_on, epochs=3)
    cells = dock.labeling.cells.value
    before, marked = cells.data.copy(), list(cells.metadata.get(EMPTY_FRAMES_KEY, []))
    real, steps = Run._step, []

    def failing(run, *args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            raise RuntimeError("out of memory (injected)")
        return real(run, *args, **kwargs)

    monkeypatch.setattr(Run, "_step", failing)
    dock.start_training()
    _wait_until_done(qtbot, dock)
    assert len(watch.errors) == 1 and "out of memory (injected)" in messages["error"][-1]
    assert dock.status.value.startswith("training failed:")
    assert dock._start.enabled and dock._settings.enabled and not dock._stop.enabled
    np.testing.assert_array_equal(cells.data, before)
    assert list(cells.metadata.get(EMPTY_FRAMES_KEY, [])) == marked
    assert cells in viewer.layers


def test_closing_the_dock_stops_training_and_still_offers_the_model(
    dock_on, qtbot, tmp_path, monkeypatch, watch, small_network
):
    viewer, dock = _train_dock(dock_on, epochs=0)
    dock._minutes.value = 30
    target = tmp_path / "after-close.pt"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    closed = []

    def close_in_training(report):
        if getattr(report, "step", 0) >= 1 and not closed:
            closed.append(report)
            viewer.window.remove_dock_widget(dock.native)

    watch.on_report = close_in_training
    dock.start_training()
    pbar = dock._runner.pbar
    _wait_until_done(qtbot, dock)
    assert closed and watch.errors == []
    assert dock._trained.result.stopped == "cancelled" and target.is_file()
    assert pbar.n == 0 and dock._runner.pbar is None


def test_closing_the_viewer_stops_training(dock_on, qtbot, watch, small_network):
    viewer, dock = _train_dock(dock_on, epochs=0)
    dock._minutes.value = 30
    worker = dock.start_training()
    qtbot.waitUntil(lambda: any(getattr(r, "step", 0) for r in watch.reports), timeout=60_000)
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert watch.errors == [] and dock._job.training.result.stopped == "cancelled"
    assert dock._runner.worker is worker  # its slots were let go with the widgets: nothing ran late


def test_a_run_that_diverges_without_a_better_model_says_so_and_saves_nothing(
    dock_on, qtbot, tmp_path, monkeypatch, watch, messages, small_network
):
    unstable = functools.partial(TrainConfig, model=small_network, learning_rate=1e6)
    monkeypatch.setattr(_label_train, "TrainConfig", unstable)
    viewer, dock = _train_dock(dock_on, epochs=3)
    points = dock.labeling.cells.value.data.copy()
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: asked.append(1))
    dock.start_training()
    _wait_until_done(qtbot, dock)
    assert watch.errors == [] and asked == []
    assert dock.status.value.startswith("training diverged: ")
    assert dock.status.value.endswith("no epoch did better than the start model: nothing to save")
    assert messages["warning"][-1] == dock.status.value
    np.testing.assert_array_equal(dock.labeling.cells.value.data, points)


def test_bad_input_is_reported_and_leaves_the_labels(
    dock_on, qtbot, tmp_path, messages, watch, small_network
):
    viewer, dock = _train_dock(dock_on, epochs=1)
    cells = dock.labeling.cells.value
    before = cells.data.copy()
    dock._start_model.value = "file"
    assert dock.start_training() is None
    assert messages["error"][-1] == "choose the model file to start from"
    broken = tmp_path / "broken.pt"
    broken.write_text("not a model")
    dock._model_file.value = broken
    dock.start_training()
    _wait_until_done(qtbot, dock)
    assert len(watch.errors) == 1 and "broken.pt" in messages["error"][-1]
    assert dock.status.value.startswith("training failed:") and "broken.pt" in dock.status.value
    assert dock._trained is None and not dock._save.enabled and dock._start.enabled
    np.testing.assert_array_equal(cells.data, before)

    dock._start_model.value = "scratch"
    cells.data = np.zeros((0, 3))
    assert dock.start_training() is None
    assert messages["error"][-1].startswith("no labeled frames yet")
    viewer.layers.remove(viewer.layers["movie"])
    assert dock.labeling.image.value is None
    assert dock.start_training() is None
    assert messages["error"][-1] == "pick the image layer to label first"


def _training_begins(slots: dict) -> None:
    """What the worker reports: frames cropped while preparing, then a first batch trained."""
    slots["yielded"]((1, 3))
    first = TrainProgress(0, 1, 1, 2, {}, None, None, elapsed_s=1.0, remaining_s=None)
    slots["yielded"](first)


def test_whole_frames_are_resized_and_the_user_is_told(dock_on, messages, monkeypatch):
    viewer, image, dock = dock_on(np.zeros((3, 100, 140), dtype=np.uint8))
    dock.labeling.ensure_annotation().add([[0, 50, 50]])
    started = []
    monkeypatch.setattr(_workers, "start_worker", lambda *a, **k: started.append(k))
    dock.start_training()
    # found by fuzzing the dock: said before the worker refused a start model, the note made
    # two notifications of one refusal; it waits until training begins
    assert started and messages["warning"] == []
    _training_begins(started[0])
    assert "each whole frame is resized to 128x128" in messages["warning"][0]
    _training_begins(started[0])
    assert len(messages["warning"]) == 1  # said once


class _FakeCountDock:
    def __init__(self):
        self.models = []

    def use_model(self, path):
        self.models.append(path)


def test_count_with_this_model_hands_the_file_to_the_count_dock(dock_on, messages, monkeypatch):
    viewer, image, dock = dock_on(np.zeros((2, 32, 32)))
    assert not dock._count.enabled
    dock.model_path = Path("/data/twinvae-movie.pt")
    count_dock = _FakeCountDock()
    opened = []

    def add_plugin_dock_widget(plugin, name):
        opened.append((plugin, name))
        return None, count_dock

    def unregistered(plugin):
        raise KeyError(plugin)

    manager = npe2.PluginManager.instance()
    monkeypatch.setattr(manager, "get_manifest", unregistered)
    monkeypatch.setattr(viewer.window, "add_plugin_dock_widget", add_plugin_dock_widget)
    dock._on_count_with_model()
    assert opened == [(PLUGIN, "Count cells")] and count_dock.models == [dock.model_path]

    def missing(plugin, name):
        raise KeyError(f"plugin {plugin!r} does not provide a widget named {name!r}")

    monkeypatch.setattr(viewer.window, "add_plugin_dock_widget", missing)
    dock._on_count_with_model()
    assert messages["error"] == [
        "the 'Count cells' dock is not available in this installation; the model is saved at "
        + str(dock.model_path)
    ]


def test_count_with_this_model_reuses_the_count_dock_the_plugins_menu_opened(
    dock_on, tmp_path, messages
):
    # found on a new-user walk: it opened a second Count cells dock beside the menu's
    from napari._app_model import get_app_model

    from napari_twinvae._widgets._count import CountDock

    def count_docks():
        return [w for w in viewer.window.dock_widgets.values() if isinstance(w, CountDock)]

    viewer, image, dock = dock_on(np.zeros((2, 32, 32)))
    get_app_model().commands.execute_command("napari-twinvae.count_cells").result()
    assert len(count_docks()) == 1
    dock.model_path = tmp_path / "model.pt"
    dock.model_path.write_bytes(b"")
    dock._on_count_with_model()
    assert len(count_docks()) == 1 and count_docks()[0]._model_file.value == dock.model_path
    viewer.window.remove_dock_widget(count_docks()[0].native)
    dock._on_count_with_model()  # opened by the button now ...
    get_app_model().commands.execute_command("napari-twinvae.count_cells").result()
    assert len(count_docks()) == 1  # ... and the menu finds it there
    assert messages["error"] == []


def _has_widget(name):
    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    return any(w.display_name == name for w in manifest.contributions.widgets or ())


@pytest.mark.skipif(not _has_widget("Count cells"), reason="no Count cells dock in this build")
def test_count_with_this_model_opens_the_real_count_dock(dock_on, tmp_path, messages):
    from napari_twinvae.core.io import save_checkpoint
    from napari_twinvae.core.model import TwinVAE

    viewer, image, dock = dock_on(np.zeros((2, 32, 32)))
    small = ModelConfig(encoder_channels=(4, 4, 4, 4), shared_channels=8, latent_dim=8)
    dock.model_path = save_checkpoint(tmp_path / "small.pt", TwinVAE(small))
    dock._on_count_with_model()
    assert messages["error"] == []
    assert any("Count cells" in name for name in viewer.window.dock_widgets)


def test_dock_opens_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 16, 16)), name="frames")
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Label & train")
    assert isinstance(dock, LabelTrainDock) and dock.labeling.image.value.name == "frames"
    assert {"auto", "cpu"} <= set(dock._device.choices)
    assert dock._start_model.value in ("default", "scratch") and dock._epochs.value == 50


def test_a_chamber_mostly_outside_the_frame_is_refused_and_said_in_the_status(
    dock_on, messages, monkeypatch
):
    viewer, image, dock = dock_on(np.zeros((3, 128, 128), dtype=np.uint8))
    dock.labeling.ensure_annotation().add([[0, 50, 50]])
    started = []
    monkeypatch.setattr(_workers, "start_worker", lambda *a, **k: started.append((a, k)))
    dock.status.value = "finished after 3 epoch(s)"  # an earlier run's line
    far = viewer.add_shapes([[[100, 100], [100, 300], [300, 300], [300, 100]]], name="far")
    dock.labeling.chambers.value = far
    assert dock.start_training() is None and not started
    assert "98% outside the 128x128 frame" in messages["error"][-1]
    assert dock.status.value == f"not started: {messages['error'][-1]}"
    near = viewer.add_shapes([[[-3, 0], [-3, 128], [128, 128], [128, 0]]], name="near")
    dock.labeling.chambers.value = near
    dock.start_training()
    assert started
    _training_begins(started[0][1])
    assert any("reaches past" in w for w in messages["warning"])


def test_loading_a_frame_count_table_is_refused_with_a_clear_line(dock_on, tmp_path, messages):
    # found on a new-user walk: "loaded 0 labeled frames" as if it worked, also for frame 500
    viewer, image, dock = dock_on(np.zeros((6, 64, 64), dtype=np.uint8))
    panel = dock.labeling
    for text, message in [
        ("frame,count\n0,3\n2,0\n", "counts without cell positions"),
        ("frame,count\n500,3\n", "counts without cell positions"),
        ("frame,count\n0,99\n", "not a whole number in 0..30"),
        ("index,axis-0,axis-1,axis-2\n", "holds no labels"),
    ]:
        path = tmp_path / "table.csv"
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            panel.files.load(path)
    assert panel.cells.value is None and len(viewer.layers) == 1  # nothing was made or changed


def test_points_outside_the_image_are_shown_and_refused(dock_on, messages, monkeypatch):
    # found on a new-user walk: points outside the image counted as cells
    viewer, image, dock = dock_on(np.zeros((3, 64, 64), dtype=np.uint8))
    cells = dock.labeling.ensure_annotation()
    cells.add([[0, 10, 10], [0, 70, 20]])
    assert "1 point(s) lie outside the 64x64 image" in dock.labeling.summary.value
    started = []
    monkeypatch.setattr(_workers, "start_worker", lambda *a, **k: started.append(a))
    assert dock.start_training() is None and not started
    assert "outside the 64x64 image" in messages["error"][-1]


def test_a_merge_never_overrides_no_cells_marks(dock_on, tmp_path, messages):
    # found on a new-user walk: loading a file with cells on a frame marked "no cells" (or the
    # other way round) silently overrode the mark
    viewer, image, dock = dock_on(np.zeros((6, 64, 64), dtype=np.uint8))
    panel = dock.labeling
    cells = panel.ensure_annotation()
    cells.add([[1, 10, 10]])
    cells.metadata[EMPTY_FRAMES_KEY] = [2]
    before = cells.data.copy()
    clicked_on_2 = tmp_path / "clicked.csv"
    clicked_on_2.write_text("index,axis-0,axis-1,axis-2\n0,2,5,5\n")
    with pytest.raises(ValueError, match=r"frame\(s\) 2 hold cells on one side"):
        panel.files.load(clicked_on_2)
    marked_1 = tmp_path / "marked.csv"
    marked_1.write_text("index,axis-0,axis-1,axis-2\n0,3,5,5\n")
    (tmp_path / "marked.frames.csv").write_text("frame,count\n1,0\n3,1\n")
    with pytest.raises(ValueError, match=r"frame\(s\) 1 hold cells on one side"):
        panel.files.load(marked_1)
    np.testing.assert_array_equal(cells.data, before)
    assert cells.metadata[EMPTY_FRAMES_KEY] == [2]
    crowd = tmp_path / "crowd.csv"
    crowd.write_text(
        "index,axis-0,axis-1,axis-2\n" + "".join(f"{i},1,{i + 20},30\n" for i in range(30))
    )
    with pytest.raises(
        ValueError, match="with the cells already clicked: a labeled chamber holds 31"
    ):
        panel.files.load(crowd)
    np.testing.assert_array_equal(cells.data, before)
