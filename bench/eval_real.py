"""Real-data evaluation: Twin-VAE transfer against baselines on the same splits.

    PYTHONPATH=src python bench/eval_real.py DATA/usiigaci_phc

Splits are by source image (``source_file``): per seed, 10 % of the source images (at least one)
are labeled, and all their crops may be used; the evaluation crops are the ``nonoverlap == 1``
crops of the other images, so no evaluation pixel was ever seen labeled. Methods, each on the same
splits:

(a) median   the median labeled count, for every crop
(b) log      Laplacian-of-Gaussian blob counting (scikit-image), sigma range, polarity and
             threshold fit on the labeled crops by grid search (lowest MAE)
(c) natural  the same network trained from scratch on the labeled natural crops only (no
             synthetic data, no pretraining: the paper's "natural only")
(d) transfer Twin-VAE transfer from the default model (natural + synthetic, decoders off
             unless --decoders), with a fixed time budget or --transfer-epochs; it counts with
             the paper's regressor (a density head of the start model is dropped)
(e) default  the default model as it is, no transfer
(f) density  (d) counting with the default model's density head (added if the model has
             none), trained on the clicked cell centres of the labeled crops (``points.csv``)
             and on the synthetic centres
(g) forest   ilastik's counting recipe (Lempitsky & Zisserman 2010, as ilastik's Cell Density
             Counting runs it): randomized trees regress a density of Gaussian dots at the
             clicked centres from scikit-image's multiscale pixel features; the count is the
             sum. Needs scikit-learn, which the plugin does not, so it runs only when named

The last line is a JSON object: per method, the mean and standard deviation over seeds of
accuracy, MAE and MRE (as in Kenneweg, Stallmann & Hammer 2023; core.metrics).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from napari_twinvae.core.chambers import chamber_crops
from napari_twinvae.core.intensity import Normalization
from napari_twinvae.core.io import read_stack
from napari_twinvae.core.metrics import count_metrics

METHODS = ("median", "log", "natural", "transfer", "default", "density", "forest")
DEFAULT_METHODS = METHODS[:-1]
"""What runs unless --methods says otherwise: everything the plugin's own packages can run."""


