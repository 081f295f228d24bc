"""Training data: natural chamber crops with their labels, fresh synthetic images, augmentation.

Natural frames carry a label mask: a count of 0 is a real label, an unlabeled frame is not 0.
Synthetic images are generated anew every epoch on the natural frames' own background, so the
synthetic twin never sees the same image twice. Augmentation (as in the paper) runs batched on
tensors on the training device: flips, 90-degree turns, a small rotation and a zoom of up to
10 % in or out are one affine resampling per batch, then a little Gaussian noise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from napari_twinvae.core.config import IMAGE_SIZE, JsonConfig
from napari_twinvae.core.counts import MAX_COUNT, labeled_count_weights, paper_count_weights
from napari_twinvae.core.synthetic import (
    FEW_CELLS,
    SynthBatch,
    SynthConfig,
    estimate_background,
    generate,
)

log = logging.getLogger(__name__)

MATCH_COUNTS_MIN_LABELS = 20
"""Labeled frames needed before synthetic counts follow the user's count histogram."""

_BACKGROUND_FRAMES = 512  # frames at most for the per-pixel median of an unlabeled stack


class NaturalSet(NamedTuple):
    """Natural chamber crops for training, one row per chamber and frame."""

    frames: np.ndarray  # (N, 128, 128) float32 in [0, 1], normalised as the checkpoint says
    counts: np.ndarray  # (N,) int64; 0 where unlabeled
    labeled: np.ndarray  # (N,) bool
    # per frame the clicked cells (k, 2) as (y, x) crop pixels, or None where only a count (or
    # nothing) is known; None for the whole set when no frame has clicked cells
    cells: tuple[np.ndarray | None, ...] | None = None


