import subprocess
import sys

import pytest

from napari_twinvae import __version__
from napari_twinvae.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_the_program(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "napari-twinvae" in capsys.readouterr().out


def test_python_dash_m_and_console_script():
    for cmd in ([sys.executable, "-m", "napari_twinvae", "--version"],):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"napari-twinvae {__version__}"


def test_unknown_command_exits_2():
    out = subprocess.run(
        [sys.executable, "-m", "napari_twinvae", "frobnicate"], capture_output=True, text=True
    )
    assert out.returncode == 2
