"""Shared files of the fault suite: a tiny model and a stack that takes a few seconds to count."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_twinvae.core.synthetic import SynthConfig, generate
from tests._checkpoints import small_checkpoint


@pytest.fixture(scope="session")
def fault_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    small_checkpoint(folder / "model.pt")
    counts = np.random.default_rng(0).integers(1, 8, 16)
    batch = generate(16, SynthConfig(), rng=0, counts=counts)
    tifffile.imwrite(folder / "stack.tif", (batch.images * 255).astype(np.uint8))
    rows = ["frame,count", *(f"{t},{c}" for t, c in enumerate(counts))]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder
