"""Transfers with decoders on, run to a fixed number of epochs: does any step go non-finite?

    PYTHONPATH=src python bench/eval_divergence.py DATA/yit_bf_yeast --epochs 150 --seeds 0 1 2
    PYTHONPATH=src python bench/eval_divergence.py DATA/yit_bf_yeast --relief --crops 23

A user's transfer (default model, decoders on, 23 counted DIC crops) once stopped with a
non-finite reconstruction loss in the natural twin (docs/reliability.md). This replays such
transfers on the real sets: every labeled crop trains, at the default settings, for a fixed
number of epochs (not a time budget, so a run repeats). ``--relief`` turns the crops into
DIC-like relief first (the directional derivative of the smoothed crop), the nearest stand-in
for DIC the project has. The last line is JSON: per seed the stop reason, the skipped batches
and each twin's last losses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from eval_real import load_set

from napari_twinvae.core.data import natural_set
from napari_twinvae.core.intensity import normalize_frames
from napari_twinvae.core.labels import labels_from_table
from napari_twinvae.core.train import TrainConfig, Training


def relief(raw: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """DIC-like crops: the gradient of the smoothed crop along the diagonal, shear and all."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(raw.astype(np.float32), (0, sigma, sigma))
    return normalize_frames(np.gradient(smooth, axis=1) + np.gradient(smooth, axis=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("data", type=Path, help="a real set's folder (images.tif, counts.csv)")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--crops", type=int, default=None, help="the first N crops only")
    parser.add_argument("--relief", action="store_true", help="DIC-like relief crops")
    parser.add_argument("--learning-rate", type=float, default=TrainConfig().learning_rate)
    args = parser.parse_args(argv)

    raw, crops, counts = load_set(args.data)[:3]
    n = len(crops) if args.crops is None else min(args.crops, len(crops))
    crops = relief(raw[:n]) if args.relief else crops[:n]
    labels = labels_from_table({i: int(c) for i, c in enumerate(counts[:n])}, n)
    runs = {}
    for seed in args.seeds:
        config = TrainConfig(
            init="default", epochs=args.epochs, seed=seed, learning_rate=args.learning_rate
        )
        began = time.perf_counter()
        # no start= : a run trains its start model in place, so each seed loads config.init anew
        training = Training(natural_set(crops, labels), config)
        for progress in training.run():
            if progress.epoch_end and progress.epoch % 10 == 0:
                print(f"seed {seed} epoch {progress.epoch}", file=sys.stderr, flush=True)
        result = training.result
        runs[seed] = {
            "stopped": result.stopped,
            "epochs": result.epochs,
            "skipped_batches": result.info.get("skipped_steps", 0),
            "last_losses": {
                twin: {k: round(v, 4) for k, v in terms.items()}
                for twin, terms in result.history[-1]["losses"].items()
            },
            "seconds": round(time.perf_counter() - began, 1),
        }
        print(json.dumps({seed: runs[seed]}), file=sys.stderr, flush=True)
    print(json.dumps({"set": args.data.name, "crops": n, "relief": args.relief, "runs": runs}))


if __name__ == "__main__":
    main()
