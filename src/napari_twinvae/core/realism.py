"""A harder, more realistic rendering of synthetic chamber images, for the natural twin.

The synthetic twin sees the authors' clean renderings. A model meant to count real frames before
anyone labels them needs its natural twin to have seen what real microscopes add: uneven
illumination, textured backgrounds, halos, debris that is not a cell, focus blur, camera noise,
and bright-field- or phase-contrast-like contrast. ``harden`` applies all of these, randomly per
image and seeded, to a batch of rendered images; the counts do not change.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from napari_twinvae.core.config import IMAGE_SIZE, JsonConfig


@dataclasses.dataclass(frozen=True)
class RealismConfig(JsonConfig):
    """Ranges from which each image's distortions are drawn (intensities in [0, 1] units)."""

    illumination: float = 0.3  # largest relative dip of a smooth multiplicative shading field
    texture: float = 0.05  # largest amplitude of a smooth additive background texture
    halo: float = 0.6  # largest strength of a soft glow/shadow around bright/dark structures
    debris_max: int = 6  # specks per image, uniform 0..debris_max; they are not cells
    blur_sigma_max: float = 1.5  # focus blur, uniform 0..max pixels
    noise_std_max: float = 0.05  # camera noise, uniform 0..max
    gamma_range: tuple[float, float] = (0.7, 1.4)
    contrast_range: tuple[float, float] = (0.6, 1.4)
    invert_probability: float = 0.25  # flips dark-on-bright to bright-on-dark (PC <-> BF-like)

    def __post_init__(self) -> None:
        if (
            min(
                self.illumination,
                self.texture,
                self.halo,
                self.blur_sigma_max,
                self.noise_std_max,
                self.invert_probability,
            )
            < 0
            or self.debris_max < 0
        ):
            raise ValueError("realism settings must not be negative")
        if self.illumination >= 1 or self.invert_probability > 1:
            raise ValueError("illumination must lie below 1 and invert_probability in [0, 1]")
        for low, high in (self.gamma_range, self.contrast_range):
            if not 0 < low <= high:
                raise ValueError("gamma_range and contrast_range need 0 < low <= high")


def smooth_field(n: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 128, 128) smooth random fields in [-1, 1] with about ``cells`` bumps per side.

    Random values on a coarse grid, spread by Gaussian basis functions along each axis: two small
    matrix products per image, far cheaper than spline zooming.
    """
    knots = np.linspace(0.0, IMAGE_SIZE - 1.0, cells + 1)
    spacing = (IMAGE_SIZE - 1.0) / cells
    pixels = np.arange(IMAGE_SIZE, dtype=np.float64)[:, None]
    basis = np.exp(-(((pixels - knots[None, :]) / spacing) ** 2))
    basis = (basis / basis.sum(axis=1, keepdims=True)).astype(np.float32)  # (128, cells + 1)
    coarse = rng.uniform(-1.0, 1.0, size=(n, cells + 1, cells + 1)).astype(np.float32)
    field = basis @ coarse @ basis.T
    peak = np.abs(field).max(axis=(1, 2), keepdims=True)
    return field / np.maximum(peak, np.float32(1e-6))


def harden(
    images: np.ndarray, config: RealismConfig | None = None, rng: int | np.random.Generator = 0
) -> np.ndarray:
    """A new float32 stack in [0, 1]: ``images`` (n, 128, 128) with per-image realistic distortions."""
    from scipy.ndimage import gaussian_filter

    cfg = config if config is not None else RealismConfig()
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = np.array(images, dtype=np.float32, copy=True)
    if out.ndim != 3 or out.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"expected images of shape (n, {IMAGE_SIZE}, {IMAGE_SIZE}), got {out.shape}"
        )
    n = out.shape[0]
    if n == 0:
        return out

    def per_image(low: float, high: float) -> np.ndarray:
        return gen.uniform(low, high, size=(n, 1, 1)).astype(np.float32)

    # Contrast like another modality or camera: gamma, contrast about the mean, inversion.
    np.clip(out, 0.0, 1.0, out=out)
    out **= per_image(*cfg.gamma_range)
    mean = out.mean(axis=(1, 2), keepdims=True)
    out = mean + (out - mean) * per_image(*cfg.contrast_range)
    flip = gen.random(n) < cfg.invert_probability
    out[flip] = 1.0 - out[flip]

    # Halos: a soft glow (or shadow) that follows the structures, as phase rings do.
    if cfg.halo > 0:
        base = out.mean(axis=(1, 2), keepdims=True)
        glow = gaussian_filter(out - base, sigma=(0, 3.0, 3.0), mode="nearest")
        out += per_image(-cfg.halo, cfg.halo) * glow

    # Debris: small specks of either polarity, blurred below like everything else.
    if cfg.debris_max > 0:
        specks = gen.integers(0, cfg.debris_max + 1, size=n)
        frame = np.repeat(np.arange(n), specks)
        y = gen.integers(1, IMAGE_SIZE - 1, size=frame.size)
        x = gen.integers(1, IMAGE_SIZE - 1, size=frame.size)
        value = gen.uniform(-0.5, 0.5, size=frame.size).astype(np.float32)
        for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):  # a plus-shaped speck
            np.add.at(out, (frame, y + dy, x + dx), value)

    # Uneven illumination (multiplicative) and background texture (additive).
    out *= 1.0 - per_image(0.0, cfg.illumination) * (0.5 + 0.5 * smooth_field(n, 3, gen))
    if cfg.texture > 0:
        out += per_image(0.0, cfg.texture) * smooth_field(n, 16, gen)

    # Focus blur, one sigma per image.
    sigmas = gen.uniform(0.0, cfg.blur_sigma_max, size=n)
    for i in np.flatnonzero(sigmas > 0.3):
        out[i] = gaussian_filter(out[i], sigma=float(sigmas[i]), mode="nearest")

    out += per_image(0.0, cfg.noise_std_max) * gen.standard_normal(out.shape, dtype=np.float32)
    return np.clip(out, 0.0, 1.0, out=out)
