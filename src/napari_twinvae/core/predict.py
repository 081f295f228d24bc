"""Counting, reconstruction and translation over whole time series, batch by batch.

Every function takes frames as the user has them (one 2D frame, a (T, H, W) stack, a memory-mapped
TIFF or its path), cuts each chamber out with :func:`core.chambers.chamber_crops` and normalises it
with the checkpoint's own :class:`Normalization`, exactly as for training. Only one batch of frames
is in memory at a time, so a series larger than RAM is counted straight from its memory map.

Counting runs only the counting path (outer encoder, shared encoder, mu, regressor) in eval mode;
:func:`iter_count` yields :class:`CountProgress` after every batch and returns a
:class:`CountResult`; :func:`count` drains it.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_twinvae.core.chambers import (
    Region,
    area_matrix,
    as_frames,
    chamber_crops,
    check_regions,
)
from napari_twinvae.core.config import IMAGE_SIZE
from napari_twinvae.core.density import find_peaks, peak_counts
from napari_twinvae.core.device import select_device
from napari_twinvae.core.io import Checkpoint, atomic_write, load_model, read_stack
from napari_twinvae.core.jobs import drain
from napari_twinvae.core.metrics import count_flags, round_counts
from napari_twinvae.core.model import DOMAINS, TwinVAE
from napari_twinvae.core.uncertainty import (
    LATENT_SAMPLES,
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
"""How many orientations of each chamber a count can average: the crop as it is, mirrored
left-right, upside down, turned half-way, and (8) the same four of the transposed crop."""

DEFAULT_VIEWS = 8
"""Counts average all eight orientations. A cell count does not depend on how the chamber is
turned, and the network saw every turn and flip in training, yet its estimates for the eight
differ (by a third of a cell on average on synthetic test images); their mean is the better
count (docs/counting.md, "Orientations"), for eight passes of the network per chamber instead of one."""


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
    # (T, R, 3) its raw signals: spread over views, over latent samples, |peaks - sum|
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


# -- the counting path -----------------------------------------------------------------------
class CountingPath(nn.Module):
    """``model.count(x, domain)`` rearranged for speed, with the same weights and outputs.

    Measured on a 2-core CPU (bench/bench_count.py, best of several runs, batch 32):
    ``TwinVAE.count`` ~1,300 images/s, with channels_last ~1,600, this module ~1,900.

    - channels_last (NHWC) lets oneDNN run its fastest direct convolutions; they reach the
      machine's float32 peak on the three big 5x5 convolutions.
    - The shared 5x5 convolution sees a 5x5 input and gives 1x1, so it *is* a matrix product:
      run as a Linear on the flattened input (as a convolution in NHWC it was the slowest layer,
      ~20 GFLOP/s). Its weight is permuted once to NHWC order, so the flatten is a free view.
    - LeakyReLU in place; Dropout dropped (identity in eval mode).
    Tried and not kept: TorchScript freeze + optimize_for_inference (slower), oneDNN's fused
    convolution + LeakyReLU (no gain), ``torch.compile`` with freezing (same speed after ~25 s of
    compiling, and it needs a C++ compiler at run time).

    The module holds copies of the weights (the model's own layout is untouched), so build it
    from the model as it is when counting starts.
    """

    def __init__(self, model: TwinVAE, domain: str = "natural") -> None:
        super().__init__()
        self.convs = _encoder_convs(model, domain)
        self.logvar = _linear_copy(model.logvar[0])  # for the latent spread only
        self.logvar_max = float(model.config.logvar_max)
        shared = model.shared_encoder[0]
        w = shared.weight.detach()  # (512, 256, 5, 5) -> (512, 5*5*256), NHWC order
        self.register_buffer("shared_weight", w.permute(0, 2, 3, 1).reshape(w.shape[0], -1).clone())
        self.register_buffer("shared_bias", shared.bias.detach().clone())
        linears = [model.mu[0], *[m for m in model.regressor if isinstance(m, nn.Linear)]]
        self.linears = nn.ModuleList(_linear_copy(layer) for layer in linears)
        self.slope = float(model.config.leaky_slope)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 128, 128) in [0, 1] -> the shared encoder's output (B, 512)."""
        x = x.contiguous(memory_format=torch.channels_last)
        for conv in self.convs:
            x = F.leaky_relu_(conv(x), self.slope)
        h = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # a view: NHWC memory is (B, 5, 5, 256)
        return F.leaky_relu_(F.linear(h, self.shared_weight, self.shared_bias), self.slope)

    def regress(self, h: torch.Tensor) -> torch.Tensor:
        """Shared features (..., 512) -> count estimates (...) through mu and the regressor."""
        for layer in self.linears:  # mu, then the regressor (no activations between them)
            h = layer(h)
        return h.squeeze(-1)

    def latent_spread(self, h: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The standard deviation (B,) of the regressor's estimate over latent codes drawn from
        the posterior N(mu, exp(logvar)) of shared features ``h`` (B, 512): ``mu + noise * std``
        for each row of ``noise`` (samples, latent_dim), the same rows for every image, so that
        an image's number does not depend on the batch it came in."""
        mu = self.linears[0](h)
        std = torch.exp(0.5 * self.logvar(h).clamp(max=self.logvar_max))
        z = mu + noise.to(mu)[:, None, :] * std
        for layer in self.linears[1:]:
            z = layer(z)
        return z.squeeze(-1).std(dim=0, unbiased=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 128, 128) in [0, 1] -> count estimates (B,)."""
        return self.regress(self.features(x))


class DensityPath(nn.Module):
    """The counting path of a model with a density head: the first three encoder convolutions
    (channels_last copies, as in :class:`CountingPath`) and the head; the count is the
    calibrated sum of the map, as ``model.count``. :meth:`maps` gives the maps themselves."""

    def __init__(self, model: TwinVAE, domain: str = "natural") -> None:
        super().__init__()
        if model.density_head is None:
            raise ValueError("the model counts with the regressor; it has no density head")
        self.convs = _encoder_convs(model, domain, depth=3)
        self.head = copy.deepcopy(model.density_head)
        self.slope = float(model.config.leaky_slope)
        self.requires_grad_(False)
        self.eval()

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 128, 128) in [0, 1] -> density maps (B, 62, 62) x AMPLITUDE."""
        x = x.contiguous(memory_format=torch.channels_last)
        maps = []
        for conv in self.convs:
            x = F.leaky_relu_(conv(x), self.slope)
            maps.append(x)
        return self.head(maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 128, 128) in [0, 1] -> count estimates (B,)."""
        return self.head.count(self.maps(x))


def counting_path(model: TwinVAE, domain: str = "natural") -> nn.Module:
    """The fast counting path of ``model``: its density head's or its regressor's."""
    if model.density_head is not None:
        return DensityPath(model, domain)
    return CountingPath(model, domain)


def _linear_copy(layer: nn.Linear) -> nn.Linear:
    twin = nn.Linear(layer.in_features, layer.out_features, device=layer.weight.device)
    twin.load_state_dict(layer.state_dict())
    return twin


def _encoder_convs(model: TwinVAE, domain: str, depth: int = 4) -> nn.ModuleList:
    """channels_last copies of the first ``depth`` convolutions of a twin's outer encoder."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    convs = nn.ModuleList()
    for conv in [m for m in model.encoders[domain] if isinstance(m, nn.Conv2d)][:depth]:
        twin = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            device=conv.weight.device,
        )
        twin.load_state_dict(conv.state_dict())
        convs.append(twin.to(memory_format=torch.channels_last))
    return convs


def _check_views(views: int) -> int:
    if views not in VIEWS:
        raise ValueError(f"views must be one of {VIEWS}, got {views!r}")
    return int(views)


def orientations(images: torch.Tensor, views: int) -> Iterator[torch.Tensor]:
    """The first ``views`` orientations of images (B, 1, H, W), the images as they are first."""
    for transpose in (False, True)[: 1 + (views == 8)]:
        base = images.transpose(-2, -1) if transpose else images
        for dims in ((), (-1,), (-2,), (-2, -1))[: min(views, 4)]:
            yield base.flip(dims) if dims else base


def averaged_count(path: nn.Module, images: torch.Tensor, views: int) -> torch.Tensor:
    """The mean of ``path``'s estimates over the first ``views`` orientations of each image."""
    total = None
    for oriented in orientations(images, views):
        estimate = path(oriented).float()
        total = estimate if total is None else total + estimate
    return total / views


def latent_noise(path: nn.Module, samples: int = LATENT_SAMPLES, seed: int = 0) -> torch.Tensor:
    """Seeded standard normal draws (samples, latent_dim) for :meth:`CountingPath.latent_spread`
    (an empty tensor for a path without a latent code)."""
    if not isinstance(path, CountingPath):
        return torch.zeros(0)
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(samples, path.linears[0].out_features, generator=generator)


def spread_count(
    path: nn.Module, images: torch.Tensor, views: int, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`averaged_count` (the same numbers) and, per image, the signals of its uncertainty
    (B, 3): the spread of the estimate over the views, over latent codes (the regressor's path,
    first view; ``noise`` from :func:`latent_noise`) and |peaks - sum| of the density map
    (density head; first view). Costs the views' passes plus a few small matrix products."""
    signals = torch.zeros(images.shape[0], 3, device=images.device)
    total, squares = None, None
    for i, oriented in enumerate(orientations(images, views)):
        if i == 0 and isinstance(path, CountingPath):
            h = path.features(oriented)
            estimate = path.regress(h).float()
            if noise is None:
                noise = latent_noise(path)
            signals[:, 1] = path.latent_spread(h, noise).float()
        elif i == 0 and isinstance(path, DensityPath):
            maps = path.maps(oriented)
            estimate = path.head.count(maps).float()
            peaks = peak_counts(find_peaks(maps), images.shape[0])
            signals[:, 2] = (torch.from_numpy(peaks).to(estimate) - estimate).abs()
        else:
            estimate = path(oriented).float()
        total = estimate if total is None else total + estimate
        squares = estimate**2 if squares is None else squares + estimate**2
    mean = total / views
    signals[:, 0] = (squares / views - mean**2).clamp_min(0.0).sqrt()
    return mean, signals


# -- inputs ----------------------------------------------------------------------------------
def _frames_of(frames) -> np.ndarray:
    """A path (read lazily: memory-mapped when the TIFF allows) or an array, as (T, H, W)."""
    if isinstance(frames, str | os.PathLike):
        frames = read_stack(frames, lazy=True)
    return as_frames(frames)


def _checkpoint_of(checkpoint: Checkpoint | str | os.PathLike | None, device) -> Checkpoint:
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    return load_model(checkpoint, device=device)


def _check_batch_size(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    return int(batch_size)


def _frame_batches(
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


def _crops(frames: np.ndarray, regions, normalization, numbers: Sequence[int]) -> np.ndarray:
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


def _check_indices(frame_indices, n_frames: int) -> np.ndarray | None:
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
    Yields :class:`CountProgress` after each batch (closing the generator stops between batches);
    returns a :class:`CountResult`.
    """
    batch_size = _check_batch_size(batch_size)
    views = _check_views(views)
    stack = _frames_of(frames)
    boxes = check_regions(regions, stack.shape[1:])
    indices = _check_indices(frame_indices, stack.shape[0])
    target = select_device(device)
    ckpt = _checkpoint_of(checkpoint, target)
    path = counting_path(ckpt.model, domain).to(target)
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
    for start, stop, part in _frame_batches(stack, indices, n_chambers, batch_size):
        numbers = range(start, stop) if indices is None else indices[start:stop].tolist()
        crops = _crops(part, boxes, ckpt.normalization, numbers)
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
        else probability_wrong(estimates, signals, calibration or calibration_of(ckpt.summary)),
        signals=signals,
    )


def _in_frame(frames, chambers, yx: np.ndarray, boxes) -> np.ndarray:
    """Rows (frame, chamber, y, x): crop pixels back to the frame's (the inverse of the area
    resize of the chamber to 128x128; pixel centres are whole numbers)."""
    box = np.asarray(boxes, dtype=np.float64)[chambers]  # (K, 4) top, left, bottom, right
    y = box[:, 0] + (yx[:, 0] + 0.5) * (box[:, 2] - box[:, 0]) / IMAGE_SIZE - 0.5
    x = box[:, 1] + (yx[:, 1] + 0.5) * (box[:, 3] - box[:, 1]) / IMAGE_SIZE - 0.5
    return np.column_stack([frames, chambers, y, x])


def count(
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
) -> CountResult:
    """:func:`iter_count` run to the end."""
    return drain(
        iter_count(
            frames,
            checkpoint,
            regions,
            batch_size,
            device,
            frame_indices=frame_indices,
            domain=domain,
            views=views,
            cells=cells,
            uncertainty=uncertainty,
            calibration=calibration,
            seed=seed,
        )
    )


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


# -- what the model sees ---------------------------------------------------------------------
def _decode_crops(
    model: TwinVAE, crops: np.ndarray, encoder: str, decoder: str, batch_size: int, device
) -> np.ndarray:
    """Crops (N, 128, 128) -> encode with twin ``encoder``, decode mu with twin ``decoder``."""
    out = np.empty_like(crops, dtype=np.float32)
    flat = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).unsqueeze(1)
    with torch.inference_mode():
        for i in range(0, len(flat), batch_size):
            x = flat[i : i + batch_size].to(device)
            mu, _ = model.encode(x, encoder)
            out[i : i + batch_size] = model.decode(mu, decoder)[:, 0].float().cpu().numpy()
    return out


def _model_view(
    frames, checkpoint, regions, encoder: str, decoder: str, batch_size: int, device
) -> np.ndarray:
    batch_size = _check_batch_size(batch_size)
    stack = _frames_of(frames)
    boxes = check_regions(regions, stack.shape[1:])
    ckpt = _checkpoint_of(checkpoint, select_device(device))
    model = ckpt.model.eval()
    target = next(model.parameters()).device
    out = np.empty((stack.shape[0], len(boxes), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for start, stop, part in _frame_batches(stack, None, len(boxes), batch_size):
        crops = _crops(part, boxes, ckpt.normalization, range(start, stop))
        decoded = _decode_crops(
            model, crops.reshape(-1, IMAGE_SIZE, IMAGE_SIZE), encoder, decoder, batch_size, target
        )
        out[start:stop] = decoded.reshape(crops.shape)
    return out


def reconstruct(
    frames,
    checkpoint: Checkpoint | str | os.PathLike | None = "default",
    regions: Sequence[Region] | None = None,
    domain: str = "natural",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Each chamber crop through one twin's encoder and decoder: (T, R, 128, 128) in [0, 1].

    The whole result is returned at once; pass a slice of a long series, or use :class:`ModelView`.
    """
    return _model_view(frames, checkpoint, regions, domain, domain, batch_size, device)


def translate(
    frames,
    checkpoint: Checkpoint | str | os.PathLike | None = "default",
    regions: Sequence[Region] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """The synthetic view: natural encoder, synthetic decoder, (T, R, 128, 128) in [0, 1].

    What the model sees in a real frame, drawn the way it draws its synthetic cells.
    """
    return _model_view(frames, checkpoint, regions, "natural", "synthetic", batch_size, device)


def place_crops(
    crops: np.ndarray, regions: Sequence[Region], frame_shape: tuple[int, int]
) -> np.ndarray:
    """Crops (R, 128, 128) resized back into their chambers of a (H, W) frame; 0 elsewhere."""
    frame = np.zeros(tuple(int(s) for s in frame_shape), dtype=np.float32)
    for crop, (top, left, bottom, right) in zip(crops, regions, strict=True):
        height, width = bottom - top, right - left
        if (height, width) == (IMAGE_SIZE, IMAGE_SIZE):
            frame[top:bottom, left:right] = crop
        else:
            frame[top:bottom, left:right] = (
                area_matrix(IMAGE_SIZE, height) @ crop @ area_matrix(IMAGE_SIZE, width).T
            )
    return frame


class ModelView:
    """A lazy array, shaped like the frames, of what the model makes of each chamber.

    Reading a frame runs its chambers through the natural encoder and the ``decoder`` twin
    (``"natural"``: the reconstruction; ``"synthetic"``: the synthetic view) and puts the results
    back into the chamber rectangles. Nothing is computed until a frame is read, and only the
    last few frames are kept, so a viewer can page through a series of any length.
    """

    def __init__(
        self,
        frames,
        checkpoint: Checkpoint,
        regions: Sequence[Region] | None = None,
        decoder: str = "natural",
        cache_frames: int = 8,
    ) -> None:
        if decoder not in DOMAINS:
            raise ValueError(f"decoder must be one of {DOMAINS}, got {decoder!r}")
        source = frames if not isinstance(frames, str | os.PathLike) else read_stack(frames)
        self._single = getattr(source, "ndim", None) == 2
        self._stack = as_frames(source)
        self._regions = check_regions(regions, self._stack.shape[1:])
        self._checkpoint = checkpoint
        self.decoder = decoder
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(1, int(cache_frames))
        self._lock = threading.Lock()  # napari may slice from a worker thread

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._stack.shape[1:]) if self._single else tuple(self._stack.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as the model sees it, (H, W) float32 in [0, 1]."""
        t = int(t)
        with self._lock:
            if t in self._cache:
                self._cache.move_to_end(t)
                return self._cache[t]
            model = self._checkpoint.model.eval()
            device = next(model.parameters()).device
            crops = _crops(
                self._stack[t : t + 1], self._regions, self._checkpoint.normalization, [t]
            )[0]
            decoded = _decode_crops(model, crops, "natural", self.decoder, len(crops), device)
            image = place_crops(decoded, self._regions, self._stack.shape[1:])
            self._cache[t] = image
            while len(self._cache) > self._cache_frames:
                self._cache.popitem(last=False)
            return image

    def __getitem__(self, key) -> np.ndarray:
        if self._single:
            return self.frame(0)[key]
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (3 - (len(key) - 1))
            key = key[:at] + fill + key[at + 1 :]
        head, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(head, int | np.integer):
            return self.frame(range(len(self))[head])[rest]
        wanted = np.arange(len(self))[head]
        stack = np.stack([self.frame(t) for t in np.atleast_1d(wanted)])
        return stack[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype)
