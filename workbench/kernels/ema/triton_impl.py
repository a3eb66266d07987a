"""Triton kernels for the multi-timescale EMA ``y_t = a * y_{t-1} + (1 - a) * x_t`` (per channel).

Forward: one program per (batch, channel block) walks the sequence in order (a sequential
scan over T on the device; every step is a vector op over ``BLOCK_D`` channels). Backward:
the reverse scan ``g_t = dy_t + a * g_{t+1}`` gives ``dx_t = (1 - a) * g_t`` and, with the
saved outputs, each program's partial ``da = sum_t g_t * (y_{t-1} - x_t)``; the partials
(B, D) are summed over the batch outside the kernel (deterministic, no atomics).

Accumulation is in float32 (float64 when x or the decay is float64); the decay is read in that
precision (0.999 would round to 1 in bfloat16); the output dtype is ``promote_types(x, decay)``,
as for ``ema_scan``.
Reference: ``workbench.kernels.ema.reference.ema_naive``; CPU fast path: ``workbench.kernels.ema.torch_impl.ema_chunked``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _ema_fwd_kernel(x_ptr, a_ptr, y_ptr, T, D, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    a = tl.load(a_ptr + cols, mask=cmask, other=0.0).to(ACC)
    base = pid_b.to(tl.int64) * T * D
    y = tl.zeros([BLOCK_D], dtype=ACC)
    for t in range(T):
        offs = base + t * D + cols
        x = tl.load(x_ptr + offs, mask=cmask, other=0.0).to(ACC)
        y = a * y + (1 - a) * x
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _ema_bwd_kernel(x_ptr, a_ptr, y_ptr, dy_ptr, dx_ptr, da_ptr, T, D, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    a = tl.load(a_ptr + cols, mask=cmask, other=0.0).to(ACC)
    base = pid_b.to(tl.int64) * T * D
    g = tl.zeros([BLOCK_D], dtype=ACC)
    da = tl.zeros([BLOCK_D], dtype=ACC)
    for i in range(T):
        t = T - 1 - i
        offs = base + t * D + cols
        g = tl.load(dy_ptr + offs, mask=cmask, other=0.0).to(ACC) + a * g
        tl.store(dx_ptr + offs, ((1 - a) * g).to(dx_ptr.dtype.element_ty), mask=cmask)
        x = tl.load(x_ptr + offs, mask=cmask, other=0.0).to(ACC)
        has_prev = cmask & ((cols * 0 + t) > 0)  # y_{-1} = 0 (vector mask: the interpreter needs one)
        y_prev = tl.load(y_ptr + offs - D, mask=has_prev, other=0.0).to(ACC)
        da += g * (y_prev - x)
    tl.store(da_ptr + pid_b * D + cols, da, mask=cmask)


def _block_d(d: int) -> int:
    return min(128, triton.next_power_of_2(max(d, 1)))


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _acc_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class EmaFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        out_dtype = torch.promote_types(x.dtype, decay.dtype)  # as ema_scan's arithmetic would give
        x_c = x.contiguous()
        a = decay.to(_acc_torch(out_dtype)).contiguous()  # never round the decay to half precision
        y = torch.empty(b, t, d, device=x.device, dtype=out_dtype)
        block = _block_d(d)
        if b * t * d:
            _ema_fwd_kernel[(b, triton.cdiv(d, block))](x_c, a, y, t, d, ACC=_acc(out_dtype), BLOCK_D=block)
        ctx.save_for_backward(x_c, a, y)
        ctx.dtypes = (x.dtype, decay.dtype)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, a, y = ctx.saved_tensors
        x_dtype, decay_dtype = ctx.dtypes
        b, t, d = x.shape
        dx = torch.empty_like(x)
        da_part = torch.zeros(b, d, device=x.device, dtype=a.dtype)  # per-sequence partials, summed below
        block = _block_d(d)
        if b * t * d:
            _ema_bwd_kernel[(b, triton.cdiv(d, block))](
                x, a, y, dy.contiguous(), dx, da_part, t, d, ACC=_acc(y.dtype), BLOCK_D=block
            )
        da = da_part.sum(0).to(decay_dtype) if ctx.needs_input_grad[1] else None
        return (dx if ctx.needs_input_grad[0] else None), da


def ema_triton(x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """EMA along dim 1 of ``x`` (B, T, D) with per-channel ``decay`` (D,); differentiable in both.

    Same contract as ``ema_scan``/``ema_naive``. Needs CUDA tensors, or ``TRITON_INTERPRET=1``
    set before this module is imported (CPU interpreter, for tests).
    """
    if x.dim() != 3 or decay.shape != (x.shape[-1],):
        raise ValueError(
            f"ema_triton expects x (B, T, D) and decay (D,), got {tuple(x.shape)} and {tuple(decay.shape)}"
        )
    return EmaFunction.apply(x, decay)
