"""Autograd pieces of the seeking units' writes, each keeping less for the backward than autograd would.

* :class:`HardWrite`: salience x onehot(winner) forward, the softmax's gradient backward (straight-through);
* :class:`LogKeep`: log(1 - a), keeping only its output.

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
