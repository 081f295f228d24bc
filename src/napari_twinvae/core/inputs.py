"""Frames as the user has them, read a batch at a time and cut into normalised chamber crops:
the inputs of counting (core.predict) and of the model's views (core.model_view)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from napari_twinvae.core.chambers import as_frames, chamber_crops
from napari_twinvae.core.io import Checkpoint, load_model, read_stack


def frames_of(frames) -> np.ndarray:
    """A path (read lazily: memory-mapped when the TIFF allows) or an array, as (T, H, W)."""
    if isinstance(frames, str | os.PathLike):
        frames = read_stack(frames, lazy=True)
    return as_frames(frames)


def checkpoint_of(checkpoint: Checkpoint | str | os.PathLike | None, device) -> Checkpoint:
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    return load_model(checkpoint, device=device)


def check_batch_size(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    return int(batch_size)


def frame_batches(
    stack: np.ndarray, indices: np.ndarray | None, n_chambers: int, batch_size: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, frames) over the series (or the chosen frames), about ``batch_size`` crops each.

    Only the frames of one batch are read: slicing a memory map reads just those pages.
    """
    total = stack.shape[0] if indices is None else len(indices)
    step = max(1, batch_size // n_chambers)
    for start in range(0, total, step):
        stop = min(start + step, total)
        if indices is None:
            yield start, stop, stack[start:stop]
        else:
            yield start, stop, stack[indices[start:stop]]


def crops_of(frames: np.ndarray, regions, normalization, numbers: Sequence[int]) -> np.ndarray:
    """Chamber crops of a batch; a frame that cannot be used is named by its number."""
    try:
        return chamber_crops(frames, regions, normalization)
    except ValueError:
        for i, number in enumerate(numbers):  # only on failure: find the frame to name
            try:
                chamber_crops(frames[i : i + 1], regions, normalization)
            except ValueError as err:
                raise ValueError(f"frame {number}: {err}") from None
        raise


def check_indices(frame_indices, n_frames: int) -> np.ndarray | None:
    if frame_indices is None:
        return None
    indices = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError("no frames were chosen to count")
    if indices.min() < 0 or indices.max() >= n_frames:
        raise ValueError(
            f"frame {int(indices.max() if indices.max() >= n_frames else indices.min())} "
            f"is outside the series (frames 0..{n_frames - 1})"
        )
    return indices
