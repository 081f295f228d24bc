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

Which layers train is :mod:`core.freezing`'s; the precision is :mod:`core.precision`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_twinvae.core.config import HEADS, IMAGE_SIZE, JsonConfig, LossWeights, ModelConfig
from napari_twinvae.core.data import (
    Augmentation,
    NaturalSet,
    SyntheticSource,
    augment,
    augment_with_cells,
)
from napari_twinvae.core.density import cells_per_image, density_targets, pad_points
from napari_twinvae.core.device import select_device
from napari_twinvae.core.freezing import FREEZE_STRATEGIES, Freezer
from napari_twinvae.core.intensity import Normalization
from napari_twinvae.core.jobs import drain
from napari_twinvae.core.losses import density_loss, twin_loss
from napari_twinvae.core.metrics import count_metrics
from napari_twinvae.core.model import DOMAINS, TwinVAE
from napari_twinvae.core.precision import mixed_precision
from napari_twinvae.core.synthetic import PRESETS

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "radam")
SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.02
"""The cosine schedule ends at this share of the learning rate, not at zero."""
WARMUP = 0.03
"""The cosine schedule first rises linearly over this share of the run (Adam starts afresh)."""
SCRATCH = "scratch"

MIN_VALIDATION_LABELS = 5
"""Labeled frames needed before some are held out; with fewer, the last model is kept."""
CHANNELS_LAST_ON_CPU = True
"""Outer layers in channels-last memory order on the CPU: about 10-20 % faster steps there."""
EXPLODING_KLD = 1e4  # unweighted KLD per pixel; a healthy run stays far below 1
EXPLODING_LOSS = 1e8  # weighted total of one batch
HEAD_LR_FACTOR = 10.0
"""The density head learns this much faster than the rest: it is small, and in a transfer from
the shipped model it starts untrained while the encoders it reads are trained."""
SKIPS_IN_A_ROW = 4
"""A batch whose loss or gradient is not finite is skipped, the weights untouched (as a
gradient scaler does); this many in a row end the run as diverged."""
_LOSS_TERMS = ("total", "reconstruction", "regression", "kld", "density")


