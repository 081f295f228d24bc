"""Chambers: from the user's frames to the 128x128 crops the network sees.

A frame holds one or several cultivation chambers. The user marks each with a rectangle (a
napari Shapes layer or its CSV); every chamber is cut out, resized to 128x128 with area
interpolation and normalised, the same way for training and counting. Without rectangles the
whole frame is one chamber.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from napari_twinvae.core.config import IMAGE_SIZE
from napari_twinvae.core.intensity import Normalization, normalize_frames

Region = tuple[int, int, int, int]
"""A chamber's rectangle in frame pixels: (top, left, bottom, right), bottom and right exclusive."""

MIN_SIDE = 8
"""Smallest chamber side in pixels; anything smaller is a stray click, not a chamber."""


def as_frames(data) -> np.ndarray:
    """A single 2D frame or a T x H x W stack as a (T, H, W) array, without copying.

    Memory-mapped stacks stay memory-mapped. RGB images, 4D+ data, empty stacks and
    non-numeric data are refused with a message that says what to do.
    """
    if not hasattr(data, "ndim") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if data.dtype.kind not in "uifb":
        raise ValueError(f"frames must hold numbers, got dtype {data.dtype}")
    shape = tuple(data.shape)
    if data.ndim == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4:
        raise ValueError(
            f"this looks like an RGB(A) image {shape}; convert it to one gray channel first"
        )
    if data.ndim == 2:
        data = data[None]
    elif data.ndim != 3:
        raise ValueError(
            f"expected one 2D frame or a (frames, height, width) stack, got {data.ndim}D data "
            f"of shape {shape}; pick one channel / z-plane first"
        )
    if 0 in data.shape:
        raise ValueError(f"the stack is empty (shape {shape})")
    return data


# -- regions -------------------------------------------------------------------------------
def _rotation_degrees(ys: np.ndarray, xs: np.ndarray) -> float:
    """How far a rectangle is turned from upright, in degrees: 0 when every vertex lies on a
    side of its bounding box (within a pixel or 2 % of the side, a hand-dragged vertex),
    else the turn of its first edge from the nearest image axis."""
    tolerance = max(1.0, 0.02 * max(np.ptp(ys), np.ptp(xs)))
    on_side = np.minimum(np.abs(ys - ys.min()), np.abs(ys - ys.max())) <= tolerance
    on_side &= np.minimum(np.abs(xs - xs.min()), np.abs(xs - xs.max())) <= tolerance
    if on_side.all():
        return 0.0
    angle = np.degrees(np.arctan2(ys[1] - ys[0], xs[1] - xs[0])) % 90.0
    return float(min(angle, 90.0 - angle))


def regions_from_shapes(
    shapes: Sequence[np.ndarray], shape_types: Sequence[str] | None = None
) -> list[Region]:
    """Rectangles of a napari Shapes layer (its ``data`` and ``shape_type``) as regions.

    Each shape's last two vertex columns are (y, x); the region is the bounding box of its
    vertices, so a rectangle drawn on any frame of a stack marks the chamber in every frame.
    A rotated rectangle is refused: its bounding box would take in the frame around the
    chamber (a neighbouring chamber's cells among them).
    """
    if shape_types is not None:
        others = sorted({t for t in shape_types if t != "rectangle"})
        if others:
            raise ValueError(
                f"chambers must be rectangles; the shapes layer also holds {', '.join(others)}"
            )
    regions = []
    for vertices in shapes:
        v = np.asarray(vertices, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] < 2 or len(v) == 0:
            raise ValueError(f"a shape needs rows of (..., y, x) vertices, got shape {v.shape}")
        ys, xs = v[:, -2], v[:, -1]
        turn = _rotation_degrees(ys, xs)
        if turn > 0:
            raise ValueError(
                f"chamber rectangle {len(regions) + 1} is rotated by {turn:.0f} degrees; chambers "
                "must be drawn upright (rotate the image so the chambers stand straight)"
            )
        regions.append(
            (
                int(np.floor(ys.min() + 0.5)),
                int(np.floor(xs.min() + 0.5)),
                int(np.floor(ys.max() + 0.5)),
                int(np.floor(xs.max() + 0.5)),
            )
        )
    return regions


