"""``napari-twinvae count`` and ``napari-twinvae evaluate``."""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from napari_twinvae.cli import main
from napari_twinvae.core.io import load_checkpoint, save_checkpoint
from napari_twinvae.core.metrics import count_metrics
from napari_twinvae.core.predict import count
from tests._checkpoints import density_checkpoint, small_checkpoint, small_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("count")
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4096, (6, 100, 140), dtype=np.uint16)
    tifffile.imwrite(folder / "a.tif", stack, photometric="minisblack")
    tifffile.imwrite(folder / "b.tif", stack[:4, :, ::-1].copy(), photometric="minisblack")
    model = small_checkpoint(folder / "model.pt")
    rows = ["index,shape-type,vertex-index,axis-0,axis-1"]
    for i, (y0, x0, y1, x1) in enumerate([(0, 0, 100, 70), (0, 70, 100, 140)]):
        for v, (y, x) in enumerate([(y0, x0), (y0, x1), (y1, x1), (y1, x0)]):
            rows.append(f"{i},rectangle,{v},{y},{x}")
    (folder / "rois.csv").write_text("\n".join(rows) + "\n")
    return folder, stack, model


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_count_writes_frame_chamber_count_estimate(files, tmp_path, capsys, caplog):
    folder, stack, model = files
    out = tmp_path / "counts.csv"
    argv = ["count", str(folder / "a.tif"), "--out", str(out), "--model", str(model)]
    assert main([*argv, "--rois", str(folder / "rois.csv"), "--batch-size", "3"]) == 0
    rows = _rows(out)
    header = ["frame", "chamber", "count", "estimate", "flag", "uncertainty", "series_flag"]
    assert rows[0] == header and len(rows) == 1 + 6 * 2
    expected = count(stack, load_checkpoint(model), [(0, 0, 100, 70), (0, 70, 100, 140)])
    assert [tuple(int(v) for v in row[:3]) for row in rows[1:]] == [
        (f, c, n) for f, c, n, _, _ in expected.rows()
    ]
    estimates = np.array([float(row[3]) for row in rows[1:]])
    np.testing.assert_allclose(estimates, expected.estimates.reshape(-1), atol=1e-4)
    uncertainty = np.array([float(row[5]) for row in rows[1:]])
    np.testing.assert_allclose(uncertainty, expected.uncertainty.reshape(-1), atol=1e-3)
    assert [row[6] for row in rows[1:]] == expected.series_flags.reshape(-1).tolist()
    doubtful = int((expected.uncertainty >= 0.5).sum())
    broken = int((expected.series_flags != "").sum())
    said = (
        f"check first: {doubtful} counts more likely wrong than right (uncertainty >= 0.5) and "
        f"{broken} that break the growth series (series_flag)"
    )
    assert doubtful + broken > 0 and said in caplog.text
    # no progress bar when stderr is not a terminal: only the line that says what was done
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    low, high = expected.counts.min(), expected.counts.max()
    range_ = f"{low}-{high} cells" if low != high else f"{low} cell"
    assert re.fullmatch(
        rf"napari-twinvae count: counted {re.escape(str(folder / 'a.tif'))} with "
        rf"{re.escape(str(model))}: 6 frames x 2 chambers, {range_}.* per chamber; wrote "
        rf"{re.escape(str(out))} in \d+\.\d s",
        err[0],
    )


def test_views_choose_how_many_orientations_are_averaged(files, tmp_path):
    folder, stack, model = files
    checkpoint = load_checkpoint(model)
    for views in (1, 8):
        out = tmp_path / f"views{views}.csv"
        argv = ["count", str(folder / "a.tif"), "--out", str(out), "--model", str(model)]
        assert main([*argv, "--views", str(views)]) == 0
        estimates = np.array([float(row[3]) for row in _rows(out)[1:]])
        expected = count(stack, checkpoint, views=views).estimates.reshape(-1)
        np.testing.assert_allclose(estimates, expected, atol=1e-4)
    one, eight = (
        np.array([float(r[3]) for r in _rows(tmp_path / f"views{v}.csv")[1:]]) for v in (1, 8)
    )
    assert not np.allclose(one, eight, atol=1e-4)


