"""The selective scan (S6) of Mamba: three forms of one op.

Gu & Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv 2312.00752,
Algorithm 2 and eqs. (2a), (4): per channel e (of E = d_inner) and state index n (of N = d_state),

    h_t[e, n] = exp(delta_t[e] * A[e, n]) * h_{t-1}[e, n] + delta_t[e] * B_t[n] * u_t[e],   h_{-1} = 0,
    y_t[e]    = sum_n C_t[n] * h_t[e, n] + D[e] * u_t[e].

Discretisation: zero-order hold for A (``exp(delta A)``, the paper's eq. (4)) and, for B, the simplified
Euler rule ``delta B`` of the authors' reference implementation rather than eq. (4)'s ZOH
``(delta A)^-1 (exp(delta A) - I) delta B``; the authors say the simplification does not change
results (state-spaces/mamba issue #114). mambapy, the test oracle, does the same.
Shapes: ``u``, ``delta`` (batch, T, E); ``A`` (E, N), entries < 0; ``B``, ``C`` (batch, T, N), shared by
all channels (the paper's "selective" B and C of one group); ``D`` (E,) or None. ``delta`` is passed
after its softplus (the mixer does the projection, the bias and the softplus).

Forms (the flash-linear-attention convention):

* :func:`selective_scan_naive`: the definition, a Python loop over t (tests and clarity only);
* :func:`selective_scan_chunked`: the training form. No loop over positions: the time axis is cut
  into chunks of ``chunk_size`` tokens and, inside a chunk, the linear recurrence is solved by an
  in-place, work-efficient log-depth scan (Blelloch's up-sweep / down-sweep of the operator
  ``(a, x) o (a', x') = (a a', a' x + x')``), over all (batch, channel, state) lanes at once. The
  state entering a chunk is folded into the chunk's first input (``x_0 += a_0 h``), so the chunks
  follow one another in a loop of T / chunk_size iterations (and the batch is cut into blocks, so
  that a chunk's buffers hold about 2^19 numbers). Why a loop over chunks and not a log-depth scan
  over the chunk ends as well: the states of every position, (batch, T, E, N), are what must never
  exist at once (67M numbers, 268 MB, at batch 64, T 256, E 256, N 16; 1.7 GB at batch 50, T 2048),
  and a scan over chunk ends would need every chunk's states alive, or a second pass that
  re-exponentiates ``exp(A (S_t - S_start))`` at every position to add the carried state in; the
  loop costs T / C small iterations and keeps all the work in a few cache-sized buffers.
  A custom ``autograd.Function`` keeps only the inputs and the chunk-entry states (E N numbers per
  chunk) and recomputes a chunk's states in backward, where the adjoint recurrence
  ``g_t = C_t y'_t + a_{t+1} g_{t+1}`` runs as the same scan backwards in time; the decays'
  gradient is ``g_t a_t h_{t-1}`` (never the cancelling ``g_t (h_t - delta_t B_t u_t)``). Every
  decay is ``exp(delta * A)`` with ``delta >= 0``, ``A < 0``: nothing positive is ever exponentiated
  and every product of decays stays in [0, 1]. Tested against autograd of the naive form.
* :func:`selective_scan_step`: one recurrent step, ``(y_t, h_t)`` from ``h_{t-1}`` (what ``Mixer.step`` calls).

Differences from the paper: only the B discretisation above. The paper's kernel is a fused GPU scan that keeps
the states in SRAM; here the chunked form plays that role on CPU (bounded buffers, recompute in
backward). The paper's variable-length, complex-valued and grouped-B/C variants are not offered.
"""

from __future__ import annotations

import math

import torch

DEFAULT_CHUNK = 32  # tokens per chunk of the chunked form (speed and memory only: any value gives the same y)
LOG2_E = 1.0 / math.log(2.0)
# Numbers per (batch block, chunk, N, E) buffer: 2 MB in float32. The backward pass works in four such
# buffers (and half of one for the scan's products), so they stay in the last-level cache; 2^19 was
# fastest of 2^18..2^21 for a training step at batch 64, T 256, E 256, N 16 (one thread; 2^21 was 60% slower).
_TARGET_BLOCK = 1 << 19


