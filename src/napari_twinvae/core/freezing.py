"""Which parameters of a Twin-VAE take optimizer steps, as the paper freezes them.

Parameter groups, by the model's top-level modules:

* **core** (shared by both twins): ``shared_encoder``, ``mu``, ``logvar``, ``expand``,
  ``shared_decoder``, ``regressor`` and the ``density_head`` (one head, read by both twins);
* **outer** (one per twin): ``encoders.*``, ``decoders.*``;
* **counting** freezes the counting path (outer and shared encoder, ``mu``, ``logvar``,
  ``regressor``, ``density_head``) so only the decoders train: it brings back reconstructions after a
  decoder-free run without touching the counts.

A frozen parameter takes no optimizer step (no update, no weight decay) while gradients still
flow through it to the layers before it; frozen batch-norm layers also keep their running
statistics (they run in eval mode). ``thaw`` starts with everything but the innermost layers
frozen and unfreezes in five stages at 0, 1/5, 2/5, 3/5 and 4/5 of the run, from the inside out:
(1) regressor, density head, mu, logvar, expand; (2) shared encoder and decoder; (3) the outer layers next to
them (last encoder convolution, first decoder block); (4) the next outer layer on each side;
(5) the rest.
"""

from __future__ import annotations

import math

from torch import nn

from napari_twinvae.core.model import DensityHead

FREEZE_STRATEGIES = ("none", "core", "outer", "thaw", "counting", "density")
CORE_PARTS = (
    "shared_encoder",
    "mu",
    "logvar",
    "expand",
    "shared_decoder",
    "regressor",
    "density_head",
)
"""Top-level modules shared by both twins: frozen by ``freeze="core"``."""
OUTER_PARTS = ("encoders", "decoders")
"""Top-level modules that exist once per twin: frozen by ``freeze="outer"``."""
COUNTING_PARTS = ("encoders", "shared_encoder", "mu", "logvar", "regressor", "density_head")
"""Top-level modules on the counting path: frozen by ``freeze="counting"``."""
THAW_STAGES = 5


def parameter_part(name: str) -> str:
    """``"core"`` or ``"outer"`` for a parameter (or buffer) name of :class:`TwinVAE`."""
    top = name.split(".", 1)[0]
    if top in CORE_PARTS:
        return "core"
    if top in OUTER_PARTS:
        return "outer"
    raise ValueError(f"{name} belongs to neither the core nor the outer layers")


def _block(parts: list[str]) -> int:
    """The layer block of an ``encoders``/``decoders`` parameter name split at its dots: their
    modules come in (layer, norm/activation, ...) threes."""
    return int(parts[2]) // 3


def thaw_stage(name: str) -> int:
    """The thaw stage (0-4) in which a parameter starts to train: from the inside out."""
    parts = name.split(".")
    if parts[0] in ("regressor", "density_head", "mu", "logvar", "expand"):
        return 0  # the counting heads first
    if parts[0] in ("shared_encoder", "shared_decoder"):
        return 1
    block = _block(parts)
    depth = (3 - block) if parts[0] == "encoders" else block  # 0 = next to the core
    return 2 + min(depth, 2)


def _on_density_path(name: str) -> bool:
    parts = name.split(".")
    if parts[0] == "density_head":
        return True
    return parts[0] == "encoders" and _block(parts) < DensityHead.DEPTH


def frozen_parameters(model: nn.Module, freeze: str, fraction: float = 0.0) -> set[str]:
    """Names of the parameters that take no step, at ``fraction`` (0-1) of the run."""
    if freeze not in FREEZE_STRATEGIES:
        raise ValueError(f"unknown freeze strategy {freeze!r}")
    names = [n for n, _ in model.named_parameters()]
    if freeze == "none":
        return set()
    if freeze in ("core", "outer"):
        return {n for n in names if parameter_part(n) == freeze}
    if freeze == "counting":
        return {n for n in names if n.split(".", 1)[0] in COUNTING_PARTS}
    if freeze == "density":
        if getattr(model, "density_head", None) is None:
            raise ValueError("freeze='density' keeps a density head's counts; the model has none")
        return {n for n in names if _on_density_path(n)}
    stage = min(THAW_STAGES - 1, int(math.floor(max(fraction, 0.0) * THAW_STAGES)))
    return {n for n in names if thaw_stage(n) > stage}


def apply_freeze(model: nn.Module, frozen: set[str]) -> list[nn.Module]:
    """Stop updates of ``frozen``; returns the batch-norm layers that must keep their statistics."""
    for name, param in model.named_parameters():
        # requires_grad=False: no weight gradient, no step; gradients still reach earlier layers
        param.requires_grad_(name not in frozen)
    return [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and all(f"{name}.{p}" in frozen for p, _ in module.named_parameters(recurse=False))
    ]


class Freezer:
    """Keeps a model's frozen parameters as a strategy wants them at each point of the run."""

    def __init__(self, model: nn.Module, strategy: str) -> None:
        self.model = model
        self.strategy = strategy
        self.frozen: set[str] | None = None
        self.norms: list[nn.Module] = []  # frozen batch norms: they keep their statistics
        frozen_parameters(model, strategy)  # a strategy the model cannot take fails at once

    def update(self, fraction: float) -> str | None:
        """Freeze for ``fraction`` (0-1) of the run and put the model in training mode; returns
        a note when a thaw stage began."""
        frozen = frozen_parameters(self.model, self.strategy, fraction)
        note = None
        if frozen != self.frozen:
            if self.frozen is not None:
                note = f"thaw: {len(self.frozen) - len(frozen)} more parameter tensors train"
            self.frozen = frozen
            self.norms = apply_freeze(self.model, frozen)
        self.model.train()
        for module in self.norms:
            module.eval()
        return note
