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

The ops take the feature-mapped phi(q), phi(k) (B, H, T, F) and v (B, H, T, D) -> (B, H, T, D):

* ``linear_attention_naive``: the recurrence above, a loop over t (tests and clarity only);
* ``linear_attention_chunked``: chunks of C tokens. The normalizer rides along as an extra value
  column of ones (so numerator and denominator come out of the same products). Within a chunk,
  the causal C x C product ``tril(phi(Q) phi(K)^T) V``; across chunks, the states
  ``phi(K_c)^T V_c`` of every chunk at once, an exclusive cumulative sum over chunks, and
  ``phi(Q_c) S_{<c}``. Fully parallel: no loop over positions or chunks.
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


def linear_attention_naive(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, eps: float = 1e-12, normalize: bool = True
) -> torch.Tensor:
    """The recurrence, one position at a time."""
    b, h, t, f = phi_q.shape
    kv = phi_q.new_zeros(b, h, f, v.shape[-1])
    z = phi_q.new_zeros(b, h, f)
    outputs = []
    for s in range(t):
        y, kv, z = linear_attention_step(phi_q[:, :, s], phi_k[:, :, s], v[:, :, s], kv, z, eps, normalize)
        outputs.append(y)
    return torch.stack(outputs, dim=2)


def linear_attention_chunked(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int = 64,
    eps: float = 1e-12,
    normalize: bool = True,
) -> torch.Tensor:
    """Chunked parallel form: intra-chunk C x C products + inter-chunk states by a cumulative sum."""
    b, h, t, f = phi_q.shape
    d = v.shape[-1]
    if normalize:  # the denominator phi(q).sum phi(k) is the output of a value column of ones
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    dv = v.shape[-1]
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = n * c - t
    if pad:  # zero features add nothing to any state; padded queries are dropped
        phi_q, phi_k, v = (F.pad(z, (0, 0, 0, pad)) for z in (phi_q, phi_k, v))
    q = phi_q.reshape(b, h, n, c, f)
    k = phi_k.reshape(b, h, n, c, f)
    v = v.reshape(b, h, n, c, dv)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    out = ((q @ k.transpose(-1, -2)) * causal) @ v  # intra-chunk, (B, H, n, C, dv)
    if n > 1:
        states = k[:, :, :-1].transpose(-1, -2) @ v[:, :, :-1]  # (B, H, n-1, F, dv), chunks 0..n-2
        before = states.cumsum(dim=2)  # state after chunk c, c = 0..n-2: what chunk c + 1 starts from
        out = torch.cat([out[:, :, :1], out[:, :, 1:] + q[:, :, 1:] @ before], dim=2)
    out = out.reshape(b, h, n * c, dv)
    if pad:
        out = out[:, :, :t]
    if not normalize:
        return out
    return out[..., :d] / (out[..., d:] + eps)


def linear_attention_step(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    kv: torch.Tensor,
    z: torch.Tensor,
    eps: float = 1e-12,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step: phi_q, phi_k (B, H, F), v (B, H, D), kv (B, H, F, D), z (B, H, F) -> (y, kv, z)."""
    kv = kv + phi_k[..., :, None] * v[..., None, :]
    z = z + phi_k
    numerator = (phi_q[..., None, :] @ kv)[..., 0, :]
    if not normalize:
        return numerator, kv, z
    return numerator / ((phi_q * z).sum(-1, keepdim=True) + eps), kv, z
