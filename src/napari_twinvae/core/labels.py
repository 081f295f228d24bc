"""Hand labels: cells clicked into a Points layer, and the frames the user has counted.

A frame's count is the number of points whose first coordinate is that frame (per chamber:
the points inside the chamber's rectangle). A frame the user marked as labeled with no points
counts 0; a frame never touched is unlabeled, never 0. Labels are stored as napari's Points CSV
(``index,axis-0,axis-1,axis-2``) beside a small ``frame,count`` file that lists every labeled
frame, so that empty labeled frames survive a save and reload.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from napari_twinvae.core.chambers import Region
from napari_twinvae.core.config import IMAGE_SIZE
from napari_twinvae.core.counts import MAX_COUNT


class Labels(NamedTuple):
    """Counts per frame and chamber, and which of them the user labeled; with clicked points,
    also where the cells are, in the pixels of each chamber's 128x128 crop."""

    counts: np.ndarray  # (T, R) int64; 0 where unlabeled
    labeled: np.ndarray  # (T, R) bool
    cells: dict[tuple[int, int], np.ndarray] | None = None  # (frame, chamber) -> (k, 2) y, x


class Annotation(NamedTuple):
    """Hand labels as read from a file or a Points layer: the clicked cells (frame, y, x) and
    the frames counted, or a ``frame,count`` table, which holds counts without cell positions.

    :meth:`labels` is the one check of hand labels against the images they label, for the
    command line and the docks alike.
    """

    points: np.ndarray  # (N, 3) float64; empty for a table
    labeled_frames: np.ndarray  # (K,) int64, sorted, unique
    table: dict[int, int] | None = None  # frame -> count: a frame,count table

    def frame_counts(self) -> dict[int, int]:
        """The whole-frame count of every labeled frame."""
        if self.table is not None:
            return dict(self.table)
        frames = np.rint(self.points[:, 0]).astype(np.int64)
        return {int(t): int((frames == t).sum()) for t in self.labeled_frames}

    def labels(
        self,
        n_frames: int,
        frame_shape: tuple[int, int] | None = None,
        regions: Sequence[Region] | None = None,
        max_count: int | None = MAX_COUNT,
    ) -> Labels:
        """Counts per frame and chamber for a stack of ``n_frames`` frames of ``frame_shape``.

        Refused with a ValueError that says why: frames beyond the stack, counts above
        ``max_count``, points outside the image, and a table for several chambers (a table
        counts whole frames).
        """
        if self.table is None:
            return labels_from_points(
                self.points, self.labeled_frames, n_frames, regions, max_count, frame_shape
            )
        if regions is not None and len(regions) > 1:
            raise ValueError(
                f"a frame,count table counts whole frames; with {len(regions)} chambers give the "
                "clicked cells as a napari Points CSV"
            )
        return labels_from_table(self.table, n_frames)

    def empty_frames(self) -> list[int]:
        """The labeled frames with no clicked cell: those marked as holding none."""
        with_cells = np.rint(self.points[:, 0]).astype(np.int64)
        return np.setdiff1d(self.labeled_frames, with_cells).tolist()