def load_set(folder: Path):
    """Raw crops (n, 128, 128) as stored, the same normalised as the model sees them, counts,
    source ids and the nonoverlap mask."""
    with open(folder / "counts.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: int(r["index"]))
    raw = read_stack(folder / "images.tif", lazy=False)
    crops = chamber_crops(raw, None, Normalization())
    counts = np.array([int(r["count"]) for r in rows])
    sources = np.unique([r["source_file"] for r in rows], return_inverse=True)[1]
    independent = np.array([r.get("nonoverlap", "1") == "1" for r in rows])
    if len(rows) != crops.shape[0]:
        raise SystemExit(f"{folder}: {crops.shape[0]} crops but {len(rows)} rows in counts.csv")
    cells = [np.zeros((0, 2), np.float32) for _ in rows]
    with open(folder / "points.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            i = int(row["index"])
            cells[i] = np.vstack([cells[i], [[float(row["y"]), float(row["x"])]]]).astype(
                np.float32
            )
    return raw, crops[:, 0], counts, sources, independent, cells


def split(sources: np.ndarray, independent: np.ndarray, share: float, seed: int):
    """(labeled crop indices, evaluation crop indices) for one seed, split by source image."""
    ids = np.unique(sources)
    n_labeled = max(1, int(round(share * ids.size)))
    chosen = np.random.default_rng(seed).choice(ids, size=n_labeled, replace=False)
    labeled = np.isin(sources, chosen)
    return np.flatnonzero(labeled), np.flatnonzero(~labeled & independent)


# -- (a) and (b) ---------------------------------------------------------------------------
def median_baseline(train_counts: np.ndarray, n: int) -> np.ndarray:
    return np.full(n, float(np.median(train_counts)))


LOG_SIGMAS = ((1.5, 4.0), (2.0, 6.0), (3.0, 9.0))
LOG_THRESHOLDS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.14, 0.2, 0.3)


def log_count(crop: np.ndarray, sigmas: tuple[float, float], dark: bool, threshold: float) -> int:
    from skimage.feature import blob_log

    image = 1.0 - crop if dark else crop
    blobs = blob_log(
        image, min_sigma=sigmas[0], max_sigma=sigmas[1], num_sigma=4, threshold=threshold
    )
    return len(blobs)


def log_baseline(train: np.ndarray, train_counts: np.ndarray, test: np.ndarray) -> tuple:
    """Fit sigma range, polarity and threshold on the labeled crops, then count the test crops."""
    best = None
    for sigmas in LOG_SIGMAS:
        for dark in (False, True):
            for threshold in LOG_THRESHOLDS:
                found = np.array([log_count(c, sigmas, dark, threshold) for c in train])
                error = float(np.mean(np.abs(found - train_counts)))
                if best is None or error < best[0]:
                    best = (error, sigmas, dark, threshold)
    _, sigmas, dark, threshold = best
    estimates = np.array([log_count(c, sigmas, dark, threshold) for c in test], dtype=float)
    return estimates, {"sigmas": sigmas, "dark": dark, "threshold": threshold}


# -- (g) ---------------------------------------------------------------------------------------
FOREST_SIGMA = 3.0
"""Width (pixels) of the dots the forest learns; a user sets it in ilastik; cells are 5-10 wide."""
FOREST_PIXELS = 150_000
"""Labeled pixels the forest trains on, drawn at random (ilastik trains on the brushed ones)."""


def pixel_features(crop: np.ndarray) -> np.ndarray:
    """(128, 128, F): intensity, edges and texture at five scales (sigma 1-16), as ilastik's
    default feature set, from scikit-image."""
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(
        crop, intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16, num_sigma=5
    ).astype(np.float32)


def dot_density(centres: np.ndarray, side: int = 128, sigma: float = FOREST_SIGMA) -> np.ndarray:
    """A Gaussian per centre, renormalised over the crop, so the map sums to the count."""
    axis = np.arange(side, dtype=np.float64)
    inside = centres[((centres >= -0.5) & (centres <= side - 0.5)).all(axis=1)]
    rows = np.exp(-0.5 * ((axis - inside[:, :1]) / sigma) ** 2)
    cols = np.exp(-0.5 * ((axis - inside[:, 1:]) / sigma) ** 2)
    rows /= rows.sum(axis=1, keepdims=True)
    cols /= cols.sum(axis=1, keepdims=True)
    return np.einsum("pi,pj->ij", rows, cols).astype(np.float32)


def forest_baseline(train, train_cells, test, seed: int) -> np.ndarray:
    """Count the test crops with randomized trees fitted on the labeled crops' clicks."""
    try:
        from sklearn.ensemble import ExtraTreesRegressor
    except ImportError:
        raise SystemExit("--methods forest needs scikit-learn: pip install scikit-learn") from None
    features = np.stack([pixel_features(c) for c in train])
    features = features.reshape(-1, features.shape[-1])
    target = np.stack([dot_density(np.asarray(c, float).reshape(-1, 2)) for c in train_cells])
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(features), min(len(features), FOREST_PIXELS), replace=False)
    forest = ExtraTreesRegressor(
        n_estimators=60, min_samples_leaf=20, max_features=0.3, n_jobs=-1, random_state=seed
    ).fit(features[pick], target.reshape(-1)[pick])
    counted = [pixel_features(c) for c in test]
    return np.array([forest.predict(f.reshape(-1, f.shape[-1])).sum() for f in counted])