def read_regions_csv(path: str | os.PathLike) -> list[Region]:
    """Rectangles from napari's Shapes CSV (``index,shape-type,vertex-index,axis-0,axis-1[,...]``)."""
    source = Path(path)
    try:
        with open(source, newline="", encoding="utf-8-sig") as f:  # with or without Excel's BOM
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{source}: cannot read the chamber rectangles ({err})") from None
    if not rows:
        raise ValueError(f"{source}: holds no shapes")
    columns = set(rows[0])
    axes = sorted((c for c in columns if c.startswith("axis-")), key=lambda c: int(c[5:]))
    if "index" not in columns or len(axes) < 2:
        raise ValueError(
            f"{source}: not a napari Shapes CSV (needs index, shape-type and axis-0, axis-1 columns)"
        )
    shapes: dict[int, list[list[float]]] = {}
    types: dict[int, str] = {}
    try:
        for row in rows:
            index = int(row["index"])
            shapes.setdefault(index, []).append([float(row[a]) for a in axes])
            types[index] = (row.get("shape-type") or "rectangle").strip()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: a row is not a number ({err})") from None
    order = sorted(shapes)
    try:
        return regions_from_shapes([np.array(shapes[i]) for i in order], [types[i] for i in order])
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


EDGE_ALLOWANCE = 0.1
"""A chamber rectangle may reach past the frame's edge by this share of its side (or by
``EDGE_PIXELS``, whichever is more); it is clipped with a note. Farther out it is refused: the
part inside would be blown up to 128x128 and counted as if it were a whole chamber."""
EDGE_PIXELS = 2


def fit_regions(
    regions: Sequence[Region] | None, frame_shape: tuple[int, int]
) -> tuple[list[Region], list[str]]:
    """The one check of chamber rectangles against a frame: the regions clipped to the frame
    (the whole frame when there are none) and a note for each rectangle that was clipped.

    A rectangle may reach past the edge by a small margin (:data:`EDGE_ALLOWANCE` of its side,
    at least :data:`EDGE_PIXELS`); one that reaches farther, lies outside the frame or leaves
    less than ``MIN_SIDE`` pixels is refused with its number.
    """
    height, width = int(frame_shape[0]), int(frame_shape[1])
    if not regions:
        if min(height, width) < MIN_SIDE:
            raise ValueError(
                f"the frames are {height}x{width} pixels; a chamber needs at least "
                f"{MIN_SIDE}x{MIN_SIDE}"
            )
        return [(0, 0, height, width)], []
    checked, notes = [], []
    for number, (top, left, bottom, right) in enumerate(regions):
        top, bottom = sorted((int(top), int(bottom)))
        left, right = sorted((int(left), int(right)))
        clipped = (max(top, 0), max(left, 0), min(bottom, height), min(right, width))
        where = f"chamber {number} ({top}:{bottom}, {left}:{right})"
        if clipped[2] - clipped[0] < MIN_SIDE or clipped[3] - clipped[1] < MIN_SIDE:
            raise ValueError(
                f"{where} lies outside the {height}x{width} frame or is smaller than {MIN_SIDE} px"
            )
        outside_y = max(0, -top) + max(0, bottom - height)
        outside_x = max(0, -left) + max(0, right - width)
        allowed_y = max(EDGE_PIXELS, EDGE_ALLOWANCE * (bottom - top))
        allowed_x = max(EDGE_PIXELS, EDGE_ALLOWANCE * (right - left))
        if outside_y > allowed_y or outside_x > allowed_x:
            inside = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
            share = 1 - inside / ((bottom - top) * (right - left))
            raise ValueError(
                f"{where} lies {share:.0%} outside the {height}x{width} frame; a chamber may reach "
                f"past the edge by at most {EDGE_ALLOWANCE:.0%} of its side: redraw it inside"
            )
        if outside_y or outside_x:
            notes.append(
                f"{where} reaches past the {height}x{width} frame's edge; it is clipped to "
                f"{clipped[0]}:{clipped[2]}, {clipped[1]}:{clipped[3]}"
            )
        checked.append(clipped)
    return checked, notes


