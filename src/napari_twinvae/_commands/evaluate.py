"""``napari-twinvae evaluate``: accuracy, MAE and MRE of a model on hand-labeled frames.

Counts only the labeled frames of the stack and compares the rounded counts with the labels
(as in Kenneweg, Stallmann & Hammer 2023). The last line printed is a JSON object with ``n``, ``accuracy``, ``mae`` and
``mre`` (``null`` where a metric is undefined, e.g. MRE when every label is 0).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from napari_twinvae._commands.count import add_model_arguments, check_model_arguments
from napari_twinvae.cli import UsageError, model_name, say_done


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy, MAE and MRE on hand-labeled frames",
        description=(
            "Count the labeled frames of IMAGES with a model and compare with the labels. "
            "The last line printed is JSON: n, accuracy, mae, mre."
        ),
    )
    parser.add_argument(
        "images",
        type=Path,
        metavar="IMAGES",
        help="the TIFF stack (or OME-TIFF, OME-Zarr, ND2, ...)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="frame,count CSV or napari Points CSV of the counted cells (axis-0 = frame)",
    )
    add_model_arguments(parser)
    add_series_arguments(parser)
    parser.set_defaults(func=run)


def add_series_arguments(parser: argparse.ArgumentParser) -> None:
    """--position and --channel: which series of a multi-position, multi-channel file."""
    parser.add_argument(
        "--position", metavar="NAME|N", help="the stage position of a multi-position file"
    )
    parser.add_argument(
        "--channel", metavar="NAME|N", help="the label-free channel of a multi-channel file"
    )


def read_one_series(images: Path, position, channel):
    """The (T, H, W) frames of one position and channel of IMAGES, read lazily; what is wrong
    with the file is a UsageError naming it."""
    from napari_twinvae.core.chambers import as_frames, fit_regions
    from napari_twinvae.core.sources import read_series

    try:
        stack = as_frames(read_series(images, position, channel))
        fit_regions(None, stack.shape[1:])
    except ValueError as err:
        message = str(err)
        raise UsageError(message if str(images) in message else f"{images}: {message}") from None
    return stack


def run(args: argparse.Namespace) -> int:
    from napari_twinvae.core.labels import load_annotation
    from napari_twinvae.core.metrics import count_metrics
    from napari_twinvae.core.predict import count
    from napari_twinvae.core.trainset import check_labels

    started = time.perf_counter()
    annotation = load_annotation(args.labels)
    device, checkpoint = check_model_arguments(args)
    stack = read_one_series(args.images, args.position, args.channel)
    try:
        labels = check_labels(stack, annotation)
    except ValueError as err:
        raise UsageError(f"{args.labels}: {err}") from None
    frames = annotation.labeled_frames.tolist()
    try:
        result = count(
            stack,
            checkpoint,
            batch_size=args.batch_size,
            device=device,
            frame_indices=frames,
            views=args.views,
            mixed_precision=args.mixed_precision,
        )
    except ValueError as err:  # e.g. NaN in a labeled frame
        raise UsageError(f"{args.images}: {err}") from None
    metrics = count_metrics(result.estimates[:, 0], labels.counts[frames, 0])
    print(
        f"{metrics['n']} labeled frames: accuracy {_percent(metrics['accuracy'])}, "
        f"MAE {_number(metrics['mae'])}, MRE {_percent(metrics['mre'], scale=1.0)}"
    )
    print(json.dumps({k: _json(v) for k, v in metrics.items()}))
    say_done(
        "evaluate",
        f"counted the {len(frames)} labeled frames of {args.images} against {args.labels} "
        f"with {model_name(args.model)}",
        time.perf_counter() - started,
    )
    return 0


def _json(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _number(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def _percent(value: float, scale: float = 100.0) -> str:
    return f"{value * scale:.1f} %" if math.isfinite(value) else "n/a"
