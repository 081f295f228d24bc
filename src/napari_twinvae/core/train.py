"""Training and transfer learning of the Twin-VAE, as the paper describes them.

``iter_train`` is a generator: it yields :class:`TrainProgress` after every batch and every
epoch, and returns a :class:`TrainResult` with the best model. Closing it (Stop in napari,
Ctrl-C in a script) leaves :attr:`Training.result` set with the best model so far.

An epoch passes once over the natural frames and over ``synthetic_ratio`` times as many freshly
generated synthetic images, batches of the two twins interleaved evenly. Natural frames train
the natural twin: labeled ones with the count term, unlabeled ones (and the held-out validation
frames, whose counts stay hidden) through reconstruction and KLD only. Without decoders the
unlabeled frames would feed the KLD term alone, so a decoder-free run passes only over the labeled
training frames.

This module holds a run's settings, progress and result. The run itself is :mod:`core.loop`'s,
its parts :mod:`core.batches` (the epoch's data), :mod:`core.freezing` (which layers train),
:mod:`core.precision` and :mod:`core.validation` (the held-out frames and the model kept);
:mod:`core.trainset` turns frames and labels into a training set and reads the start model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator
from pathlib import Path

import numpy as np

from napari_twinvae.core.config import HEADS, IMAGE_SIZE, JsonConfig, LossWeights, ModelConfig
from napari_twinvae.core.data import Augmentation, NaturalSet, SyntheticSource
from napari_twinvae.core.freezing import FREEZE_STRATEGIES
from napari_twinvae.core.intensity import Normalization
from napari_twinvae.core.io import DEFAULT_MODEL
from napari_twinvae.core.jobs import drain
from napari_twinvae.core.model import TwinVAE
from napari_twinvae.core.synthetic import PRESETS
from napari_twinvae.core.trainset import SCRATCH, StartModel, load_start

OPTIMIZERS = ("adam", "radam")
SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.02
"""The cosine schedule ends at this share of the learning rate, not at zero."""
WARMUP = 0.03
"""The cosine schedule first rises linearly over this share of the run (Adam starts afresh)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Everything that decides a training run; stored in the checkpoint's summary."""

    init: str = "default"  # "default" (shipped model), "scratch", or a checkpoint path
    freeze: str = "none"  # "none" | "core" | "outer" | "thaw" (as in the paper) | core.freezing's
    decoder: bool = True  # False: transfer without decoders (C_rec = 0, decoders never run)
    epochs: int | None = 50  # epoch limit (None = only the time budget)
    minutes: float | None = None  # time budget
    preset: str = "pc"  # synthetic preset "bf" | "pc"
    synthetic_ratio: float = 2.0  # synthetic : natural images per epoch
    optimizer: str = "adam"  # "adam" | "radam"
    learning_rate: float = 1.3e-4
    schedule: str = "constant"  # "cosine": the rate falls along a half cosine over the run
    weight_decay: float = 1e-5
    dropout: float | None = None  # this run's dropout rate (None: the model's own, 0.1)
    batch_size: int = 64
    validation_share: float = 0.2
    regressor_delay: int = 100  # epochs without the regression term, from scratch only
    loss: LossWeights = LossWeights()
    seed: int = 0
    device: str = "auto"
    augmentation: Augmentation = Augmentation()
    model: ModelConfig = ModelConfig()  # network shape when training from scratch
    # what counts: "density" adds a density head to a model that has none (a transfer from the
    # shipped regressor model), "regressor" drops one; None keeps the start model's, except that
    # a transfer whose labels say where the cells are (clicks) gains a density head: it counted
    # better than the regressor on both real sets (docs/density.md)
    head: str | None = None
    # bfloat16 autocast of the convolutions on CUDA (float16 on GPUs without bfloat16) and on
    # CPUs with native bfloat16 (AVX512-BF16 or AMX); float32 elsewhere
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.init, str) or not self.init.strip():
            raise ValueError("init must be 'default', 'scratch' or a checkpoint path")
        if self.freeze not in FREEZE_STRATEGIES:
            raise ValueError(
                f"unknown freeze strategy {self.freeze!r}; choose one of {', '.join(FREEZE_STRATEGIES)}"
            )
        if self.freeze != "none" and self.init == SCRATCH:
            raise ValueError(
                f"freeze={self.freeze!r} needs a trained start model; a model trained from "
                "scratch has nothing worth keeping fixed"
            )
        if self.freeze in ("counting", "density") and not self.decoder:
            raise ValueError(
                f"freeze={self.freeze!r} keeps the counts and trains for the decoders; it needs "
                "the decoders switched on"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.head is not None and self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.epochs is None and self.minutes is None:
            raise ValueError("give an epoch limit, a time budget in minutes, or both")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must not be negative, got {self.weight_decay}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0 <= self.synthetic_ratio <= 100:
            raise ValueError(f"synthetic_ratio must lie in 0..100, got {self.synthetic_ratio}")
        if not 0 <= self.validation_share <= 0.5:
            raise ValueError(f"validation_share must lie in 0..0.5, got {self.validation_share}")
        if self.regressor_delay < 0:
            raise ValueError("regressor_delay must not be negative")
        if not 0 <= self.seed < 2**32:  # numpy's generators take no other; said before any epoch
            raise ValueError(f"seed must lie in 0..2**32-1, got {self.seed}")

    @property
    def from_scratch(self) -> bool:
        return self.init == SCRATCH


@dataclasses.dataclass
class TrainProgress:
    """Where a run stands: yielded after every batch and at the end of every epoch."""

    epoch: int  # completed epochs (0 before the first one ends)
    epochs: int | None  # the epoch limit, if any
    step: int  # batches done in the current epoch
    steps_per_epoch: int
    losses: dict[str, dict[str, float]]  # per twin: mean total/reconstruction/regression/kld
    validation: dict | None  # n, accuracy, mae, mre of the epoch just completed
    best: dict | None  # epoch, accuracy, mae, mre of the model kept so far
    elapsed_s: float
    remaining_s: float | None
    message: str | None = None
    epoch_end: bool = False  # True on the one progress per epoch that carries its validation


@dataclasses.dataclass
class TrainResult:
    """The outcome of a run: the kept model (CPU, eval mode) and how it was chosen."""

    model: TwinVAE
    history: list[dict]
    best: dict  # epoch, accuracy, mae, mre (+ n, "on": validation | training labels)
    stopped: str  # "finished", "time budget", "cancelled" or "diverged: <reason>"
    normalization: Normalization
    config: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    epochs: int = 0  # epochs run (the last one partly when the time budget cut it)
    seconds: float = 0.0
    selection: str = ""  # how the kept model was chosen
    lowest_mae: dict | None = None  # the validation epoch with the lowest MAE (as in the paper)
    messages: list[str] = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)  # data, start model, synthetic source

    def summary(self) -> dict:
        """Plain data for the checkpoint: config, best metrics, epochs, stop reason, seconds."""
        return {
            "trained_with": "napari_twinvae.core.train",
            "config": {**self.config.to_dict(), "init": _file_name(self.config.init)},
            "best": dict(self.best),
            "lowest_mae": dict(self.lowest_mae) if self.lowest_mae else None,
            "selection": self.selection,
            "epochs": int(self.epochs),
            "stopped": self.stopped,
            "seconds": round(float(self.seconds), 3),
            "messages": list(self.messages),
            **_plain(self.info),
        }