def check_regions(regions: Sequence[Region] | None, frame_shape: tuple[int, int]) -> list[Region]:
    """:func:`fit_regions` without the notes: the clipped regions, or a ValueError."""
    return fit_regions(regions, frame_shape)[0]


def resized_whole_frame(frame_shape: tuple[int, ...], regions: Sequence[Region] | None) -> bool:
    """Whether counting will squeeze a whole frame that is not 128x128 (worth telling the user)."""
    return not regions and tuple(frame_shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE)


# -- crops ---------------------------------------------------------------------------------
def area_matrix(size: int, out: int = IMAGE_SIZE) -> np.ndarray:
    """(out, size) weights that resample a line of ``size`` pixels to ``out`` by pixel area.

    Each output pixel averages the input pixels its footprint covers, with fractional weights at
    the ends: area interpolation when shrinking, exact piecewise-constant sampling when growing.
    Applied as ``A_y @ crop @ A_x.T``, a whole batch of crops is two matrix products.
    """
    edges_out = np.arange(out + 1, dtype=np.float64) * (size / out)
    lo = edges_out[:-1, None]
    hi = edges_out[1:, None]
    pixel = np.arange(size, dtype=np.float64)[None, :]
    cover = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0.0, None)
    return (cover / cover.sum(axis=1, keepdims=True)).astype(np.float32)


def _area_resize(part: np.ndarray) -> np.ndarray:
    """(T, h, w) float32 -> (T, 128, 128) by pixel area: ``A_y @ crop @ A_x.T`` for the batch.

    The products run in torch, not numpy: numpy's OpenBLAS threads and torch's OpenMP threads
    busy-wait against each other when counting alternates the two, which made this step 10-40x
    slower on 2 cores (measured while counting, bench/bench_count.py).
    """
    import torch

    a_y = torch.from_numpy(area_matrix(part.shape[1]))
    a_x = torch.from_numpy(area_matrix(part.shape[2]))
    # a read-only memory map is copied: torch warns about (and must not write to) such arrays
    part = np.require(part, requirements=("C_CONTIGUOUS", "WRITEABLE"))
    return (a_y @ torch.from_numpy(part) @ a_x.T).numpy()


def chamber_crops(
    frames,
    regions: Sequence[Region] | None = None,
    normalization: Normalization | None = None,
) -> np.ndarray:
    """(T, R, 128, 128) float32 crops in [0, 1]: every chamber of every frame, normalised.

    ``frames`` is a 2D frame or a (T, H, W) stack of any real dtype (a memory map is read only
    for the frames passed in, so callers slice long series into batches). Each chamber is resized
    with area interpolation, then normalised as the checkpoint says, per crop, so that training and
    counting see the same numbers. NaN or infinite values are refused.
    """
    stack = as_frames(frames)
    boxes = check_regions(regions, stack.shape[1:])
    crops = np.empty((stack.shape[0], len(boxes), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for r, (top, left, bottom, right) in enumerate(boxes):
        part = np.asarray(stack[:, top:bottom, left:right], dtype=np.float32)
        if not np.isfinite(part).all():
            raise ValueError("the frames contain NaN or infinite values; clean or mask them first")
        if part.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            part = _area_resize(part)
        crops[:, r] = part
    return normalize_frames(crops, normalization)


def iter_chamber_crops(
    frames,
    regions: Sequence[Region] | None = None,
    normalization: Normalization | None = None,
    chunk: int = 64,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """:func:`chamber_crops` of a long stack, ``chunk`` frames at a time, into one array.

    Yields (frames done, frames) after every chunk, so that a worker can report and stop between
    chunks and a memory map is read one chunk at a time; returns the crops (T, R, 128, 128).
    """
    stack = as_frames(frames)
    boxes = check_regions(regions, stack.shape[1:])
    crops = np.empty((stack.shape[0], len(boxes), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for start in range(0, stack.shape[0], chunk):
        stop = min(start + chunk, stack.shape[0])
        crops[start:stop] = chamber_crops(stack[start:stop], boxes, normalization)
        yield stop, stack.shape[0]
    return crops
