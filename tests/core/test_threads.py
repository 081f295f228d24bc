import os
import subprocess
import sys

import pytest

from napari_twinvae.core import threads


def test_thread_count_takes_the_cores_of_this_process(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    assert threads.thread_count() == threads.cores() >= 1
    assert threads.thread_count(3) == 3
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    assert threads.thread_count() == 1


@pytest.mark.parametrize("value", ["two", "0"])
def test_a_bad_thread_count_is_refused(monkeypatch, value):
    monkeypatch.setenv(threads.THREADS_ENV, value)
    with pytest.raises(ValueError, match="NAPARI_TWINVAE_THREADS|at least 1"):
        threads.thread_count()


def test_use_threads_sets_torch(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.use_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_command_line_lets_waiting_threads_sleep():
    """OMP_WAIT_POLICY must be set before torch loads its OpenMP runtime."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = (
        "import os, sys\n"
        "from napari_twinvae import cli\n"
        "try:\n    cli._main(['count', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-2:] == ["PASSIVE", "True"]


def test_a_bad_thread_count_ends_a_command_with_one_line(monkeypatch, capsys, tmp_path):
    from napari_twinvae.cli import main

    monkeypatch.setenv(threads.THREADS_ENV, "many")
    assert main(["synth", "--n", "1", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and threads.THREADS_ENV in err
    assert not (tmp_path / "s").exists()
