"""The chunked top-k read of the inverted mixer, in three forms side by side.

* ``reference``: ``chunk_read_naive`` (the definition, one query row at a time) and
  ``chunk_candidates`` (the op's inputs from the naive occupant table);
* ``torch_impl``: the CPU fast path (``chunk_tables``, ``chunk_read_torch``, ``chunk_read_gather``);
* ``triton_impl``: ``chunk_read_triton``, CUDA kernels forward and backward (imported on first
  use: triton is optional, and ``TRITON_INTERPRET`` must be set before it is imported).

Contract and semantics: ``workbench.kernels.chunk_read.reference``.
"""

from __future__ import annotations

from typing import Any

from workbench.kernels.chunk_read.reference import MASK_VALUE, chunk_candidates, chunk_read_naive
from workbench.kernels.chunk_read.torch_impl import chunk_read_gather, chunk_read_torch, chunk_tables

__all__ = [
    "MASK_VALUE",
    "chunk_candidates",
    "chunk_read_gather",
    "chunk_read_naive",
    "chunk_read_torch",
    "chunk_read_triton",
    "chunk_tables",
]


def __getattr__(name: str) -> Any:
    if name in ("chunk_read_triton", "MAX_K"):
        from workbench.kernels.chunk_read import triton_impl

        return getattr(triton_impl, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
