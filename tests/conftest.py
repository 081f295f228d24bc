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
