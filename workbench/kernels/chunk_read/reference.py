"""The chunked top-k read of the inverted mixer, reference form: the semantics every fast path reproduces.

The op is the read of ``InvertedMixer._mix_chunked`` from the scores on. Shapes (``n`` chunks of
``C`` queries, ``M`` units):

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

Forms of this op: ``reference`` (here: ``chunk_read_naive``, one query row at a time, and
``chunk_candidates``, the op's inputs built from the naive occupant table), ``torch_impl`` (the
CPU fast path: ``chunk_tables``, ``chunk_read_torch``, ``chunk_read_gather``), ``triton_impl``
(CUDA kernels, forward and backward).
"""

from __future__ import annotations

import torch

MASK_VALUE = -1e9  # what InvertedMixer._read writes into invalid scores


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
