"""The (gated) delta rule: a matrix memory written by error correction, with an optional decay.

Per head, with a matrix state ``S_t`` (d_v x d_k in the papers' notation), keys ``k_t`` (d_k),
values ``v_t`` (d_v), queries ``q_t`` (d_k), a write strength ``beta_t`` in (0, 1) and a decay
``alpha_t`` in (0, 1]:

    S_t = alpha_t * S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,      o_t = S_t q_t.

Equivalently ``S_t = a S_{t-1} + beta_t (v_t - a S_{t-1} k_t) k_t^T`` with ``a = alpha_t``: the
memory first decays, then moves its prediction for key ``k_t`` a fraction ``beta_t`` of the way
to ``v_t`` (one step of online regression; with ``beta_t = 1`` and a unit key the old value at
that key is overwritten). ``alpha_t = 1`` everywhere is DeltaNet.

* DeltaNet: Schlag, Irie, Schmidhuber 2021, "Linear Transformers Are Secretly Fast Weight
  Programmers" (arXiv 2102.11174) for the delta rule; Yang, Wang, Zhang, Shen, Kim 2024,
  "Parallelizing Linear Transformers with the Delta Rule over Sequence Length" (arXiv 2406.06484)
  for the chunked WY form.
* Gated DeltaNet: Yang, Kautz, Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with
  Delta Rule" (arXiv 2412.06464), section 3.3 for the gated chunked form.

Contract (all three forms; implemented from the equations above):

* ``q``, ``k``: (B, H, T, d_k); ``v``: (B, H, T, d_v); ``beta``: (B, H, T);
  ``log_alpha``: (B, H, T), ``<= 0`` (``log alpha_t``), or ``None`` for DeltaNet (alpha = 1);
* ``initial_state``: (B, H, d_k, d_v) or ``None`` (zeros);
* returns ``(o, state)`` with ``o`` (B, H, T, d_v) and the final state (B, H, d_k, d_v).

The state is stored key-major, ``state = S^T`` (d_k x d_v), so that ``o_t = q_t @ state``
(flash-linear-attention stores it the same way). The op does not normalize the keys: the
stability of the recurrence needs ``beta_t ||k_t||^2 <= 2`` (the mixer L2-normalizes them). No
``1 / sqrt(d_k)`` scale is applied to the queries (fla's kernels apply one; the mixer's per-head
RMSNorm after the op makes it irrelevant).

The chunked form (training). Split the sequence into chunks of C positions. In a chunk, with
``g_r = sum_{i <= r} log alpha_i`` (the cumulative log-decay within the chunk, r = 1..C),
``gamma_r = exp(g_r)`` and the chunk's starting state ``S0`` (key-major), write the update as
``S_r = alpha_r S_{r-1} + k_r u_r^T``. Its "pseudo-values" ``u_r`` solve a unit lower-triangular
C x C system (the WY / UT representation):

    (I + A) U = diag(beta) V - diag(beta * gamma) K S0,    A[r, i] = beta_r exp(g_r - g_i) k_r.k_i  (i < r)

so ``U = U0 - W S0`` with ``[W, U0] = (I + A)^{-1} [diag(beta gamma) K, diag(beta) V]``. The inverse
``T = (I + A)^{-1}`` is the UT transform; :func:`unit_lower_inverse` builds it from batched matrix
products (8 x 8 diagonal blocks, then merged 16, 32, 64), which on CPU is about twice as fast as
LAPACK's batched triangular solve. Then, with ``P[r, i] = exp(g_r - g_i) q_r.k_i`` for ``i <= r``:

    O     = diag(gamma) Q S0 + P U                                   (the chunk's outputs)
    S_end = gamma_C S0 + K_end^T U,        K_end = diag(exp(g_C - g)) K

A, P, T, W and U0 are computed for all chunks at once (batched C x C and C x d products); the
carry over the T / C chunks is a Python loop of four batched products per chunk (``W S0``,
``Q S0``, ``P U``, ``K_end^T U``: what fla does too; nothing per position). Folding ``W`` into a
d_k x d_k chunk transition computed for all chunks at once, so that the loop holds one product,
measured 10% slower at batch 64, T = 256 (more flops), though faster at batch 8, T = 2048.

Decays appear only as ``exp`` of differences ``g_r - g_i <= 0`` (masked to -inf above the
diagonal before the ``exp``) or of ``g <= 0``: never ``exp`` of a positive number, so float32
is safe however strong the decay (they underflow to 0, they cannot overflow). The one float32
rounding to mind: ``g`` is a sum within the chunk, so a decay ``exp(g_r - g_i)`` carries a relative
error of about 6e-8 |g_r| (1e-4 after a cumulative log-decay of -1000). ``log_alpha`` must be
finite (alpha > 0; the mixer's never reaches 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gated_delta_rule_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_alpha: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, a loop over time with the full (d_k x d_k) transition (tests only)."""
    b, h, t, d_k = k.shape
    state = _initial(initial_state, k, v)
    eye = torch.eye(d_k, dtype=k.dtype, device=k.device)
    outputs = []
    for i in range(t):
        k_i, beta_i = k[:, :, i], beta[:, :, i, None, None]
        transition = eye - beta_i * k_i[..., :, None] * k_i[..., None, :]  # I - beta k k^T
        if log_alpha is not None:
            transition = log_alpha[:, :, i, None, None].exp() * transition
        state = transition @ state + beta_i * k_i[..., :, None] * v[:, :, i, None, :]  # S^T, key-major
        outputs.append((q[:, :, i, None, :] @ state)[..., 0, :])
    return torch.stack(outputs, dim=2), state


