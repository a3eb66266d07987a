"""Causal normalized linear attention, and Based's 2nd-order Taylor feature map.

Linear attention (Katharopoulos et al. 2020, arXiv 2006.16236) with a feature map phi, per head::

    S_t = S_{t-1} + phi(k_t) v_t^T        (d_phi x D)
    z_t = z_{t-1} + phi(k_t)              (d_phi)
    y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)

Based (Arora et al. 2024, "Simple linear attention language models balance the recall-throughput
tradeoff", arXiv 2402.18668) takes phi = the 2nd-order Taylor expansion of exp, so that
``phi(q).phi(k) = 1 + q.k + (q.k)^2 / 2`` (q, k already scaled by d_feat ** -0.25 each, as the
paper's TaylorExp divides x by d ** 0.25 and x x^T by sqrt(d)). ``taylor_feature_map`` builds it
with the d(d+1)/2 distinct products of the symmetric x x^T instead of all d^2: diagonal terms
x_i^2 / sqrt(2), off-diagonal terms x_i x_j (i < j) once, which has the same inner products
(sum_i x_i^2 y_i^2 / 2 + sum_{i<j} x_i x_j y_i y_j = (x.y)^2 / 2) with d_phi = 1 + d + d(d+1)/2
(153 for d = 16, against the paper's 273). The kernel is positive (1 + s + s^2/2 > 0), so the
normalizer never vanishes and ``eps`` only guards the empty sum.

The ops take queries and keys (B, H, T, f), values (B, H, T, D) -> (B, H, T, D), and a
``feature_map``: ``"taylor"`` (Based; the ops apply phi) or ``"identity"`` (q, k are already
features, e.g. elu + 1):

* ``linear_attention_naive``: the recurrence above, a loop over t (tests and clarity only);
* ``linear_attention_chunked``: chunks of C tokens. The normalizer rides along as an extra value
  column of ones (numerator and denominator come out of the same products). Within a chunk, the
  causal C x C product ``tril(K(Q, K)) V`` with the kernel itself (for Taylor
  ``1 + s + s^2/2`` of the f-dim ``s = Q K^T``: no d_phi-wide product); across chunks, the
  states ``phi(K_c)^T V_c`` of every chunk at once, an inclusive cumulative sum over chunks
  (shifted by one chunk), and ``phi(Q_c) S_{<c}``. Fully parallel: no loop over positions or
  chunks. phi is built feature-major, (.., d_phi, C) per chunk (``TaylorRows``): each product row
  is a contiguous block, ~10x faster on CPU than gathering features along the last axis, and
  exactly the operand layout the state product phi(K)^T V wants.
* ``linear_attention_step``: one step of the recurrence (what ``Mixer.step`` calls).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def taylor_feature_dim(d: int) -> int:
    """d_phi = 1 + d + d(d+1)/2."""
    return 1 + d + d * (d + 1) // 2


def _pairs(d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    i, j = torch.triu_indices(d, d, device=device)
    return i, j


def taylor_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = [1, x, (x_i x_j)_{i<=j} weighted 1/sqrt(2) on the diagonal, 1 off it]: (..., d) -> (..., d_phi).

    ``phi(x) . phi(y) = 1 + x.y + (x.y)^2 / 2`` exactly.
    """
    d = x.shape[-1]
    i, j = _pairs(d, x.device)
    weight = torch.ones(i.shape, dtype=x.dtype, device=x.device).masked_fill(i == j, 1 / math.sqrt(2))
    second = x[..., i] * x[..., j] * weight
    return torch.cat([torch.ones_like(x[..., :1]), x, second], dim=-1)


class TaylorRows(torch.autograd.Function):
    """``taylor_feature_map`` on the second-to-last axis: x (..., d, L) -> phi (..., d_phi, L), rows
    ordered as in ``taylor_feature_map``. Forward and backward loop over the d rows of products
    (d contiguous blocks each), instead of gathering and scattering along the feature axis."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        d = x.shape[-2]
        out = x.new_empty(*x.shape[:-2], taylor_feature_dim(d), x.shape[-1])
        out[..., 0, :] = 1
        out[..., 1 : d + 1, :] = x
        row = d + 1
        for a in range(d):  # rows (a, a), (a, a+1), ..., (a, d-1)
            torch.mul(x[..., a : a + 1, :], x[..., a:, :], out=out[..., row : row + d - a, :])
            out[..., row, :] *= 1 / math.sqrt(2)
            row += d - a
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        d = x.shape[-2]
        grad_x = grad[..., 1 : d + 1, :].clone()
        row = d + 1
        for a in range(d):
            g = grad[..., row : row + d - a, :]  # d phi / d x_a = x_b for (a, b), sqrt(2) x_a for (a, a)
            grad_x[..., a, :] += (g * x[..., a:, :]).sum(-2) + (math.sqrt(2) - 1) * g[..., 0, :] * x[..., a, :]
            grad_x[..., a + 1 :, :] += g[..., 1:, :] * x[..., a : a + 1, :]
            row += d - a
        return grad_x


class CausalTaylorKernel(torch.autograd.Function):
    """``tril(1 + s + s^2/2)`` of scores s (..., C, C), fused: one buffer forward, one backward
    (``grad_s = grad * (1 + s)`` under the mask), instead of five autograd temporaries."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scores, causal)
        kernel = scores * 0.5
        return kernel.add_(1).mul_(scores).add_(1).mul_(causal)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scores, causal = ctx.saved_tensors
        return grad * (scores + 1).mul_(causal), None


