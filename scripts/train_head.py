"""Give a trained model a density head learned from synthetic cell centres, its encoders frozen.

    PYTHONPATH=src python scripts/train_head.py --init runs/stage8.pt --out runs/head.pt \
        --epochs 170 --seed 0 --cosine

An experiment towards a default model with a density head (docs/density.md, "A head trained on
synthetic cells"); not how the shipped model was made. Only the density head
(core.model.DensityHead, 16,689 parameters) trains: the encoders, the latent code, the regressor
and the decoders keep the start model's weights. Every epoch draws new images: 1,024 hardened
ones for the natural twin (core.pretrain.HardenedMix, a fifth clean, three in ten cells touching
an earlier one, normalised as counting normalises frames) and 1,024 clean ones for the synthetic
twin (CleanScenes, below), each with its exact cell centres; each batch of 32 is flipped or
turned at random with its centres. The loss is the density head's own: the pixel MSE of the map
and a tenth of the L1 error of its sum (LossWeights.density, density_sum), Adam at 1e-3 (constant,
or falling to 0 with --cosine).

With ``--validate N`` (default 256) the run counts N fresh clean and N hardened images of each
preset, as a user counts them, every ``--validate-every`` epochs, and keeps the head of the
epoch with the highest mean exact share (then the lowest MAE); those images come from their own
seed (5), apart from the training images and from the test sets of bench/eval_views.py (seed
1). ``--validate 0`` keeps the last epoch. ``--workers K`` draws the images of the next epochs
in K processes while the head trains (the same images as without). ``--head-out`` also writes
the head's weights alone (70 KB; the best so far whenever one is found), ``--head-weights`` starts the head from such a file
(``--epochs 0`` then only puts it on ``--init``'s model). Seeded; the encoders run in bfloat16
where the device computes it. The last line is a JSON object with the run's epochs, steps,
minutes and validation.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import sys
import time

import numpy as np

BATCH = 32
IMAGES_PER_TWIN = 1024
VALIDATION_SEED = (
    5  # bench/eval_views.py tests with seed 1, eval_bias and eval_uncertainty fit with 11
)


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


def epoch_images(twins: dict, epoch: int) -> dict:
    """Each twin's images and centres of one epoch (seeded by the epoch alone)."""
    return {domain: mix.batch(IMAGES_PER_TWIN, epoch) for domain, mix in twins.items()}


def _quiet_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per drawing process


def epochs_of(twins: dict, epochs: int, workers: int):
    """Yield :func:`epoch_images` for every epoch in order; with ``workers`` processes the
    next epochs are drawn while the caller trains on this one (at most ``workers`` ahead)."""
    if workers <= 0:
        for epoch in range(epochs):
            yield epoch_images(twins, epoch)
        return
    # spawned, not forked: a fork of a process that has run torch's threads can hang
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_quiet_worker
    ) as pool:
        ahead = collections.deque()
        for epoch in range(epochs):
            while len(ahead) < workers and epoch + len(ahead) < epochs:
                ahead.append(pool.submit(epoch_images, twins, epoch + len(ahead)))
            yield ahead.popleft().result()


def validation_sets(n: int) -> dict:
    """N fresh clean and N hardened raw images of each preset with their counts, drawn as the
    test sets are (``core.pretrain.synthetic_test_sets``) but from :data:`VALIDATION_SEED`."""
    from napari_twinvae.core.pretrain import synthetic_test_sets

    return {f"{p} {kind}": s for (p, kind), s in synthetic_test_sets(n, VALIDATION_SEED).items()}


