"""Based: the Taylor feature map, the linear-attention op's three forms, fla-core's naive references
as an external oracle, the mixer's parallel and recurrent forms, memory and state size."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.config import ConfigError
from workbench.kernels.linear_attention import (
    TaylorRows,
    linear_attention_chunked,
    linear_attention_naive,
    linear_attention_step,
    taylor_feature_dim,
    taylor_feature_map,
)
from workbench.mixers import MIXERS
from workbench.mixers.base import count_floats
from workbench.mixers.based import BasedMixer, BasedOptions
from workbench.mixers.sliding_window import SlidingWindowAttention, SlidingWindowOptions

C = 8  # chunk size of the op tests


def values_and_grads(fn, inputs, seed=0):
    out = fn(*inputs)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return out, torch.autograd.grad((out * weight).sum(), inputs)


def assert_all_close(got, want, atol):
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


# ----------------------------------------------------------------------------- the feature map


@pytest.mark.parametrize("d", [1, 3, 16])
def test_taylor_feature_map_has_the_second_order_exp_kernel(d):
    x, y = torch.randn(2, 5, d, dtype=torch.float64)
    phi_x, phi_y = taylor_feature_map(x), taylor_feature_map(y)
    assert phi_x.shape == (5, taylor_feature_dim(d)) == (5, 1 + d + d * (d + 1) // 2)
    s = (x * y).sum(-1)
    torch.testing.assert_close((phi_x * phi_y).sum(-1), 1 + s + s**2 / 2, rtol=0, atol=1e-12)
    assert taylor_feature_dim(16) == 153


def test_feature_major_taylor_rows_match_the_map_and_pass_gradcheck():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)  # (..., d = 5, L = 7)
    rows = TaylorRows.apply(x)
    torch.testing.assert_close(rows, taylor_feature_map(x.transpose(-1, -2)).transpose(-1, -2), rtol=0, atol=1e-15)
    assert torch.autograd.gradcheck(TaylorRows.apply, (x,))
    assert torch.autograd.gradgradcheck(TaylorRows.apply, (x,))


def test_unknown_feature_map_is_rejected():
    q = torch.randn(1, 1, 3, 2)
    for op in (linear_attention_chunked, linear_attention_naive):
        with pytest.raises(ValueError, match="feature_map"):
            op(q, q, q, feature_map="relu")


# ----------------------------------------------------------------------------- the op


def op_inputs(t, f=4, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, 3, t, f, generator=gen, dtype=torch.float64) * 0.8 for _ in range(2))
    v = torch.randn(2, 3, t, d, generator=gen, dtype=torch.float64)
    return tuple(z.requires_grad_() for z in (q, k, v))


def step_loop(q, k, v, eps=1e-12, normalize=True, feature_map="taylor"):
    b, h, t, f = q.shape
    f = taylor_feature_dim(f) if feature_map == "taylor" else f
    kv, z = q.new_zeros(b, h, f, v.shape[-1]), q.new_zeros(b, h, f)
    outputs = []
    for s in range(t):
        y, kv, z = linear_attention_step(q[:, :, s], k[:, :, s], v[:, :, s], kv, z, eps, normalize, feature_map)
        outputs.append(y)
    return torch.stack(outputs, dim=2)


def dense_based(q, k, v, eps=1e-12, normalize=True):
    """Quadratic reference: A = tril(1 + s + s^2/2), y = A v / rowsum(A)."""
    s = q @ k.transpose(-1, -2)
    a = (1 + s + s**2 / 2) * torch.ones(s.shape[-2:], dtype=torch.bool).tril()
    return (a @ v) / (a.sum(-1, keepdim=True) + eps) if normalize else a @ v


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("t", [1, 7, C, C + 3, 3 * C + 5])
def test_naive_chunked_step_agree_values_and_gradients(t, normalize):
    inputs = op_inputs(t)
    y_ref, g_ref = values_and_grads(lambda q, k, v: dense_based(q, k, v, normalize=normalize), inputs)
    for form in (
        lambda q, k, v: linear_attention_naive(q, k, v, normalize=normalize),
        lambda q, k, v: linear_attention_chunked(q, k, v, C, normalize=normalize),
        lambda q, k, v: step_loop(q, k, v, normalize=normalize),
    ):
        y, g = values_and_grads(form, inputs)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
        assert_all_close(g, g_ref, 1e-10)


def test_chunked_form_for_any_chunk_size_and_a_generic_feature_map():
    gen = torch.Generator().manual_seed(3)
    phi_q, phi_k = (torch.rand(1, 2, 29, 6, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(1, 2, 29, 3, generator=gen, dtype=torch.float64)
    ref = linear_attention_naive(phi_q, phi_k, v, eps=1e-3, feature_map="identity")
    for chunk in (1, 2, 5, 29, 64):
        got = linear_attention_chunked(phi_q, phi_k, v, chunk, eps=1e-3, feature_map="identity")
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    q, k = phi_q - 0.5, phi_k - 0.5
    ref = linear_attention_naive(q, k, v)
    for chunk in (1, 3, 29, 64):
        torch.testing.assert_close(linear_attention_chunked(q, k, v, chunk), ref, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- the external oracle


@pytest.fixture(scope="module")
def fla_naive():
    """fla-core's naive references (pinned in the dev extra). A missing package fails, never skips."""
    from fla.ops.based.naive import naive_chunk_based, naive_parallel_based
    from fla.ops.linear_attn.naive import naive_recurrent_linear_attn

    return naive_parallel_based, naive_chunk_based, naive_recurrent_linear_attn