def _points3(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.size == 0:
        return np.zeros((0, 3))
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise ValueError(f"points must be rows of (frame, y, x) or (y, x), got shape {p.shape}")
    if p.shape[1] == 2:  # a single 2D image is frame 0
        p = np.column_stack([np.zeros(len(p)), p])
    return p


def labeled_frames_of(points, marked: Iterable[int] = ()) -> np.ndarray:
    """Frames with at least one point, plus the frames the user marked as counted (even empty)."""
    p = _points3(points)
    frames = np.rint(p[:, 0]).astype(np.int64)
    return np.union1d(frames, np.asarray(list(marked), dtype=np.int64)).astype(np.int64)


def outside_image(points, frame_shape: tuple[int, int]) -> np.ndarray:
    """Which points (frame, y, x) lie off the image: pixel centres are whole numbers, so the
    image spans -0.5 to side - 0.5 on each axis."""
    p = _points3(points)
    height, width = float(frame_shape[0]), float(frame_shape[1])
    y, x = p[:, 1], p[:, 2]
    return (y < -0.5) | (y >= height - 0.5) | (x < -0.5) | (x >= width - 0.5)


def labels_from_points(
    points,
    marked: Iterable[int] = (),
    n_frames: int | None = None,
    regions: Sequence[Region] | None = None,
    max_count: int | None = MAX_COUNT,
    frame_shape: tuple[int, int] | None = None,
) -> Labels:
    """Counts per frame (and chamber) from clicked points.

    ``marked`` lists frames the user counted, including frames with zero cells. With ``regions``
    each point counts for the chamber whose rectangle holds it; points in no chamber are ignored.
    A labeled chamber above ``max_count`` cells is refused (``None``: no limit, e.g. to show the
    counts while the user is still clicking), and so are points between two frames and, with
    ``frame_shape``, points outside the image.
    """
    p = _points3(points)
    between = np.abs(p[:, 0] - np.rint(p[:, 0])) > 1e-3
    if between.any():
        i = int(np.flatnonzero(between)[0])
        raise ValueError(
            f"{int(between.sum())} point(s) lie between two frames (the first at frame "
            f"{p[i, 0]:g}); a point belongs to one frame"
        )
    if frame_shape is not None:
        outside = outside_image(p, frame_shape)
        if outside.any():
            t, y, x = p[np.flatnonzero(outside)[0]]
            raise ValueError(
                f"{int(outside.sum())} point(s) lie outside the {frame_shape[0]}x{frame_shape[1]} "
                f"image (the first on frame {t:g} at y {y:.1f}, x {x:.1f}); delete them"
            )
    frame = np.rint(p[:, 0]).astype(np.int64)
    frames = labeled_frames_of(p, marked)
    if frames.size and frames.min() < 0:
        raise ValueError(f"labeled frames must not be negative (frame {int(frames.min())})")
    total = int(n_frames) if n_frames is not None else int(frames.max(initial=-1)) + 1
    if frames.size and frames.max() >= total:
        raise ValueError(
            f"labels name frame {int(frames.max())}, but the stack has only {total} frames"
        )
    boxes = list(regions) if regions else [None]
    inside = [_inside(p, box) for box in boxes]  # which points each chamber holds
    counts = np.zeros((total, len(boxes)), dtype=np.int64)
    for r, held in enumerate(inside):
        counts[:, r] = np.bincount(frame[held], minlength=total)[:total]
    labeled = np.zeros_like(counts, dtype=bool)
    labeled[frames] = True
    if max_count is not None and (counts[labeled] > max_count).any():
        raise ValueError(
            f"a labeled chamber holds {int(counts[labeled].max())} cells; the model counts 0 to "
            f"{max_count} per chamber (mark smaller chambers)"
        )
    counts[~labeled] = 0
    cells = None
    if frame_shape is not None or regions:
        cells = {}
        for r, (box, held) in enumerate(zip(boxes, inside, strict=True)):
            top, left, bottom, right = box if box is not None else (0, 0, *frame_shape)
            # pixel centres are whole numbers: the crop's edges lie half a pixel out, on both sides
            y = (p[:, 1] - top + 0.5) * IMAGE_SIZE / (bottom - top) - 0.5
            x = (p[:, 2] - left + 0.5) * IMAGE_SIZE / (right - left) - 0.5
            for t in frames:
                here = held & (frame == t)
                cells[int(t), r] = np.column_stack([y[here], x[here]]).astype(np.float32)
    return Labels(counts, labeled, cells)


def _inside(points: np.ndarray, box: Region | None) -> np.ndarray:
    """Which points (frame, y, x) lie in ``box`` (top, left, bottom, right); all without one."""
    if box is None:
        return np.ones(len(points), dtype=bool)
    top, left, bottom, right = box
    y, x = points[:, 1], points[:, 2]
    return (y >= top) & (y < bottom) & (x >= left) & (x < right)


# -- files ---------------------------------------------------------------------------------
def frames_file(points_csv: str | os.PathLike) -> Path:
    """The companion file that lists every labeled frame of a Points CSV."""
    path = Path(points_csv)
    return path.with_name(f"{path.stem}.frames.csv")


def save_annotation(
    points_csv: str | os.PathLike, points, marked: Iterable[int] = ()
) -> tuple[Path, Path]:
    """Write the points (napari Points CSV) and the labeled frames (``frame,count``), atomically."""
    from napari_twinvae.core.io import atomic_write

    p = _points3(points)
    frames = labeled_frames_of(p, marked)
    per_frame = np.bincount(
        np.rint(p[:, 0]).astype(np.int64), minlength=int(frames.max(initial=-1)) + 1
    )
    target = Path(points_csv)
    with atomic_write(target, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "axis-0", "axis-1", "axis-2"])
        for i, (t, y, x) in enumerate(p.tolist()):
            writer.writerow([i, f"{t:g}", f"{y:.3f}", f"{x:.3f}"])
    companion = frames_file(target)
    with atomic_write(companion, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["frame", "count"])
        writer.writerows((int(t), int(per_frame[t])) for t in frames)
    return target, companion


