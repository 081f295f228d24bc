"""Which counts to trust, which frames of a growth series break it, and which frame to label next.

Every count comes with signals the model already has (:func:`core.count_paths.spread_count`):

- ``views``: the spread (standard deviation) of the estimate over the orientations a count
  averages; a chamber the network reads differently when turned is one it does not read well;
- ``latent``: the spread of the regressor's estimate over samples of the latent code drawn from
  the VAE's own posterior (mu, sigma), a cheap measure of what the encoder is unsure about;
- ``peaks``: for a density head, how far the number of peaks (cells found) lies from the map's
  sum (the count);

(a model gives ``latent`` or ``peaks``, not both: the other is NaN, and a calibration weighs a
missing signal as an average one, never as "no spread, so certain")

and two that need no extra pass: how close the estimate lies to a rounding boundary (2.49 rounds
to 2 as easily as 2.51 to 3) and the size of the count (dense chambers are miscounted more often).
A logistic fit (:class:`Calibration`) turns them into one number per frame and chamber, the
probability that the rounded count is wrong. The shipped fit (:data:`DEFAULT_CALIBRATION`) was made
on synthetic images with the default model (``bench/eval_uncertainty.py --fit``;
:data:`REGRESSOR_CALIBRATION` for a model that counts with the regressor); on your own
labeled frames :func:`fit_calibration` makes one for your microscope.

:func:`series_flags` reads a growth series, where counts change one cell at a time, and marks the
frames that depart from their neighbours; it never changes a count. :func:`label_next` ranks the
unlabeled frames worth labeling: uncertain, and spread over the series.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterable

import numpy as np

SIGNALS = ("boundary", "views", "latent", "peaks", "size")
"""The calibration's inputs, in order (:func:`features`)."""

LATENT_SAMPLES = 8
"""Samples of the latent code per chamber: the regressor is a small MLP, so 8 samples of one
orientation cost about a hundredth of the counting pass."""