@pytest.mark.parametrize("t", [7, 16, 45])
def test_based_op_matches_fla_naive_parallel_based(fla_naive, t):
    """fla scales q by f^-1/2 and leaves k; we scale both by f^-1/4: the same kernel."""
    naive_parallel_based, _, _ = fla_naive
    f = 16
    inputs = op_inputs(t, f=f, d=6, seed=t)
    scale = f**-0.25

    def ours(q, k, v):
        return linear_attention_chunked(q * scale, k * scale, v, C, eps=1e-6)

    y_ref, g_ref = values_and_grads(naive_parallel_based, inputs)  # its eps is 1e-6
    y, g = values_and_grads(ours, inputs)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    assert_all_close(g, g_ref, 1e-10)


def test_based_op_matches_fla_naive_chunk_based(fla_naive):
    _, naive_chunk_based, _ = fla_naive
    q, k, v = (z.detach() for z in op_inputs(32, f=16, d=6, seed=1))
    s = 16**-0.25
    ours = linear_attention_chunked(q * s, k * s, v, C, eps=1e-6)
    torch.testing.assert_close(ours, naive_chunk_based(q, k, v, chunk_size=16), rtol=0, atol=1e-10)


def test_generic_linear_attention_matches_fla_naive_recurrent(fla_naive):
    """Normalized linear attention with a positive feature map (elu + 1), fla's (B, T, H, F) layout."""
    _, _, naive_recurrent_linear_attn = fla_naive
    gen = torch.Generator().manual_seed(5)
    phi_q, phi_k = (torch.nn.functional.elu(torch.randn(2, 3, 21, 4, generator=gen, dtype=torch.float64)) + 1
                    for _ in range(2))  # fmt: skip
    v = torch.randn(2, 3, 21, 5, generator=gen, dtype=torch.float64)
    for normalize in (True, False):
        ref, _ = naive_recurrent_linear_attn(
            *(z.transpose(1, 2) for z in (phi_q, phi_k, v)), scale=1.0, normalize=normalize
        )
        # fla's loop runs in float32 whatever the input; its normalizer eps is 1e-10.
        ours = linear_attention_chunked(phi_q, phi_k, v, C, eps=1e-10, normalize=normalize, feature_map="identity")
        torch.testing.assert_close(ours, ref.transpose(1, 2).to(ours.dtype), rtol=1e-5, atol=1e-5)


def test_mixer_linear_branch_matches_fla_at_the_papers_scale(fla_naive):
    """With no window branch the mixer is out(fla_parallel_based(unscaled q, k, v)) per head."""
    naive_parallel_based, _, _ = fla_naive
    mixer = scrambled_mixer(feature_dim=16, n_heads=2, window=0, eps=1e-6)
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    q, k, v = (z.view(2, 19, 2, -1).transpose(1, 2) for z in mixer.proj(x).split(mixer.widths, dim=-1))
    y = naive_parallel_based(q, k, v)  # scale f^-1/2 on q: exp(q.k / sqrt(f)) to 2nd order
    torch.testing.assert_close(mixer(x), mixer.out(y.transpose(1, 2).reshape(2, 19, 32)), rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- the mixer


def scrambled_mixer(d=32, seed=0, std=0.4, **options) -> BasedMixer:
    torch.manual_seed(seed)
    mixer = BasedMixer(d, BasedOptions(**options)).double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0, std)
    return mixer


VARIANTS = {
    "both": {"feature_dim": 4, "n_heads": 2, "window": 5, "window_heads": 4, "chunk_size": 6},
    "paper_features": {"feature_dim": 16, "n_heads": 1, "window": 3, "window_heads": 2, "chunk_size": 4},
    "linear_only": {"feature_dim": 4, "n_heads": 4, "window": 0, "chunk_size": 5},
}


@pytest.mark.parametrize("t", [1, 7, 13, 23])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_mixer_forward_equals_recurrent_values_and_gradients(variant, t):
    mixer = scrambled_mixer(**VARIANTS[variant])
    x = torch.randn(3, t, 32, dtype=torch.float64, requires_grad=True)
    inputs = (x, *mixer.parameters())
    y, g = values_and_grads(lambda x, *_: mixer(x), inputs)
    y_rec, g_rec = values_and_grads(lambda x, *_: mixer.forward_recurrent(x), inputs)
    torch.testing.assert_close(y_rec, y, rtol=0, atol=1e-10)
    for name, a, b in zip(["x", *dict(mixer.named_parameters())], g_rec, g):
        assert torch.count_nonzero(b) > 0, name
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)


