"""Label & train's "Label next": rank the unlabeled frames in a worker, go to the best one."""

import numpy as np
import pytest

from napari_twinvae._widgets import _label_next, _labeling, _workers
from napari_twinvae._widgets._annotation import PREDICTED_CELLS_ROLE, frame_points
from napari_twinvae._widgets._label_train import LabelTrainDock
from napari_twinvae._widgets._layers import find_owned
from napari_twinvae.core.io import load_checkpoint
from napari_twinvae.core.predict import count
from napari_twinvae.core.uncertainty import label_next
from tests._checkpoints import density_checkpoint, small_checkpoint


@pytest.fixture
def messages(monkeypatch):
    """Notifications shown, by kind, from the button, the labeling panel and the workers."""
    seen = {"error": [], "info": []}
    for module in (_label_next, _labeling, _workers):
        for kind in seen:
            monkeypatch.setattr(module, f"show_{kind}", seen[kind].append, raising=False)
    return seen


@pytest.fixture
def dock_on(make_napari_viewer):
    def make(frames, model=None):
        viewer = make_napari_viewer()
        image = viewer.add_image(frames, name="movie") if frames is not None else None
        dock = LabelTrainDock(viewer)
        viewer.window.add_dock_widget(dock)
        if model is not None:
            dock._start_model.value = "file"
            dock._model_file.value = model
        dock._device.value = "cpu"
        return viewer, image, dock

    return make


def _press(qtbot, dock):
    """Click Label next and wait for its worker, if it started one."""
    dock.label_next.button.native.click()
    qtbot.waitUntil(lambda: not dock.label_next._runner.running, timeout=30000)


def _frame(viewer):
    return int(viewer.dims.current_step[0])


def test_label_next_counts_once_and_walks_the_ranked_unlabeled_frames(
    dock_on, qtbot, model_file, series, messages
):
    viewer, image, dock = dock_on(series, model_file)
    cells = dock.labeling.ensure_annotation()
    cells.add([[5, 40, 40], [5, 80, 80]])  # frame 5 is labeled already
    uncertainty = count(series, load_checkpoint(model_file), device="cpu").uncertainty
    workers = []
    dock.label_next.button.changed.connect(
        lambda *_: workers.append(dock.label_next._runner.worker)
    )
    _press(qtbot, dock)
    first = label_next(uncertainty, [5], n=1)[0]
    assert _frame(viewer) == first != 5
    np.testing.assert_allclose(dock.label_next._ranked[1], uncertainty, atol=1e-5)
    assert f"frame {first}:" in dock.label_next.status.value
    seen = [first]
    for _ in range(10):  # the other unlabeled frames, each once, no new count
        _press(qtbot, dock)
        seen.append(_frame(viewer))
    assert workers[0] is not None and workers[1:] == [None] * 10
    assert sorted(seen) == [f for f in range(12) if f != 5]
    expected = [first]
    for _ in range(10):
        expected.append(int(label_next(uncertainty, [5, *expected], n=1)[0]))
    assert seen == expected  # core's ranking, each shown frame counting as taken
    assert messages["error"] == []


def test_labeled_frames_are_never_suggested_and_a_new_model_recounts(
    dock_on, qtbot, model_file, series, tmp_path
):
    viewer, image, dock = dock_on(series, model_file)
    _press(qtbot, dock)
    first = _frame(viewer)
    cells = dock.labeling.ensure_annotation()
    cells.add([[first, 30, 30]])  # the user labels the suggested frame
    _press(qtbot, dock)
    second = _frame(viewer)
    assert second != first
    dock.model_path = small_checkpoint(tmp_path / "trained.pt", seed=3)  # as after training
    _press(qtbot, dock)  # another model: counted again, the labeled frame still skipped
    other = count(series, load_checkpoint(dock.model_path), device="cpu").uncertainty
    np.testing.assert_allclose(dock.label_next._ranked[1], other, atol=1e-5)
    assert _frame(viewer) == label_next(other, [first], n=1)[0] != first


def test_the_loop_go_accept_the_predicted_cells_next(dock_on, qtbot, series, tmp_path, messages):
    viewer, image, dock = dock_on(series, density_checkpoint(tmp_path / "density.pt"))
    _press(qtbot, dock)
    frame = _frame(viewer)
    predicted = find_owned(viewer, PREDICTED_CELLS_ROLE, image)
    assert predicted is not None  # the ranking count found the cells too
    dock.labeling._predicted.native.click()  # Use predicted cells
    mine = frame_points(predicted)
    mine = mine[np.rint(mine[:, 0]) == frame]
    labels = dock.labeling.labels()
    assert labels.labeled[frame].all() and labels.counts[frame].sum() == len(mine)
    _press(qtbot, dock)
    assert _frame(viewer) != frame
    assert not dock.labeling.labels().labeled[_frame(viewer)].any()
    assert messages["error"] == []


def test_without_a_model_or_an_image_one_clear_notification(
    dock_on, qtbot, model_file, tmp_path, messages
):
    viewer, _, dock = dock_on(None, model_file)
    _press(qtbot, dock)
    assert messages["error"] == ["Label next: pick the image layer to label first"]
    viewer.add_image(np.zeros((4, 64, 64), dtype=np.float32), name="movie")
    dock._start_model.value = "scratch"
    _press(qtbot, dock)
    assert len(messages["error"]) == 2 and "no model to rank the frames" in messages["error"][1]
    dock._start_model.value = "file"
    dock._model_file.value = tmp_path / "missing.pt"
    _press(qtbot, dock)
    assert len(messages["error"]) == 3 and "choose the model file" in messages["error"][2]
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    dock._model_file.value = broken
    _press(qtbot, dock)  # found out in the worker: said once, the button usable again
    assert len(messages["error"]) == 4 and "broken.pt" in messages["error"][3]
    assert dock.label_next.button.enabled and "could not rank" in dock.label_next.status.value
    assert dock.label_next._ranked is None
