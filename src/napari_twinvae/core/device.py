"""One place that decides where tensors live: CUDA, Apple's MPS, or the CPU."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(preference: str | torch.device = "auto") -> torch.device:
    """The device to run on. ``"auto"`` takes CUDA, then MPS, then the CPU.

    An explicit choice that is not available here raises ``ValueError`` with the reason,
    rather than silently running somewhere else.
    """
    if isinstance(preference, torch.device):
        preference = str(preference)
    choice = preference.strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = choice.split(":", 1)[0]
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA was asked for, but torch sees no CUDA GPU on this machine")
        device = torch.device(choice)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"{choice} was asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    if kind == "mps":
        if not _mps_available():
            raise ValueError("MPS was asked for, but this machine has no usable Apple GPU")
        return torch.device("mps")
    raise ValueError(f"unknown device {preference!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def available_devices() -> list[tuple[str, str]]:
    """(value, human label) pairs for a device chooser, e.g. ``("cuda:0", "GPU 0: H100")``."""
    devices = [("auto", "Automatic"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            devices.append((f"cuda:{i}", f"GPU {i}: {torch.cuda.get_device_name(i)}"))
    if _mps_available():
        devices.append(("mps", "Apple GPU (MPS)"))
    return devices
