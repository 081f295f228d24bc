"""How well the uncertainty finds the wrong counts, and whether "label next" beats random labels.

    PYTHONPATH=src python bench/eval_uncertainty.py --data DATA [--transfer-minutes 1]
    PYTHONPATH=src python bench/eval_uncertainty.py --fit   # prints core.uncertainty's default
    PYTHONPATH=src python bench/eval_uncertainty.py --data DATA --label-next-only --label-epochs 50

Sets: fresh hardened synthetic test images of both presets (counted by the default model with its
shipped calibration, which was fitted on other synthetic images, ``--fit``), and the real sets
``usiigaci_phc`` and ``yit_bf_yeast`` under DATA, counted by the default model; there the
calibration is fitted on held-out labeled crops (out of fold, five folds split by source image)
and scored on the ``nonoverlap == 1`` crops. Per set: the error rate, the share of the wrong counts
held by the 10 % most uncertain (``top10_error_share``; chance is 0.1, the best possible
``ceiling`` = min(1, 0.1 / error rate)) and the share of the absolute error they hold. The
calibration curves are drawn to ``docs/uncertainty.png``.

"Label next" (``core.uncertainty.label_next``) against random choice on ``usiigaci_phc``: per
seed, 30 % of the source images are held out for evaluation; from the others 5 % and 10 % of all
source images are chosen (by the default model's uncertainty, spread over the sources, or at
random), their crops labeled by their clicked cells, as a user labels, and the default model
transferred to them (bench/eval_real.py's ``train_network``, decoder-free, a fixed time budget
or ``--label-epochs``); MAE on the held-out crops. ``--label-next-only`` runs only this part.

Also: the time-series flags on the six sample growth series (phase contrast and bright field,
seeds 0-2), alone and as the Count cells dock lists the counts to check (flagged, or an
uncertainty of at least 0.5). The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_real import load_set, network_estimates, train_network  # noqa: E402

from napari_twinvae.core.metrics import count_metrics, round_counts  # noqa: E402
from napari_twinvae.core.predict import count  # noqa: E402
from napari_twinvae.core.uncertainty import (  # noqa: E402
    calibration_curve,
    check_order,
    features,
    fit_calibration,
    label_next,
    probability_wrong,
    series_flags,
    top_error_share,
)

ROOT = Path(__file__).resolve().parents[1]
REAL_SETS = ("usiigaci_phc", "yit_bf_yeast")
FOLDS = 5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the sets ---------------------------------------------------------------------------------
def synthetic_sets(checkpoint, n: int, seed: int, clean: bool = False) -> dict:
    """Per preset: (estimates, signals, truth) of fresh images drawn as the default model's own
    test sets are (scripts/train_default.py), hardened (and clean, for fitting)."""
    from napari_twinvae.core.pretrain import synthetic_test_sets
    from napari_twinvae.core.synthetic import PRESETS

    scenes = synthetic_test_sets(n, seed)
    sets = {}
    for preset in PRESETS:
        for kind in ("hardened", "clean") if clean else ("hardened",):
            images, truth = scenes[preset, kind]
            r = count(images, checkpoint, batch_size=128, device="cpu")
            sets[f"synthetic_{preset}_{kind}"] = (r.estimates[:, 0], r.signals[:, 0], truth)
    return sets


def out_of_fold(estimates, signals, truth, sources, seed: int = 0) -> np.ndarray:
    """P(wrong) for each crop from a calibration fitted on the crops of the other source images."""
    ids = np.unique(sources)
    shuffled = np.random.default_rng(seed).permutation(ids)
    fold_of = dict(zip(shuffled, np.arange(ids.size) % FOLDS, strict=True))
    folds = np.array([fold_of[s] for s in sources])
    feats = features(estimates, signals)
    wrong = round_counts(estimates) != truth
    out = np.empty(len(truth))
    for k in np.unique(folds):
        fit = fit_calibration(feats[folds != k], wrong[folds != k], source="held-out folds")
        out[folds == k] = fit.probability(feats[folds == k])
    return out


def score(probability, estimates, truth) -> dict:
    wrong = round_counts(estimates) != truth
    rate = float(wrong.mean())
    err = np.abs(round_counts(estimates) - truth).astype(float)
    k = max(1, int(round(0.1 * len(truth))))
    top = np.argsort(-probability, kind="stable")[:k]
    return {
        "n": int(len(truth)),
        "error_rate": round(rate, 4),
        "top10_error_share": round(top_error_share(probability, wrong), 4),
        "ceiling": round(min(1.0, 0.1 / rate), 4) if rate else None,
        "top10_abs_error_share": round(float(err[top].sum() / max(err.sum(), 1e-9)), 4),
        "auc": round(_auc(probability, wrong), 4),
        "mean_probability": round(float(np.mean(probability)), 4),
        "curve": calibration_curve(probability, wrong, bins=5),
    }


def _auc(score, positive) -> float:
    """The chance that a wrong count is more uncertain than a right one (ties count half)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    ranks = rankdata(score)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# -- after a transfer: the run's own calibration -------------------------------------------