_FLOOR = 0.02  # cells: spreads and distances below this are all "certain" alike


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A logistic map from :func:`features` to the chance that the rounded count is wrong.

    ``mean`` and ``scale`` standardise each feature; ``weights`` and ``bias`` act on the
    standardised ones. JSON-able (:meth:`to_dict`), so it can be stored beside a model.
    """

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    source: str = ""

    def score(self, feats: np.ndarray) -> np.ndarray:
        """Features (..., len(SIGNALS)) -> the logit of :meth:`probability`; a NaN feature (a
        signal the model cannot give) sits at the mean and adds nothing."""
        z = np.nan_to_num((np.asarray(feats, dtype=np.float64) - self.mean) / self.scale, nan=0.0)
        return z @ np.asarray(self.weights) + self.bias

    def probability(self, feats: np.ndarray) -> np.ndarray:
        """Features (..., len(SIGNALS)) -> P(rounded count is wrong), same leading shape."""
        return _sigmoid(self.score(feats))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "signals": list(SIGNALS)}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if list(data.get("signals", SIGNALS)) != list(SIGNALS):
            raise ValueError(f"a calibration of other signals: {data.get('signals')}")
        return cls(
            tuple(map(float, data["weights"])),
            float(data["bias"]),
            tuple(map(float, data["mean"])),
            tuple(map(float, data["scale"])),
            str(data.get("source", "")),
        )


DEFAULT_CALIBRATION = Calibration(
    weights=(-0.2799, 0.4290, 0.0000, 0.6688, 0.2188),
    bias=-0.5787,
    mean=(-1.4424, -1.5568, 0.0000, 0.4337, 2.4284),
    scale=(0.7322, 0.6554, 1.0000, 0.3396, 0.7648),
    source="default model, 4 views, 4000 synthetic images (seed 11, clean and hardened)",
)
"""Fitted by ``bench/eval_uncertainty.py --fit`` (its printout, rounded): the default model (stage
9, which counts with a density head) on 1,000 clean and 1,000 hardened synthetic images per
preset, counted with the default views. It weighs the disagreement of the map's peaks with its
sum; the latent samples carry no weight, since the density path reads the encoders' maps, not the
latent code. A training run that holds labeled frames
out rescales it (core.run_calibration)."""

REGRESSOR_CALIBRATION = Calibration(
    weights=(-0.2296, 0.2300, 0.3532, 0.0000, 0.5722),
    bias=-0.1468,
    mean=(-1.4818, -1.3319, -2.8071, 0.0000, 2.4549),
    scale=(0.7412, 0.6386, 0.1097, 1.0000, 0.7699),
    source="default model's regressor, 4 views, 4000 synthetic images (seed 11, clean and hardened)",
)
"""The same fit for a model that counts with the regressor (``bench/eval_uncertainty.py --fit``
with stage 8 of the default model, whose regressor stage 9 keeps): it weighs the spread of the
latent samples and has never seen peaks."""


def shipped_calibration(density: bool = True) -> Calibration:
    """The shipped fit for a model that counts with a density head, or with the regressor."""
    return DEFAULT_CALIBRATION if density else REGRESSOR_CALIBRATION


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def features(estimates: np.ndarray, signals: np.ndarray) -> np.ndarray:
    """Estimates (...) and their signals (..., 3: views, latent, peaks) -> (..., 5) features.

    Logarithms, so that the logistic fit can weigh a spread against the distance to the rounding
    boundary as a ratio (a wrong rounding is likely when the spread reaches the boundary). A NaN
    signal (one the model cannot give) stays NaN.
    """
    est = np.nan_to_num(np.asarray(estimates, dtype=np.float64), nan=0.0, posinf=99, neginf=-99)
    sig = np.asarray(signals, dtype=np.float64)
    distance = 0.5 - np.abs(est - np.floor(est + 0.5))  # to the nearest x.5, in [0, 0.5]
    return np.stack(
        [
            np.log(distance + _FLOOR),
            np.log(sig[..., 0] + _FLOOR),
            np.log(sig[..., 1] + _FLOOR),
            np.log1p(sig[..., 2]),
            np.log1p(np.clip(est, 0.0, None)),
        ],
        axis=-1,
    )


def fit_calibration(
    feats: np.ndarray, wrong: np.ndarray, l2: float = 1.0, source: str = ""
) -> Calibration:
    """Logistic regression of ``wrong`` (0/1 per count) on ``feats`` (n, 5) by Newton's method,
    with an L2 penalty on the standardised weights (a constant or missing feature gets weight 0;
    NaN features sit at the mean, as :meth:`Calibration.score` reads them)."""
    x = np.asarray(feats, dtype=np.float64).reshape(-1, len(SIGNALS))
    y = np.asarray(wrong, dtype=np.float64).reshape(-1)
    if x.shape[0] != y.size or y.size == 0:
        raise ValueError(f"{x.shape[0]} feature rows but {y.size} outcomes")
    given = np.isfinite(x).any(axis=0)
    mean = np.zeros(x.shape[1])
    scale = np.ones(x.shape[1])
    mean[given] = np.nanmean(x[:, given], axis=0)
    scale[given] = np.nanstd(x[:, given], axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.column_stack([np.nan_to_num((x - mean) / scale, nan=0.0), np.ones(len(x))])
    beta = logistic_fit(z, y, l2)
    return Calibration(
        tuple(beta[:-1].tolist()), float(beta[-1]), tuple(mean.tolist()), tuple(scale.tolist()),
        source,
    )  # fmt: skip


def logistic_fit(
    z: np.ndarray, y: np.ndarray, l2: float = 1.0, weight: np.ndarray | None = None
) -> np.ndarray:
    """Coefficients of a logistic regression of 0/1 ``y`` (rows weighted by ``weight``) on the
    columns of ``z`` (the last one the constant, not penalised) by Newton's method, with an L2
    penalty on the others."""
    weight = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    share = np.clip(np.average(y, weights=weight), 1e-3, 1 - 1e-3)
    beta = np.zeros(z.shape[1])
    beta[-1] = np.log(share / (1 - share))
    penalty = np.full(z.shape[1], float(l2))
    penalty[-1] = 0.0
    for _ in range(50):
        p = _sigmoid(z @ beta)
        gradient = z.T @ (weight * (p - y)) + penalty * beta
        curvature = (z * (weight * p * (1 - p))[:, None]).T @ z
        hessian = curvature + np.diag(penalty) + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def rescaled(base: Calibration, feats: np.ndarray, wrong: np.ndarray, source: str) -> Calibration:
    """``base`` refitted to the counts of another model or microscope (Platt scaling): its score
    ``s`` becomes ``a * s + b``, ``a >= 0``, fitted on ``feats`` and ``wrong``. Two numbers fit
    on the ten-odd frames a training run holds out where five weights would not, and the ranking
    of ``base`` stays. Half a right and half a wrong count at the mean score keep the fit finite
    when all counts are right (or all wrong): then it says how often, not which."""
    score = base.score(np.asarray(feats, dtype=np.float64).reshape(-1, len(SIGNALS)))
    y = np.asarray(wrong, dtype=np.float64).reshape(-1)
    if score.size != y.size or y.size == 0:
        raise ValueError(f"{score.size} feature rows but {y.size} outcomes")
    centre = float(score.mean())
    z = np.column_stack([np.r_[score, centre, centre], np.ones(y.size + 2)])
    weight = np.r_[np.ones(y.size), 0.5, 0.5]
    a, b = logistic_fit(z, np.r_[y, 0.0, 1.0], 1.0, weight)
    if a < 0:  # the base ranks these counts worse than chance: keep only how often
        share = np.average(np.r_[y, 0.0, 1.0], weights=weight)
        a, b = 0.0, float(np.log(share / (1 - share)))
    return Calibration(
        tuple(a * w for w in base.weights), a * base.bias + float(b), base.mean, base.scale,
        source,
    )  # fmt: skip


def calibration_of(summary: dict | None, density: bool = True) -> Calibration:
    """The calibration stored in a checkpoint's summary (``"uncertainty"``), else the shipped one
    for its head (``density``: it counts with a density head)."""
    stored = (summary or {}).get("uncertainty")
    return Calibration.from_dict(stored) if stored else shipped_calibration(density)


def probability_wrong(
    estimates: np.ndarray, signals: np.ndarray, calibration: Calibration | None = None
) -> np.ndarray:
    """The calibrated uncertainty: P(rounded count is wrong) per estimate, float32."""
    cal = calibration if calibration is not None else DEFAULT_CALIBRATION
    return cal.probability(features(estimates, signals)).astype(np.float32)


def calibration_curve(
    probability: np.ndarray, wrong: np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """(mean predicted, observed share wrong, counts) per bin of predicted probability."""
    p = np.asarray(probability, dtype=np.float64).reshape(-1)
    y = np.asarray(wrong, dtype=np.float64).reshape(-1)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    return [
        (float(p[which == b].mean()), float(y[which == b].mean()), int((which == b).sum()))
        for b in range(bins)
        if (which == b).any()
    ]


def top_error_share(uncertainty: np.ndarray, wrong: np.ndarray, top: float = 0.1) -> float:
    """The share of all wrong counts that the ``top`` most uncertain counts hold (NaN if none
    is wrong). Chance is ``top``; the best possible is ``min(1, top / error rate)``."""
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    y = np.asarray(wrong, dtype=bool).reshape(-1)
    if not y.any():
        return float("nan")
    k = max(1, int(round(top * u.size)))
    order = np.argsort(-u, kind="stable")[:k]
    return float(y[order].sum() / y.sum())


# -- time series ------------------------------------------------------------------------------
JUMP = "jump"  # the count leaves the level of the frames on both sides and comes back
DROP = "drop"  # the count falls by several cells from one frame to the next

SERIES_WINDOW = 5
"""Frames looked at on each side by :func:`series_flags`."""


def series_flags(counts: np.ndarray, window: int = SERIES_WINDOW, step: int = 2) -> np.ndarray:
    """Frames of a growth series whose count departs from its neighbours, per chamber.

    ``counts`` (T, R) or (T,) in frame order. In a growth series counts change slowly and mostly
    upwards, so a count below the highest of the ``window`` frames before it and below the
    highest of the ``window`` frames after it (a dip that comes back), or above every count
    around it (a bump that comes back), is a ``"jump"``; a fall of ``step`` cells or more from
    the frame before is a ``"drop"`` (cells divide, die or leave one at a time). Returns (T, R)
    strings (the shape of ``counts``), ``""`` for most. A second signal beside the uncertainty:
    the counts themselves are left as they are.
    """
    c = np.asarray(counts, dtype=np.int64)
    flat = c.ndim == 1
    c = c[:, None] if flat else c
    flags = np.full(c.shape, "", dtype=object)
    for t in range(c.shape[0]):
        before = c[max(0, t - window) : t]
        after = c[t + 1 : t + 1 + window]
        if not len(before) or not len(after):
            continue
        high_before, high_after = before.max(axis=0), after.max(axis=0)
        dip = (c[t] < high_before) & (c[t] < high_after)
        bump = (c[t] > high_before) & (c[t] > high_after)
        flags[t, dip | bump] = JUMP
    if c.shape[0] > 1:
        falls = np.diff(c, axis=0) <= -step
        flags[1:][falls] = DROP
    return flags[:, 0] if flat else flags


# -- what to label next -----------------------------------------------------------------------
def label_next(
    uncertainty: np.ndarray,
    labeled: Iterable[int] = (),
    n: int = 10,
    spacing: float | None = None,
) -> np.ndarray:
    """Up to ``n`` unlabeled frames to label next, best first.

    ``uncertainty``: (T,) or (T, R) per frame (and chamber); a frame is labeled whole, so its
    most uncertain chamber counts. Each pick is the most uncertain frame after a discount for
    frames near one already labeled or picked, ``1 - exp(-distance / spacing)``, so the picks
    spread over the series instead of ten neighbours of one bad frame. ``spacing`` (frames)
    defaults to the gap between the frames if all of them, labeled and picked, were spread
    evenly.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    per_frame = u.max(axis=1) if u.ndim == 2 else u.reshape(-1)
    per_frame = np.where(np.isfinite(per_frame), per_frame, -np.inf)
    total = per_frame.size
    taken = sorted({int(f) for f in labeled if 0 <= int(f) < total})
    space = spacing if spacing is not None else max(1.0, total / (len(taken) + n))
    frames = np.arange(total)
    distance = np.full(total, np.inf)
    for f in taken:
        distance = np.minimum(distance, np.abs(frames - f))
    free = np.ones(total, dtype=bool)
    free[taken] = False
    picks: list[int] = []
    while len(picks) < n and free.any():
        discount = np.where(np.isinf(distance), 1.0, 1.0 - np.exp(-distance / space))
        score = np.where(free, per_frame * discount, -np.inf)
        best = int(np.argmax(score))
        if score[best] == -np.inf:
            break  # every frame left is labeled or has no uncertainty to rank it by
        picks.append(best)
        free[best] = False
        distance = np.minimum(distance, np.abs(frames - best))
    return np.asarray(picks, dtype=np.int64)


