"""JSON-able configuration dataclasses, stored inside every checkpoint."""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin: dict/JSON round trip that refuses unknown keys and values of the wrong type (text
    where a number belongs: a damaged checkpoint) with a clear message."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__} has no setting(s) {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        values = {
            name: _coerce(hints[name], value, f"{cls.__name__}.{name}")
            for name, value in data.items()
        }
        return cls(**values)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))


_KINDS = {
    bool: (bool, "true or false"),
    int: (numbers.Integral, "a whole number"),
    float: (numbers.Real, "a number"),
    str: (str, "text"),
}


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """JSON has lists where the dataclasses hold tuples, and dicts for nested configs; a value
    of another type than the field's is a ValueError that names the field."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        items = typing.get_args(hint)
        if Ellipsis in items:
            items = (items[0],) * len(value)
        elif len(value) != len(items):
            raise ValueError(f"{where} must hold {len(items)} values, got {len(value)}")
        return tuple(_coerce(item, v, where) for item, v in zip(items, value, strict=True))
    if isinstance(hint, type) and issubclass(hint, JsonConfig):
        return value if isinstance(value, hint) else hint.from_dict(value)
    kind, what = _KINDS.get(hint, (object, ""))
    if not isinstance(value, kind) or (isinstance(value, bool) and hint is not bool):
        raise ValueError(f"{where} must be {what}, got {value!r}")
    return value


HEADS = ("regressor", "density")
"""What counts: the paper's regressor on the latent code, or a density map from the encoders."""


@dataclasses.dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Shape of the Twin-VAE. The defaults are the paper's network (11,363,331 parameters).

    The decoder's kernel sequence is fixed for 128x128 images, so the image size is not a
    setting; channel widths, latent size, dropout and slopes are.
    """

    encoder_channels: tuple[int, ...] = (32, 64, 128, 256)
    shared_channels: int = 512
    latent_dim: int = 256
    regressor_hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    leaky_slope: float = 0.2
    logvar_max: float = 15.0
    # "regressor": the paper's count from the latent code; "density": a shared head that reads
    # the twin encoders' maps and predicts a density map whose sum is the count
    head: str = "regressor"
    density_sigma: float = 3.0  # crop pixels: the width of a cell's Gaussian in the targets

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if not 0.5 <= self.density_sigma <= 16:
            raise ValueError(f"density_sigma must lie in 0.5..16 pixels, got {self.density_sigma}")
        if len(self.encoder_channels) != 4:
            raise ValueError("encoder_channels needs 4 widths (128 -> 62 -> 29 -> 13 -> 5 pixels)")
        if min(self.encoder_channels) < 1 or self.shared_channels < 1 or self.latent_dim < 1:
            raise ValueError("channel widths and latent_dim must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must lie in [0, 1)")


IMAGE_SIZE = 128
"""Side of the square chamber crop the network sees."""


RECONSTRUCTION_KINDS = ("mse", "bce", "cells")
"""How the reconstruction term compares a decoded image with its input (core.losses)."""


@dataclasses.dataclass(frozen=True)
class LossWeights(JsonConfig):
    """Weights of the twin loss (as in the paper); the defaults worked best on phase contrast."""

    reconstruction: float = 100.0
    regression: float = 3.0
    kld: float = 2.0
    # "mse" (phase contrast), "bce" (bright field) or "cells" (MSE weighted toward the cells)
    reconstruction_kind: str = "mse"
    reconstruction_decay: float = 0.0  # per epoch, multiplicative; the paper used 3e-5 with BCE
    # the density head (no weight in the paper): pixel MSE of the map on images with known
    # cell positions, and the L1 error of its sum, in cells, on every labeled image
    density: float = 1.0
    density_sum: float = 0.1

    def __post_init__(self) -> None:
        if self.reconstruction_kind not in RECONSTRUCTION_KINDS:
            raise ValueError(
                f"reconstruction_kind must be one of {', '.join(RECONSTRUCTION_KINDS)}"
            )
        if min(self.reconstruction, self.regression, self.kld, self.reconstruction_decay,
               self.density, self.density_sum) < 0:  # fmt: skip
            raise ValueError("loss weights must not be negative")