def own_calibration(args, folder: Path) -> dict:
    """Per seed: the default model transferred with the density head (clicked cells, the default
    epochs) to ``--calibration-share`` of the source images, enough for the run to hold ten or
    more labeled crops out and rescale the calibration to them; the evaluation crops scored with
    that calibration and with the shipped one."""
    from eval_real import split

    from napari_twinvae.core.uncertainty import DEFAULT_CALIBRATION

    raw, crops, truth, sources, independent, cells = load_set(folder)
    preset = "bf" if "bf" in folder.name else "pc"
    runs = {"own": [], "shipped": []}
    for seed in args.seeds:
        labeled, evaluation = split(sources, independent, args.calibration_share, seed)
        checkpoint, run = train_network(
            crops[labeled], truth[labeled], args.model, None, seed, preset,
            cells=[cells[i] for i in labeled], epochs=args.transfer_epochs, head="density",
        )  # fmt: skip
        if "uncertainty" not in checkpoint.summary:
            log(f"{folder.name} seed {seed}: no calibration of its own ({run.messages})")
            continue
        for name, calibration in (("own", None), ("shipped", DEFAULT_CALIBRATION)):
            r = count(raw[evaluation], checkpoint, device="cpu", calibration=calibration)
            est, p = r.estimates[:, 0], r.uncertainty[:, 0]
            entry = score(p, est, truth[evaluation])
            wrong = round_counts(est) != truth[evaluation]
            entry["brier"] = round(float(np.mean((p - wrong) ** 2)), 4)
            runs[name].append(entry)
            shown = {k: v for k, v in entry.items() if k != "curve"}
            log(f"{folder.name} seed {seed} {name} calibration: {shown}")
    keys = ("error_rate", "mean_probability", "brier", "top10_error_share", "auc")
    return {
        name: {k: round(float(np.mean([e[k] for e in entries])), 4) for k in keys}
        for name, entries in runs.items()
        if entries
    }


# -- label next -------------------------------------------------------------------------------
def label_minutes(args) -> float | None:
    """The time budget of label next's transfers: none when they run ``--label-epochs``."""
    return None if args.label_epochs else args.transfer_minutes


