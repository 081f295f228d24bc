"""Hypothesis strategies for the files a user can hand the command line and the docks.

Each strategy draws a *recipe* (a small, printable description) and ``write_*`` makes the file
from it, so a failing example shrinks to a recipe one can read.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from hypothesis import strategies as st

# -- image stacks --------------------------------------------------------------------------
DTYPES = ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "b1", "c8")


@dataclass(frozen=True)
class ImageRecipe:
    """An image file: the array's shape, dtype and values, and how it is stored."""

    shape: tuple[int, ...]
    dtype: str = "u1"
    big_endian: bool = False
    values: str = "random"  # random, constant, extremes, nan, inf
    storage: str = "tiff"  # tiff, zlib, lzma, imagej, lzw, pages, png, garbage, truncated, empty
    seed: int = 0

    def array(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        dtype = np.dtype(self.dtype).newbyteorder(">" if self.big_endian else "<")
        if dtype.kind == "b":
            data = rng.random(self.shape) > 0.5
        elif dtype.kind in "fc":
            data = rng.normal(100, 30, self.shape)
        else:
            info = np.iinfo(dtype)
            data = rng.integers(max(info.min, 0), min(info.max, 4096), self.shape, endpoint=True)
        if self.values == "constant":
            data = np.full(self.shape, data.flat[0] if data.size else 0)
        elif self.values == "extremes" and dtype.kind in "iu":
            info = np.iinfo(dtype)
            data = np.where(rng.random(self.shape) > 0.5, info.max, info.min)
        elif self.values in ("nan", "inf") and dtype.kind in "fc" and data.size:
            data = data.astype(np.float64)
            data.flat[rng.integers(0, data.size)] = np.nan if self.values == "nan" else -np.inf
        return data.astype(dtype)


def _shapes():
    side = st.integers(1, 40) | st.integers(8, 70)
    return st.one_of(
        st.tuples(st.integers(1, 4), side, side),  # T x H x W
        st.tuples(side, side),  # one frame
        st.tuples(st.integers(5, 40), st.integers(5, 40), st.sampled_from([3, 4])),  # RGB(A)
        st.tuples(st.integers(1, 3), side, side, st.sampled_from([1, 2, 3, 4])),  # 4D
        st.tuples(st.integers(1, 2), st.integers(1, 2), side, side, st.integers(1, 3)),  # 5D
        st.sampled_from([(1, 1), (1, 1, 1), (0, 8, 8), (1, 0, 8), (1, 8), (8, 1)]),  # degenerate
        st.sampled_from(
            [(1, 2, 40_000), (1, 40_000, 3), (2, 5000, 9), (1, 9, 65_536)]
        ),  # huge sides
    )


@st.composite
def image_recipes(draw, storages=None, two_d: bool = False) -> ImageRecipe:
    """Image files; ``two_d`` draws one 2D frame in half of them (a background image)."""
    storage = draw(
        st.sampled_from(
            storages
            or (
                "tiff",
                "tiff",
                "zlib",
                "lzma",
                "imagej",
                "lzw",
                "pages",
                "png",
                "garbage",
                "truncated",
                "empty",
            )
        )
    )
    shape = draw(_shapes())
    if two_d and draw(st.booleans()):
        shape = draw(st.tuples(st.integers(1, 200), st.integers(1, 200)))
    dtype = draw(st.sampled_from(DTYPES))
    if storage in ("imagej", "lzw", "png"):
        dtype = draw(st.sampled_from(("u1", "u2", "f4") if storage != "png" else ("u1", "u2")))
    return ImageRecipe(
        shape=shape,
        dtype=dtype,
        big_endian=draw(st.booleans()) and storage in ("tiff", "zlib", "pages"),
        values=draw(st.sampled_from(("random", "random", "constant", "extremes", "nan", "inf"))),
        storage=storage,
        seed=draw(st.integers(0, 3)),
    )


def write_image(recipe: ImageRecipe, path: Path) -> Path:
    """Write the recipe's file to ``path`` (its suffix comes from the recipe where it matters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile: "writing zero-size array to nonconformant TIFF"
        return _write_image(recipe, path)


def _write_image(recipe: ImageRecipe, path: Path) -> Path:
    data = recipe.array()
    if data.size == 0:
        data = data.astype(np.uint8)  # tifffile cannot write an empty array of some dtypes
    storage = recipe.storage
    if storage == "empty":
        path.write_bytes(b"")
    elif storage == "garbage":
        path.write_bytes(np.random.default_rng(recipe.seed).bytes(64 + data.size % 300))
    elif storage in ("tiff", "zlib", "lzma", "truncated"):
        compression = storage if storage in ("zlib", "lzma") else None
        tifffile.imwrite(path, data, compression=compression, photometric=_photometric(data))
        if storage == "truncated":
            raw = path.read_bytes()
            path.write_bytes(raw[: max(8, len(raw) * (1 + recipe.seed) // 6)])
    elif storage == "imagej":
        try:
            tifffile.imwrite(path, data, imagej=True)
        except ValueError:  # a dtype or shape ImageJ cannot hold: as Fiji would, a plain TIFF
            tifffile.imwrite(path, data, photometric=_photometric(data))
    elif storage == "pages":  # pages of different shapes in one file: several series
        with tifffile.TiffWriter(path) as tif:
            tif.write(data, photometric=_photometric(data))
            tif.write(np.zeros((7, 5), data.dtype), photometric="minisblack")
    elif storage == "lzw":  # as ImageJ / Fiji save it; tifffile needs imagecodecs to read it
        from PIL import Image

        frame = data
        while frame.ndim > 2 and frame.size:
            frame = frame[0]
        if frame.ndim != 2 or frame.size == 0:
            frame = np.zeros((9, 9), np.uint8)
        if frame.dtype == np.float32:
            frame = np.nan_to_num(frame)
        Image.fromarray(np.ascontiguousarray(frame)).save(path, compression="tiff_lzw")
    elif storage == "png":
        from PIL import Image

        frame = data if data.size else np.zeros((9, 9), np.uint8)
        while frame.ndim > 3 or (frame.ndim == 3 and frame.shape[-1] not in (3, 4)):
            frame = frame[0]
        if frame.ndim < 2 or frame.size == 0 or frame.shape[-1] > 10_000:
            frame = np.zeros((9, 9), np.uint8)
        if frame.ndim == 3:
            frame = frame.astype(np.uint8)
        path = path.with_suffix(".png")
        Image.fromarray(np.ascontiguousarray(frame)).save(path)
    else:
        raise ValueError(storage)
    return path


def _photometric(data: np.ndarray) -> str:
    return (
        "rgb"
        if data.ndim >= 3 and data.shape[-1] in (3, 4) and data.dtype.kind in "uf"
        else "minisblack"
    )


# -- label files ---------------------------------------------------------------------------
CELL = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(
        ["0", "1", "2", "0.5", "1.0", "-0", "1e9", "nan", "inf", "-inf", "", " 3", "x", "3,5"]
    ),
    st.floats(-5, 200, allow_nan=False).map(lambda v: f"{v:.3f}"),
)
LABEL_COLUMNS = ("frame", "count", "index", "axis-0", "axis-1", "axis-2", "axis-3", "extra")


@dataclass(frozen=True)
class TextRecipe:
    """A CSV: header and rows of cells, the encoding and the line ending."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    encoding: str = "utf-8"
    newline: str = "\n"
    prefix: bytes = b""  # e.g. a BOM, or bytes that are not UTF-8

    def bytes(self) -> bytes:
        lines = [",".join(self.header), *(",".join(row) for row in self.rows)]
        text = self.newline.join(lines) + (self.newline if lines else "")
        return self.prefix + text.encode(self.encoding, errors="replace")


def _text(header, rows):
    return st.builds(
        TextRecipe,
        header=header,
        rows=rows,
        encoding=st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16"]),
        newline=st.sampled_from(["\n"] * 3 + ["\r\n", "\r"]),
        # Excel's BOM, bytes that are not UTF-8
        prefix=st.sampled_from([b""] * 6 + [b"\xef\xbb\xbf", b"\xff\xfe\x00", b"caf\xe9 "]),
    )


@st.composite
def label_recipes(
    draw, frames: int = 3, side: int = 64, kinds=("table", "points", "any"), damaged=True
) -> TextRecipe:
    """frame,count tables and napari Points CSVs for a stack of ``frames`` frames of
    ``side`` x ``side``: good ones, and good ones with one thing broken (not with
    ``damaged=False``; their encoding and line endings vary all the same)."""
    kind = draw(st.sampled_from(kinds))
    if kind == "table":
        header = ("frame", "count")
        good = st.tuples(st.integers(0, frames - 1).map(str), st.integers(0, 30).map(str))
    elif kind == "points":
        header = ("index", "axis-0", "axis-1", "axis-2")
        at = st.floats(0, side - 1, allow_nan=False).map(lambda v: f"{v:.2f}")
        good = st.tuples(st.integers(0, 99).map(str), st.integers(0, frames - 1).map(str), at, at)
    else:
        header = tuple(draw(st.lists(st.sampled_from(LABEL_COLUMNS), max_size=5)))
        good = st.tuples(*[CELL] * len(header))
    rows = draw(st.lists(good, max_size=8))
    damage = draw(st.sampled_from(["none"] * 3 + ["columns", "cells", "rows", "duplicates"]))
    damage = damage if damaged else "none"
    if not header and damage in ("columns", "cells"):
        damage = "rows"
    if damage == "columns":  # a column missing, another added, or the order changed
        header = tuple(draw(st.permutations(header)))[: draw(st.integers(1, len(header)))]
        header += tuple(draw(st.lists(st.sampled_from(LABEL_COLUMNS), max_size=1)))
    elif damage == "cells" and rows:  # negative, fractional, huge, non-finite or text
        row = draw(st.integers(0, len(rows) - 1))
        column = draw(st.integers(0, len(header) - 1))
        cells = list(rows[row])
        cells[column] = draw(CELL)
        rows[row] = tuple(cells)
    elif damage == "rows":  # too few or too many cells
        width = st.integers(0, len(header) + 2)
        rows.append(draw(width.flatmap(lambda n: st.tuples(*[CELL] * n))))
    elif damage == "duplicates":
        rows = rows + rows[:2]
    return draw(_text(st.just(header), st.just(tuple(rows))))


# -- chamber rectangles --------------------------------------------------------------------
@st.composite
def shapes_recipes(draw, frame: int = 64) -> TextRecipe:
    """napari Shapes CSVs for a ``frame`` x ``frame`` image: rectangles inside, across and
    outside the frame, rotated, degenerate, polygons and other shape types, and broken files."""
    header = ["index", "shape-type", "vertex-index", "axis-0", "axis-1"]
    stack = draw(st.booleans())  # a Shapes layer over a stack has (frame, y, x) vertices
    if stack:
        header.append("axis-2")
    rows = []
    for index in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["rectangle"] * 3 + ["rotated", "polygon", "ellipse", "line"]))
        where = draw(st.sampled_from(["inside", "inside", "across", "anywhere", "degenerate"]))
        if where == "inside":
            y0, x0 = draw(st.integers(0, frame - 8)), draw(st.integers(0, frame - 8))
            h, w = draw(st.integers(8, frame - y0)), draw(st.integers(8, frame - x0))
        elif where == "across":  # a few pixels over an edge
            y0, x0 = draw(st.integers(-4, 4)), draw(st.integers(-4, 4))
            h, w = draw(st.integers(8, frame + 8)), draw(st.integers(8, frame + 8))
        elif where == "anywhere":
            y0, x0 = draw(st.integers(-frame, 2 * frame)), draw(st.integers(-frame, 2 * frame))
            h, w = draw(st.integers(0, 2 * frame)), draw(st.integers(0, 2 * frame))
        else:
            y0, x0, h, w = draw(st.integers(0, frame)), draw(st.integers(0, frame)), 0, 0
        vertices = [(y0, x0), (y0, x0 + w), (y0 + h, x0 + w), (y0 + h, x0)]
        if kind == "rotated":
            angle = draw(st.floats(0, np.pi))
            cy, cx = y0 + h / 2, x0 + w / 2
            c, s = np.cos(angle), np.sin(angle)
            vertices = [
                (cy + (y - cy) * c - (x - cx) * s, cx + (y - cy) * s + (x - cx) * c)
                for y, x in vertices
            ]
        elif kind == "polygon":
            vertices = vertices[: draw(st.integers(3, 4))] + [(y0 + h / 2, x0 - 3)]
        elif kind == "line":
            vertices = vertices[:2]
        shape_type = "rectangle" if kind == "rotated" else kind
        for v, (y, x) in enumerate(vertices):
            axes = ["0"] if stack else []
            rows.append([str(index), shape_type, str(v), *axes, f"{y:.2f}", f"{x:.2f}"])
    damage = draw(st.sampled_from(["none"] * 3 + ["columns", "cells", "empty"]))
    if damage == "columns":
        order = draw(st.permutations(range(len(header))))[: draw(st.integers(0, len(header)))]
        header = [header[i] for i in order]
        rows = [[row[i] for i in order] for row in rows]
    elif damage == "cells":
        row, column = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
        rows[row][column] = draw(st.sampled_from(["nan", "inf", "", "x", "-1e12", "1e308", "0.5"]))
    elif damage == "empty":
        rows = []
    return draw(_text(st.just(tuple(header)), st.just(tuple(tuple(r) for r in rows))))


