"""The loop of one training run: epochs of batches, the optimizer step, the schedule, and the
progress reports. :class:`core.train.Training` runs it; its parts are the epoch's data
(:mod:`core.batches`), the freezing (:mod:`core.freezing`), the precision
(:mod:`core.precision`) and the model it keeps (:mod:`core.validation`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Generator

import numpy as np
import torch
from torch import nn

from napari_twinvae.core.batches import Batch, EpochData
from napari_twinvae.core.data import NaturalSet, SyntheticSource
from napari_twinvae.core.device import select_device
from napari_twinvae.core.freezing import Freezer
from napari_twinvae.core.intensity import Normalization
from napari_twinvae.core.losses import density_loss, twin_loss
from napari_twinvae.core.model import DOMAINS, TwinVAE
from napari_twinvae.core.precision import mixed_precision
from napari_twinvae.core.predict import DEFAULT_VIEWS
from napari_twinvae.core.run_calibration import fit_run_calibration
from napari_twinvae.core.train import TrainConfig, TrainProgress, TrainResult, learning_rate_at
from napari_twinvae.core.trainset import StartModel
from napari_twinvae.core.validation import (
    HELD_OUT_NOTE,
    BestModel,
    measure,
    no_metrics,
    validation_split,
)

log = logging.getLogger(__name__)

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


class Run:
    """The state of one run, kept so that a cancelled or diverged run can still finish.

    ``start`` is where it starts (its model None: a new one, built here after torch is seeded so
    that the seed decides it); ``normalization`` is the one the natural crops were made with
    (None: the start model's). ``synthetic`` and ``renew`` are as :class:`core.train.Training`
    takes them.
    """

    def __init__(
        self,
        natural: NaturalSet,
        cfg: TrainConfig,
        start: StartModel,
        normalization: Normalization | None = None,
        synthetic: SyntheticSource | None = None,
        renew: SyntheticSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.start = time.perf_counter()
        self.messages: list[str] = []
        self.reported = 0  # messages already passed on in a progress
        self.history: list[dict] = []
        self.epoch = 0
        self.device = select_device(cfg.device)
        torch.manual_seed(cfg.seed)  # dropout and the VAE's sampling draw from the global RNG
        self.info = dict(start.info)
        self.model = self._start_model(start, natural)
        if cfg.dropout is not None:
            # Dropout shifts what the later LeakyReLUs see, so a model counts a cell or so
            # differently in eval mode than it learned to; a last phase without it removes that.
            set_dropout(self.model, cfg.dropout)
        self.normalization = normalization or start.normalization
        self.model.to(self.device)
        if self.device.type == "cpu" and CHANNELS_LAST_ON_CPU:
            for part in (self.model.encoders, self.model.decoders):
                part.to(memory_format=torch.channels_last)

        self.natural_counts = natural.counts
        self.validation = validation_split(natural, cfg.validation_share, cfg.seed)
        train_labeled = natural.labeled.copy()
        train_labeled[self.validation] = False  # held-out counts stay hidden from training
        self.train_labeled = train_labeled
        n_labeled = int(natural.labeled.sum())
        if self.validation.size:
            self.selection = "validation accuracy (ties: lowest MAE)"
        else:
            self.selection = f"last epoch ({HELD_OUT_NOTE})"
            self._say(
                f"only {n_labeled} labeled frame(s): all of them train, none is held out, so the "
                "model of the last epoch is kept and its metrics are on training labels"
                if n_labeled
                else "no labeled natural frames: the count is learned from synthetic images "
                "only, and nothing can measure it on your frames"
            )
        self.keeper = BestModel("validation" if self.validation.size else "training labels")
        # before any image is drawn: a strategy the model cannot take fails here
        self.freezer = Freezer(self.model, cfg.freeze)
        head = self.model.density_head is not None
        sigma = self.model.config.density_sigma if head else None
        self.data = EpochData(natural, train_labeled, cfg, self.device, sigma, synthetic, renew)
        self.regressor_delay = self._regressor_delay()
        self.optimizer = make_optimizer(self.model, cfg)
        self.skips_in_a_row = 0
        self.precision = mixed_precision(self.device, cfg.mixed_precision)
        self.info.update(
            natural_frames=int(len(natural.frames)),
            labeled={"training": int(train_labeled.sum()), "validation": int(self.validation.size)},
            validation_frames=self.validation.tolist(),
            **self.data.describe(),
            device=str(self.device),
            precision=self.precision.name,
        )

    def _start_model(self, start: StartModel, natural: NaturalSet) -> TwinVAE:
        cfg = self.cfg
        if start.model is None:
            config = (
                cfg.model if cfg.head is None else dataclasses.replace(cfg.model, head=cfg.head)
            )
            return TwinVAE(config)
        model = start.model.float().train()
        head = cfg.head
        if head is None and model.density_head is None and marks_cells(natural):
            head = "density"  # the clicks say where the cells are: learn from them
        if head is not None and head != model.config.head:
            self.info["head"] = f"{model.config.head} -> {head}"
            model.set_head(head)
        return model

    # -- the loop --------------------------------------------------------------------------
    def epochs(self) -> Generator[TrainProgress, None, str]:
        cfg = self.cfg
        yield self._validate_and_report(epoch=0, losses=_empty_losses())
        while cfg.epochs is None or self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            batches = self.data.plan(epoch)
            steps = len(batches)
            sums = _empty_sums()
            regress = self._regress(epoch)
            for step, (domain, index) in enumerate(batches, start=1):
                fraction = self._fraction(epoch - 1 + (step - 1) / steps)
                thawed = self.freezer.update(fraction)
                if thawed:
                    self._say(thawed)
                self._update_learning_rate(fraction)
                batch = self.data.batch(domain, index)
                problem = self._step(domain, batch, regress, epoch - 1, sums)
                if problem:
                    reason = (
                        f"diverged: {problem} in epoch {epoch}, batch {step} ({domain} twin); "
                        "a lower learning rate may help"
                    )
                    self._say(f"{reason}; keeping the model of epoch {self.keeper.best['epoch']}")
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

    def _step(self, domain, batch: Batch, regress, epoch, sums) -> str | None:
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

    # -- schedule ----------------------------------------------------------------------------
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

    # -- validation, reports -----------------------------------------------------------------
    def _validate_and_report(self, epoch: int, losses, partial: int = 0) -> TrainProgress:
        entry = {"epoch": epoch, "losses": losses, "elapsed_s": round(self._elapsed(), 3)}
        if partial:
            entry["partial_steps"] = partial
        validation = None
        if self.validation.size:
            validation = entry["validation"] = self._metrics(self.validation)
        else:
            training = np.flatnonzero(self.train_labeled)
            entry["training"] = self._metrics(training) if training.size else no_metrics()
        self.keeper.offer(epoch, entry.get("validation") or entry["training"], self.model)
        self.history.append(entry)
        steps = self.data.steps_per_epoch
        done = partial or (steps if epoch else 0)
        return self._progress(epoch, done, steps, losses, validation, True)

    def _metrics(self, index: np.ndarray) -> dict:
        return measure(self.model, self.data.frames, self.natural_counts, index)

    def _progress(self, epoch, step, steps, losses, validation, epoch_end) -> TrainProgress:
        news = self.messages[self.reported :]
        self.reported = len(self.messages)
        best = self.keeper.best
        return TrainProgress(
            epoch=epoch,
            epochs=self.cfg.epochs,
            step=step,
            steps_per_epoch=steps,
            losses=losses,
            validation=validation,
            best=dict(best) if best else None,
            elapsed_s=self._elapsed(),
            remaining_s=self._remaining(epoch + (step / steps if steps and not epoch_end else 0)),
            message=" ".join(news) if news else None,
            epoch_end=epoch_end,
        )

    def _say(self, message: str) -> None:
        log.info(message)
        self.messages.append(message)

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
        """The result: the kept model on the CPU in eval mode, and how the run went."""
        self.keeper.restore(self.model)
        self._calibrate()
        best = self.keeper.best
        if best and best["epoch"] == 0 and self.epoch > 0:
            self._say("no epoch did better on validation than the start model, which is kept")
        model = self.model.to("cpu", memory_format=torch.contiguous_format).eval()
        set_dropout(model, model.config.dropout)  # the rate the model is built with
        for param in model.parameters():
            param.requires_grad_(True)
        return TrainResult(
            model=model,
            history=self.history,
            best=dict(best) if best else {"epoch": 0, **no_metrics()},
            stopped=stopped,
            normalization=self.normalization,
            config=self.cfg,
            epochs=self.epoch,
            seconds=self._elapsed(),
            selection=self.selection,
            lowest_mae=self.keeper.lowest_mae,
            messages=list(self.messages),
            info=self.info,
        )

    def _calibrate(self) -> None:
        """The kept model's own uncertainty calibration into the summary, from the frames held
        out (:mod:`core.run_calibration`); without one, ``count`` uses the shipped fit."""
        if not self.validation.size:
            return
        index = torch.from_numpy(self.validation).to(self.data.frames.device)
        frames = self.data.frames[index].cpu().numpy()
        try:
            fitted = fit_run_calibration(
                self.model, frames, self.natural_counts[self.validation], DEFAULT_VIEWS
            )
        except (RuntimeError, ValueError) as err:  # the model is kept all the same
            self._say(f"no uncertainty calibration of its own ({err}); counts use the shipped one")
            return
        self.info["uncertainty"] = fitted.to_dict()

    def close(self) -> None:
        self.data.close()


def marks_cells(natural: NaturalSet) -> bool:
    """Whether any labeled frame says where its cells are (clicked points, "no cells" marks)."""
    if natural.cells is None:
        return False
    return any(
        c is not None for c, keep in zip(natural.cells, natural.labeled, strict=True) if keep
    )


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or RAdam over every parameter; a density head learns ``HEAD_LR_FACTOR`` faster."""
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


def set_dropout(model: nn.Module, rate: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate


def _nonfinite_gradient(model: nn.Module) -> str | None:
    """The first parameter whose gradient holds a NaN or an infinity, or None (one fused norm
    over all gradients; the names are looked up only when it is not finite)."""
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named or torch.isfinite(torch.nn.utils.get_total_norm([g for _, g in named])):
        return None
    return next((n for n, g in named if not torch.isfinite(g).all()), "the gradients")


def _empty_sums() -> dict[str, dict[str, float]]:
    return {d: {"n": 0, **dict.fromkeys(_LOSS_TERMS, 0.0)} for d in DOMAINS}


def _means(sums) -> dict[str, dict[str, float]]:
    return {
        d: {k: (s[k] / s["n"] if s["n"] else float("nan")) for k in _LOSS_TERMS}
        for d, s in sums.items()
    }


def _empty_losses() -> dict[str, dict[str, float]]:
    return _means(_empty_sums())