def _check(u, delta, A, B, C, D) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must be (batch, T, E) of one shape, got {tuple(u.shape)}, {tuple(delta.shape)}")
    batch, t, e = u.shape
    if A.dim() != 2 or A.shape[0] != e:
        raise ValueError(f"A must be (E, N) with E = {e}, got {tuple(A.shape)}")
    n = A.shape[1]
    for name, v in (("B", B), ("C", C)):
        if tuple(v.shape) != (batch, t, n):
            raise ValueError(f"{name} must be (batch, T, N) = {(batch, t, n)}, got {tuple(v.shape)}")
    if D is not None and tuple(D.shape) != (e,):
        raise ValueError(f"D must be (E,) = ({e},), got {tuple(D.shape)}")


# ----------------------------------------------------------------------------- the definition


def selective_scan_naive(u, delta, A, B, C, D=None):
    """The recurrence as written, one Python step per position (for tests; differentiable by autograd)."""
    _check(u, delta, A, B, C, D)
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])  # (batch, E, N)
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * B[:, t, None, :]
        y = (h * C[:, t, None, :]).sum(-1)
        if D is not None:
            y = y + D * u[:, t]
        ys.append(y)
    return torch.stack(ys, dim=1)


def selective_scan_step(u_t, delta_t, A, B_t, C_t, h, D=None):
    """One step from ``h`` = h_{t-1} (batch, E, N): ``u_t``, ``delta_t`` (batch, E); ``B_t``, ``C_t`` (batch, N).

    Returns ``(y_t (batch, E), h_t (batch, E, N))``.
    """
    decay = torch.exp(delta_t[..., None] * A)  # (batch, E, N), in (0, 1]
    h = decay * h + (delta_t * u_t)[..., None] * B_t[:, None, :]
    y = (h @ C_t[..., None])[..., 0]
    if D is not None:
        y = y + D * u_t
    return y, h


# ----------------------------------------------------------------------------- the in-place scan


def scan_(a: torch.Tensor, x: torch.Tensor, reverse: bool = False, scratch: torch.Tensor | None = None) -> None:
    """Solve ``x_t <- a_t x_{t-1} + x_t`` (or ``x_t <- a_t x_{t+1} + x_t`` when ``reverse``) in place along dim 1.

    Blelloch's work-efficient scan, written recursively on strided views: pair each element with
    its neighbour (``x_odd += a_odd x_even``, ``a_odd *= a_even``), solve the half-length problem on
    the odd elements, then finish the even ones from their solved neighbour. ceil(log2 L) levels
    each way, about 3 L elementwise updates in all, any length L. Both tensors are (batch, L, ...).
    The coefficient of the first position (of the last, when ``reverse``) is never applied.

    ``a`` is overwritten with partial products, unless ``scratch`` is given: a flat buffer of at
    least half of ``a``'s numbers, which then holds the products and leaves ``a`` as it was.
    """
    n = x.shape[1]
    if n < 2:
        return
    k = n // 2
    if not reverse:  # receivers 1, 3, ..., 2k-1 take from 0, 2, ...; then 2, 4, ... take from 1, 3, ...
        recv, send = slice(1, 2 * k, 2), slice(0, 2 * k - 1, 2)
        fix, prev = slice(2, n, 2), slice(1, n - 1, 2)
    else:  # the mirror image: receivers n-2, n-4, ... take from n-1, n-3, ...
        recv, send = slice(n - 2 * k, n - 1, 2), slice(n - 2 * k + 1, n, 2)
        fix, prev = slice((n + 1) % 2, n - 2, 2), slice((n + 1) % 2 + 1, n - 1, 2)
    a_recv, x_recv = a[:, recv], x[:, recv]
    x_recv.addcmul_(a_recv, x[:, send])
    if scratch is None:
        products = a_recv.mul_(a[:, send])
    else:
        shape = a_recv.shape
        products = torch.mul(a_recv, a[:, send], out=scratch[: a_recv.numel()].view(shape))
    scan_(products, x_recv, reverse)
    x[:, fix].addcmul_(a[:, fix], x[:, prev])


# ----------------------------------------------------------------------------- the chunked form


