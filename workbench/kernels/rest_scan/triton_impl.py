"""Triton kernel for the rest scan (``reference.py`` states the op): one program per row walks the
sequence with the row's load (M numbers) in registers; the argmax's ties go to the lowest index, as
``torch.argmax``. Accumulation in float32 (float64 for float64 inputs). No backward: the op has no
gradient. Reference: ``workbench.kernels.rest_scan.reference.rest_scan_naive``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rest_scan_kernel(logits_ptr, sal_ptr, sink_ptr, rest_ptr, win_ptr, load_ptr, strength_ptr, T, M, keep,
                      HAS_SINK: tl.constexpr, HARD: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_M)
    cmask = cols < M
    base = row.to(tl.int64) * T * M
    load = tl.load(load_ptr + row * M + cols, mask=cmask, other=0.0).to(ACC)
    strength = tl.load(strength_ptr + row).to(ACC)
    sink = 0.0
    if HAS_SINK:
        sink = tl.load(sink_ptr + row).to(ACC)
    for t in range(T):
        offs = base + t * M + cols
        rest = -strength * load
        chosen = tl.load(logits_ptr + offs, mask=cmask, other=0.0).to(ACC) + rest
        chosen = tl.where(cmask, chosen, -float("inf"))
        s = tl.load(sal_ptr + row.to(tl.int64) * T + t).to(ACC)
        top = tl.max(chosen, 0)
        if HARD:
            first = tl.min(tl.where(chosen == top, cols, BLOCK_M), 0)  # the lowest index among ties
            if HAS_SINK:
                first = tl.where(sink > top, M, first)  # the sink (index M) wins only when strictly ahead
            taken = tl.where(cols == first, s, 0.0)
            tl.store(win_ptr + row.to(tl.int64) * T + t, first.to(tl.int64))
        else:
            if HAS_SINK:
                top = tl.maximum(top, sink)
            e = tl.exp(chosen - top)
            total = tl.sum(e, 0)
            if HAS_SINK:
                total += tl.exp(sink - top)
            taken = s * e / total
        tl.store(rest_ptr + offs, rest.to(rest_ptr.dtype.element_ty), mask=cmask)
        load = keep * load + (1 - keep) * taken
    tl.store(load_ptr + row * M + cols, load.to(load_ptr.dtype.element_ty), mask=cmask)


@torch.no_grad()
def rest_scan_triton(logits: torch.Tensor, salience: torch.Tensor, sink: torch.Tensor | None,
                     keep: torch.Tensor | float, strength: float | torch.Tensor, hard: bool,
                     load: torch.Tensor | None = None):
    """As ``rest_scan_naive``: logits (R, T, M), salience (R, T), sink (R,) or None, strength a number or (R,)."""
    r, t, m = logits.shape
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logits_c, sal = logits.contiguous(), salience.to(logits.dtype).contiguous()
    sink_c = sink.to(acc).contiguous() if sink is not None else logits_c  # a placeholder pointer
    rest = torch.empty_like(logits_c)
    strengths = torch.as_tensor(strength, dtype=acc, device=logits.device).expand(r).contiguous()
    winner = torch.zeros(r, t, device=logits.device, dtype=torch.long)
    load = (torch.zeros(r, m, device=logits.device, dtype=acc) if load is None else load.to(acc).clone()).contiguous()
    if r and t:
        _rest_scan_kernel[(r,)](logits_c, sal, sink_c, rest, winner, load, strengths, t, m, float(keep),
                                HAS_SINK=sink is not None, HARD=hard,
                                ACC=tl.float64 if acc == torch.float64 else tl.float32,
                                BLOCK_M=triton.next_power_of_2(max(m, 1)))
    return rest, winner if hard else None, load.to(logits.dtype)
