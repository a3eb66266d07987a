"""The multi-timescale EMA ``y_t = a * y_{t-1} + (1 - a) * x_t`` (per channel), in three forms side by side.

* ``reference.ema_naive``: the definition, a loop over time (tests);
* ``torch_impl.ema_chunked``: the CPU fast path (a (C, C) decay matmul per chunk and a log-depth
  scan over chunk ends; adjoint backward); ``torch_impl.decayed_cumsum``: the log-depth scan;
* ``triton_impl.ema_triton``: CUDA kernels, forward and backward (imported on first use: triton is
  optional, and ``TRITON_INTERPRET`` must be set before it is imported).
"""

from __future__ import annotations

from typing import Any

from workbench.kernels.ema.reference import ema_naive
from workbench.kernels.ema.torch_impl import decayed_cumsum, ema_chunked

__all__ = ["decayed_cumsum", "ema_chunked", "ema_naive", "ema_triton"]


def __getattr__(name: str) -> Any:
    if name == "ema_triton":
        from workbench.kernels.ema.triton_impl import ema_triton

        return ema_triton
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
