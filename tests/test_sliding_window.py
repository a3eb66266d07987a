"""Sliding-window attention: the banded op's three forms, a dense masked-softmax oracle, the mixer's
parallel and recurrent forms, its O(T * W) memory and constant state."""

from __future__ import annotations

import pytest
import torch

from workbench.config import ConfigError
from workbench.kernels.window_attention import (
    window_attention_chunked,
    window_attention_naive,
    window_attention_step,
)
from workbench.mixers import MIXERS
from workbench.mixers.base import count_floats
from workbench.mixers.sliding_window import SlidingWindowAttention, SlidingWindowOptions
from workbench.mixers.transformer import SoftmaxAttention

W = 8


def dense_window_attention(q, k, v, window, scale=None):
    """Oracle: full T x T scores, band mask 0 <= t - s <= W - 1, softmax (short sequences only)."""
    t = q.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    lag = torch.arange(t)[:, None] - torch.arange(t)[None, :]
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~((lag >= 0) & (lag < window)), float("-inf"))
    return scores.softmax(-1) @ v


def step_loop(q, k, v, window):
    b, h, t, e = q.shape
    k_cache = q.new_zeros(b, h, window, e)
    v_cache = q.new_zeros(b, h, window, v.shape[-1])
    outputs = []
    for s in range(t):
        y, k_cache, v_cache = window_attention_step(q[:, :, s], k[:, :, s], v[:, :, s], k_cache, v_cache, s)
        outputs.append(y)
    return torch.stack(outputs, dim=2)


def values_and_grads(fn, inputs, seed=0):
    out = fn(*inputs)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return out, torch.autograd.grad((out * weight).sum(), inputs)


