"""Labels from clicked points: zero-labeled frames, chambers, files."""

import numpy as np
import pytest

from napari_twinvae.core.labels import (
    annotation_of,
    labels_from_points,
    labels_from_table,
    load_annotation,
    merge_annotation,
    merge_fitting,
    read_labels,
    save_annotation,
)

POINTS = np.array([[0, 10, 10], [0, 20, 20], [2, 30, 30], [2, 100, 100], [2, 110, 5]])


def test_counts_per_frame_and_zero_labeled_frames():
    labels = labels_from_points(POINTS, marked=[1], n_frames=4)
    assert labels.counts[:, 0].tolist() == [2, 0, 3, 0]
    assert labels.labeled[:, 0].tolist() == [True, True, True, False]


def test_counts_per_chamber():
    labels = labels_from_points(POINTS, n_frames=3, regions=[(0, 0, 64, 64), (64, 64, 128, 128)])
    assert labels.counts.tolist() == [[2, 0], [0, 0], [1, 1]]
    assert labels.labeled[:, 1].tolist() == [True, False, True]


def test_points_beyond_the_stack_and_crowded_chambers_are_refused():
    with pytest.raises(ValueError, match="only 2 frames"):
        labels_from_points(POINTS, n_frames=2)
    crowd = np.column_stack([np.zeros(31), np.arange(31), np.arange(31)])
    with pytest.raises(ValueError, match="0 to 30"):
        labels_from_points(crowd)


def test_save_and_reload_keeps_points_and_empty_labeled_frames(tmp_path):
    path = tmp_path / "labels.csv"
    save_annotation(path, POINTS, marked=[1, 5])
    annotation = load_annotation(path)
    np.testing.assert_allclose(annotation.points, POINTS)
    assert annotation.labeled_frames.tolist() == [0, 1, 2, 5]
    assert read_labels(path) == {0: 2, 1: 0, 2: 3, 5: 0}


