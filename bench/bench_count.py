"""Counting speed: images/s on 128x128 frames against the machine's own matmul limit.

The counting path costs 104.7 M multiply-adds per image (the authors' network); at the float32 matmul
speed measured in the same run, that allows ``limit_images_per_s``. The machines are shared and
noisy, so the matmul limit and the counting speed are measured in alternating rounds and the best
of each counts. These rates count each image once (``views=1``), so they compare one pass of the
network with the limit; a default count averages the four turns of each chamber
(``core.predict.DEFAULT_VIEWS``) and costs four passes. Also reported: the network alone on ready
crops, the authors' full forward pass (encoder + decoder, NCHW) for comparison, and
(``--series``) seconds to count a series of that many frames end to end from a TIFF on disk, with
the default views and with one; the count's default precision (``core.count_paths.counting_dtype``:
bfloat16 inner convolutions on CPUs that compute it natively) against float32 throughout
(``*_float32``; the compute limit and its ratio are float32's); and the same rate and series for a model with a density head
(``density_*``), which counts from the first three encoder maps and the head instead (written first to a temporary folder; the file is in the page
cache when it is read back). The last line is a JSON object.

    PYTHONPATH=src python bench/bench_count.py [--n 1024] [--rounds 5] [--series 10000]
    PYTHONPATH=src python bench/bench_count.py --sweep 16,32,64,128   # images/s per batch size
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _compute import COUNT_FLOPS, matmul_flops  # noqa: E402

from napari_twinvae.core import ModelConfig, TwinVAE  # noqa: E402
from napari_twinvae.core.count_paths import CountingPath, counting_dtype  # noqa: E402
from napari_twinvae.core.io import load_checkpoint, save_checkpoint  # noqa: E402
from napari_twinvae.core.predict import DEFAULT_BATCH_SIZE, DEFAULT_VIEWS, count  # noqa: E402


def _rate(run, images: int) -> float:
    start = time.perf_counter()
    run()
    return images / (time.perf_counter() - start)


def _full_forward(model: TwinVAE, crops: torch.Tensor, batch_size: int) -> None:
    """The authors' way to count: the whole twin, decoder included, NCHW, no_grad."""
    with torch.no_grad():
        for i in range(0, len(crops), batch_size):
            model(crops[i : i + batch_size], "natural")