# -- (c), (d), (e): the network ------------------------------------------------------------
def network_estimates(checkpoint, raw: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Count raw crops as a user would: normalised as the checkpoint says, counting path only."""
    from napari_twinvae.core.predict import count

    return count(raw, checkpoint, device=device).estimates[:, 0]


def train_network(
    crops,
    crop_counts,
    init: str,
    minutes,
    seed: int,
    preset: str,
    cells=None,
    epochs=None,
    device: str = "cpu",
    **kw,
):
    """A model trained on the labeled crops (normalised; ``cells``: their clicked centres), as a
    checkpoint, and its run."""
    from napari_twinvae.core.data import NaturalSet
    from napari_twinvae.core.train import TrainConfig, train

    natural = NaturalSet(
        crops.astype(np.float32),
        crop_counts.astype(np.int64),
        np.ones(len(crops), dtype=bool),
        None if cells is None else tuple(cells),
    )
    config = TrainConfig(
        init=init, minutes=minutes, epochs=epochs, seed=seed, preset=preset, device=device, **kw
    )
    result = train(natural, config, Normalization())
    return checkpoint_of(result), result


def checkpoint_of(result):
    """A training result as the checkpoint that saving and loading it would give."""
    from napari_twinvae.core.io import Checkpoint

    return Checkpoint(
        result.model, result.model.config, result.normalization, result.summary(), versions={}
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", type=Path, help="one annotated set: images.tif and counts.csv")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labeled-share", type=float, default=0.1)
    parser.add_argument("--model", default="default", help="the pretrained model for (d), (e)")
    parser.add_argument("--preset", default=None, help="synthetic preset (default: from the set)")
    parser.add_argument("--transfer-minutes", type=float, default=1.5, help="budget of (d)")
    parser.add_argument(
        "--transfer-epochs", type=int, help="(d) for this many epochs instead of the budget"
    )
    parser.add_argument(
        "--decoders", action="store_true", help="(d) with the decoders on, as train's default"
    )
    parser.add_argument(
        "--freeze",
        default="none",
        choices=["none", "core", "outer", "thaw"],
        help="what (d) and (f) keep frozen (core.freezing; train's --freeze)",
    )
    parser.add_argument("--natural-minutes", type=float, default=1.5, help="budget of (c)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=METHODS,
        help="default: all but forest",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the networks train and count; the benchmarks' budgets are CPU minutes, so "
        "use another device with --transfer-epochs (e.g. to sweep epochs on a GPU)",
    )
    args = parser.parse_args(argv)

    from napari_twinvae.core.io import load_model

    raw, crops, counts, sources, independent, cells = load_set(args.set)
    preset = args.preset or ("bf" if "bf" in args.set.name else "pc")
    wanted = {"transfer", "default", "density"} & set(args.methods)
    pretrained = load_model(args.model) if wanted else None
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    n_eval = []
    minutes = None if args.transfer_epochs else args.transfer_minutes
    for seed in args.seeds:
        labeled, evaluation = split(sources, independent, args.labeled_share, seed)
        train, train_counts = crops[labeled], counts[labeled]
        test, truth = crops[evaluation], counts[evaluation]
        test_raw = raw[evaluation]
        n_eval.append(int(evaluation.size))
        print(
            f"seed {seed}: {labeled.size} labeled crops from "
            f"{np.unique(sources[labeled]).size} images, {evaluation.size} evaluation crops",
            file=sys.stderr,
        )
        for method in args.methods:
            start = time.perf_counter()
            info: dict = {}
            if method == "median":
                estimates = median_baseline(train_counts, len(test))
            elif method == "log":
                estimates, info = log_baseline(train, train_counts, test)
            elif method == "natural":
                model, run = train_network(
                    train, train_counts, "scratch", args.natural_minutes, seed, preset,
                    synthetic_ratio=0.0, regressor_delay=0, device=args.device,
                )  # fmt: skip
                estimates = network_estimates(model, test_raw, args.device)
                info = {"epochs": run.best.get("epoch"), "stopped": run.stopped}
            elif method == "transfer":
                model, run = train_network(
                    train, train_counts, str(pretrained.path), minutes, seed, preset,
                    epochs=args.transfer_epochs, decoder=args.decoders, head="regressor",
                    device=args.device, freeze=args.freeze,
                )  # fmt: skip
                estimates = network_estimates(model, test_raw, args.device)
                info = {"epochs": run.best.get("epoch"), "stopped": run.stopped}
            elif method == "forest":
                estimates = forest_baseline(train, [cells[i] for i in labeled], test, seed)
            elif method == "density":
                model, run = train_network(
                    train, train_counts, str(pretrained.path), minutes, seed, preset,
                    cells=[cells[i] for i in labeled], epochs=args.transfer_epochs,
                    decoder=args.decoders, head="density", device=args.device,
                    freeze=args.freeze,
                )  # fmt: skip
                estimates = network_estimates(model, test_raw, args.device)
                info = {"epochs": run.best.get("epoch"), "stopped": run.stopped}
            else:
                estimates = network_estimates(pretrained, test_raw, args.device)
            metrics = count_metrics(estimates, truth)
            metrics["seconds"] = time.perf_counter() - start
            results[method].append(metrics)
            print(
                f"  {method:9s} accuracy {metrics['accuracy']:.3f}  MAE {metrics['mae']:.2f}  "
                f"bias {metrics['bias']:+.2f}  "
                f"MRE {metrics['mre']:.1f} %  ({metrics['seconds']:.0f} s) {info or ''}",
                file=sys.stderr,
            )
    summary = {}
    for method, runs in results.items():
        entry = {}
        for key in ("accuracy", "mae", "mre", "bias"):
            values = np.array([r[key] for r in runs], dtype=float)
            entry[key] = round(float(np.mean(values)), 4)
            entry[f"{key}_sd"] = round(float(np.std(values)), 4) if values.size > 1 else 0.0
        summary[method] = entry
    print(
        json.dumps(
            {
                "set": args.set.name,
                "seeds": args.seeds,
                "n_eval": n_eval,
                "labeled_share": args.labeled_share,
                "transfer_epochs": args.transfer_epochs,
                "decoders": args.decoders,
                "freeze": args.freeze,
                "device": args.device,
                "budget_minutes": {
                    "transfer": minutes,
                    "natural": args.natural_minutes,
                },
                "methods": summary,
            }
        )
    )
    return 0 if all(math.isfinite(v["mae"]) for v in summary.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
