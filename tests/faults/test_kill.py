"""count and train killed (SIGINT, SIGKILL) at seeded random moments and in the middle of
writing, while they write over an earlier result: the earlier file stays whole, or is replaced
by a complete new one; nothing partial is left under the final name, and Ctrl-C leaves no
temporary file either."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_twinvae.core.io import CheckpointError, load_checkpoint
from tests._reliability import record

ROOT = Path(__file__).resolve().parents[2]
SLOW_WRITES = Path(__file__).with_name("_slow_writes.py")
KILLS_PER_CASE = 2
SEED = 23


def _argv(command, files, folder):
    if command == "count":
        return [
            "count",
            files / "stack.tif",
            "--out",
            folder / "counts.csv",
            "--model",
            files / "model.pt",
            "--device",
            "cpu",
        ]
    return [
        "train",
        files / "stack.tif",
        "--labels",
        files / "labels.csv",
        "--out",
        folder / "model.pt",
        "--init",
        files / "model.pt",
        "--epochs",
        "4",
        "--batch-size",
        "4",
        "--synthetic-ratio",
        "1",
        "--device",
        "cpu",
    ]


def _earlier(command, files, folder) -> Path:
    """An earlier result where the run writes: a counts CSV or a model file."""
    if command == "count":
        target = folder / "counts.csv"
        target.write_text("frame,chamber,count,estimate,flag\n0,0,3,3.0000,\n")
    else:
        target = shutil.copy(files / "model.pt", folder / "model.pt")
    return Path(target)


def _complete(command, target: Path, frames: int) -> bool:
    """Whether ``target`` is a whole result of the run (a rename replaced it)."""
    if command == "count":
        with open(target, newline="") as f:
            rows = list(csv.reader(f))
        return rows[0][:4] == ["frame", "chamber", "count", "estimate"] and len(rows) == 1 + frames
    try:
        return load_checkpoint(target).summary.get("epochs", 0) >= 1
    except CheckpointError:
        return False


def _start(argv, slow=False):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    env["OMP_NUM_THREADS"] = "1"
    program = [str(SLOW_WRITES)] if slow else ["-m", "napari_twinvae"]
    return subprocess.Popen(
        [sys.executable, *program, *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _check(command, files, folder, target, before, proc, sig):
    out, err = proc.communicate(timeout=120)
    whole = target.read_bytes() == before or _complete(command, target, 16)
    parts = list(folder.glob(".*.part"))
    # SIGKILL cannot clean up its temporary file; Ctrl-C must
    clean = not parts if sig == signal.SIGINT else True
    traceback = "Traceback" in err
    if not whole or not clean:
        record("damaged")
    elif traceback:
        record("traceback")
    else:
        record("worked" if proc.returncode == 0 else "stopped")
    assert whole, f"{target.name} was left partial (exit {proc.returncode}):\n{err}"
    assert clean, f"Ctrl-C left {parts}"
    assert not traceback, err
    # Ctrl-C ends with 130; seen once in many runs: 'interrupted' said, then the process ended
    # by the signal itself (-2) while the interpreter shut down. The files are what must hold.
    assert proc.returncode in (0, 130, -signal.SIGINT, -signal.SIGKILL), (proc.returncode, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("command", ["count", "train"])
def test_a_run_killed_at_a_random_moment_leaves_the_earlier_result_whole(
    fault_files, tmp_path, command, sig
):
    rng = np.random.default_rng([SEED, int(sig), command == "train"])
    for delay in rng.uniform(0.2, 6.0, KILLS_PER_CASE):
        folder = tmp_path / f"after-{delay:.2f}s"
        folder.mkdir()
        target = _earlier(command, fault_files, folder)
        before = target.read_bytes()
        proc = _start(_argv(command, fault_files, folder))
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
        _check(command, fault_files, folder, target, before, proc, sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("command", ["count", "train"])
def test_a_run_killed_while_it_writes_leaves_the_earlier_result_whole(
    fault_files, tmp_path, command, sig
):
    target = _earlier(command, fault_files, tmp_path)
    before = target.read_bytes()
    proc = _start(_argv(command, fault_files, tmp_path), slow=True)
    for line in proc.stderr:  # the announcement comes once the result is being written
        if line.strip() == "writing":
            break
    proc.send_signal(sig)
    _check(command, fault_files, tmp_path, target, before, proc, sig)
    assert target.read_bytes() == before  # the rename had not happened
