"""Synthetic chamber images with known cell counts and centres (the authors' generator;
Stallmann et al. 2020, Kenneweg, Stallmann & Hammer 2023).

Cells are filled, slightly deformed ellipses with a rim of another brightness, drawn on a
transparent layer that is blended 50/50 with a blurred copy of itself and composited on the
chamber background. The generator is vectorised: cells are placed for a whole chunk of images at
once (one round per cell index, not per cell), and drawn with array operations into a
preallocated stack, so 20,000 images hold little more memory than the images themselves.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Sequence
from typing import NamedTuple

import numpy as np

from napari_twinvae.core.config import IMAGE_SIZE, JsonConfig
from napari_twinvae.core.counts import MAX_COUNT, paper_count_weights, sample_counts
from napari_twinvae.core.intensity import normalize_frames
from napari_twinvae.core.jobs import drain, parameters_of

log = logging.getLogger(__name__)

PRESETS = ("bf", "pc")
DEFAULT_PRESET = "pc"
"""The preset the command line, the docks and ``TrainConfig`` start from (phase contrast)."""

FEW_CELLS = 5
"""Frames with fewer cells than this are averaged into the background, as the authors do."""

_CHUNK = 512  # images per internal chunk: bounds the working memory beside the output
_CANDIDATES = 24  # candidate positions tried at once per image and round
_ROUNDS = 40  # rounds of candidates before a cell is declared impossible to place
_DAUGHTER_GAP = 0.5  # pixels between a fresh daughter's circle and its mother's


@dataclasses.dataclass(frozen=True)
class SynthConfig(JsonConfig):
    """Every parameter of the generator; the defaults are the authors' phase-contrast preset.

    Gray levels are on the authors' 0-255 scale; images come out in [0, 1]. Lengths are pixels
    of the 128x128 chamber crop. ``margins`` keep (left, right, top, bottom) free of cells, as
    the chamber walls do. ``background_level`` is the plain background used when no real frames
    are given: mid gray, darker than the rim in phase contrast, darker than the fill in bright
    field, as in the authors' chambers.
    """

    fill_base: float = 50.0
    fill_range: float = 10.0
    rim_base: float = 160.0
    rim_range: float = 50.0
    rim_width: float = 2.0  # wide enough to survive the blur, as the halos of real cells do
    radius_min: int = 3
    radius_max: int = 10  # exclusive, as in U[3, 10)
    overlap: float = 1.0  # how far two cells' circles may overlap
    margins: tuple[int, int, int, int] = (12, 11, 11, 10)
    deform: float = 2.0  # one side of the bounding box per axis moves by U[-deform, deform)
    blur_sigma: float = 1.0
    blur_mix: float = 0.5  # share of the blurred copy in the drawn layer
    background_level: float = 110.0
    noise_std: float = 0.0  # additive Gaussian noise on the finished image, gray levels
    touching: float = 0.0  # share of cells placed touching an earlier one, as a fresh daughter
    count_weights: tuple[float, ...] = tuple(paper_count_weights().tolist())

    def __post_init__(self) -> None:
        if not 1 <= self.radius_min < self.radius_max:
            raise ValueError("radii need 1 <= radius_min < radius_max")
        if len(self.margins) != 4 or min(self.margins) < 0:
            raise ValueError("margins are 4 non-negative pixel widths: left, right, top, bottom")
        left, right, top, bottom = self.margins
        free = min(IMAGE_SIZE - left - right, IMAGE_SIZE - top - bottom)
        if free < 2 * (self.radius_max - 1):
            raise ValueError(
                f"the margins leave {free} px, too little for cells of radius {self.radius_max - 1}"
            )
        if self.overlap < 0 or self.deform < 0 or self.rim_width < 0 or self.noise_std < 0:
            raise ValueError("overlap, deform, rim_width and noise_std must not be negative")
        if not 0 <= self.touching <= 1:
            raise ValueError(f"touching is a share in [0, 1], got {self.touching}")
        if self.blur_sigma < 0 or not 0 <= self.blur_mix <= 1:
            raise ValueError("blur_sigma must not be negative and blur_mix must lie in [0, 1]")
        weights = np.asarray(self.count_weights, dtype=np.float64)
        if (
            weights.ndim != 1
            or not 1 <= weights.size <= MAX_COUNT + 1
            or (weights < 0).any()
            or weights.sum() <= 0
        ):
            raise ValueError(f"count_weights needs 1..{MAX_COUNT + 1} non-negative weights")

    @classmethod
    def preset(cls, name: str) -> SynthConfig:
        """The authors' bright-field (``"bf"``) or phase-contrast (``"pc"``) parameters."""
        if name == "pc":
            return cls()
        if name == "bf":
            return cls(
                fill_base=180.0,
                fill_range=30.0,
                rim_base=80.0,
                rim_range=50.0,
                radius_min=3,
                radius_max=8,
                overlap=0.0,
                margins=(26, 20, 12, 6),
                background_level=120.0,
            )
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


