"""``napari-twinvae count`` for whole experiments: files read through bioio (OME-TIFF, OME-Zarr,
ND2, ...), several stage positions, and many processes (``--workers``) or a dask cluster
(``--scheduler``), through :func:`core.experiment.iter_count_experiment`. The CSV gains a
``position`` column for multi-position files; an interrupted run resumes where it stopped."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time

from napari_twinvae.cli import (
    UsageError,
    cell_range,
    model_name,
    refuse_overwriting_inputs,
    say_done,
)

log = logging.getLogger(__name__)

CLUSTER_EXTRA = "napari-twinvae[cluster]"


def is_experiment(args: argparse.Namespace) -> bool:
    """Whether the count needs the experiment path (plain TIFF stacks keep the simple one)."""
    from napari_twinvae.core.sources import needs_bioio

    return bool(
        args.workers is not None
        or args.scheduler
        or args.position
        or args.channel is not None
        or any(needs_bioio(p) for p in args.images)
    )


def run_experiment(args: argparse.Namespace) -> int:
    from napari_twinvae._commands.count import Progress, check_model_arguments
    from napari_twinvae.core.chambers import read_regions_csv
    from napari_twinvae.core.experiment import iter_count_experiment
    from napari_twinvae.core.sources import open_positions

    started = time.perf_counter()
    if args.out.is_dir():
        raise UsageError(f"{args.out}: is a folder; name the CSV file to write")
    refuse_overwriting_inputs(args.out, [*args.images, args.rois, args.model])
    if args.points is not None:
        raise UsageError("--points writes the cells of one plain image stack")
    if args.workers is not None and args.scheduler:
        raise UsageError("give --workers or --scheduler, not both")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    device, _ = check_model_arguments(args)
    regions = read_regions_csv(args.rois) if args.rois is not None else None
    positions = []
    for path in args.images:
        try:
            positions += open_positions(path, args.position, args.channel)
        except ValueError as err:
            message = str(err)
            raise UsageError(message if str(path) in message else f"{path}: {message}") from None
    with _client(args) as client:
        total = sum(p.frames for p in positions)
        progress = Progress(total, enabled=sys.stderr.isatty())
        counting = iter_count_experiment(
            positions,
            args.out,
            args.model,
            regions,
            batch_size=args.batch_size,
            device=str(device),
            views=args.views,
            mixed_precision=args.mixed_precision,
            client=client,
        )
        try:
            while True:
                step = next(counting)
                progress.show(step.done)
        except StopIteration as finished:
            result = finished.value
        finally:
            counting.close()
        progress.close()
    counts = [r.counts for r in result.results]
    low, high = min(int(c.min()) for c in counts), max(int(c.max()) for c in counts)
    how = f"{args.workers} workers" if args.workers else "the cluster" if args.scheduler else "here"
    resumed = (
        f" ({result.skipped_frames} frames from an earlier run)" if result.skipped_frames else ""
    )
    say_done(
        "count",
        f"counted {len(positions)} position{'s' if len(positions) != 1 else ''} of "
        f"{', '.join(map(str, args.images))} with {model_name(args.model)} ({how}): "
        f"{total} frames x {counts[0].shape[1]} chamber{'s' if counts[0].shape[1] != 1 else ''}"
        f"{resumed}, {cell_range(low, high)} per chamber; wrote {args.out}",
        time.perf_counter() - started,
    )
    return 0


@contextlib.contextmanager
def _client(args: argparse.Namespace):
    """None (count here), a LocalCluster of --workers processes, or the --scheduler's cluster."""
    if args.workers is None and not args.scheduler:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError(
            f"--workers and --scheduler need dask.distributed: pip install '{CLUSTER_EXTRA}'"
        ) from None
    if not args.verbose:  # the cluster's own start and stop lines only with --verbose
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if args.scheduler:
        try:
            client = Client(args.scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as err:
            raise UsageError(f"--scheduler {args.scheduler}: no cluster answers ({err})") from None
        with client:
            yield client
        return
    from napari_twinvae.core.threads import cores

    cluster = LocalCluster(
        n_workers=args.workers,
        threads_per_worker=max(1, cores() // args.workers),
        processes=True,
        dashboard_address=":0",  # any free port: no clash with a running cluster's 8787
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster) as client:
        yield client
