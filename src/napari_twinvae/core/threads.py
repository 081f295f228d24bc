"""How many threads torch's work takes, decided in one place for the command line, the docks and
the dask workers.

Two torch jobs on the same cores collapsed: two ``train`` runs started together on 2 cores took
3.3 times as long each as one alone (bench/bench_share.py). torch's OpenMP threads busy-wait at
every barrier, so with more threads than cores across processes a waiting thread burns the core
the thread it waits for needs. Two things fix it: waiting threads sleep
(``OMP_WAIT_POLICY=PASSIVE``, read when torch loads its OpenMP runtime, so :func:`quiet_waits`
must run first), and each process takes as many threads as the cores it may run on
(``os.sched_getaffinity``: a SLURM job or ``taskset`` gets its share, not the machine's count),
or the share it is given (``NAPARI_TWINVAE_THREADS``, a dask worker's own threads).

Stdlib only at import: :func:`quiet_waits` runs before torch is imported.
"""

from __future__ import annotations

import os

THREADS_ENV = "NAPARI_TWINVAE_THREADS"
"""Environment variable: the torch threads of each process (default: its cores)."""


def cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def thread_count(threads: int | None = None) -> int:
    """``threads`` if given, else ``$NAPARI_TWINVAE_THREADS``, else :func:`cores`."""
    if threads is None:
        text = os.environ.get(THREADS_ENV, "").strip()
        if text:
            try:
                threads = int(text)
            except ValueError:
                raise ValueError(f"{THREADS_ENV} must be a whole number, got {text!r}") from None
        else:
            threads = cores()
    if int(threads) < 1:
        raise ValueError(f"the thread count must be at least 1, got {threads}")
    return int(threads)


def quiet_waits() -> None:
    """Let torch's waiting OpenMP threads sleep instead of spinning (unless the user chose).

    Takes effect only when it runs before torch is first imported in this process.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def use_threads(threads: int | None = None) -> int:
    """Give torch :func:`thread_count` threads in this process; returns the number."""
    quiet_waits()
    import torch

    n = thread_count(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