def label_choice(args, checkpoint, folder: Path) -> dict:
    """MAE after transfer, per share and seed, for sources chosen by label_next and at random."""
    raw, crops, counts, sources, independent, cells = load_set(folder)
    whole = count(raw, checkpoint, device="cpu")
    per_crop = whole.uncertainty[:, 0]
    ids = np.unique(sources)
    per_source = np.array([per_crop[sources == s].mean() for s in ids])
    minutes = label_minutes(args)
    results: dict = {}
    for share in args.shares:
        k = max(1, int(round(share * ids.size)))
        for seed in args.seeds:
            rng = np.random.default_rng([seed, 7])
            held_out = rng.choice(ids, size=int(round(0.3 * ids.size)), replace=False)
            pool = np.setdiff1d(ids, held_out)
            ranked = np.where(np.isin(ids, pool), per_source, np.nan)
            choices = {
                "label_next": ids[label_next(ranked, n=k)],
                "random": rng.choice(pool, size=k, replace=False),
            }
            test = np.flatnonzero(np.isin(sources, held_out) & independent)
            for how, chosen in choices.items():
                labeled = np.flatnonzero(np.isin(sources, chosen))
                started = time.perf_counter()
                # the frames are labeled as a user labels them: clicks on the cells
                model, run = train_network(
                    crops[labeled], counts[labeled], str(checkpoint.path), minutes, seed, "pc",
                    cells=[cells[i] for i in labeled], decoder=False, epochs=args.label_epochs,
                )  # fmt: skip
                m = count_metrics(network_estimates(model, raw[test]), counts[test])
                results.setdefault(f"{share:g}", {}).setdefault(how, []).append(m["mae"])
                spans = [round(float(counts[sources == s].mean()), 1) for s in chosen]
                log(
                    f"  share {share:g} seed {seed} {how:10s}: sources {chosen.tolist()} (mean "
                    f"counts {spans}, {labeled.size} crops), MAE {m['mae']:.2f} on {test.size} "
                    f"crops, best epoch {run.best.get('epoch')} of {run.epochs} "
                    f"({time.perf_counter() - started:.0f} s)"
                )
    summary = {}
    for share, ways in results.items():
        summary[share] = {
            how: {
                "mae": round(float(np.mean(v)), 3),
                "mae_sd": round(float(np.std(v)), 3),
                "per_seed": [round(x, 3) for x in v],
            }
            for how, v in ways.items()
        }
    return summary


# -- growth series ----------------------------------------------------------------------------
def growth_flags(checkpoint) -> dict:
    """The series flags on the six sample growth series: share of wrong counts caught, share of
    frames flagged; and the same for the Count cells dock's *Check these frames* list (flagged
    or at least even odds of a wrong count, ``check_order``)."""
    from napari_twinvae.core.synthetic import synthetic_timeseries

    wrong, flagged, listed = [], [], []  # per frame of every series
    for preset in ("pc", "bf"):
        for seed in range(3):
            series = synthetic_timeseries(preset, 60, seed)
            r = count(series.images, checkpoint, device="cpu")
            flags = series_flags(r.counts[:, 0])
            on_list = np.zeros(len(flags), dtype=bool)
            on_list[[row for row, _ in check_order(r.uncertainty[:, 0], flags)]] = True
            wrong.append(r.counts[:, 0] != series.counts)
            flagged.append(flags != "")
            listed.append(on_list)
    wrong, flagged, listed = (np.concatenate(x) for x in (wrong, flagged, listed))
    n_wrong = max(int(wrong.sum()), 1)
    return {
        "frames": wrong.size,
        "wrong": int(wrong.sum()),
        "caught_share": round(int((flagged & wrong).sum()) / n_wrong, 4),
        "flagged_share": round(float(flagged.mean()), 4),
        "check_list_caught_share": round(int((listed & wrong).sum()) / n_wrong, 4),
        "check_list_share": round(float(listed.mean()), 4),
    }


