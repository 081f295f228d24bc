"""The docks' inputs, generated: label files loaded in Label & train, image layers and chamber
Shapes counted in Count cells, and model files chosen in either dock.

Each test opens one viewer and its dock and tries all its examples in them, as a user tries one
file after another (a viewer per example would cost seconds each). The strategies are the
command line's (``strategies.py``); the contract is ``_docks.judge``'s.
"""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
import tifffile
from hypothesis import given, reject
from hypothesis import strategies as st
from napari.layers import Image, Shapes
from qtpy.QtWidgets import QFileDialog, QMessageBox

from napari_twinvae._widgets._annotation import EMPTY_FRAMES_KEY, empty_frames, frame_points
from napari_twinvae._widgets._count import CountDock
from napari_twinvae._widgets._label_train import LabelTrainDock
from napari_twinvae._widgets._layers import role_of
from tests.fuzz._docks import examples, judge, watching
from tests.fuzz._runner import example_dir, snapshot
from tests.fuzz.strategies import (
    MARKER,
    image_recipes,
    label_recipes,
    model_recipes,
    shapes_recipes,
    write_model,
)

USER_CELLS = np.array([[0, 10.0, 12.0], [0, 40.0, 33.5], [2, 20.0, 50.0]])
"""What the user clicked before loading a file: it must survive every load."""
SECONDS = 60_000  # ms a dock's worker may take on one example (a few at most on a 2-core CPU)


@pytest.fixture
def stack(fuzz_files):
    """The good 3-frame 64x64 stack the label and shape strategies are drawn for."""
    return tifffile.imread(fuzz_files / "stack.tif")


@pytest.fixture
def label_dock(make_napari_viewer, stack):
    """Label & train on the good stack, with its annotation layer (the dock's own)."""
    viewer = make_napari_viewer()
    dock = LabelTrainDock(viewer)
    viewer.window.add_dock_widget(dock, name="Label & train")
    viewer.add_image(stack, name="movie")
    dock.labeling.ensure_annotation()
    return viewer, dock


def _clicked(dock, points: np.ndarray, marks: list[int]):
    """The annotation as the user left it before the example: ``points`` and ``marks``."""
    cells = dock.labeling.cells.value
    cells.metadata[EMPTY_FRAMES_KEY] = list(marks)
    cells.data = points
    return cells


@pytest.fixture
def count_dock(make_napari_viewer, fuzz_files):
    """Count cells with the small model, one view, on the CPU."""
    viewer = make_napari_viewer()
    dock = CountDock(viewer)
    viewer.window.add_dock_widget(dock, name="Count cells")
    dock.use_model(fuzz_files / "model.pt")
    dock._views.value = 1  # the dock's inputs are under test, not the averaging of turns
    dock._device.value = "cpu"
    return viewer, dock


@pytest.fixture
def count_stack(count_dock, stack):
    """Count cells on the good stack."""
    viewer, dock = count_dock
    viewer.add_image(stack, name="frames")
    return viewer, dock


def _changed(before: dict) -> list[str]:
    return [p.name for p, content in snapshot(*before).items() if content != before[p]]


def _lost(cells, points: np.ndarray, marks: list[int], refused: bool) -> list[str]:
    """What of the user's annotation a load lost (any change at all, when it was refused)."""
    now, marked = frame_points(cells), empty_frames(cells)
    if refused:
        same = now.shape == points.shape and np.array_equal(now, points)
        return [] if same and marked == marks else ["the annotation of a refused file"]
    kept = all(np.isclose(now, row).all(axis=1).any() for row in points)
    return [] if kept and set(marks) <= set(marked) else ["the user's clicked cells or marks"]


# -- Label & train: Load labels… -----------------------------------------------------------
@examples(20)
@given(
    # half of them well-formed Points CSVs (in any encoding): the files a merge works on
    labels=label_recipes() | label_recipes(kinds=("points",), damaged=False),
    companion=st.one_of(st.none(), st.none(), st.none(), label_recipes()),  # mostly none
    before=st.sampled_from(["nothing", "cells", "cells and a mark"]),
)
def test_load_labels_merges_any_labels_file_or_refuses_it(
    label_dock, tmp_path, labels, companion, before
):
    viewer, dock = label_dock
    panel = dock.labeling
    points = USER_CELLS if before != "nothing" else np.zeros((0, 3))
    marks = [1] if before == "cells and a mark" else []
    cells = _clicked(dock, points, marks)
    with example_dir(tmp_path) as folder:
        path = folder / "labels.csv"
        path.write_bytes(labels.bytes())
        if companion is not None:  # read beside a Points CSV
            (folder / "labels.frames.csv").write_bytes(companion.bytes())
        files = snapshot(path, folder / "labels.frames.csv")
        chosen = (str(path), "napari Points CSV (*.csv)")
        with (
            watching() as seen,
            mock.patch.object(QFileDialog, "getOpenFileName", return_value=chosen),
        ):
            panel.files._load.native.click()
        worked = any(info.startswith("loaded ") for info in seen.infos())
        damaged = _changed(files)
        if cells not in viewer.layers or panel.cells.value is not cells:
            damaged.append("the annotation layer")
        else:
            damaged += _lost(cells, points, marks, refused=not worked)
        judge(
            seen, f"Load labels {labels} (frames: {companion}; before: {before})", worked, damaged
        )


# -- Count cells: image layers and chambers ------------------------------------------------
def _count(dock, qtbot):
    dock._count_button.native.click()
    qtbot.waitUntil(lambda: not dock._runner.running, timeout=SECONDS)


