"""Whether one straight line would calibrate the default model's count: its bias per count range
on each kind of scene, and what a line fitted on one kind does to the others.

    PYTHONPATH=src python bench/eval_bias.py [--data DATA] [--model default]

Test sets are bench/eval_views.py's (fresh synthetic images per preset, clean and hardened, test
seed 1; the six sample growth series, seeds 0-2; with ``--data`` the ``nonoverlap`` crops of
the real sets without transfer). Lines ``true = a + b * estimate`` are fitted by least squares on
other images of the same kinds: synthetic seed 11 (as bench/eval_uncertainty.py draws it), clean
or clean and hardened together, and the growth series of seeds 3-5. Counts as a user counts them
(the default orientations). Prints exact share, MAE and bias per set and line; the last line is a
JSON object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_uncertainty import synthetic_sets  # noqa: E402
from eval_views import parsed, sets  # noqa: E402

from napari_twinvae.core.metrics import accuracy, mae  # noqa: E402
from napari_twinvae.core.predict import count  # noqa: E402
from napari_twinvae.core.synthetic import PRESETS, synthetic_timeseries  # noqa: E402

RANGES = ((0, 4), (5, 9), (10, 14), (15, 19), (20, 24), (25, 30))


def scores(estimates: np.ndarray, truth: np.ndarray) -> dict:
    """Exact share and MAE of the rounded counts; the bias of the estimates themselves."""
    return {
        "exact": round(accuracy(estimates, truth), 4),
        "mae": round(mae(estimates, truth), 4),
        "bias": round(float(np.mean(estimates - truth)), 4),
    }


def bias_by_range(estimates: np.ndarray, truth: np.ndarray) -> dict:
    """Mean signed error of the estimate per range of true counts (ranges with a count only)."""
    found = {}
    for low, high in RANGES:
        inside = (truth >= low) & (truth <= high)
        if inside.any():
            found[f"{low}-{high}"] = round(float(np.mean(estimates[inside] - truth[inside])), 3)
    return found


def fitting_sets(checkpoint) -> dict:
    """(estimates, truth) of the images the lines are fitted on: none of them is a test image."""
    synthetic = synthetic_sets(checkpoint, 1000, 11, clean=True)

    def joined(names):
        return tuple(np.concatenate([synthetic[n][k] for n in names]) for k in (0, 2))

    series = [synthetic_timeseries(p, 60, seed) for p in PRESETS for seed in (3, 4, 5)]
    counted = count(np.concatenate([s.images for s in series]), checkpoint, device="cpu")
    return {
        "synthetic clean (seed 11)": joined([f"synthetic_{p}_clean" for p in PRESETS]),
        "synthetic clean and hardened (seed 11)": joined(
            [f"synthetic_{p}_{kind}" for p in PRESETS for kind in ("clean", "hardened")]
        ),
        "growth series (seeds 3-5)": (
            counted.estimates[:, 0],
            np.concatenate([s.counts for s in series]),
        ),
    }


def main(argv=None) -> int:
    args, checkpoint = parsed(__doc__, argv)
    tests = {}
    for name, (images, truth) in sets(args.data).items():
        r = count(images, checkpoint, batch_size=128, device="cpu", uncertainty=False)
        tests[name] = (r.estimates[:, 0], truth)
    lines = {"none": (0.0, 1.0)}
    for name, (estimates, truth) in fitting_sets(checkpoint).items():
        slope, offset = np.polyfit(estimates, truth, 1)
        lines[name] = (float(offset), float(slope))
    report: dict = {"lines": {k: [round(a, 4), round(b, 4)] for k, (a, b) in lines.items()}}
    for name, (estimates, truth) in tests.items():
        row = {"bias_by_count": bias_by_range(estimates, truth)}
        for line, (offset, slope) in lines.items():
            row[line] = scores(offset + slope * estimates, truth)
        report[name] = row
        shown = "  ".join(
            f"{k}: {v['exact']:.1%} / {v['mae']:.2f} / {v['bias']:+.2f}"
            for k, v in row.items()
            if k in lines
        )
        print(f"{name}: bias by count {row['bias_by_count']}\n    {shown}", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
