"""A disk that fills up while a model or a counts CSV is being written: the write fails with one
line and exit status 1, the earlier file is unchanged and no temporary file is left."""

from __future__ import annotations

import errno
import shutil

import pytest

from napari_twinvae.cli import main
from tests._reliability import record


class _FillingUp:
    """A file that takes ``room`` more bytes, then raises ENOSPC, as a full disk does."""

    def __init__(self, f, room: int) -> None:
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


@pytest.fixture
def full_disk(monkeypatch):
    """Each file ``core.io.atomic_write`` opens for writing takes ``room`` bytes, then the disk
    is full."""
    from napari_twinvae.core import io

    def fill_up_after(room):
        def opening(path, mode="r", *args, **kwargs):
            f = open(path, mode, *args, **kwargs)  # noqa: SIM115 - handed on, closed by the caller
            return _FillingUp(f, room) if "w" in mode else f

        monkeypatch.setattr(io, "open", opening, raising=False)

    return fill_up_after


def _check(capsys, status, target, before, folder):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    said = err[-1] if err else ""
    whole = target.read_bytes() == before and not list(folder.glob(".*.part"))
    record("stopped" if whole and status == 1 else "damaged")
    assert status == 1 and "No space left on device" in said, err
    assert said.startswith("napari-twinvae: error: ")
    assert whole


@pytest.mark.parametrize("limit", [0, 1000, 20_000])
def test_a_full_disk_while_a_trained_model_is_saved(
    fault_files, tmp_path, capsys, full_disk, limit
):
    target = shutil.copy(fault_files / "model.pt", tmp_path / "model.pt")
    before = target.read_bytes()
    full_disk(limit)
    status = main(
        [
            "train",
            str(fault_files / "stack.tif"),
            "--labels",
            str(fault_files / "labels.csv"),
            "--out",
            str(target),
            "--init",
            str(fault_files / "model.pt"),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--synthetic-ratio",
            "1",
            "--device",
            "cpu",
        ]
    )
    _check(capsys, status, target, before, tmp_path)


@pytest.mark.parametrize("limit", [0, 100])
def test_a_full_disk_while_counts_are_written(fault_files, tmp_path, capsys, full_disk, limit):
    target = tmp_path / "counts.csv"
    target.write_text("frame,chamber,count,estimate,flag\n0,0,3,3.0000,\n")
    before = target.read_bytes()
    full_disk(limit)
    status = main(
        [
            "count",
            str(fault_files / "stack.tif"),
            "--out",
            str(target),
            "--model",
            str(fault_files / "model.pt"),
            "--device",
            "cpu",
        ]
    )
    _check(capsys, status, target, before, tmp_path)
