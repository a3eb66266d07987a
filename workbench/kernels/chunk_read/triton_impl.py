"""Triton kernels for the chunked top-k read of the inverted mixer (``InvertedMixer._mix_chunked``).

Contract (shapes, masking, dense case): see ``chunk_read/reference.py``; this is ``torch_impl.chunk_read_torch`` for
``min(k, M + C) <= MAX_K``. Every tensor is flattened to ``BN = B * n`` chunks.

Forward, one program per (chunk, block of ``BLOCK_R`` query rows):
  scores of the rows against the candidates, ``BLOCK_N`` columns at a time (``tl.dot``,
  float32 ``ieee`` precision so the selection matches the PyTorch reference); invalid scores
  -> -1e9; a running top-k per row is merged with every column tile by ``k`` passes of max
  (registers stay O(BLOCK_R * (BLOCK_N + k)) whatever M is; among equal scores the lowest
  index wins); softmax over the kept; validity multiplies the weights; the k selected values
  are gathered and mixed. It writes ``read``, ``lse`` and, for the backward, the selection
  (``idx`` int32 and the softmax ``p``, k numbers each per row: far less than the scores
  row, so the backward does not recompute the scores or the selection).
Backward, two kernels, deterministic (no atomics):
  1. per (chunk, row block): ``dw_j = <dread, v_j>``, softmax backward plus the ``lse`` term,
     zero on invalid candidates (masked_fill) -> ``ds`` (BN, C, k); ``dq = sum_j ds_j k_j``
     (gathered keys); ``w`` (BN, C, k) saved for 2.
  2. per (chunk, candidate block), once for the M state and once for the C chunk candidates:
     the sparse ``ds``/``w`` are expanded to dense (rows x candidate block) tiles and
     ``dkey = ds^T q``, ``dvalue = w^T dread`` by ``tl.dot``, looping over the chunk's rows.

Accumulation is float32 (float64 for float64 inputs; then ``tl.dot`` runs in float64, which
the interpreter and recent GPUs support). Half-precision inputs are upcast to float32 in the
kernel (exact selection, no tensor-core speed-up).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_K = 8  # the top-k is unrolled (k passes of max); beyond this use the PyTorch path

BLOCK_R = 16  # query rows per program (tl.dot needs >= 16)
BLOCK_N = 32  # candidate columns per tile


@triton.jit
def _chunk_read_fwd_kernel(
    q_ptr, sk_ptr, ck_ptr, sv_ptr, cv_ptr, valid_ptr,
    out_ptr, lse_ptr, idx_ptr, p_ptr,
    C, M, E, DV,
    K: tl.constexpr, ACC: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    bn = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < C
    NC = M + C
    eo = tl.arange(0, BLOCK_E)
    emask = eo < E
    kcol = tl.arange(0, BLOCK_K)[None, :]
    kmask = kcol < K
    q = tl.load(q_ptr + bn * C * E + rows[:, None] * E + eo[None, :], mask=rmask[:, None] & emask[None, :], other=0.0)
    q = q.to(ACC)
    valid_rows = valid_ptr + bn * C * NC + rows[:, None] * NC

    # Running top-k per row (best first; -inf = empty, placeholder indices < 0), merged with each
    # tile of candidate columns: global column c < M is state unit c, c >= M is chunk token c - M.
    run_v = tl.full([BLOCK_R, BLOCK_K], float("-inf"), ACC)
    run_i = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.int32) - 1 - kcol
    for n0 in range(0, NC, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        in_state = cols < M
        in_chunk = (cols >= M) & (cols < NC)
        kmask2 = emask[None, :]
        ks = tl.load(sk_ptr + bn * M * E + cols[:, None] * E + eo[None, :], mask=in_state[:, None] & kmask2, other=0.0)
        kc = tl.load(
            ck_ptr + bn * C * E + (cols - M)[:, None] * E + eo[None, :], mask=in_chunk[:, None] & kmask2, other=0.0
        )
        s = tl.dot(q, tl.trans(ks.to(ACC) + kc.to(ACC)), input_precision="ieee", out_dtype=ACC)
        ok = tl.load(valid_rows + cols[None, :], mask=rmask[:, None] & (cols < NC)[None, :], other=0)
        s = tl.where(ok != 0, s, -1e9)  # the mixer's mask value: an all-invalid row stays finite
        tile_v = tl.where((cols < NC)[None, :], s, float("-inf"))
        tile_i = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.int32) + cols[None, :]
        new_v = tl.full([BLOCK_R, BLOCK_K], float("-inf"), ACC)
        new_i = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.int32) - 1 - kcol
        for j in tl.static_range(K):  # k passes of max over (running list, tile); ties -> lowest index
            best = tl.maximum(tl.max(run_v, axis=1), tl.max(tile_v, axis=1))
            i_run = tl.min(tl.where(run_v == best[:, None], run_i, 2147483647), axis=1)
            i_tile = tl.min(tl.where(tile_v == best[:, None], tile_i, 2147483647), axis=1)
            sel = tl.minimum(i_run, i_tile)
            new_v = tl.where(kcol == j, best[:, None], new_v)
            new_i = tl.where(kcol == j, sel[:, None], new_i)
            run_v = tl.where(run_i == sel[:, None], float("-inf"), run_v)
            tile_v = tl.where(tile_i == sel[:, None], float("-inf"), tile_v)
        run_v, run_i = new_v, new_i

    # softmax over the kept (column 0 is the max; -inf fillers beyond K give exactly 0)
    v0 = tl.max(run_v, axis=1)
    ex = tl.where(kmask, tl.exp(run_v - v0[:, None]), 0.0)
    den = tl.sum(ex, axis=1)
    p = ex / den[:, None]
    lse = v0 + tl.log(den)
    sel_mask = rmask[:, None] & kmask
    ok = tl.load(valid_rows + run_i, mask=sel_mask, other=0)
    w = p * (ok != 0).to(ACC)

    rk = (bn * C + rows[:, None]) * K + kcol
    tl.store(idx_ptr + rk, run_i, mask=sel_mask)
    tl.store(p_ptr + rk, p, mask=sel_mask)
    tl.store(lse_ptr + bn * C + rows, lse.to(lse_ptr.dtype.element_ty), mask=rmask)

    # read = sum_j w_j v_{idx_j}: a (rows, k, BLOCK_D) gather per block of value channels
    idx3 = run_i[:, :, None]
    in_state = sel_mask[:, :, None] & (idx3 < M)
    in_chunk = sel_mask[:, :, None] & (idx3 >= M)
    for d0 in range(0, DV, BLOCK_D):
        do = d0 + tl.arange(0, BLOCK_D)
        d3 = do[None, None, :]
        dmask = d3 < DV
        vs = tl.load(sv_ptr + bn * M * DV + idx3 * DV + d3, mask=in_state & dmask, other=0.0)
        vc = tl.load(cv_ptr + bn * C * DV + (idx3 - M) * DV + d3, mask=in_chunk & dmask, other=0.0)
        acc = tl.sum(w[:, :, None] * (vs.to(ACC) + vc.to(ACC)), axis=1)
        out_offs = bn * C * DV + rows[:, None] * DV + do[None, :]
        tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & (do < DV)[None, :])


@triton.jit
def _chunk_read_bwd_dq_kernel(
    sk_ptr, ck_ptr, sv_ptr, cv_ptr, valid_ptr, idx_ptr, p_ptr, dout_ptr, dlse_ptr,
    dq_ptr, ds_ptr, w_ptr,
    C, M, E, DV,
    K: tl.constexpr, ACC: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    bn = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < C
    NC = M + C
    kcol = tl.arange(0, BLOCK_K)[None, :]
    sel_mask = rmask[:, None] & (kcol < K)
    rk = (bn * C + rows[:, None]) * K + kcol
    idx = tl.load(idx_ptr + rk, mask=sel_mask, other=0)
    p = tl.load(p_ptr + rk, mask=sel_mask, other=0.0).to(ACC)
    dlse = tl.load(dlse_ptr + bn * C + rows, mask=rmask, other=0.0).to(ACC)
    ok = (tl.load(valid_ptr + bn * C * NC + rows[:, None] * NC + idx, mask=sel_mask, other=0) != 0).to(ACC)
    idx3 = idx[:, :, None]
    in_state = sel_mask[:, :, None] & (idx3 < M)
    in_chunk = sel_mask[:, :, None] & (idx3 >= M)

    dw = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)  # d read / d weight_j = <dread, v_{idx_j}>
    for d0 in range(0, DV, BLOCK_D):
        do = d0 + tl.arange(0, BLOCK_D)
        d3 = do[None, None, :]
        dmask = d3 < DV
        g = tl.load(
            dout_ptr + bn * C * DV + rows[:, None] * DV + do[None, :],
            mask=rmask[:, None] & (do < DV)[None, :],
            other=0.0,
        )
        vs = tl.load(sv_ptr + bn * M * DV + idx3 * DV + d3, mask=in_state & dmask, other=0.0)
        vc = tl.load(cv_ptr + bn * C * DV + (idx3 - M) * DV + d3, mask=in_chunk & dmask, other=0.0)
        dw += tl.sum(g.to(ACC)[:, None, :] * (vs.to(ACC) + vc.to(ACC)), axis=2)

    dp = dw * ok  # weight_j = p_j * ok_j
    ds = p * (dp - tl.sum(p * dp, axis=1)[:, None]) + dlse[:, None] * p
    ds = ds * ok  # masked_fill: no gradient into invalid scores
    tl.store(ds_ptr + rk, ds, mask=sel_mask)
    tl.store(w_ptr + rk, p * ok, mask=sel_mask)

    # dq = sum_j ds_j k_{idx_j}: a (rows, k, BLOCK_E) gather
    eo = tl.arange(0, BLOCK_E)
    e3 = eo[None, None, :]
    emask = e3 < E
    ks = tl.load(sk_ptr + bn * M * E + idx3 * E + e3, mask=in_state & emask, other=0.0)
    kc = tl.load(ck_ptr + bn * C * E + (idx3 - M) * E + e3, mask=in_chunk & emask, other=0.0)
    dq = tl.sum(ds[:, :, None] * (ks.to(ACC) + kc.to(ACC)), axis=1)
    dq_offs = bn * C * E + rows[:, None] * E + eo[None, :]
    tl.store(dq_ptr + dq_offs, dq.to(dq_ptr.dtype.element_ty), mask=rmask[:, None] & (eo < E)[None, :])


@triton.jit
def _chunk_read_bwd_dkv_kernel(
    q_ptr, dout_ptr, idx_ptr, ds_ptr, w_ptr, dk_ptr, dv_ptr,
    C, E, DV, NCOL, COL0,
    K: tl.constexpr, ACC: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Gradients of the candidate columns [COL0, COL0 + NCOL) (state: COL0 = 0; chunk: COL0 = M).

    The sparse (rows, k) ds and w are expanded to dense (rows, BLOCK_N) tiles, then
    dkey = ds^T q and dvalue = w^T dread by tl.dot, accumulated over the chunk's row blocks.
    """
    bn = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < NCOL
    g3 = (COL0 + cols)[None, None, :]
    kcol = tl.arange(0, BLOCK_K)[None, :]
    eo = tl.arange(0, BLOCK_E)
    emask = eo < E

    dk = tl.zeros([BLOCK_N, BLOCK_E], dtype=ACC)
    for r0 in range(0, C, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        rmask = rows < C
        rk = (bn * C + rows[:, None]) * K + kcol
        sel_mask = rmask[:, None] & (kcol < K)
        idx = tl.load(idx_ptr + rk, mask=sel_mask, other=-1)
        ds = tl.load(ds_ptr + rk, mask=sel_mask, other=0.0).to(ACC)
        dense = tl.sum(tl.where(idx[:, :, None] == g3, ds[:, :, None], 0.0), axis=1)
        q = tl.load(
            q_ptr + bn * C * E + rows[:, None] * E + eo[None, :], mask=rmask[:, None] & emask[None, :], other=0.0
        )
        dk += tl.dot(tl.trans(dense), q.to(ACC), input_precision="ieee", out_dtype=ACC)
    dk_offs = bn * NCOL * E + cols[:, None] * E + eo[None, :]
    tl.store(dk_ptr + dk_offs, dk.to(dk_ptr.dtype.element_ty), mask=cmask[:, None] & emask[None, :])

    for d0 in range(0, DV, BLOCK_D):
        do = d0 + tl.arange(0, BLOCK_D)
        dmask = do < DV
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
        for r0 in range(0, C, BLOCK_R):
            rows = r0 + tl.arange(0, BLOCK_R)
            rmask = rows < C
            rk = (bn * C + rows[:, None]) * K + kcol
            sel_mask = rmask[:, None] & (kcol < K)
            idx = tl.load(idx_ptr + rk, mask=sel_mask, other=-1)
            w = tl.load(w_ptr + rk, mask=sel_mask, other=0.0).to(ACC)
            dense = tl.sum(tl.where(idx[:, :, None] == g3, w[:, :, None], 0.0), axis=1)
            g = tl.load(
                dout_ptr + bn * C * DV + rows[:, None] * DV + do[None, :],
                mask=rmask[:, None] & dmask[None, :],
                other=0.0,
            )
            dv += tl.dot(tl.trans(dense), g.to(ACC), input_precision="ieee", out_dtype=ACC)
        dv_offs = bn * NCOL * DV + cols[:, None] * DV + do[None, :]
        tl.store(dv_ptr + dv_offs, dv.to(dv_ptr.dtype.element_ty), mask=cmask[:, None] & dmask[None, :])


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _acc_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _blocks(e: int, dv: int, k: int) -> dict:
    return dict(
        BLOCK_E=max(16, triton.next_power_of_2(e)),
        BLOCK_D=min(32, max(16, triton.next_power_of_2(dv))),
        BLOCK_K=max(2, triton.next_power_of_2(k)),
    )


class ChunkReadFunction(torch.autograd.Function):
    """(q, state_key, chunk_key, state_value, chunk_value, valid, k) -> (read, lse, idx, p).

    ``idx`` (int32) and ``p`` (float) are the selection, returned for the weights hook; not differentiable.
    """

    @staticmethod
    def forward(ctx, q, state_key, chunk_key, state_value, chunk_value, valid, k):
        b, n, c, e = q.shape
        m, dv = state_key.shape[-2], state_value.shape[-1]
        bn = b * n
        q_, sk, ck = (z.reshape(bn, -1, e).contiguous() for z in (q, state_key, chunk_key))
        sv, cv = (z.reshape(bn, -1, dv).contiguous() for z in (state_value, chunk_value))
        ok = valid.reshape(bn, c, m + c).contiguous().view(torch.uint8)
        out = torch.empty(bn, c, dv, device=q.device, dtype=q.dtype)
        lse = torch.empty(bn, c, device=q.device, dtype=q.dtype)
        idx = torch.empty(bn, c, k, device=q.device, dtype=torch.int32)
        p = torch.empty(bn, c, k, device=q.device, dtype=_acc_torch(q.dtype))
        blocks = _blocks(e, dv, k)
        if bn * c:
            grid = (bn, triton.cdiv(c, BLOCK_R))
            _chunk_read_fwd_kernel[grid](
                q_, sk, ck, sv, cv, ok, out, lse, idx, p, c, m, e, dv,
                K=k, ACC=_acc(q.dtype), BLOCK_R=BLOCK_R, BLOCK_N=BLOCK_N, **blocks,
            )  # fmt: skip
        ctx.save_for_backward(q_, sk, ck, sv, cv, ok, idx, p)
        ctx.shapes = (b, n, c, m, e, dv, k)
        ctx.mark_non_differentiable(idx, p)
        return out.view(b, n, c, dv), lse.view(b, n, c), idx.view(b, n, c, k), p.view(b, n, c, k)

    @staticmethod
    def backward(ctx, dout, dlse, _didx, _dp):
        q, sk, ck, sv, cv, ok, idx, p = ctx.saved_tensors
        b, n, c, m, e, dv, k = ctx.shapes
        bn = b * n
        dout = torch.zeros(bn, c, dv, device=q.device, dtype=q.dtype) if dout is None else dout.reshape(bn, c, dv)
        dlse = torch.zeros(bn, c, device=q.device, dtype=q.dtype) if dlse is None else dlse.reshape(bn, c)
        dout, dlse = dout.contiguous(), dlse.contiguous()
        dq = torch.empty_like(q)
        ds = torch.empty_like(p)
        w = torch.empty_like(p)
        dsk, dck, dsv, dcv = (torch.empty_like(z) for z in (sk, ck, sv, cv))
        blocks = _blocks(e, dv, k)
        if bn * c:
            acc = _acc(q.dtype)
            _chunk_read_bwd_dq_kernel[(bn, triton.cdiv(c, BLOCK_R))](
                sk, ck, sv, cv, ok, idx, p, dout, dlse, dq, ds, w, c, m, e, dv,
                K=k, ACC=acc, BLOCK_R=BLOCK_R, **blocks,
            )  # fmt: skip
            for dk, dvv, ncol, col0 in ((dsk, dsv, m, 0), (dck, dcv, c, m)):
                if ncol:
                    _chunk_read_bwd_dkv_kernel[(bn, triton.cdiv(ncol, BLOCK_N))](
                        q, dout, idx, ds, w, dk, dvv, c, e, dv, ncol, col0,
                        K=k, ACC=acc, BLOCK_R=BLOCK_R, BLOCK_N=BLOCK_N, **blocks,
                    )  # fmt: skip
        else:
            for z in (dq, dsk, dck, dsv, dcv):
                z.zero_()
        grads = (
            dq.view(b, n, c, e),
            dsk.view(b, n, m, e),
            dck.view(b, n, c, e),
            dsv.view(b, n, m, dv),
            dcv.view(b, n, c, dv),
        )
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:5])), None, None)


