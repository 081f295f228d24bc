"""Which labeled frames a training run holds out, how it measures a model on them, and which
model it keeps."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from napari_twinvae.core.data import NaturalSet
from napari_twinvae.core.metrics import count_metrics

MIN_HELD_OUT = 10
"""Frames a run must be able to hold out before it holds out any. On fewer, the choice of an
epoch is noise that costs their labels: with 1-2 of 9 labeled yeast crops held out, the kept
models counted 54 % of the evaluation crops exactly (MAE 0.46, 3 seeds); with all 9 in training
and the last epoch kept, 75 % (MAE 0.25). With fewer, every labeled frame trains and the last
model is kept."""
HELD_OUT_NOTE = (
    f"too few labeled frames to hold {MIN_HELD_OUT} out; all train, the last model is kept"
)


def validation_split(natural: NaturalSet, share: float, seed: int = 0) -> np.ndarray:
    """Indices of the labeled frames held out for validation, stratified by count.

    Labeled frames are ordered by count (ties in random order) and every k-th one from a random
    start is held out, so each range of counts gives its share. Empty when that share is fewer
    than :data:`MIN_HELD_OUT` frames.
    """
    labeled = np.flatnonzero(natural.labeled)
    n_val = min(int(round(share * labeled.size)), labeled.size - 1)
    if n_val < max(1, MIN_HELD_OUT):
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 15485863])
    order = labeled[np.lexsort((rng.random(labeled.size), natural.counts[labeled]))]
    positions = np.floor((np.arange(n_val) + rng.random()) * labeled.size / n_val).astype(int)
    return np.sort(order[positions]).astype(np.int64)


def measure(model, frames: torch.Tensor, counts: np.ndarray, index: np.ndarray) -> dict:
    """Count metrics of ``model`` on the natural ``frames[index]`` against ``counts[index]``."""
    was_training = model.training
    model.eval()
    estimates = []
    with torch.inference_mode():  # float32: counts near a half must round the right way
        for part in np.array_split(index, math.ceil(index.size / 256)):
            x = frames[torch.from_numpy(part).to(frames.device)].unsqueeze(1)
            estimates.append(model.count(x, "natural").float().cpu().numpy())
    model.train(was_training)
    metrics = count_metrics(np.concatenate(estimates), counts[index])
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}


def no_metrics() -> dict:
    nan = float("nan")
    return {"n": 0, "accuracy": nan, "mae": nan, "mre": nan, "bias": nan}


class BestModel:
    """The model a run keeps: the best on the held-out frames (``on="validation"``: accuracy,
    ties to the lower MAE, then to the later epoch), or else the last one."""

    def __init__(self, on: str) -> None:
        self.on = on  # "validation" or "training labels"
        self.best: dict | None = None  # epoch, metrics and "on" of the kept model
        self.state: dict[str, torch.Tensor] | None = None  # its weights, on the CPU
        self.lowest_mae: dict | None = None  # the validation epoch with the lowest MAE

    def offer(self, epoch: int, metrics: dict, model: nn.Module) -> None:
        """Keep ``model``'s weights of ``epoch`` if they do better than the kept ones."""
        entry = {"epoch": epoch, **metrics, "on": self.on}
        if self.on == "validation":
            if self.lowest_mae is None or metrics["mae"] < self.lowest_mae["mae"]:
                self.lowest_mae = entry
            # a tie goes to the later epoch, which has trained more (with freeze="counting"
            # every epoch ties: the counts cannot change, the reconstructions improve)
            if self.best is not None and (metrics["accuracy"], -metrics["mae"]) < (
                self.best["accuracy"],
                -self.best["mae"],
            ):
                return
        self.best = entry
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        """Put the kept weights back into ``model``."""
        if self.state is not None:
            model.load_state_dict(self.state)
