"""Synthetic images per second, per preset, on this machine.

The authors' PIL generator made 110-250 images/s here; the issue asks for at least 1,000. The
machines are shared and noisy, so each preset is timed a few times and the best run counts.
The last line is a JSON object; ``images_per_s`` is the slower preset's rate.

    PYTHONPATH=src python bench/bench_synth.py [--n 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from napari_twinvae.core.synthetic import PRESETS, SynthConfig, generate


def images_per_second(preset: str, n: int, repeats: int) -> float:
    """Best of ``repeats`` runs of ``generate(n)`` with the preset, in images per second."""
    config = SynthConfig.preset(preset)
    generate(64, config, rng=0)  # warm up imports and caches
    best = 0.0
    for seed in range(repeats):
        start = time.perf_counter()
        generate(n, config, rng=seed)
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per preset")
    args = parser.parse_args()
    rates = {}
    for preset in PRESETS:
        rates[preset] = images_per_second(preset, args.n, args.repeats)
        print(
            f"{preset}: {rates[preset]:,.0f} images/s ({args.n} images of 128x128, best of {args.repeats})"
        )
    result = {
        "images_per_s": round(min(rates.values()), 1),
        "per_preset": {k: round(v, 1) for k, v in rates.items()},
        "n": args.n,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
