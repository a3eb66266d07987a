"""The EMA op, PyTorch forms: the CPU fast path (``ema_chunked``) and the log-depth scan (``decayed_cumsum``).

``ema_chunked``: a C x C decay matrix per chunk as a dense matmul, then a log-depth scan over the
T / C chunk carries; its backward is the same pass run anti-causally (``_GroupedEMA``). The
log-depth scan over all T positions (``workbench.mixers.inverted.ema_scan`` =
``decayed_cumsum((1 - a) x, a)``) is kept as a third form for the tests (it moves O(T d log T)
bytes, which is what made it slow). Reference: ``workbench.kernels.ema.reference.ema_naive``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def decayed_cumsum(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """h_j = factor * h_{j-1} + x_j along dim 1 (h_{-1} = 0), by a log-depth (Hillis-Steele) scan.

    ceil(log2 T) vectorized sweeps, no loop over positions; ``factor`` broadcasts over the last dim.
    """
    h, power, shift = x, factor, 1
    while shift < x.shape[1]:
        h = torch.cat([h[:, :shift], h[:, shift:] + power * h[:, :-shift]], dim=1)
        power, shift = power * power, shift * 2
    return h


_MAX_GROUPS = 8  # at most this many distinct decays share matrices (the grouped path)


def _ema_grouped_pass(x: torch.Tensor, values: torch.Tensor, groups: list, chunk: int, reverse: bool) -> torch.Tensor:
    """One chunked EMA pass over ``x`` (B, T, D) with a few shared decays; no autograd.

    ``groups[g]`` indexes the channels whose decay is ``values[g]``. Causal (``reverse=False``):
    inside each chunk ``y = L_a @ x`` with ``L_a[i, s] = (1 - a) a^(i - s)`` for s <= i, then the
    state entering chunk j (a scan over chunk ends, factor a^C) is added as ``a^(i + 1) h_{j-1}``.
    Anti-causal (``reverse=True``, the adjoint, i.e. the backward pass): ``L_a^T`` inside chunks,
    the scan runs from the last chunk and enters as ``a^(C - i) z_{j+1}``.
    """
    b, t, d = x.shape
    pad = (-t) % chunk
    n = (t + pad) // chunk
    xc = (F.pad(x, (0, 0, 0, pad)) if pad else x).reshape(b, n, chunk, d)
    lag = torch.arange(chunk, device=x.device)
    lag = lag[:, None] - lag[None, :]  # (C, C): i - s
    rows = torch.arange(chunk, device=x.device, dtype=x.dtype)[:, None]
    y = torch.empty_like(xc)
    for a, index in zip(values, groups):  # a fixed number of groups, not a loop over time
        mat = torch.where(lag >= 0, (1 - a) * a ** lag.clamp_min(0).to(x.dtype), 0.0)
        y[..., index] = (mat.T if reverse else mat) @ xc[..., index]
        if n > 1:
            part = y[..., index]
            ends = part[:, :, 0] if reverse else part[:, :, -1]  # (B, n, w): each chunk's own sum
            if reverse:
                carried = decayed_cumsum(ends.flip(1), a**chunk).flip(1)
                entering = torch.cat([carried[:, 1:], torch.zeros_like(carried[:, :1])], dim=1)
                powers = a ** (chunk - rows)
            else:
                carried = decayed_cumsum(ends, a**chunk)
                entering = torch.cat([torch.zeros_like(carried[:, :1]), carried[:, :-1]], dim=1)
                powers = a ** (rows + 1)
            if isinstance(index, slice):  # a view: add in place
                part.addcmul_(powers, entering[:, :, None, :])
            else:
                y[..., index] = torch.addcmul(part, powers, entering[:, :, None, :])
    y = y.reshape(b, n * chunk, d)
    return y[:, :t] if pad else y


class _GroupedEMA(torch.autograd.Function):
    """The grouped EMA with its adjoint as backward: the same pass run anti-causally.

    Autograd through the forward's slices and scan cost about three forward passes; the adjoint
    costs one, and nothing but the group table is saved.
    """

    @staticmethod
    def forward(ctx, x, values, groups, chunk):
        ctx.values, ctx.groups, ctx.chunk = values, groups, chunk
        return _ema_grouped_pass(x, values, groups, chunk, reverse=False)

    @staticmethod
    def backward(ctx, grad):
        return _ema_grouped_pass(grad.contiguous(), ctx.values, ctx.groups, ctx.chunk, reverse=True), None, None, None


def ema_chunked(x: torch.Tensor, decay: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """The EMA of :func:`ema_naive`, chunked: dense matmuls inside chunks, a short scan across them.

    Inside chunk j (zero initial state) ``y = L_a @ x`` with ``L_a[i, s] = (1 - a) a^(i - s)``
    for s <= i: a (C, C) matmul per distinct decay value (the mixer has one per timescale; its
    backward is the same pass anti-causally, ``_GroupedEMA``), or one matrix per channel when there
    are more than ``_MAX_GROUPS`` values or ``decay`` needs a gradient. The state entering chunk
    j is a scan over the n = T / C chunk ends with factor a^C (log2(n) sweeps over n * d numbers),
    added as ``a^(i + 1) * h_{j-1}``. Cost O(T * C * d) in matmuls; no loop over positions.
    """
    b, t, d = x.shape
    if t == 0:
        return x.clone()
    c = min(chunk_size, t)
    decay = decay.to(x.dtype)
    values, group = torch.unique(decay.detach(), return_inverse=True)
    # Grouping shares one matrix between channels, so a trainable decay (a gradient per channel)
    # takes the per-channel path; the mixer's decays are fixed buffers.
    if len(values) <= _MAX_GROUPS and not decay.requires_grad:
        groups = []
        for g in range(len(values)):
            channels = (group == g).nonzero()[:, 0]
            lo, hi = int(channels[0]), int(channels[-1]) + 1
            groups.append(slice(lo, hi) if hi - lo == len(channels) else channels)
        return _GroupedEMA.apply(x, values, groups, c)
    pad = (-t) % c
    n = (t + pad) // c
    xc = (F.pad(x, (0, 0, 0, pad)) if pad else x).reshape(b, n, c, d)
    lag = torch.arange(c, device=x.device)
    lag = lag[:, None] - lag[None, :]  # (C, C): i - s
    causal = lag >= 0
    mat = torch.where(causal, (1 - decay[:, None, None]) * decay[:, None, None] ** lag.clamp_min(0), 0.0)
    y = torch.einsum("dis,bnsd->bnid", mat, xc)
    if n > 1:
        carried = decayed_cumsum(y[:, :, -1], decay**c)  # (B, n, d): the state at each chunk end
        entering = torch.cat([torch.zeros_like(carried[:, :1]), carried[:, :-1]], dim=1)
        powers = decay ** torch.arange(1, c + 1, device=x.device, dtype=x.dtype)[:, None]  # (C, d)
        y = y + powers * entering[:, :, None, :]
    y = y.reshape(b, n * c, d)
    return y[:, :t] if pad else y
