"""The uncertainty calibration a training run fits for the model it keeps.

The shipped calibration (:func:`core.uncertainty.shipped_calibration`, one per head) was fitted
for the default model on synthetic images. A transferred model on the user's frames is wrong more or
less often than that: after a transfer to `usiigaci_phc` the shipped fit says 0.1-0.5 where
nine counts in ten are wrong. So a run that held labeled frames out counts them with the kept
model, as ``count`` would (the natural twin, every orientation, the same latent draws), and
rescales the shipped fit to them (:func:`core.uncertainty.rescaled`: two numbers, so that the
ten or more frames a run holds out can fit them). The result goes into the checkpoint's summary
(``"uncertainty"``), where ``count`` finds it.

Synthetic images were tried as a second source and dropped: after a transfer to the yeast, the
fit on 512 images of the run's own generator predicted 75-95 % wrong on real crops of which
25-50 % were wrong (either twin reading them), worse than the shipped fit.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_twinvae.core.count_paths import (
    counting_dtype,
    counting_path,
    latent_noise,
    spread_count,
)
from napari_twinvae.core.metrics import round_counts
from napari_twinvae.core.uncertainty import Calibration, features, rescaled, shipped_calibration


def fit_run_calibration(
    model, frames: np.ndarray, counts: np.ndarray, views: int, batch_size: int = 64
) -> Calibration | None:
    """The shipped calibration rescaled to ``model`` (a TwinVAE on its device) on held-out
    natural crops ``frames`` (normalised, (N, 128, 128)) and their ``counts``; None without
    frames."""
    frames = np.asarray(frames, np.float32)
    counts = np.asarray(counts).astype(np.int64)
    if len(counts) == 0:
        return None
    device = next(model.parameters()).device
    # the precision of a default count, whose estimates the calibration will read
    path = counting_path(model, "natural", counting_dtype(device)).to(device)
    noise = latent_noise(path)
    estimates, signals = [], []
    with torch.inference_mode():  # the path holds its own copies of the weights, in eval mode
        for i in range(0, len(frames), batch_size):
            chunk = torch.from_numpy(frames[i : i + batch_size]).unsqueeze(1).to(device)
            mean, spread = spread_count(path, chunk, views, noise)
            estimates.append(mean.cpu().numpy())
            signals.append(spread.cpu().numpy())
    estimates = np.concatenate(estimates)
    wrong = round_counts(estimates) != counts
    source = (
        f"the shipped calibration rescaled by the training run to {len(counts)} held-out frames"
    )
    shipped = shipped_calibration(model.density_head is not None)
    return rescaled(shipped, features(estimates, np.concatenate(signals)), wrong, source)
