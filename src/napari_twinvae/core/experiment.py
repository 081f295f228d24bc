"""Whole experiments: many files and stage positions, counted in chunks of frames, in this process
or on a dask cluster (a ``distributed.Client``: a LocalCluster, or a SLURM/PBS cluster started
with dask-jobqueue).

The work is split by position and chunk of frames. Each chunk's estimates are written as soon as
it is done, atomically, into ``<out>.parts/``; a rerun of an interrupted experiment with the same
settings skips the chunks found there. When every chunk is in, the one CSV is written atomically
and the parts are removed. Chunks start on whole batches of the single-process path, so every
batch holds the same frames and the counts are the same as :func:`core.predict.count`'s.
Each dask worker loads the model once (:func:`_loaded`) and reads only its own chunk's frames,
a batch at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from napari_twinvae.core.jobs import drain, parameters_of
from napari_twinvae.core.sources import Position, open_positions

CHUNK_BATCHES = 8
"""Batches of frames per chunk by default: long enough that a task's start (a few ms once the
model is loaded) is lost in its counting, short enough to spread a few positions over workers."""


@dataclasses.dataclass(frozen=True)
class ExperimentProgress:
    """Frames counted so far out of all the frames of the experiment."""

    done: int
    total: int
    skipped: int = 0  # frames found counted by an earlier run


@dataclasses.dataclass
class ExperimentResult:
    """Every position counted, in the order given, and the CSV written."""

    positions: list[Position]
    results: list  # core.predict.CountResult per position
    out: Path
    skipped_frames: int = 0
    elapsed_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Frames ``start:stop`` of one position: one task."""

    position: Position
    start: int
    stop: int

    @property
    def name(self) -> str:
        """The part file's name: stable across runs for the same file, scene and channel."""
        p = self.position
        key = f"{Path(p.path).resolve()}|{p.scene}|{p.channel}"
        return f"{hashlib.sha1(key.encode()).hexdigest()[:16]}-{self.start:09d}.npy"


