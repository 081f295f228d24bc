"""``napari-twinvae train``: train or transfer a Twin-VAE on a labeled image stack.

One progress line per epoch goes to stderr; the last line on stdout is a JSON object with the
kept model's validation metrics and the output path. The model file is written atomically at the
end of the run, so an existing file is replaced only by a finished model, or by the best model
so far when Ctrl-C stops the run after its first epoch (as the dock's Stop keeps it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
import time
from pathlib import Path

from napari_twinvae._commands.evaluate import add_series_arguments, read_one_series
from napari_twinvae.cli import UsageError, model_name, refuse_overwriting_inputs, say_done

log = logging.getLogger(__name__)

_CHUNK = 256  # frames cropped at a time: a memory-mapped stack is read piece by piece


def add_parser(subparsers) -> None:
    """The options and their defaults come from ``TrainConfig()`` and core's choices, as the
    dock's do: one source for every setting."""
    from napari_twinvae.core.config import HEADS
    from napari_twinvae.core.freezing import FREEZE_STRATEGIES
    from napari_twinvae.core.synthetic import PRESETS
    from napari_twinvae.core.train import COSINE_FLOOR, OPTIMIZERS, SCHEDULES, TrainConfig

    defaults = TrainConfig()
    parser = subparsers.add_parser(
        "train",
        help="train or transfer a model on your frames and labels",
        description=(
            "Train a Twin-VAE on IMAGES (a TIFF stack T x H x W, one 2D image, or one position "
            "of an OME-TIFF, OME-Zarr, ND2, ... file) with the counts in LABELS and freshly "
            "generated synthetic images, and write the best model to OUT. "
            "By default a transfer from the shipped model; --init scratch trains a new one."
        ),
    )
    parser.add_argument(
        "images",
        type=Path,
        metavar="IMAGES",
        help="TIFF stack or 2D image (or OME-TIFF, OME-Zarr, ND2, ...: see --position)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        metavar="LABELS.csv",
        help="frame,count table or napari Points CSV (index,axis-0,axis-1,axis-2)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL.pt", help="model file")
    parser.add_argument(
        "--init",
        default=defaults.init,
        metavar="default|scratch|PATH",
        help="start model: the shipped one, none (scratch), or a model file (default: %(default)s)",
    )
    parser.add_argument(
        "--freeze",
        default=defaults.freeze,
        metavar="|".join(FREEZE_STRATEGIES),
        help="layers kept fixed during a transfer; counting trains only the decoders, to bring "
        "back reconstructions after a --no-decoder run; density keeps a density head's counts "
        "and trains everything behind it (default: %(default)s)",
    )
    parser.add_argument(
        "--no-decoder",
        dest="decoder",
        action="store_false",
        default=defaults.decoder,
        help="transfer without decoders: about twice as fast, learns from labeled frames only",
    )
    parser.add_argument(
        "--head",
        default=defaults.head,
        metavar="|".join(HEADS),
        help="what counts: the paper's regressor, or a density map learned from where the cells "
        "are (clicked points, synthetic centres); a start model without one gets a new density "
        "head (default: density with a Points CSV of clicked cells, else the start model's)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epoch limit (default: {defaults.epochs}; none with --minutes alone)",
    )
    parser.add_argument(
        "--minutes", type=float, default=defaults.minutes, help="time budget in minutes"
    )
    # Options that set one TrainConfig field of the same name: (flag, type, metavar, help).
    for flag, kind, metavar, text in (
        ("--preset", str, "|".join(PRESETS), "synthetic images: bright field or phase contrast"),
        ("--synthetic-ratio", float, "R", "synthetic images per natural frame and epoch"),
        ("--optimizer", str, "|".join(OPTIMIZERS), ""),
        ("--learning-rate", float, "LR", ""),
        (
            "--schedule",
            str,
            "|".join(SCHEDULES),
            f"cosine: warm up, then let the rate fall to {COSINE_FLOOR * 100:g}%% of LR",
        ),
        ("--batch-size", int, "B", ""),
        ("--seed", int, "S", "same seed, same model on the CPU"),
        ("--device", str, "DEVICE", "auto, cpu, cuda, cuda:N or mps"),
    ):
        field = flag[2:].replace("-", "_")
        parser.add_argument(
            flag,
            type=kind,
            default=getattr(defaults, field),
            metavar=metavar,
            help=f"{text} (default: %(default)s)".lstrip(),
        )
    parser.add_argument(
        "--rois",
        type=Path,
        metavar="ROIS.csv",
        help="chamber rectangles as a napari Shapes CSV (default: the whole frame)",
    )
    add_series_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_twinvae.core.device import select_device
    from napari_twinvae.core.train import TrainConfig, Training
    from napari_twinvae.core.trainset import load_start

    started = time.perf_counter()
    epochs = args.epochs
    if epochs is None and args.minutes is None:
        epochs = TrainConfig().epochs
    if args.out.is_dir():
        raise UsageError(f"{args.out}: is a folder; give the model file's name")
    # the start model (--init) may be replaced by its own continuation; the data may not
    refuse_overwriting_inputs(args.out, [args.images, args.labels, args.rois])
    config = TrainConfig(
        init=args.init,
        freeze=args.freeze,
        decoder=args.decoder,
        epochs=epochs,
        minutes=args.minutes,
        preset=args.preset,
        synthetic_ratio=args.synthetic_ratio,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        schedule=args.schedule,
        head=args.head,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
    )
    select_device(config.device)  # an unavailable GPU is said now, not after the cropping
    start = load_start(config.init)  # a missing or bad start model, ditto; read once
    natural = load_natural(args, start.normalization)

    training = Training(natural, config, start=start)
    gen = training.run()
    with FirstInterruptStops() as interrupt:
        try:
            while not interrupt.requested:
                progress = next(gen)
                if progress.message:
                    print(f"note: {progress.message}", file=sys.stderr)
                if progress.epoch_end:
                    print(progress_line(progress), file=sys.stderr, flush=True)
        except StopIteration:
            pass
        gen.close()  # after Ctrl-C: the run ends here and keeps the best model so far
    result = training.result
    if interrupt.requested and result.epochs == 0:
        print(
            f"interrupted before the first epoch ended; nothing was saved ({args.out} is as it was)",
            file=sys.stderr,
        )
        return 130
    if result.best.get("epoch") == 0 and result.epochs > 0:
        print(f"note: {result.messages[-1]}", file=sys.stderr)
    diverged = result.stopped.startswith("diverged")
    if diverged and not result.best.get("epoch"):
        print(
            f"error: training {result.stopped}; no epoch did better than the start model, so "
            f"nothing was saved ({args.out} is as it was)",
            file=sys.stderr,
        )
        return 1
    if diverged:
        print(
            f"warning: training {result.stopped}; it ended early, after {result.epochs} "
            f"epoch(s); the model of epoch {result.best['epoch']}, the best on "
            f"{result.best.get('on', 'validation')}, is saved",
            file=sys.stderr,
        )
    path = training.save(args.out)
    summary = {
        "out": str(path),
        "stopped": result.stopped,
        "epochs": result.epochs,
        "seconds": round(result.seconds, 1),
        "selection": result.selection,
        "best_epoch": result.best.get("epoch"),
        "metrics_on": result.best.get("on"),
        **{k: result.best.get(k) for k in ("n", "accuracy", "mae", "mre")},
    }
    print(json.dumps(_json_safe(summary)))
    if interrupt.requested:
        print(
            f"interrupted: saved the best model so far (epoch {result.best.get('epoch')}) to {path}",
            file=sys.stderr,
        )
        return 130
    say_done(
        "train",
        f"read {args.images} and {args.labels} ({int(natural.labeled.sum())} labeled chamber "
        f"images), trained {result.epochs} epoch{'s' if result.epochs != 1 else ''} from {model_name(args.init)} "
        f"({result.stopped}), kept epoch {result.best.get('epoch')}; wrote {path}",
        time.perf_counter() - started,
    )
    return 0