def validate(checkpoint, sets: dict, device) -> dict:
    """Exact share, MAE and bias per set and their means, counted as a user counts."""
    from napari_twinvae.core.metrics import accuracy, mae
    from napari_twinvae.core.predict import count

    scores = {}
    for name, (images, truth) in sets.items():
        estimates = count(images, checkpoint, batch_size=256, device=device, uncertainty=False)
        found = estimates.estimates[:, 0]
        scores[name] = {
            "exact": round(accuracy(found, truth), 4),
            "mae": round(mae(found, truth), 4),
            "bias": round(float(np.mean(found - truth)), 4),
        }
    means = {k: round(float(np.mean([s[k] for s in scores.values()])), 4) for k in ("exact", "mae")}
    return {**scores, **means}


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
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--validate", type=int, default=256, help="images per preset and kind")
    parser.add_argument("--validate-every", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="processes drawing images ahead")
    parser.add_argument("--head-weights", help="start the head from these weights")
    parser.add_argument("--head-out", help="also write the head's weights alone here")
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
    from napari_twinvae.core.device import select_device
    from napari_twinvae.core.io import load_model, save_checkpoint
    from napari_twinvae.core.losses import density_loss
    from napari_twinvae.core.pretrain import HardenedMix

    torch.manual_seed(args.seed)
    device = select_device(args.device)
    start = load_model(args.init, device=device)
    model = start.model
    model.set_head("density")
    head = model.density_head
    if args.head_weights:
        head.load_state_dict(torch.load(args.head_weights, map_location=device, weights_only=True))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("density_head."))
    model.eval()  # the frozen encoders keep their batch-norm statistics; the head has none
    optimizer = torch.optim.Adam(head.parameters(), lr=args.learning_rate)
    twins = {
        "natural": HardenedMix(
            args.seed, normalization=start.normalization, clean_share=0.2, touching=0.3
        ),
        "synthetic": CleanScenes(args.seed),
    }
    weights = LossWeights()
    dtype = counting_dtype(device)
    per_epoch = 2 * (IMAGES_PER_TWIN // BATCH)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            0.5 * (1 + math.cos(math.pi * step / max(1, args.epochs * per_epoch)))
            if args.cosine
            else 1.0
        ),
    )
    checks = validation_sets(args.validate) if args.validate > 0 else None
    best, history = None, []
    began, steps = time.perf_counter(), 0
    for epoch, drawn in enumerate(epochs_of(twins, args.epochs, args.workers)):
        losses = []
        for t, (domain, batch) in enumerate(drawn.items()):
            cells = cells_per_image(batch.centres, len(batch.images))
            rng = np.random.default_rng([args.seed, epoch, t])
            order = rng.permutation(len(batch.images))
            for i in range(0, len(order) - BATCH + 1, BATCH):
                chosen = order[i : i + BATCH]
                points, mask = pad_points([cells[j] for j in chosen])
                x = torch.from_numpy(batch.images[chosen]).float()[:, None]
                x, points = dihedral(x, points, int(rng.integers(8)))
                x, points, mask = x.to(device), points.to(device), mask.to(device)
                with (
                    torch.no_grad(),
                    torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32),
                ):
                    maps = model.encoder_maps(x, domain, depth=3)
                density = head([m.float() for m in maps])
                targets = density_targets(points, mask)
                every = torch.ones(len(chosen), dtype=torch.bool, device=device)
                terms = density_loss(density, targets, every, map_counts(targets), every)
                loss = weights.density * terms.map + weights.density_sum * terms.sum
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                steps += 1
        minutes = (time.perf_counter() - began) / 60
        line = f"epoch {epoch + 1}: loss {np.mean(losses):.4f} ({minutes:.1f} min)"
        last = epoch + 1 == args.epochs
        if checks is not None and ((epoch + 1) % args.validate_every == 0 or last):
            scores = validate(start, checks, device)
            history.append({"epoch": epoch + 1, "exact": scores["exact"], "mae": scores["mae"]})
            line += f", validation {scores['exact']:.1%} exact, MAE {scores['mae']:.3f}"
            if best is None or (scores["exact"], -scores["mae"]) > (
                best["scores"]["exact"],
                -best["scores"]["mae"],
            ):
                state = {k: v.detach().clone() for k, v in head.state_dict().items()}
                best = {"epoch": epoch + 1, "scores": scores, "state": state}
                if args.head_out:  # the best head so far survives a run stopped early
                    torch.save({k: v.cpu() for k, v in state.items()}, args.head_out)
        print(line, file=sys.stderr, flush=True)
    if best is not None:
        head.load_state_dict(best["state"])
    summary = dict(start.summary)
    summary["head_stage"] = {
        "command": "python scripts/train_head.py --init <start> --out <out> "
        f"--epochs {args.epochs} --seed {args.seed} --learning-rate {args.learning_rate:g}"
        + (" --cosine" if args.cosine else "")
        + f" --validate {args.validate} --validate-every {args.validate_every}",
        "trains": "the density head only, on exact centres of synthetic images of both twins",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "epochs": args.epochs,
        "steps": steps,
        "minutes": round((time.perf_counter() - began) / 60, 1),
    }
    if best is not None:
        summary["head_stage"]["kept_epoch"] = best["epoch"]
        summary["head_stage"]["validation"] = best["scores"]
        summary["head_stage"]["validation_history"] = history
    if args.head_out and best is None:
        torch.save({k: v.cpu() for k, v in head.state_dict().items()}, args.head_out)
    save_checkpoint(args.out, model, normalization=start.normalization, summary=summary, half=True)
    print(json.dumps({k: v for k, v in summary["head_stage"].items() if k != "validation_history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
