"""Counting metrics of Kenneweg, Stallmann & Hammer (2023): accuracy, MAE and MRE of rounded estimates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_twinvae.core.counts import MAX_COUNT


def round_counts(estimates: Sequence[float] | np.ndarray) -> np.ndarray:
    """Regressor outputs -> whole cell counts: halves round up, nothing below zero; a
    non-finite estimate counts 0 (:func:`count_flags` marks it)."""
    est = np.asarray(estimates, dtype=np.float64)
    est = np.where(np.isfinite(est), est, 0.0)
    return np.clip(np.floor(est + 0.5), 0, 2**31).astype(np.int64)


def count_flags(estimates: Sequence[float] | np.ndarray, max_count: int = MAX_COUNT) -> np.ndarray:
    """Why a count is not to be trusted, per estimate: ``"above 30"`` or ``"below 0"`` where the
    rounded estimate lies outside the 0..``max_count`` cells the model was trained to count,
    ``"no estimate"`` where it is not a number, ``""`` for the others."""
    est = np.asarray(estimates, dtype=np.float64)
    flags = np.full(est.shape, "", dtype=object)
    with np.errstate(invalid="ignore"):
        flags[est >= max_count + 0.5] = f"above {max_count}"
        flags[est < -0.5] = "below 0"
    flags[~np.isfinite(est)] = "no estimate"
    return flags


def _pair(
    estimates: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    counts = round_counts(estimates)
    truth = np.asarray(labels, dtype=np.int64)
    if counts.shape != truth.shape:
        raise ValueError(f"{counts.size} estimates but {truth.size} labels")
    return counts, truth


def accuracy(estimates, labels) -> float:
    """Share of images whose rounded estimate equals the label (NaN when there are none)."""
    counts, truth = _pair(estimates, labels)
    return float(np.mean(counts == truth)) if truth.size else float("nan")


def mae(estimates, labels) -> float:
    """Mean absolute error of the rounded estimates, in cells."""
    counts, truth = _pair(estimates, labels)
    return float(np.mean(np.abs(counts - truth))) if truth.size else float("nan")


def bias(estimates, labels) -> float:
    """Mean signed error of the rounded estimates, in cells: below zero the model undercounts."""
    counts, truth = _pair(estimates, labels)
    return float(np.mean(counts - truth)) if truth.size else float("nan")


def mre(estimates, labels) -> float:
    """Mean relative error of the rounded estimates in percent, over labels above zero."""
    counts, truth = _pair(estimates, labels)
    positive = truth > 0
    if not positive.any():
        return float("nan")
    return float(np.mean(np.abs(counts[positive] - truth[positive]) / truth[positive]) * 100.0)


def count_metrics(estimates, labels) -> dict[str, float]:
    """The metrics, the bias and the number of images, as a JSON-able dict."""
    counts, truth = _pair(estimates, labels)
    return {
        "n": int(truth.size),
        "accuracy": accuracy(estimates, labels),
        "mae": mae(estimates, labels),
        "mre": mre(estimates, labels),
        "bias": bias(estimates, labels),
    }
