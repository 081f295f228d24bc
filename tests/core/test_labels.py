"""Labels from clicked points: zero-labeled frames, chambers, files."""

import numpy as np
import pytest

from napari_twinvae.core.labels import (
    labels_from_points,
    labels_from_table,
    load_annotation,
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
