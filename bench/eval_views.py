"""Which orientations a count should average: the default model's accuracy with each subset.

    PYTHONPATH=src python bench/eval_views.py [--data DATA]

Every image is counted once per orientation (``core.count_paths.ORIENTATIONS``, one view each);
a subset's count is the mean of its orientations' estimates, rounded, as ``count(views=...)``
does. Sets: 1,000 fresh synthetic test images per preset, clean and hardened (test seed 1, as
bench/eval_uncertainty.py draws them), the six sample growth series (``synthetic_timeseries``,
both presets, seeds 0-2) and, with ``--data``, the ``nonoverlap`` crops of the real sets without
transfer. Prints exact share and MAE per set and subset; the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_real import load_set  # noqa: E402

from napari_twinvae.core.count_paths import ORIENTATIONS  # noqa: E402
from napari_twinvae.core.io import load_model  # noqa: E402
from napari_twinvae.core.metrics import round_counts  # noqa: E402
from napari_twinvae.core.predict import count  # noqa: E402

SUBSETS = {
    "1": [0],
    "2: half turn": [0, 1],
    "2: mirrored": [0, 4],
    "4: turns": [0, 1, 2, 3],
    "4: mirror images": [0, 1, 4, 5],
    "8": list(range(8)),
}
"""Indices into ORIENTATIONS; the first of each kind is what ``views=1, 2, 4, 8`` counts."""
REAL_SETS = ("usiigaci_phc", "yit_bf_yeast")


def oriented(frames: np.ndarray, index: int) -> np.ndarray:
    transpose, dims = ORIENTATIONS[index]
    base = np.swapaxes(frames, -1, -2) if transpose else frames
    return np.ascontiguousarray(np.flip(base, dims) if dims else base)


def sets(data: Path | None) -> dict:
    from napari_twinvae.core.pretrain import synthetic_test_sets
    from napari_twinvae.core.synthetic import PRESETS, synthetic_timeseries

    found = {f"synthetic {p}, {kind}": s for (p, kind), s in synthetic_test_sets(1000, 1).items()}
    for preset in PRESETS:
        series = [synthetic_timeseries(preset, 60, seed) for seed in (0, 1, 2)]
        found[f"sample series {preset} (3 x 60 frames)"] = (
            np.concatenate([s.images for s in series]),
            np.concatenate([s.counts for s in series]),
        )
    for name in REAL_SETS if data is not None else ():
        if (data / name).is_dir():
            raw, _, counts, _, independent, _ = load_set(data / name)
            found[name] = (raw[independent], counts[independent])
    return found


def parsed(doc: str, argv=None) -> tuple[argparse.Namespace, object]:
    """``--data`` and ``--model`` (the sets of :func:`sets` and the model that counts them), as
    this script and bench/eval_precision.py take them: the arguments and the loaded model."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder of the real sets (usiigaci_phc, ...)")
    parser.add_argument("--model", default="default")
    args = parser.parse_args(argv)
    return args, load_model(args.model, device="cpu")


def main(argv=None) -> int:
    args, checkpoint = parsed(__doc__, argv)
    report = {}
    for name, (images, truth) in sets(args.data).items():
        estimates = np.stack(
            [
                count(oriented(images, k), checkpoint, batch_size=128, device="cpu", views=1,
                      uncertainty=False).estimates[:, 0]
                for k in range(len(ORIENTATIONS))
            ]
        )  # fmt: skip
        row = {}
        for label, index in SUBSETS.items():
            counted = round_counts(estimates[index].mean(axis=0))
            row[label] = {
                "exact": round(float(np.mean(counted == truth)), 4),
                "mae": round(float(np.mean(np.abs(counted - truth))), 4),
            }
        report[name] = row
        shown = "  ".join(f"{k} {v['exact']:.1%}/{v['mae']:.2f}" for k, v in row.items())
        print(f"{name}: {shown}", file=sys.stderr, flush=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