@dataclasses.dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Everything that decides a training run; stored in the checkpoint's summary."""

    init: str = "default"  # "default" (shipped model), "scratch", or a checkpoint path
    freeze: str = "none"  # "none" | "core" | "outer" | "thaw"   (as in the paper)
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
    # what counts: None keeps the start model's head; "density" adds a density head to a model
    # that has none (a transfer from the shipped regressor model), "regressor" drops one
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
        if self.freeze == "counting" and not self.decoder:
            raise ValueError(
                "freeze='counting' trains only the decoders; it needs the decoders switched on"
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
    lowest_mae_state: dict | None = None  # its weights, when they differ from ``model``'s
    messages: list[str] = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)  # data, start model, synthetic source

    def summary(self) -> dict:
        """Plain data for the checkpoint: config, best metrics, epochs, stop reason, seconds."""
        return {
            "trained_with": "napari_twinvae.core.train",
            "config": self.config.to_dict(),
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


# -- validation split ------------------------------------------------------------------------
def validation_split(natural: NaturalSet, share: float, seed: int = 0) -> np.ndarray:
    """Indices of the labeled frames held out for validation, stratified by count.

    Labeled frames are ordered by count (ties in random order) and every k-th one from a random
    start is held out, so each range of counts gives its share. Empty with fewer than
    ``MIN_VALIDATION_LABELS`` labeled frames or a zero share.
    """
    labeled = np.flatnonzero(natural.labeled)
    if labeled.size < MIN_VALIDATION_LABELS or share <= 0:
        return np.zeros(0, dtype=np.int64)
    n_val = min(max(1, int(round(share * labeled.size))), labeled.size - 1)
    rng = np.random.default_rng([int(seed), 15485863])
    order = labeled[np.lexsort((rng.random(labeled.size), natural.counts[labeled]))]
    positions = np.floor((np.arange(n_val) + rng.random()) * labeled.size / n_val).astype(int)
    return np.sort(order[positions]).astype(np.int64)


def normalization_for(init: str) -> Normalization:
    """The intensity normalisation to crop natural frames with for a run that starts at ``init``:
    the start model's own, so a transferred model keeps seeing the scale it learned on."""
    if init == SCRATCH:
        return Normalization()
    from napari_twinvae.core.io import read_normalization

    return read_normalization(init)  # no model is built just to read it


# -- the run ---------------------------------------------------------------------------------
class Training:
    """One training run. Cheap to create; :meth:`run` does the work.

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
    ) -> None:
        self.natural = _checked(natural)
        self.config = config if config is not None else TrainConfig()
        self.normalization = normalization
        self.synthetic = synthetic
        self.renew = renew
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
        run = _Run(self)
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


class _Run:
    """The state of one run, kept so that a cancelled or diverged run can still finish."""

    def __init__(self, owner: Training) -> None:
        self.owner = owner
        self.cfg = cfg = owner.config
        self.start = time.perf_counter()
        self.messages: list[str] = []
        self.reported = 0  # messages already passed on in a progress
        self.history: list[dict] = []
        self.epoch = 0
        self.best: dict | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.lowest_mae: dict | None = None
        self.lowest_mae_state: dict[str, torch.Tensor] | None = None
        self.pending: Future | None = None
        self.pending_epoch = 0
        self.executor: ThreadPoolExecutor | None = None
        self.device = select_device(cfg.device)
        torch.manual_seed(cfg.seed)  # dropout and the VAE's sampling draw from the global RNG
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed)
        self.model, self.info, start_norm = _start_model(cfg)
        if cfg.dropout is not None:
            # Dropout shifts what the later LeakyReLUs see, so a model counts a cell or so
            # differently in eval mode than it learned to; a last phase without it removes that.
            _set_dropout(self.model, cfg.dropout)
        self.normalization = owner.normalization or start_norm
        self.model.to(self.device)
        if self.device.type == "cpu" and CHANNELS_LAST_ON_CPU:
            for part in (self.model.encoders, self.model.decoders):
                part.to(memory_format=torch.channels_last)

        natural = owner.natural
        self.validation = validation_split(natural, cfg.validation_share, cfg.seed)
        train_labeled = natural.labeled.copy()
        train_labeled[self.validation] = False  # held-out counts stay hidden from training
        self.train_labeled = train_labeled
        n_labeled = int(natural.labeled.sum())
        if self.validation.size:
            self.selection = "validation accuracy (ties: lowest MAE)"
        else:
            self.selection = "last epoch (too few labels to hold any out for validation)"
            self._say(
                f"only {n_labeled} labeled frame(s): all of them train, none is held out, so the "
                "model of the last epoch is kept and its metrics are on training labels"
                if n_labeled
                else "no labeled natural frames: the count is learned from synthetic images "
                "only, and nothing can measure it on your frames"
            )
        # what the natural twin passes over per epoch
        if cfg.decoder:
            self.natural_pool = np.arange(len(natural.frames))
        else:
            self.natural_pool = np.flatnonzero(train_labeled)
            if self.natural_pool.size == 0:
                raise ValueError(
                    "training without decoders learns only from labeled frames; label some "
                    "frames or switch the decoders on"
                )
        self.n_synthetic = int(round(cfg.synthetic_ratio * self.natural_pool.size))
        self.source = owner.synthetic or SyntheticSource(
            natural._replace(labeled=train_labeled), cfg.preset, cfg.seed
        )
        self.frames = torch.from_numpy(natural.frames).to(self.device)
        self.counts = torch.from_numpy(natural.counts).to(self.device)
        if owner.renew is not None:  # renewal writes into them: leave the caller's arrays be
            self.frames, self.counts = self.frames.clone(), self.counts.clone()
        self.labeled = torch.from_numpy(train_labeled).to(self.device)
        # where the cells are (density head only): clicked points of the training frames;
        # held-out frames keep theirs hidden, as their counts
        self.cells: dict[str, _Cells] = {}
        self.sigma = self.model.config.density_sigma
        if self.model.density_head is not None:
            given = natural.cells or (None,) * len(train_labeled)
            known = [c if keep else None for c, keep in zip(given, train_labeled, strict=True)]
            self.cells["natural"] = _cells(known, self.device)
        self.regressor_delay = self._regressor_delay()
        self.optimizer = _optimizer(self.model, cfg)
        self.skips_in_a_row = 0
        self.freezer = Freezer(self.model, cfg.freeze)
        self.precision = mixed_precision(self.device, cfg.mixed_precision)
        self.info.update(
            natural_frames=int(len(natural.frames)),
            labeled={"training": int(train_labeled.sum()), "validation": int(self.validation.size)},
            validation_frames=self.validation.tolist(),
            synthetic={**self.source.describe(), "per_epoch": self.n_synthetic},
            renewed=owner.renew.describe() if owner.renew is not None else None,
            device=str(self.device),
            precision=self.precision.name,
        )
        if self.device.type != "cpu":  # generate the next epoch's images while the GPU trains
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twinvae-synth")

    # -- the loop --------------------------------------------------------------------------
    def epochs(self) -> Generator[TrainProgress, None, str]:
        cfg = self.cfg
        yield self._validate_and_report(epoch=0, losses=_empty_losses())
        while cfg.epochs is None or self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            if self.owner.renew is not None and epoch > 1:
                self._renew_natural(epoch)
            batches = self._batches(epoch)
            steps = len(batches)
            sums = _empty_sums()
            regress = self._regress(epoch)
            for step, (domain, index) in enumerate(batches, start=1):
                fraction = self._fraction(epoch - 1 + (step - 1) / steps)
                thawed = self.freezer.update(fraction)
                if thawed:
                    self._say(thawed)
                self._update_learning_rate(fraction)
                batch = self._batch(domain, index)
                problem = self._step(domain, batch, regress, epoch - 1, sums)
                if problem:
                    reason = (
                        f"diverged: {problem} in epoch {epoch}, batch {step} ({domain} twin); "
                        "a lower learning rate may help"
                    )
                    self._say(f"{reason}; keeping the model of epoch {self.best['epoch']}")
                    return reason
                if step < steps:
                    yield self._progress(epoch - 1, step, steps, _means(sums), None, False)
                    if self._out_of_time():  # the partial epoch's work is validated too
                        self.epoch = epoch
                        yield self._validate_and_report(epoch, _means(sums), partial=step)
                        return "time budget"
            self.epoch = epoch
            yield self._validate_and_report(epoch, _means(sums))
            if self._out_of_time():
                return "time budget"
        return "finished"

    def _batches(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        """This epoch's batches: (domain, indices), the two twins interleaved evenly."""
        rng = np.random.default_rng([self.cfg.seed, 31, epoch])
        plan: list[tuple[float, int, str, np.ndarray]] = []
        for order, (domain, n) in enumerate(
            (("natural", self.natural_pool.size), ("synthetic", self.n_synthetic))
        ):
            if n == 0:
                continue
            pool = self.natural_pool if domain == "natural" else np.arange(n)
            shuffled = pool[rng.permutation(n)]
            # near-equal batches: no straggler of one or two images at the end
            parts = np.array_split(shuffled, math.ceil(n / self.cfg.batch_size))
            for i, part in enumerate(parts):
                plan.append(((i + 0.5) / len(parts), order, domain, part))
        plan.sort(key=lambda p: (p[0], p[1]))
        if self.n_synthetic:
            self._synthetic_for(epoch)
        return [(domain, part) for _, _, domain, part in plan]

    def _renew_natural(self, epoch: int) -> None:
        index = torch.from_numpy(np.flatnonzero(self.train_labeled)).to(self.device)
        frames, counts, centres = self.owner.renew.batch(int(index.numel()), epoch)
        self.frames[index] = torch.from_numpy(np.asarray(frames, np.float32)).to(self.device)
        self.counts[index] = torch.from_numpy(np.asarray(counts, np.int64)).to(self.device)
        if "natural" in self.cells:
            renewed = _cells(cells_per_image(centres, len(frames)), self.device)
            self.cells["natural"] = self.cells["natural"].with_rows(index, renewed)

    def _synthetic_for(self, epoch: int) -> None:
        if self.pending is not None and self.pending_epoch == epoch:
            images, counts, centres = self.pending.result()
        else:
            images, counts, centres = self.source.batch(self.n_synthetic, epoch)
        self.synthetic = (
            torch.from_numpy(images).to(self.device),
            torch.from_numpy(counts).to(self.device),
        )
        if self.model.density_head is not None:
            self.cells["synthetic"] = _cells(cells_per_image(centres, len(images)), self.device)
        self.pending = None
        more = self.cfg.epochs is None or epoch < self.cfg.epochs
        if self.executor is not None and more:
            self.pending_epoch = epoch + 1
            self.pending = self.executor.submit(self.source.batch, self.n_synthetic, epoch + 1)

    def _batch(self, domain: str, index: np.ndarray) -> _Batch:
        idx = torch.from_numpy(index).to(self.device)
        if domain == "natural":
            x, counts, labeled = self.frames[idx], self.counts[idx], self.labeled[idx]
        else:
            images, all_counts = self.synthetic
            x, counts = images[idx], all_counts[idx]
            labeled = torch.ones_like(counts, dtype=torch.bool)
        cells = self.cells.get(domain)
        if cells is None:
            return _Batch(augment(x.unsqueeze(1), self.generator, self.cfg.augmentation), counts,
                          labeled)  # fmt: skip
        points, mask, known = cells.points[idx], cells.mask[idx], cells.known[idx]
        x, points, mask = augment_with_cells(
            x.unsqueeze(1), points, mask, self.generator, self.cfg.augmentation
        )
        # a cell that the crop or turn moved out of the image no longer counts
        counts = torch.where(known, mask.sum(1), counts)
        return _Batch(x, counts, labeled, density_targets(points, mask, self.sigma), known)

    def _step(self, domain, batch: _Batch, regress, epoch, sums) -> str | None:
        """One optimizer step on one twin's batch; returns why it diverged, if it did."""
        cfg = self.cfg
        x, counts, labeled = batch.x, batch.counts, batch.labeled
        with self.precision.autocast():
            out = self.model(x, domain, decode=cfg.decoder)
        # the loss in float32 even under mixed precision: the KLD sums many small terms
        rec = out.reconstruction.float() if out.reconstruction is not None else None
        terms = twin_loss(
            x, rec, out.mu.float(), out.logvar.float(), out.count.float(), counts, labeled,
            cfg.loss, epoch=epoch, regress=regress,
        )  # fmt: skip
        loss, density = terms.total, torch.zeros((), device=x.device)
        if out.density is not None:
            dens = density_loss(out.density.float(), batch.targets, batch.known, counts, labeled)
            loss = loss + cfg.loss.density * dens.map + cfg.loss.density_sum * dens.sum
            density = dens.map.detach()
        values = torch.stack([loss.detach().float(), terms.reconstruction.float(),
                              terms.regression.float(), terms.kld.float(), density]).tolist()  # fmt: skip
        total, _, _, kld, _ = values
        if not all(math.isfinite(v) for v in values):
            bad = [n for n, v in zip(_LOSS_TERMS, values, strict=True) if not math.isfinite(v)]
            return self._skip(f"the loss became non-finite ({', '.join(bad)})")
        if kld > EXPLODING_KLD:
            return f"the KLD exploded ({kld:.3g})"
        if total > EXPLODING_LOSS:
            return f"the loss exploded ({total:.3g})"
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        if scaler is not None:  # the scaler skips steps with non-finite gradients itself
            scaler.scale(loss).backward()
            scaler.step(self.optimizer)
            scaler.update()
        else:
            loss.backward()
            where = _nonfinite_gradient(self.model)
            if where is not None:
                self.optimizer.zero_grad(set_to_none=True)
                return self._skip(f"a gradient became non-finite ({where})")
            self.optimizer.step()
        self.skips_in_a_row = 0
        n = int(x.shape[0])
        twin = sums[domain]
        twin["n"] += n
        for name, value in zip(_LOSS_TERMS, values, strict=True):
            twin[name] += value * n
        return None

    def _skip(self, problem: str) -> str | None:
        """Skip this batch; a run that skips ``SKIPS_IN_A_ROW`` batches in a row has diverged."""
        self.info["skipped_steps"] = self.info.get("skipped_steps", 0) + 1
        self.skips_in_a_row += 1
        if self.skips_in_a_row >= SKIPS_IN_A_ROW:
            return f"{problem} in {SKIPS_IN_A_ROW} batches in a row"
        self._say(f"skipped a batch: {problem}; the weights are unchanged")
        return None

    # -- schedule ----------------------------------------------------------------
    def _update_learning_rate(self, fraction: float) -> None:
        rate = learning_rate_at(self.cfg, fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = rate * group["lr_factor"]

    def _fraction(self, epochs_done: float) -> float:
        """How far the run is (0-1), by epochs or by time, whichever is further."""
        parts = []
        if self.cfg.epochs is not None:
            parts.append(epochs_done / self.cfg.epochs)
        if self.cfg.minutes is not None:
            parts.append(self._elapsed() / (self.cfg.minutes * 60))
        return min(1.0, max(parts))

    def _regressor_delay(self) -> int:
        cfg = self.cfg
        if not cfg.from_scratch or not cfg.decoder or cfg.regressor_delay == 0:
            return 0
        delay = cfg.regressor_delay
        if cfg.epochs is not None and delay >= cfg.epochs // 2:
            delay = cfg.epochs // 2
            self._say(
                f"the regressor delay ({cfg.regressor_delay} epochs) would take most of the "
                f"{cfg.epochs} epochs; the count term starts after epoch {delay} instead"
            )
        elif cfg.minutes is not None:
            self._say(
                f"the count term starts after epoch {delay} or halfway through the time "
                "budget, whichever comes first"
            )
        return delay

    def _regress(self, epoch: int) -> bool:
        if epoch > self.regressor_delay:
            return True
        return self.cfg.minutes is not None and self._elapsed() >= self.cfg.minutes * 30

    # -- validation, best model --------------------------------------------------------------
    def _validate_and_report(self, epoch: int, losses, partial: int = 0) -> TrainProgress:
        entry: dict[str, Any] = {
            "epoch": epoch,
            "losses": losses,
            "elapsed_s": round(self._elapsed(), 3),
        }
        if partial:
            entry["partial_steps"] = partial
        validation = None
        if self.validation.size:
            validation = self._metrics(self.validation)
            entry["validation"] = validation
            self._keep_if_better(epoch, validation)
        else:
            training = np.flatnonzero(self.train_labeled)
            metrics = self._metrics(training) if training.size else _no_metrics()
            entry["training"] = metrics
            self.best = {"epoch": epoch, **metrics, "on": "training labels"}
            self.best_state = _snapshot(self.model)
        self.history.append(entry)
        steps = self._steps_per_epoch()
        done = partial or (steps if epoch else 0)
        return self._progress(epoch, done, steps, losses, validation, True)

    def _metrics(self, index: np.ndarray) -> dict:
        was_training = self.model.training
        self.model.eval()
        estimates = []
        with torch.inference_mode():  # float32: counts near a half must round the right way
            for part in np.array_split(index, math.ceil(index.size / 256)):
                x = self.frames[torch.from_numpy(part).to(self.device)].unsqueeze(1)
                estimates.append(self.model.count(x, "natural").float().cpu().numpy())
        self.model.train(was_training)
        metrics = count_metrics(np.concatenate(estimates), self.owner.natural.counts[index])
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}

    def _keep_if_better(self, epoch: int, metrics: dict) -> None:
        # a tie goes to the later epoch, which has trained more (with freeze="counting" every
        # epoch ties: the counts cannot change, the reconstructions improve)
        entry = {"epoch": epoch, **metrics, "on": "validation"}
        if self.best is None or (metrics["accuracy"], -metrics["mae"]) >= (
            self.best["accuracy"],
            -self.best["mae"],
        ):
            self.best = entry
            self.best_state = _snapshot(self.model)
        if self.lowest_mae is None or metrics["mae"] < self.lowest_mae["mae"]:
            self.lowest_mae = entry
            self.lowest_mae_state = self.best_state if self.best is entry else _snapshot(self.model)

    # -- reporting ---------------------------------------------------------------------------
    def _progress(self, epoch, step, steps, losses, validation, epoch_end) -> TrainProgress:
        news = self.messages[self.reported :]
        self.reported = len(self.messages)
        message = " ".join(news) if news else None
        return TrainProgress(
            epoch=epoch,
            epochs=self.cfg.epochs,
            step=step,
            steps_per_epoch=steps,
            losses=losses,
            validation=validation,
            best=dict(self.best) if self.best else None,
            elapsed_s=self._elapsed(),
            remaining_s=self._remaining(epoch + (step / steps if steps and not epoch_end else 0)),
            message=message,
            epoch_end=epoch_end,
        )

    def _say(self, message: str) -> None:
        log.info(message)
        self.messages.append(message)

    def _steps_per_epoch(self) -> int:
        bs = self.cfg.batch_size
        return sum(math.ceil(n / bs) for n in (self.natural_pool.size, self.n_synthetic) if n)

    def _remaining(self, epochs_done: float) -> float | None:
        elapsed = self._elapsed()
        guesses = []
        if self.cfg.minutes is not None:
            guesses.append(max(0.0, self.cfg.minutes * 60 - elapsed))
        if self.cfg.epochs is not None and epochs_done > 0:
            left = max(0.0, self.cfg.epochs - epochs_done)
            guesses.append(elapsed / epochs_done * left)
        return min(guesses) if guesses else None

    def _elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _out_of_time(self) -> bool:
        return self.cfg.minutes is not None and self._elapsed() >= self.cfg.minutes * 60

    def finish(self, stopped: str) -> TrainResult:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.best and self.best["epoch"] == 0 and self.epoch > 0:
            self._say("no epoch did better on validation than the start model, which is kept")
        model = self.model.to("cpu", memory_format=torch.contiguous_format).eval()
        _set_dropout(model, model.config.dropout)  # the rate the model is built with
        for param in model.parameters():
            param.requires_grad_(True)
        lowest_state = None
        if self.lowest_mae_state is not None and self.lowest_mae_state is not self.best_state:
            lowest_state = {k: v.contiguous() for k, v in self.lowest_mae_state.items()}
        return TrainResult(
            model=model,
            history=self.history,
            best=dict(self.best) if self.best else {"epoch": 0, **_no_metrics()},
            stopped=stopped,
            normalization=self.normalization,
            config=self.cfg,
            epochs=self.epoch,
            seconds=self._elapsed(),
            selection=self.selection,
            lowest_mae=self.lowest_mae,
            lowest_mae_state=lowest_state,
            messages=list(self.messages),
            info=self.info,
        )

    def close(self) -> None:
        if self.executor is not None:
            if self.pending is not None:
                self.pending.cancel()
            self.executor.shutdown(wait=True)
            self.executor = None


# -- helpers ---------------------------------------------------------------------------------
def _start_model(cfg: TrainConfig) -> tuple[TwinVAE, dict, Normalization]:
    """A fresh model (from scratch) or a checkpoint's (default or file), with what it was."""
    if cfg.from_scratch:
        config = cfg.model if cfg.head is None else dataclasses.replace(cfg.model, head=cfg.head)
        return TwinVAE(config), {"init": SCRATCH}, Normalization()
    from napari_twinvae.core.io import load_model

    checkpoint = load_model(cfg.init)
    info: dict[str, Any] = {"init": str(checkpoint.path)}
    earlier = {
        k: checkpoint.summary[k] for k in ("best", "epochs", "stopped") if k in checkpoint.summary
    }
    if earlier:
        info["init_summary"] = earlier
    model = checkpoint.model.float().train()
    if cfg.head is not None and cfg.head != model.config.head:
        info["head"] = f"{model.config.head} -> {cfg.head}"
        model.set_head(cfg.head)
    return model, info, checkpoint.normalization


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # every parameter is registered; frozen ones simply have no gradient and are skipped
    head = model.density_head
    fresh = {id(p) for p in head.parameters()} if head is not None else set()
    params = [
        {"params": [p for p in model.parameters() if id(p) not in fresh], "lr_factor": 1.0},
        {"params": [p for p in model.parameters() if id(p) in fresh], "lr_factor": HEAD_LR_FACTOR},
    ]
    params = [group for group in params if group["params"]]
    settings = {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(params, foreach=True, **settings)
    # the fused kernel updates each tensor in one pass instead of about eight
    fused = params[0]["params"][0].device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, fused=fused, foreach=None if fused else True, **settings)


def _set_dropout(model: nn.Module, rate: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate


class _Batch(NamedTuple):
    """One twin's augmented batch; with a density head also its target maps, and which images
    have known cell positions (the others, labeled with a count only, train the map's sum)."""

    x: torch.Tensor
    counts: torch.Tensor
    labeled: torch.Tensor
    targets: torch.Tensor | None = None
    known: torch.Tensor | None = None


class _Cells(NamedTuple):
    """Cell centres of a twin's images, padded: points (N, P, 2), mask (N, P), known (N,)."""

    points: torch.Tensor
    mask: torch.Tensor
    known: torch.Tensor

    def with_rows(self, index: torch.Tensor, rows: _Cells) -> _Cells:
        width = max(self.points.shape[1], rows.points.shape[1])
        points, mask = _widen(self.points, self.mask, width)
        new_points, new_mask = _widen(rows.points, rows.mask, width)
        points[index], mask[index] = new_points, new_mask
        known = self.known.clone()
        known[index] = rows.known
        return _Cells(points, mask, known)


def _widen(points: torch.Tensor, mask: torch.Tensor, width: int):
    extra = width - points.shape[1]
    return F.pad(points, (0, 0, 0, extra)), F.pad(mask, (0, extra))


def _cells(cells: list[np.ndarray | None], device: torch.device) -> _Cells:
    points, mask = pad_points([c if c is not None else np.zeros((0, 2)) for c in cells])
    known = torch.tensor([c is not None for c in cells], dtype=torch.bool)
    return _Cells(points.to(device), mask.to(device), known.to(device))


def _nonfinite_gradient(model: nn.Module) -> str | None:
    """The first parameter whose gradient holds a NaN or an infinity, or None (one fused norm
    over all gradients; the names are looked up only when it is not finite)."""
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named or torch.isfinite(torch.nn.utils.get_total_norm([g for _, g in named])):
        return None
    return next((n for n, g in named if not torch.isfinite(g).all()), "the gradients")


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _empty_sums() -> dict[str, dict[str, float]]:
    return {d: {"n": 0, **dict.fromkeys(_LOSS_TERMS, 0.0)} for d in DOMAINS}


def _means(sums) -> dict[str, dict[str, float]]:
    return {
        d: {k: (s[k] / s["n"] if s["n"] else float("nan")) for k in _LOSS_TERMS}
        for d, s in sums.items()
    }


def _empty_losses() -> dict[str, dict[str, float]]:
    return _means(_empty_sums())


def _no_metrics() -> dict:
    nan = float("nan")
    return {"n": 0, "accuracy": nan, "mae": nan, "mre": nan, "bias": nan}


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