class SynthBatch(NamedTuple):
    """Synthetic images with their ground truth."""

    images: np.ndarray  # (n, 128, 128) float32 in [0, 1]
    counts: np.ndarray  # (n,) int64
    centres: np.ndarray  # (m, 3) float64 rows (frame, y, x), ordered by frame


class Cells(NamedTuple):
    """Cells of a stack, one entry per cell: where they were placed and how they are drawn.

    ``cy, cx, radius`` is the circle used for the overlap and margin rules; ``y, x, ry, rx`` is
    the drawn (deformed) ellipse, whose centre is the ground-truth point.
    """

    frame: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    radius: np.ndarray
    y: np.ndarray
    x: np.ndarray
    ry: np.ndarray
    rx: np.ndarray
    fill: np.ndarray
    rim: np.ndarray


def iter_generate(
    n: int,
    config: SynthConfig | None = None,
    *,
    rng: int | np.random.Generator = 0,
    background: np.ndarray | None = None,
    counts: Sequence[int] | np.ndarray | None = None,
) -> Generator[tuple[int, int], None, SynthBatch]:
    """:func:`generate` as a generator: yields (images done, n) after every chunk of images, so
    that a worker can report and stop between chunks; returns the same :class:`SynthBatch`."""
    cfg = config if config is not None else SynthConfig()
    gen = np.random.default_rng(rng)
    n = int(n)
    if n < 0:
        raise ValueError(f"the number of images must not be negative, got {n}")
    if counts is None:
        wanted = sample_counts(n, cfg.count_weights, gen)
    else:
        wanted = np.asarray(counts)
        if wanted.shape != (n,):
            raise ValueError(f"counts needs one entry per image ({n}), got shape {wanted.shape}")
        if wanted.size and (wanted.min() < 0 or wanted.max() > MAX_COUNT):
            raise ValueError(f"counts must lie in 0..{MAX_COUNT}")
        wanted = wanted.astype(np.int64)
    base = background_image(background, cfg)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    centres = np.empty((int(wanted.sum()), 3), dtype=np.float64)
    row = 0
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        cells = place_cells(wanted[start:stop], cfg, gen)
        render(cells, stop - start, cfg, base, gen, out=images[start:stop])
        m = cells.frame.size
        centres[row : row + m, 0] = cells.frame + start
        centres[row : row + m, 1] = cells.y
        centres[row : row + m, 2] = cells.x
        row += m
        yield stop, n
    return SynthBatch(images, wanted, centres)


@parameters_of(iter_generate)
def generate(*args, **kwargs) -> SynthBatch:
    """``n`` synthetic chamber images with their counts and cell centres.

    ``counts`` fixes the number of cells per image; otherwise counts are drawn from
    ``config.count_weights``. ``background`` is a 2D image of the empty chamber (any size and
    dtype; see :func:`background_image`); without it the plain ``config.background_level``.
    The same seed gives the same batch.
    """
    return drain(iter_generate(*args, **kwargs))


