"""Counting over whole time series, batch by batch, and the counts' CSV files.

Counting takes frames as the user has them (one 2D frame, a (T, H, W) stack, a memory-mapped
TIFF or its path), cuts each chamber out with :func:`core.chambers.chamber_crops` and normalises it
with the checkpoint's own :class:`Normalization`, exactly as for training (core.inputs). Only one
batch of frames is in memory at a time, so a series larger than RAM is counted straight from its
memory map.

Counting runs only the counting path (core.count_paths: outer encoder, shared encoder, mu,
regressor, or the density head) in eval mode; :func:`iter_count` yields :class:`CountProgress`
after every batch and returns a :class:`CountResult`; :func:`count` drains it. Reconstruction and
translation are in core.model_view.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from napari_twinvae.core.chambers import Region, check_regions
from napari_twinvae.core.config import IMAGE_SIZE
from napari_twinvae.core.count_paths import (
    DensityPath,
    averaged_count,
    counting_dtype,
    counting_path,
    latent_noise,
    spread_count,
)
from napari_twinvae.core.density import find_peaks
from napari_twinvae.core.device import select_device
from napari_twinvae.core.inputs import (
    check_batch_size,
    check_indices,
    checkpoint_of,
    crops_of,
    frame_batches,
    frames_of,
)
from napari_twinvae.core.io import Checkpoint, atomic_write
from napari_twinvae.core.jobs import drain, parameters_of
from napari_twinvae.core.metrics import count_flags, round_counts
from napari_twinvae.core.uncertainty import (
    Calibration,
    calibration_of,
    probability_wrong,
    series_flags,
)

DEFAULT_BATCH_SIZE = 64
"""Crops per forward pass. On 2 CPU cores 32-64 run fastest (bench/bench_count.py): the batch's
activations still fit the caches; 128 and more spill and slow down."""

CSV_COLUMNS = ("frame", "chamber", "count", "estimate", "flag", "uncertainty", "series_flag")

VIEWS = (1, 2, 4, 8)
"""How many orientations of each chamber a count can average (core.count_paths.ORIENTATIONS):
the crop as it is, (2) turned half-way, (4) and a quarter either way, (8) and the mirror images."""

DEFAULT_VIEWS = 4
"""Counts average the four turns of each chamber. A cell count does not depend on how the chamber
is turned, and the network saw every turn and flip in training, yet its estimates differ (by a
third of a cell on average on synthetic test images); their mean is the better count. The four
turns count as exactly as all eight orientations (the mirror images too) on synthetic test
images, the sample growth series and the real sets, for half the passes (docs/counting.md,
"Orientations")."""


@dataclasses.dataclass(frozen=True)
class CountProgress:
    """Frames counted so far out of the frames asked for."""

    done: int
    total: int


@dataclasses.dataclass
class CountResult:
    """Per-frame, per-chamber count estimates (regressor outputs) and rounded counts."""

    estimates: np.ndarray  # (T, R) float32
    counts: np.ndarray  # (T, R) int64, rounded, >= 0
    frames: np.ndarray  # (T,) int64: each row's frame number in the series
    regions: list[Region]  # the chambers, (top, left, bottom, right) in frame pixels
    elapsed_s: float = 0.0
    # predicted cells (density head, when asked for): rows (frame, chamber, y, x), frame pixels
    cells: np.ndarray | None = None
    # (T, R) P(rounded count is wrong), core.uncertainty; None when not asked for
    uncertainty: np.ndarray | None = None
    # (T, R, 3) its raw signals: spread over views, over latent samples, |peaks - sum|; NaN
    # where the model has no such signal (latent for a density head, peaks for the regressor)
    signals: np.ndarray | None = None

    @property
    def flags(self) -> np.ndarray:
        """(T, R) why a count is not to be trusted (``"above 30"``, ...), "" for most."""
        return count_flags(self.estimates)

    @property
    def series_flags(self) -> np.ndarray:
        """(T, R) counts that depart from the frames beside them (``"jump"``, ``"drop"``,
        ``"rise"``; core.uncertainty.series_flags), "" for most; rows taken in frame order."""
        order = np.argsort(self.frames, kind="stable")
        flags = np.empty(self.counts.shape, dtype=object)
        flags[order] = series_flags(self.counts[order])
        return flags

    def rows(self) -> Iterator[tuple[int, int, int, float, str]]:
        """(frame, chamber, count, estimate, flag) per frame and chamber, in frame order."""
        flags = self.flags
        for t, frame in enumerate(self.frames.tolist()):
            for r in range(self.counts.shape[1]):
                yield frame, r, int(self.counts[t, r]), float(self.estimates[t, r]), flags[t, r]


def _check_views(views: int) -> int:
    if views not in VIEWS:
        raise ValueError(f"views must be one of {VIEWS}, got {views!r}")
    return int(views)


# -- counting --------------------------------------------------------------------------------
def iter_count(
    frames,
    checkpoint: Checkpoint | str | os.PathLike | None = "default",
    regions: Sequence[Region] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device = "auto",
    *,
    frame_indices: Sequence[int] | np.ndarray | None = None,
    domain: str = "natural",
    views: int = DEFAULT_VIEWS,
    cells: bool = False,
    uncertainty: bool = True,
    calibration: Calibration | None = None,
    seed: int = 0,
    mixed_precision: bool = True,
) -> Generator[CountProgress, None, CountResult]:
    """Count the cells of every chamber in every frame, one batch at a time.

    ``frames``: a 2D frame, a (T, H, W) stack of any real dtype, a memory map, or a file path.
    ``checkpoint``: a loaded :class:`Checkpoint`, ``"default"`` or a checkpoint file.
    ``regions``: chamber rectangles (top, left, bottom, right); none = the whole frame.
    ``frame_indices``: count only these frames (e.g. the labeled ones); rows follow their order.
    ``views``: orientations of each chamber averaged (:data:`VIEWS`), one network pass each.
    ``cells``: also find the cells, the peaks of the density map of each chamber as it is (one
    more pass; a model with a density head only).
    ``uncertainty``: also say how likely each rounded count is wrong (``result.uncertainty``,
    core.uncertainty), from signals taken in the same passes; ``calibration`` maps them to the
    probability (default: the checkpoint's own, else the shipped one); ``seed`` seeds the latent
    samples, so the same call gives the same numbers.
    ``mixed_precision``: the encoder's inner convolutions in bfloat16 where the CPU computes it
    natively (core.count_paths.counting_dtype; 1.7x as fast, counts within ~0.01 cells of
    float32's); False counts in float32 throughout.
    Yields :class:`CountProgress` after each batch (closing the generator stops between batches);
    returns a :class:`CountResult`.
    """
    batch_size = check_batch_size(batch_size)
    views = _check_views(views)
    stack = frames_of(frames)
    boxes = check_regions(regions, stack.shape[1:])
    indices = check_indices(frame_indices, stack.shape[0])
    target = select_device(device)
    ckpt = checkpoint_of(checkpoint, target)
    path = counting_path(ckpt.model, domain, counting_dtype(target, mixed_precision)).to(target)
    if cells and not isinstance(path, DensityPath):
        raise ValueError(
            "this model counts with the regressor and cannot say where the cells are; "
            "train one with a density head (train --head density)"
        )
    found: list[np.ndarray] = []
    total = stack.shape[0] if indices is None else len(indices)
    n_chambers = len(boxes)
    estimates = np.empty((total, n_chambers), dtype=np.float32)
    signals = np.zeros((total, n_chambers, 3), dtype=np.float32) if uncertainty else None
    noise = latent_noise(path, seed=seed) if uncertainty else None
    yield CountProgress(0, total)
    started = time.perf_counter()
    for start, stop, part in frame_batches(stack, indices, n_chambers, batch_size):
        numbers = range(start, stop) if indices is None else indices[start:stop].tolist()
        crops = crops_of(part, boxes, ckpt.normalization, numbers)
        images = torch.from_numpy(crops.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
        out = np.empty(len(images), dtype=np.float32)
        spread = np.empty((len(images), 3), dtype=np.float32)
        # Inference mode per batch, not around the yields: the caller's code between two
        # batches runs in the same thread and must keep its own autograd state.
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):  # many chambers: split a frame's crops
                chunk = images[i : i + batch_size].to(target, non_blocking=True)
                if uncertainty:
                    mean, sig = spread_count(path, chunk, views, noise)
                    out[i : i + batch_size] = mean.cpu().numpy()
                    spread[i : i + batch_size] = sig.cpu().numpy()
                else:
                    out[i : i + batch_size] = averaged_count(path, chunk, views).cpu().numpy()
                if cells:
                    peaks = find_peaks(path.maps(chunk))
                    crop = i + peaks.image  # crop number within this batch of frames
                    row = np.asarray(numbers)[crop // n_chambers]
                    found.append(_in_frame(row, crop % n_chambers, peaks.yx, boxes))
        estimates[start:stop] = out.reshape(stop - start, n_chambers)
        if signals is not None:
            signals[start:stop] = spread.reshape(stop - start, n_chambers, 3)
        yield CountProgress(stop, total)
    frame_numbers = np.arange(total, dtype=np.int64) if indices is None else indices.copy()
    return CountResult(
        estimates=estimates,
        counts=round_counts(estimates),
        frames=frame_numbers,
        regions=list(boxes),
        elapsed_s=time.perf_counter() - started,
        cells=np.concatenate(found) if found else (np.zeros((0, 4)) if cells else None),
        uncertainty=None
        if signals is None
        else probability_wrong(
            estimates,
            signals,
            calibration or calibration_of(ckpt.summary, ckpt.model.density_head is not None),
        ),
        signals=signals,
    )


def _in_frame(frames, chambers, yx: np.ndarray, boxes) -> np.ndarray:
    """Rows (frame, chamber, y, x): crop pixels back to the frame's (the inverse of the area
    resize of the chamber to 128x128; pixel centres are whole numbers)."""
    box = np.asarray(boxes, dtype=np.float64)[chambers]  # (K, 4) top, left, bottom, right
    y = box[:, 0] + (yx[:, 0] + 0.5) * (box[:, 2] - box[:, 0]) / IMAGE_SIZE - 0.5
    x = box[:, 1] + (yx[:, 1] + 0.5) * (box[:, 3] - box[:, 1]) / IMAGE_SIZE - 0.5
    return np.column_stack([frames, chambers, y, x])


@parameters_of(iter_count)
def count(*args, **kwargs) -> CountResult:
    """:func:`iter_count` run to the end: the same parameters, its :class:`CountResult`."""
    return drain(iter_count(*args, **kwargs))


def write_cells_csv(path: str | os.PathLike, result: CountResult) -> Path:
    """The predicted cells as napari's Points CSV (``index,axis-0,axis-1,axis-2``: frame, y, x),
    atomically; napari opens it as a Points layer over the image stack."""
    if result.cells is None:
        raise ValueError("the count did not look for cells (count(..., cells=True))")
    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "axis-0", "axis-1", "axis-2"])
        for i, (frame, _, y, x) in enumerate(result.cells.tolist()):
            writer.writerow([i, int(frame), f"{y:.2f}", f"{x:.2f}"])
    return Path(path)


def write_counts_csv(
    path: str | os.PathLike,
    results: CountResult | Sequence[CountResult],
    files: Sequence[str] | None = None,
    positions: Sequence[str] | None = None,
) -> Path:
    """``frame,chamber,count,estimate,flag,uncertainty,series_flag`` rows, atomically; with
    ``files``, a leading ``file`` column. ``flag`` marks counts outside the 0..30 cells the model
    counts (``"above 30"``); ``uncertainty`` is the probability that the count is wrong (empty
    when not computed); ``series_flag`` marks counts that break the growth series. With
    ``positions`` (the stage positions of multi-position files), a ``position`` column before
    ``frame``."""
    many = [results] if isinstance(results, CountResult) else list(results)
    if files is not None and len(files) != len(many):
        raise ValueError(f"{len(many)} results but {len(files)} file names")
    if positions is not None and len(positions) != len(many):
        raise ValueError(f"{len(many)} results but {len(positions)} positions")
    columns = (("file",) if files is not None else ()) + CSV_COLUMNS
    if positions is not None:
        columns = columns[: -len(CSV_COLUMNS)] + ("position",) + CSV_COLUMNS
    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for number, result in enumerate(many):
            lead = (files[number],) if files is not None else ()
            lead += (positions[number],) if positions is not None else ()
            doubt = result.uncertainty
            series = result.series_flags.reshape(-1)
            for i, (frame, chamber, n, estimate, flag) in enumerate(result.rows()):
                sure = "" if doubt is None else f"{float(doubt[i // doubt.shape[1], chamber]):.3f}"
                writer.writerow(
                    (*lead, frame, chamber, n, f"{estimate:.4f}", flag, sure, series[i])
                )
    return Path(path)
