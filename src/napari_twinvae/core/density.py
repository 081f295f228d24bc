"""Density maps: the targets the density head learns from clicked or synthetic cell centres,
and the cells (peaks) it predicts.

The head predicts on the grid of the twin encoders' first feature map: 62 x 62 cells, cell
``i`` centred on crop pixel ``2 i + 2`` (a 5-pixel convolution with stride 2, no padding). Each
cell centre becomes a Gaussian renormalised to unit mass on the grid, so a target map sums to
the number of cells inside the crop exactly, also for a cell cut by the crop's border
(Lempitsky & Zisserman 2010; FCRN, Xie et al. 2016). Maps are scaled by ``AMPLITUDE`` so that
the pixel loss is not lost in rounding; the count is the map's sum divided by it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from napari_twinvae.core.config import IMAGE_SIZE

GRID = 62  # the first encoder map's side
STRIDE = 2.0  # crop pixels per grid cell
OFFSET = 2.0  # crop pixel of grid cell 0's centre
AMPLITUDE = 100.0  # target maps are densities x AMPLITUDE (FCRN's scale)
DEFAULT_SIGMA = 3.0  # crop pixels; about half a typical cell's radius at 128 x 128
PEAK_THRESHOLD = 0.15  # a peak's summed 3x3 mass, in cells, below which it is noise


def grid_coordinates(pixels: torch.Tensor) -> torch.Tensor:
    """Crop pixel coordinates -> grid coordinates (fractional)."""
    return (pixels - OFFSET) / STRIDE


def pixel_coordinates(grid: torch.Tensor) -> torch.Tensor:
    """Grid coordinates -> crop pixel coordinates."""
    return grid * STRIDE + OFFSET


def density_targets(
    points: torch.Tensor, mask: torch.Tensor, sigma: float = DEFAULT_SIGMA
) -> torch.Tensor:
    """Target maps (B, GRID, GRID) for cell centres ``points`` (B, P, 2) as (y, x) crop pixels.

    ``mask`` (B, P) marks the real points (the rest is padding). Each point spreads a Gaussian of
    ``sigma`` crop pixels, renormalised over the grid, so each map sums to ``AMPLITUDE`` times its
    number of points inside the crop.
    """
    if points.ndim != 3 or points.shape[-1] != 2 or mask.shape != points.shape[:2]:
        raise ValueError("points must be (B, P, 2) with a (B, P) mask")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    inside = mask & (points >= -0.5).all(-1) & (points <= IMAGE_SIZE - 0.5).all(-1)
    axis = torch.arange(GRID, device=points.device, dtype=torch.float32)
    spread = sigma / STRIDE
    where = grid_coordinates(points.float())  # (B, P, 2)
    weights = torch.exp(-0.5 * ((axis - where[..., None]) / spread) ** 2)  # (B, P, 2, GRID)
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    weights = weights * inside[..., None, None].float()
    return AMPLITUDE * torch.einsum("bpi,bpj->bij", weights[:, :, 0], weights[:, :, 1])


def map_counts(density: torch.Tensor) -> torch.Tensor:
    """The counts (B,) of density maps (B, GRID, GRID) or (B, 1, GRID, GRID)."""
    return density.flatten(1).sum(1) / AMPLITUDE


def pad_points(cells: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image arrays of (y, x) centres -> padded points (B, P, 2) and their mask (B, P)."""
    most = max((len(c) for c in cells), default=0)
    points = torch.zeros(len(cells), max(most, 1), 2)
    mask = torch.zeros(len(cells), max(most, 1), dtype=torch.bool)
    for i, c in enumerate(cells):
        if len(c):
            points[i, : len(c)] = torch.as_tensor(np.asarray(c, np.float32).reshape(-1, 2))
            mask[i, : len(c)] = True
    return points, mask


class Peaks(NamedTuple):
    """Predicted cells of a batch of density maps."""

    image: np.ndarray  # (K,) which image of the batch each cell belongs to
    yx: np.ndarray  # (K, 2) crop pixel coordinates
    mass: np.ndarray  # (K,) the density summed over the peak's 3 x 3 neighbourhood, in cells


def find_peaks(density: torch.Tensor, threshold: float = PEAK_THRESHOLD) -> Peaks:
    """Local maxima of density maps (B, GRID, GRID) whose 3 x 3 mass reaches ``threshold``
    cells, refined to the neighbourhood's centroid (sub-grid, in crop pixels)."""
    d = density.detach().float().reshape(-1, 1, GRID, GRID) / AMPLITUDE
    mass = F.avg_pool2d(d, 3, stride=1, padding=1, count_include_pad=True) * 9.0
    # a maximum of the 3 x 3 mass, not of the map, so a cell spread over two cells is one peak;
    # ties (flat tops) are broken by a tiny ramp so each plateau gives a single peak
    ramp = torch.arange(GRID * GRID, dtype=d.dtype, device=d.device).view(1, 1, GRID, GRID)
    keyed = mass + ramp * 1e-9
    is_peak = (keyed == F.max_pool2d(keyed, 3, stride=1, padding=1)) & (mass >= threshold)
    b, _, y, x = torch.nonzero(is_peak, as_tuple=True)
    # each peak's 3 x 3 neighbourhood (K, 3, 3), gathered from the zero-padded maps; unfolding
    # every pixel's neighbourhood first made this function half as fast again
    step = torch.arange(3, device=d.device)
    padded = F.pad(d[:, 0], (1, 1, 1, 1))
    patches = padded[
        b[:, None, None], (y[:, None] + step)[:, :, None], (x[:, None] + step)[:, None, :]
    ]
    offsets = step.to(d.dtype) - 1.0
    total = patches.sum((1, 2)).clamp_min(1e-12)
    cy = y.to(d.dtype) + (patches.sum(2) * offsets).sum(1) / total
    cx = x.to(d.dtype) + (patches.sum(1) * offsets).sum(1) / total
    yx = pixel_coordinates(torch.stack([cy, cx], dim=1))
    return Peaks(
        b.cpu().numpy(),
        yx.cpu().numpy().astype(np.float32),
        mass[b, 0, y, x].cpu().numpy().astype(np.float32),
    )


def peak_counts(peaks: Peaks, images: int) -> np.ndarray:
    """How many peaks each of ``images`` maps holds."""
    return np.bincount(peaks.image, minlength=images).astype(np.int64)


def cells_per_image(centres: np.ndarray, images: int) -> list[np.ndarray]:
    """Rows (image, y, x), as a synthetic batch's centres, -> one (k, 2) array per image."""
    c = np.asarray(centres, dtype=np.float32).reshape(-1, 3)
    which = c[:, 0].astype(np.int64)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(images + 1))
    return [c[order[bounds[i] : bounds[i + 1]], 1:] for i in range(images)]