def place_cells(counts: np.ndarray, config: SynthConfig, rng: np.random.Generator) -> Cells:
    """Positions, sizes and gray levels of ``counts[i]`` cells in image ``i``.

    Cell ``j`` of every image is placed in the same round: each image draws a batch of candidate
    circles inside its margins and keeps the first one that overlaps no earlier cell by more than
    ``config.overlap``. Late rounds try the smallest radius, so 30 cells fit the authors' chambers.

    With ``config.touching``, that share of the cells after the first (drawn per cell) is a
    daughter: its early candidates sit just outside a random earlier cell, half a pixel apart, as
    a cell looks right after division; where none fits, it is placed freely like the others.
    """
    counts = np.asarray(counts, dtype=np.int64)
    b = counts.size
    k = int(counts.max()) if b else 0
    cy = np.full((b, k), np.nan)
    cx = np.full((b, k), np.nan)
    radius = np.zeros((b, k))
    left, right, top, bottom = config.margins
    for j in range(k):
        todo = np.flatnonzero(counts > j)
        # no draw without daughters, so a config without them keeps its images
        daughter = (
            rng.random(todo.size) < config.touching
            if j > 0 and config.touching > 0
            else np.zeros(todo.size, dtype=bool)
        )
        for round_ in range(_ROUNDS):
            size = (todo.size, _CANDIDATES)
            if round_ < _ROUNDS // 2:
                r = rng.integers(config.radius_min, config.radius_max, size=size).astype(float)
            else:
                r = np.full(size, float(config.radius_min))
            y = rng.uniform(top + r, IMAGE_SIZE - 1 - bottom - r)
            x = rng.uniform(left + r, IMAGE_SIZE - 1 - right - r)
            beside = np.flatnonzero(daughter) if round_ < _ROUNDS // 4 else np.empty(0, int)
            if beside.size:
                y[beside], x[beside] = _beside_mother(
                    cy[todo[beside], :j], cx[todo[beside], :j], radius[todo[beside], :j],
                    r[beside], rng,
                )  # fmt: skip
            # distance of every candidate to every earlier cell of its image: (todo, C, j)
            dist = np.hypot(y[..., None] - cy[todo, None, :j], x[..., None] - cx[todo, None, :j])
            ok = (dist >= r[..., None] + radius[todo, None, :j] - config.overlap).all(axis=2)
            if beside.size:  # free candidates are drawn inside the margins, daughters may not be
                yb, xb, rb = y[beside], x[beside], r[beside]
                ok[beside] &= (yb >= top + rb) & (yb <= IMAGE_SIZE - 1 - bottom - rb)
                ok[beside] &= (xb >= left + rb) & (xb <= IMAGE_SIZE - 1 - right - rb)
            found = ok.any(axis=1)
            pick = ok.argmax(axis=1)[found]
            done = todo[found]
            cy[done, j] = y[found, pick]
            cx[done, j] = x[found, pick]
            radius[done, j] = r[found, pick]
            todo = todo[~found]
            daughter = daughter[~found]
            if todo.size == 0:
                break
        else:
            raise ValueError(
                f"could not fit {j + 1} cells into the free area of the chamber; "
                "lower the counts, the radii or the margins"
            )
    frame, index = np.nonzero(np.arange(k)[None, :] < counts[:, None])
    return dress_cells(frame, cy[frame, index], cx[frame, index], radius[frame, index], config, rng)


def _beside_mother(cy, cx, radius, r, rng: np.random.Generator):
    """Candidate centres just outside a random earlier cell (one row per image: the earlier
    cells' ``cy, cx, radius`` and the candidates' radii ``r``)."""
    rows = np.arange(r.shape[0])[:, None]
    mother = rng.integers(0, cy.shape[1], size=r.shape)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=r.shape)
    reach = radius[rows, mother] + r + _DAUGHTER_GAP
    return cy[rows, mother] + reach * np.sin(angle), cx[rows, mother] + reach * np.cos(angle)