# -- model files ---------------------------------------------------------------------------
MARKER = "code-ran.marker"
"""The file a malicious checkpoint would create; a test asserts it never appears."""


class _RunsCode:
    """Unpickling this would call ``open(marker, "w")``: code in a model file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


MODEL_KINDS = (
    "truncated",
    "empty",
    "text",
    "zip",
    "pickle_code",
    "torch_code",
    "torch_code_inside",
    "foreign_state_dict",
    "foreign_dict",
    "tensor",
    "wrong_shape",
    "missing_weight",
    "extra_weight",
    "newer_format",
    "bad_config",
    "numpy_inside",
    "nan_weights",
    "half",
)


@dataclass(frozen=True)
class ModelRecipe:
    kind: str
    cut: float = 0.5  # where a truncated file ends
    seed: int = 0


def model_recipes():
    return st.builds(
        ModelRecipe,
        kind=st.sampled_from(MODEL_KINDS),
        cut=st.floats(0.0, 0.999),
        seed=st.integers(0, 5),
    )


def write_model(recipe: ModelRecipe, path: Path, good: Path) -> Path:
    """A model file as the recipe says; ``good`` is a valid small checkpoint to start from."""
    import torch

    marker = str(path.parent / MARKER)
    kind = recipe.kind
    if kind == "truncated":
        raw = good.read_bytes()
        path.write_bytes(raw[: int(len(raw) * recipe.cut)])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    elif kind == "pickle_code":
        path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=recipe.seed % 5 + 1))
    elif kind == "torch_code":
        torch.save(_RunsCode(marker), path)
    elif kind == "torch_code_inside":
        payload = torch.load(good, weights_only=True)
        payload["summary"] = {"note": _RunsCode(marker)}
        torch.save(payload, path)
    elif kind == "foreign_state_dict":
        torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    elif kind == "foreign_dict":
        torch.save({"epoch": 3, "model": {"w": torch.zeros(2)}, "format": "other"}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(4), path)
    else:
        payload = torch.load(good, weights_only=True)
        state = payload["state_dict"]
        name = sorted(state)[recipe.seed % len(state)]
        if kind == "wrong_shape":
            state[name] = torch.zeros(tuple(s + 1 for s in state[name].shape) or (2,))
        elif kind == "missing_weight":
            del state[name]
        elif kind == "extra_weight":
            state["extra.weight"] = torch.zeros(3)
        elif kind == "newer_format":
            payload["format_version"] = 99
        elif kind == "bad_config":
            key = sorted(payload["model_config"])[recipe.seed % len(payload["model_config"])]
            payload["model_config"][key] = ["x", -1, None, 10**12, 0.5, "", {}][recipe.seed % 7]
        elif kind == "numpy_inside":
            payload["normalization"] = {"mode": np.array([1.0])}
        elif kind == "nan_weights":
            floating = [k for k in sorted(state) if state[k].is_floating_point()]
            state[floating[recipe.seed % len(floating)]].fill_(float("nan"))
        elif kind == "half":
            payload["state_dict"] = {
                k: v.half() if v.is_floating_point() else v for k, v in state.items()
            }
        torch.save(payload, path)
    return path
