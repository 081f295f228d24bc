"""The fast counting paths and the orientations a count averages.

:class:`CountingPath` and :class:`DensityPath` are the counting part of a :class:`TwinVAE`
rearranged for speed, with the same weights and outputs; :func:`averaged_count` and
:func:`spread_count` average their estimates over turns and flips of each chamber crop, the
latter with the signals of the count's uncertainty (core.uncertainty).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from napari_twinvae.core.density import find_peaks, peak_counts
from napari_twinvae.core.model import DOMAINS, DensityHead, TwinVAE
from napari_twinvae.core.precision import device_autocast_dtype
from napari_twinvae.core.uncertainty import LATENT_SAMPLES


class CountingPath(nn.Module):
    """``model.count(x, domain)`` rearranged for speed, with the same weights and outputs.

    Measured on a 2-core CPU (bench/bench_count.py, best of several runs, batch 32):
    ``TwinVAE.count`` ~1,300 images/s, with channels_last ~1,600, this module ~1,900.

    - channels_last (NHWC) lets oneDNN run its fastest direct convolutions; they reach the
      machine's float32 peak on the three big 5x5 convolutions.
    - The shared 5x5 convolution sees a 5x5 input and gives 1x1, so it *is* a matrix product:
      run as a Linear on the flattened input (as a convolution in NHWC it was the slowest layer,
      ~20 GFLOP/s). Its weight is permuted once to NHWC order, so the flatten is a free view.
    - LeakyReLU in place; Dropout dropped (identity in eval mode).
    Tried and not kept: TorchScript freeze + optimize_for_inference (slower), oneDNN's fused
    convolution + LeakyReLU (no gain), ``torch.compile`` with freezing (same speed after ~25 s of
    compiling, and it needs a C++ compiler at run time).

        ``dtype``: what the convolutions after the first compute in (:func:`counting_dtype`).

    The module holds copies of the weights (the model's own layout is untouched), so build it
    from the model as it is when counting starts.
    """

    def __init__(
        self, model: TwinVAE, domain: str = "natural", dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.convs = _encoder_convs(model, domain, dtype=dtype)
        self.logvar = _linear_copy(model.logvar[0])  # for the latent spread only
        self.logvar_max = float(model.config.logvar_max)
        shared = model.shared_encoder[0]
        w = shared.weight.detach()  # (512, 256, 5, 5) -> (512, 5*5*256), NHWC order
        self.register_buffer("shared_weight", w.permute(0, 2, 3, 1).reshape(w.shape[0], -1).clone())
        self.register_buffer("shared_bias", shared.bias.detach().clone())
        linears = [model.mu[0], *[m for m in model.regressor if isinstance(m, nn.Linear)]]
        self.linears = nn.ModuleList(_linear_copy(layer) for layer in linears)
        self.slope = float(model.config.leaky_slope)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 128, 128) in [0, 1] -> the shared encoder's output (B, 512)."""
        x = _encoded(self.convs, x, self.slope)[-1].float()
        h = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # a view: NHWC memory is (B, 5, 5, 256)
        return F.leaky_relu_(F.linear(h, self.shared_weight, self.shared_bias), self.slope)

    def regress(self, h: torch.Tensor) -> torch.Tensor:
        """Shared features (..., 512) -> count estimates (...) through mu and the regressor."""
        for layer in self.linears:  # mu, then the regressor (no activations between them)
            h = layer(h)
        return h.squeeze(-1)

    def latent_spread(self, h: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The standard deviation (B,) of the regressor's estimate over latent codes drawn from
        the posterior N(mu, exp(logvar)) of shared features ``h`` (B, 512): ``mu + noise * std``
        for each row of ``noise`` (samples, latent_dim), the same rows for every image, so that
        an image's number does not depend on the batch it came in."""
        mu = self.linears[0](h)
        std = torch.exp(0.5 * self.logvar(h).clamp(max=self.logvar_max))
        z = mu + noise.to(mu)[:, None, :] * std
        for layer in self.linears[1:]:
            z = layer(z)
        return z.squeeze(-1).std(dim=0, unbiased=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 128, 128) in [0, 1] -> count estimates (B,)."""
        return self.regress(self.features(x))


class DensityPath(nn.Module):
    """The counting path of a model with a density head: the first three encoder convolutions
    (channels_last copies, as in :class:`CountingPath`) and the head; the count is the
    calibrated sum of the map, as ``model.count``. :meth:`maps` gives the maps themselves.
    The head computes in float32 whatever ``dtype`` the convolutions take (:class:`CountingPath`):
    its normalisations and resampling gain nothing from bfloat16 on a CPU. Tried and not kept
    for the head: NCHW instead of channels_last (about half as fast), its upsampled maps turned
    channels_last before each skip is added (no gain)."""

    def __init__(
        self, model: TwinVAE, domain: str = "natural", dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        if model.density_head is None:
            raise ValueError("the model counts with the regressor; it has no density head")
        self.convs = _encoder_convs(model, domain, depth=DensityHead.DEPTH, dtype=dtype)
        self.head = copy.deepcopy(model.density_head)
        for module in self.head.modules():
            if isinstance(module, nn.LeakyReLU):
                # in place: a batch of four views counts about 15 % faster on a 2-core CPU
                module.inplace = True
        self.slope = float(model.config.leaky_slope)
        self.requires_grad_(False)
        self.eval()

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 128, 128) in [0, 1] -> density maps (B, 62, 62) x AMPLITUDE."""
        return self.head([m.float() for m in _encoded(self.convs, x, self.slope)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 128, 128) in [0, 1] -> count estimates (B,)."""
        return self.head.count(self.maps(x))


def counting_path(
    model: TwinVAE, domain: str = "natural", dtype: torch.dtype = torch.float32
) -> nn.Module:
    """The fast counting path of ``model``: its density head's or its regressor's."""
    if model.density_head is not None:
        return DensityPath(model, domain, dtype)
    return CountingPath(model, domain, dtype)


def counting_dtype(device: torch.device, mixed_precision: bool = True) -> torch.dtype:
    """What a count's convolutions after the first compute in on ``device``: the dtype training
    autocasts to there (core.precision: bfloat16 on CPUs that compute it natively), else float32.

    On a 2-core CPU with AVX512-BF16 bfloat16 runs the regressor's path 1.7x as fast and the
    density head's 1.6x; the counts move by 0.002-0.006 cells on average and the exact shares of
    the synthetic test sets and sample series stay within 0.4 points (docs/counting.md, "Speed").
    The first convolution stays float32: it reads the image itself, and in bfloat16 it doubled
    the counts' deviation for little speed."""
    return device_autocast_dtype(device, mixed_precision) or torch.float32


def _linear_copy(layer: nn.Linear) -> nn.Linear:
    twin = nn.Linear(layer.in_features, layer.out_features, device=layer.weight.device)
    twin.load_state_dict(layer.state_dict())
    return twin


def _encoder_convs(
    model: TwinVAE, domain: str, depth: int = 4, dtype: torch.dtype = torch.float32
) -> nn.ModuleList:
    """channels_last copies of the first ``depth`` convolutions of a twin's outer encoder, all
    but the first in ``dtype``."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    convs = nn.ModuleList()
    for conv in [m for m in model.encoders[domain] if isinstance(m, nn.Conv2d)][:depth]:
        twin = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            device=conv.weight.device,
        )
        twin.load_state_dict(conv.state_dict())
        twin.to(memory_format=torch.channels_last)
        convs.append(twin.to(dtype) if convs else twin)
    return convs


def _encoded(convs: nn.ModuleList, x: torch.Tensor, slope: float) -> list[torch.Tensor]:
    """The maps of ``convs`` (from :func:`_encoder_convs`) for images ``x``, channels_last; each
    convolution takes its input in its own dtype."""
    x = x.contiguous(memory_format=torch.channels_last)
    maps = []
    for conv in convs:
        x = F.leaky_relu_(conv(x.to(conv.weight.dtype)), slope)
        maps.append(x)
    return maps


ORIENTATIONS = (
    (False, ()),  # as it is
    (False, (-2, -1)),  # a half turn
    (True, (-2,)),  # a quarter turn (transposed, then upside down)
    (True, (-1,)),  # three quarters
    (False, (-1,)),  # mirrored left-right
    (False, (-2,)),  # upside down
    (True, ()),  # transposed
    (True, (-2, -1)),  # mirrored across the other diagonal
)
"""The eight orientations of a square chamber, in the order a count takes them: 2 views are a
half turn apart, 4 are the four turns, 8 add the mirror images. On the default model the four
turns count as well as all eight (docs/counting.md, "Orientations") for half the passes."""


def orientations(images: torch.Tensor, views: int) -> Iterator[torch.Tensor]:
    """The first ``views`` :data:`ORIENTATIONS` of images (B, 1, H, W), the images as they are
    first."""
    for transpose, dims in ORIENTATIONS[:views]:
        base = images.transpose(-2, -1) if transpose else images
        yield base.flip(dims) if dims else base


def averaged_count(path: nn.Module, images: torch.Tensor, views: int) -> torch.Tensor:
    """The mean of ``path``'s estimates over the first ``views`` orientations of each image."""
    total = None
    for oriented in orientations(images, views):
        estimate = path(oriented).float()
        total = estimate if total is None else total + estimate
    return total / views


def latent_noise(path: nn.Module, samples: int = LATENT_SAMPLES, seed: int = 0) -> torch.Tensor:
    """Seeded standard normal draws (samples, latent_dim) for :meth:`CountingPath.latent_spread`
    (an empty tensor for a path without a latent code)."""
    if not isinstance(path, CountingPath):
        return torch.zeros(0)
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(samples, path.linears[0].out_features, generator=generator)


def spread_count(
    path: nn.Module, images: torch.Tensor, views: int, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`averaged_count` (the same numbers) and, per image, the signals of its uncertainty
    (B, 3): the spread of the estimate over the views, over latent codes (the regressor's path,
    first view; ``noise`` from :func:`latent_noise`) and |peaks - sum| of the density map
    (density head; first view). Costs the views' passes plus a few small matrix products."""
    # NaN: a signal this path cannot give (latent for a density head, peaks for the regressor)
    signals = torch.full((images.shape[0], 3), float("nan"), device=images.device)
    total, squares = None, None
    for i, oriented in enumerate(orientations(images, views)):
        if i == 0 and isinstance(path, CountingPath):
            h = path.features(oriented)
            estimate = path.regress(h).float()
            if noise is None:
                noise = latent_noise(path)
            signals[:, 1] = path.latent_spread(h, noise).float()
        elif i == 0 and isinstance(path, DensityPath):
            maps = path.maps(oriented)
            estimate = path.head.count(maps).float()
            peaks = peak_counts(find_peaks(maps), images.shape[0])
            signals[:, 2] = (torch.from_numpy(peaks).to(estimate) - estimate).abs()
        else:
            estimate = path(oriented).float()
        total = estimate if total is None else total + estimate
        squares = estimate**2 if squares is None else squares + estimate**2
    mean = total / views
    signals[:, 0] = (squares / views - mean**2).clamp_min(0.0).sqrt()
    return mean, signals