def annotation_of(points, marked: Iterable[int] = ()) -> Annotation:
    """The :class:`Annotation` of clicked points (frame, y, x) and frames marked as counted."""
    p = _points3(points)
    return Annotation(p, labeled_frames_of(p, marked))


def merge_annotation(current: Annotation, loaded: Annotation) -> tuple[np.ndarray, Annotation]:
    """``loaded`` merged into ``current``: the points of ``loaded`` not already clicked (same
    frame and place) and the merged annotation. Nothing already clicked is replaced; a frame
    that holds cells on one side and is marked as holding none on the other is a ValueError."""
    new_points = loaded.points[~already_clicked(loaded.points, current.points)]
    clash = _marked_against_clicked(current, loaded) | _marked_against_clicked(loaded, current)
    if clash:
        frames = ", ".join(map(str, sorted(clash)))
        raise ValueError(
            f"frame(s) {frames} hold cells on one side and are marked 'no cells' on the other"
        )
    merged = annotation_of(
        np.vstack([current.points, new_points]),
        [*current.labeled_frames, *loaded.labeled_frames],
    )
    return new_points, merged


def merge_fitting(
    current: Annotation,
    loaded: Annotation,
    n_frames: int,
    frame_shape: tuple[int, int],
    regions: Sequence[Region] | None = None,
    source: str = "the file",
    target: str = "the image",
) -> np.ndarray:
    """The clicked cells of ``loaded`` (read from file ``source``) that ``current`` (the labels
    of image ``target``) lacks: what loading the file adds. A file that does not fit is refused
    before anything changes, with a ValueError that says why: the file alone does not fit the
    stack, it clashes with a 'no cells' mark, or with the cells already clicked it crowds a
    chamber."""
    try:
        loaded.labels(n_frames, frame_shape, regions)
    except ValueError as err:
        raise ValueError(f"{source} does not fit {target}: {err}") from None
    try:
        new, merged = merge_annotation(current, loaded)
    except ValueError as err:
        raise ValueError(
            f"{source} does not fit: {err}; nothing was merged (undo the marks or delete the "
            "cells first)"
        ) from None
    try:
        merged.labels(n_frames, frame_shape, regions, MAX_COUNT)
    except ValueError as err:
        raise ValueError(f"{source} does not fit with the cells already clicked: {err}") from None
    return new


def already_clicked(new: np.ndarray, old: np.ndarray, tolerance: float = 0.01) -> np.ndarray:
    """Which rows of ``new`` (frame, y, x) already have a point at the same place in ``old``."""
    found = np.zeros(len(new), dtype=bool)
    new_frame, old_frame = np.rint(new[:, 0]), np.rint(old[:, 0])
    for frame in np.unique(new_frame):
        here, there = new_frame == frame, old_frame == frame
        if there.any():
            gap = np.abs(new[here][:, None, 1:] - old[there][None, :, 1:]).max(axis=-1)
            found[here] = (gap < tolerance).any(axis=1)
    return found


def _marked_against_clicked(marking: Annotation, clicking: Annotation) -> set[int]:
    """Frames ``marking`` marks as holding no cells on which ``clicking`` has cells."""
    clicked = np.rint(clicking.points[:, 0]).astype(np.int64).tolist()
    return set(marking.empty_frames()) & set(clicked)


def load_annotation(path: str | os.PathLike) -> Annotation:
    """Hand labels from a file: the one reader of label files, for the command line and the docks.

    A napari Points CSV (``index,axis-0,axis-1,axis-2``, axis-0 = frame) gives the clicked cells;
    its companion ``<name>.frames.csv`` (written by :func:`save_annotation`) adds the frames
    counted with no cell in them, and must agree with the points on every other frame. A
    ``frame,count`` table gives counts without positions. Counts must lie in 0..30; an empty
    file, or one that labels no frame, is refused.
    """
    source = Path(path)
    columns, rows = _read_rows(source)
    if {"frame", "count"} <= set(columns):
        table = _counts_from_rows(source, rows)
        if not table:
            raise ValueError(f"{source}: holds no labels")
        return Annotation(np.zeros((0, 3)), np.array(sorted(table), dtype=np.int64), table)
    points = _points_from_rows(source, columns, rows) if rows else np.zeros((0, 3))
    counted: dict[int, int] = {}
    companion = frames_file(source)
    if companion.is_file():
        columns, rows = _read_rows(companion)
        if not {"frame", "count"} <= set(columns):
            raise ValueError(
                f"{companion.name} is read beside {source.name} as its labeled frames and must "
                f"have the columns frame,count, not {','.join(columns)} (save the labels again, "
                f"or delete {companion.name})"
            )
        counted = _counts_from_rows(companion, rows)
        clicked = np.rint(points[:, 0]).astype(np.int64)
        for frame, count in sorted(counted.items()):
            if int((clicked == frame).sum()) != count:
                raise ValueError(
                    f"{companion.name} counts {count} cells on frame {frame}, but {source.name} "
                    f"holds {int((clicked == frame).sum())} points there; the two files no longer "
                    f"belong together (save the labels again, or delete {companion.name})"
                )
    annotation = annotation_of(points, counted)
    if annotation.labeled_frames.size == 0:
        raise ValueError(f"{source}: holds no labels")
    return annotation