def test_mixer_is_the_sum_of_a_linear_and_a_window_branch():
    """out(cat[a; b]) = out_a(a) + out_b(b): the window branch is the sliding_window op, rotary and all."""
    mixer = scrambled_mixer(feature_dim=4, n_heads=2, window=5, window_heads=4)
    linear_only = scrambled_mixer(feature_dim=4, n_heads=2, window=0)
    window_only = SlidingWindowAttention(32, SlidingWindowOptions(n_heads=4, window=5)).double()
    widths = mixer.widths
    with torch.no_grad():
        w_lin, w_win = mixer.proj.weight.split([sum(widths[:3]), sum(widths[3:])])
        linear_only.proj.weight.copy_(w_lin)
        linear_only.out.weight.copy_(mixer.out.weight[:, :32])
        window_only.qkv.weight.copy_(w_win)
        window_only.out.weight.copy_(mixer.out.weight[:, 32:])
    x = torch.randn(2, 17, 32, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), linear_only(x) + window_only(x), rtol=0, atol=1e-12)



def test_no_tensor_with_two_sequence_sized_dimensions_forward_and_backward(shape_recorder):
    t = 230  # longer than any feature size (d_phi 153, projection 192); a multiple of neither chunk nor window
    mixer = BasedMixer(32, BasedOptions(feature_dim=16, n_heads=2, window=16, window_heads=2, chunk_size=32))
    x = torch.randn(2, t, 32, requires_grad=True)
    with shape_recorder() as recorder:
        mixer(x).square().sum().backward()
    offenders = [(op, shape) for op, shape in recorder.shapes if sum(d >= t for d in shape) >= 2]
    assert recorder.shapes and not offenders, offenders[:5]


def test_state_is_constant_and_counted_honestly():
    mixer = BasedMixer(32, BasedOptions(feature_dim=4, n_heads=2, window=6, window_heads=2))
    state = mixer.init_state(2)
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    assert shapes == {"kv": (2, 2, 15, 16), "z": (2, 2, 15), "k": (2, 2, 6, 16), "v": (2, 2, 6, 16)}
    with torch.no_grad():
        for _ in range(20):
            _, state = mixer.step(torch.randn(2, 32), state)
            assert {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)} == shapes
    expected = 2 * 15 * (16 + 1) + 2 * 32 * 6
    assert mixer.state_floats(1) == mixer.state_floats(10**6) == expected == count_floats(mixer.init_state(1))
    assert not mixer.growing_state
    default = MIXERS["based"](128, BasedOptions())
    assert default.state_floats(2048) == 2 * 153 * (64 + 1) + 2 * 128 * 64 == 36_274
    assert MIXERS["based"](128, BasedOptions(window=0)).state_floats(1) == 2 * 153 * 65


def test_normalizer_keeps_outputs_finite_over_a_long_float32_run():
    """The Taylor kernel is >= 1/2 per pair, so the normalizer grows with t and never vanishes."""
    torch.manual_seed(0)
    mixer = BasedMixer(32, BasedOptions(feature_dim=16, n_heads=2, window=8, window_heads=2))
    x = torch.randn(1, 3000, 32) * 3
    y = mixer(x)
    assert torch.isfinite(y).all()
    with torch.no_grad():
        state = mixer.init_state(1)
        for t in range(40):
            y_t, state = mixer.step(x[:, t], state)
        torch.testing.assert_close(y_t, y[:, 39], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"feature_dim": 0}, "positive integer"),
        ({"feature_dim": 2.5}, "positive integer"),
        ({"n_heads": True}, "positive integer"),
        ({"n_heads": 3}, "equal heads"),
        ({"window_heads": 0}, "positive integer"),
        ({"window_heads": 3}, "heads of even size"),
        ({"window_heads": 32}, "heads of even size"),
        ({"chunk_size": -1}, "positive integer"),
        ({"window": -1}, ">= 0"),
        ({"window": 1.5}, ">= 0"),
        ({"window": False}, ">= 0"),
        ({"eps": -1e-3}, "finite number >= 0"),
        ({"eps": math.inf}, "finite number >= 0"),
        ({"eps": math.nan}, "finite number >= 0"),
        ({"eps": "1e-12"}, "finite number >= 0"),
        ({"eps": True}, "finite number >= 0"),
        ({"no_such_option": 1}, "unknown options"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ConfigError, match=message):
        BasedMixer.options_from(options, 32)


def test_window_heads_are_not_checked_when_there_is_no_window():
    assert BasedMixer.options_from({"window": 0, "window_heads": 3}, 32).window == 0


def test_window_branch_uses_the_window_op():
    """The window branch really is banded: a token 6 back is invisible with W = 5 (gradient test)."""
    mixer = scrambled_mixer(feature_dim=4, n_heads=2, window=5, window_heads=2)
    with torch.no_grad():
        mixer.proj.weight[: sum(mixer.widths[:3])] = 0  # the linear branch sees nothing, outputs 0
    x = torch.randn(1, 12, 32, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(mixer(x)[0, 10].sum(), x)
    assert (grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist() == [6, 7, 8, 9, 10]
