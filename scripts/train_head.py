"""Give a trained model a density head learned from synthetic cell centres, its encoders frozen.

    PYTHONPATH=src python scripts/train_head.py --init runs/stage8.pt --out runs/head.pt \
        --epochs 170 --seed 0

An experiment towards a default model with a density head (docs/density.md, "A head trained on
synthetic cells"); not how the shipped model was made. Only the density head
(core.model.DensityHead, 16,689 parameters) trains: the encoders, the latent code, the regressor
and the decoders keep the start model's weights. Every epoch draws new images: 1,024 hardened
ones for the natural twin (core.pretrain.HardenedMix, a fifth clean, three in ten cells touching
an earlier one, normalised as counting normalises frames) and 1,024 clean ones for the synthetic
twin (CleanScenes, below), each with its exact cell centres; each batch of 32 is flipped or
turned at random with its centres. The loss is the density head's own: the pixel MSE of the map
and a tenth of the L1 error of its sum (LossWeights.density, density_sum), Adam at 1e-3 (constant,
or falling to 0 with --cosine), the last epoch kept. Seeded; the encoders run in bfloat16 where the CPU computes it. The
last line is a JSON object with the run's epochs, steps and minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time

import numpy as np

BATCH = 32
IMAGES_PER_TWIN = 1024


def dihedral(x, points, k: int):
    """Images (B, 1, H, W) and their (y, x) centres (B, P, 2) flipped / transposed by ``k`` (0-7)."""
    last = x.shape[-1] - 1
    if k & 1:
        x, points = x.flip(-1), points.clone()
        points[..., 1] = last - points[..., 1]
    if k & 2:
        x, points = x.flip(-2), points.clone()
        points[..., 0] = last - points[..., 0]
    if k & 4:
        x, points = x.transpose(-1, -2), points.flip(-1)
    return x, points


class CleanScenes:
    """The synthetic twin's images: clean scenes of both presets, half each, drawn with the
    presets' own counts and three in ten cells touching an earlier one, new every epoch."""

    def __init__(self, seed: int) -> None:
        from napari_twinvae.core.synthetic import PRESETS, SynthConfig

        self.seed = seed
        self.configs = [dataclasses.replace(SynthConfig.preset(p), touching=0.3) for p in PRESETS]

    def batch(self, n: int, epoch: int):
        from napari_twinvae.core.synthetic import SynthBatch, generate

        rng = np.random.default_rng([self.seed, 77, epoch])
        parts = [generate(n // len(self.configs), c, rng=rng) for c in self.configs]
        first = np.cumsum([0] + [len(p.images) for p in parts[:-1]])
        centres = [p.centres + [k, 0, 0] for p, k in zip(parts, first, strict=True)]
        return SynthBatch(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.counts for p in parts]),
            np.concatenate(centres),
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", required=True, help="the trained model to give a head")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=170)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--cosine", action="store_true", help="let the rate fall along a half cosine to 0"
    )
    args = parser.parse_args(argv)

    import torch

    from napari_twinvae.core.config import LossWeights
    from napari_twinvae.core.count_paths import counting_dtype
    from napari_twinvae.core.density import (
        cells_per_image,
        density_targets,
        map_counts,
        pad_points,
    )
    from napari_twinvae.core.io import load_model, save_checkpoint
    from napari_twinvae.core.losses import density_loss
    from napari_twinvae.core.pretrain import HardenedMix

    torch.manual_seed(args.seed)
    start = load_model(args.init)
    model = start.model
    model.set_head("density")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("density_head."))
    model.eval()  # the frozen encoders keep their batch-norm statistics; the head has none
    head = model.density_head
    optimizer = torch.optim.Adam(head.parameters(), lr=args.learning_rate)
    twins = {
        "natural": HardenedMix(
            args.seed, normalization=start.normalization, clean_share=0.2, touching=0.3
        ),
        "synthetic": CleanScenes(args.seed),
    }
    weights = LossWeights()
    dtype = counting_dtype(torch.device("cpu"))
    began, steps = time.perf_counter(), 0
    per_epoch = 2 * (IMAGES_PER_TWIN // BATCH)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            0.5 * (1 + math.cos(math.pi * step / (args.epochs * per_epoch))) if args.cosine else 1.0
        ),
    )
    for epoch in range(args.epochs):
        losses = []
        for t, (domain, mix) in enumerate(twins.items()):
            batch = mix.batch(IMAGES_PER_TWIN, epoch)
            cells = cells_per_image(batch.centres, len(batch.images))
            rng = np.random.default_rng([args.seed, epoch, t])
            order = rng.permutation(len(batch.images))
            for i in range(0, len(order) - BATCH + 1, BATCH):
                chosen = order[i : i + BATCH]
                points, mask = pad_points([cells[j] for j in chosen])
                x = torch.from_numpy(batch.images[chosen]).float()[:, None]
                x, points = dihedral(x, points, int(rng.integers(8)))
                with (
                    torch.no_grad(),
                    torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32),
                ):
                    maps = model.encoder_maps(x, domain, depth=3)
                density = head([m.float() for m in maps])
                targets = density_targets(points, mask)
                every = torch.ones(len(chosen), dtype=torch.bool)
                terms = density_loss(density, targets, every, map_counts(targets), every)
                loss = weights.density * terms.map + weights.density_sum * terms.sum
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                steps += 1
        minutes = (time.perf_counter() - began) / 60
        print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f} ({minutes:.1f} min)", file=sys.stderr)
    summary = dict(start.summary)
    summary["head_stage"] = {
        "command": "python scripts/train_head.py --init <start> --out <out> "
        f"--epochs {args.epochs} --seed {args.seed} --learning-rate {args.learning_rate:g}"
        + (" --cosine" if args.cosine else ""),
        "trains": "the density head only, on exact centres of synthetic images of both twins",
        "epochs": args.epochs,
        "steps": steps,
        "minutes": round((time.perf_counter() - began) / 60, 1),
    }
    save_checkpoint(args.out, model, normalization=start.normalization, summary=summary, half=True)
    print(json.dumps(summary["head_stage"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
