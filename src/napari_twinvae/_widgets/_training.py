"""What the Label & train dock trains with: the choices its settings offer, and the run its
worker does.

Every choice derives from core (``TrainConfig``, the synthetic presets, the freeze strategies,
the heads), so the dock and the command line share one source for every setting. Nothing here
touches napari or Qt: the worker gets only snapshots.
"""

from __future__ import annotations

from collections.abc import Generator

from napari_twinvae.core.config import HEADS
from napari_twinvae.core.freezing import FREEZE_STRATEGIES
from napari_twinvae.core.synthetic import PRESETS
from napari_twinvae.core.train import TrainConfig, Training
from napari_twinvae.core.trainset import iter_natural_set, load_start

START_MODELS = [("default model", "default"), ("model file", "file"), ("from scratch", "scratch")]
_STRATEGY_NAMES = {
    "none": "none: every layer trains",
    "core": "freeze the shared core",
    "outer": "freeze the outer layers",
    "thaw": "thaw in five stages",
}
# core.train's strategies; "counting" and "density" (for the decoders' views) are left to the
# command line
STRATEGIES = [(_STRATEGY_NAMES[s], s) for s in FREEZE_STRATEGIES if s in _STRATEGY_NAMES]
_PRESET_NAMES = {"pc": "phase contrast", "bf": "bright field"}
MODALITIES = [(_PRESET_NAMES.get(p, p), p) for p in PRESETS]
_HEAD_NAMES = {
    "regressor": "regressor (the paper's)",
    "density": "density map (learns where the cells are)",
}
# the head choice TrainConfig.head None: the start model's, or a density map learned from clicks
START_HEAD = "start"
HEADS_SHOWN = [("automatic (a transfer on clicks learns a density map)", START_HEAD)] + [
    (_HEAD_NAMES.get(h, h), h) for h in HEADS
]
_CROP_CHUNK = 64  # frames cropped per step while preparing, so Stop is honoured there too


class TrainJob:
    """One run: its settings, the notes on its inputs (said once training begins, so that an
    input the worker refuses gets its one error alone), and what the worker leaves behind (the
    Training, whose result survives a Stop)."""

    def __init__(self, config: TrainConfig, notes: list[str] | None = None) -> None:
        self.config = config
        self.notes = list(notes or [])
        self.training: Training | None = None
        self.returned = False
        self.failed = False

    def take_notes(self) -> list[str]:
        """The notes not said yet; none after this."""
        notes, self.notes = self.notes, []
        return notes


def prepare_and_train(frames, regions, labels, config: TrainConfig, job: TrainJob) -> Generator:
    """Worker: crop and normalise every chamber as the start model does, then train on the
    checked ``labels`` (the same path from labels to a training set as ``napari-twinvae
    train``)."""
    start = load_start(config.init)  # read once: its normalisation crops, its weights train
    natural = yield from iter_natural_set(frames, labels, regions, start.normalization, _CROP_CHUNK)
    job.training = Training(natural, config, start=start)
    return (yield from job.training.run())
