import numpy as np
import pytest

from napari_twinvae._widgets import _synthetic, _workers
from napari_twinvae._widgets._annotation import EMPTY_FRAMES_KEY
from napari_twinvae._widgets._layers import OWNER_KEY
from napari_twinvae._widgets._synthetic import (
    CENTRES_ROLE,
    IMAGES_ROLE,
    SyntheticCellsDock,
    sample_bright_field,
    sample_phase_contrast,
)
from napari_twinvae.core.synthetic import SynthConfig, generate

PLUGIN = "napari-twinvae"


def _role(layer):
    return layer.metadata[OWNER_KEY]["role"]


@pytest.fixture
def errors(monkeypatch):
    """Error notifications, from the dock and from its worker."""
    shown = []
    for module in (_synthetic, _workers):
        monkeypatch.setattr(module, "show_error", shown.append)
    return shown


@pytest.fixture
def dock_in(make_napari_viewer):
    def make():
        viewer = make_napari_viewer()
        dock = SyntheticCellsDock(viewer)
        viewer.window.add_dock_widget(dock)
        return viewer, dock

    return make


def _generate(dock, qtbot, **settings):
    for name, value in settings.items():
        getattr(dock, f"_{name}").value = value
    worker = dock.generate()
    qtbot.waitUntil(lambda: not dock._runner.running, timeout=60_000)
    return worker


def test_dock_adds_images_and_true_centres_and_shows_the_frame_count(dock_in, qtbot, errors):
    viewer, dock = dock_in()
    _generate(dock, qtbot, preset="bf", n_images=6, seed=3)
    images, points = viewer.layers
    assert _role(images) == IMAGES_ROLE and _role(points) == CENTRES_ROLE
    assert images.data.shape == (6, 128, 128) and images.name == "synthetic cells (bf, seed 3)"
    counts = np.asarray(images.metadata["counts"])
    np.testing.assert_array_equal(counts, generate(6, SynthConfig.preset("bf"), rng=3).counts)
    np.testing.assert_array_equal(np.bincount(points.data[:, 0].astype(int), minlength=6), counts)
    np.testing.assert_array_equal(points.features["count"], counts[points.features["frame"]])
    viewer.dims.set_current_step(0, 4)
    assert dock.frame_info.value == f"cells in frame 4: {counts[4]}"
    viewer.dims.set_current_step(0, 1)
    assert dock.frame_info.value == f"cells in frame 1: {counts[1]}"
    assert dock.status.value.startswith("added synthetic cells (bf, seed 3)") and errors == []


def test_a_second_run_adds_beside_the_first_and_says_so(dock_in, qtbot):
    # found on a new-user walk: Generate replaced the earlier stack without a word
    viewer, dock = dock_in()
    _generate(dock, qtbot, n_images=3, seed=0)
    first = viewer.layers[0].data.copy()
    _generate(dock, qtbot, n_images=3, seed=0)
    assert len(viewer.layers) == 4
    np.testing.assert_array_equal(viewer.layers[0].data, first)
    assert "the earlier 'synthetic cells (pc, seed 0)' is kept" in dock.status.value