def chunk_read_triton(
    q: torch.Tensor,
    state_key: torch.Tensor,
    chunk_key: torch.Tensor,
    state_value: torch.Tensor,
    chunk_value: torch.Tensor,
    valid: torch.Tensor,
    k: int,
    need_weights: bool = False,
):
    """The chunked top-k read (contract of ``torch_impl.chunk_read_torch``) by Triton kernels, forward and backward.

    ``read`` and ``lse`` are differentiable in q, keys and values. ``weights`` (only when
    ``need_weights``; for the hook) is built from the kernel's selection and is detached.
    Raises ``ValueError`` when ``min(k, M + C) > MAX_K``; ``dispatch`` falls back to PyTorch then.
    Needs CUDA tensors, or ``TRITON_INTERPRET=1`` set before this module is imported (tests).
    """
    b, n, c, e = q.shape
    m = state_key.shape[-2]
    if valid.shape != (b, n, c, m + c) or valid.dtype != torch.bool:
        raise ValueError(
            f"valid must be a bool tensor of shape {(b, n, c, m + c)}, got {valid.dtype} {tuple(valid.shape)}"
        )
    kk = min(int(k), m + c)
    if not 1 <= kk <= MAX_K:
        raise ValueError(f"chunk_read_triton supports 1 <= min(k, M + C) <= {MAX_K}, got k={k} (M + C = {m + c})")
    read, lse, idx, p = ChunkReadFunction.apply(q, state_key, chunk_key, state_value, chunk_value, valid, kk)
    weights = None
    if need_weights:
        idx = idx.long()
        kept = p.to(q.dtype) * valid.gather(-1, idx).to(q.dtype)
        weights = torch.zeros(b, n, c, m + c, device=q.device, dtype=q.dtype).scatter(-1, idx, kept)
    return read, lse, weights