# -- the figure -------------------------------------------------------------------------------
def draw_curves(path: Path, curves: dict[str, list]) -> None:
    """Predicted against observed chance of a wrong count, per set, as a PNG (Pillow)."""
    from PIL import Image, ImageDraw, ImageFont

    size, pad = 520, 60
    image = Image.new("RGB", (size + 220, size), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    side = size - 2 * pad

    def at(p: float, o: float) -> tuple[float, float]:
        return pad + p * side, size - pad - o * side

    draw.rectangle([*at(0, 1), *at(1, 0)], outline="black")
    draw.line([*at(0, 0), *at(1, 1)], fill=(170, 170, 170), width=1)
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x, y = at(tick, 0)
        draw.text((x - 8, y + 6), f"{tick:g}", fill="black", font=font)
        x, y = at(0, tick)
        draw.text((x - 34, y - 7), f"{tick:g}", fill="black", font=font)
    draw.text((pad + side / 2 - 110, size - 26), "predicted chance of a wrong count", fill="black",
              font=font)  # fmt: skip
    draw.text((8, 14), "observed share wrong (bins of predicted)", fill="black", font=font)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    for i, (name, curve) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        points = [at(p, o) for p, o, _ in curve]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for (x, y), (_, _, n) in zip(points, curve, strict=True):
            r = 3 + min(5, np.log10(max(n, 1)) * 2)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        draw.rectangle([size + 10, 60 + 24 * i, size + 24, 74 + 24 * i], fill=colour)
        draw.text((size + 30, 60 + 24 * i), name, fill="black", font=font)
    image.save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder of the real sets (usiigaci_phc, ...)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=1000, help="synthetic test images per preset")
    parser.add_argument("--test-seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--transfer-minutes", type=float, default=1.0)
    parser.add_argument("--transfer-epochs", type=int, default=50, help="of the own calibration")
    parser.add_argument("--calibration-share", type=float, default=0.3, help="ditto, labeled")
    parser.add_argument(
        "--label-epochs", type=int, help="label next's transfers: epochs instead of the budget"
    )
    parser.add_argument("--no-label-next", action="store_true", help="skip the transfers")
    parser.add_argument(
        "--label-next-only", action="store_true", help="with --data: only label next's transfers"
    )
    parser.add_argument(
        "--own-calibration-only",
        action="store_true",
        help="with --data: only the shipped against the run's own calibration after transfers",
    )
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "uncertainty.png")
    parser.add_argument("--fit", action="store_true", help="print the default calibration")
    args = parser.parse_args(argv)

    from napari_twinvae.core.io import load_model

    checkpoint = load_model(args.model, device="cpu")
    if args.fit:  # other images than the test seed's: seed 11, clean and hardened
        sets = synthetic_sets(checkpoint, args.n, 11, clean=True)
        est = np.concatenate([s[0] for s in sets.values()])
        sig = np.concatenate([s[1] for s in sets.values()])
        truth = np.concatenate([s[2] for s in sets.values()])
        fit = fit_calibration(
            features(est, sig),
            round_counts(est) != truth,
            source=f"default model, {len(truth)} synthetic images (seed 11, clean and hardened)",
        )
        print(json.dumps(fit.to_dict()))
        return 0

    if args.label_next_only:
        if args.data is None:
            parser.error("--label-next-only needs --data")
        choice = label_choice(args, checkpoint, args.data / REAL_SETS[0])
        print(json.dumps({"label_next": choice, "transfer_minutes": label_minutes(args),
                          "label_epochs": args.label_epochs}))  # fmt: skip
        return 0

    if args.own_calibration_only:
        if args.data is None:
            parser.error("--own-calibration-only needs --data")
        own = own_calibration(args, args.data / REAL_SETS[0])
        print(json.dumps({"own_calibration": own}))
        return 0

    report: dict = {"sets": {}}
    for name, (est, sig, truth) in synthetic_sets(checkpoint, args.n, args.test_seed).items():
        report["sets"][name] = score(probability_wrong(est, sig), est, truth)
        log(f"{name}: { {k: v for k, v in report['sets'][name].items() if k != 'curve'} }")
    for name in REAL_SETS if args.data is not None else ():
        folder = args.data / name
        if not folder.is_dir():
            log(f"{folder}: not there, skipped")
            continue
        raw, _, truth, sources, independent, _ = load_set(folder)
        r = count(raw, checkpoint, device="cpu")
        est, sig = r.estimates[:, 0], r.signals[:, 0]
        held_out = out_of_fold(est, sig, truth, sources)
        keep = independent
        report["sets"][name] = score(held_out[keep], est[keep], truth[keep])
        shipped = score(r.uncertainty[keep, 0], est[keep], truth[keep])
        report["sets"][name]["top10_error_share_shipped_calibration"] = shipped["top10_error_share"]
        log(f"{name}: { {k: v for k, v in report['sets'][name].items() if k != 'curve'} }")
    draw_curves(args.plot, {k: v["curve"] for k, v in report["sets"].items()})
    log(f"wrote {args.plot}")
    report["series_flags"] = growth_flags(checkpoint)
    log(f"series flags: {report['series_flags']}")
    if args.data is not None and not args.no_label_next and (args.data / REAL_SETS[0]).is_dir():
        report["own_calibration"] = own_calibration(args, args.data / REAL_SETS[0])
        report["label_next"] = label_choice(args, checkpoint, args.data / REAL_SETS[0])
        report["transfer_minutes"] = label_minutes(args)
        report["label_epochs"] = args.label_epochs
    report["top10_error_share"] = {k: v["top10_error_share"] for k, v in report["sets"].items()}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
