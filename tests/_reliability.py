"""Tallies of what the fuzz and fault suites tried, for the reliability table in the docs.

Each test records every generated input or injected fault with its outcome; ``bench/reliability.py``
runs the suites and writes the table from these tallies. A plain ``pytest`` run keeps them in
memory and drops them.
"""

from __future__ import annotations

import collections
import os

OUTCOMES = ("worked", "refused", "stopped", "traceback", "damaged")
"""worked: exit 0 (or the dock finished); refused: one clear line and exit 2 (or one notification);
stopped: a fault (a signal, a full disk, a closed viewer) ended the run and every file is as it
should be; traceback: anything else escaped; damaged: an input or an earlier result changed, a
partial file was left under a final name, or a dock lost some of the user's annotation."""

TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def current_test() -> str:
    """The running test's id without its parameters' phase, e.g. ``tests/fuzz/test_x.py::test_y``."""
    return os.environ.get("PYTEST_CURRENT_TEST", "outside pytest").rsplit(" (", 1)[0]


def record(outcome: str, n: int = 1, test: str | None = None) -> None:
    """Count ``n`` tries of the running test (or ``test``) that ended in ``outcome``."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    TALLY[test or current_test()][outcome] += n
