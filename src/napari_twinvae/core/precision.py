"""The precision a training run computes in: bfloat16 autocast of the convolutions on CUDA
(float16 on GPUs without bfloat16) and on CPUs with native bfloat16 (AVX512-BF16 or AMX);
float32 elsewhere. The latent code, the count and the loss stay float32. A count's inner
convolutions take the same dtype (core.count_paths.counting_dtype)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import NamedTuple

import torch

from napari_twinvae.core.device import select_device


class Precision(NamedTuple):
    """How a run computes: the autocast context to enter per step, the gradient scaler
    (float16 only) and the name its summary records."""

    autocast: Callable[[], AbstractContextManager]
    scaler: torch.amp.GradScaler | None
    name: str


def mixed_precision(device: torch.device, wanted: bool) -> Precision:
    """The :class:`Precision` of a run on ``device``; float32 when not ``wanted``."""
    dtype = device_autocast_dtype(device, wanted)
    if dtype is None:
        return Precision(contextlib.nullcontext, None, precision_name(None))
    # float16 overflows where bfloat16 does not: its gradients need scaling
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return Precision(
        lambda: torch.autocast(device.type, dtype=dtype), scaler, precision_name(dtype)
    )


def autocast_dtype(config) -> torch.dtype | None:
    """What a run with ``config`` (a ``TrainConfig``) autocasts its convolutions to on this
    machine (None: it computes in float32)."""
    return device_autocast_dtype(select_device(config.device), config.mixed_precision)


def device_autocast_dtype(device: torch.device, wanted: bool) -> torch.dtype | None:
    """The autocast dtype on ``device``, the one place it is decided."""
    if not wanted:
        return None
    if device.type == "cpu":
        # emulated bfloat16 is slower than float32
        return torch.bfloat16 if cpu_has_native_bfloat16() else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """The name a run's summary records: "float32", "bfloat16 autocast" or "float16 autocast"."""
    return "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), where oneDNN's
    bfloat16 convolutions make a training step about 1.4x faster than float32 ones."""
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
