"""Chamber regions, input checks and the area resize to 128x128."""

import numpy as np
import pytest

from napari_twinvae.core.chambers import (
    area_matrix,
    as_frames,
    chamber_crops,
    check_regions,
    read_regions_csv,
    regions_from_shapes,
    resized_whole_frame,
)
from napari_twinvae.core.intensity import Normalization


def test_as_frames_accepts_2d_and_stacks_and_refuses_the_rest():
    assert as_frames(np.zeros((5, 6))).shape == (1, 5, 6)
    assert as_frames(np.zeros((2, 5, 6), np.uint16)).shape == (2, 5, 6)
    with pytest.raises(ValueError, match="RGB"):
        as_frames(np.zeros((64, 64, 3)))
    with pytest.raises(ValueError, match="4D"):
        as_frames(np.zeros((2, 3, 64, 64)))
    with pytest.raises(ValueError, match="empty"):
        as_frames(np.zeros((0, 64, 64)))
    with pytest.raises(ValueError, match="numbers"):
        as_frames(np.array([["a"]]))


def test_area_matrix_averages_blocks_when_shrinking_and_keeps_mass():
    a = area_matrix(256, 128)
    line = np.arange(256, dtype=np.float32)
    np.testing.assert_allclose(a @ line, line.reshape(128, 2).mean(axis=1), rtol=1e-6)
    b = area_matrix(100, 128)
    np.testing.assert_allclose(b.sum(axis=1), 1.0, rtol=1e-6)
    assert (b >= 0).all()


def test_crops_resize_each_chamber_and_normalise():
    frames = np.zeros((3, 200, 300), dtype=np.uint16)
    frames[:, 10:74, 20:84] = 1000  # chamber 0: a 64x64 bright square
    crops = chamber_crops(
        frames, [(10, 20, 74, 84), (100, 100, 200, 300)], Normalization("fixed", 0, 1000)
    )
    assert crops.shape == (3, 2, 128, 128) and crops.dtype == np.float32
    np.testing.assert_allclose(crops[:, 0], 1.0)
    np.testing.assert_allclose(crops[:, 1], 0.0)


def test_whole_frame_is_one_chamber_and_the_user_is_told():
    frames = np.random.default_rng(0).random((2, 256, 256)).astype(np.float32)
    assert chamber_crops(frames).shape == (2, 1, 128, 128)
    assert resized_whole_frame(frames.shape, None)
    assert not resized_whole_frame((4, 128, 128), None)
    assert not resized_whole_frame(frames.shape, [(0, 0, 128, 128)])


def test_nan_frames_are_refused():
    frames = np.zeros((2, 128, 128), np.float32)
    frames[1, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        chamber_crops(frames)


def test_regions_are_clipped_or_refused():
    assert check_regions([(-2, -1, 41, 42)], (40, 40)) == [(0, 0, 40, 40)]
    assert check_regions(None, (40, 50)) == [(0, 0, 40, 50)]
    with pytest.raises(ValueError, match="chamber 1"):
        check_regions([(0, 0, 20, 20), (100, 100, 150, 150)], (40, 40))


def test_regions_from_napari_shapes_and_their_csv(tmp_path):
    rect = np.array([[5, 10.2, 20], [5, 10.2, 60], [5, 50, 60], [5, 50, 20]])
    assert regions_from_shapes([rect], ["rectangle"]) == [(10, 20, 50, 60)]
    with pytest.raises(ValueError, match="rectangles"):
        regions_from_shapes([rect], ["ellipse"])
    path = tmp_path / "chambers.csv"
    rows = ["index,shape-type,vertex-index,axis-0,axis-1"]
    for i, (y0, x0, y1, x1) in enumerate([(0, 0, 64, 64), (64, 0, 128, 64)]):
        for v, (y, x) in enumerate([(y0, x0), (y0, x1), (y1, x1), (y1, x0)]):
            rows.append(f"{i},rectangle,{v},{y},{x}")
    path.write_text("\n".join(rows) + "\n")
    assert read_regions_csv(path) == [(0, 0, 64, 64), (64, 0, 128, 64)]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="Shapes CSV"):
        read_regions_csv(tmp_path / "bad.csv")


def test_a_rotated_rectangle_is_refused_not_replaced_by_its_bounding_box():
    # napari stores a rectangle rotated by 30 degrees as its four turned corners
    centre, half = np.array([64.0, 64.0]), np.array([[-20, -30], [-20, 30], [20, 30], [20, -30]])
    turn = np.radians(30)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    corners = centre + half @ rotation.T
    with pytest.raises(ValueError, match="rotated by 30 degrees"):
        regions_from_shapes([corners], ["rectangle"])
    # a corner dragged off by a fraction of a pixel is still upright
    upright = np.array([[10, 20], [10.3, 60], [50, 60], [50, 20]], dtype=float)
    assert regions_from_shapes([upright], ["rectangle"]) == [(10, 20, 50, 60)]


def test_chunked_crops_report_progress_and_equal_the_whole():
    from napari_twinvae.core.chambers import iter_chamber_crops
    from napari_twinvae.core.jobs import drain

    frames = np.random.default_rng(1).random((5, 200, 160)).astype(np.float32)
    regions = [(0, 0, 100, 80), (100, 80, 200, 160)]
    job = iter_chamber_crops(frames, regions, chunk=2)
    assert [next(job) for _ in range(3)] == [(2, 5), (4, 5), (5, 5)]
    np.testing.assert_array_equal(
        drain(iter_chamber_crops(frames, regions, chunk=2)), chamber_crops(frames, regions)
    )


def test_a_rectangle_mostly_outside_the_frame_is_refused_not_blown_up():
    # drawn at 100-300 on a 128-px frame: only its 28x28 corner lies inside
    with pytest.raises(ValueError, match=r"chamber 0 .*98% outside the 128x128 frame"):
        check_regions([(100, 100, 300, 300)], (128, 128))
    with pytest.raises(ValueError, match="chamber 1"):
        check_regions([(0, 0, 64, 64), (0, 60, 64, 100)], (64, 80))  # 20 of 40 px outside


def test_a_rectangle_a_little_past_the_edge_is_clipped_with_a_note():
    from napari_twinvae.core.chambers import fit_regions

    regions, notes = fit_regions([(-5, 10, 60, 70), (0, 0, 64, 64)], (64, 80))
    assert regions == [(0, 10, 60, 70), (0, 0, 64, 64)]
    assert len(notes) == 1 and notes[0].startswith("chamber 0 (-5:60, 10:70) reaches past")
    assert fit_regions(None, (64, 80)) == ([(0, 0, 64, 80)], [])