def _plan(batch: int, t: int, e: int, n: int, chunk_size: int) -> tuple[int, int]:
    """(batch block, chunk length): chunks of at most ``chunk_size`` tokens, buffers of about _TARGET_BLOCK numbers."""
    chunk = max(1, min(chunk_size, t))
    block = max(1, min(batch, _TARGET_BLOCK // max(1, chunk * e * n)))
    return block, chunk


def _take(buffer: torch.Tensor, b: int, c: int) -> torch.Tensor:
    """A contiguous (b, c, N, E) view at the start of a flat buffer."""
    n, e = buffer.shape[-2:]
    return buffer.view(-1)[: b * c * n * e].view(b, c, n, e)


def _decay_into(out: torch.Tensor, delta: torch.Tensor, A2_t: torch.Tensor) -> torch.Tensor:
    """out <- exp(delta_t[e] * A[e, n]) as (b, c, N, E), decays in (0, 1]; ``A2_t`` is (A log2 e) transposed (N, E).

    Computed as ``exp2(delta * A log2 e)``: the same number, and exp2 costs a third of exp on CPU.
    """
    torch.mul(delta[:, :, None, :], A2_t, out=out)
    return out.exp2_()


def _input_into(out: torch.Tensor, w: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """out <- B_t[n] * w_t[e] as (b, c, N, E): the inputs delta u B of the recurrence."""
    return torch.mul(B[..., None], w[:, :, None, :], out=out)


def _sum_states(h: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """sum_n C[b, t, n] h[b, t, n, e] -> (b, t, E): a (1 x N) @ (N x E) product per position."""
    b, c, n, e = h.shape
    return torch.bmm(C.reshape(b * c, 1, n), h.view(b * c, n, e)).view(b, c, e)


def _sum_channels(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_e h[b, t, n, e] v[b, t, e] -> (b, t, N): a (1 x E) @ (E x N) product per position (h transposed, no copy)."""
    b, c, n, e = h.shape
    return torch.bmm(v.reshape(b * c, 1, e), h.view(b * c, n, e).transpose(1, 2)).view(b, c, n)


class _SelectiveScan(torch.autograd.Function):
    """y_t[e] = sum_n C_t[n] h_t[e, n] + D[e] u_t[e], chunked; backward recomputes the states chunk by chunk.

    Inside, states are laid out (batch, chunk, N, E): E (the widest axis) is contiguous, and every
    sum over N or over E is a batch of small matmuls (no scratch tensor). Everything of size
    (batch, chunk, N, E) lives in a few reused buffers of about _TARGET_BLOCK numbers. D is optional
    (None). The chunk-entry states are kept only when a gradient will be asked for (``keep``).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, chunk_size: int, keep: bool):
        batch, t, e = u.shape
        n = A.shape[1]
        block, chunk = _plan(batch, t, e, n, chunk_size)
        n_chunks = -(-t // chunk)
        A2_t = (A * LOG2_E).t().contiguous()
        y = u.new_empty(batch, t, e)
        starts = u.new_empty(batch, n_chunks if keep else 0, n, e)  # the state entering each chunk (for backward)
        a_buf = u.new_empty(block, chunk, n, e)
        h_buf = u.new_empty(block, chunk, n, e)
        for b0 in range(0, batch, block):
            bs = slice(b0, min(b0 + block, batch))
            nb = bs.stop - b0
            h = u.new_zeros(nb, n, e)
            for j in range(n_chunks):
                ts = slice(j * chunk, min((j + 1) * chunk, t))
                c = ts.stop - ts.start
                a, x = _take(a_buf, nb, c), _take(h_buf, nb, c)
                u_c, delta_c = u[bs, ts], delta[bs, ts]
                if keep:
                    starts[bs, j] = h
                _decay_into(a, delta_c, A2_t)
                _input_into(x, delta_c * u_c, B[bs, ts])
                x[:, 0].addcmul_(a[:, 0], h)
                scan_(a, x)
                y_c = _sum_states(x, C[bs, ts])
                if D is not None:
                    y_c.addcmul_(u_c, D)
                y[bs, ts] = y_c
                h = x[:, -1].clone()
        ctx.save_for_backward(u, delta, A, B, C, D, starts)
        ctx.plan = (block, chunk)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        u, delta, A, B, C, D, starts = ctx.saved_tensors
        block, chunk = ctx.plan
        batch, t, e = u.shape
        n = A.shape[1]
        n_chunks = -(-t // chunk)
        A_t = A.t().contiguous()
        A2_t = (A * LOG2_E).t().contiguous()
        grad_y = grad_y.contiguous()
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(u)
        grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
        grad_A_t = torch.zeros_like(A_t)
        grad_D = None if D is None else torch.zeros_like(D)
        a_buf, h_buf, g_buf = (u.new_empty(block, chunk, n, e) for _ in range(3))
        scratch = u.new_empty(block * (chunk // 2 + 1) * n * e)  # the scans' partial products
        for b0 in range(0, batch, block):
            bs = slice(b0, min(b0 + block, batch))
            nb = bs.stop - b0
            carry = u.new_zeros(nb, n, e)  # a_{t+1} g_{t+1} from the chunk after this one
            for j in reversed(range(n_chunks)):
                ts = slice(j * chunk, min((j + 1) * chunk, t))
                c = ts.stop - ts.start
                a, h, g = (_take(v, nb, c) for v in (a_buf, h_buf, g_buf))
                u_c, delta_c, B_c, C_c, gy = u[bs, ts], delta[bs, ts], B[bs, ts], C[bs, ts], grad_y[bs, ts]
                w_c = delta_c * u_c
                # Recompute the chunk's states h; the scan keeps the decays a (its products go to scratch).
                _decay_into(a, delta_c, A2_t)
                _input_into(h, w_c, B_c)
                h[:, 0].addcmul_(a[:, 0], starts[bs, j])
                scan_(a, h, scratch=scratch)
                # Adjoint states g_t = dL/dh_t = C_t y'_t + a_{t+1} g_{t+1}: the same scan, backwards in time,
                # on g[:c-1] with the coefficients a[1:] once g_{c-1} (which takes the carry) is folded in.
                torch.mul(C_c[..., None], gy[:, :, None, :], out=g)
                g[:, c - 1].add_(carry)
                if c > 1:
                    g[:, c - 2].addcmul_(a[:, c - 1], g[:, c - 1])
                    scan_(a[:, 1:], g[:, : c - 1], reverse=True, scratch=scratch)
                carry = a[:, 0] * g[:, 0]
                # Gradients of the chunk's inputs.
                grad_C[bs, ts] = _sum_channels(h, gy)
                grad_B[bs, ts] = _sum_channels(g, w_c)
                grad_w = _sum_states(g, B_c)
                # Through the decays: dL/d(delta_t A) = g_t a_t h_{t-1} (not g_t (h_t - delta_t B_t u_t), which
                # cancels), formed in a; h is free for scratch.
                q = a
                q[:, 1:].mul_(h[:, :-1])
                q[:, 0].mul_(starts[bs, j])
                q.mul_(g)
                grad_delta[bs, ts] = torch.mul(q, A_t, out=h).sum(-2).addcmul_(grad_w, u_c)
                grad_A_t += q.mul_(delta_c[:, :, None, :]).sum((0, 1))
                grad_u_c = grad_w.mul_(delta_c)
                if D is not None:
                    grad_u_c.addcmul_(gy, D)
                    grad_D += (gy * u_c).sum((0, 1))
                grad_u[bs, ts] = grad_u_c
        return grad_u, grad_delta, grad_A_t.t(), grad_B, grad_C, grad_D, None, None


def selective_scan_chunked(u, delta, A, B, C, D=None, chunk_size: int = DEFAULT_CHUNK):
    """The training form: same contract as :func:`selective_scan_naive`, chunked, no loop over positions."""
    _check(u, delta, A, B, C, D)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    u, delta, B, C = (v.contiguous() for v in (u, delta, B, C))
    keep = torch.is_grad_enabled() and any(v is not None and v.requires_grad for v in (u, delta, A, B, C, D))
    return _SelectiveScan.apply(u, delta, A.contiguous(), B, C, D, chunk_size, keep)
