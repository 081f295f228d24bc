"""The one place that runs core generators in napari worker threads.

Core work (training, counting) is a plain generator that yields progress and returns a result.
Widgets hand it snapshots of their inputs, never the viewer, and touch layers only in the
``yielded`` / ``returned`` slots, which run on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from napari.utils.notifications import show_error
from superqt.utils import GeneratorWorker

from napari_twinvae.core.threads import use_threads


class JobFailed(Exception):
    """A ``RuntimeError`` raised by the job itself (torch raises them, e.g. when the GPU runs out
    of memory). superqt takes any ``RuntimeError`` for a deleted worker and swallows it without
    ``errored`` or ``finished``, which would leave a dock stuck "running"; as this it is reported."""


def _job(generator_function: Callable[..., Generator], *args: Any, **kwargs: Any) -> Generator:
    use_threads()  # this process's share of the cores (core/threads.py)
    try:
        return (yield from generator_function(*args, **kwargs))
    except RuntimeError as err:
        raise JobFailed(_message(err)) from err


class ClosingWorker(GeneratorWorker):
    """A generator worker that closes its generator when stopped.

    ``quit()`` takes effect at the generator's next ``yield``; closing it there runs the core's
    ``finally`` blocks in the worker thread, so a cancelled job leaves consistent state behind.
    """

    def work(self):
        try:
            return super().work()
        finally:
            self._gen.close()


def start_worker(
    generator_function: Callable[..., Generator],
    *args: Any,
    yielded: Callable[[Any], None] | None = None,
    returned: Callable[[Any], None] | None = None,
    errored: Callable[[BaseException], None] | None = None,
    finished: Callable[[], None] | None = None,
    **kwargs: Any,
) -> ClosingWorker:
    """Start ``generator_function(*args, **kwargs)`` in a thread and connect the given slots.

    Errors go to napari's notifications (plus ``errored`` when given); ``finished`` runs after
    success, error and stop alike, so widgets reset their buttons there.
    """
    worker = ClosingWorker(_job, generator_function, *args, **kwargs)
    if yielded is not None:
        worker.yielded.connect(yielded)
    if returned is not None:
        worker.returned.connect(returned)
    worker.errored.connect(lambda exc: show_error(_message(exc)))
    if errored is not None:
        worker.errored.connect(errored)
    if finished is not None:
        worker.finished.connect(finished)
    worker.start()
    return worker


def let_go(worker: ClosingWorker | None, pbar=None) -> None:
    """The widgets of a dock are gone (the viewer closed): stop its worker, and let no late
    signal reach a deleted widget; napari's progress bar still closes when the worker ends."""
    if worker is None:
        return
    for signal in (worker.yielded, worker.returned, worker.errored, worker.finished):
        signal.disconnect()
    if pbar is not None:
        worker.finished.connect(pbar.close)
    worker.quit()


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
