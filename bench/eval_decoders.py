"""Whether a model's decoders draw the cells: how its views follow the frames they come from.

    PYTHONPATH=src python bench/eval_decoders.py [--model default] [--n 200] [--device auto]

Three views, as the counting dock shows them (core.model_view; each crop encoded to the mean of
its code, then decoded):

* *clean*: ``--n`` fresh clean synthetic images per preset (test seed 1, as
  bench/eval_views.py draws them) through the synthetic twin, encoder and decoder, as that twin
  trains on them: the generator's gray values, not stretched per frame as counting stretches
  a user's frames;
* *hardened*: their hardened renderings through the natural twin, normalised as counting does;
* *series*: the six sample growth series (``synthetic_timeseries``, both presets, seeds 0-2)
  through the natural encoder and the synthetic decoder, the *synthetic view* of the dock.

Per view: the mean over images of the Pearson correlation between a view and the image the
model read, and the contrast, the view's standard
deviation over the crop's. A view that draws nothing but the mean gray has a correlation near 0;
the issue's floor for the clean images is 0.8. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from napari_twinvae.core.chambers import check_regions
from napari_twinvae.core.device import select_device
from napari_twinvae.core.inputs import checkpoint_of, crops_of, frames_of
from napari_twinvae.core.model_view import decode_crops, reconstruct, translate
from napari_twinvae.core.pretrain import synthetic_test_sets
from napari_twinvae.core.synthetic import PRESETS, synthetic_timeseries

TEST_SEED = 1
SERIES_SEEDS = (0, 1, 2)


def crops_read(frames, checkpoint) -> np.ndarray:
    """The chamber crops (N, 128, 128) the model reads from whole frames, normalised."""
    stack = frames_of(frames)
    boxes = check_regions(None, stack.shape[1:])
    crops = crops_of(stack, boxes, checkpoint.normalization, range(len(stack)))
    return crops.reshape(-1, *crops.shape[-2:])


def agreement(views: np.ndarray, crops: np.ndarray) -> dict:
    """Mean per-image correlation and contrast ratio of views against the crops."""
    v = views.reshape(len(views), -1).astype(np.float64)
    c = crops.reshape(len(crops), -1).astype(np.float64)
    v = v - v.mean(axis=1, keepdims=True)
    c = c - c.mean(axis=1, keepdims=True)
    sv, sc = np.linalg.norm(v, axis=1), np.linalg.norm(c, axis=1)
    usable = (sv > 0) & (sc > 0)  # a flat crop (or view) has no correlation
    corr = (v * c).sum(axis=1)[usable] / (sv * sc)[usable]
    return {
        "correlation": round(float(corr.mean()), 3) if corr.size else 0.0,
        "contrast": round(float(np.mean(sv[sc > 0] / sc[sc > 0])), 3),
        "images": int(len(views)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="default or a model file")
    parser.add_argument("--n", type=int, default=200, help="synthetic images per preset and kind")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    checkpoint = checkpoint_of(args.model, select_device(args.device))
    report: dict[str, dict] = {}
    model = checkpoint.model.eval()
    device = next(model.parameters()).device
    for (preset, kind), (images, _) in synthetic_test_sets(args.n, TEST_SEED).items():
        if kind == "clean":
            views = decode_crops(model, images, "synthetic", "synthetic", 128, device)
            report[f"{preset}_{kind}"] = agreement(views, images)
        else:
            views = reconstruct(images, checkpoint, device=args.device)[:, 0]
            report[f"{preset}_{kind}"] = agreement(views, crops_read(images, checkpoint))
    for preset in PRESETS:
        views, crops = [], []
        for seed in SERIES_SEEDS:
            frames = synthetic_timeseries(preset, seed=seed).images
            views.append(translate(frames, checkpoint, device=args.device)[:, 0])
            crops.append(crops_read(frames, checkpoint))
        report[f"{preset}_series"] = agreement(np.concatenate(views), np.concatenate(crops))
    for name, row in report.items():
        print(f"{name:>14}: correlation {row['correlation']:+.3f}, contrast {row['contrast']:.2f}")
    clean = [row["correlation"] for name, row in report.items() if name.endswith("_clean")]
    report["clean_correlation"] = round(float(np.mean(clean)), 3)
    print(json.dumps({"model": str(args.model), **report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
