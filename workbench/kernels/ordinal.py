"""The rotary code of an ordinal, ``[cos(w_f o), sin(w_f o)]``: two forms of one op.

* ``ordinal_code_naive``: the definition, angles, cosines and sines in float64, by autograd;
* ``ordinal_code_recompute``: the same values; its backward recomputes the angles from the ordinals
  instead of keeping the float64 (..., F) angles alive from forward to backward (8 MiB per 65,536
  tokens at F = 16, for each of the inverted mixer's two codes: its keys' write counts and its
  queries' read pointers).

``ordinal`` (...) holds counts (float, any precision; the angles are formed in float64, accurate far
beyond 2**24), ``freqs`` (F,) float64; the code is (..., 2F) float32.
"""

from __future__ import annotations

import torch


def ordinal_code_naive(ordinal: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    angles = ordinal.to(torch.float64)[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(torch.float32)


class _OrdinalCode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ordinal: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ordinal, freqs)
        return ordinal_code_naive(ordinal, freqs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ordinal, freqs = ctx.saved_tensors
        angles = ordinal.to(torch.float64)[..., None] * freqs
        f = freqs.shape[0]
        grad = grad.to(torch.float64)
        d_angles = grad[..., f:] * angles.cos() - grad[..., :f] * angles.sin()
        grad_freqs = (d_angles * ordinal.to(torch.float64)[..., None]).flatten(0, -2).sum(0) \
            if ctx.needs_input_grad[1] else None
        return (d_angles * freqs).sum(-1).to(ordinal.dtype), grad_freqs


def ordinal_code_recompute(ordinal: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """``ordinal_code_naive``'s values and gradients; backward recomputes the angles (module docstring)."""
    return _OrdinalCode.apply(ordinal, freqs)