def read_labels(path: str | os.PathLike) -> dict[int, int]:
    """``{frame: count}`` from a ``frame,count`` CSV or a napari Points CSV (see
    :func:`load_annotation`); a frame with more than 30 cells is refused."""
    annotation = load_annotation(path)
    frames = annotation.labeled_frames
    try:
        labels = annotation.labels(int(frames.max()) + 1)
    except ValueError as err:
        raise ValueError(f"{Path(path)}: {err}") from None
    return {int(t): int(labels.counts[t, 0]) for t in frames}


def labels_from_table(table: dict[int, int], n_frames: int) -> Labels:
    """A ``{frame: count}`` table as per-frame arrays for a stack of ``n_frames`` (one chamber)."""
    counts = np.zeros((int(n_frames), 1), dtype=np.int64)
    labeled = np.zeros_like(counts, dtype=bool)
    for frame, count in table.items():
        if not 0 <= frame < n_frames:
            raise ValueError(
                f"the labels name frame {frame}, but the images have frames 0..{n_frames - 1}"
            )
        counts[frame, 0] = count
        labeled[frame, 0] = True
    return Labels(counts, labeled)


def _read_rows(source: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows of a labels CSV (UTF-8, with or without the BOM Excel writes)."""
    try:
        with open(source, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise ValueError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{source}: not a readable CSV ({err})") from None
    if not columns:
        raise ValueError(f"{source}: the file is empty")
    points = {"axis-0", "axis-1"} <= set(columns)
    if "count" in columns and "frame" not in columns and "index" in columns and not points:
        # Tables that number their frames `index` (e.g. the shared benchmark sets), not points.
        rows = [{**row, "frame": row["index"]} for row in rows]
        columns = [*columns, "frame"]
    known = {"frame", "count"} <= set(columns) or {"axis-0", "axis-1"} <= set(columns)
    if not known:
        raise ValueError(
            f"{source}: expected columns frame,count or a napari Points CSV "
            f"(index,axis-0,axis-1,axis-2), got {','.join(columns)}"
        )
    return columns, rows


def _counts_from_rows(source: Path, rows: list[dict[str, str]]) -> dict[int, int]:
    table: dict[int, int] = {}
    for line, row in enumerate(rows, start=2):
        try:
            number, count = float(row["frame"]), float(row["count"])
        except (TypeError, ValueError):
            raise ValueError(f"{source}, line {line}: frame and count must be numbers") from None
        if not (math.isfinite(number) and number == round(number)):
            raise ValueError(f"{source}, line {line}: frame {row['frame']} is not a whole number")
        frame = int(number)
        if frame < 0:
            raise ValueError(f"{source}, line {line}: frame {frame} is negative")
        if not (math.isfinite(count) and count == round(count) and 0 <= count <= MAX_COUNT):
            raise ValueError(
                f"{source}, line {line}: count {row['count']} is not a whole number in 0..{MAX_COUNT}"
            )
        if frame in table and table[frame] != int(count):
            raise ValueError(f"{source}, line {line}: frame {frame} is labeled twice")
        table[frame] = int(count)
    return table


def _points_from_rows(source: Path, columns: list[str], rows: list[dict[str, str]]) -> np.ndarray:
    axes = sorted((c for c in columns if re.fullmatch(r"axis-\d+", c)), key=lambda c: int(c[5:]))
    try:
        points = np.array([[float(row[a]) for a in axes] for row in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: a point coordinate is not a number") from None
    if not np.isfinite(points).all():
        raise ValueError(f"{source}: a point coordinate is not finite")
    if points.shape[1] > 3:  # e.g. (t, z, y, x): napari keeps leading axes; use first and last two
        points = points[:, [0, -2, -1]]
    return _points3(points)