FEATURE_MAPS = ("taylor", "identity")


def _check(feature_map: str) -> None:
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")


def _phi(x: torch.Tensor, feature_map: str) -> torch.Tensor:
    _check(feature_map)
    return taylor_feature_map(x) if feature_map == "taylor" else x


def linear_attention_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eps: float = 1e-12,
    normalize: bool = True,
    feature_map: str = "taylor",
) -> torch.Tensor:
    """The recurrence, one position at a time."""
    b, h, t, f = q.shape
    f = taylor_feature_dim(f) if feature_map == "taylor" else f
    kv = q.new_zeros(b, h, f, v.shape[-1])
    z = q.new_zeros(b, h, f)
    outputs = []
    for s in range(t):
        y, kv, z = linear_attention_step(q[:, :, s], k[:, :, s], v[:, :, s], kv, z, eps, normalize, feature_map)
        outputs.append(y)
    return torch.stack(outputs, dim=2)


def linear_attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int = 64,
    eps: float = 1e-12,
    normalize: bool = True,
    feature_map: str = "taylor",
) -> torch.Tensor:
    """Chunked parallel form: intra-chunk C x C kernel products + inter-chunk states by a cumulative sum."""
    _check(feature_map)
    b, h, t, f = q.shape
    d = v.shape[-1]
    if normalize:  # the denominator sum_s K(q, k_s) is the output of a value column of ones
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    dv = v.shape[-1]
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = n * c - t
    if pad:  # padded keys are later than every real query (masked in the chunk, absent from states)
        q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
    q = q.reshape(b, h, n, c, f).transpose(-1, -2)  # feature-major chunks (B, H, n, f, C)
    k = k.reshape(b, h, n, c, f).transpose(-1, -2)
    v = v.reshape(b, h, n, c, dv)
    scores = q.transpose(-1, -2) @ k  # (B, H, n, C, C)
    causal = torch.ones(c, c, dtype=scores.dtype, device=q.device).tril()
    if feature_map == "taylor":  # phi(q).phi(k) = 1 + s + s^2/2
        scores = CausalTaylorKernel.apply(scores, causal)
    else:
        scores = scores * causal
    out = scores @ v  # intra-chunk, (B, H, n, C, dv)
    if n > 1:
        phi_k = TaylorRows.apply(k[:, :, :-1]) if feature_map == "taylor" else k[:, :, :-1]
        phi_q = TaylorRows.apply(q[:, :, 1:]) if feature_map == "taylor" else q[:, :, 1:]
        states = (phi_k @ v[:, :, :-1]).cumsum(dim=2)  # (B, H, n-1, F, dv): the state after chunk 0..n-2
        out[:, :, 1:] += phi_q.transpose(-1, -2) @ states  # in place: the intra product keeps its inputs, not out
    out = out.reshape(b, h, n * c, dv)
    if pad:
        out = out[:, :, :t]
    if not normalize:
        return out
    return out[..., :d] / (out[..., d:] + eps)


def linear_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv: torch.Tensor,
    z: torch.Tensor,
    eps: float = 1e-12,
    normalize: bool = True,
    feature_map: str = "taylor",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step: q, k (B, H, f), v (B, H, D), state kv (B, H, F, D), z (B, H, F) -> (y, kv, z)."""
    phi_q, phi_k = _phi(q, feature_map), _phi(k, feature_map)
    kv = kv + phi_k[..., :, None] * v[..., None, :]
    z = z + phi_k
    numerator = (phi_q[..., None, :] @ kv)[..., 0, :]
    if not normalize:
        return numerator, kv, z
    return numerator / ((phi_q * z).sum(-1, keepdim=True) + eps), kv, z
