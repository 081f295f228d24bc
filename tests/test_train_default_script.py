"""scripts/train_default.py hands every loss option it takes on to the training run."""

import importlib.util
from pathlib import Path

from napari_twinvae.core.config import LossWeights

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "train_default", ROOT / "scripts" / "train_default.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_loss_options_reach_the_loss_weights():
    script = _script()
    given = script.parser_of().parse_args(
        ["--out", "m.pt", "--reconstruction-weight", "1000", "--kld-weight", "0.2",
         "--regression-weight", "0", "--reconstruction-kind", "cells"]
    )  # fmt: skip
    assert script.loss_weights_of(given) == LossWeights(
        reconstruction=1000, kld=0.2, regression=0, reconstruction_kind="cells"
    )
    plain = script.parser_of().parse_args(["--out", "m.pt"])
    assert script.loss_weights_of(plain) == LossWeights()
