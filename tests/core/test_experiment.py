"""Whole experiments: OME-TIFF and OME-Zarr files of several positions, counted here and on a
local dask cluster, resumed after an interruption."""

import csv
import sys

import numpy as np
import pytest
import tifffile

from napari_twinvae.cli import main
from napari_twinvae.core.experiment import count_experiment, iter_count_experiment
from napari_twinvae.core.predict import CSV_COLUMNS, count
from napari_twinvae.core.sources import LazyFrames, open_positions
from tests._checkpoints import small_checkpoint

pytest.importorskip("bioio_ome_tiff")
pytest.importorskip("bioio_ome_zarr")

FRAMES, HEIGHT, WIDTH = 11, 48, 80
REGIONS = [(0, 0, 48, 40), (0, 40, 48, 80)]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """An OME-TIFF of two positions (phase contrast and GFP channels) and two one-position
    OME-Zarr stores, all time series; the frames as written, per file and position."""
    from bioio_ome_zarr.writers import OMEZarrWriter

    folder = tmp_path_factory.mktemp("experiment")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4096, (4, FRAMES, 2, HEIGHT, WIDTH), dtype=np.uint16)
    with tifffile.TiffWriter(folder / "exp.ome.tif", ome=True) as tif:
        for p in range(2):
            metadata = {"axes": "TCYX", "Channel": {"Name": ["Phase", "GFP"]}}
            tif.write(data[p], photometric="minisblack", metadata=metadata)
    for p in (2, 3):
        writer = OMEZarrWriter(
            str(folder / f"pos{p}.ome.zarr"),
            level_shapes=[(FRAMES, 1, 1, HEIGHT, WIDTH)],
            dtype=np.uint16,
            axes_names=["t", "c", "z", "y", "x"],
            axes_types=["time", "channel", "space", "space", "space"],
            chunk_shape=[(1, 1, 1, HEIGHT, WIDTH)],
        )
        writer.write_full_volume(data[p][:, :1, None])
    model = small_checkpoint(folder / "model.pt")
    return folder, data, model


def _expected(data, model, views=2):
    return [count(data[p, :, 0], model, REGIONS, 4, "cpu", views=views) for p in range(4)]