def _network(path: CountingPath, crops: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for i in range(0, len(crops), batch_size):
            path(crops[i : i + batch_size])


def _write_series(path: Path, n: int, rng: np.random.Generator) -> None:
    """An (n, 128, 128) uint16 TIFF written page by page (never whole in memory)."""
    import tifffile

    def pages():
        for _ in range(n):
            yield rng.integers(0, 4096, (128, 128), dtype=np.uint16)

    tifffile.imwrite(path, pages(), shape=(n, 128, 128), dtype=np.uint16, photometric="minisblack")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="frames per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measurement rounds")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--series", type=int, default=10_000, help="frames in the TIFF (0: skip)")
    parser.add_argument("--sweep", default="", help="comma-separated batch sizes to compare")
    args = parser.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = TwinVAE(ModelConfig()).eval()  # the paper's network; random weights cost the same
    frames = rng.integers(0, 4096, (args.n, 128, 128), dtype=np.uint16)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = load_checkpoint(save_checkpoint(Path(folder) / "model.pt", model))
        dense = TwinVAE(ModelConfig(head="density")).eval()
        density = load_checkpoint(save_checkpoint(Path(folder) / "density.pt", dense))
        crops = torch.rand(args.n, 1, 128, 128)
        path = CountingPath(checkpoint.model)

        if args.sweep:
            for batch_size in (int(b) for b in args.sweep.split(",")):
                best = max(
                    _rate(
                        lambda b=batch_size: count(frames, checkpoint, batch_size=b, views=1),
                        args.n,
                    )
                    for _ in range(args.rounds)
                )
                print(
                    f"batch {batch_size:4d}: {best:7,.0f} images/s (count, best of {args.rounds})"
                )

        count(frames[:64], checkpoint, batch_size=args.batch_size, views=1)  # warm up
        count(frames[:64], density, batch_size=args.batch_size, views=1)
        best = dict.fromkeys(["limit", "count", "float32", "network", "full", "density"], 0.0)
        full_n = min(args.n, 256)  # the full pass is slow; fewer images give the same rate
        for _ in range(args.rounds):
            best["limit"] = max(best["limit"], matmul_flops(seconds=1.0) / COUNT_FLOPS)
            best["count"] = max(
                best["count"],
                _rate(
                    lambda: count(frames, checkpoint, batch_size=args.batch_size, views=1), args.n
                ),
            )
            best["float32"] = max(
                best["float32"],
                _rate(
                    lambda: count(
                        frames, checkpoint, batch_size=args.batch_size, views=1,
                        mixed_precision=False,
                    ),
                    args.n,
                ),
            )  # fmt: skip
            best["density"] = max(
                best["density"],
                _rate(lambda: count(frames, density, batch_size=args.batch_size, views=1), args.n),
            )
            best["network"] = max(
                best["network"], _rate(lambda: _network(path, crops, args.batch_size), args.n)
            )
            best["full"] = max(
                best["full"], _rate(lambda: _full_forward(model, crops[:full_n], 64), full_n)
            )
        series_s, density_series_s, float32_series_s = {}, None, None
        if args.series:
            tiff = Path(folder) / "series.tif"
            _write_series(tiff, args.series, rng)
            for views in (DEFAULT_VIEWS, 1):
                series_s[views] = min(
                    _seconds(
                        lambda v=views: count(tiff, checkpoint, batch_size=args.batch_size, views=v)
                    )
                    for _ in range(2)
                )
            density_series_s = _seconds(lambda: count(tiff, density, batch_size=args.batch_size))
            float32_series_s = _seconds(
                lambda: count(tiff, checkpoint, batch_size=args.batch_size, mixed_precision=False)
            )

    ratio = best["float32"] / best["limit"]
    precision = str(counting_dtype(torch.device("cpu"))).removeprefix("torch.")
    print(
        f"counting: {best['count']:,.0f} images/s ({precision} inner convolutions; 128x128 uint16 "
        f"frames, normalised, batch {args.batch_size}, best of {args.rounds}); float32 "
        f"{best['float32']:,.0f}/s ({best['count'] / best['float32']:.2f}x); float32 network "
        f"alone {best['network']:,.0f}/s; authors' full forward {best['full']:,.0f}/s"
    )
    print(
        f"matmul limit: {best['limit'] * COUNT_FLOPS / 1e9:,.1f} GFLOP/s = "
        f"{best['limit']:,.0f} images/s at {COUNT_FLOPS / 2e6:.1f} M multiply-adds each; "
        f"float32 counting's ratio {ratio:.2f}"
    )
    print(
        f"density head: {best['density']:,.0f} images/s "
        f"({best['density'] / best['count']:.2f}x the regressor path)"
        + (f"; the series in {density_series_s:.1f} s" if density_series_s else "")
    )
    for views, seconds in series_s.items():
        print(
            f"series: {args.series:,} frames from a TIFF on disk in {seconds:.1f} s "
            f"({args.series / seconds:,.0f} frames/s, {views} view(s), best of 2)"
        )
    if float32_series_s:
        print(f"series in float32 throughout: {float32_series_s:.1f} s ({DEFAULT_VIEWS} views)")
    result = {
        "images_per_s": round(best["count"], 1),
        "precision": precision,
        "images_per_s_float32": round(best["float32"], 1),
        "limit_images_per_s": round(best["limit"], 1),
        "ratio": round(ratio, 3),
        "network_images_per_s": round(best["network"], 1),
        "full_forward_images_per_s": round(best["full"], 1),
        "matmul_gflops": round(best["limit"] * COUNT_FLOPS / 1e9, 1),
        "batch_size": args.batch_size,
        "series_frames": args.series,
        "views": DEFAULT_VIEWS,
        "series_seconds": round(series_s[DEFAULT_VIEWS], 2) if series_s else None,
        "series_seconds_one_view": round(series_s[1], 2) if series_s else None,
        "series_seconds_float32": round(float32_series_s, 2) if float32_series_s else None,
        "density_images_per_s": round(best["density"], 1),
        "density_series_seconds": round(density_series_s, 2) if density_series_s else None,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
