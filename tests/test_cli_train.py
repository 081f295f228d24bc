import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from napari_twinvae.cli import main
from napari_twinvae.core.io import load_checkpoint, save_checkpoint
from napari_twinvae.core.model import TwinVAE
from napari_twinvae.core.synthetic import SynthConfig, generate
from tests._checkpoints import TINY


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 12-frame stack, its counts as frame,count and as Points CSV, and a small start model."""
    folder = tmp_path_factory.mktemp("train")
    counts = np.random.default_rng(0).integers(2, 9, 12)
    batch = generate(12, SynthConfig(), rng=0, counts=counts)
    tifffile.imwrite(folder / "stack.tif", (batch.images * 255).astype(np.uint8))
    rows = ["frame,count", *(f"{t},{c}" for t, c in enumerate(counts[:8]))]
    (folder / "counts.csv").write_text("\n".join(rows) + "\n")
    points = ["index,axis-0,axis-1,axis-2"]
    for i, (t, y, x) in enumerate(batch.centres):
        if t < 8:
            points.append(f"{i},{int(t)},{y:.2f},{x:.2f}")
    (folder / "points.csv").write_text("\n".join(points) + "\n")
    torch.manual_seed(0)
    save_checkpoint(folder / "start.pt", TwinVAE(TINY))
    return folder


def _train(files, tmp_path, *extra):
    return [
        "train",
        str(files / "stack.tif"),
        "--labels",
        str(files / "counts.csv"),
        "--out",
        str(tmp_path / "model.pt"),
        "--init",
        str(files / "start.pt"),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.usefixtures("hold_out_few")
def test_train_writes_a_model_and_ends_with_json(files, tmp_path, capsys):
    args = _train(files, tmp_path, "--freeze", "core", "--seed", "2", "--schedule", "cosine")
    assert main(args) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["out"] == str(tmp_path / "model.pt") and report["stopped"] == "finished"
    assert report["metrics_on"] == "validation" and report["n"] == 2
    assert {"accuracy", "mae", "mre", "best_epoch"} <= set(report)
    epoch_lines = [line for line in captured.err.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2  # before training, and after the one epoch
    assert captured.err.splitlines()[-1] == (
        f"napari-twinvae train: read {files / 'stack.tif'} and {files / 'counts.csv'} (8 "
        f"labeled chamber images), trained 1 epoch from {files / 'start.pt'} (finished), kept "
        f"epoch {report['best_epoch']}; wrote {tmp_path / 'model.pt'} in "
        + captured.err.splitlines()[-1].rsplit(" in ", 1)[1]
    )
    assert captured.err.splitlines()[-1].endswith(" s")
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.config == TINY
    assert loaded.summary["config"]["freeze"] == "core" and loaded.summary["config"]["seed"] == 2
    assert loaded.summary["config"]["schedule"] == "cosine"


def test_points_csv_and_chamber_rectangles(files, tmp_path, capsys):
    rois = tmp_path / "rois.csv"
    rois.write_text(
        "index,shape-type,vertex-index,axis-0,axis-1\n"
        "0,rectangle,0,0,0\n0,rectangle,1,0,128\n0,rectangle,2,128,128\n0,rectangle,3,128,0\n"
    )
    args = _train(files, tmp_path, "--no-decoder", "--rois", str(rois))
    args[args.index("--labels") + 1] = str(files / "points.csv")
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = load_checkpoint(report["out"]).summary
    assert summary["config"]["decoder"] is False
    assert summary["labeled"]["training"] + summary["labeled"]["validation"] == 8


def test_a_chamber_mostly_outside_the_frame_is_refused(files, tmp_path, capsys):
    rois = tmp_path / "rois.csv"
    rois.write_text(
        "index,shape-type,vertex-index,axis-0,axis-1\n"
        "0,rectangle,0,100,100\n0,rectangle,1,100,300\n0,rectangle,2,300,300\n"
        "0,rectangle,3,300,100\n"
    )
    out = tmp_path / "model.pt"
    out.write_bytes(b"an older model")
    assert main(_train(files, tmp_path, "--rois", str(rois))) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "outside the 128x128 frame" in lines[0], lines
    assert out.read_bytes() == b"an older model"


def test_points_outside_the_image_are_refused(files, tmp_path, capsys):
    points = tmp_path / "points.csv"
    points.write_text("index,axis-0,axis-1,axis-2\n0,0,10,10\n1,2,-9,40\n")
    args = _train(files, tmp_path)
    args[args.index("--labels") + 1] = str(points)
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "lie outside the 128x128 image" in lines[0], lines
    assert not (tmp_path / "model.pt").exists()


def _interrupt_after(monkeypatch, epoch):
    """Send this process SIGINT when the run reports the end of ``epoch``."""
    from napari_twinvae.core import train as train_module

    real_run = train_module.Training.run

    def run(self):
        inner = real_run(self)
        try:
            for progress in inner:
                yield progress
                if progress.epoch_end and progress.epoch == epoch:
                    os.kill(os.getpid(), signal.SIGINT)
        finally:
            inner.close()

    monkeypatch.setattr(train_module.Training, "run", run)


def test_a_run_that_diverges_without_a_better_model_saves_nothing_and_exits_1(
    files, tmp_path, capsys
):
    # found on a new-user walk: a diverged run exited 0 and wrote the model of its first
    # seconds, and only the JSON line said why
    out = tmp_path / "model.pt"
    out.write_bytes(b"an older model")
    assert main(_train(files, tmp_path, "--epochs", "3", "--learning-rate", "1e4")) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1].startswith("error: training diverged: ")
    assert "nothing was saved" in captured.err and "Traceback" not in captured.err
    assert out.read_bytes() == b"an older model" and captured.out == ""


def test_ctrl_c_saves_the_best_model_so_far_as_stop_does(files, tmp_path, capsys, monkeypatch):
    # found on a new-user walk: Ctrl-C threw the best model so far away; the dock's Stop keeps it
    out = tmp_path / "model.pt"
    out.write_bytes(b"an older model")
    _interrupt_after(monkeypatch, epoch=1)
    assert main(_train(files, tmp_path, "--epochs", "50")) == 130
    captured = capsys.readouterr()
    assert "interrupted: saved the best model so far (epoch " in captured.err
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["stopped"] == "cancelled" and report["epochs"] == 1
    assert load_checkpoint(out).summary["stopped"] == "cancelled"


def test_ctrl_c_before_the_first_epoch_ends_saves_nothing(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "model.pt"
    out.write_bytes(b"an older model")
    _interrupt_after(monkeypatch, epoch=0)
    assert main(_train(files, tmp_path, "--epochs", "50")) == 130
    assert "nothing was saved" in capsys.readouterr().err
    assert out.read_bytes() == b"an older model"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "labels.csv").write_text("frame,count\n0,3\n40,2\n"), "frames 0..11"),
        (lambda d: (d / "labels.csv").write_text("frame,count\n0,31\n"), "0..30"),
        (lambda d: (d / "labels.csv").write_text("frame,count\n0,-1\n"), "0..30"),
        (lambda d: (d / "labels.csv").write_text(""), "empty"),
        (lambda d: (d / "labels.csv").write_text("frame,count\n"), "no labels"),
        (lambda d: (d / "stack.tif").write_bytes(b"junk"), "not a readable"),
        (lambda d: tifffile.imwrite(d / "stack.tif", np.zeros((2, 2, 8, 8), np.uint8)), "4D"),
    ],
)
def test_bad_input_ends_with_one_line_and_status_2(files, tmp_path, capsys, setup, message):
    tifffile.imwrite(tmp_path / "stack.tif", tifffile.imread(files / "stack.tif"))
    (tmp_path / "labels.csv").write_text((files / "counts.csv").read_text())
    setup(tmp_path)
    out = tmp_path / "model.pt"
    out.write_bytes(b"an older model")
    args = _train(files, tmp_path)
    args[1] = str(tmp_path / "stack.tif")
    args[args.index("--labels") + 1] = str(tmp_path / "labels.csv")
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert out.read_bytes() == b"an older model"  # nothing the user had is lost


def test_missing_default_model_and_bad_options_exit_2(files, tmp_path, monkeypatch):
    from napari_twinvae.core import io

    monkeypatch.setattr(io, "default_model_path", lambda: tmp_path / "none.pt")
    args = _train(files, tmp_path)
    args[args.index("--init") + 1] = "default"
    assert main(args) == 2
    assert main(_train(files, tmp_path, "--epochs", "0")) == 2
    assert main(_train(files, tmp_path, "--freeze", "middle")) == 2
    assert main(_train(files, tmp_path, "--preset", "dic")) == 2
    assert main(_train(files, tmp_path, "--schedule", "linear")) == 2
    assert not (tmp_path / "model.pt").exists()


def test_command_line_subprocess_reports_one_line(files, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "napari_twinvae", *_train(files, tmp_path, "--minutes", "-1")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "minutes must be positive" in lines[0], out.stderr


def test_help_defaults_are_train_configs():
    """One source for every setting: the options' defaults are TrainConfig()'s, and --help says so."""
    import argparse
    import dataclasses

    from napari_twinvae.cli import build_parser
    from napari_twinvae.core.train import TrainConfig

    defaults = TrainConfig()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    text = " ".join(train.format_help().split())
    checked = set()
    for action in train._actions:
        if action.dest not in fields:
            continue
        checked.add(action.dest)
        expected = getattr(defaults, action.dest)
        if action.dest == "epochs":  # None here: --minutes alone means no epoch limit
            assert f"(default: {expected};" in text
            continue
        assert action.default == expected, action.dest
        if action.help and "%(default)s" in action.help:
            shown = " ".join((action.help % {"default": action.default}).split())
            assert f"(default: {expected})" in shown and shown in text, action.dest
    exposed = {"init", "freeze", "decoder", "head", "epochs", "minutes", "preset", "batch_size"}
    exposed |= {"synthetic_ratio", "optimizer", "learning_rate", "schedule", "seed", "device"}
    assert checked == exposed
    from napari_twinvae.core.synthetic import DEFAULT_PRESET

    assert defaults.preset == DEFAULT_PRESET  # synth and the Synthetic cells dock start there too
