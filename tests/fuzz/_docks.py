"""Use a dock as a user does, on a generated input, and check its contract.

The contract is the command line's (``_runner.py``) in a dock's words: the job works, or exactly
one napari notification (an error or a warning) says why not. No exception may reach Qt's
excepthook (a slot that raised), no job may fail in its worker with anything but the ValueError
or OSError the docks refuse with (any other becomes a notification that is a traceback in
disguise), no Python warning may reach napari's warning reporter, and the caller's checks on its
files and layers must hold.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from unittest import mock

from hypothesis import settings
from napari.utils.notifications import NotificationSeverity, notification_manager
from pytestqt.exceptions import capture_exceptions, format_captured_exceptions

from napari_twinvae._widgets._workers import ClosingWorker
from tests._reliability import record
from tests.fuzz._runner import HIDDEN_WARNINGS

SAID = (NotificationSeverity.ERROR, NotificationSeverity.WARNING)
"""The notifications that tell the user something went wrong or needs a look."""
REFUSALS = (ValueError, OSError)
"""What a dock's job may fail with: bad input said in one line (CheckpointError is a ValueError)."""


def examples(n: int) -> settings:
    """Settings for ``n`` examples in the ``ci`` profile (50 there), scaled with the profile in
    use (``thorough`` draws ten times as many): a dock runs a viewer, so it gets few."""
    return settings(max_examples=max(1, n * settings.default.max_examples // 50))


@dataclass
class Seen:
    """What reached the user while a dock worked on one input."""

    notes: list[tuple[str, str]] = field(default_factory=list)  # (severity, message)
    raised: list = field(default_factory=list)  # (type, value, traceback) at Qt's excepthook
    failed: list[BaseException] = field(default_factory=list)  # a job's error in its worker
    warned: list = field(default_factory=list)  # Python warnings on the GUI thread

    def said(self) -> list[str]:
        """The errors and warnings the dock showed."""
        return [f"{severity}: {message}" for severity, message in self.notes if severity in SAID]

    def infos(self) -> list[str]:
        return [m for s, m in self.notes if s == NotificationSeverity.INFO]


@contextlib.contextmanager
def watching():
    """Collect the notifications, escaped exceptions, worker errors and warnings of the block.

    Wait in the block for any worker the dock starts: its error arrives through a queued signal.
    """
    seen = Seen()

    def on_note(notification) -> None:
        # an exception or a Python warning that reached napari's reporter is a traceback too
        if type(notification).__name__ in ("ErrorNotification", "WarningNotification"):
            seen.raised.append((type(notification), notification.message, None))
        else:
            seen.notes.append((notification.severity, str(notification.message)))

    start = ClosingWorker.start

    def start_watched(worker, *args, **kwargs):
        worker.errored.connect(seen.failed.append)
        return start(worker, *args, **kwargs)

    notification_manager.notification_ready.connect(on_note)
    try:
        with (
            mock.patch.object(ClosingWorker, "start", start_watched),
            capture_exceptions() as raised,
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            yield seen
    finally:
        notification_manager.notification_ready.disconnect(on_note)
    seen.raised += raised
    seen.warned = [w for w in caught if not issubclass(w.category, HIDDEN_WARNINGS)]


def judge(seen: Seen, what: str, worked: bool, damaged: list[str] = ()) -> str:
    """Record the outcome of one input and fail the test unless the contract held.

    ``worked``: the dock finished its job; ``damaged``: what the caller found changed that must
    not change (an input file, the user's annotation). Returns the outcome.
    """
    problems = []
    if seen.raised:
        problems.append("escaped:\n" + format_captured_exceptions(seen.raised))
    odd = [e for e in seen.failed if not isinstance(e, REFUSALS)]
    problems += [f"the job failed with {type(e.__cause__ or e).__name__}: {e}" for e in odd]
    problems += [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in seen.warned
    ]
    said = seen.said()
    if damaged:
        record("damaged")
        raise AssertionError(f"{what} changed {', '.join(damaged)}; notes {said}")
    if not problems and worked and not any(s.startswith("error") for s in said):
        record("worked")
        return "worked"
    if not problems and not worked and len(said) == 1:
        record("refused")
        return "refused"
    if not problems:
        problems.append(
            f"{'worked' if worked else 'did not work'}, with {len(said)} notifications: {said}"
        )
    record("traceback")
    raise AssertionError(f"{what}:\n" + "\n".join(problems))