def chunks_of(
    positions: Sequence[Position], n_chambers: int, batch_size: int, chunk_frames: int | None
) -> list[Chunk]:
    """Each position's frames in chunks that start on the single-process path's batch starts."""
    step = max(1, batch_size // n_chambers)
    size = step * CHUNK_BATCHES if chunk_frames is None else int(chunk_frames)
    if size < 1:
        raise ValueError(f"chunks must hold at least 1 frame, got {chunk_frames}")
    size = -(-size // step) * step  # whole batches
    return [
        Chunk(p, start, min(start + size, p.frames))
        for p in positions
        for start in range(0, p.frames, size)
    ]


@functools.lru_cache(maxsize=2)
def _loaded(model: str, device: str):
    """The checkpoint, loaded once per process (each dask worker keeps its own)."""
    from napari_twinvae.core.device import select_device
    from napari_twinvae.core.io import load_model

    return load_model(model, device=select_device(device))


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def count_chunk(
    chunk: Chunk,
    model: str,
    regions,
    batch_size: int,
    device: str,
    views: int,
    domain: str = "natural",
    mixed_precision: bool = True,
) -> np.ndarray:
    """The (frames, chambers) float32 estimates of one chunk (runs on a worker).

    In a dask worker each task takes one torch thread, unless ``NAPARI_TWINVAE_THREADS`` says
    otherwise: a worker with N threads counts N chunks at once.
    """
    from napari_twinvae.core.predict import count
    from napari_twinvae.core.threads import THREADS_ENV, use_threads

    dask_default = _in_dask_worker() and not os.environ.get(THREADS_ENV)
    use_threads(1 if dask_default else None)
    result = count(
        chunk.position.open(),
        _loaded(str(model), str(device)),
        regions,
        batch_size,
        device,
        frame_indices=np.arange(chunk.start, chunk.stop),
        views=views,
        domain=domain,
        mixed_precision=mixed_precision,
    )
    return result.estimates


def iter_count_experiment(
    sources: Sequence[str | os.PathLike | Position],
    out: str | os.PathLike,
    model: str | os.PathLike = "default",
    regions=None,
    *,
    positions: Sequence[str | int] | None = None,
    channel: str | int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    views: int | None = None,
    mixed_precision: bool = True,
    client=None,
    chunk_frames: int | None = None,
    retries: int = 3,
) -> Generator[ExperimentProgress, None, ExperimentResult]:
    """Count every position of every file into one CSV ``out`` (see the module's docstring).

    ``sources``: files (each opened with :func:`core.sources.open_positions` with ``positions``
    and ``channel``) or :class:`Position` objects. ``model``: ``"default"`` or a checkpoint file
    (every worker loads it itself). ``client``: a ``distributed.Client``; none counts here, one
    chunk after the other. ``mixed_precision`` as in :func:`core.predict.iter_count` (each worker
    decides by its own CPU). Yields :class:`ExperimentProgress` as chunks finish.
    """
    from napari_twinvae.core.chambers import check_regions
    from napari_twinvae.core.inputs import check_batch_size
    from napari_twinvae.core.metrics import round_counts
    from napari_twinvae.core.predict import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_VIEWS,
        CountResult,
        _check_views,
        write_counts_csv,
    )

    started = time.perf_counter()
    batch_size = check_batch_size(DEFAULT_BATCH_SIZE if batch_size is None else batch_size)
    views = _check_views(DEFAULT_VIEWS if views is None else views)
    found: list[Position] = []
    for source in sources:
        if isinstance(source, Position):
            found.append(source)
        else:
            found += open_positions(source, positions, channel)
    if not found:
        raise ValueError("no positions to count")
    boxes = [check_regions(regions, p.frame_shape) for p in found]
    if any(b != boxes[0] for b in boxes):
        raise ValueError("the chambers must lie at the same place in every position")
    boxes = boxes[0]
    model = str(model)
    if client is None:
        _loaded(model, str(device))  # a bad model file is refused before anything is counted
    out = Path(out)
    parts = _parts_folder(out, model, boxes, batch_size, views, mixed_precision)
    chunks = chunks_of(found, len(boxes), batch_size, chunk_frames)
    estimates = {p: np.empty((p.frames, len(boxes)), np.float32) for p in dict.fromkeys(found)}
    total = sum(c.stop - c.start for c in chunks)
    done = skipped = 0
    todo = []
    for chunk in chunks:
        saved = parts / chunk.name
        if saved.is_file():
            estimates[chunk.position][chunk.start : chunk.stop] = np.load(saved)
            skipped += chunk.stop - chunk.start
        else:
            todo.append(chunk)
    done = skipped
    yield ExperimentProgress(done, total, skipped)
    arguments = (model, boxes, batch_size, str(device), views, "natural", mixed_precision)

    def keep(chunk: Chunk, values: np.ndarray) -> None:
        estimates[chunk.position][chunk.start : chunk.stop] = values
        _save_part(parts / chunk.name, values)

    if client is None:
        for chunk in todo:
            keep(chunk, _counted(chunk, lambda c=chunk: count_chunk(c, *arguments)))
            done += chunk.stop - chunk.start
            yield ExperimentProgress(done, total, skipped)
    else:
        from distributed import as_completed

        futures = {
            client.submit(
                count_chunk, chunk, *arguments, key=f"count-{chunk.name}", retries=retries
            ): chunk
            for chunk in todo
        }
        try:
            for future in as_completed(futures):
                chunk = futures[future]
                keep(chunk, _counted(chunk, future.result))
                done += chunk.stop - chunk.start
                yield ExperimentProgress(done, total, skipped)
        finally:
            client.cancel([f for f in futures if not f.done()])
    results = [
        CountResult(
            estimates=values,
            counts=round_counts(values),
            frames=np.arange(len(values), dtype=np.int64),
            regions=list(boxes),
        )
        for values in (estimates[p] for p in found)
    ]
    files = [str(p.path) for p in found] if len({p.path for p in found}) > 1 else None
    names = [p.name for p in found] if any(p.name for p in found) else None
    write_counts_csv(out, results, files, positions=names)
    shutil.rmtree(parts, ignore_errors=True)
    return ExperimentResult(found, results, out, skipped, time.perf_counter() - started)


@parameters_of(iter_count_experiment)
def count_experiment(*args, **kwargs) -> ExperimentResult:
    """:func:`iter_count_experiment` run to the end."""
    return drain(iter_count_experiment(*args, **kwargs))


def _counted(chunk: Chunk, run) -> np.ndarray:
    """A chunk's estimates; a frame that cannot be counted is named with its file and position."""
    try:
        return run()
    except ValueError as err:
        p = chunk.position
        where = f"{p.path}" + (f" position {p.name}" if p.name else "")
        raise ValueError(f"{where}: {err}") from None


def _parts_folder(
    out: Path, model: str, boxes, batch_size: int, views: int, mixed_precision: bool
) -> Path:
    """``<out>.parts/``: kept for a rerun with the same settings, emptied for other settings."""
    from napari_twinvae.core.io import atomic_write

    parts = out.with_name(out.name + ".parts")
    model_file = Path(model)
    stamp = (
        [str(model_file.resolve()), model_file.stat().st_size, model_file.stat().st_mtime_ns]
        if model_file.is_file()
        else [model]
    )
    settings = {"model": stamp, "chambers": [[int(v) for v in b] for b in boxes], "views": views}
    settings["batch_size"] = batch_size
    settings["mixed_precision"] = mixed_precision
    recorded = parts / "settings.json"
    if recorded.is_file():
        try:
            same = json.loads(recorded.read_text(encoding="utf-8")) == settings
        except (OSError, ValueError):
            same = False
        if same:
            return parts
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    with atomic_write(recorded, "w") as f:
        json.dump(settings, f)
    return parts


def _save_part(path: Path, values: np.ndarray) -> None:
    from napari_twinvae.core.io import atomic_write

    with atomic_write(path) as f:
        np.save(f, np.asarray(values, dtype=np.float32))