def test_frame_count_csv_and_its_errors(tmp_path):
    good = tmp_path / "counts.csv"
    good.write_text("frame,count\n0,3\n4,0\n")
    assert read_labels(good) == {0: 3, 4: 0}
    numbered = tmp_path / "numbered.csv"
    numbered.write_text("index,count,source_file\n0,3,a.tif\n1,0,a.tif\n")
    assert read_labels(numbered) == {0: 3, 1: 0}
    labels = labels_from_table(read_labels(good), 5)
    assert labels.labeled[:, 0].tolist() == [True, False, False, False, True]
    with pytest.raises(ValueError, match="frames 0..2"):
        labels_from_table({4: 0}, 3)
    cases = {
        "frame,count\n0,31\n": "0..30",
        "frame,count\n0,-1\n": "0..30",
        "frame,count\n": "no labels",
        "": "empty",
        "a,b\n1,2\n": "expected columns",
        "frame,count\n0,x\n": "numbers",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_labels(bad)


def test_points_outside_the_image_or_between_frames_are_refused():
    # found on a new-user walk: points outside the image counted as cells
    inside = labels_from_points(POINTS, n_frames=3, frame_shape=(128, 128))
    assert inside.counts[:, 0].tolist() == [2, 0, 3]
    off = np.vstack([POINTS, [[1, 130, 5]]])
    with pytest.raises(ValueError, match=r"1 point\(s\) lie outside the 128x128 image"):
        labels_from_points(off, n_frames=3, frame_shape=(128, 128))
    edge = np.array([[0, -0.5, 127.4]])  # pixel centres are whole numbers: -0.5 is the edge
    assert labels_from_points(edge, frame_shape=(128, 128)).counts.tolist() == [[1]]
    with pytest.raises(ValueError, match="between two frames"):
        labels_from_points(np.array([[1.5, 3, 3]]), frame_shape=(128, 128))


def test_one_reader_for_points_tables_and_their_checks(tmp_path):
    table = tmp_path / "counts.csv"
    table.write_text("\ufeffframe,count\r\n0,3\r\n4,0\r\n")  # Excel's BOM and line ends
    annotation = load_annotation(table)
    assert annotation.table == {0: 3, 4: 0} and annotation.labeled_frames.tolist() == [0, 4]
    assert annotation.labels(5).counts[:, 0].tolist() == [3, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="frames 0..2"):
        annotation.labels(3)
    with pytest.raises(ValueError, match="counts whole frames"):
        annotation.labels(5, regions=[(0, 0, 10, 10), (10, 10, 20, 20)])
    points = tmp_path / "cells.csv"
    save_annotation(points, POINTS, marked=[1])
    annotation = load_annotation(points)
    assert annotation.table is None and annotation.frame_counts() == {0: 2, 1: 0, 2: 3}
    with pytest.raises(ValueError, match="outside the 64x64 image"):
        annotation.labels(3, frame_shape=(64, 64))


def test_a_companion_that_disagrees_with_its_points_is_refused(tmp_path):
    points = tmp_path / "cells.csv"
    save_annotation(points, POINTS, marked=[1])
    (tmp_path / "cells.frames.csv").write_text("frame,count\n0,2\n1,0\n2,3\n")
    load_annotation(points)
    (tmp_path / "cells.frames.csv").write_text("frame,count\n0,2\n1,0\n2,0\n")  # marked empty
    with pytest.raises(ValueError, match="counts 0 cells on frame 2, but cells.csv holds 3"):
        load_annotation(points)


def test_a_companion_that_is_not_a_frame_count_table_is_refused(tmp_path):
    # found by fuzzing Load labels in the Label & train dock: a KeyError traceback
    points = tmp_path / "cells.csv"
    save_annotation(points, POINTS, marked=[1])
    (tmp_path / "cells.frames.csv").write_text("index,axis-0,axis-1,axis-2\n0,0,0.00,0.00\n")
    with pytest.raises(ValueError, match="must have the columns frame,count, not index,axis-0"):
        load_annotation(points)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("frame,count\n0,inf\n", "whole number in 0..30"),
        ("frame,count\n0,nan\n", "whole number in 0..30"),
        ("frame,count\n1.5,2\n", "frame 1.5 is not a whole number"),
        ("frame,count\ninf,2\n", "not a whole number"),
        ("index,axis-0,axis-x,axis-1,axis-2\n0,1,2,3,4\n", None),
        ("index,axis-0,axis-1,axis-2\n", "holds no labels"),
        ("index,axis-0,axis-1,axis-2\n0,1,2,3,4,5\n", None),
    ],
)
def test_odd_label_files_read_or_refuse_with_one_reason(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    if message is None:
        assert load_annotation(path).labeled_frames.tolist() == [1]
    else:
        with pytest.raises(ValueError, match=message):
            load_annotation(path)


def test_a_merge_keeps_what_was_clicked_and_refuses_cells_against_no_cells_marks():
    current = annotation_of(POINTS, marked=[1])
    loaded = annotation_of(np.array([[0, 10, 10], [3, 40, 40]]), marked=[4])
    new, merged = merge_annotation(current, loaded)
    np.testing.assert_array_equal(new, [[3, 40, 40]])  # (0, 10, 10) is already there
    assert merged.labeled_frames.tolist() == [0, 1, 2, 3, 4]
    assert len(merged.points) == len(POINTS) + 1
    for clash in ([[1, 5, 5]], []):  # cells on a frame marked empty, and the other way round
        marked = [] if clash else [0]
        other = annotation_of(np.array(clash, dtype=float).reshape(-1, 3), marked=marked)
        with pytest.raises(ValueError, match="marked 'no cells'"):
            merge_annotation(current, other)


def test_a_file_is_merged_only_when_it_and_the_merge_fit():
    current = annotation_of(POINTS, marked=[1])  # two cells on frame 0, frame 1 marked empty
    loaded = annotation_of(np.array([[0, 10, 10], [3, 40, 40]]), marked=[4])
    assert loaded.empty_frames() == [4] and current.empty_frames() == [1]
    new = merge_fitting(current, loaded, 5, (128, 128))
    np.testing.assert_array_equal(new, [[3, 40, 40]])  # only what is not clicked yet
    refusals = [
        (loaded, 4, "f.csv does not fit movie: labels name frame 4, but the stack has only 4"),
        (
            annotation_of(np.array([[1.0, 5, 5]])),
            5,
            "f.csv does not fit: frame.*nothing was merged",
        ),
        (
            annotation_of(np.array([[0.0, 30 + i, 5] for i in range(29)])),
            5,
            "f.csv does not fit with the cells already clicked: a labeled chamber holds 31",
        ),
    ]
    for file, frames, message in refusals:
        with pytest.raises(ValueError, match=message):
            merge_fitting(current, file, frames, (128, 128), source="f.csv", target="movie")
