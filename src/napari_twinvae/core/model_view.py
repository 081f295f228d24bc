"""What the model sees: chamber crops through an encoder and a decoder twin, as whole arrays
(:func:`reconstruct`, :func:`translate`) or as a lazy array a viewer pages through
(:class:`ModelView`)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from napari_twinvae.core.chambers import Region, area_matrix, as_frames, check_regions
from napari_twinvae.core.config import IMAGE_SIZE
from napari_twinvae.core.device import select_device
from napari_twinvae.core.inputs import (
    check_batch_size,
    checkpoint_of,
    crops_of,
    frame_batches,
    frames_of,
)
from napari_twinvae.core.io import Checkpoint, read_stack
from napari_twinvae.core.model import DOMAINS, TwinVAE
from napari_twinvae.core.predict import DEFAULT_BATCH_SIZE


def decode_crops(
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
    batch_size = check_batch_size(batch_size)
    stack = frames_of(frames)
    boxes = check_regions(regions, stack.shape[1:])
    ckpt = checkpoint_of(checkpoint, select_device(device))
    model = ckpt.model.eval()
    target = next(model.parameters()).device
    out = np.empty((stack.shape[0], len(boxes), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for start, stop, part in frame_batches(stack, None, len(boxes), batch_size):
        crops = crops_of(part, boxes, ckpt.normalization, range(start, stop))
        decoded = decode_crops(
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
            crops = crops_of(
                self._stack[t : t + 1], self._regions, self._checkpoint.normalization, [t]
            )[0]
            decoded = decode_crops(model, crops, "natural", self.decoder, len(crops), device)
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