def dress_cells(frame, cy, cx, radius, config: SynthConfig, rng: np.random.Generator) -> Cells:
    """Deform placed circles into ellipses and give them fill and rim gray levels.

    One side of the bounding box per axis moves by U[-deform, deform) (half that for radius <= 3),
    which moves the ellipse's centre by half the shift and changes its half-axis by half of it.
    """
    m = np.size(frame)
    reach = np.where(np.asarray(radius) <= 3, config.deform / 2, config.deform)
    shift = rng.uniform(-1.0, 1.0, size=(2, m)) * reach
    side = np.where(rng.random((2, m)) < 0.5, -1.0, 1.0)  # which side of the box moves
    y = cy + shift[0] / 2
    x = cx + shift[1] / 2
    ry = np.maximum(radius + side[0] * shift[0] / 2, 1.0)
    rx = np.maximum(radius + side[1] * shift[1] / 2, 1.0)
    fill = config.fill_base + rng.uniform(0.0, config.fill_range, size=m)
    rim = config.rim_base + rng.uniform(0.0, config.rim_range, size=m)
    return Cells(
        np.asarray(frame, dtype=np.int64), np.asarray(cy, float), np.asarray(cx, float),
        np.asarray(radius, float), y, x, ry, rx, fill / 255.0, rim / 255.0,
    )  # fmt: skip