def gated_delta_rule_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_alpha: torch.Tensor | None,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: q, k (B, H, d_k), v (B, H, d_v), beta and log_alpha (B, H), state (B, H, d_k, d_v).

    Rank-one form, O(d_k d_v) per head: decay, predict ``S^T k``, correct by ``beta (v - prediction)``.
    """
    if log_alpha is not None:
        state = state * log_alpha.exp()[..., None, None]
    prediction = (k[..., None, :] @ state)[..., 0, :]
    state = state + k[..., :, None] * (beta[..., None] * (v - prediction))[..., None, :]
    return (q[..., None, :] @ state)[..., 0, :], state


def gated_delta_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_alpha: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training form: WY representation per chunk (the UT transform), a loop over chunks only."""
    b, h, t, d_k = k.shape
    d_v = v.shape[-1]
    c = min(chunk_size, t)
    pad = (-t) % c
    if pad:  # zero keys, values and beta, and no decay: padded positions leave the state as it is
        q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
        beta = F.pad(beta, (0, pad))
        log_alpha = None if log_alpha is None else F.pad(log_alpha, (0, pad))
    n = (t + pad) // c
    q, k = q.reshape(b, h, n, c, d_k), k.reshape(b, h, n, c, d_k)
    v, beta = v.reshape(b, h, n, c, d_v), beta.reshape(b, h, n, c, 1)

    lower = torch.ones(c, c, dtype=torch.bool, device=k.device).tril()
    # Both C x C score matrices in one product: rows [beta_r k_r; q_r] against the keys k_i.
    scores = (torch.cat([k * beta, q], dim=-2) @ k.transpose(-1, -2)).view(b, h, n, 2, c, c)
    if log_alpha is None:
        scores = scores.masked_fill(~lower, 0.0)
        w_rhs = k * beta
    else:
        g = log_alpha.reshape(b, h, n, c).cumsum(-1)  # within-chunk cumulative log-decay, <= 0
        decay = (g[..., :, None] - g[..., None, :]).masked_fill(~lower, float("-inf")).exp()  # exp(g_r - g_i), i <= r
        scores = scores * decay[:, :, :, None]
        gamma = g.exp()[..., None]
        w_rhs = k * (beta * gamma)
    a, p = scores.unbind(3)  # A (only its strictly lower part is read) and P
    # (I + A) [W, U0] = [diag(beta gamma) K, diag(beta) V]; A's diagonal and upper part are never read.
    solved = UnitLowerSolve.apply(a, torch.cat([w_rhs, v * beta], -1))
    w, u0 = solved.split([d_k, d_v], dim=-1)
    if log_alpha is None:
        q_decayed, k_end, carry = q, k, None
    else:
        q_decayed = q * gamma  # reads the chunk's starting state
        k_end = k * (g[..., -1:] - g).exp()[..., None]  # what each key still weighs at the chunk's end
        carry = g[..., -1].exp()[..., None, None]

    state = _initial(initial_state, k, v)
    outputs = []
    # unbind, not x[:, :, i] per chunk: the backward of an index allocates a zero array the size of
    # x for every chunk (n of them per input), that of unbind stacks the n gradients once.
    carries = [None] * n if carry is None else carry.unbind(2)
    for u0_i, w_i, q_i, p_i, k_i, carry_i in zip(u0.unbind(2), w.unbind(2), q_decayed.unbind(2), p.unbind(2),
                                                   k_end.unbind(2), carries):
        u = u0_i - w_i @ state  # the chunk's pseudo-values, given its starting state
        outputs.append(q_i @ state + p_i @ u)
        decayed = state if carry_i is None else carry_i * state
        state = decayed + k_i.transpose(-1, -2) @ u
    out = torch.stack(outputs, dim=2)
    out = out.reshape(b, h, n * c, d_v)
    return (out[:, :, :t] if pad else out), state