def _files(folder):
    return [folder / "exp.ome.tif", folder / "pos2.ome.zarr", folder / "pos3.ome.zarr"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_positions_and_channel_come_from_the_file(experiment):
    folder, data, _ = experiment
    positions = open_positions(folder / "exp.ome.tif")
    assert [p.name for p in positions] == ["Image:0", "Image:1"]
    assert [p.channel for p in positions] == [0, 0]  # "Phase", not "GFP"
    frames = positions[1].open()
    assert isinstance(frames, LazyFrames) and frames.shape == (FRAMES, HEIGHT, WIDTH)
    np.testing.assert_array_equal(frames[3:5], data[1, 3:5, 0])
    (gfp,) = open_positions(folder / "exp.ome.tif", positions=["1"], channel="GFP")
    np.testing.assert_array_equal(gfp.open()[2], data[1, 2, 1])
    with pytest.raises(ValueError, match="no position '7'"):
        open_positions(folder / "exp.ome.tif", positions=["7"])


def test_an_experiment_counts_as_the_single_process_path(experiment, tmp_path):
    folder, data, model = experiment
    out = tmp_path / "counts.csv"
    result = count_experiment(
        _files(folder), out, model, REGIONS, batch_size=4, device="cpu", views=2, chunk_frames=3
    )
    for got, want in zip(result.results, _expected(data, model), strict=True):
        np.testing.assert_array_equal(got.counts, want.counts)
        np.testing.assert_allclose(got.estimates, want.estimates, atol=1e-4)
    rows = _rows(out)
    assert rows[0] == ["file", "position", *CSV_COLUMNS]
    assert len(rows) == 1 + 4 * FRAMES * len(REGIONS)
    assert {r[1] for r in rows[1:]} == {"Image:0", "Image:1", ""}
    assert not (tmp_path / "counts.csv.parts").exists()


def test_an_interrupted_experiment_resumes_without_recounting(experiment, tmp_path, monkeypatch):
    folder, data, model = experiment
    out = tmp_path / "counts.csv"
    settings = {"batch_size": 4, "device": "cpu", "views": 2, "chunk_frames": 4}
    run = iter_count_experiment(_files(folder), out, model, REGIONS, **settings)
    for _ in range(4):  # the start and three chunks, then stopped
        next(run)
    run.close()
    assert not out.exists()
    assert len(list((tmp_path / "counts.csv.parts").glob("*.npy"))) == 3

    from napari_twinvae.core import experiment as module

    counted = []
    real = module.count_chunk
    monkeypatch.setattr(module, "count_chunk", lambda c, *a: counted.append(c) or real(c, *a))
    result = count_experiment(_files(folder), out, model, REGIONS, **settings)
    assert result.skipped_frames == FRAMES  # the first position: chunks of 4, 4 and 3 frames
    assert len(counted) == 12 - 3  # 4 positions x 3 chunks of up to 4 frames, less the 3 done
    for got, want in zip(result.results, _expected(data, model), strict=True):
        np.testing.assert_array_equal(got.counts, want.counts)


def test_other_settings_recount(experiment, tmp_path):
    folder, _, model = experiment
    out = tmp_path / "counts.csv"
    run = iter_count_experiment(
        _files(folder)[:1], out, model, REGIONS, batch_size=4, device="cpu", views=2
    )
    next(run), next(run)
    run.close()
    result = count_experiment(
        _files(folder)[:1], out, model, REGIONS, batch_size=4, device="cpu", views=1
    )
    assert result.skipped_frames == 0


def test_a_missing_reader_names_the_extra(experiment, monkeypatch, capsys):
    folder, _, model = experiment
    monkeypatch.setitem(sys.modules, "bioio", None)
    with pytest.raises(ValueError, match=r"napari-twinvae\[formats\]"):
        open_positions(folder / "exp.ome.tif")
    out = folder / "never.csv"
    assert main(["count", str(folder / "pos2.ome.zarr"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "napari-twinvae[formats]" in err[0]
    assert not out.exists()
    plain = folder / "plain.tif"  # a plain stack needs no extra
    tifffile.imwrite(plain, np.zeros((2, 32, 32), np.uint16), photometric="minisblack")
    assert main(["count", str(plain), "--out", str(out), "--model", str(model)]) == 0


def test_the_command_line_counts_one_position_and_channel(experiment, tmp_path, capsys):
    folder, data, model = experiment
    out = tmp_path / "one.csv"
    code = main(
        [
            "count",
            str(folder / "exp.ome.tif"),
            "--position",
            "Image:1",
            "--channel",
            "GFP",
            "--out",
            str(out),
            "--model",
            str(model),
            "--views",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    want = count(data[1, :, 1], model, None, 64, "cpu", views=1)
    rows = _rows(out)
    assert rows[0][0] == "position" and len(rows) == 1 + FRAMES
    assert [int(r[3]) for r in rows[1:]] == want.counts[:, 0].tolist()
    assert main(["count", str(folder / "exp.ome.tif"), "--channel", "DAPI", "--out", str(out)]) == 2
    assert "no channel 'DAPI'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


def test_a_local_cluster_counts_the_same(experiment, tmp_path, cluster):
    folder, data, model = experiment
    out = tmp_path / "counts.csv"
    result = count_experiment(
        _files(folder),
        out,
        model,
        REGIONS,
        batch_size=4,
        device="cpu",
        views=2,
        chunk_frames=4,
        client=cluster,
    )
    for got, want in zip(result.results, _expected(data, model), strict=True):
        np.testing.assert_array_equal(got.counts, want.counts)
    here = tmp_path / "here.csv"
    count_experiment(
        _files(folder), here, model, REGIONS, batch_size=4, device="cpu", views=2, chunk_frames=4
    )
    assert [r[:5] for r in _rows(out)] == [r[:5] for r in _rows(here)]
    address = cluster.scheduler.address
    files = [str(f) for f in _files(folder)]
    options = ["--model", str(model), "--views", "2", "--batch-size", "4"]
    assert main(["count", *files, "--out", str(tmp_path / "cli.csv"), *options]) == 0
    assert main(["count", *files, "--out", str(out), "--scheduler", address, *options]) == 0
    assert _rows(out) == _rows(tmp_path / "cli.csv")


def test_a_killed_worker_does_not_stop_the_experiment(experiment, tmp_path, cluster):
    import os
    import signal

    folder, data, model = experiment
    out = tmp_path / "counts.csv"
    run = iter_count_experiment(
        _files(folder),
        out,
        model,
        REGIONS,
        batch_size=4,
        device="cpu",
        views=2,
        chunk_frames=4,
        client=cluster,
    )
    next(run)  # submitted
    next(run)  # one chunk is in: the workers are busy
    pids = cluster.run(os.getpid)
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    while True:
        try:
            next(run)
        except StopIteration as done:
            result = done.value
            break
    for got, want in zip(result.results, _expected(data, model), strict=True):
        np.testing.assert_array_equal(got.counts, want.counts)


def test_the_command_line_counts_on_workers_as_here(experiment, tmp_path, capsys):
    folder, _, model = experiment
    common = ["--model", str(model), "--views", "1", "--batch-size", "8"]
    files = [str(f) for f in _files(folder)]
    assert main(["count", *files, "--out", str(tmp_path / "here.csv"), *common]) == 0
    capsys.readouterr()
    assert (
        main(["count", *files, "--out", str(tmp_path / "two.csv"), "--workers", "2", *common]) == 0
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4 positions" in err[0] and "2 workers" in err[0]
    assert _rows(tmp_path / "two.csv") == _rows(tmp_path / "here.csv")


def test_evaluate_reads_one_position(experiment, tmp_path, capsys):
    import json

    folder, data, model = experiment
    want = count(data[1, :, 0], model, None, 64, "cpu", views=1).counts[:, 0]
    labels = tmp_path / "labels.csv"
    labels.write_text("frame,count\n" + "".join(f"{t},{n}\n" for t, n in enumerate(want)))
    ome = str(folder / "exp.ome.tif")
    options = ["--labels", str(labels), "--model", str(model), "--views", "1"]
    assert main(["evaluate", ome, "--position", "1", *options]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["accuracy"] == 1.0
    assert main(["evaluate", ome, *options]) == 2
    assert "choose one with --position" in capsys.readouterr().err


def test_train_reads_one_position_and_channel(experiment, tmp_path, capsys):
    import json

    folder, data, model = experiment
    labels = tmp_path / "labels.csv"
    labels.write_text("frame,count\n0,1\n3,0\n6,2\n9,1\n")
    ome = str(folder / "exp.ome.tif")
    out = tmp_path / "trained.pt"
    options = ["--labels", str(labels), "--init", str(model), "--epochs", "1", "--device", "cpu"]
    args = ["train", ome, "--out", str(out), *options, "--synthetic-ratio", "0.5"]
    assert main([*args, "--position", "1", "--channel", "Phase"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["epochs"] == 1
    assert out.is_file()
    out.unlink()
    assert main(args) == 2
    assert "choose one with --position" in capsys.readouterr().err
    assert main([*args, "--position", "0", "--channel", "DAPI"]) == 2
    assert "DAPI" in capsys.readouterr().err
    assert not out.exists()
