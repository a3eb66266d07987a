"""Kernels for the inverted mixer: a PyTorch reference, a fast path and Triton kernels per op.

Ops: ``ema`` (multi-timescale EMA) and ``chunk_read`` (the chunked top-k read). Layout:

* ``reference``: the definitions (``ema_naive``, ``chunk_read_naive``) and the PyTorch path the
  mixer runs (``chunk_read_torch``; the EMA's is ``workbench.mixers.inverted.ema_scan``);
* ``ema``, ``chunk_read``: Triton kernels, forward and backward, as ``torch.autograd.Function``;
* ``dispatch``: ``get_impl(op, device, override)``, steered by ``$WORKBENCH_KERNELS``.

Importing this package does not import triton; the kernel modules load on first use.
"""

from workbench.kernels.dispatch import CHOICES, ENV_VAR, OPS, get_impl, resolve, triton_available
from workbench.kernels.reference import (
    chunk_read_gather,
    chunk_read_naive,
    chunk_read_torch,
    chunk_tables,
    ema_chunked,
    ema_naive,
)

__all__ = [
    "CHOICES",
    "ENV_VAR",
    "OPS",
    "chunk_read_gather",
    "chunk_read_naive",
    "chunk_read_torch",
    "chunk_tables",
    "ema_chunked",
    "ema_naive",
    "get_impl",
    "resolve",
    "triton_available",
]
