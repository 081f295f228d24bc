"""Fixtures every test tier shares: the tiny network and a short training run on the CPU."""

from __future__ import annotations

import pytest

from tests._checkpoints import TINY, tiny_train_config


@pytest.fixture
def tiny_model_config():
    """The tiny ``ModelConfig`` the tests train and count with."""
    return TINY


@pytest.fixture
def train_config():
    """``train_config(**changes)``: a ``TrainConfig`` for a short run of the tiny network, pinned
    to the CPU whatever devices torch sees."""
    return tiny_train_config


@pytest.fixture
def hold_out_few(monkeypatch):
    """Runs on a handful of labeled frames hold some out, as a large labeled set would; the
    real minimum (``core.validation.MIN_HELD_OUT``) is larger than a test's whole set."""
    monkeypatch.setattr("napari_twinvae.core.validation.MIN_HELD_OUT", 1)
