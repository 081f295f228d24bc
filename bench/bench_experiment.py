"""A whole experiment: one process against a local dask cluster at the same total threads.

Writes a synthetic experiment of ``--positions`` OME-Zarr stores of ``--frames`` 128x128 frames
each (phase-contrast preset, seeded), then counts it with ``count_experiment`` in this process
with all threads, and on a LocalCluster of ``--workers`` processes that share the same threads,
alternating over ``--rounds`` (best of each; the cluster is started once, outside the timing, and
every process has loaded the model and bioio's readers before the first timed round). Reports the frames per second
of both, the cluster's overhead against the single process, the cluster's start, and the peak
memory (resident set) of this process and of each worker. Needs the extras ``formats`` and
``cluster``. The last line is a JSON object.

    PYTHONPATH=src python bench/bench_experiment.py [--positions 8] [--frames 256] [--workers 2]
        [--views 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_twinvae.core.experiment import _loaded, count_experiment
from napari_twinvae.core.sources import open_positions
from napari_twinvae.core.synthetic import SynthConfig, generate
from napari_twinvae.core.threads import cores, use_threads


def write_experiment(folder: Path, positions: int, frames: int) -> list[Path]:
    from bioio_ome_zarr.writers import OMEZarrWriter

    config = SynthConfig.preset("pc")
    stores = []
    for p in range(positions):
        images = generate(frames, config, rng=p).images
        data = np.clip(images * 4095, 0, 4095).astype(np.uint16)
        store = folder / f"position{p:03d}.ome.zarr"
        writer = OMEZarrWriter(
            str(store),
            level_shapes=[(frames, 1, 1, *data.shape[1:])],
            dtype=np.uint16,
            axes_names=["t", "c", "z", "y", "x"],
            axes_types=["time", "channel", "space", "space", "space"],
            chunk_shape=[(16, 1, 1, *data.shape[1:])],
        )
        writer.write_full_volume(data[:, None, None])
        stores.append(store)
    return stores


def peak_mib() -> float:
    """Peak resident memory of the calling process, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=8)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--views", type=int, default=1)
    # best of 5 rounds: with 2, one busy moment on a shared machine moved the overhead by 30 points
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    threads = use_threads()
    total = args.positions * args.frames
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stores = write_experiment(folder, args.positions, args.frames)
        settings = {"device": "cpu", "views": args.views}
        started = time.perf_counter()
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=max(1, threads // args.workers),
                processes=True,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            client.wait_for_workers(args.workers)
            start_s = time.perf_counter() - started
            # every worker loads the model and bioio's readers once (imports: seconds)
            client.run(_loaded, "default", "cpu")
            client.run(open_positions, str(stores[0]))
            count_experiment(stores[:1], folder / "warm.csv", **settings)  # and this process
            single, clustered = [], []
            for r in range(args.rounds):
                use_threads(threads)
                t = time.perf_counter()
                here = count_experiment(stores, folder / f"here{r}.csv", **settings)
                single.append(time.perf_counter() - t)
                t = time.perf_counter()
                there = count_experiment(
                    stores, folder / f"there{r}.csv", client=client, **settings
                )
                clustered.append(time.perf_counter() - t)
                same = all(
                    np.array_equal(a.counts, b.counts)
                    for a, b in zip(here.results, there.results, strict=True)
                )
                print(
                    f"round {r}: one process {single[-1]:.1f} s, {args.workers} workers "
                    f"{clustered[-1]:.1f} s, counts identical: {same}",
                    flush=True,
                )
            worker_mib = sorted(client.run(peak_mib).values())
    one, many = min(single), min(clustered)
    overhead = many / one - 1
    print(
        f"{total} frames ({args.positions} positions x {args.frames}, {args.views} view(s)): "
        f"one process with {threads} threads {total / one:,.0f} frames/s, {args.workers} workers "
        f"x {max(1, threads // args.workers)} thread(s) {total / many:,.0f} frames/s: overhead "
        f"{overhead:+.0%}; cluster start {start_s:.1f} s; peak memory {peak_mib():,.0f} MiB here, "
        f"{', '.join(f'{m:,.0f}' for m in worker_mib)} MiB per worker"
    )
    print(
        json.dumps(
            {
                "frames": total,
                "positions": args.positions,
                "views": args.views,
                "threads": threads,
                "cores": cores(),
                "workers": args.workers,
                "single_frames_per_s": round(total / one, 1),
                "cluster_frames_per_s": round(total / many, 1),
                "overhead": round(overhead, 3),
                "cluster_start_s": round(start_s, 1),
                "peak_mib_single": round(peak_mib()),
                "peak_mib_per_worker": [round(m) for m in worker_mib],
                "counts_identical": same,
            }
        )
    )


if __name__ == "__main__":
    main()
