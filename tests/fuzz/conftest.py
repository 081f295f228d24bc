"""Settings and shared files of the fuzz suite.

The example count is bounded so that the suite adds a few minutes to ``pytest`` on a 2-core CPU:
profile ``ci`` (the default) draws a fixed, derandomised set of examples, so every run tries the
same inputs; ``HYPOTHESIS_PROFILE=thorough`` draws many more, at random.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, settings

from tests._checkpoints import small_checkpoint

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_QUIET,
)
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def fuzz_files(tmp_path_factory):
    """A small model, a 3-frame 64x64 stack and labels that fit it: the good inputs that each
    test swaps one bad input into."""
    folder = tmp_path_factory.mktemp("fuzz")
    small_checkpoint(folder / "model.pt")
    stack = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    tifffile.imwrite(folder / "stack.tif", stack, photometric="minisblack")
    (folder / "labels.csv").write_text("frame,count\n0,1\n1,2\n2,0\n")
    return folder