@pytest.mark.parametrize("t", [1, 7, W, W + 3, 3 * W + 5])
def test_naive_chunked_step_and_dense_oracle_agree_values_and_gradients(t):
    gen = torch.Generator().manual_seed(t)
    q, k, v = (torch.randn(2, 3, t, 6, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    v = (v[..., :5] * 2).detach().requires_grad_()  # value size differs from key size
    inputs = (q, k, v)
    y_ref, g_ref = values_and_grads(lambda *a: dense_window_attention(*a, W), inputs)
    for form in (
        lambda *a: window_attention_naive(*a, W),
        lambda *a: window_attention_chunked(*a, W),
        lambda *a: step_loop(*a, W),
    ):
        y, g = values_and_grads(form, inputs)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_window_of_one_is_the_token_itself_and_a_wide_window_is_causal_attention():
    q, k, v = (torch.randn(1, 2, 13, 4, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(window_attention_chunked(q, k, v, 1), v, rtol=0, atol=1e-12)
    causal = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    for window in (13, 50):
        torch.testing.assert_close(window_attention_chunked(q, k, v, window), causal, rtol=0, atol=1e-12)


def test_explicit_scale_is_used_by_every_form():
    q, k, v = (torch.randn(1, 1, 11, 4, dtype=torch.float64) for _ in range(3))
    ref = dense_window_attention(q, k, v, 3, scale=0.7)
    torch.testing.assert_close(window_attention_chunked(q, k, v, 3, scale=0.7), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(window_attention_naive(q, k, v, 3, scale=0.7), ref, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- the mixer


def scrambled_mixer(d=32, seed=0, **options) -> SlidingWindowAttention:
    torch.manual_seed(seed)
    mixer = SlidingWindowAttention(d, SlidingWindowOptions(**options)).double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0, 0.4)  # large weights: sharp softmaxes, every position matters
    return mixer


@pytest.mark.parametrize("t", [1, 7, 12, 23])
def test_mixer_forward_equals_recurrent_values_and_gradients(t):
    mixer = scrambled_mixer(n_heads=4, window=5)
    x = torch.randn(3, t, 32, dtype=torch.float64, requires_grad=True)
    inputs = (x, *mixer.parameters())
    y, g = values_and_grads(lambda x, *_: mixer(x), inputs)
    y_rec, g_rec = values_and_grads(lambda x, *_: mixer.forward_recurrent(x), inputs)
    torch.testing.assert_close(y_rec, y, rtol=0, atol=1e-10)
    for name, a, b in zip(["x", *dict(mixer.named_parameters())], g_rec, g):
        assert torch.count_nonzero(b) > 0, name
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)


def test_mixer_with_a_window_covering_the_sequence_is_the_transformer():
    """Same weights, same rotary: W >= T is exactly the baseline's causal attention."""
    window = scrambled_mixer(n_heads=4, window=16)
    full = SoftmaxAttention(32).double()
    full.load_state_dict(window.state_dict())
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    torch.testing.assert_close(window(x), full(x), rtol=0, atol=1e-12)
    # With a shorter window the outputs of the first W positions still agree, later ones do not.
    short = scrambled_mixer(n_heads=4, window=5)
    full.load_state_dict(short.state_dict())
    y_short, y_full = short(x), full(x)
    torch.testing.assert_close(y_short[:, :5], y_full[:, :5], rtol=0, atol=1e-12)
    assert not torch.allclose(y_short[:, 5:], y_full[:, 5:])


def test_mixer_attends_exactly_to_the_last_w_tokens():
    mixer = scrambled_mixer(n_heads=2, window=4)
    x = torch.randn(1, 20, 32, dtype=torch.float64, requires_grad=True)
    y = mixer(x)
    (grad,) = torch.autograd.grad(y[0, 12].sum(), x)
    seen = grad[0].abs().sum(-1) > 0
    assert seen.nonzero().flatten().tolist() == [9, 10, 11, 12]



def test_no_tensor_with_two_sequence_sized_dimensions_forward_and_backward(shape_recorder):
    t = 100  # several windows of 16, not a multiple of it
    mixer = SlidingWindowAttention(32, SlidingWindowOptions(n_heads=4, window=16))
    x = torch.randn(2, t, 32, requires_grad=True)
    with shape_recorder() as recorder:
        mixer(x).square().sum().backward()
    offenders = [(op, shape) for op, shape in recorder.shapes if sum(d >= t for d in shape) >= 2]
    assert recorder.shapes and not offenders, offenders[:5]
    largest = max(torch.Size(shape).numel() for _, shape in recorder.shapes)
    assert largest <= 2 * 4 * 7 * 16 * 32  # (B, H, T/W, W, 2W) scores at most


def test_state_is_a_ring_of_w_entries_whatever_the_context():
    mixer = SlidingWindowAttention(32, SlidingWindowOptions(n_heads=4, window=6))
    state = mixer.init_state(2)
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    assert shapes == {"k": (2, 4, 6, 8), "v": (2, 4, 6, 8)}
    with torch.no_grad():
        for _ in range(20):
            _, state = mixer.step(torch.randn(2, 32), state)
            assert {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)} == shapes
    assert state["position"] == 20
    assert mixer.state_floats(1) == mixer.state_floats(10**6) == 2 * 32 * 6 == count_floats(mixer.init_state(1))
    assert not mixer.growing_state
    default = MIXERS["sliding_window"](128, SlidingWindowOptions())
    assert default.state_floats(2048) == 2 * 128 * 128
    assert sum(p.numel() for p in default.parameters()) == 65_536  # the transformer's


@pytest.mark.parametrize(
    "options, message",
    [
        ({"window": 0}, "positive integer"),
        ({"window": -3}, "positive integer"),
        ({"window": 2.0}, "positive integer"),
        ({"window": True}, "positive integer"),
        ({"n_heads": 0}, "positive integer"),
        ({"n_heads": False}, "positive integer"),
        ({"n_heads": 3}, "heads of even size"),
        ({"n_heads": 32}, "heads of even size"),  # head size 1: rotary needs pairs
        ({"no_such_option": 1}, "unknown options"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ConfigError, match=message):
        SlidingWindowAttention.options_from(options, 32)
