"""The chunked top-k read, PyTorch forms: the CPU fast path the inverted mixer runs.

* ``chunk_tables``: which of the M + C candidates each token may read, from the write table alone;
* ``chunk_read_torch``: the read with dense batched matmuls plus ``topk``/``scatter`` (any k, and
  the dense weights for the hook);
* ``chunk_read_gather``: the sparse read (k < M + C, no weights hook), its k values fetched by
  token position with one ``embedding_bag``.

Contract and semantics: ``workbench.kernels.chunk_read.reference``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.kernels.chunk_read.reference import MASK_VALUE
from workbench.kernels.recompute import candidate_rows, candidate_scores


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


def _top_scores(q, state_key, chunk_key, valid, k: int):
    """The k best masked scores per row, best first: ``(values, indices, valid at the indices)``.

    The same values and indices as ``_masked_scores(...).topk(k)``, but the mask is written outside
    autograd (in place, on a detached alias: nothing saved for backward reads the scores) and applied
    again to the k kept scores only (``where``, so invalid candidates still get no gradient):
    backward keeps k numbers per row instead of the (B, n, C, M + C) boolean mask that
    ``masked_fill`` saves (12 MiB per 65,536 tokens at the defaults). topk's backward keeps its indices.
    """
    return _top_of_scores(q @ torch.cat([state_key, chunk_key], dim=-2).transpose(-1, -2), valid, k)


def _top_of_scores(scores, valid, k: int):
    """``_top_scores`` from the unmasked (B, n, C, M + C) scores (masked in place, outside autograd)."""
    with torch.no_grad():
        scores.detach().masked_fill_(~valid, MASK_VALUE)
    top = scores.topk(k, dim=-1)
    ok = valid.gather(-1, top.indices)
    return torch.where(ok, top.values, MASK_VALUE), top.indices, ok


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
    if k < valid.shape[-1]:
        values, index, ok = _top_scores(q, state_key, chunk_key, valid, k)
        kept = values.softmax(-1) * ok
        weights = torch.zeros(valid.shape, dtype=values.dtype, device=values.device).scatter(-1, index, kept)
        lse = values.logsumexp(-1)
    else:  # k covers every candidate: a dense softmax read
        scores = _masked_scores(q, state_key, chunk_key, valid)
        weights = scores.softmax(-1) * valid
        lse = scores.logsumexp(-1)
    read = weights[..., :m] @ state_value + weights[..., m:] @ chunk_value
    return read, lse, weights if need_weights else None


def chunk_read_gather(
    q: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    start: torch.Tensor,
    valid: torch.Tensor,
    k: int,
):
    """``chunk_read_torch`` for ``k < M + C`` (the sparse read), its keys and values fetched by position.

    ``key`` (B, n * C, E) and ``value`` (B, n * C, Dv) are the whole (padded) key and value sequences
    and ``start`` (B, n, M) the positions the units held at each chunk start (``chunk_tables``); ``q``
    (B, n, C, E), ``valid`` and ``k`` are ``chunk_read_torch``'s. The candidates' scores come from
    ``workbench.kernels.recompute.candidate_scores`` (the (B, n, M + C, E) candidate keys are gathered
    again in backward, not kept). The selection is the same; then each of the k kept candidates is
    mapped back to the position that wrote it (unit m -> ``start[m]``, chunk row s -> the chunk's
    s-th position) and the k weighted values summed by one ``embedding_bag``. So neither the (B, n, M, Dv) state
    values nor a dense (C, M + C) weight matrix and its matmuls (99% zeros at k = 2) are built:
    the mixer's CPU path, about 10% of a training step at n = 1024. Returns ``(read, lse)``.
    """
    b, n, c, _ = q.shape
    candidates = candidate_rows(start, key.shape[1], c)  # (B, n, M + C) rows of the flattened sequence
    scores = candidate_scores(q, key, candidates)
    values, index, ok = _top_of_scores(scores, valid, k)  # index < M a unit, >= M a row of the chunk
    del scores  # (B, n, C, M + C): freed before the read (the topk's backward keeps only its indices)
    weights = values.softmax(-1) * ok  # empty units (row 0 stands in) get weight 0
    rows = candidates[:, :, None, :].expand(b, n, c, -1).gather(-1, index).view(-1, k)
    # embedding_bag sums the k weighted rows without building the (B, n, C, k, Dv) picked values
    # (nor keeping them for backward): a quarter of the time of gather + multiply + sum at k = 4.
    read = F.embedding_bag(rows, value.reshape(-1, value.shape[-1]), mode="sum", per_sample_weights=weights.reshape(-1, k))
    return read.view(b, n, c, -1), values.logsumexp(-1)
