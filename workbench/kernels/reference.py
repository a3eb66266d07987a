"""PyTorch references for the kernel ops: the semantics every fast path must reproduce.

Two ops, each with a plain reference (``*_naive``: loops, for clarity and tests) and the
PyTorch form the inverted mixer runs today (the CPU fast path):

* ``ema``: ``y_t = a * y_{t-1} + (1 - a) * x_t`` per channel, ``y_{-1} = 0``.
  Naive: :func:`ema_naive`. Fast CPU path: :func:`ema_chunked` (a C x C decay matrix per
  chunk as a dense matmul, then a log-depth scan over the T / C chunk carries). The
  log-depth scan over all T positions, ``workbench.mixers.inverted.ema_scan``, is kept as a
  third form for the tests (it moves O(T d log T) bytes, which is what made it slow).
* ``chunk_read``: the top-k read of ``InvertedMixer._mix_chunked`` from the scores on.
  Naive: :func:`chunk_read_naive`. Fast CPU path: :func:`chunk_read_torch`, and for the sparse
  read (k < M + C, no weights hook) :func:`chunk_read_gather`, which takes the value sequence and
  the chunk-start positions instead of the gathered state values.

Shapes of ``chunk_read`` (``n`` chunks of ``C`` queries, ``M`` units):

* ``q`` (B, n, C, E): the queries of each chunk;
* ``state_key`` (B, n, M, E), ``state_value`` (B, n, M, Dv): the units as they stood at the chunk start;
* ``chunk_key`` (B, n, C, E), ``chunk_value`` (B, n, C, Dv): the messages written inside the chunk;
* ``valid`` (B, n, C, M + C) bool: which of the M + C candidates query row i may read;
* ``k``: how many candidates each query keeps.

Returns ``(read (B, n, C, Dv), lse (B, n, C), weights (B, n, C, M + C) or None)``: the mixed
values, the log-normalizer of the kept scores (the mixer's surrogate uses it) and, when
``need_weights``, the dense read weights (for the ``hook_read_weights`` hook point).

Semantics (exactly ``InvertedMixer._read``): invalid scores are replaced by -1e9 (not
-inf, so an all-invalid row is finite); the top ``k`` scores are kept (all of them when
``k >= M + C``), softmax over the kept, each weight multiplied by its validity (an
all-invalid row reads exactly zero); ``lse`` is the logsumexp of the kept (masked) scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_VALUE = -1e9  # what InvertedMixer._read writes into invalid scores


def ema_naive(x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """``y_t = decay * y_{t-1} + (1 - decay) * x_t`` along dim 1 of ``x`` (B, T, D); ``decay`` (D,).

    A plain loop over time: the definition, for tests (O(T) Python steps).
    """
    y = torch.zeros_like(x[:, 0])
    out = []
    for t in range(x.shape[1]):
        y = decay * y + (1 - decay) * x[:, t]
        out.append(y)
    return torch.stack(out, dim=1) if out else x.clone()


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


def chunk_tables(unit: torch.Tensor, n_units: int, chunk_size: int):
    """Which of the M + C candidates each token may read, from the write table alone.

    ``unit`` (B, T): the unit each token wrote to, -1 if none. With C = min(chunk_size, T) and
    n = ceil(T / C) chunks, returns ``(start (B, n, M), valid (B, n, C, M + C))``:

    * ``start[j, m]``: the last position before chunk j that wrote unit m (-1: empty);
    * ``valid[j, i, m]``: unit m still holds ``start[j, m]`` at row i (not rewritten inside the
      chunk up to i, and not empty);
    * ``valid[j, i, M + s]``: token s of the chunk wrote, s <= i, and its unit is not rewritten
      in (s, i].

    The same tables as the occupant table ``cummax`` of the naive form gives (see
    :func:`chunk_candidates`), but built with O(T * (M + C)) booleans and O(T) scatters
    instead of an O(T * M) integer scan.
    """
    b, t = unit.shape
    m, c = n_units, min(chunk_size, t)
    pad = (-t) % c
    n = (t + pad) // c
    unit = F.pad(unit, (0, pad), value=-1).view(b, n, c)
    slot = torch.where(unit >= 0, unit, m)  # no write -> a spare slot M, dropped below
    row = torch.arange(c, device=unit.device)
    position = (torch.arange(n, device=unit.device)[:, None] * c + row).expand(b, n, c)
    last = torch.full((b, n, m + 1), -1, dtype=torch.long, device=unit.device)
    last = last.scatter_reduce(-1, slot, position, "amax")[..., :m]
    ended = last.cummax(dim=1).values  # occupant of each unit at each chunk end
    start = torch.cat([torch.full_like(ended[:, :1], -1), ended[:, :-1]], dim=1)
    first = torch.full((b, n, m + 1), c, dtype=torch.long, device=unit.device)
    first = first.scatter_reduce(-1, slot, row.expand(b, n, c), "amin")[..., :m]  # first rewrite in chunk
    state_ok = (row[:, None] < first[:, :, None, :]) & (start[:, :, None, :] >= 0)  # (B, n, C, M)
    wrote = unit >= 0
    same = (unit[..., :, None] == unit[..., None, :]) & (row[None, :] > row[:, None])  # s' > s, same unit
    following = torch.where(same, row, c).amin(-1)  # (B, n, C): next rewrite of s's unit in the chunk
    chunk_ok = (row[:, None] >= row[None, :]) & (row[:, None] < following[:, :, None, :]) & wrote[:, :, None, :]
    return start, torch.cat([state_ok, chunk_ok], dim=-1)


def _masked_scores(q, state_key, chunk_key, valid):
    """Scores of the M + C candidates, invalid ones set to MASK_VALUE: one matmul, masked in place."""
    scores = q @ torch.cat([state_key, chunk_key], dim=-2).transpose(-1, -2)
    return scores.masked_fill_(~valid, MASK_VALUE)  # in place: the matmul's backward does not need its output


def chunk_read_torch(
    q: torch.Tensor,
    state_key: torch.Tensor,
    chunk_key: torch.Tensor,
    state_value: torch.Tensor,
    chunk_value: torch.Tensor,
    valid: torch.Tensor,
    k: int,
    need_weights: bool = False,
):
    """The chunked top-k read, exactly as ``InvertedMixer._mix_chunked`` computes it from the scores on.

    Dense batched matmuls plus ``topk``/``scatter``; differentiable by autograd (also ``weights``).
    """
    m = state_key.shape[-2]
    scores = _masked_scores(q, state_key, chunk_key, valid)
    if k < scores.shape[-1]:
        top = scores.topk(k, dim=-1)
        kept = top.values.softmax(-1) * valid.gather(-1, top.indices)
        weights = torch.zeros_like(scores).scatter(-1, top.indices, kept)
        lse = top.values.logsumexp(-1)
    else:  # k covers every candidate: a dense softmax read
        weights = scores.softmax(-1) * valid
        lse = scores.logsumexp(-1)
    read = weights[..., :m] @ state_value + weights[..., m:] @ chunk_value
    return read, lse, weights if need_weights else None


def chunk_read_gather(
    q: torch.Tensor,
    state_key: torch.Tensor,
    chunk_key: torch.Tensor,
    value: torch.Tensor,
    start: torch.Tensor,
    valid: torch.Tensor,
    k: int,
):
    """``chunk_read_torch`` for ``k < M + C`` (the sparse read), its values fetched by position.

    ``value`` (B, n * C, Dv) is the whole (padded) value sequence and ``start`` (B, n, M) the
    positions the units held at each chunk start (``chunk_tables``); the other arguments are
    ``chunk_read_torch``'s. The selection is the same; then each of the k kept candidates is
    mapped back to the position that wrote it (unit m -> ``start[m]``, chunk row s -> the chunk's
    s-th position) and the k weighted values summed by one ``embedding_bag``. So neither the (B, n, M, Dv) state
    values nor a dense (C, M + C) weight matrix and its matmuls (99% zeros at k = 2) are built:
    the mixer's CPU path, about 10% of a training step at n = 1024. Returns ``(read, lse)``.
    """
    b, n, c, _ = q.shape
    m = state_key.shape[-2]
    scores = _masked_scores(q, state_key, chunk_key, valid)
    top = scores.topk(k, dim=-1)
    index = top.indices  # (B, n, C, k): < M a unit, >= M a row of the chunk
    weights = top.values.softmax(-1) * valid.gather(-1, index)
    chunk_position = (torch.arange(n, device=q.device) * c)[:, None, None] + index - m
    state_position = start.gather(-1, index.clamp(max=m - 1).view(b, n, c * k)).view(b, n, c, k)
    position = torch.where(index < m, state_position, chunk_position).clamp_min(0)  # empty units: weight 0
    rows = (torch.arange(b, device=q.device)[:, None, None, None] * value.shape[1] + position).view(-1, k)
    # embedding_bag sums the k weighted rows without building the (B, n, C, k, Dv) picked values
    # (nor keeping them for backward): a quarter of the time of gather + multiply + sum at k = 4.
    read = F.embedding_bag(rows, value.reshape(-1, value.shape[-1]), mode="sum", per_sample_weights=weights.reshape(-1, k))
    return read.view(b, n, c, -1), top.values.logsumexp(-1)


def chunk_read_naive(
    q: torch.Tensor,
    state_key: torch.Tensor,
    chunk_key: torch.Tensor,
    state_value: torch.Tensor,
    chunk_value: torch.Tensor,
    valid: torch.Tensor,
    k: int,
    need_weights: bool = False,
):
    """The same read, one query row at a time (a loop over B * n * C rows): the definition, for tests.

    Selection by a stable descending sort, so among equal scores the lowest candidate index wins.
    Only the selection is discrete; values and gradients go through plain indexing.
    """
    b, n, c, _ = q.shape
    keys = torch.cat([state_key, chunk_key], dim=-2)  # (B, n, M + C, E)
    values = torch.cat([state_value, chunk_value], dim=-2)  # (B, n, M + C, Dv)
    n_cand = keys.shape[-2]
    kk = min(k, n_cand)
    reads, lses, weight_rows = [], [], []
    for bi in range(b):
        for j in range(n):
            for i in range(c):
                row = keys[bi, j] @ q[bi, j, i]  # (M + C,)
                ok = valid[bi, j, i]
                row = torch.where(ok, row, torch.full_like(row, MASK_VALUE))
                order = torch.sort(row.detach(), descending=True, stable=True).indices[:kk]
                kept = row[order]
                p = torch.softmax(kept, dim=0) * ok[order].to(row.dtype)
                reads.append(p @ values[bi, j, order])
                lses.append(torch.logsumexp(kept, dim=0))
                if need_weights:
                    weight_rows.append(torch.zeros_like(row).index_put((order,), p))
    read = torch.stack(reads).view(b, n, c, -1)
    lse = torch.stack(lses).view(b, n, c)
    weights = torch.stack(weight_rows).view(b, n, c, n_cand) if need_weights else None
    return read, lse, weights


def chunk_candidates(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    occupant: torch.Tensor,
    unit: torch.Tensor,
    n_units: int,
    chunk_size: int,
):
    """The inputs of ``chunk_read`` as ``InvertedMixer._mix_chunked`` builds them (same code, factored).

    ``query`` (B, T, E), ``key`` (B, T, E), ``value`` (B, T, Dv), ``occupant`` (B, T, M) and
    ``unit`` (B, T) as in the mixer. Returns ``(q, state_key, chunk_key, state_value, chunk_value,
    valid)`` shaped as in the module docstring; the caller reshapes the read back to (B, n * C, Dv)
    and drops the padding. Used by the tests to check that ``chunk_read_torch`` is the mixer's read.
    """
    b, t, e = query.shape
    m, c = n_units, min(chunk_size, t)
    pad = (-t) % c
    if pad:
        query, key, value = (torch.nn.functional.pad(z, (0, 0, 0, pad)) for z in (query, key, value))
        occupant = torch.cat([occupant, occupant[:, -1:].expand(b, pad, m)], dim=1)
        unit = torch.nn.functional.pad(unit, (0, pad), value=-1)
    n = (t + pad) // c
    occ = occupant.view(b, n, c, m)
    start = torch.cat([torch.full_like(occ[:, :1, 0], -1), occ[:, :-1, -1]], dim=1)
    batch = torch.arange(b, device=query.device)[:, None, None]
    state_key, state_value = key[batch, start.clamp_min(0)], value[batch, start.clamp_min(0)]
    state_ok = (occ == start[:, :, None, :]) & (start[:, :, None, :] >= 0)
    positions = torch.arange(t + pad, device=query.device).view(1, n, 1, c)
    chunk_unit = unit.view(b, n, 1, c)
    holder = occ.gather(-1, chunk_unit.clamp_min(0).expand(b, n, c, c))
    chunk_ok = (holder == positions) & (chunk_unit >= 0)
    valid = torch.cat([state_ok, chunk_ok], dim=-1)
    return query.view(b, n, c, e), state_key, key.view(b, n, c, e), state_value, value.view(b, n, c, -1), valid
