"""Files: atomic writes, image stacks, and safe checkpoints.

Checkpoints hold plain data only (tensors, numbers, strings, dicts) and are read with
``torch.load(weights_only=True)``, so a file that carries code is refused, never run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pickle
import platform
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

CHECKPOINT_FORMAT = "napari-twinvae-checkpoint"
CHECKPOINT_VERSION = 1


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: mkstemp creates files readable by the owner only, while a result file
# should get the permissions any other new file of the user gets.
_FILE_MODE = 0o666 & ~_current_umask()


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line that says why."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write ``path`` through a temporary file in the same folder, renamed into place at the end.

    A crash, an error or a cancel midway leaves the old file (if any) untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        os.chmod(tmp, _FILE_MODE)
        os.close(fd)  # reopened by name: some writers (tifffile) need the file's path
        text = {} if "b" in mode else {"newline": "", "encoding": "utf-8"}
        with open(tmp, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_tiff(path: str | os.PathLike, images: np.ndarray) -> Path:
    """An image stack as TIFF, atomically, with no timestamp or version tags: equal data gives
    equal bytes, so a seeded run is reproducible down to the file."""
    import tifffile

    with atomic_write(path) as f:
        tifffile.imwrite(f, images, photometric="minisblack", metadata=None, software=None)
    return Path(path)


def read_stack(path: str | os.PathLike, lazy: bool = True) -> np.ndarray:
    """A TIFF (or any image scikit-image reads) as an array, memory-mapped when the file allows.

    Memory mapping keeps a series larger than RAM on disk; frames are read as they are used.
    """
    import tifffile

    source = Path(path)
    if not source.is_file():
        raise ValueError(f"{source}: no such file")
    if source.suffix.lower() in (".tif", ".tiff"):
        with _tifffile_errors() as damage:
            data = None
            if lazy:
                with contextlib.suppress(ValueError, tifffile.TiffFileError, OSError):
                    data = tifffile.memmap(source, mode="r")
            if data is None:
                try:
                    data = tifffile.imread(source)
                except (tifffile.TiffFileError, ValueError, OSError, KeyError) as err:
                    # KeyError: a compression tifffile cannot decode without imagecodecs
                    reason = " ".join(str(err).strip("'\"").split()) or type(err).__name__
                    raise ValueError(f"{source}: not a readable TIFF ({reason})") from None
        if damage:
            # tifffile reads what it can of a damaged file and logs the rest: frames may be
            # missing or garbled, so the file is refused instead of counted
            raise ValueError(
                f"{source}: a damaged TIFF ({damage[0]}); was it saved or copied completely?"
            )
        return data
    from skimage import io as skio

    try:
        return np.asarray(skio.imread(source))
    except (ValueError, OSError) as err:
        raise ValueError(f"{source}: not a readable image ({err})") from None


@contextlib.contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    """Collect the errors tifffile logs while reading (instead of printing them on stderr)."""
    import logging

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(" ".join(record.getMessage().split()))

    messages: list[str] = []
    logger = logging.getLogger("tifffile")
    handler = Collect(logging.ERROR)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


# -- checkpoints ---------------------------------------------------------------------------
@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: the model (float32, eval mode) and what was stored beside it."""

    model: Any  # TwinVAE
    config: Any  # ModelConfig
    normalization: Any  # Normalization
    summary: dict
    versions: dict
    path: Path | None = None


