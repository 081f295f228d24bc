"""What each epoch of a training run passes over: the plan of batches, the synthetic images, the
renewed natural frames and each batch's augmentation.

An epoch passes once over the natural pool (every frame with decoders; the labeled training
frames alone without) and over ``synthetic_ratio`` times as many freshly generated synthetic
images, batches of the two twins interleaved evenly. On a GPU the next epoch's synthetic images
are generated in a thread while the current one trains.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from napari_twinvae.core.data import NaturalSet, SyntheticSource, augment, augment_with_cells
from napari_twinvae.core.density import cells_per_image, density_targets, pad_points

if TYPE_CHECKING:
    from napari_twinvae.core.train import TrainConfig


class Batch(NamedTuple):
    """One twin's augmented batch; with a density head also its target maps, and which images
    have known cell positions (the others, labeled with a count only, train the map's sum)."""

    x: torch.Tensor
    counts: torch.Tensor
    labeled: torch.Tensor
    targets: torch.Tensor | None = None
    known: torch.Tensor | None = None


class Cells(NamedTuple):
    """Cell centres of a twin's images, padded: points (N, P, 2), mask (N, P), known (N,)."""

    points: torch.Tensor
    mask: torch.Tensor
    known: torch.Tensor

    @classmethod
    def of(cls, cells: list[np.ndarray | None], device: torch.device) -> Cells:
        """Padded centres of each image's cells (None: only the image's count is known)."""
        points, mask = pad_points([c if c is not None else np.zeros((0, 2)) for c in cells])
        known = torch.tensor([c is not None for c in cells], dtype=torch.bool)
        return cls(points.to(device), mask.to(device), known.to(device))

    def with_rows(self, index: torch.Tensor, rows: Cells) -> Cells:
        width = max(self.points.shape[1], rows.points.shape[1])
        points, mask = _widen(self.points, self.mask, width)
        new_points, new_mask = _widen(rows.points, rows.mask, width)
        points[index], mask[index] = new_points, new_mask
        known = self.known.clone()
        known[index] = rows.known
        return Cells(points, mask, known)


def _widen(points: torch.Tensor, mask: torch.Tensor, width: int):
    extra = width - points.shape[1]
    return F.pad(points, (0, 0, 0, extra)), F.pad(mask, (0, extra))


class EpochData:
    """The images of a run on its device, and each epoch's batches of them.

    ``train_labeled`` marks the labeled frames that train (the held-out ones are not among
    them: their counts and cells stay hidden). ``sigma`` is the density head's target width,
    None without a head. ``source`` makes the synthetic images (default: a
    :class:`SyntheticSource` matched to the natural frames); ``renew``, a source of the same
    kind, replaces the labeled training frames from the second epoch on.
    """

    def __init__(
        self,
        natural: NaturalSet,
        train_labeled: np.ndarray,
        config: TrainConfig,
        device: torch.device,
        sigma: float | None = None,
        source: SyntheticSource | None = None,
        renew: SyntheticSource | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.sigma = sigma
        self.renew = renew
        self.train_labeled = train_labeled
        if config.decoder:
            self.natural_pool = np.arange(len(natural.frames))
        else:
            # without decoders, unlabeled frames would feed the KLD term alone
            self.natural_pool = np.flatnonzero(train_labeled)
            if self.natural_pool.size == 0:
                raise ValueError(
                    "training without decoders learns only from labeled frames; label some "
                    "frames or switch the decoders on"
                )
        self.n_synthetic = int(round(config.synthetic_ratio * self.natural_pool.size))
        self.source = source or SyntheticSource(
            natural._replace(labeled=train_labeled), config.preset, config.seed
        )
        self.generator = torch.Generator(device=device)  # the augmentation's
        self.generator.manual_seed(config.seed)
        self.frames = torch.from_numpy(natural.frames).to(device)
        self.counts = torch.from_numpy(natural.counts).to(device)
        if renew is not None:  # renewal writes into them: leave the caller's arrays be
            self.frames, self.counts = self.frames.clone(), self.counts.clone()
        self.labeled = torch.from_numpy(train_labeled).to(device)
        # where the cells are (density head only): clicked points of the training frames;
        # held-out frames keep theirs hidden, as their counts
        self.cells: dict[str, Cells] = {}
        if sigma is not None:
            given = natural.cells or (None,) * len(train_labeled)
            known = [c if keep else None for c, keep in zip(given, train_labeled, strict=True)]
            self.cells["natural"] = Cells.of(known, device)
        self.synthetic: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pending: Future | None = None
        self.pending_epoch = 0
        self.executor: ThreadPoolExecutor | None = None
        if device.type != "cpu":  # generate the next epoch's images while the GPU trains
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twinvae-synth")

    def describe(self) -> dict:
        """What the run's summary says about its images."""
        return {
            "synthetic": {**self.source.describe(), "per_epoch": self.n_synthetic},
            "renewed": self.renew.describe() if self.renew is not None else None,
        }

    @property
    def steps_per_epoch(self) -> int:
        bs = self.config.batch_size
        return sum(math.ceil(n / bs) for n in (self.natural_pool.size, self.n_synthetic) if n)

    def plan(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        """This epoch's batches: (domain, indices), the two twins interleaved evenly. Renews
        the training frames and makes the synthetic images the epoch passes over."""
        if self.renew is not None and epoch > 1:
            self._renew_natural(epoch)
        rng = np.random.default_rng([self.config.seed, 31, epoch])
        plan: list[tuple[float, int, str, np.ndarray]] = []
        for order, (domain, n) in enumerate(
            (("natural", self.natural_pool.size), ("synthetic", self.n_synthetic))
        ):
            if n == 0:
                continue
            pool = self.natural_pool if domain == "natural" else np.arange(n)
            shuffled = pool[rng.permutation(n)]
            # near-equal batches: no straggler of one or two images at the end
            parts = np.array_split(shuffled, math.ceil(n / self.config.batch_size))
            for i, part in enumerate(parts):
                plan.append(((i + 0.5) / len(parts), order, domain, part))
        plan.sort(key=lambda p: (p[0], p[1]))
        if self.n_synthetic:
            self._synthetic_for(epoch)
        return [(domain, part) for _, _, domain, part in plan]

    def batch(self, domain: str, index: np.ndarray) -> Batch:
        """The augmented images ``index`` of a twin, with their counts (and density targets)."""
        idx = torch.from_numpy(index).to(self.device)
        if domain == "natural":
            x, counts, labeled = self.frames[idx], self.counts[idx], self.labeled[idx]
        else:
            images, all_counts = self.synthetic
            x, counts = images[idx], all_counts[idx]
            labeled = torch.ones_like(counts, dtype=torch.bool)
        augmentation = self.config.augmentation
        cells = self.cells.get(domain)
        if cells is None:
            return Batch(augment(x.unsqueeze(1), self.generator, augmentation), counts, labeled)
        points, mask, known = cells.points[idx], cells.mask[idx], cells.known[idx]
        x, points, mask = augment_with_cells(
            x.unsqueeze(1), points, mask, self.generator, augmentation
        )
        # a cell that the crop or turn moved out of the image no longer counts
        counts = torch.where(known, mask.sum(1), counts)
        return Batch(x, counts, labeled, density_targets(points, mask, self.sigma), known)

    def _renew_natural(self, epoch: int) -> None:
        index = torch.from_numpy(np.flatnonzero(self.train_labeled)).to(self.device)
        frames, counts, centres = self.renew.batch(int(index.numel()), epoch)
        self.frames[index] = torch.from_numpy(np.asarray(frames, np.float32)).to(self.device)
        self.counts[index] = torch.from_numpy(np.asarray(counts, np.int64)).to(self.device)
        if "natural" in self.cells:
            renewed = Cells.of(cells_per_image(centres, len(frames)), self.device)
            self.cells["natural"] = self.cells["natural"].with_rows(index, renewed)

    def _synthetic_for(self, epoch: int) -> None:
        if self.pending is not None and self.pending_epoch == epoch:
            images, counts, centres = self.pending.result()
        else:
            images, counts, centres = self.source.batch(self.n_synthetic, epoch)
        self.synthetic = (
            torch.from_numpy(images).to(self.device),
            torch.from_numpy(counts).to(self.device),
        )
        if self.sigma is not None:
            self.cells["synthetic"] = Cells.of(cells_per_image(centres, len(images)), self.device)
        self.pending = None
        more = self.config.epochs is None or epoch < self.config.epochs
        if self.executor is not None and more:
            self.pending_epoch = epoch + 1
            self.pending = self.executor.submit(self.source.batch, self.n_synthetic, epoch + 1)

    def close(self) -> None:
        """Stop generating ahead; waits for an image batch already being made."""
        if self.executor is not None:
            if self.pending is not None:
                self.pending.cancel()
            self.executor.shutdown(wait=True)
            self.executor = None
