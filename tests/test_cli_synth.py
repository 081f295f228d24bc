import csv
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_twinvae.cli import main


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_synth_writes_images_counts_and_points(tmp_path):
    assert main(["synth", "--preset", "bf", "--n", "6", "--seed", "4", "--out", str(tmp_path)]) == 0
    images = tifffile.imread(tmp_path / "images.tif")
    assert images.shape == (6, 128, 128) and images.dtype == np.float32
    counts = _read_csv(tmp_path / "counts.csv")
    assert counts[0] == ["frame", "count"] and len(counts) == 7
    per_frame = {int(f): int(c) for f, c in counts[1:]}
    points = _read_csv(tmp_path / "points.csv")
    assert points[0] == ["index", "axis-0", "axis-1", "axis-2"]
    frames = [int(row[1]) for row in points[1:]]
    assert [frames.count(f) for f in range(6)] == [per_frame[f] for f in range(6)]
    assert [int(row[0]) for row in points[1:]] == list(range(len(points) - 1))


def test_synth_says_what_it_wrote_on_stderr(tmp_path, capsys):
    assert main(["synth", "--preset", "bf", "--n", "6", "--seed", "4", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    counts = [int(c) for _, c in _read_csv(tmp_path / "counts.csv")[1:]]
    assert captured.out == ""
    assert captured.err.startswith(
        f"napari-twinvae synth: wrote 6 images (bf, seed 4; {min(counts)}-{max(counts)} cells "
        f"per image, {sum(counts)} in all) to {tmp_path}: images.tif, counts.csv, points.csv in "
    )
    assert captured.err.endswith(" s\n") and len(captured.err.splitlines()) == 1


def test_same_seed_gives_byte_identical_files(tmp_path):
    for name in ("a", "b", "c"):
        seed = "9" if name != "c" else "10"
        main(["synth", "--n", "4", "--seed", seed, "--out", str(tmp_path / name)])
    for file in ("images.tif", "counts.csv", "points.csv"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert (tmp_path / "a" / "images.tif").read_bytes() != (
        tmp_path / "c" / "images.tif"
    ).read_bytes()


def test_background_file_is_used(tmp_path):
    tifffile.imwrite(tmp_path / "bg.tif", np.zeros((64, 64), dtype=np.uint8))
    main(["synth", "--n", "3", "--background", str(tmp_path / "bg.tif"), "--out", str(tmp_path)])
    images = tifffile.imread(tmp_path / "images.tif")
    assert np.median(images) == 0.0  # away from the cells, the dark chamber


def test_points_csv_opens_as_a_napari_points_layer(tmp_path):
    from napari_builtins.io import csv_to_layer_data  # napari's own CSV reader

    main(["synth", "--n", "3", "--seed", "1", "--out", str(tmp_path)])
    data, _, layer_type = csv_to_layer_data(str(tmp_path / "points.csv"))
    assert layer_type == "points" and data.shape[1] == 3
    counts = np.array([int(c) for _, c in _read_csv(tmp_path / "counts.csv")[1:]])
    np.testing.assert_array_equal(np.bincount(data[:, 0].astype(int), minlength=3), counts)


def test_series_writes_the_sample_time_series(tmp_path):
    from napari_twinvae.core.synthetic import synthetic_timeseries

    assert main(["synth", "--series", "--preset", "bf", "--seed", "3", "--out", str(tmp_path)]) == 0
    sample = synthetic_timeseries("bf", 60, seed=3)
    assert np.array_equal(tifffile.imread(tmp_path / "images.tif"), sample.images)
    with open(tmp_path / "counts.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["frame", "count"] and [int(c) for _, c in rows[1:]] == sample.counts.tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "-3"], "at least 1"),
        (["--n", "0"], "at least 1"),
        ([], "--n is needed"),
        (["--series", "--n", "0"], "at least 1"),
        (["--series", "--background", "{tmp}/stack.tif"], "leave out --background"),
        (["--n", "2", "--preset", "dic"], "unknown preset"),
        (["--n", "2", "--background", "{tmp}/missing.tif"], "no such file"),
        (["--n", "2", "--background", "{tmp}/junk.tif"], "not a readable"),
        (["--n", "2", "--background", "{tmp}/stack.tif"], "2D"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "junk.tif").write_bytes(b"not an image")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((2, 8, 8), dtype=np.uint8))
    argv = [a.format(tmp=tmp_path) for a in args]
    out = subprocess.run(
        [sys.executable, "-m", "napari_twinvae", "synth", *argv, "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "o").exists()
