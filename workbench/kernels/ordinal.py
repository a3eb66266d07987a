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


# The inverted mixer's uses: a code from counts, and a query rotated so that its dot product with a
# key's code depends only on the distance between the two ordinals.


def ordinal_code(ordinal: torch.Tensor, n_freq: int, span: int) -> torch.Tensor:
    """Rotary code [cos(w_f o), sin(w_f o)], w_f from 1 down to 1/span (geometric).

    The fastest frequency separates neighbouring ordinals, the slowest spans the M units.
    """
    exponents = torch.arange(n_freq, device=ordinal.device, dtype=torch.float64) / max(n_freq - 1, 1)
    freqs = float(span) ** -exponents
    # Angles, cos and sin in float64 (accurate for counts far beyond 2**24); only the code is cast.
    # Fast path (workbench.kernels.ordinal): the same values; backward recomputes the angles.
    return ordinal_code_recompute(ordinal, freqs)


def rotate_ordinal_query(z: torch.Tensor, pointer: torch.Tensor, n_freq: int, span: int) -> torch.Tensor:
    """Query such that <query, ordinal_code(o)> = sum_f zc_f cos(w_f (p - o)) + zs_f sin(w_f (p - o))."""
    return rotate_by_code(z, ordinal_code(pointer, n_freq, span), n_freq)


def rotate_by_code(z: torch.Tensor, code: torch.Tensor, n_freq: int) -> torch.Tensor:
    """``rotate_ordinal_query`` given the pointer's code ``ordinal_code(pointer, n_freq, span)``."""
    cos, sin = code.split(n_freq, dim=-1)  # split, not two slices: one node in an exported graph
    zc, zs = z.split(n_freq, dim=-1)
    return torch.cat([zc * cos + zs * sin, zc * sin - zs * cos], dim=-1)
