"""``napari-twinvae synth``: write synthetic chamber images with their counts and cell centres.

The files are byte-identical for the same arguments: the TIFF carries no date or software tag,
and ``points.csv`` uses napari's Points layout (``index,axis-0,axis-1,axis-2``, axis-0 = frame)
so that napari opens it as a Points layer over ``images.tif``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path

from napari_twinvae.cli import UsageError, cell_range, refuse_overwriting_inputs, say_done

log = logging.getLogger(__name__)

SERIES_FRAMES = 60


def add_parser(subparsers) -> None:
    from napari_twinvae.core.synthetic import DEFAULT_PRESET, PRESETS

    parser = subparsers.add_parser(
        "synth",
        help="write synthetic images with known counts and cell centres",
        description=(
            "Write DIR/images.tif (N x 128 x 128 float32 in [0, 1]), DIR/counts.csv "
            "(frame,count) and DIR/points.csv (napari Points layout: the true cell centres)."
        ),
    )
    parser.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        metavar="|".join(PRESETS),
        help="bf: bright field, pc: phase contrast (default: %(default)s)",
    )
    parser.add_argument(
        "--n", type=int, help="number of images (with --series: frames, default 60)"
    )
    parser.add_argument(
        "--series",
        action="store_true",
        help="the sample time series (File > Open Sample): one chamber growing from one cell",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    parser.add_argument(
        "--background",
        type=Path,
        help="2D TIFF of the empty chamber (e.g. the mean of your frames with few cells)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_twinvae.core.io import atomic_write, read_stack, write_tiff
    from napari_twinvae.core.synthetic import (
        PRESETS,
        SynthConfig,
        generate,
        synthetic_timeseries,
    )

    started = time.perf_counter()
    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    n = args.n if args.n is not None else (SERIES_FRAMES if args.series else None)
    if n is None:
        raise UsageError("--n is needed: how many images to write")
    if n < 1:  # an empty stack is no use: count and train refuse it
        raise UsageError(f"--n must be at least 1, got {n}")
    if args.series and args.background is not None:
        raise UsageError("--series draws its own chamber; leave out --background")
    for name in ("images.tif", "counts.csv", "points.csv"):
        refuse_overwriting_inputs(args.out / name, [args.background], "--out")
    background = None
    if args.background is not None:
        background = read_stack(args.background, lazy=False)
        if background.ndim != 2:
            raise UsageError(
                f"{args.background}: the background must be one 2D image, got shape "
                f"{background.shape}"
            )
    if args.series:
        batch = synthetic_timeseries(args.preset, n, seed=args.seed)
    else:
        batch = generate(n, SynthConfig.preset(args.preset), rng=args.seed, background=background)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    write_tiff(out / "images.tif", batch.images)
    with atomic_write(out / "counts.csv", "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["frame", "count"])
        writer.writerows(enumerate(batch.counts.tolist()))
    with atomic_write(out / "points.csv", "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "axis-0", "axis-1", "axis-2"])
        for i, (frame, y, x) in enumerate(batch.centres.tolist()):
            writer.writerow([i, int(frame), f"{y:.3f}", f"{x:.3f}"])
    what = f"the {n}-frame sample series" if args.series else f"{n} images"
    on = f" on the background {args.background}" if args.background is not None else ""
    say_done(
        "synth",
        f"wrote {what} ({args.preset}, seed {args.seed}{on}; "
        f"{cell_range(batch.counts.min(), batch.counts.max())} per image, {len(batch.centres)} in "
        f"all) to {out}: images.tif, counts.csv, points.csv",
        time.perf_counter() - started,
    )
    return 0
