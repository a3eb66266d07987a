"""Choose an implementation of a kernel op: ``get_impl(op, device, override)``.

Backends per op, one module each under ``workbench/kernels/<op>/`` (every callable has the op's
contract, stated in the op's ``reference.py``):

============  ====================================  =====================================  ======================================
op            naive (tests, clarity)                torch (CPU fast path)                  triton (CUDA)
============  ====================================  =====================================  ======================================
ema           ``ema.reference.ema_naive``           ``ema.torch_impl.ema_chunked``         ``ema.triton_impl.ema_triton``
chunk_read    ``chunk_read.reference.               ``chunk_read.torch_impl.               ``chunk_read.triton_impl.
              chunk_read_naive``                    chunk_read_torch``                     chunk_read_triton``
rest_scan     ``rest_scan.reference.                ``rest_scan.numpy_impl.                ``rest_scan.triton_impl.
              rest_scan_naive``                     rest_scan_numpy`` (the same loop in    rest_scan_triton``
                                                    NumPy: no chunked form exists)
============  ====================================  =====================================  ======================================

Choice: the ``override`` argument if given, else the environment variable ``WORKBENCH_KERNELS``,
else ``"auto"``. Values: ``auto`` (triton on CUDA when triton imports, torch otherwise), ``torch``,
``triton``, ``naive``. ``auto`` falls back to torch for a ``chunk_read`` with ``k > MAX_K``;
an explicit ``triton`` does not (the kernel raises). ``triton`` on a CPU device is allowed only under
the interpreter (``TRITON_INTERPRET=1`` set before the kernel modules are imported; tests).
Kernel modules (and triton) are imported lazily, on first use of the triton backend.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable

import torch

ENV_VAR = "WORKBENCH_KERNELS"
CHOICES = ("auto", "torch", "triton", "naive")
OPS = ("ema", "chunk_read", "rest_scan")


@functools.cache
def triton_available() -> bool:
    """True when triton imports (it may be absent, or broken on a CPU-only machine)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # pragma: no cover - depends on the installation
        return False
    return True


def interpreting() -> bool:
    """True when Triton kernels run on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def resolve(device: torch.device | str, override: str | None = None) -> str:
    """The backend ("torch", "triton" or "naive") for tensors on ``device``."""
    device = torch.device(device)
    choice = (override or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if choice not in CHOICES:
        source = "override" if override else ENV_VAR
        raise ValueError(f"{source}={choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if choice == "triton":
        if not triton_available():
            raise RuntimeError("kernel backend 'triton' requested but triton cannot be imported")
        if device.type != "cuda" and not interpreting():
            raise RuntimeError(f"triton kernels need CUDA tensors (got {device}) or TRITON_INTERPRET=1")
    return choice


def _ema(backend: str) -> Callable:
    if backend == "naive":
        from workbench.kernels.ema.reference import ema_naive

        return ema_naive
    if backend == "torch":
        from workbench.kernels.ema.torch_impl import ema_chunked

        return ema_chunked
    from workbench.kernels.ema.triton_impl import ema_triton

    return ema_triton


def _rest_scan(backend: str, device: torch.device) -> Callable:
    if backend == "torch" and device.type == "cpu":
        from workbench.kernels.rest_scan.numpy_impl import rest_scan_numpy

        return rest_scan_numpy
    if backend in ("naive", "torch"):  # "torch" off the CPU (an explicit choice on CUDA): the plain loop
        from workbench.kernels.rest_scan.reference import rest_scan_naive

        return rest_scan_naive
    from workbench.kernels.rest_scan.triton_impl import rest_scan_triton

    return rest_scan_triton


def _chunk_read(backend: str, strict: bool) -> Callable:
    from workbench.kernels.chunk_read import reference, torch_impl

    if backend == "naive":
        return reference.chunk_read_naive
    if backend == "torch":
        return torch_impl.chunk_read_torch
    from workbench.kernels.chunk_read.triton_impl import MAX_K, chunk_read_triton

    if strict:
        return chunk_read_triton

    @functools.wraps(chunk_read_triton)
    def chunk_read_auto(q, state_key, chunk_key, state_value, chunk_value, valid, k, need_weights=False):
        fn = chunk_read_triton if min(k, valid.shape[-1]) <= MAX_K else torch_impl.chunk_read_torch
        return fn(q, state_key, chunk_key, state_value, chunk_value, valid, k, need_weights)

    return chunk_read_auto


def get_impl(op: str, device: torch.device | str, override: str | None = None) -> Callable:
    """The implementation of ``op`` ("ema", "chunk_read" or "rest_scan") for tensors on ``device``.

    ``override`` (one of ``CHOICES``, or None) wins over ``$WORKBENCH_KERNELS``, which wins over auto.
    """
    if op not in OPS:
        raise ValueError(f"unknown kernel op {op!r}: expected one of {', '.join(OPS)}")
    choice = (override or os.environ.get(ENV_VAR) or "auto").strip().lower()
    backend = resolve(device, override)
    if op == "ema":
        return _ema(backend)
    if op == "rest_scan":
        return _rest_scan(backend, torch.device(device))
    return _chunk_read(backend, strict=choice == "triton")
