"""What fuzzing the docks found, one plain test each (each failed before its fix)."""

from __future__ import annotations

import numpy as np
import torch

from napari_twinvae._widgets._count import CountDock
from napari_twinvae._widgets._label_train import LabelTrainDock
from tests.fuzz._docks import judge, watching


def _docked(make_napari_viewer, dock_class, side: int):
    """A viewer with a 2-frame stack of ``side`` x ``side`` and the dock."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, side, side), np.uint8), name="movie")
    dock = dock_class(viewer)
    viewer.window.add_dock_widget(dock)
    return dock


def _start_training_from(dock, model, qtbot):
    """Click a cell, start training from the model file ``model``; what reached the user."""
    dock.labeling.ensure_annotation().add([[0, 10, 10]])
    dock._start_model.value = "file"
    dock._model_file.value = model
    with watching() as seen:
        dock._start.native.click()
        qtbot.waitUntil(lambda: not dock._runner.running, timeout=30_000)
    assert judge(seen, f"Start from {model.name}", dock._trained is not None) == "refused"
    return seen.said()[0]


def test_count_cells_refuses_a_broken_model_in_one_error_without_the_resize_note_first(
    make_napari_viewer, qtbot, tmp_path
):
    # the note that whole 64x64 frames are resized came first, then the worker's error
    dock = _docked(make_napari_viewer, CountDock, 64)
    (tmp_path / "empty.pt").write_bytes(b"")
    dock.use_model(tmp_path / "empty.pt")
    with watching() as seen:
        dock._count_button.native.click()
        qtbot.waitUntil(lambda: not dock._runner.running, timeout=30_000)
    assert judge(seen, "Count with empty.pt", worked=dock.result is not None) == "refused"
    assert "not a readable checkpoint" in seen.said()[0]


def test_label_and_train_refuses_a_broken_start_model_in_one_error_without_the_resize_note_first(
    make_napari_viewer, qtbot, tmp_path
):
    dock = _docked(make_napari_viewer, LabelTrainDock, 64)
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "not a readable checkpoint" in _start_training_from(dock, tmp_path / "empty.pt", qtbot)


def test_label_and_train_refuses_a_start_model_whose_settings_are_text_in_one_error(
    make_napari_viewer, qtbot, fuzz_files, tmp_path
):
    # training failed inside torch: "leaky_relu(): argument 'negative_slope' must be Number,
    # not str", a TypeError shown as if it were a refusal
    payload = torch.load(fuzz_files / "model.pt", weights_only=True)
    payload["model_config"]["leaky_slope"] = ""
    torch.save(payload, tmp_path / "text.pt")
    dock = _docked(make_napari_viewer, LabelTrainDock, 128)
    said = _start_training_from(dock, tmp_path / "text.pt", qtbot)
    assert "ModelConfig.leaky_slope must be a number" in said


def test_load_labels_refuses_a_companion_that_is_not_a_frame_count_table(
    make_napari_viewer, tmp_path, monkeypatch
):
    # a Points CSV saved as the .frames.csv beside the labels: a KeyError reached Qt's excepthook
    from qtpy.QtWidgets import QFileDialog

    dock = _docked(make_napari_viewer, LabelTrainDock, 64)
    labels = tmp_path / "labels.csv"
    labels.write_text("index,axis-0,axis-1,axis-2\n")
    (tmp_path / "labels.frames.csv").write_text("index,axis-0,axis-1,axis-2\n0,0,0.00,0.00\n")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(labels), ""))
    with watching() as seen:
        dock.labeling.files._load.native.click()
    assert judge(seen, "Load labels beside a Points CSV as .frames.csv", worked=False) == "refused"
    assert "must have the columns frame,count" in seen.said()[0]
    assert dock.labeling.cells.value is None  # nothing was made
