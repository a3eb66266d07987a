"""Autograd pieces of the seeking units' writes, each keeping less for the backward than autograd would.

* :class:`HardWrite`: salience x onehot(winner) forward, the softmax's gradient backward (straight-through);
* :class:`LogKeep`: log(1 - a), keeping only its output;
* :func:`position_gumbel`: the write jitter's noise, fixed by (position, head, unit).

Tested against their definitions (values and gradients) in ``tests/test_seeking.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class HardWrite(torch.autograd.Function):
    """salience x onehot(winner) forward, the gradient of salience x softmax(logits) backward.

    The straight-through hard write written out: the same numbers as salience * (onehot + softmax -
    softmax.detach()), but the softmax is not computed in the forward (the backward recomputes it from
    the saved logits; under no_grad it never runs) and neither the one-hot nor the share is kept: a
    training step holds (B, H, T, M) arrays fewer, a prefill too. ``logits`` (..., N) may end with the
    sink's column (N = M + 1, ``sink``): a message the sink wins is written nowhere.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, salience: torch.Tensor, winner: torch.Tensor, sink: bool) -> torch.Tensor:
        units = logits.shape[-1] - sink
        taken = (winner < units).to(salience.dtype)  # 0 where the sink won
        index = winner.clamp(max=units - 1)[..., None]
        ctx.save_for_backward(logits, salience, index, taken)
        ctx.sink = sink
        return logits.new_zeros(*logits.shape[:-1], units).scatter_(-1, index, (salience * taken)[..., None])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, salience, index, taken = ctx.saved_tensors
        d_salience = grad.gather(-1, index).squeeze(-1) * taken
        d_share = grad * salience[..., None]
        if ctx.sink:  # the sink's column is written nowhere: no gradient arrives at its share
            d_share = F.pad(d_share, (0, 1))
        share = logits.softmax(-1)
        return share * (d_share - (d_share * share).sum(-1, keepdim=True)), d_salience, None, None


class LogKeep(torch.autograd.Function):
    """log(1 - a) keeping only its output: d/da = -exp(-log(1 - a)). ``torch.log1p(-a)`` keeps -a as well,
    a (B, H, T, M) array more at the peak of a training step; the output is kept by the chunked passes anyway."""

    @staticmethod
    def forward(ctx, writes: torch.Tensor) -> torch.Tensor:
        log_keep = torch.log1p(-writes)
        ctx.save_for_backward(log_keep)
        return log_keep

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (log_keep,) = ctx.saved_tensors
        return torch.neg(log_keep).exp_().mul_(grad).neg_()  # one array, not four


def position_gumbel(positions: torch.Tensor, n_heads: int, n: int) -> torch.Tensor:
    """Gumbel noise g[..., h, t, m] fixed by (position, head, unit): a hash, so no table and no max_len.

    With it a hard write's winner is argmax(logits + g): over many positions each unit wins as often
    as its softmax share, so when rest lowers the favourite's bid the runners-up take turns instead of
    the first of them taking every message; the same positions give the same noise at training and
    at inference. ``positions`` (..., T) int64 -> (..., n_heads, T, n).
    """
    heads = torch.arange(n_heads, device=positions.device)[:, None, None]
    units = torch.arange(n, device=positions.device)
    key = positions[..., None, :, None] * 0x9E3779B1 + heads * 0x85EBCA77 + units * 0xC2B2AE3D
    key = key & 0xFFFFFFFF
    for multiplier in (0x7FEB352D, 0x846CA68B):  # a 32-bit integer mix (xorshift-multiply rounds)
        key = ((key ^ (key >> 15)) * multiplier) & 0xFFFFFFFF
    key = key ^ (key >> 16)
    uniform = ((key >> 8).to(torch.float64) + 0.5) / float(1 << 24)  # in (0, 1), never 0 or 1
    return -torch.log(-torch.log(uniform))