def test_float32_counts_as_the_api_does_without_mixed_precision(files, tmp_path):
    folder, stack, model = files
    out = tmp_path / "exact.csv"
    argv = ["count", str(folder / "a.tif"), "--out", str(out), "--model", str(model)]
    assert main([*argv, "--float32", "--views", "1"]) == 0
    estimates = np.array([float(row[3]) for row in _rows(out)[1:]])
    exact = count(stack, load_checkpoint(model), views=1, mixed_precision=False).estimates
    np.testing.assert_allclose(estimates, exact.reshape(-1), atol=1e-4)  # the CSV's 4 decimals


def test_count_without_model_uses_the_default_model(files, tmp_path, monkeypatch):
    folder, _, model = files
    monkeypatch.setattr("napari_twinvae.core.io.default_model_path", lambda: model)
    image = str(folder / "a.tif")
    assert main(["count", image, "--out", str(tmp_path / "default.csv")]) == 0
    assert main(["count", image, "--out", str(tmp_path / "file.csv"), "--model", str(model)]) == 0
    assert _rows(tmp_path / "default.csv") == _rows(tmp_path / "file.csv")


def test_several_files_get_a_file_column(files, tmp_path):
    folder, _, model = files
    out = tmp_path / "counts.csv"
    images = [str(folder / "a.tif"), str(folder / "b.tif")]
    assert main(["count", *images, "--out", str(out), "--model", str(model)]) == 0
    rows = _rows(out)
    assert rows[0] == [
        "file", "frame", "chamber", "count", "estimate", "flag", "uncertainty", "series_flag"
    ]  # fmt: skip
    assert [r[0] for r in rows[1:]] == [images[0]] * 6 + [images[1]] * 4


def test_whole_frames_are_resized_with_a_warning_and_a_progress_bar_on_terminals(
    files, tmp_path, capsys, caplog, monkeypatch
):
    folder, _, model = files
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    argv = ["count", str(folder / "a.tif"), "--out", str(tmp_path / "c.csv"), "--model", str(model)]
    assert main(argv) == 0
    assert "resized to 128x128" in caplog.text and "--rois" in caplog.text
    err = capsys.readouterr().err
    assert "\rcounting [" in err and "6/6 frames" in err


