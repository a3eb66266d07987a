"""The short causal depthwise convolution: the front end every mixer shares (Zoology/Based recipe).

``y_t = bias + sum_j weight[:, j] * x_{t - w + 1 + j}`` per channel, for x of shape (B, T, D) and a
weight of shape (D, w). Three forms side by side, as for every op here:

* ``short_conv_naive``: the definition, a loop over the w taps (tests);
* ``short_conv``: the training form, one channels-last depthwise 2-d convolution;
* ``short_conv_step``: one recurrent step over a window holding the last w - 1 inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def short_conv_naive(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Reference: shift-and-add over the taps."""
    t, width = x.shape[1], weight.shape[-1]
    y = bias.expand_as(x).clone()
    for j in range(width):
        shift = width - 1 - j  # tap j reads x_{t - shift}
        y[:, shift:] = y[:, shift:] + weight[:, j] * x[:, : t - shift]
    return y


def short_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Training form: a depthwise 2-d convolution on the (B, D, 1, T) view of x.

    That view is already channels-last in memory, so there is no transposed copy in or out, and
    oneDNN's channels-last depthwise kernel takes about half the time of ``Conv1d`` on a transposed
    copy (forward + backward, on CPU). Both sides are padded by w - 1; the first T outputs are causal.
    """
    t, width = x.shape[1], weight.shape[-1]
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), weight[:, None, None, :], bias, padding=(0, width - 1),
                 groups=x.shape[-1])  # fmt: skip
    return y[..., :t].squeeze(2).transpose(1, 2)


def short_conv_step(x_t: torch.Tensor, window: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """One step: ``x_t`` (B, D), ``window`` (B, w - 1, D) the previous inputs -> (y_t, next window)."""
    full = torch.cat([window, x_t[:, None]], dim=1)  # (B, w, D)
    return (full * weight.T).sum(1) + bias, full[:, 1:]
