"""The Twin-VAE (Kenneweg, Stallmann & Hammer 2023): two VAEs, natural and synthetic, sharing
inner layers and a count regressor.

Layout of one twin::

    image 1x128x128 -> outer encoder[twin] -> shared encoder -> mu, logvar -> z
    z -> regressor -> count
    z -> expand -> shared decoder -> outer decoder[twin] -> reconstruction 1x128x128

With ``head="density"`` a shared density head reads the outer encoder's maps (62, 29 and 13
pixels) and predicts a 62x62 density map whose sum is the count (``core.density``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from napari_twinvae.core.config import IMAGE_SIZE, ModelConfig
from napari_twinvae.core.density import map_counts

DOMAINS = ("natural", "synthetic")
"""The two twins: real microscopy frames and generated images."""


class TwinOutput(NamedTuple):
    reconstruction: torch.Tensor | None  # (B, 1, 128, 128), None when decoding was skipped
    mu: torch.Tensor  # (B, latent_dim)
    logvar: torch.Tensor  # (B, latent_dim)
    count: torch.Tensor  # (B,) the regressor's estimate
    density: torch.Tensor | None = None  # (B, 62, 62) x AMPLITUDE; None without a density head


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask is one uniform draw per element compared with ``p``.

    The same keep probability (to float32 resolution) and scaling, about twice as fast as
    ``bernoulli_`` on the CPU, where dropout costs a sizeable share of a training step. Other
    devices use torch's fused kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        keep = (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * (keep * (1.0 / (1.0 - self.p)))


def _outer_encoder(cfg: ModelConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = 1
    for out in cfg.encoder_channels:  # 128 -> 62 -> 29 -> 13 -> 5 pixels
        layers += [
            nn.Conv2d(width, out, 5, stride=2),
            nn.LeakyReLU(cfg.leaky_slope),
            Dropout(cfg.dropout),
        ]
        width = out
    return nn.Sequential(*layers)


def _outer_decoder(cfg: ModelConfig) -> nn.Sequential:
    c = cfg.encoder_channels
    # (in, out, kernel, stride): 5 -> 13 -> 29 -> 61 -> 62 pixels, then 62 -> 128 below.
    steps = [(c[3], c[2], 5, 2), (c[2], c[1], 5, 2), (c[1], c[0], 5, 2), (c[0], c[0], 2, 1)]
    layers: list[nn.Module] = []
    for cin, cout, k, s in steps:
        layers += [
            nn.ConvTranspose2d(cin, cout, k, stride=s),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(cfg.leaky_slope),
        ]
    layers += [nn.ConvTranspose2d(c[0], 1, 6, stride=2), nn.Sigmoid()]
    return nn.Sequential(*layers)


def _one_level_up(h: torch.Tensor, side: int) -> torch.Tensor:
    """Resample an encoder map onto the grid of the level above it (``side`` cells), each cell
    where it lies in the image: cell c of a map sits on coordinate 2c + 2 of the finer grid (a
    5-pixel convolution of stride 2, no padding). Beyond the coarse map's reach its border cells
    are repeated."""
    where = (torch.arange(side, device=h.device, dtype=torch.float32) - 2.0) / 2.0
    u = (2.0 * where / (h.shape[-1] - 1) - 1.0).to(h.dtype)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij")[::-1], dim=-1)  # (x, y) order
    grid = grid.unsqueeze(0).expand(h.shape[0], -1, -1, -1)
    return F.grid_sample(h, grid, mode="bilinear", padding_mode="border", align_corners=True)


class DensityHead(nn.Module):
    """Shared by the twins: the outer encoder's 62-, 29- and 13-pixel maps -> a density map
    (B, 62, 62) whose sum over AMPLITUDE is the count. Top-down, as a small U-Net's decoder;
    each skip joins by addition after a 1x1 projection (a projection commutes with the
    resampling, so the coarse map is projected first and only 16 channels are resampled)."""

    DEPTH = 3
    """How many outer encoder convolutions the head reads (their 62-, 29- and 13-pixel maps)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.encoder_channels
        self.deep = nn.Conv2d(c[2], 32, 1)
        self.mid_skip = nn.Conv2d(c[1], 32, 1)
        # GroupNorm, not BatchNorm: batches of real crops are small
        self.mid = nn.Sequential(
            nn.GroupNorm(8, 32), nn.LeakyReLU(cfg.leaky_slope), nn.Conv2d(32, 32, 3, padding=1),
            nn.GroupNorm(8, 32), nn.LeakyReLU(cfg.leaky_slope), nn.Conv2d(32, 16, 1),
        )  # fmt: skip
        self.fine_skip = nn.Conv2d(c[0], 16, 1)
        self.fine = nn.Sequential(
            nn.GroupNorm(4, 16), nn.LeakyReLU(cfg.leaky_slope), nn.Conv2d(16, 1, 1)
        )
        # count = offset + scale * map sum: fitted on held-out labeled frames after training
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("offset", torch.zeros(()))

    def count(self, density: torch.Tensor) -> torch.Tensor:
        """Counts from this head's maps: the calibrated sum (in float32)."""
        return self.offset + self.scale * map_counts(density.float())

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = maps
        mid = self.mid_skip(f2) + _one_level_up(self.deep(f3), f2.shape[-1])
        fine = self.fine_skip(f1) + _one_level_up(self.mid(mid), f1.shape[-1])
        # a density is never negative; a ReLU lets the background be exactly empty, where a
        # linear output left small values on 3,844 cells that summed to most of a cell
        return torch.relu(self.fine(fine)).squeeze(1)


