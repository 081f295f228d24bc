"""Counting metrics of SPEC section 7: accuracy, MAE and MRE of rounded estimates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def round_counts(estimates: Sequence[float] | np.ndarray) -> np.ndarray:
    """Regressor outputs -> whole cell counts: halves round up, nothing below zero."""
    est = np.asarray(estimates, dtype=np.float64)
    return np.clip(np.floor(est + 0.5), 0, None).astype(np.int64)


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


def mre(estimates, labels) -> float:
    """Mean relative error of the rounded estimates in percent, over labels above zero."""
    counts, truth = _pair(estimates, labels)
    positive = truth > 0
    if not positive.any():
        return float("nan")
    return float(np.mean(np.abs(counts[positive] - truth[positive]) / truth[positive]) * 100.0)


def count_metrics(estimates, labels) -> dict[str, float]:
    """All three metrics and the number of images, as a JSON-able dict."""
    counts, truth = _pair(estimates, labels)
    return {
        "n": int(truth.size),
        "accuracy": accuracy(estimates, labels),
        "mae": mae(estimates, labels),
        "mre": mre(estimates, labels),
    }
