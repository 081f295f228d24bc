"""Run a command of the command line in this process and check its contract on every input.

The contract: exit 0, or exactly one line on stderr and exit status 2 (argparse's own usage
message counts as that line), or a run that failed by itself (a training that diverged) and
ends with an error line and status 1; never an escaped exception or a Python warning on stderr; files the
run must not touch stay byte-identical, and no temporary ``.*.part`` file is left behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from napari_twinvae.cli import PROG, main
from tests._reliability import record

# Python's default filters hide these outside __main__; the command line would not show them.
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@dataclass
class Run:
    status: int
    out: str
    err: list[str] = field(default_factory=list)


def snapshot(*paths: Path) -> dict[Path, bytes | None]:
    """The bytes of each file (None where there is none), to compare after a run."""
    return {p: p.read_bytes() if p.is_file() else None for p in paths}


def parts_left(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.is_dir() for p in folder.glob(".*.part")]


def run_cli(argv: list[str], keep: tuple[Path, ...] = (), results: tuple[Path, ...] = ()) -> Run:
    """``main(argv)`` with stdout, stderr, log records and warnings captured; asserts the contract.

    ``keep``: files that must not change whatever happens (the inputs). ``results``: files the
    command may replace only when it succeeds.
    """
    argv = [str(a) for a in argv]
    before = snapshot(*keep, *results)
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    escaped = None
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            try:
                status = main(argv)
            except SystemExit as exit_:  # argparse: --help, or a value of the wrong type
                status = exit_.code if isinstance(exit_.code, int) else 2
            except BaseException:  # noqa: BLE001 - the contract says nothing may escape
                escaped = traceback.format_exc()
    finally:
        root.removeHandler(handler)
    if escaped is not None:
        record("traceback")
        raise AssertionError(f"{PROG} {' '.join(argv)} raised:\n{escaped}")
    shown = [w for w in caught if not issubclass(w.category, HIDDEN_WARNINGS)]
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    lines += [f"{w.category.__name__}: {w.message}" for w in shown]
    run = Run(status, out.getvalue(), lines)
    damaged = [p for p in keep if snapshot(p)[p] != before[p]]
    if status != 0:
        damaged += [p for p in results if snapshot(p)[p] != before[p]]
    folders = {p.parent for p in (*keep, *results)}
    leftovers = parts_left(*folders)
    if damaged or leftovers:
        record("damaged")
        raise AssertionError(
            f"{PROG} {' '.join(argv)} (exit {status}) changed {damaged} or left {leftovers}"
        )
    if status == 0 and not shown and not any("Traceback" in line for line in lines):
        record("worked")
        return run
    if status == 2 and _one_clear_line(lines):
        record("refused")
        return run
    if status == 1 and lines and lines[-1].startswith(("error: ", f"{PROG}: error: ")):
        # the run itself failed and said so last (e.g. a training that diverged before any
        # epoch did better: nothing saved, status 1); the files were checked above
        record("stopped")
        return run
    record("traceback")
    raise AssertionError(f"{PROG} {' '.join(argv)}: exit {status}, stderr:\n" + "\n".join(lines))


def _one_clear_line(lines: list[str]) -> bool:
    if any("Traceback" in line for line in lines):
        return False
    if lines and lines[0].startswith("usage: "):  # argparse: usage, then one error line
        errors = [line for line in lines if line.startswith(f"{PROG} ")]
        return len(errors) == 1 and "error:" in errors[0]
    return len(lines) == 1 and lines[0].startswith(f"{PROG}: error: ")


@contextlib.contextmanager
def example_dir(parent: Path):
    """A fresh folder per generated example (pytest's tmp_path lives as long as the test)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=parent) as folder:
        yield Path(folder)
