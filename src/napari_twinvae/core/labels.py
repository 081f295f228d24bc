"""Hand labels: cells clicked into a Points layer, and the frames the user has counted.

A frame's count is the number of points whose first coordinate is that frame (per chamber:
the points inside the chamber's rectangle). A frame the user marked as labeled with no points
counts 0; a frame never touched is unlabeled, never 0. Labels are stored as napari's Points CSV
(``index,axis-0,axis-1,axis-2``) beside a small ``frame,count`` file that lists every labeled
frame, so that empty labeled frames survive a save and reload.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from napari_twinvae.core.chambers import Region
from napari_twinvae.core.synthetic import MAX_COUNT


class Labels(NamedTuple):
    """Counts per frame and chamber, and which of them the user labeled."""

    counts: np.ndarray  # (T, R) int64; 0 where unlabeled
    labeled: np.ndarray  # (T, R) bool


class Annotation(NamedTuple):
    """What the user clicked: points (frame, y, x) and the frames they counted."""

    points: np.ndarray  # (N, 3) float64
    labeled_frames: np.ndarray  # (K,) int64, sorted, unique


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


def labels_from_points(
    points,
    marked: Iterable[int] = (),
    n_frames: int | None = None,
    regions: Sequence[Region] | None = None,
    max_count: int | None = MAX_COUNT,
) -> Labels:
    """Counts per frame (and chamber) from clicked points.

    ``marked`` lists frames the user counted, including frames with zero cells. With ``regions``
    each point counts for the chamber whose rectangle holds it; points in no chamber are ignored.
    A labeled chamber above ``max_count`` cells is refused (``None``: no limit, e.g. to show the
    counts while the user is still clicking).
    """
    p = _points3(points)
    frame = np.rint(p[:, 0]).astype(np.int64)
    frames = labeled_frames_of(p, marked)
    if frames.size and frames.min() < 0:
        raise ValueError("labeled frames must not be negative")
    total = int(n_frames) if n_frames is not None else int(frames.max(initial=-1)) + 1
    if frames.size and frames.max() >= total:
        raise ValueError(
            f"labels name frame {int(frames.max())}, but the stack has only {total} frames"
        )
    boxes = list(regions) if regions else [None]
    counts = np.zeros((total, len(boxes)), dtype=np.int64)
    for r, box in enumerate(boxes):
        inside = np.ones(len(p), dtype=bool)
        if box is not None:
            top, left, bottom, right = box
            y, x = p[:, 1], p[:, 2]
            inside = (y >= top) & (y < bottom) & (x >= left) & (x < right)
        counts[:, r] = np.bincount(frame[inside], minlength=total)[:total]
    labeled = np.zeros_like(counts, dtype=bool)
    labeled[frames] = True
    if max_count is not None and (counts[labeled] > max_count).any():
        raise ValueError(
            f"a labeled chamber holds {int(counts[labeled].max())} cells; the model counts 0 to "
            f"{max_count} per chamber (mark smaller chambers)"
        )
    counts[~labeled] = 0
    return Labels(counts, labeled)


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


def load_annotation(points_csv: str | os.PathLike) -> Annotation:
    """Points and labeled frames written by :func:`save_annotation` (or any napari Points CSV)."""
    source = Path(points_csv)
    rows = _read_rows(source)
    points = _points_from_rows(source, rows) if rows else np.zeros((0, 3))
    marked: list[int] = []
    companion = frames_file(source)
    if companion.is_file():
        table = _counts_from_rows(companion, _read_rows(companion))
        marked = sorted(table)
    return Annotation(points, labeled_frames_of(points, marked))


def read_labels(path: str | os.PathLike) -> dict[int, int]:
    """``{frame: count}`` from a ``frame,count`` CSV or a napari Points CSV.

    A Points CSV counts the points per frame; frames listed in its companion ``.frames.csv``
    (written by the plugin) count too, with 0 when they hold no point. Counts must lie in
    0..30, and an empty file is refused.
    """
    source = Path(path)
    rows = _read_rows(source)
    if not rows:
        raise ValueError(f"{source}: holds no labels")
    if "count" in rows[0]:
        return _counts_from_rows(source, rows)
    annotation = load_annotation(source)
    labels = labels_from_points(annotation.points, annotation.labeled_frames)
    return {int(t): int(labels.counts[t, 0]) for t in annotation.labeled_frames}


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


def _read_rows(source: Path) -> list[dict[str, str]]:
    try:
        with open(source, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise ValueError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{source}: not a readable CSV ({err})") from None
    if not columns:
        raise ValueError(f"{source}: the file is empty")
    if "count" in columns and "frame" not in columns and "index" in columns:
        # Tables that number their frames `index` (e.g. the shared benchmark sets), not points.
        rows = [{**row, "frame": row["index"]} for row in rows]
        columns = [*columns, "frame"]
    known = {"frame", "count"} <= set(columns) or {"axis-0", "axis-1"} <= set(columns)
    if not known:
        raise ValueError(
            f"{source}: expected columns frame,count or a napari Points CSV "
            f"(index,axis-0,axis-1,axis-2), got {','.join(columns)}"
        )
    return rows


def _counts_from_rows(source: Path, rows: list[dict[str, str]]) -> dict[int, int]:
    table: dict[int, int] = {}
    for line, row in enumerate(rows, start=2):
        try:
            frame, count = int(row["frame"]), float(row["count"])
        except (TypeError, ValueError):
            raise ValueError(f"{source}, line {line}: frame and count must be numbers") from None
        if frame < 0:
            raise ValueError(f"{source}, line {line}: frame {frame} is negative")
        if count != int(count) or not 0 <= count <= MAX_COUNT:
            raise ValueError(
                f"{source}, line {line}: count {row['count']} is not a whole number in 0..{MAX_COUNT}"
            )
        if frame in table and table[frame] != int(count):
            raise ValueError(f"{source}, line {line}: frame {frame} is labeled twice")
        table[frame] = int(count)
    return table


def _points_from_rows(source: Path, rows: list[dict[str, str]]) -> np.ndarray:
    axes = sorted((c for c in rows[0] if c.startswith("axis-")), key=lambda c: int(c[5:]))
    try:
        points = np.array([[float(row[a]) for a in axes] for row in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: a point coordinate is not a number") from None
    if not np.isfinite(points).all():
        raise ValueError(f"{source}: a point coordinate is not finite")
    if points.shape[1] > 3:  # e.g. (t, z, y, x): napari keeps leading axes; use first and last two
        points = points[:, [0, -2, -1]]
    return _points3(points)
