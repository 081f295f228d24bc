"""The ``napari-twinvae`` command line: a thin shell over :mod:`napari_twinvae.core`.

Each subcommand lives in its own module under ``napari_twinvae._commands`` and provides
``add_parser(subparsers)``, which registers its arguments and sets ``func`` to a function
``run(args) -> int``. Bad input (``UsageError`` or the core's ``ValueError``) ends with one line
on stderr and status 2; a failing disk or file system with one line and status 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from napari_twinvae import __version__

PROG = "napari-twinvae"

# Subcommand modules in napari_twinvae._commands, in the order `--help` lists them.
COMMANDS: tuple[str, ...] = ("synth", "train", "count", "evaluate")


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Count cells in label-free time-lapse microscopy with a Twin-VAE.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail to stderr")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"napari_twinvae._commands.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while the parser imports torch, before a command runs
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    from napari_twinvae.core import threads

    threads.quiet_waits()  # before the parser's imports load torch
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        threads.use_threads()
        return int(func(args) or 0)
    except (UsageError, ValueError) as err:
        # The core raises ValueError (CheckpointError too) for input it cannot use.
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1


def refuse_overwriting_inputs(out, inputs, option: str = "--out") -> None:
    """A UsageError when the file to write is one of the files read: it would be replaced."""
    import os
    from pathlib import Path

    target = Path(out)
    for source in inputs:
        if source is None or str(source) in ("", "default"):
            continue
        same = Path(source).resolve() == target.resolve()
        if not same and target.is_file() and Path(source).is_file():
            same = os.path.samefile(source, target)  # e.g. a hard link
        if same:
            raise UsageError(f"{option} {out} is also an input; name a new file to write")


def say_done(command: str, what: str, seconds: float) -> None:
    """The one human line a successful command ends with, on stderr: what it read and wrote, and
    how long it took. stdout keeps its machine-readable lines."""
    print(f"{PROG} {command}: {what} in {duration(seconds)}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``4.2 s`` below a minute, else ``m:ss`` or ``h:mm:ss``."""
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def cell_range(low: int, high: int) -> str:
    """``1 cell``, ``3 cells`` or ``1-16 cells``."""
    low, high = int(low), int(high)
    if low == high:
        return f"{low} cell" if low == 1 else f"{low} cells"
    return f"{low}-{high} cells"


def model_name(model) -> str:
    """How a line names a --model or --init value."""
    return "the default model" if str(model) == "default" else str(model)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__
