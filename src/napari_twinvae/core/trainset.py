"""From the user's frames and hand labels to the natural set a run trains on: one path for the
command line and the Label & train dock.

Hand labels come from a file (:func:`core.labels.load_annotation`) or a Points layer
(:func:`core.labels.annotation_of`). They are checked against the frames and the chambers here
(frames beyond the stack, points outside the image, more than 30 cells in a chamber, a
``frame,count`` table for several chambers), then every chamber of every frame is cut out and
normalised as the start model was trained: :func:`load_start` reads that model once, with its
weights, its normalisation and its summary, for the cropping and the run alike.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from napari_twinvae.core.chambers import Region, as_frames, check_regions, iter_chamber_crops
from napari_twinvae.core.counts import MAX_COUNT
from napari_twinvae.core.data import NaturalSet, natural_set
from napari_twinvae.core.intensity import Normalization
from napari_twinvae.core.labels import Annotation, Labels

if TYPE_CHECKING:
    from napari_twinvae.core.model import TwinVAE

SCRATCH = "scratch"


def check_labels(
    frames,
    annotation: Annotation,
    regions: Sequence[Region] | None = None,
    max_count: int | None = MAX_COUNT,
) -> Labels:
    """The annotation's counts per frame and chamber for these frames, or a ValueError."""
    stack = as_frames(frames)
    boxes = check_regions(regions, stack.shape[1:]) if regions else None
    return annotation.labels(stack.shape[0], stack.shape[1:], boxes, max_count)


def iter_natural_set(
    frames,
    labels: Labels,
    regions: Sequence[Region] | None = None,
    normalization: Normalization | None = None,
    chunk: int = 64,
) -> Generator[tuple[int, int], None, NaturalSet]:
    """Crop and normalise every chamber and return the :class:`NaturalSet` of these ``labels``
    (from :func:`check_labels` on the same frames and regions, which the caller runs first to
    refuse bad labels before any cropping).

    Yields (frames cropped, frames) after every ``chunk`` frames, so that a worker can report
    and stop there and a memory-mapped stack is read one chunk at a time.
    """
    stack = as_frames(frames)
    boxes = check_regions(regions, stack.shape[1:]) if regions else None
    crops = yield from iter_chamber_crops(stack, boxes, normalization, chunk)
    return natural_set(crops, labels)


class StartModel(NamedTuple):
    """Where a training run starts, read once: the weights, the normalisation to crop the
    natural frames with (the start model's own, so a transfer keeps seeing the scale it
    learned on) and what it was, for the run's summary. From scratch ``model`` is None: the run
    builds it after seeding torch, so that the seed decides its first weights."""

    model: TwinVAE | None
    normalization: Normalization
    info: dict


def load_start(init: str) -> StartModel:
    """The :class:`StartModel` of ``init``: ``"scratch"``, ``"default"`` or a model file
    (a ``CheckpointError`` says in one line why one cannot be used)."""
    if init == SCRATCH:
        return StartModel(None, Normalization(), {"init": SCRATCH})
    from napari_twinvae.core.io import load_model

    checkpoint = load_model(init)
    # the file's name, not where it lies: a summary holds no path of the training machine
    info: dict[str, Any] = {"init": checkpoint.path.name}
    earlier = {
        k: checkpoint.summary[k] for k in ("best", "epochs", "stopped") if k in checkpoint.summary
    }
    if earlier:
        info["init_summary"] = earlier
    return StartModel(checkpoint.model, checkpoint.normalization, info)