def check_order(
    uncertainty: np.ndarray, flags: np.ndarray | None = None, threshold: float = 0.5
) -> list[tuple[int, int]]:
    """(row, chamber) of the counts to check, most doubtful first: those flagged by the series
    checks or with an uncertainty of at least ``threshold``, sorted by uncertainty (a flag adds
    one, so flagged counts come first)."""
    u = np.nan_to_num(np.asarray(uncertainty, dtype=np.float64), nan=0.0)
    u = u[:, None] if u.ndim == 1 else u
    flagged = np.zeros(u.shape, dtype=bool) if flags is None else np.asarray(flags != "")
    flagged = flagged.reshape(u.shape)
    score = u + flagged
    rows, chambers = np.nonzero((u >= threshold) | flagged)
    order = np.argsort(-score[rows, chambers], kind="stable")
    return [(int(rows[i]), int(chambers[i])) for i in order]


# -- counts tables ----------------------------------------------------------------------------
@dataclasses.dataclass
class CountTable:
    """A counts CSV as read back: one entry per row. ``uncertainty`` is NaN and ``series_flag``
    empty where the file has no such column (CSVs written before they existed)."""

    frames: np.ndarray
    chambers: np.ndarray
    counts: np.ndarray
    estimates: np.ndarray
    uncertainty: np.ndarray
    series_flag: np.ndarray
    files: np.ndarray | None = None


