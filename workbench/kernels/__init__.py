"""Kernel ops, organised by op (flash-linear-attention's layout): each op's forms side by side.

Ops of the inverted mixer, a package each with ``reference`` (the definition: loops, for clarity
and tests), ``torch_impl`` (the PyTorch fast path the mixer runs on CPU) and ``triton_impl``
(CUDA kernels, forward and backward; imported on first use):

* ``ema``: the multi-timescale EMA;
* ``chunk_read``: the chunked top-k read (and ``chunk_tables``, which candidates each token may read).

``dispatch.get_impl(op, device, override)`` picks a backend, steered by ``$WORKBENCH_KERNELS``.
``ordinal`` (the rotary code of a count; a backward that recomputes instead of storing) is one
module with its two forms. The peers' ops are one module each with their forms (naive, chunked, step) side by side:
``short_conv`` (the block's shared front end), ``window_attention``, ``linear_attention``, and
whatever ``workbench/kernels/<op>.py`` a new mixer adds.

Importing this package does not import triton.
"""

from workbench.kernels.chunk_read import (
    chunk_candidates,
    chunk_read_gather,
    chunk_read_naive,
    chunk_read_torch,
    chunk_tables,
)
from workbench.kernels.dispatch import CHOICES, ENV_VAR, OPS, get_impl, resolve, triton_available
from workbench.kernels.ema import decayed_cumsum, ema_chunked, ema_naive

__all__ = [
    "CHOICES",
    "ENV_VAR",
    "OPS",
    "chunk_candidates",
    "chunk_read_gather",
    "chunk_read_naive",
    "chunk_read_torch",
    "chunk_tables",
    "decayed_cumsum",
    "ema_chunked",
    "ema_naive",
    "get_impl",
    "resolve",
    "triton_available",
]
