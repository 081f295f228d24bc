"""bench/eval_real.py's forest baseline (ilastik's counting recipe): its targets and its refusal."""

import builtins
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def eval_real(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("eval_real", ROOT / "bench" / "eval_real.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_dot_density_sums_to_the_cells_inside_the_crop(eval_real):
    centres = np.array([[64.0, 64.0], [0.0, 127.0], [130.0, 5.0]])  # one at a corner, one out
    density = eval_real.dot_density(centres)
    assert density.shape == (128, 128)
    assert density.sum() == pytest.approx(2.0, abs=1e-4)  # the corner's kernel renormalised
    assert np.unravel_index(density.argmax(), density.shape) == (0, 127)


def test_forest_without_scikit_learn_says_what_to_install(eval_real, monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    crops = np.zeros((1, 128, 128), np.float32)
    with pytest.raises(SystemExit, match="pip install scikit-learn"):
        eval_real.forest_baseline(crops, [np.zeros((0, 2))], crops, seed=0)
    assert "forest" not in eval_real.DEFAULT_METHODS