def render(
    cells: Cells,
    n: int,
    config: SynthConfig,
    background: np.ndarray,
    rng: np.random.Generator,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``cells`` into ``n`` images on ``background`` (128x128 in [0, 1]), float32 in [0, 1].

    Each ellipse is evaluated on a small pixel patch around its centre for all cells at once; a
    pixel within ``rim_width`` of the outline gets the rim level, one further in the fill level.
    Later cells cover earlier ones where they overlap.
    """
    from skimage.filters import gaussian

    bg = background.astype(np.float32)
    # the drawn layer as its difference from the background: alpha * (value - background)
    layer = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    if cells.frame.size:
        half = int(np.ceil(max(cells.ry.max(), cells.rx.max()))) + 1
        offsets = np.arange(-half, half + 1)
        py = np.rint(cells.y).astype(np.int64)[:, None] + offsets  # (m, P)
        px = np.rint(cells.x).astype(np.int64)[:, None] + offsets
        uy = ((py - cells.y[:, None]) / cells.ry[:, None]) ** 2
        ux = ((px - cells.x[:, None]) / cells.rx[:, None]) ** 2
        q2 = (uy[:, :, None] + ux[:, None, :]).astype(np.float32)  # (m, P, P); 1 on the outline
        # q - 1 times the mean half-axis is the distance to the outline (exact for circles):
        # a pixel is drawn within half a pixel outside it, and is rim within rim_width inside
        scale = np.sqrt(cells.ry * cells.rx)
        outer = ((1.0 + 0.5 / scale) ** 2).astype(np.float32)[:, None, None]
        inner = (np.maximum(1.0 + (0.5 - config.rim_width) / scale, 0.0) ** 2).astype(np.float32)
        inside = (
            (q2 <= outer)
            & ((py >= 0) & (py < IMAGE_SIZE))[:, :, None]
            & ((px >= 0) & (px < IMAGE_SIZE))[:, None, :]
        )
        c, a, b = np.nonzero(inside)  # ordered by cell, so later cells are written last
        on_rim = q2[c, a, b] > inner[c]
        rows, cols = py[c, a], px[c, b]
        value = np.where(on_rim, cells.rim[c], cells.fill[c]).astype(np.float32)
        flat = (cells.frame[c] * IMAGE_SIZE + rows) * IMAGE_SIZE + cols
        layer.reshape(-1)[flat] = value - bg[rows, cols]
    if config.blur_sigma > 0 and config.blur_mix > 0:
        # blend with a blurred copy; blurring the difference layer instead of colour and
        # coverage apart is exact on a plain background and, on a real one, off only by the
        # background's change across a pixel
        sigma = (0.0, config.blur_sigma, config.blur_sigma)
        blurred = gaussian(layer, sigma=sigma, mode="constant", truncate=3.0, preserve_range=True)
        layer *= np.float32(1.0 - config.blur_mix)
        layer += np.float32(config.blur_mix) * blurred
    images = out if out is not None else np.empty_like(layer)
    np.add(layer, bg[None], out=images)
    if config.noise_std > 0:
        images += rng.normal(0.0, config.noise_std / 255.0, size=images.shape).astype(np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    return images


def background_image(background: np.ndarray | None, config: SynthConfig | None = None):
    """The chamber background as 128x128 float32 in [0, 1].

    ``None`` gives the plain ``config.background_level``. A 2D array of any size is resized to
    128x128; uint8 is divided by 255, floats already in [0, 1] are kept, and anything else is
    stretched between its 0.5 and 99.5 percentiles, as natural frames are.
    """
    cfg = config if config is not None else SynthConfig()
    if background is None:
        return np.full((IMAGE_SIZE, IMAGE_SIZE), cfg.background_level / 255.0, dtype=np.float32)
    data = _unit_scale(background)
    if data.ndim != 2:
        raise ValueError(f"the background must be a 2D image, got shape {data.shape}")
    if data.shape != (IMAGE_SIZE, IMAGE_SIZE):
        from skimage.transform import resize

        data = resize(data, (IMAGE_SIZE, IMAGE_SIZE), anti_aliasing=True, preserve_range=True)
    return np.clip(data, 0.0, 1.0).astype(np.float32)


def estimate_background(frames: np.ndarray, counts: Sequence[int] | None = None) -> np.ndarray:
    """The empty chamber from real frames, as 128x128 float32 in [0, 1].

    With known ``counts``: the mean of the frames holding fewer than 5 cells (the authors' way).
    Without, or when no frame has so few: the per-pixel median of the whole stack, which ignores
    cells because cells move while the chamber does not.
    """
    stack = np.asarray(frames)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"frames must be a (frames, height, width) stack, got shape {stack.shape}")
    stack = _unit_scale(stack)
    if counts is not None:
        known = np.asarray(counts)
        if known.shape != (stack.shape[0],):
            raise ValueError(f"counts needs one entry per frame ({stack.shape[0]})")
        few = np.flatnonzero(known < FEW_CELLS)
        if few.size:
            return background_image(stack[few].mean(axis=0, dtype=np.float64))
        log.info("no frame holds fewer than %d cells; using the per-pixel median", FEW_CELLS)
    median = np.empty(stack.shape[1:], dtype=np.float32)
    for top in range(0, stack.shape[1], 16):  # row blocks keep the copy small for long stacks
        median[top : top + 16] = np.median(stack[:, top : top + 16], axis=0)
    return background_image(median)


def _unit_scale(data: np.ndarray) -> np.ndarray:
    """Gray values -> [0, 1]: uint8 / 255, floats in [0, 1] as they are, else a percentile stretch."""
    array = np.asarray(data)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype.kind not in "uif" and array.dtype != bool:
        raise ValueError(f"images must hold numbers, got dtype {array.dtype}")
    as_float = array.astype(np.float32, copy=False)
    if not np.isfinite(as_float).all():
        raise ValueError("the image holds NaN or infinite values")
    if array.dtype.kind == "f" and as_float.min() >= 0.0 and as_float.max() <= 1.0:
        return as_float
    # one stretch for the whole stack keeps frames comparable
    return normalize_frames(as_float.reshape(1, -1, as_float.shape[-1]))[0].reshape(array.shape)


# -- the sample time series ------------------------------------------------------------------
def synthetic_timeseries(preset: str = "pc", n_frames: int = 60, seed: int = 0) -> SynthBatch:
    """A cultivation from one cell: cells persist, drift a little and divide every ~15 frames.

    Counts grow from 1 to about 16 over 60 frames, like a real chamber; each cell keeps its
    shape and gray levels for life, and a daughter appears touching its mother. A little camera
    noise (3 gray levels) makes it look like a recording.
    """
    cfg = timeseries_config(preset)
    if int(n_frames) < 1:
        raise ValueError("a time series needs at least one frame")
    rng = np.random.default_rng(seed)
    left, right, top, bottom = cfg.margins
    low = np.array([top, left], dtype=float)
    high = np.array([IMAGE_SIZE - 1 - bottom, IMAGE_SIZE - 1 - right], dtype=float)
    first_r = float(rng.integers(cfg.radius_min, cfg.radius_max))
    pos = [(low + high) / 2 + rng.uniform(-5, 5, size=2)]
    radius = [first_r]
    age = [int(rng.integers(0, 4))]
    cycle = [int(rng.integers(13, 17))]
    looks = [_looks(cfg, first_r, rng)]
    rows = []
    for frame in range(int(n_frames)):
        for i in range(len(pos)):  # drift; a step that breaks the rules is not taken
            step = pos[i] + rng.normal(0.0, 0.6, size=2)
            if _fits(step, radius[i], pos, radius, low, high, cfg.overlap, skip=i):
                pos[i] = step
        for i in range(len(pos)):
            age[i] += 1
            if age[i] < cycle[i] or len(pos) >= MAX_COUNT:
                continue
            r = float(rng.integers(cfg.radius_min, cfg.radius_max))
            for angle in rng.uniform(0, 2 * np.pi, size=12):
                reach = radius[i] + r + _DAUGHTER_GAP
                spot = pos[i] + reach * np.array([np.sin(angle), np.cos(angle)])
                if _fits(spot, r, pos, radius, low, high, cfg.overlap):
                    pos.append(spot)
                    radius.append(r)
                    age[i] = 0
                    age.append(0)
                    cycle[i] = int(rng.integers(13, 17))
                    cycle.append(int(rng.integers(13, 17)))
                    looks.append(_looks(cfg, r, rng))
                    break
        for p, r, look in zip(pos, radius, looks, strict=True):
            rows.append((frame, p[0], p[1], r, *look))
    table = np.array(rows, dtype=np.float64)
    frame = table[:, 0].astype(np.int64)
    cells = Cells(
        frame, table[:, 1], table[:, 2], table[:, 3],
        table[:, 1] + table[:, 4], table[:, 2] + table[:, 5], table[:, 6], table[:, 7],
        table[:, 8], table[:, 9],
    )  # fmt: skip
    images = render(cells, int(n_frames), cfg, background_image(None, cfg), rng)
    counts = np.bincount(frame, minlength=int(n_frames)).astype(np.int64)
    centres = np.stack([frame.astype(np.float64), cells.y, cells.x], axis=1)
    return SynthBatch(images, counts, centres)


def timeseries_config(preset: str = "pc") -> SynthConfig:
    """The preset with the sample time series' camera noise."""
    return dataclasses.replace(SynthConfig.preset(preset), noise_std=3.0)


def _looks(cfg: SynthConfig, r: float, rng: np.random.Generator) -> tuple[float, ...]:
    """A cell's lifelong appearance: centre offset, half-axes, fill and rim (0-1)."""
    one = dress_cells(np.zeros(1), np.zeros(1), np.zeros(1), np.full(1, r), cfg, rng)
    return (one.y[0], one.x[0], one.ry[0], one.rx[0], one.fill[0], one.rim[0])


def _fits(spot, r, pos, radius, low, high, overlap, skip=-1) -> bool:
    """Whether a circle at ``spot`` stays inside the margins and off the other cells."""
    if (spot - r < low).any() or (spot + r > high).any():
        return False
    others = [j for j in range(len(pos)) if j != skip]
    if not others:
        return True
    dist = np.hypot(*(np.array([pos[j] for j in others]) - spot).T)
    return bool((dist >= r + np.array([radius[j] for j in others]) - overlap).all())
