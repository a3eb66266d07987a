"""The rest scan: rest from the writes units actually take, ``load_t = keep load_{t-1} + (1 - keep) taken_t``.

The seeking mixer's ``rest_on_wins`` option. The winner of token t depends on the load before it, so
the recurrence is not linear and has no chunked form; it is cheap (M numbers per row, no matmul).

* ``reference.rest_step`` / ``reference.rest_scan_naive``: one token, and the loop over tokens (the
  definition, and the recurrent ``step`` of the mixer);
* ``numpy_impl.rest_scan_numpy``: the CPU path, the same loop with NumPy's per-call cost, not torch's;
* ``triton_impl.rest_scan_triton``: CUDA, one program per row walking the sequence with the load in
  registers (imported on first use: triton is optional).
"""

from __future__ import annotations

from typing import Any

from workbench.kernels.rest_scan.numpy_impl import rest_scan_numpy
from workbench.kernels.rest_scan.reference import rest_scan_naive, rest_step

__all__ = ["rest_scan_naive", "rest_scan_numpy", "rest_scan_triton", "rest_step"]


def __getattr__(name: str) -> Any:
    if name == "rest_scan_triton":
        from workbench.kernels.rest_scan.triton_impl import rest_scan_triton

        return rest_scan_triton
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