def unit_lower_inverse(a: torch.Tensor, base: int = 8) -> torch.Tensor:
    """``(I + tril(a, -1))^{-1}`` for a (..., C, C), by matrix products only (the UT transform).

    The diagonal blocks of ``base`` x ``base`` are inverted by the finite Neumann product
    ``(I + N)^{-1} = (I - N)(I + N^2)(I + N^4)`` (exact: ``N^8 = 0``; the blocks are small, so
    the alternating powers stay small and nothing cancels badly), then neighbouring blocks are
    merged, ``[[L11, 0], [L21, L22]]^{-1} = [[T11, 0], [-T22 L21 T11, T22]]``, doubling the size
    each round (8 -> 16 -> 32 -> 64): a few batched products instead of LAPACK's triangular solve,
    which runs matrix by matrix (it was the slowest op of the layer on CPU). C is padded with
    zeros up to 8 times a power of two.
    """
    c = a.shape[-1]
    size = base
    while size < c:
        size *= 2
    if size != c:  # zero rows and columns: the inverse of the padded matrix holds the original's
        a = F.pad(a, (0, size - c, 0, size - c))
    eye = torch.eye(base, dtype=a.dtype, device=a.device)
    n_blocks = size // base
    blocks = a.unflatten(-2, (n_blocks, base)).unflatten(-1, (n_blocks, base))  # (..., nb, s, nb, s)
    minus_n = -blocks.diagonal(dim1=-4, dim2=-2).movedim(-1, -3).tril(-1)  # (..., nb, s, s)
    inverse, power = eye + minus_n, minus_n
    for _ in range(base.bit_length() - 2):  # base 8: M^2 and M^4
        power = power @ power
        inverse = inverse + inverse @ power
    s = base
    while s < size:
        n_blocks = size // s
        blocks = a.unflatten(-2, (n_blocks, s)).unflatten(-1, (n_blocks, s))
        lower = blocks[..., 1::2, :, 0::2, :].diagonal(dim1=-4, dim2=-2).movedim(-1, -3)  # L21 of each pair
        t11, t22 = inverse[..., 0::2, :, :], inverse[..., 1::2, :, :]
        t21 = -(t22 @ (lower @ t11))
        top = torch.cat([t11, torch.zeros_like(t11)], dim=-1)
        inverse = torch.cat([top, torch.cat([t21, t22], dim=-1)], dim=-2)
        s *= 2
    inverse = inverse[..., 0, :, :]
    return inverse[..., :c, :c] if size != c else inverse


class UnitLowerSolve(torch.autograd.Function):
    """``X = (I + tril(a, -1))^{-1} rhs``; backward ``dR = T^T dX``, ``da = -tril(dR X^T, -1)``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        inverse = unit_lower_inverse(a)
        solved = inverse @ rhs
        ctx.save_for_backward(inverse, solved)
        return solved

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        inverse, solved = ctx.saved_tensors
        grad_rhs = inverse.transpose(-1, -2) @ grad
        return -(grad_rhs @ solved.transpose(-1, -2)).tril(-1), grad_rhs


def _initial(initial_state: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The given state, or zeros (B, H, d_k, d_v) for k (B, H, ..., d_k) and v (B, H, ..., d_v)."""
    if initial_state is None:
        return k.new_zeros(*k.shape[:2], k.shape[-1], v.shape[-1])
    return initial_state
