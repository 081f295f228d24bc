"""How many cells: the count distributions that synthetic images are drawn from (the authors',
an explicit histogram, or one matched to the user's labels), and counts from clicked points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

MAX_COUNT = 30
"""Most cells per image: the count regressor is trained on 0..30."""


def paper_count_weights(max_count: int = MAX_COUNT) -> np.ndarray:
    """The authors' count weights: ``(31 - k) + 5`` for ``k`` = 1..30 cells, none for 0.

    More low counts than high ones, like real cultivations that start from one cell.
    """
    k = np.arange(max_count + 1, dtype=np.float64)
    weights = (max_count + 1 - k) + 5.0
    weights[0] = 0.0
    return weights / weights.sum()


def histogram_count_weights(
    histogram: Mapping[int, float] | Sequence[float], max_count: int = MAX_COUNT
) -> np.ndarray:
    """Weights from an explicit histogram: ``{count: weight}`` or a sequence indexed by count."""
    items = histogram.items() if isinstance(histogram, Mapping) else enumerate(histogram)
    weights = np.zeros(max_count + 1, dtype=np.float64)
    for count, weight in items:
        count = int(count)
        if not 0 <= count <= max_count:
            raise ValueError(f"counts must lie in 0..{max_count}, got {count}")
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"count weights must be finite and not negative, got {weight}")
        weights[count] += float(weight)
    if weights.sum() <= 0:
        raise ValueError("the count histogram is empty")
    return weights / weights.sum()


def labeled_count_weights(counts: Sequence[int] | np.ndarray, max_count: int = MAX_COUNT):
    """Weights that match the counts of the user's labeled frames (their normalised histogram)."""
    values = np.asarray(counts)
    if values.size == 0:
        raise ValueError("no labeled counts to match")
    if values.dtype.kind not in "iu" and not np.all(values == np.round(values)):
        raise ValueError("labeled counts must be whole numbers")
    values = values.astype(np.int64).ravel()
    if values.min() < 0 or values.max() > max_count:
        raise ValueError(f"labeled counts must lie in 0..{max_count}")
    return histogram_count_weights(np.bincount(values, minlength=max_count + 1), max_count)


def counts_from_centres(centres: np.ndarray, n_frames: int | None = None) -> np.ndarray:
    """Cells per frame from points (frame, y, x); 2D points are one frame.

    Frames up to the last one with a point count as labeled, so a frame left empty counts 0.
    """
    points = np.asarray(centres, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] not in (2, 3):
        raise ValueError(
            f"points must be rows of (frame, y, x) or (y, x), got shape {points.shape}"
        )
    if points.shape[1] == 2:
        return np.array([len(points)], dtype=np.int64)
    frames = np.rint(points[:, 0]).astype(np.int64)
    if frames.size and frames.min() < 0:
        raise ValueError("point frames must not be negative")
    return np.bincount(frames, minlength=0 if n_frames is None else int(n_frames)).astype(np.int64)


def sample_counts(n: int, weights: Sequence[float] | np.ndarray, rng=0) -> np.ndarray:
    """``n`` counts drawn from ``weights`` (indexed by count), as int64."""
    p = np.asarray(weights, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or (p < 0).any() or not np.isfinite(p).all() or p.sum() <= 0:
        raise ValueError("count weights must be a non-empty list of non-negative numbers")
    return np.random.default_rng(rng).choice(p.size, size=int(n), p=p / p.sum()).astype(np.int64)