def test_match_labeled_points_uses_labeled_frames_and_the_no_cells_marks(dock_in, qtbot):
    # found on a new-user walk: every unlabeled frame counted as 0 and the marks were ignored,
    # so labeling every 5th frame made nearly three in four synthetic images empty
    viewer, dock = dock_in()
    frames = viewer.add_image(np.zeros((13, 64, 64), dtype=np.uint8), name="my frames")
    cells = [[t, 10 + 9 * i, 20] for t in (0, 5, 10) for i in range(3)]
    labeled = viewer.add_points(np.array(cells, dtype=float), name="mine")
    _generate(
        dock, qtbot, n_images=60, background=frames, distribution="match labeled points",
        labeled=labeled,
    )  # fmt: skip
    counts = np.asarray(viewer.layers[-2].metadata["counts"])
    assert set(counts.tolist()) == {3}  # only the three labeled frames, 3 cells each
    assert np.median(viewer.layers[-2].data) == 0.0  # the user's dark chamber
    labeled.metadata[EMPTY_FRAMES_KEY] = [12]  # counted, and empty
    _generate(dock, qtbot, n_images=60)
    counts = np.asarray(viewer.layers[-2].metadata["counts"])
    assert set(counts.tolist()) == {0, 3}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda v, d: setattr(d._distribution, "value", "match labeled points"), "Points layer"),
        (
            lambda v, d: setattr(
                d._background, "value", v.add_image(np.zeros((8, 8, 3)), rgb=True)
            ),
            "gray, not RGB",
        ),
        (
            lambda v, d: setattr(d._background, "value", v.add_image(np.zeros((2, 2, 8, 8)))),
            "4D",
        ),
        (
            lambda v, d: setattr(d._background, "value", v.add_image(np.full((2, 8, 8), np.nan))),
            "NaN",
        ),
        (
            lambda v, d: (
                setattr(d._distribution, "value", "match labeled points"),
                setattr(d._labeled, "value", v.add_points(np.zeros((0, 3)), ndim=3)),
            ),
            "labels no frame",
        ),
        (
            lambda v, d: (
                setattr(d._distribution, "value", "match labeled points"),
                setattr(d._labeled, "value", v.add_points(np.zeros((31, 3)) + [0, 1, 1])),
            ),
            "0..30",
        ),
    ],
)
def test_bad_input_is_one_notification_and_adds_nothing(dock_in, qtbot, errors, setup, message):
    # found on a new-user walk: 6 of 8 bad inputs showed a raw EmitLoopError traceback
    viewer, dock = dock_in()
    setup(viewer, dock)
    before = list(viewer.layers)
    dock.generate()
    qtbot.waitUntil(lambda: not dock._runner.running, timeout=30_000)
    assert len(errors) == 1 and message in errors[0], errors
    assert "Traceback" not in errors[0] and "\n" not in errors[0]
    assert dock.status.value == f"not generated: {errors[0]}"
    assert list(viewer.layers) == before and dock._generate.enabled


def test_generate_runs_in_a_worker_with_progress_and_stop(dock_in, qtbot, errors):
    # found on a new-user walk: 10,000 images blocked napari for 6 s with no progress or cancel
    viewer, dock = dock_in()
    dock._n_images.value = 10_000
    worker = dock.generate()
    assert worker is not None and dock._stop.enabled and not dock._generate.enabled
    assert dock._runner.pbar is not None and dock._runner.pbar.total == 10_000
    with qtbot.waitSignal(worker.yielded, timeout=30_000):
        pass
    dock._stop.native.click()
    qtbot.waitUntil(lambda: not dock._runner.running, timeout=30_000)
    assert dock.status.value == "stopped; nothing was added" and len(viewer.layers) == 0
    assert dock._generate.enabled and not dock._stop.enabled and errors == []


def test_the_sample_time_series_open_through_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_pc")
    viewer.open_sample(PLUGIN, "synthetic_bf")
    roles = [_role(layer) for layer in viewer.layers]
    assert roles == [IMAGES_ROLE, CENTRES_ROLE, IMAGES_ROLE, CENTRES_ROLE]
    for layer in viewer.layers[::2]:
        counts = layer.metadata["counts"]
        assert layer.data.shape == (60, 128, 128) and counts[0] == 1 and counts[-1] >= 12


def test_dock_opens_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Synthetic cells")
    assert dock is not None and isinstance(widget, SyntheticCellsDock)
    viewer.add_image(
        sample_phase_contrast()[0][0], metadata=sample_phase_contrast()[0][1]["metadata"]
    )
    viewer.dims.set_current_step(0, 59)
    assert widget.frame_info.value.startswith("cells in frame 59:")


def test_samples_are_layer_data_tuples():
    for sample in (sample_phase_contrast, sample_bright_field):
        (images, image_meta, image_kind), (points, points_meta, points_kind) = sample()
        assert image_kind == "image" and points_kind == "points"
        assert images.shape == (60, 128, 128) and points.shape[1] == 3
        counts = image_meta["metadata"]["counts"]
        assert len(points) == sum(counts) and points_meta["metadata"]["counts"] == counts


def test_frame_count_follows_the_topmost_visible_stack(dock_in, qtbot):
    viewer, dock = dock_in()
    viewer.open_sample(PLUGIN, "synthetic_pc")
    _generate(dock, qtbot, n_images=3, seed=0)
    top = viewer.layers[-2]
    viewer.dims.set_current_step(0, 2)
    assert dock.frame_info.value == f"cells in frame 2: {top.metadata['counts'][2]}"
    top.visible = False
    viewer.dims.set_current_step(0, 30)
    pc_counts = viewer.layers[0].metadata["counts"]
    assert dock.frame_info.value == f"cells in frame 30: {pc_counts[30]}"