class FirstInterruptStops:
    """Ctrl-C ends a run as the dock's Stop does: the first one stops it after the current batch
    and the best model so far is saved; a second one quits at once, saving nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> FirstInterruptStops:
        with contextlib.suppress(ValueError):  # only the main thread can take signals
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_interrupt(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "interrupted: stopping after this batch to save the best model so far "
            "(Ctrl-C again quits without saving)",
            file=sys.stderr,
            flush=True,
        )


def load_natural(args: argparse.Namespace, normalization):
    """The natural set of the CLI: the series (--position, --channel of IMAGES), chamber
    rectangles and labels, checked against each other."""
    from napari_twinvae.core.chambers import fit_regions, read_regions_csv, resized_whole_frame
    from napari_twinvae.core.jobs import drain
    from napari_twinvae.core.labels import load_annotation
    from napari_twinvae.core.trainset import check_labels, iter_natural_set

    images, labels, rois = args.images, args.labels, args.rois
    annotation = load_annotation(labels)
    stack = read_one_series(images, args.position, args.channel)
    rectangles = read_regions_csv(rois) if rois is not None else None
    try:
        regions, notes = fit_regions(rectangles, stack.shape[1:])
    except ValueError as err:
        raise UsageError(f"{rois}: {err}" if rois is not None else f"{images}: {err}") from None
    if rectangles is None:
        regions = None
        if resized_whole_frame(stack.shape, None):
            notes.append(
                f"frames are {stack.shape[1]}x{stack.shape[2]}; each whole frame is resized "
                "to 128x128 (mark chambers with --rois for better counts)"
            )
    try:
        checked = check_labels(stack, annotation, regions)
    except ValueError as err:
        raise UsageError(f"{labels}: {err}") from None
    try:
        natural = drain(iter_natural_set(stack, checked, regions, normalization, _CHUNK))
    except ValueError as err:  # e.g. NaN in a labeled frame
        raise UsageError(f"{images}: {err}") from None
    for note in notes:  # once the inputs are known to be usable: a refusal is one line
        print(f"note: {note}", file=sys.stderr)
    return natural


def progress_line(progress) -> str:
    """One line per epoch: losses per twin, validation metrics, the best epoch, time left."""
    total = f"/{progress.epochs}" if progress.epochs else ""
    parts = [
        f"epoch {progress.epoch}{total}" + (" (before training)" if not progress.epoch else "")
    ]
    for twin, terms in progress.losses.items():
        if not math.isnan(terms["total"]):
            parts.append(f"{twin} loss {terms['total']:.4g}")
    if progress.validation:
        v = progress.validation
        parts.append(f"validation accuracy {v['accuracy']:.1%} MAE {v['mae']:.2f}")
    if progress.best:
        parts.append(f"best epoch {progress.best['epoch']}")
    parts.append(f"{_clock(progress.elapsed_s)} elapsed")
    if progress.remaining_s is not None:
        parts.append(f"~{_clock(progress.remaining_s)} left")
    return "  ".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value
