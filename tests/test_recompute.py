"""workbench.kernels.recompute: the memory-saving forms equal the plain autograd forms and keep fewer bytes."""

from __future__ import annotations

import pytest
import torch

from workbench.kernels.ema.torch_impl import ema_chunked
from workbench.kernels.recompute import (
    candidate_rows,
    candidate_scores,
    plain_forms,
    projected_context,
    scaled_linear,
)
from workbench.mixers.inverted import InvertedMixer, InvertedOptions


def grads_of(fn, inputs):
    """(output, gradients of a fixed random projection of it) with respect to ``inputs``."""
    out = fn(*inputs)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    return out, torch.autograd.grad((out * probe).sum(), inputs)


def assert_same_as_plain(fn, inputs, tol=1e-12):
    out, grads = grads_of(fn, inputs)
    with plain_forms():
        out_ref, grads_ref = grads_of(fn, inputs)
    torch.testing.assert_close(out, out_ref, rtol=tol, atol=tol)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=tol, atol=tol)


def leaves(*shapes):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]


def test_scaled_linear_equals_linear_times_scale():
    x, weight, scale = leaves((2, 9, 6), (5, 6), (2, 9))
    with torch.no_grad():
        scale[0, :4] = 0.0  # gated-off rows: zero value, a gradient for the scale all the same
    assert_same_as_plain(scaled_linear, [x, weight, scale])


def test_candidate_scores_equal_the_gathered_matmul():
    b, n, c, m, e = 2, 3, 4, 5, 6
    q, keys = leaves((b, n, c, e), (b, n * c, e))
    start = torch.randint(-1, n * c, (b, n, m), generator=torch.Generator().manual_seed(2))
    start[:, 0] = -1  # the first chunk sees empty units (row 0 stands in, repeated)
    rows = candidate_rows(start, n * c, c)
    assert rows.shape == (b, n, m + c)
    # The chunk's own rows are its positions; the units' rows are where they were written.
    assert torch.equal(rows[1, 2, m:], n * c + 2 * c + torch.arange(c))
    assert torch.equal(rows[..., :m], torch.arange(b)[:, None, None] * n * c + start.clamp_min(0))
    assert_same_as_plain(lambda q, k: candidate_scores(q, k, rows), [q, keys])


def test_projected_context_equals_the_linear_of_the_ema():
    h, weight = leaves((2, 70, 6), (4, 6))
    decay = torch.tensor([0.9, 0.9, 0.99, 0.99, 0.999, 0.999], dtype=torch.float64)
    assert_same_as_plain(lambda h, w: projected_context(h, w, lambda z: ema_chunked(z, decay, 16)), [h, weight])


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for backward while ``fn`` runs."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


@pytest.mark.parametrize("surrogate", [True, False])
def test_inverted_training_step_same_as_plain_with_less_kept(surrogate):
    torch.manual_seed(0)
    mixer = InvertedMixer(16, InvertedOptions(n_units=8, read_topk=2, chunk_size=8, write_bias=0.0,
                                              write_surrogate=surrogate)).double()  # fmt: skip
    for p in mixer.parameters():
        torch.nn.init.normal_(p, std=0.4)
    x = torch.randn(3, 64, 16, dtype=torch.float64, requires_grad=True)
    params = [x, *mixer.parameters()]

    def step():
        y = mixer(x)
        return (y * torch.sin(y)).sum() + mixer.aux_loss

    loss, kept = saved_bytes(step)
    grads = torch.autograd.grad(loss, params)
    with plain_forms():
        loss_ref, kept_ref = saved_bytes(step)
        grads_ref = torch.autograd.grad(loss_ref, params)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-12)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)
    # Not kept: the EMA and the unscaled value (B, T, d) and the candidate keys (B, n, M + C, E); kept
    # instead: the keys themselves (B, T, E). float64, B = 3, T = 64, d = 16, n = 8 chunks, M + C = 16, E = 64.
    b, t, d, n, candidates, e = 3, 64, 16, 8, 16, mixer.o.d_key + 2 * mixer.o.n_freq
    assert kept_ref - kept == 8 * (2 * b * t * d + b * n * candidates * e - b * t * e), (kept, kept_ref)
