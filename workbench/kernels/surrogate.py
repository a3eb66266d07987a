"""The inverted mixer's surrogate read: a gradient for the values of tokens that did not write.

Forward, an unwritten token's value reaches no unit, so the read is exactly what the units hold;
backward, ``SurrogateRead`` gives those values the gradient they would get if the token's own chunk
read them by softmax (weights from :func:`surrogate_weights`, normalised by the real read's
log-sum-exp), so a token learns what it would have contributed had it written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unpad(z: torch.Tensor, t: int) -> torch.Tensor:
    """``z[:, :t]``, skipped when there is no padding (a no-op slice still costs a zero-fill in backward)."""
    return z if z.shape[1] == t else z[:, :t]


def surrogate_weights(query, raw_key, written, lse, chunk: int) -> torch.Tensor:
    """(B, n, C, C) weights exp(<q_t, k_s> - lse_t) of the unwritten tokens s <= t of t's chunk."""
    b, t, e = query.shape
    pad = (-t) % chunk
    if pad:
        query, raw_key = (F.pad(z, (0, 0, 0, pad)) for z in (query, raw_key))
        written, lse = F.pad(written, (0, pad), value=True), F.pad(lse, (0, pad))
    n = (t + pad) // chunk
    scores = query.view(b, n, chunk, e) @ raw_key.view(b, n, chunk, e).transpose(-1, -2)
    weight = (scores - lse.view(b, n, chunk, 1)).clamp(max=0).exp()
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=query.device).tril()
    return weight * (causal & ~written.view(b, n, 1, chunk))


class SurrogateRead(torch.autograd.Function):
    """``read + W @ scaled_value`` where that product is exactly zero forward (unwritten values are 0).

    Forward returns ``read`` as it is; backward passes ``read``'s gradient through and gives
    ``scaled_value`` the gradient ``W^T @ grad`` (W from :func:`surrogate_weights`, no gradient).
    """

    @staticmethod
    def forward(ctx, read, scaled_value, query, raw_key, written, lse, chunk):
        ctx.save_for_backward(query, raw_key, written, lse)
        ctx.chunk = chunk
        return read.view_as(read)

    @staticmethod
    def backward(ctx, grad):
        query, raw_key, written, lse = ctx.saved_tensors
        c, (b, t, _) = ctx.chunk, query.shape
        weight = surrogate_weights(query, raw_key, written, lse, c)
        n = weight.shape[1]
        grad_chunks = F.pad(grad, (0, 0, 0, n * c - t)).view(b, n, c, -1)
        grad_value = _unpad((weight.transpose(-1, -2) @ grad_chunks).reshape(b, n * c, -1), t)
        return grad, grad_value, None, None, None, None, None
