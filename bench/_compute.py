"""The machine's compute limit, measured in the same run as the thing it is compared with.

These machines are shared and noisy, so every benchmark reports a ratio: measured images/s over
the images/s that the machine's own matrix-multiply speed would allow, in the precision the
measured thing computes in (float32, or bfloat16 where training autocasts to it).
"""

from __future__ import annotations

import time

import torch

# Multiply-adds per 128x128 image of the authors' network (docs/architecture.md, "The network").
ENCODER_MACS = 104.5e6
DECODER_MACS = 121.2e6
REGRESSOR_MACS = 0.1e6
COUNT_MACS = 104.7e6  # outer + shared encoder, mu, regressor
# A training step costs about 3x its forward pass (forward, and backward for inputs and weights).
TRAIN_FULL_FLOPS = 3 * 2 * (ENCODER_MACS + DECODER_MACS + REGRESSOR_MACS)
TRAIN_NO_DECODER_FLOPS = 3 * 2 * (ENCODER_MACS + REGRESSOR_MACS)
COUNT_FLOPS = 2 * COUNT_MACS


def matmul_flops(
    size: int = 1024,
    seconds: float = 2.0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> float:
    """Best GEMM speed in FLOP/s on ``device`` (the current torch threads on the CPU), over
    about ``seconds``. A GPU needs a larger ``size`` to come near its peak."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    cuda = torch.device(device).type == "cuda"

    def wait() -> None:  # GPU kernels run asynchronously: time them to their end
        if cuda:
            torch.cuda.synchronize()

    torch.mm(a, b)  # warm up
    wait()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        wait()
        elapsed = time.perf_counter() - start
        best = max(best, 4 * 2 * size**3 / elapsed)
    return best