def test_evaluate_prints_json_metrics_last(files, tmp_path, capsys):
    folder, stack, model = files
    labels = tmp_path / "labels.csv"
    labels.write_text("frame,count\n0,3\n2,0\n5,4\n")
    argv = ["evaluate", str(folder / "a.tif"), "--labels", str(labels), "--model", str(model)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert re.fullmatch(
        rf"napari-twinvae evaluate: counted the 3 labeled frames of "
        rf"{re.escape(str(folder / 'a.tif'))} against {re.escape(str(labels))} with "
        rf"{re.escape(str(model))} in \d+\.\d s",
        captured.err.strip(),
    )
    assert set(metrics) == {"n", "accuracy", "mae", "mre", "bias"}
    estimates = count(stack, load_checkpoint(model)).estimates[[0, 2, 5], 0]
    assert metrics == pytest.approx(count_metrics(estimates, [3, 0, 4]))


def test_evaluate_reads_napari_points_and_reports_undefined_mre_as_null(files, tmp_path, capsys):
    folder, _, model = files
    points = tmp_path / "points.csv"
    points.write_text("index,axis-0,axis-1,axis-2\n0,1,10,10\n1,1,20,20\n2,4,5,5\n")
    argv = ["evaluate", str(folder / "a.tif"), "--labels", str(points), "--model", str(model)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 2
    zeros = tmp_path / "zeros.csv"
    zeros.write_text("frame,count\n0,0\n")
    assert (
        main(["evaluate", str(folder / "a.tif"), "--labels", str(zeros), "--model", str(model)])
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mre"] is None


def _shapes_csv(path, *rectangles):
    rows = ["index,shape-type,vertex-index,axis-0,axis-1"]
    for i, (y0, x0, y1, x1) in enumerate(rectangles):
        for v, (y, x) in enumerate([(y0, x0), (y0, x1), (y1, x1), (y1, x0)]):
            rows.append(f"{i},rectangle,{v},{y},{x}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_chamber_mostly_outside_the_frame_is_refused_a_slight_overhang_clipped(
    files, tmp_path, capsys, caplog
):
    # found on a new-user walk: drawn at 100-300 on a 128-px frame, the 28x28 corner inside was
    # blown up and counted as 48 cells, exit 0
    _, _, model = files
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 128, 128), np.uint8))
    out = tmp_path / "c.csv"
    argv = ["count", str(tmp_path / "s.tif"), "--out", str(out), "--model", str(model)]
    far = _shapes_csv(tmp_path / "far.csv", (100, 100, 300, 300))
    assert main([*argv, "--rois", str(far)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "98% outside the 128x128 frame" in err[0], err
    assert not out.exists()
    near = _shapes_csv(tmp_path / "near.csv", (-3, 0, 128, 128))
    assert main([*argv, "--rois", str(near)]) == 0
    assert "chamber 0 (-3:128, 0:128) reaches past" in caplog.text
    assert len(_rows(out)) == 1 + 2


def test_counts_above_30_are_flagged_in_the_csv_and_said(files, tmp_path, capsys, caplog):
    # found on a new-user walk: 36 cells counted on a noise image, never flagged
    folder, _, _ = files
    crowded = small_model()
    with torch.no_grad():
        crowded.regressor[-1].bias.fill_(48.0)
    model = save_checkpoint(tmp_path / "crowded.pt", crowded)
    out = tmp_path / "c.csv"
    assert main(["count", str(folder / "a.tif"), "--out", str(out), "--model", str(model)]) == 0
    rows = _rows(out)
    assert rows[0][4] == "flag"
    flagged = [row for row in rows[1:] if row[4] == "above 30"]
    assert flagged and all(int(row[2]) > 30 for row in flagged)
    assert all(row[4] == "" for row in rows[1:] if int(row[2]) <= 30)
    assert f"{len(flagged)} of 6 counts lie outside 0-30" in caplog.text


def test_evaluate_refuses_points_outside_the_image(files, tmp_path, capsys):
    # found on a new-user walk: a point outside the image counted as a cell
    folder, _, model = files  # frames of 100x140
    points = tmp_path / "points.csv"
    points.write_text("index,axis-0,axis-1,axis-2\n0,1,10,10\n1,1,20,150\n")
    argv = ["evaluate", str(folder / "a.tif"), "--labels", str(points), "--model", str(model)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 point(s) lie outside the 100x140 image" in err[0], err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["count", "{d}/missing.tif", "--out", "{t}/c.csv", "--model", "{m}"], "no such file"),
        (["count", "{d}/junk.tif", "--out", "{t}/c.csv", "--model", "{m}"], "not a readable"),
        (["count", "{d}/rgb.tif", "--out", "{t}/c.csv", "--model", "{m}"], "RGB"),
        (["count", "{d}/4d.tif", "--out", "{t}/c.csv", "--model", "{m}"], "4D"),
        (["count", "{d}/nan.tif", "--out", "{t}/c.csv", "--model", "{m}"], "frame 1: .*NaN"),
        (["count", "{d}/a.tif", "--out", "{t}/c.csv", "--model", "{d}/nope.pt"], "no such"),
        (
            ["count", "{d}/a.tif", "--out", "{t}/c.csv", "--model", "{d}/junk.tif"],
            "refused|checkpoint",
        ),
        (["count", "{d}/a.tif", "--out", "{t}/c.csv", "--model", "default"], "no default model"),
        (["count", "{d}/a.tif", "--out", "{t}", "--model", "{m}"], "is a folder"),
        (
            ["count", "{d}/a.tif", "--out", "{t}/c.csv", "--model", "{m}", "--batch-size", "0"],
            "at least 1",
        ),
        (
            ["count", "{d}/a.tif", "--out", "{t}/c.csv", "--model", "{m}", "--device", "tpu"],
            "unknown device",
        ),
        (
            ["count", "{d}/a.tif", "--out", "{t}/c.csv", "--model", "{m}", "--views", "3"],
            "--views must be one of 1, 2, 4, 8, got 3",
        ),
        (
            ["count", "{d}/a.tif", "--out", "{t}/c.csv", "--model", "{m}", "--rois", "{d}/far.csv"],
            "outside",
        ),
        (["evaluate", "{d}/a.tif", "--labels", "{d}/late.csv", "--model", "{m}"], "frame 9"),
        (["evaluate", "{d}/a.tif", "--labels", "{d}/junk.tif", "--model", "{m}"], "labels|CSV"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, monkeypatch, argv, message):
    folder, _, model = files
    (folder / "junk.tif").write_bytes(b"not an image")
    tifffile.imwrite(folder / "rgb.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(
        folder / "4d.tif", np.zeros((2, 3, 64, 64), np.uint8), photometric="minisblack"
    )
    nan = np.zeros((3, 128, 128), np.float32)
    nan[1, 5, 5] = np.nan
    tifffile.imwrite(folder / "nan.tif", nan, photometric="minisblack")
    (folder / "far.csv").write_text(
        "index,shape-type,vertex-index,axis-0,axis-1\n"
        + "".join(f"0,rectangle,{v},{y},{x}\n" for v, (y, x) in enumerate([(500, 500), (600, 600)]))
    )
    (folder / "late.csv").write_text("frame,count\n9,2\n")
    monkeypatch.setattr(
        "napari_twinvae.core.io.default_model_path", lambda: folder / "no-default.pt"
    )
    args = [a.format(d=folder, t=tmp_path, m=model) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-twinvae: error: "), err
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "c.csv").exists()


def test_bad_input_in_a_real_process_is_one_line(files, tmp_path):
    folder, _, model = files
    out = subprocess.run(
        [sys.executable, "-m", "napari_twinvae", "count", str(folder / "missing.tif")]
        + ["--out", str(tmp_path / "c.csv"), "--model", str(model)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "no such file" in out.stderr


def test_points_writes_the_predicted_cells_as_napari_points(files, tmp_path):
    folder, stack, _ = files
    model = density_checkpoint(tmp_path / "density.pt")
    out, cells = tmp_path / "counts.csv", tmp_path / "cells.csv"
    boxes = [(0, 0, 100, 70), (0, 70, 100, 140)]
    argv = ["count", str(folder / "a.tif"), "--out", str(out), "--model", str(model)]
    assert main([*argv, "--rois", str(folder / "rois.csv"), "--points", str(cells)]) == 0
    rows = _rows(cells)
    expected = count(stack, load_checkpoint(model), boxes, cells=True).cells
    assert rows[0] == ["index", "axis-0", "axis-1", "axis-2"] and len(rows) == 1 + len(expected)
    assert len(expected) > 0
    points = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    np.testing.assert_allclose(points, expected[:, [0, 2, 3]], atol=0.01)
    for frame, chamber, y, x in expected:
        top, left, bottom, right = boxes[int(chamber)]
        assert 0 <= frame < 6 and top - 0.5 <= y < bottom - 0.5 and left - 0.5 <= x < right - 0.5


def test_points_need_a_density_head_and_one_stack(files, tmp_path, capsys):
    folder, _, model = files
    cells = tmp_path / "cells.csv"
    cells.write_text("older cells\n")
    options = ["--out", str(tmp_path / "c.csv"), "--points", str(cells), "--model", str(model)]
    assert main(["count", str(folder / "a.tif"), *options]) == 2
    assert "regressor" in capsys.readouterr().err and cells.read_text() == "older cells\n"
    assert main(["count", str(folder / "a.tif"), str(folder / "b.tif"), *options]) == 2
    assert "one image stack" in capsys.readouterr().err
