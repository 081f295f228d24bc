"""Fixtures the dock tests share: a small trained model file and a short synthetic series."""

from __future__ import annotations

import pytest

from napari_twinvae.core.synthetic import synthetic_timeseries
from tests._checkpoints import small_checkpoint


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("model") / "small.pt")


@pytest.fixture
def series():
    return synthetic_timeseries("pc", 12, seed=0).images  # (12, 128, 128) float32
