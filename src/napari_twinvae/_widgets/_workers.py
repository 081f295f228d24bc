"""The one place that runs core generators in napari worker threads.

Core work (training, counting) is a plain generator that yields progress and returns a result.
Widgets hand it snapshots of their inputs, never the viewer, and touch layers only in the
``yielded`` / ``returned`` slots, which run on the GUI thread. Each dock runs its jobs through a
:class:`Runner`, which owns the running worker, its progress bar and the end of its run.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from napari.utils import progress
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


class Runner:
    """The one worker a dock runs at a time, its progress bar, and the end of its run.

    A dock starts its job with :meth:`start`, asks it to stop with :meth:`stop`, and calls
    :meth:`let_go` when its widgets are gone. When the run ends (returned, failed or stopped)
    the runner closes the progress bar and lets the worker go, then calls the dock's
    ``finished(stopped)``, where the dock resets its buttons.
    """

    def __init__(self) -> None:
        self.worker: ClosingWorker | None = None  # the running one
        self.pbar: progress | None = None  # its napari progress bar
        self._desc = ""  # the bar's description
        self._ended: ClosingWorker | None = None  # the last finished one, see _end

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(
        self,
        generator_function: Callable[..., Generator],
        *args: Any,
        finished: Callable[[bool], None],
        desc: str,
        total: int | None = None,
        **kwargs: Any,
    ) -> ClosingWorker:
        """:func:`start_worker` with a napari progress bar ``desc``, made now when the ``total``
        is known, else by the first :meth:`advance`; ``finished(stopped)`` runs after success,
        error and Stop alike, with ``stopped`` true when Stop ended the run."""
        self._desc = desc
        self.pbar = None if total is None else progress(total=total, desc=desc)
        self.worker = start_worker(
            generator_function, *args, finished=lambda: finished(self._end()), **kwargs
        )
        return self.worker

    def advance(self, done: int, total: int) -> None:
        """Move the progress bar to ``done`` of ``total``, making it on the first step."""
        pbar = self.pbar
        if pbar is None:
            pbar = self.pbar = progress(total=total, desc=self._desc)
        pbar.update(done - pbar.n)

    def stop(self) -> bool:
        """Ask the running job to stop at its next ``yield``; False when none runs."""
        if self.worker is None:
            return False
        self.worker.quit()
        return True

    def let_go(self) -> None:
        """The dock's widgets are gone (the viewer closed): stop the worker, and let no late
        signal reach a deleted widget; the progress bar still closes when the worker ends."""
        worker = self.worker
        if worker is None:
            return
        for signal in (worker.yielded, worker.returned, worker.errored, worker.finished):
            signal.disconnect()
        if self.pbar is not None:
            worker.finished.connect(self.pbar.close)
        worker.quit()

    def _end(self) -> bool:
        """The run ended: close its bar and let its worker go; True when Stop ended it."""
        worker, pbar = self.worker, self.pbar
        stopped = worker is not None and worker.abort_requested
        # Keep the worker referenced until the next run ends: superqt drops its own reference in
        # a slot that runs after `finished`, and a worker freed inside its own signal's delivery
        # crashed Qt (segmentation fault seen in the dock tests).
        self._ended, self.worker, self.pbar = worker, None, None
        if pbar is not None:
            pbar.close()
        return stopped


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