def read_counts_csv(path: str | os.PathLike) -> CountTable:
    """A ``count`` CSV (``frame,chamber,count,estimate,...``), with or without the later columns
    (``uncertainty``, ``series_flag``) and the ``file`` column. Bad files raise one-line errors."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read it ({err})") from None
    missing = [c for c in ("frame", "count") if c not in columns]
    if missing:
        raise ValueError(f"{path}: not a counts CSV, no column {', '.join(missing)}")

    def column(name: str, kind, default):
        out = []
        for i, row in enumerate(rows, start=2):
            text = (row.get(name) or "").strip()
            try:
                out.append(kind(text) if text else default)
            except ValueError:
                raise ValueError(f"{path}: line {i}: {name} {text!r} is not a number") from None
        return out

    return CountTable(
        frames=np.asarray(column("frame", int, 0), dtype=np.int64),
        chambers=np.asarray(column("chamber", int, 0), dtype=np.int64),
        counts=np.asarray(column("count", int, 0), dtype=np.int64),
        estimates=np.asarray(column("estimate", float, np.nan), dtype=np.float32),
        uncertainty=np.asarray(column("uncertainty", float, np.nan), dtype=np.float32),
        series_flag=np.asarray([r.get("series_flag") or "" for r in rows], dtype=object),
        files=np.asarray([r["file"] for r in rows], dtype=object) if "file" in columns else None,
    )