def learning_rate_at(cfg: TrainConfig, fraction: float) -> float:
    """The learning rate at ``fraction`` (0-1) of the run.

    A constant rate leaves the counts jumping by a cell or two between epochs; letting it fall
    along a half cosine to :data:`COSINE_FLOOR` of its start settles them. The cosine schedule
    warms up first: a fresh Adam's first steps at the full rate can undo a trained model.
    """
    if cfg.schedule == "constant":
        return cfg.learning_rate
    fraction = min(1.0, max(0.0, fraction))
    if fraction < WARMUP:
        return cfg.learning_rate * (0.1 + 0.9 * fraction / WARMUP)
    share = COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * fraction))
    return cfg.learning_rate * share


# -- the run ---------------------------------------------------------------------------------
class Training:
    """One training run. Cheap to create; :meth:`run` does the work.

    ``start`` is the start model when the caller has read it already (to crop the natural frames
    with its normalisation, :func:`core.trainset.load_start`); None reads ``config.init``.
    ``normalization`` is the one the natural crops were made with; ``None`` takes the start
    model's (``Normalization()`` from scratch). It goes into the saved checkpoint.
    ``synthetic`` replaces the default source of synthetic images (anything with the methods
    ``batch(n, epoch)`` and ``describe()`` of :class:`SyntheticSource`). ``renew``, a source of
    the same kind, replaces the labeled training frames with new ones from the second epoch on
    (pretraining on rendered scenes, where new ones cost nothing); held-out frames stay.
    """

    def __init__(
        self,
        natural: NaturalSet,
        config: TrainConfig | None = None,
        normalization: Normalization | None = None,
        synthetic: SyntheticSource | None = None,
        renew: SyntheticSource | None = None,
        start: StartModel | None = None,
    ) -> None:
        self.natural = _checked(natural)
        self.config = config if config is not None else TrainConfig()
        self.normalization = normalization
        self.synthetic = synthetic
        self.renew = renew
        self.start = start
        self.result: TrainResult | None = None

    def save(self, path) -> Path:
        """Write the kept model, its normalisation and the run's summary as a checkpoint."""
        from napari_twinvae.core.io import save_checkpoint

        if self.result is None:
            raise ValueError("nothing to save: the training has not run yet")
        return save_checkpoint(
            path,
            self.result.model,
            normalization=self.result.normalization,
            summary=self.result.summary(),
        )

    def run(self) -> Generator[TrainProgress, None, TrainResult]:
        """Train, yielding progress; returns (and stores in :attr:`result`) the result."""
        from napari_twinvae.core.loop import Run  # the loop builds on this module's types

        # the start weights train in place: a second run reads config.init afresh
        start, self.start = self.start or load_start(self.config.init), None
        run = Run(self.natural, self.config, start, self.normalization, self.synthetic, self.renew)
        try:
            stopped = yield from run.epochs()
        except GeneratorExit:
            self.result = run.finish("cancelled")
            raise
        finally:
            run.close()
        self.result = run.finish(stopped)
        return self.result


