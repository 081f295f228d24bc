"""Training images per second, full step and decoder-free step, against this machine's limit.

Each step is timed inside the real training loop (``core.train``: augmentation, forward, loss,
backward, optimizer step), one batch between two progress reports. The machines are shared and
noisy, so full and decoder-free steps alternate with short matrix-multiply probes, each step's
speed is divided by the limit that its neighbouring probes measured, and the median over rounds
is reported. limit = matmul FLOP/s / FLOPs per training image (3x the forward pass).
The last line is a JSON object.

    PYTHONPATH=src python bench/bench_train.py [--batch-size 64] [--rounds 8] [--device cpu]
        [--float32]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import numpy as np
import torch
from _compute import TRAIN_FULL_FLOPS, TRAIN_NO_DECODER_FLOPS, matmul_flops

from napari_twinvae.core.data import NaturalSet
from napari_twinvae.core.precision import autocast_dtype, precision_name
from napari_twinvae.core.synthetic import SynthConfig, generate
from napari_twinvae.core.train import TrainConfig, Training


def natural_frames(n: int) -> NaturalSet:
    """Stand-ins for labeled natural frames: synthetic images with their counts."""
    batch = generate(n, SynthConfig.preset("pc"), rng=1)
    return NaturalSet(batch.images, batch.counts, np.ones(n, dtype=bool))


def steps(config: TrainConfig, natural: NaturalSet):
    """Seconds of each training step, one per ``next()``; epoch ends are skipped."""
    gen = Training(natural, config).run()
    try:
        previous_mid_epoch = False
        while True:
            start = time.perf_counter()
            progress = next(gen)
            seconds = time.perf_counter() - start
            mid_epoch = not progress.epoch_end
            if mid_epoch and previous_mid_epoch:  # no epoch start or validation inside
                yield seconds
            previous_mid_epoch = mid_epoch
    finally:
        gen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8, help="timed steps of each kind")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind")
    parser.add_argument("--device", default="cpu", help="cpu, cuda (mixed precision) or auto")
    parser.add_argument("--probe", type=float, default=0.3, help="seconds per matmul probe")
    parser.add_argument(
        "--float32", action="store_true", help="no bfloat16 autocast, even where it is available"
    )
    args = parser.parse_args()

    bs = args.batch_size
    natural = natural_frames(8 * bs)
    common = TrainConfig(
        init="scratch", epochs=10_000, batch_size=bs, validation_share=0.0,
        synthetic_ratio=1.0, regressor_delay=0, device=args.device, seed=0,
        mixed_precision=not args.float32,
    )  # fmt: skip
    kinds = {
        "full": (steps(common, natural), TRAIN_FULL_FLOPS),
        "no_decoder": (
            steps(dataclasses.replace(common, decoder=False), natural),
            TRAIN_NO_DECODER_FLOPS,
        ),
    }
    # the limit is the matrix-multiply speed in the precision the convolutions run in
    autocast = autocast_dtype(common)
    precision = precision_name(autocast)
    dtype = autocast or torch.float32
    for timer, _ in kinds.values():
        for _ in range(args.warmup):
            next(timer)
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    ratios: dict[str, list[float]] = {k: [] for k in kinds}
    probes: list[float] = []
    gpu = args.device != "cpu" and torch.cuda.is_available()
    # the limit of the device that trains
    where = {"device": "cuda", "size": 4096} if gpu else {}
    probe = matmul_flops(seconds=args.probe, dtype=dtype, **where)
    for _ in range(args.rounds):
        for kind, (timer, flops) in kinds.items():
            if gpu:
                torch.cuda.synchronize()
            seconds = next(timer)
            after = matmul_flops(seconds=args.probe, dtype=dtype, **where)
            rate = bs / seconds
            rates[kind].append(rate)
            ratios[kind].append(rate / ((probe + after) / 2 / flops))
            probes.append(after)
            probe = after
    for timer, _ in kinds.values():
        timer.close()

    gflops = statistics.median(probes) / 1e9
    print(f"training in {precision}")
    print(
        f"matmul ({str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads): "
        f"median {gflops:.1f} GFLOP/s"
    )
    result: dict[str, float | int | str] = {}
    for kind, (_, flops) in kinds.items():
        rate, ratio = statistics.median(rates[kind]), statistics.median(ratios[kind])
        limit = statistics.median(probes) / flops
        print(
            f"{kind:>10}: {rate:6.1f} images/s (median of {args.rounds} steps of {bs}, best "
            f"{max(rates[kind]):.1f}); limit ~{limit:.1f} images/s; ratio {ratio:.2f} "
            f"(per-step range {min(ratios[kind]):.2f}-{max(ratios[kind]):.2f})"
        )
        result[f"images_per_s_{kind}"] = round(rate, 2)
        result[f"ratio_{kind}"] = round(ratio, 3)
    speedup = result["images_per_s_no_decoder"] / result["images_per_s_full"]
    print(f"decoder-free step: {speedup:.2f}x the full step")
    result.update(
        speedup_no_decoder=round(speedup, 2),
        matmul_gflops=round(gflops, 1),
        precision=precision,
        batch_size=bs,
        device=args.device,
        cpus=os.cpu_count() or 0,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