def _versions() -> dict[str, str]:
    import torch

    from napari_twinvae import __version__

    return {
        "napari_twinvae": __version__,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(
    path: str | os.PathLike,
    model,
    *,
    normalization=None,
    summary: dict | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` with its config, normalisation, versions and a training summary, atomically.

    ``half=True`` stores floating weights as float16 (half the size); loading restores float32.
    """
    import torch

    from napari_twinvae.core.intensity import Normalization

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    norm = normalization if normalization is not None else Normalization()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_config": model.config.to_dict(),
        "normalization": norm.to_dict(),
        "state_dict": state,
        "versions": _versions(),
        "summary": dict(summary or {}),
    }
    try:
        with atomic_write(path) as f:
            torch.save(payload, f)
    except RuntimeError as err:
        # torch's zip writer wraps a failed write (a full disk) in a RuntimeError
        cause = err.__context__ if isinstance(err.__context__, OSError) else None
        reason = cause.strerror if cause is not None else str(err).splitlines()[0]
        number = cause.errno if cause is not None else errno.EIO
        raise OSError(number, f"the model could not be written: {reason}", str(path)) from None
    return Path(path)


DEFAULT_MODEL = "default"
"""The name that stands for the model shipped inside the package."""


def default_model_path() -> Path:
    """Where the package keeps its default model (present once one has been trained and shipped)."""
    return Path(__file__).resolve().parent.parent / "models" / "default.pt"


def resolve_model(model: str | os.PathLike | None = DEFAULT_MODEL) -> Path:
    """A model argument (``"default"``, ``None`` or a path) as the checkpoint file to load."""
    if model is None or str(model) == DEFAULT_MODEL:
        path = default_model_path()
        if not path.is_file():
            raise CheckpointError(
                "this installation has no default model; pass a model file "
                "(`napari-twinvae train` writes one)"
            )
        return path
    return Path(model)


def load_model(model: str | os.PathLike | None = DEFAULT_MODEL, device="cpu") -> Checkpoint:
    """:func:`load_checkpoint` of ``"default"`` (the shipped model) or of a file."""
    return load_checkpoint(resolve_model(model), device)


def load_checkpoint(path: str | os.PathLike, device="cpu") -> Checkpoint:
    """Read a checkpoint safely and rebuild its model in eval mode on ``device``.

    Raises ``CheckpointError`` with a one-line reason for a missing, corrupt or foreign file, a
    file that carries code, or weights that do not fit the stored config. The model is built
    without weights (on torch's meta device) and takes the stored ones as they are: no random
    initialisation runs only to be overwritten.
    """
    source = Path(path)
    payload = _read_payload(source)
    config, normalization, state = _settings(source, payload)
    model = _fitted(source, config, state)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    from napari_twinvae.core.device import select_device

    model.to(select_device(device)).eval()
    return Checkpoint(
        model=model,
        config=config,
        normalization=normalization,
        summary=dict(payload.get("summary") or {}),
        versions=dict(payload.get("versions") or {}),
        path=source,
    )


def _fitted(source: Path, config, state: dict):
    """The model of ``config`` built without weights (on torch's meta device: no memory, no
    initialisation), or a CheckpointError when the stored weights do not fit it."""
    import torch

    from napari_twinvae.core.model import TwinVAE

    try:
        with torch.device("meta"):
            model = TwinVAE(config)
    except (TypeError, ValueError, RuntimeError) as err:  # e.g. widths that are not integers
        raise CheckpointError(f"{source}: damaged checkpoint settings ({err})") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or reshaped:
        raise CheckpointError(
            f"{source}: weights do not fit the stored model config "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} of another shape)"
        )
    return model


def _read_payload(source: Path) -> dict:
    """The checkpoint's dict, read with ``weights_only=True``: plain data, never code."""
    import torch

    if not source.is_file():
        raise CheckpointError(f"{source}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 5": a foreign file is refused below in one line
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{source}: refused: the file holds objects or code beyond plain tensors and numbers"
        ) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
    ) as err:
        # A truncated zip, a text file or another format each fail somewhere else in torch.load.
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{source}: not a readable checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{source}: not a napari-twinvae checkpoint (written by another program)"
        )
    if payload.get("format_version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{source}: written by a newer napari-twinvae "
            f"(format {payload.get('format_version')}); please upgrade"
        )
    return payload


def _settings(source: Path, payload: dict):
    """(model config, normalisation, state dict) of a payload, or a CheckpointError."""
    import torch

    from napari_twinvae.core.config import ModelConfig
    from napari_twinvae.core.intensity import Normalization

    try:
        config = ModelConfig.from_dict(payload["model_config"])
        normalization = Normalization.from_dict(payload.get("normalization") or {})
        state = payload["state_dict"]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: damaged checkpoint settings ({err})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{source}: damaged checkpoint (no weights)")
    return config, normalization, state