@examples(15)
@given(recipe=image_recipes(storages=("tiff",)), chamber=st.booleans())
def test_count_cells_counts_any_image_layer_or_refuses_it(count_dock, qtbot, recipe, chamber):
    viewer, dock = count_dock
    viewer.layers.clear()
    data = recipe.array()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # napari's own, on odd dtypes
        try:  # napari itself may not take it (scipy cannot make a float16 thumbnail)
            image = Image(data, name="image")
        except (ValueError, TypeError, RuntimeError):
            reject()  # no layer the dock could be given
    viewer.add_layer(image)
    kept = data.copy()
    if chamber:  # a chamber drawn on the frame, whatever its size
        rectangle = viewer.add_shapes([[[8, 8], [8, 56], [56, 56], [56, 8]]], name="chamber")
        dock._chambers.value = rectangle
    with watching() as seen:
        _count(dock, qtbot)
    worked = dock._run is not None and dock._run.image is image
    damaged = [] if np.array_equal(image.data, kept, equal_nan=True) else ["the image layer"]
    judge(seen, f"Count {recipe} (chamber: {chamber})", worked, damaged)


@examples(15)
@given(rois=shapes_recipes())
def test_count_cells_counts_any_chamber_shapes_or_refuses_them(count_stack, qtbot, tmp_path, rois):
    viewer, dock = count_stack
    for layer in [layer for layer in viewer.layers if isinstance(layer, Shapes)]:
        if role_of(layer) is None:  # the last example's chambers (not the counts' layer)
            viewer.layers.remove(layer)
    with example_dir(tmp_path) as folder:  # as the user opens it: napari's own Shapes reader
        path = folder / "chambers.csv"
        path.write_bytes(rois.bytes())
        shapes = _napari_shapes(path)
    viewer.add_layer(shapes)
    kept = [np.array(s) for s in shapes.data]
    dock._chambers.value = shapes
    earlier = dock._run
    with watching() as seen:
        _count(dock, qtbot)
    worked = dock._run is not earlier
    same = len(kept) == len(shapes.data) and all(
        np.array_equal(a, b, equal_nan=True) for a, b in zip(kept, shapes.data, strict=True)
    )
    judge(seen, f"Count with chambers {rois}", worked, [] if same else ["the chamber shapes"])


def _napari_shapes(path) -> Shapes:
    """The Shapes layer napari opens from a Shapes CSV; an example napari cannot open or show
    (its dims slider takes 32-bit ranges) is no input a dock could be given, and is rejected."""
    from napari_builtins.io import csv_to_layer_data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # napari's own, on NaN or huge vertices
        try:
            data, meta, _ = csv_to_layer_data(str(path), require_type="shapes")
            shapes = Shapes(data, **meta)
        except (ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError):
            reject()
    if np.abs(np.nan_to_num(shapes.extent.data)).max() > 2**30:
        reject()
    return shapes


# -- model files chosen in a dock ----------------------------------------------------------
@examples(12)
@given(recipe=model_recipes())
def test_count_cells_counts_with_any_model_file_or_refuses_it(
    count_stack, qtbot, fuzz_files, tmp_path, recipe
):
    viewer, dock = count_stack
    with example_dir(tmp_path) as folder:
        model = write_model(recipe, folder / "model.pt", fuzz_files / "model.pt")
        files = snapshot(model)
        dock.use_model(model)  # as chosen in the dock's file field
        earlier = dock._run
        with watching() as seen:
            _count(dock, qtbot)
        worked = dock._run is not earlier
        damaged = _changed(files) + ["code ran"] * (folder / MARKER).exists()
        judge(seen, f"Count with model {recipe}", worked, damaged)


@examples(10)
@given(recipe=model_recipes())
def test_label_and_train_start_from_any_model_file_or_refuse_it(
    label_dock, qtbot, fuzz_files, tmp_path, recipe
):
    viewer, dock = label_dock
    cells = _clicked(dock, USER_CELLS, [1])
    points = frame_points(cells).copy()
    dock._start_model.value = "file"
    dock._epochs.value, dock._batch.value, dock._device.value = 1, 4, "cpu"
    dock._decoder.value = False
    with example_dir(tmp_path) as folder:
        model = write_model(recipe, folder / "model.pt", fuzz_files / "model.pt")
        files = snapshot(model)
        dock._model_file.value = model
        with watching() as seen:  # Label next counts with the start model to rank the frames
            dock.label_next.button.native.click()
            qtbot.waitUntil(lambda: not dock.label_next._runner.running, timeout=SECONDS)
        ranked = dock.label_next._ranked is not None and dock.label_next._ranked[0][1] == str(model)
        damaged = _changed(files) + _lost(cells, points, [1], refused=True)
        judge(seen, f"Label next with start model {recipe}", ranked, damaged)

        earlier = dock._job
        not_saved = ("", "")  # the trained model is not saved: the save dialog is cancelled
        with (
            watching() as seen,
            mock.patch.object(QFileDialog, "getSaveFileName", return_value=not_saved),
            mock.patch.object(QMessageBox, "question", return_value=QMessageBox.StandardButton.Yes),
        ):  # "The last trained model is not saved. Discard it?" Yes
            dock._start.native.click()
            qtbot.waitUntil(lambda: not dock._runner.running, timeout=SECONDS)
        job = dock._job
        trained = job is not earlier and job.training is not None and dock._trained is job.training
        damaged = _changed(files) + _lost(cells, points, [1], refused=True)
        damaged += ["code ran"] * (folder / MARKER).exists()
        judge(seen, f"Start training from model {recipe}", trained, damaged)
