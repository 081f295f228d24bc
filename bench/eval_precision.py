"""Does the default count's bfloat16 cost accuracy? Counts in both precisions, side by side.

    PYTHONPATH=src python bench/eval_precision.py [--data DATA] [--model default]

Counts every set of bench/eval_views.py (fresh synthetic test images per preset, clean and
hardened; the six sample growth series; with ``--data`` the real sets without transfer) with the
default settings twice: in the precision a default count takes on this machine
(``core.count_paths.counting_dtype``) and in float32 throughout (``mixed_precision=False``).
Prints exact share and MAE of each, the mean and largest |difference| of the estimates and the
share of rounded counts that differ; the last line is a JSON object. On a CPU without native
bfloat16 both counts are float32 and the differences are zero.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_views import parsed, sets  # noqa: E402

from napari_twinvae.core.count_paths import counting_dtype  # noqa: E402
from napari_twinvae.core.predict import count  # noqa: E402


def main(argv=None) -> int:
    args, checkpoint = parsed(__doc__, argv)
    precision = str(counting_dtype(torch.device("cpu"))).removeprefix("torch.")
    report = {"precision": precision}
    for name, (images, truth) in sets(args.data).items():
        row = {}
        for label, mixed in ((precision, True), ("float32", False)):
            result = count(images, checkpoint, device="cpu", mixed_precision=mixed)
            row[label] = result
        a, b = row[precision], row["float32"]
        diff = np.abs(a.estimates[:, 0] - b.estimates[:, 0])
        report[name] = {
            label: {
                "exact": round(float(np.mean(r.counts[:, 0] == truth)), 4),
                "mae": round(float(np.mean(np.abs(r.counts[:, 0] - truth))), 4),
            }
            for label, r in row.items()
        } | {
            "mean_abs_difference": round(float(diff.mean()), 4),
            "max_abs_difference": round(float(diff.max()), 4),
            "rounded_differ": round(float(np.mean(a.counts != b.counts)), 4),
        }
        r = report[name]
        print(
            f"{name}: {precision} {r[precision]['exact']:.1%}/{r[precision]['mae']:.3f}, float32 "
            f"{r['float32']['exact']:.1%}/{r['float32']['mae']:.3f}; |difference| mean "
            f"{r['mean_abs_difference']:.4f}, max {r['max_abs_difference']:.3f}; rounded counts "
            f"differ in {r['rounded_differ']:.1%}",
            file=sys.stderr,
            flush=True,
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
