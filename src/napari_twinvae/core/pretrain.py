"""The recipe of the default model: a Twin-VAE trained on synthetic data of both presets.

The synthetic twin sees the authors' clean renderings of bright-field and
phase-contrast chambers; the natural twin sees the same kind of scenes through
:func:`core.realism.harden` (uneven light, texture, halos, debris, blur, noise, either contrast),
normalised exactly as counting normalises real frames. So the natural twin already counts frames
that look like a microscope's before anyone labels one, and transfer starts from a model that
knows what cells are.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from napari_twinvae.core.counts import MAX_COUNT, paper_count_weights
from napari_twinvae.core.data import NaturalSet
from napari_twinvae.core.density import cells_per_image
from napari_twinvae.core.intensity import Normalization, normalize_frames
from napari_twinvae.core.realism import RealismConfig, harden
from napari_twinvae.core.synthetic import PRESETS, SynthBatch, SynthConfig, generate


def pretraining_weights() -> np.ndarray:
    """Counts 0..30: half the paper's weights (more low counts), half uniform, so that crowded
    chambers and empty ones are learned too."""
    uniform = np.full(MAX_COUNT + 1, 1.0 / (MAX_COUNT + 1))
    weights = 0.5 * paper_count_weights() + 0.5 * uniform
    return weights / weights.sum()


def _preset_configs(touching: float = 0.0) -> list[SynthConfig]:
    weights = tuple(pretraining_weights().tolist())
    return [
        dataclasses.replace(SynthConfig.preset(p), count_weights=weights, touching=touching)
        for p in PRESETS
    ]


def synthetic_test_sets(n: int, seed: int) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """``n`` fresh raw images of each preset with the pretraining counts, clean and hardened
    (the same scenes), and their counts: ``(preset, "clean" | "hardened") -> (images, counts)``.

    How the default model is tested (seed 1), validated and calibrated on synthetic scenes; a
    seed gives the same images wherever they are drawn."""
    weights = tuple(pretraining_weights().tolist())
    found = {}
    for i, preset in enumerate(PRESETS):
        cfg = dataclasses.replace(SynthConfig.preset(preset), count_weights=weights)
        drawn = generate(n, cfg, rng=np.random.default_rng([seed, 99991, i]))
        hardened = harden(drawn.images, rng=np.random.default_rng([seed, 99989, i]))
        found[preset, "clean"] = (drawn.images, drawn.counts)
        found[preset, "hardened"] = (hardened, drawn.counts)
    return found


class PresetMix:
    """Fresh clean synthetic images of both presets, half each, new every epoch (seeded).

    ``touching``: the share of cells drawn as daughters beside an earlier cell (SynthConfig).
    """

    def __init__(self, seed: int = 0, touching: float = 0.0) -> None:
        self.seed = int(seed)
        self.configs = _preset_configs(touching)

    def batch(self, n: int, epoch: int) -> SynthBatch:
        rng = np.random.default_rng([self.seed, 6007, int(epoch)])
        return _mixed(int(n), self.configs, rng)

    def images(self, n: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        return self.batch(n, epoch)[:2]

    def describe(self) -> dict:
        return {
            "presets": list(PRESETS),
            "background": "plain, per preset",
            "counts": "pretraining",
            "touching": self.configs[0].touching,
        }


def _mixed(n: int, configs: list[SynthConfig], rng: np.random.Generator) -> SynthBatch:
    sizes = [n // len(configs) + (i < n % len(configs)) for i in range(len(configs))]
    parts = [generate(k, cfg, rng=rng) for k, cfg in zip(sizes, configs, strict=True)]
    images = np.concatenate([p.images for p in parts])
    counts = np.concatenate([p.counts for p in parts])
    starts = np.cumsum([0, *sizes[:-1]])
    centres = np.concatenate(
        [p.centres + [start, 0, 0] for p, start in zip(parts, starts, strict=True)]
    )
    order = rng.permutation(n)
    return _reordered(SynthBatch(images, counts, centres), order)


def _reordered(batch: SynthBatch, order: np.ndarray) -> SynthBatch:
    """The batch's images in ``order``, with the centres following their images."""
    new_frame = np.empty_like(order)
    new_frame[order] = np.arange(len(order))
    centres = batch.centres.copy()
    centres[:, 0] = new_frame[batch.centres[:, 0].astype(np.int64)]
    centres = centres[np.argsort(centres[:, 0], kind="stable")]
    return SynthBatch(batch.images[order], batch.counts[order], centres)


class HardenedMix:
    """Fresh hardened images of both presets for the natural twin, new every epoch (seeded),
    normalised as counting normalises real frames. Renewing them stops the natural twin from
    learning a fixed set by heart, which is what ends a run on a fixed set early."""

    def __init__(
        self,
        seed: int = 0,
        realism: RealismConfig | None = None,
        normalization: Normalization | None = None,
        clean_share: float = 0.0,
        touching: float = 0.0,
    ) -> None:
        self.seed = int(seed)
        self.realism = realism
        self.normalization = normalization
        self.clean_share = _check_share(clean_share)
        self.configs = _preset_configs(touching)

    def batch(self, n: int, epoch: int) -> SynthBatch:
        rng = np.random.default_rng([self.seed, 4099, int(epoch)])
        return _hardened(
            int(n), rng, self.configs, self.realism, self.normalization, self.clean_share
        )

    def images(self, n: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        return self.batch(n, epoch)[:2]

    def describe(self) -> dict:
        return {
            "presets": list(PRESETS),
            "rendering": "hardened (core.realism)",
            "clean_share": self.clean_share,
            "touching": self.configs[0].touching,
            "per_epoch": "new",
        }


def realistic_set(
    n: int,
    seed: int = 0,
    realism: RealismConfig | None = None,
    normalization: Normalization | None = None,
    clean_share: float = 0.0,
    touching: float = 0.0,
) -> NaturalSet:
    """``n`` hardened synthetic images of both presets, all labeled, normalised for counting.

    ``clean_share`` of them (drawn per image) keep the clean rendering, so the natural twin also
    knows a noiseless, evenly lit chamber; without any, it counts an empty clean chamber as two.
    ``touching`` places that share of the cells as daughters beside an earlier cell.
    """
    rng = np.random.default_rng([int(seed), 4099])
    configs = _preset_configs(touching)
    frames, counts, centres = _hardened(
        int(n), rng, configs, realism, normalization, _check_share(clean_share)
    )
    cells = tuple(cells_per_image(centres, int(n)))
    return NaturalSet(frames, counts, np.ones(n, dtype=bool), cells)


def _check_share(share: float) -> float:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"clean_share must lie in [0, 1], got {share}")
    return float(share)


def _hardened(n, rng, configs, realism, normalization, clean_share=0.0, chunk: int = 2048):
    frames = np.empty((n, 128, 128), dtype=np.float32)
    counts = np.empty(n, dtype=np.int64)
    centres = []
    for start in range(0, n, chunk):  # in chunks: the float64 temporaries stay small
        stop = min(start + chunk, n)
        images, part, where = _mixed(stop - start, configs, rng)
        hard = harden(images, realism, rng)
        if clean_share > 0:  # no draw otherwise, so earlier recipes keep their images
            clean = rng.random(stop - start) < clean_share
            hard[clean] = images[clean]
        frames[start:stop] = normalize_frames(hard, normalization)
        counts[start:stop] = part
        centres.append(where + [start, 0, 0])
    return SynthBatch(frames, counts, np.concatenate(centres) if centres else np.zeros((0, 3)))
