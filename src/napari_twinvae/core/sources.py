"""The files microscopes write, as lazy (frames, height, width) series, one per stage position.

Plain TIFF stacks (and any image scikit-image reads) are read as before, memory-mapped, with no
extra dependency. OME-TIFF, OME-Zarr, ND2, CZI, LIF and the rest go through bioio and its reader
plugins (the optional extra ``napari-twinvae[formats]``): each scene of a file is a position,
the time axis and channels come from the file's metadata. Frames are read a batch at a time, so
memory stays bounded by the batch for a series of any length.

A :class:`Position` is a small picklable description (file, scene, channel); the frames are
opened where they are counted, which is how a dask worker reads its own share of a file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMATS_EXTRA = "napari-twinvae[formats]"

BIOIO_SUFFIXES = (".ome.tif", ".ome.tiff", ".zarr", ".ome.zarr", ".nd2", ".czi", ".lif")
"""Files read through bioio; plain TIFF and common image files are read without it."""

ZARR_MARKERS = ("zarr.json", ".zgroup", ".zattrs", ".zarray")
"""Files that make a folder a Zarr store, whatever its name."""

PLUGIN_OF = {".nd2": "bioio-nd2", ".czi": "bioio-czi", ".lif": "bioio-lif"}

CONTRAST_CHANNELS = ("bf", "bright", "phase", "phc", "ph", "pc", "dic", "trans", "dia", "tl")
"""Channel names (lower case, or how they start) of label-free contrast: the channel counted
when a file holds several and none is chosen."""


@dataclasses.dataclass(frozen=True)
class Position:
    """One stage position of a file: the series of frames counted as one time-lapse."""

    path: Path
    name: str  # the scene's name; "" for a file of one position
    scene: int | None = None  # None: a plain stack read without bioio
    channel: int = 0
    frames: int = 0  # length of the series
    frame_shape: tuple[int, int] = (0, 0)

    def open(self):
        """The frames, (T, H, W), read lazily."""
        if self.scene is None:
            from napari_twinvae.core.chambers import as_frames
            from napari_twinvae.core.io import read_stack

            return as_frames(read_stack(self.path))
        image = _bioimage(self.path)
        image.set_scene(self.scene)
        return LazyFrames(_series(image, self.channel, self.path))


class LazyFrames:
    """(T, H, W) frames of a dask array; indexing reads only the frames asked for, in the calling
    thread (dask's synchronous scheduler: no thread pool of its own beside torch's)."""

    def __init__(self, data) -> None:
        self._data = data

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._data.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self._data[key].compute(scheduler="synchronous"))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype)


def needs_bioio(path: str | os.PathLike) -> bool:
    """Whether the file is read through bioio (OME, Zarr, the microscope vendors' formats)."""
    name = str(path).rstrip("/\\").lower()
    if name.endswith(BIOIO_SUFFIXES):
        return True
    folder = Path(path)
    return folder.is_dir() and any((folder / m).is_file() for m in ZARR_MARKERS)


def open_positions(
    path: str | os.PathLike,
    positions: Sequence[str | int] | None = None,
    channel: str | int | None = None,
) -> list[Position]:
    """The positions of a file to count (all of them, or those named or numbered in
    ``positions``), reading one ``channel`` (a name or number; by default the only one, or the
    one whose name says bright field or phase contrast). A ValueError names what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not needs_bioio(path):
        if channel not in (None, 0, "0"):
            raise ValueError(f"{path}: a plain stack has one channel; leave out --channel")
        from napari_twinvae.core.chambers import as_frames
        from napari_twinvae.core.io import read_stack

        stack = as_frames(read_stack(path))
        only = Position(path, "", None, 0, int(stack.shape[0]), tuple(stack.shape[1:]))
        return _chosen([only], ["0"], positions, path)
    image = _bioimage(path)
    scenes = [str(s) for s in image.scenes]
    found = []
    for index in range(len(scenes)):
        image.set_scene(index)
        c = _channel(image, channel, path)
        series = _series(image, c, path)
        name = scenes[index] if len(scenes) > 1 else ""
        shape = tuple(int(s) for s in series.shape)
        found.append(Position(path, name, index, c, shape[0], shape[1:]))
    return _chosen(found, scenes, positions, path)


def read_series(
    path: str | os.PathLike, position: str | int | None = None, channel: str | int | None = None
):
    """The lazy (T, H, W) frames of one position of a file; a file of several needs
    ``position``."""
    found = open_positions(path, None if position is None else [position], channel)
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:10]) + (" ..." if len(found) > 10 else "")
        raise ValueError(f"{path}: {len(found)} positions ({names}); choose one with --position")
    return found[0].open()


def _chosen(found, names, wanted, path) -> list[Position]:
    if not wanted:
        return found
    chosen = []
    for key in wanted:
        key = str(key)
        if key in names:
            chosen.append(found[names.index(key)])
        elif key.isdigit() and int(key) < len(found):
            chosen.append(found[int(key)])
        else:
            raise ValueError(
                f"{path}: no position {key!r}; it holds {len(found)}: "
                f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"
            )
    return chosen


def _bioimage(path: Path):
    try:
        from bioio import BioImage
        from bioio_base.exceptions import UnsupportedFileFormatError
    except ImportError:
        raise ValueError(
            f"{path}: reading this format needs the optional readers: pip install '{FORMATS_EXTRA}'"
        ) from None
    try:
        return BioImage(path)
    except UnsupportedFileFormatError:
        suffix = next((s for s in PLUGIN_OF if str(path).lower().endswith(s)), None)
        plugin = PLUGIN_OF.get(suffix, f"the bioio reader plugin for {path.suffix or 'it'}")
        raise ValueError(
            f"{path}: no reader for this format is installed: pip install {plugin} "
            f"(beside '{FORMATS_EXTRA}')"
        ) from None
    except (OSError, ValueError, KeyError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"{path}: not a readable image ({reason})") from None


def _channel(image, channel: str | int | None, path: Path) -> int:
    """The channel to count: the one asked for, the only one, or the label-free contrast one."""
    n = int(image.dims.C)
    names = [str(c) for c in (image.channel_names or [])][:n]
    if channel is not None:
        key = str(channel)
        if key in names:
            return names.index(key)
        if key.isdigit() and int(key) < n:
            return int(key)
        raise ValueError(f"{path}: no channel {key!r}; it holds {n}: {', '.join(names)}")
    if n == 1:
        return 0
    contrast = [i for i, c in enumerate(names) if c.lower().startswith(CONTRAST_CHANNELS)]
    if len(contrast) == 1:
        return contrast[0]
    raise ValueError(
        f"{path}: {n} channels ({', '.join(names)}); choose the label-free one with --channel"
    )


def _series(image, channel: int, path: Path):
    """The (T, H, W) dask array of one channel; a z-stack without time counts its planes."""
    dims = image.dims
    if dims.T > 1 and dims.Z > 1:
        raise ValueError(
            f"{path}: {dims.T} frames of {dims.Z} z-planes each; counting takes one plane per "
            "frame (export the plane in focus)"
        )
    order = "ZYX" if dims.T == 1 and dims.Z > 1 else "TYX"
    kwargs = {"C": channel} if "C" in dims.order else {}
    if order == "TYX" and "Z" in dims.order:
        kwargs["Z"] = 0
    return image.get_image_dask_data(order, **kwargs)