def iter_train(
    natural: NaturalSet, config: TrainConfig | None = None, normalization=None
) -> Generator[TrainProgress, None, TrainResult]:
    """Train as a generator of :class:`TrainProgress`; returns the :class:`TrainResult`."""
    return Training(natural, config, normalization).run()


def train(
    natural: NaturalSet, config: TrainConfig | None = None, normalization=None
) -> TrainResult:
    """Train to the end and return the :class:`TrainResult` (for scripts and tests)."""
    return drain(iter_train(natural, config, normalization))


def _checked(natural: NaturalSet) -> NaturalSet:
    if not isinstance(natural, NaturalSet):
        raise ValueError("natural must be a NaturalSet (see core.data.natural_set)")
    frames, counts, labeled = (np.asarray(a) for a in natural[:3])
    if frames.ndim != 3 or frames.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(frames) == 0:
        raise ValueError(
            f"natural frames must be (N, {IMAGE_SIZE}, {IMAGE_SIZE}) with N > 0, got {frames.shape}"
        )
    if counts.shape != (len(frames),) or labeled.shape != (len(frames),):
        raise ValueError("natural counts and labeled mask need one entry per frame")
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    if not frames.flags.writeable:  # torch.from_numpy wants a writable array
        frames = frames.copy()
    if natural.cells is not None and len(natural.cells) != len(frames):
        raise ValueError("natural cells need one entry (or None) per frame")
    return NaturalSet(frames, counts.astype(np.int64), labeled.astype(bool), natural.cells)


def _file_name(init: str) -> str:
    """What a run started from, without the folders: a summary holds no path of the machine."""
    return init if init in (SCRATCH, DEFAULT_MODEL) else Path(init).name


def _plain(value):
    """Numbers, strings, lists and dicts only: the checkpoint is read with weights_only=True."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