def natural_set(crops: np.ndarray, labels) -> NaturalSet:
    """Crops (T, R, 128, 128) from :func:`core.chambers.chamber_crops` and their
    :class:`core.labels.Labels` (counts and mask of shape (T, R)) as one flat set.

    A (T, 128, 128) stack is taken as one chamber per frame.
    """
    data = np.asarray(crops)
    if data.ndim == 3:
        data = data[:, None]
    if data.ndim != 4 or data.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"expected chamber crops of shape (frames, chambers, {IMAGE_SIZE}, {IMAGE_SIZE}), "
            f"got {data.shape}"
        )
    counts = np.asarray(labels.counts)
    labeled = np.asarray(labels.labeled, dtype=bool)
    if counts.ndim == 1:
        counts, labeled = counts[:, None], labeled[:, None]
    if counts.shape != data.shape[:2] or labeled.shape != data.shape[:2]:
        raise ValueError(
            f"labels cover {counts.shape[0]} frames x {counts.shape[1]} chambers, but the crops "
            f"are {data.shape[0]} frames x {data.shape[1]} chambers"
        )
    if counts.dtype.kind not in "iu" and not np.all(counts == np.round(counts)):
        raise ValueError("counts must be whole numbers")
    counts = counts.astype(np.int64)
    if labeled.any() and (counts[labeled].min() < 0 or counts[labeled].max() > MAX_COUNT):
        raise ValueError(f"labeled counts must lie in 0..{MAX_COUNT}")
    frames = np.ascontiguousarray(data.reshape(-1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    if not np.isfinite(frames).all() or frames.min() < 0.0 or frames.max() > 1.0:
        raise ValueError("natural crops must be finite and normalised to [0, 1]")
    cells = None
    if labels.cells:
        chambers = counts.shape[1]
        cells = tuple(
            labels.cells.get((i // chambers, i % chambers)) if labeled.flat[i] else None
            for i in range(labeled.size)
        )
    return NaturalSet(frames, np.where(labeled, counts, 0).reshape(-1), labeled.reshape(-1), cells)


# -- synthetic images ------------------------------------------------------------------------
class SyntheticSource:
    """Fresh synthetic images per epoch, on the natural frames' background, as the authors generate them.

    The background is the mean of the labeled frames with fewer than 5 cells, or else the
    per-pixel median of the frames. With at least ``MATCH_COUNTS_MIN_LABELS`` labeled frames the
    counts follow the user's labeled histogram, widened a little (a smoothed copy, mixed 4:1 with
    the paper's weights) so that no count between 0 and 30 is ever left out; with fewer labels,
    the paper's weights.
    """

    def __init__(self, natural: NaturalSet, preset: str = "pc", seed: int = 0) -> None:
        base = SynthConfig.preset(preset)
        self.background, self.background_source = _natural_background(natural, seed)
        labeled_counts = natural.counts[natural.labeled]
        if labeled_counts.size >= MATCH_COUNTS_MIN_LABELS:
            weights = _widened(labeled_count_weights(labeled_counts))
            self.count_source = f"matched to {labeled_counts.size} labeled frames"
        else:
            weights = paper_count_weights()
            self.count_source = "paper weights"
        self.config = dataclasses.replace(base, count_weights=tuple(weights.tolist()))
        self.preset = preset
        self.seed = int(seed)

    def batch(self, n: int, epoch: int) -> SynthBatch:
        """``n`` new images (n, 128, 128) float32, their counts and cell centres; the same for
        the same epoch."""
        rng = np.random.default_rng([self.seed, 7919, int(epoch)])
        return generate(int(n), self.config, rng=rng, background=self.background)

    def images(self, n: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`batch` without the centres."""
        return self.batch(n, epoch)[:2]

    def describe(self) -> dict:
        """What the generator matched, for the training summary."""
        return {
            "preset": self.preset,
            "background": self.background_source,
            "counts": self.count_source,
        }


def _natural_background(natural: NaturalSet, seed: int) -> tuple[np.ndarray, str]:
    labeled = natural.labeled
    few = labeled & (natural.counts < FEW_CELLS)
    if few.any():
        frames = natural.frames[labeled]
        return (
            estimate_background(frames, natural.counts[labeled]),
            f"mean of {int(few.sum())} labeled frames with fewer than {FEW_CELLS} cells",
        )
    frames = natural.frames
    if len(frames) > _BACKGROUND_FRAMES:
        pick = np.random.default_rng([int(seed), 104729]).choice(
            len(frames), _BACKGROUND_FRAMES, replace=False
        )
        frames = frames[np.sort(pick)]
    return estimate_background(frames), f"per-pixel median of {len(frames)} frames"


def _widened(weights: np.ndarray, sigma: float = 1.0, paper_share: float = 0.2) -> np.ndarray:
    k = np.arange(weights.size, dtype=np.float64)
    kernel = np.exp(-0.5 * ((k[:, None] - k[None, :]) / sigma) ** 2)
    smooth = kernel @ weights
    smooth /= smooth.sum()
    mixed = (1.0 - paper_share) * smooth + paper_share * paper_count_weights(weights.size - 1)
    return mixed / mixed.sum()


# -- augmentation ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Augmentation(JsonConfig):
    """Random changes that keep the count (the paper's augmentation), applied to both twins' batches."""

    flips: bool = True  # horizontal and vertical, each with probability 1/2
    quarter_turns: bool = True  # 0, 90, 180 or 270 degrees
    max_rotation: float = 5.0  # degrees, uniform in [-max, max]
    # The window's side as a share of the image side, uniform in [min, max], resized to 128:
    # below 1 it zooms in, above 1 it zooms out (the edge pixels are repeated). Centred on 1 so
    # that cells keep their size on average: with the paper's 0.85-0.95 every training image
    # was magnified, and a model then undercounted unmagnified frames by about 10 %.
    crop_min: float = 0.9
    crop_max: float = 1.1
    noise_std: float = 0.0025  # additive zero-mean Gaussian noise, intensity units
    # The share of images that keep their exact pixels (flips and quarter turns only: no
    # resampling, no noise). Counting sees plain frames, and a model that only ever saw
    # resampled ones counts plain frames differently (docs/default-model.md).
    exact_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.exact_share <= 1.0:
            raise ValueError("exact_share must lie in [0, 1]")
        if not 0.0 < self.crop_min <= self.crop_max <= 1.5:
            raise ValueError("crop sides need 0 < crop_min <= crop_max <= 1.5")
        if not 0.0 <= self.max_rotation <= 45.0 or self.noise_std < 0:
            raise ValueError("max_rotation must lie in [0, 45] degrees, noise_std >= 0")


def augment(
    images: torch.Tensor, generator: torch.Generator, config: Augmentation | None = None
) -> torch.Tensor:
    """A randomly flipped, turned, rotated, cropped and noised copy of ``images`` (B, 1, H, W);
    see :func:`augment_with_cells`."""
    return _augment(images, generator, config)[0]


def augment_with_cells(
    images: torch.Tensor,
    points: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    config: Augmentation | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`augment`, and the cell centres ``points`` (B, P, 2) as (y, x) pixels moved with
    the images; ``mask`` (B, P) marks real points and loses those that leave the image. The
    images are the same as :func:`augment`'s for the same generator state."""
    out, theta = _augment(images, generator, config)
    size = images.shape[-1]
    # affine_grid maps output to input positions, u_in = A u_out + t (normalised, x first);
    # a centre moves the other way, u_out = A^-1 (u_in - t)
    u = (2.0 * points.flip(-1).to(theta.dtype) + 1.0) / size - 1.0
    a, t = theta[:, :, :2], theta[:, :, 2]
    moved = torch.linalg.solve(a.unsqueeze(1), (u - t.unsqueeze(1)).unsqueeze(-1)).squeeze(-1)
    moved = ((moved + 1.0) * size - 1.0) / 2.0
    inside = ((moved >= -0.5) & (moved <= size - 0.5)).all(-1)
    return out, moved.flip(-1).to(points.dtype), mask & inside


def _augment(
    images: torch.Tensor, generator: torch.Generator, config: Augmentation | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A randomly flipped, turned, rotated, cropped and noised copy of ``images`` (B, 1, H, W).

    One affine resampling (``affine_grid`` + bilinear ``grid_sample``) per batch carries the
    geometry; a window is placed so that, rotated, it stays inside the image where it fits
    (the border pixels fill what lies outside when it does not). A random ``exact_share`` of
    the images is only flipped and turned, which moves whole pixels. ``generator`` must live
    on the images' device; all draws come from it, so a seeded generator repeats.
    """
    cfg = config if config is not None else Augmentation()
    b = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        u = torch.rand(b, generator=generator, device=device, dtype=torch.float32)
        return low + (high - low) * u

    angle = uniform(-cfg.max_rotation, cfg.max_rotation) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # the quarter turn alone (entries 0, +-1), which moves whole pixels; none without turns
    turn_cos, turn_sin = torch.ones(b, device=device), torch.zeros(b, device=device)
    if cfg.quarter_turns:
        turns = torch.randint(0, 4, (b,), generator=generator, device=device)
        turn_cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[turns]
        turn_sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[turns]
        cos, sin = cos * turn_cos - sin * turn_sin, sin * turn_cos + cos * turn_sin
    scale = uniform(cfg.crop_min, cfg.crop_max)
    # the rotated crop reaches scale * (|cos| + |sin|) from its centre in normalised units
    reach = scale * (cos.abs() + sin.abs())
    room = (1.0 - reach).clamp(min=0.0)
    shift = (torch.rand(2, b, generator=generator, device=device) * 2.0 - 1.0) * room
    flip = torch.ones(2, b, device=device)
    if cfg.flips:
        flip = torch.where(torch.rand(2, b, generator=generator, device=device) < 0.5, -1.0, 1.0)
    exact = None
    if cfg.exact_share > 0:  # drawn only then: a share of 0 leaves every draw as before
        exact = torch.rand(b, generator=generator, device=device) < cfg.exact_share
        cos, sin = torch.where(exact, turn_cos, cos), torch.where(exact, turn_sin, sin)
        scale = scale.masked_fill(exact, 1.0)
        shift = shift.masked_fill(exact, 0.0)
    theta = torch.empty(b, 2, 3, device=device)
    theta[:, 0, 0] = scale * cos * flip[0]
    theta[:, 0, 1] = -scale * sin * flip[1]
    theta[:, 1, 0] = scale * sin * flip[0]
    theta[:, 1, 1] = scale * cos * flip[1]
    theta[:, 0, 2] = shift[0]
    theta[:, 1, 2] = shift[1]
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.noise_std > 0:
        noise = torch.randn(out.shape, generator=generator, device=device, dtype=out.dtype)
        if exact is not None:
            noise = noise.masked_fill(exact.view(b, 1, 1, 1), 0.0)
        out = out + cfg.noise_std * noise
    return out.clamp_(0.0, 1.0), theta
