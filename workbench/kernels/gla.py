"""Gated linear attention (GLA): a matrix state with a diagonal, data-dependent decay on one side.

Yang, Wang, Shen, Panda, Kim (2023), "Gated Linear Attention Transformers with Hardware-Efficient
Training", arXiv 2312.06635. Per batch and head, with a state ``S_t`` of shape (K, V), ``S_{-1}``
the initial state (zero unless given) and ``g_t`` log-decays (``g <= 0``, the decay is ``exp(g)``)::

    gate="key":    S_t = diag(exp g_t) S_{t-1} + k_t v_t^T        g_t in R^K (GLA's own form)
    gate="value":  S_t = S_{t-1} diag(exp g_t) + k_t v_t^T        g_t in R^V
    o_t = S_t^T q_t            (o_t[j] = sum_i q_t[i] S_t[i, j]; no scale: the caller scales q)

The "value" form is the one Gated Slot Attention's first pass needs (Zhang et al. 2024, arXiv
2409.07146: the slots are GLA's gated dimension, on the value side in pass 1 and on the key side
in pass 2); flash-linear-attention calls the two gates ``gv`` and ``gk``.

Three forms, one contract (shapes: q, k (B, H, T, K); v (B, H, T, V); g (B, H, T, K) for
``gate="key"``, (B, H, T, V) for ``gate="value"``; state (B, H, K, V); all return ``(o, state)``
with o (B, H, T, V) and the state after the last token):

* :func:`gla_naive`: the definition, a Python loop over time (tests and clarity only);
* :func:`gla_chunked`: the training form. Inside a chunk of C tokens (C a power of two), with
  ``G`` the inclusive cumulative sum of g from the chunk start, the decay between token i and a
  later token t is ``exp(G_t - G_i)``. The pairs i < t are met on a binary tree: at the level of
  half-size h every block of 2h positions splits into halves L and R, and for t in R, i in L::

      exp(G_t - G_i) = exp(G_t - G_p) * exp(G_p - G_i),   p = the last position of L,

  both exponents <= 0 and the product exact, so the block is one (h x h) product of q rescaled by
  ``exp(G_t - G_p)`` and k (or v) rescaled by ``exp(G_p - G_i)``. Each pair meets at exactly one
  level (its lowest common block), the pairs t = i have decay 1. The rescaling factors of level 2h
  are those of level h times the total decay of the neighbouring h-block (a product of decays, so
  one exp per input and no exp per level). log2(C) levels, O(T C (K + V)) multiply-adds, nothing
  with two sequence-sized dimensions, and no exponential of a positive number and no factor above
  1 anywhere: stable in float32 for any gate (a decay that underflows to 0 is what the exact
  product rounds to). Across chunks the state is carried by a loop over the T / C chunks
  (elementwise decay plus the chunk's own update; the updates and all reads are batched outside
  the loop); the tree's last level leaves exactly the factors exp(G_t) and exp(G_end - G_i) that
  the cross-chunk terms need. Forward and backward are written by hand (the backward runs the
  same tree: dG = q * dq - k * dk for the key gate, do * o - v * dv for the value gate, dg its
  reverse cumulative sum), and run slice by slice over batch x heads so the arrays stay in cache.
* :func:`gla_step`: one step of the recurrence (what a mixer's ``step`` calls).

Differences from the paper's algorithm: GLA's chunked form stabilises the intra-chunk decays by
secondary chunking with a log-space elementwise product on diagonal sub-blocks (on a GPU those
stay in registers); on a CPU that (C x C x K) tensor costs more than the matmuls, so here every
level is factorised exactly at its split point instead. The results are the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GATES = ("key", "value")
# Below this half-size the tree's block products are elementwise: batched matmuls of 1-4 rows
# cost more in per-matrix overhead than they save.
_MATMUL_FROM = 4
# About this many numbers in a slice's largest array (see _Chunked): 1 MB of float32, measured best.
_SLICE_ELEMENTS = 1 << 18


def _check(q, k, v, g, gate: str, state) -> None:
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    if q.dim() < 2 or q.shape[-2] == 0:
        raise ValueError(f"q must be (..., T, K) with T >= 1, got {tuple(q.shape)}")
    if q.shape != k.shape or q.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not match")
    gated = k if gate == "key" else v
    if g.shape != gated.shape:
        raise ValueError(f"g {tuple(g.shape)} must have the {gate} shape {tuple(gated.shape)}")
    if state is not None and state.shape != (*q.shape[:-2], q.shape[-1], v.shape[-1]):
        expected = (*q.shape[:-2], q.shape[-1], v.shape[-1])
        raise ValueError(f"state {tuple(state.shape)} must be (..., K, V) = {expected}")


def gla_step(q, k, v, g, state, *, gate: str = "key"):
    """One step: q, k (..., K), v (..., V), g (..., K or V), state (..., K, V) -> (o (..., V), state)."""
    decay = g.exp()
    if gate == "key":
        state = decay[..., :, None] * state + k[..., :, None] * v[..., None, :]
    elif gate == "value":
        state = state * decay[..., None, :] + k[..., :, None] * v[..., None, :]
    else:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    return (q[..., None, :] @ state).squeeze(-2), state


def gla_naive(q, k, v, g, *, gate: str = "key", initial_state=None):
    """The definition as a plain loop over the T positions (dim -2), written out on its own."""
    _check(q, k, v, g, gate, initial_state)
    state = initial_state
    if state is None:
        state = q.new_zeros(*q.shape[:-2], q.shape[-1], v.shape[-1])
    outputs = []
    for t in range(q.shape[-2]):
        decay = torch.exp(g[..., t, :])
        if gate == "key":  # S_t = diag(exp g_t) S_{t-1} + k_t v_t^T
            state = torch.einsum("...i,...ij->...ij", decay, state)
        else:  # S_t = S_{t-1} diag(exp g_t) + k_t v_t^T
            state = torch.einsum("...ij,...j->...ij", state, decay)
        state = state + torch.einsum("...i,...j->...ij", k[..., t, :], v[..., t, :])
        outputs.append(torch.einsum("...i,...ij->...j", q[..., t, :], state))  # o_t = S_t^T q_t
    return torch.stack(outputs, dim=-2), state


def _halves(a: torch.Tensor, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of (..., C, D) as blocks of 2h positions: (left, right) halves, each (..., C / 2h, h, D)."""
    pairs = a.view(*a.shape[:-2], a.shape[-2] // (2 * h), 2, h, a.shape[-1])
    return pairs[..., 0, :, :], pairs[..., 1, :, :]


def _cross(m: torch.Tensor, h: int) -> torch.Tensor:
    """View of the (right rows, left columns) block of each 2h-block on the diagonal of m (..., C, C)."""
    nb = m.shape[-1] // (2 * h)
    blocks = m.view(*m.shape[:-2], nb, 2 * h, nb, 2 * h).diagonal(dim1=-4, dim2=-2)  # (..., 2h, 2h, nb)
    return blocks[..., h:, :h, :].movedim(-1, -3)  # (..., C/2h, h, h)


def _outer(a: torch.Tensor, b: torch.Tensor, h: int) -> torch.Tensor:
    """a (..., h, D) times b (..., h, D) transposed: (..., h, h)."""
    if h == 1:
        return (a * b).sum(-1, keepdim=True)
    if h >= _MATMUL_FROM:
        return a @ b.transpose(-1, -2)
    return (a[..., :, None, :] * b[..., None, :, :]).sum(-1)


def _apply(m: torch.Tensor, x: torch.Tensor, h: int) -> torch.Tensor:
    """m (..., h, h) times x (..., h, D): (..., h, D)."""
    if h == 1:
        return m * x
    if h >= _MATMUL_FROM:
        return m @ x
    return (m[..., :, :, None] * x[..., None, :, :]).sum(-2)


def _advance(total: torch.Tensor, h: int, right=(), left=()) -> torch.Tensor:
    """Move the tree's rescaled arrays from level h to level 2h; returns the 2h-blocks' total decays.

    ``total`` (..., C / h, D) holds exp(sum of g) over each h-block. An array scaled for the right
    half at level h (by exp(G_t - G_p)) gets its right halves times the left h-block's total; one
    scaled for the left half (by exp(G_p - G_i)) gets its left halves times the right h-block's
    total. Every factor is a product of decays, so <= 1.
    """
    pair = total.view(*total.shape[:-2], total.shape[-2] // 2, 2, total.shape[-1])
    for x in right:
        _halves(x, h)[1].mul_(pair[..., 0:1, :])
    for x in left:
        _halves(x, h)[0].mul_(pair[..., 1:2, :])
    return pair[..., 0, :] * pair[..., 1, :]


def _levels(chunk: int):
    h = 1
    while h < chunk:
        yield h
        h *= 2


def _carry_forward(start, update, carry):
    """States entering each chunk, (..., n, K, V), and the final state: S_{j+1} = carry_j * S_j + U_j."""
    entering = torch.empty_like(update)
    state = start
    for j in range(update.shape[-3]):
        entering[..., j, :, :] = state
        state = carry[..., j, :, :] * state + update[..., j, :, :]
    return entering, state


def _carry_backward(grad_final, inject, carry):
    """Adjoint of :func:`_carry_forward`: gradients w.r.t. each chunk's exit state and the initial one.

    ``inject`` (..., n, K, V) is what the reads add to the gradient of each chunk's entering state.
    """
    exits = torch.empty_like(inject)
    running = grad_final
    for j in reversed(range(inject.shape[-3])):
        exits[..., j, :, :] = running
        running = carry[..., j, :, :] * running + inject[..., j, :, :]
    return exits, running


def _reverse_cumsum(x: torch.Tensor) -> torch.Tensor:
    """sum_{s >= t} x_s along dim -2 (summed from the end: no total - cumsum cancellation)."""
    return x.flip(-2).cumsum(-2).flip(-2)


def _key_forward(q, k, v, g, start):
    """gate="key" on chunked inputs: q, k, g (L, n, C, K), v (L, n, C, V), start (L, K, V).

    Per chunk: W[t, i] = sum_a q_t[a] k_i[a] exp(G_t[a] - G_i[a]) (i <= t) on the tree,
    o = W v + (q * exp(G)) S_in, S_out = exp(G_end) * S_in + (k * exp(G_end - G))^T v.
    """
    chunk = q.shape[-2]
    decay = g.exp()
    q_right, k_left, total = q * decay, k.clone(), decay
    w = q.new_zeros(*q.shape[:-1], chunk)
    w.diagonal(dim1=-2, dim2=-1).copy_((q * k).sum(-1))
    for h in _levels(chunk):
        _cross(w, h).copy_(_outer(_halves(q_right, h)[1], _halves(k_left, h)[0], h))
        total = _advance(total, h, right=(q_right,), left=(k_left,))
    # Now q_right = q * exp(G), k_left = k * exp(G_end - G), total = exp(G_end) (L, n, 1, K).
    update = k_left.transpose(-1, -2) @ v
    if start is None and q.shape[1] == 1:  # one chunk from a zero state: nothing enters it
        return w @ v, update[:, 0], (g, w, None)
    if start is None:
        start = q.new_zeros(q.shape[0], q.shape[-1], v.shape[-1])
    entering, final = _carry_forward(start, update, total.transpose(-1, -2))
    return w @ v + q_right @ entering, final, (g, w, entering)


def _key_backward(q, k, v, out, saved, grad, grad_final):
    """Gradients of :func:`_key_forward`: dW = tril(do v^T) gives dq, dk on the same tree, dv = W^T do,
    the states' gradients run backwards over the chunks, and dG = q * dq - k * dk (plus the chunk-end
    terms); dg is its reverse cumulative sum."""
    g, w, entering = saved
    decay = g.exp()  # recomputed: g is the saved input (one array for both passes of a mixer), decay is not kept
    chunk = q.shape[-2]
    dw = (grad @ v.transpose(-1, -2)).tril_()
    dv = w.transpose(-1, -2) @ grad
    diag = dw.diagonal(dim1=-2, dim2=-1)[..., None]
    dq, dk = diag * k, diag * q
    q_right, k_left, right, left, total = q * decay, k.clone(), decay.clone(), torch.ones_like(k), decay
    for h in _levels(chunk):
        block = _cross(dw, h)
        _halves(dq, h)[1].addcmul_(_halves(right, h)[1], _apply(block, _halves(k_left, h)[0], h))
        _halves(dk, h)[0].addcmul_(_halves(left, h)[0], _apply(block.transpose(-1, -2), _halves(q_right, h)[1], h))
        total = _advance(total, h, right=(q_right, right), left=(k_left, left))
    grad_start, end_terms = None, 0.0
    if entering is not None:
        if grad_final is None:
            grad_final = q.new_zeros(q.shape[0], q.shape[-1], v.shape[-1])
        exits, grad_start = _carry_backward(grad_final, q_right.transpose(-1, -2) @ grad, total.transpose(-1, -2))
        dq.addcmul_(grad @ entering.transpose(-1, -2), right)
        end_terms = total.squeeze(-2) * (entering * exits).sum(-1)
    else:  # one chunk from a zero state: only the final state's gradient comes back
        exits = None if grad_final is None else grad_final[:, None]
    if exits is not None:
        dv += k_left @ exits
        dk_out = (v @ exits.transpose(-1, -2)) * left
        dk += dk_out
        end_terms = end_terms + (k * dk_out).sum(-2)
    dG = torch.addcmul(q * dq, k, dk, value=-1)
    dG[..., -1, :] += end_terms
    return dq, dk, dv, _reverse_cumsum(dG), grad_start


def _value_forward(q, k, v, g, start):
    """gate="value" on chunked inputs: q, k (L, n, C, K), v, g (L, n, C, V), start (L, K, V).

    Per chunk: A = tril(q k^T); o_t = sum_{i <= t} A[t, i] exp(G_t - G_i) * v_i on the tree, plus
    (q S_in) * exp(G); S_out = S_in * exp(G_end) + k^T (v * exp(G_end - G)).
    """
    chunk = q.shape[-2]
    decay = g.exp()
    a = (q @ k.transpose(-1, -2)).tril_()
    out = a.diagonal(dim1=-2, dim2=-1)[..., None] * v
    right, v_left, total = decay.clone(), v.clone(), decay
    for h in _levels(chunk):
        _halves(out, h)[1].addcmul_(_halves(right, h)[1], _apply(_cross(a, h), _halves(v_left, h)[0], h))
        total = _advance(total, h, right=(right,), left=(v_left,))
    # Now right = exp(G), v_left = v * exp(G_end - G), total = exp(G_end) (L, n, 1, V).
    update = k.transpose(-1, -2) @ v_left
    if start is None and q.shape[1] == 1:  # one chunk from a zero state: nothing enters it
        return out, update[:, 0], (g, None, None)
    if start is None:
        start = q.new_zeros(q.shape[0], q.shape[-1], v.shape[-1])
    entering, final = _carry_forward(start, update, total)
    out.addcmul_(q @ entering, right)
    return out, final, (g, None, entering)  # A is one matmul: recomputed in backward, not kept


def _value_backward(q, k, v, out, saved, grad, grad_final):
    """Gradients of :func:`_value_forward`: dA[t, i] = sum_b do_t[b] v_i[b] exp(G_t[b] - G_i[b]) (the
    key form's scores with do and v), dv = the adjoint mix of do, dq = dA k, dk = dA^T q, and
    dG = do * o - v * dv (plus the chunk-end terms); dg is its reverse cumulative sum."""
    g, _, entering = saved
    decay = g.exp()
    a = (q @ k.transpose(-1, -2)).tril_()
    chunk = q.shape[-2]
    da = q.new_zeros(*q.shape[:-1], chunk)
    da.diagonal(dim1=-2, dim2=-1).copy_((grad * v).sum(-1))
    dv = a.diagonal(dim1=-2, dim2=-1)[..., None] * grad
    g_right, v_left, left, total = grad * decay, v.clone(), torch.ones_like(v), decay
    for h in _levels(chunk):
        grad_r = _halves(g_right, h)[1]
        _cross(da, h).copy_(_outer(grad_r, _halves(v_left, h)[0], h))
        _halves(dv, h)[0].addcmul_(_halves(left, h)[0], _apply(_cross(a, h).transpose(-1, -2), grad_r, h))
        total = _advance(total, h, right=(g_right,), left=(v_left, left))
    dq, dk = da @ k, da.transpose(-1, -2) @ q
    grad_start, end_terms = None, 0.0
    if entering is not None:
        if grad_final is None:
            grad_final = q.new_zeros(q.shape[0], q.shape[-1], v.shape[-1])
        exits, grad_start = _carry_backward(grad_final, q.transpose(-1, -2) @ g_right, total)
        dq += g_right @ entering.transpose(-1, -2)
        end_terms = total.squeeze(-2) * (entering * exits).sum(-2)
    else:  # one chunk from a zero state: only the final state's gradient comes back
        exits = None if grad_final is None else grad_final[:, None]
    if exits is not None:
        dk += v_left @ exits.transpose(-1, -2)
        dv_out = (k @ exits) * left
        dv += dv_out
        end_terms = end_terms + (v * dv_out).sum(-2)
    dG = torch.addcmul(grad * out, v, dv, value=-1)
    dG[..., -1, :] += end_terms
    return dq, dk, dv, _reverse_cumsum(dG), grad_start


_PASSES = {"key": (_key_forward, _key_backward), "value": (_value_forward, _value_backward)}


def _slices(lead: int, per_lead: int) -> list[slice]:
    """Split the lead dim so one slice's largest array holds about _SLICE_ELEMENTS numbers."""
    step = max(1, _SLICE_ELEMENTS // per_lead)
    return [slice(i, i + step) for i in range(0, lead, step)]


class _Chunked(torch.autograd.Function):
    """The chunked op on (L, n, C, D) inputs with a hand-written backward, run slice by slice over L.

    Slicing is only for speed: the op is memory-bound, and a slice's arrays stay in the cache
    through the tens of passes the tree makes over them.
    """

    @staticmethod
    def forward(ctx, gate, q, k, v, g, start):
        ctx.set_materialize_grads(False)
        forward = _PASSES[gate][0]
        ctx.gate, ctx.has_start = gate, start is not None
        ctx.slices = _slices(q.shape[0], q[0].numel() * max(q.shape[-1], v.shape[-1], q.shape[-2]) // q.shape[-1])
        # Without a backward to come (a prefill under no_grad) nothing is kept: the trees' arrays go
        # slice by slice, and each slice's output goes straight into its place in one array.
        keep = any(ctx.needs_input_grad)
        out = final = None
        saved = []
        for sl in ctx.slices:
            part, part_final, kept = forward(q[sl], k[sl], v[sl], g[sl], None if start is None else start[sl])
            if len(ctx.slices) == 1:
                out, final = part, part_final
            else:
                if out is None:
                    out = part.new_empty(q.shape[0], *part.shape[1:])
                    final = part_final.new_empty(q.shape[0], *part_final.shape[1:])
                out[sl], final[sl] = part, part_final
            if keep:
                saved.extend(kept)
        if keep:
            ctx.save_for_backward(q, k, v, out, *saved)  # freed after backward, like any saved tensor
        return out, final

    @staticmethod
    def backward(ctx, grad, grad_final):
        q, k, v, out, *saved = ctx.saved_tensors
        backward = _PASSES[ctx.gate][1]
        grad = torch.zeros_like(out) if grad is None else grad.contiguous()
        parts = []
        for i, sl in enumerate(ctx.slices):
            kept = saved[3 * i : 3 * i + 3]
            final_sl = None if grad_final is None else grad_final[sl]
            parts.append(backward(q[sl], k[sl], v[sl], out[sl], kept, grad[sl], final_sl))
        grads = [torch.cat(z) if len(z) > 1 else z[0] for z in list(zip(*parts))[: 5 if ctx.has_start else 4]]
        return None, *grads[:4], (grads[4] if ctx.has_start else None)


def gla_chunked(q, k, v, g, *, gate: str = "key", initial_state=None, chunk_size: int = 64):
    """The training form (see the module docstring); same contract as :func:`gla_naive`.

    ``chunk_size`` must be a power of two; a sequence shorter than it uses the smallest power of
    two that holds it. The tail is padded with k = v = 0 and g = 0, which leaves the state as it is.
    Forward and backward are written by hand (:class:`_ChunkedKey`, :class:`_ChunkedValue`).
    """
    _check(q, k, v, g, gate, initial_state)
    if not isinstance(chunk_size, int) or chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two, got {chunk_size!r}")
    *lead, t, _ = q.shape
    chunk = min(chunk_size, 1 << max(t - 1, 0).bit_length())
    pad = (-t) % chunk
    if pad:
        q, k, v, g = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v, g))
    n = (t + pad) // chunk
    # One lead dim, contiguous chunks: every array the op makes has one layout, and no matmul copies.
    q, k, v, g = (z.reshape(-1, n, chunk, z.shape[-1]).contiguous() for z in (q, k, v, g))
    if initial_state is not None:
        initial_state = initial_state.reshape(-1, *initial_state.shape[-2:])
    out, state = _Chunked.apply(gate, q, k, v, g, initial_state)
    out = out.reshape(*lead, n * chunk, out.shape[-1])
    return (out[..., :t, :] if pad else out), state.reshape(*lead, *state.shape[-2:])