class TwinVAE(nn.Module):
    """Two variational autoencoders sharing their inner layers and a count regressor."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else ModelConfig()
        self.config = cfg
        c = cfg.encoder_channels
        self.encoders = nn.ModuleDict({d: _outer_encoder(cfg) for d in DOMAINS})
        self.shared_encoder = nn.Sequential(
            nn.Conv2d(c[3], cfg.shared_channels, 5, stride=2),  # 5x5 -> 1x1
            nn.LeakyReLU(cfg.leaky_slope),
            Dropout(cfg.dropout),
        )
        self.mu = nn.Sequential(
            nn.Linear(cfg.shared_channels, cfg.latent_dim), Dropout(cfg.dropout)
        )
        self.logvar = nn.Sequential(
            nn.Linear(cfg.shared_channels, cfg.latent_dim), Dropout(cfg.dropout)
        )
        self.expand = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.shared_channels), Dropout(cfg.dropout)
        )
        self.shared_decoder = nn.Sequential(
            nn.ConvTranspose2d(cfg.shared_channels, c[3], 5, stride=2),  # 1x1 -> 5x5
            nn.BatchNorm2d(c[3]),
            nn.LeakyReLU(cfg.leaky_slope),
        )
        self.decoders = nn.ModuleDict({d: _outer_decoder(cfg) for d in DOMAINS})
        widths = (cfg.latent_dim, *cfg.regressor_hidden)
        regressor: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            regressor += [nn.Linear(cin, cout), Dropout(cfg.dropout)]
        regressor.append(nn.Linear(widths[-1], 1))
        self.regressor = nn.Sequential(*regressor)
        self.density_head = DensityHead(cfg) if cfg.head == "density" else None
        self._init_weights()

    def _init_weights(self, root: nn.Module | None = None) -> None:
        for module in (root or self).modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.orthogonal_(module.weight)
                nn.init.zeros_(module.bias)

    def set_head(self, head: str) -> None:
        """Count with ``head`` from now on: a new, untrained density head (drawn from torch's
        global generator) or the regressor, which every model has and keeps training."""
        self.config = dataclasses.replace(self.config, head=head)
        if head == "density" and self.density_head is None:
            device = next(self.parameters()).device
            self.density_head = DensityHead(self.config).to(device)
            self._init_weights(self.density_head)
        elif head == "regressor":
            self.density_head = None

    # -- the parts -------------------------------------------------------------------------
    def encoder_maps(self, x: torch.Tensor, domain: str, depth: int = 4) -> list[torch.Tensor]:
        """The outer encoder's maps of one twin, 62, 29, 13 and 5 pixels, up to ``depth``."""
        _check_domain(domain)
        _check_images(x)
        layers, maps, h = self.encoders[domain], [], x
        for level in range(depth):
            conv, activation, dropout = layers[3 * level : 3 * level + 3]
            h = dropout(activation(conv(h)))
            maps.append(h)
        return maps

    def _features(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        return self._shared(self.encoder_maps(x, domain)[-1])

    def _shared(self, h: torch.Tensor) -> torch.Tensor:
        h = h.flatten(1)  # (B, 256 * 5 * 5)
        conv, activation, dropout = self.shared_encoder
        # The 5x5 -> 1x1 convolution is one matrix product, and much faster computed as one.
        return dropout(activation(F.linear(h, conv.weight.flatten(1), conv.bias)))

    def encode(self, x: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 1, 128, 128) in [0, 1] -> (mu, logvar), each (B, latent_dim)."""
        return self._latent(self._features(x, domain))

    def _latent(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _float32(h):
            h = h.float()
            return self.mu(h), self.logvar(h).clamp(max=self.config.logvar_max)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """A sample of z while training; mu itself in eval mode, so inference is deterministic."""
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        """Latent codes (B, latent_dim) -> images (B, 1, 128, 128) of the given twin."""
        _check_domain(domain)
        up, norm, activation = self.shared_decoder
        # The 1x1 -> 5x5 transposed convolution is one matrix product too.
        h = (self.expand(z) @ up.weight.flatten(1)).view(-1, up.out_channels, *up.kernel_size)
        h = h + up.bias.view(1, -1, 1, 1)
        return self.decoders[domain](activation(norm(h)))

    def regress(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, latent_dim) -> count estimates (B,)."""
        return self.regressor(z).squeeze(-1)

    def density(self, x: torch.Tensor, domain: str = "natural") -> torch.Tensor:
        """Density maps (B, 62, 62), times ``core.density.AMPLITUDE``; needs a density head."""
        if self.density_head is None:
            raise ValueError("this model counts with the regressor; it has no density head")
        return self.density_head(self.encoder_maps(x, domain, depth=DensityHead.DEPTH))

    # -- whole passes ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, domain: str, decode: bool = True) -> TwinOutput:
        """One twin's full pass. ``decode=False`` skips the decoders entirely (transfer mode)."""
        maps = self.encoder_maps(x, domain)
        mu, logvar = self._latent(self._shared(maps[-1]))
        z = self.reparameterize(mu, logvar)
        reconstruction = self.decode(z, domain) if decode else None
        with _float32(z):
            count = self.regress(z)
        density = (
            self.density_head(maps[: DensityHead.DEPTH]) if self.density_head is not None else None
        )
        return TwinOutput(reconstruction, mu, logvar, count, density)

    def count(self, x: torch.Tensor, domain: str = "natural") -> torch.Tensor:
        """The counting path, never a decoder: with a density head the calibrated sum of the
        density map; otherwise outer + shared encoder, mu and the regressor."""
        if self.density_head is not None:
            density = self.density(x, domain)
            with _float32(density):
                return self.density_head.count(density)
        return self.regress(self.mu(self._features(x, domain)))


def _float32(x: torch.Tensor):
    """No autocast for the latent code and the count: bfloat16 keeps about three significant
    digits, too coarse for a count like 25.3, and these layers cost a thousandth of the pass."""
    return torch.autocast(x.device.type, enabled=False)


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"expected images of shape (batch, 1, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(x.shape)}"
        )
