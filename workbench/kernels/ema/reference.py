"""The EMA op, reference form: ``y_t = a * y_{t-1} + (1 - a) * x_t`` per channel, ``y_{-1} = 0``.

The definition every other form of the op must reproduce (a plain loop over time, for tests and
clarity). Forms of this op: ``reference`` (here), ``torch_impl`` (the CPU fast path the mixer runs:
``ema_chunked``; and ``decayed_cumsum``, the log-depth scan behind ``InvertedMixer``'s ``ema_scan``),
``triton_impl`` (CUDA kernels, forward and backward).
"""

from __future__ import annotations

import torch


def ema_naive(x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """``y_t = decay * y_{t-1} + (1 - decay) * x_t`` along dim 1 of ``x`` (B, T, D); ``decay`` (D,).

    A plain loop over time: the definition, for tests (O(T) Python steps).
    """
    y = torch.zeros_like(x[:, 0])
    out = []
    for t in range(x.shape[1]):
        y = decay * y + (1 - decay) * x[:, t]
        out.append(y)
    return torch.stack(out, dim=1) if out else x.clone()
