"""``napari-twinvae count``: count the cells of every chamber in every frame of one or more stacks.

Writes ``frame,chamber,count,estimate,flag,uncertainty,series_flag`` (plus a leading ``file``
column when several stacks are given) atomically. TIFF stacks are read through their memory map, one batch at a time, so a
series larger than RAM counts in bounded memory. On a terminal a progress bar runs on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from napari_twinvae.cli import (
    UsageError,
    cell_range,
    model_name,
    refuse_overwriting_inputs,
    say_done,
)

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "count",
        help="count cells per frame and chamber, write a CSV",
        description=(
            "Count the cells in every frame (and every chamber) of one or more image stacks "
            "with a Twin-VAE checkpoint. Writes frame,chamber,count,estimate,flag,uncertainty,"
            "series_flag (plus file when several stacks are given): uncertainty is the chance "
            "that the count is wrong, series_flag marks counts that break the growth series."
        ),
    )
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGES",
        help="TIFF stacks, OME-TIFF, OME-Zarr, ND2, ... (see --position)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    add_model_arguments(parser)
    parser.add_argument(
        "--rois",
        type=Path,
        help="chamber rectangles: napari's Shapes CSV (default: the whole frame is one chamber)",
    )
    parser.add_argument(
        "--points",
        type=Path,
        metavar="CELLS.csv",
        help="also write the predicted cells as napari's Points CSV (a model with a density head; "
        "one image stack)",
    )
    parser.add_argument(
        "--position",
        action="append",
        metavar="NAME|N",
        help="count only this stage position of multi-position files (name or number; repeat "
        "for several; default: all)",
    )
    parser.add_argument(
        "--channel",
        metavar="NAME|N",
        help="the label-free channel of multi-channel files (default: the only one, or the one "
        "named bright field or phase contrast)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="count positions and chunks of frames in N processes (a local dask cluster; needs "
        "napari-twinvae[cluster])",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="count on a running dask cluster, e.g. tcp://head-node:8786",
    )
    parser.set_defaults(func=run)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --batch-size, --views, --float32 and --device, shared with ``evaluate``."""
    from napari_twinvae.core.predict import DEFAULT_BATCH_SIZE, DEFAULT_VIEWS, VIEWS

    parser.add_argument(
        "--model", default="default", help="'default' (the shipped model) or a checkpoint file"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"chamber images per forward pass (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--views",
        type=int,
        default=DEFAULT_VIEWS,
        help=(
            f"{', '.join(map(str, VIEWS))}: orientations of each chamber whose counts are "
            f"averaged: 2 a half turn apart, 4 the four turns, 8 with the mirror images (default "
            f"{DEFAULT_VIEWS}; 1 runs the network once per chamber and counts a little less "
            "exactly)"
        ),
    )
    parser.add_argument(
        "--float32",
        action="store_false",
        dest="mixed_precision",
        help=(
            "count in float32 throughout (default: bfloat16 inner convolutions where the CPU "
            "computes them natively, 1.7x as fast, counts within about 0.01 cells)"
        ),
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")


def check_model_arguments(args: argparse.Namespace):
    """The device and the loaded checkpoint, or one-line errors for bad values."""
    from napari_twinvae.core.device import select_device
    from napari_twinvae.core.io import load_model
    from napari_twinvae.core.predict import VIEWS

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.views not in VIEWS:
        raise UsageError(f"--views must be one of {', '.join(map(str, VIEWS))}, got {args.views}")
    device = select_device(args.device)
    return device, load_model(args.model, device=device)


def run(args: argparse.Namespace) -> int:
    from napari_twinvae._commands._experiment import is_experiment, run_experiment
    from napari_twinvae.core.chambers import (
        as_frames,
        fit_regions,
        read_regions_csv,
        resized_whole_frame,
    )
    from napari_twinvae.core.io import read_stack
    from napari_twinvae.core.predict import iter_count, write_cells_csv, write_counts_csv

    if is_experiment(args):
        return run_experiment(args)
    started = time.perf_counter()
    out: Path = args.out
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; name the CSV file to write")
    refuse_overwriting_inputs(out, [*args.images, args.rois, args.model])
    cells = args.points is not None
    if cells and args.points.is_dir():
        raise UsageError(f"{args.points}: is a folder; name the Points CSV file to write")
    if cells and len(args.images) > 1:
        raise UsageError("--points writes the cells of one image stack; give one IMAGES file")
    if cells:
        refuse_overwriting_inputs(
            args.points, [*args.images, args.rois, args.model, out], "--points"
        )
    device, checkpoint = check_model_arguments(args)
    regions = read_regions_csv(args.rois) if args.rois is not None else None
    stacks, notes = [], []
    for path in args.images:
        try:
            stacks.append(as_frames(read_stack(path)))
        except ValueError as err:
            message = str(err)
            raise UsageError(message if str(path) in message else f"{path}: {message}") from None
        try:
            _, clipped = fit_regions(regions, stacks[-1].shape[1:])
        except ValueError as err:
            where = f"{args.rois}: {err} (in {path})" if regions else f"{path}: {err}"
            raise UsageError(where) from None
        notes += [f"{path}: {note}" for note in clipped]
        if resized_whole_frame(stacks[-1].shape, regions):
            notes.append(
                f"{path}: whole {stacks[-1].shape[1]}x{stacks[-1].shape[2]} frames are resized "
                "to 128x128; pass --rois to count per chamber"
            )
    progress = Progress(sum(s.shape[0] for s in stacks), enabled=sys.stderr.isatty())
    results = []
    for path, stack in zip(args.images, stacks, strict=True):
        counting = iter_count(
            stack,
            checkpoint,
            regions,
            args.batch_size,
            device,
            views=args.views,
            cells=cells,
            mixed_precision=args.mixed_precision,
        )
        try:
            while True:
                step = next(counting)
                progress.show(step.done)
        except StopIteration as finished:
            results.append(finished.value)
        except ValueError as err:
            raise UsageError(f"{path}: {err}") from None
        progress.advance(stack.shape[0])
    progress.close()
    files = [str(p) for p in args.images] if len(args.images) > 1 else None
    write_counts_csv(out, results, files)
    if cells:
        write_cells_csv(args.points, results[0])
    for note in notes:  # after the counting: a refused frame ends the run with its one line
        log.warning("%s", note)
    flagged = sum(int((r.flags != "").sum()) for r in results)
    if flagged:
        total = sum(r.counts.size for r in results)
        log.warning(
            "%d of %d counts lie outside 0-30, the cells per chamber the model counts; the "
            "flag column marks them (a chamber drawn wrong, or not a chamber?)",
            flagged,
            total,
        )
    doubtful = sum(int((r.uncertainty >= 0.5).sum()) for r in results)
    broken = sum(int((r.series_flags != "").sum()) for r in results)
    if doubtful or broken:
        log.warning(
            "check first: %d counts more likely wrong than right (uncertainty >= 0.5) and %d "
            "that break the growth series (series_flag)",
            doubtful,
            broken,
        )
    frames = sum(len(r.frames) for r in results)
    chambers = results[0].counts.shape[1]
    low = min(int(r.counts.min()) for r in results)
    high = max(int(r.counts.max()) for r in results)
    say_done(
        "count",
        f"counted {', '.join(map(str, args.images))} with {model_name(args.model)}: {frames} "
        f"frames x {chambers} chamber{'s' if chambers != 1 else ''}, {cell_range(low, high)} per "
        f"chamber; wrote {out}" + (f" and {args.points}" if cells else ""),
        time.perf_counter() - started,
    )
    return 0


class Progress:
    """A one-line progress bar on stderr, for terminals only (no noise in logs or pipes)."""

    WIDTH = 30

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(int(total), 1)
        self.enabled = enabled
        self.offset = 0  # frames of the files already finished
        self.started = time.perf_counter()
        self._last = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def show(self, done_in_file: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self._last < 0.1:
            return
        self._last = now
        done = self.offset + done_in_file
        filled = round(self.WIDTH * done / self.total)
        rate = done / max(now - self.started, 1e-9)
        sys.stderr.write(
            f"\rcounting [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
            f"{done:,}/{self.total:,} frames, {rate:,.0f}/s "
        )
        sys.stderr.flush()

    def advance(self, frames: int) -> None:
        self.offset += frames

    def close(self) -> None:
        if self.enabled:
            self._last = 0.0
            self.show(0)
            sys.stderr.write("\n")
            sys.stderr.flush()
