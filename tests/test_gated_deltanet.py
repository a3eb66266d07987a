"""Gated DeltaNet and DeltaNet: the op's three forms against each other and an external oracle,
the mixer's two forms, the promises (no T x T tensor, constant state), the options, and the
behaviour that defines the delta rule (a write with beta = 1 replaces the value held at its key).

The oracle is fla-core's pure-PyTorch reference ops (``fla/ops/gated_delta_rule/naive.py`` and
``fla/ops/delta_rule/naive.py``, pinned in the ``dev`` extra). They are loaded from their files,
not through ``import fla``: the package's ``__init__`` pulls in its Triton kernels, which is slow
and warns on a CPU-only machine; the two reference files import only torch and einops.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workbench.config import ConfigError
from workbench.hooks import capture
from workbench.kernels.delta_rule import (
    UnitLowerSolve,
    gated_delta_rule_chunked,
    gated_delta_rule_naive,
    gated_delta_rule_step,
    unit_lower_inverse,
)
from workbench.mixers import MIXERS
from workbench.mixers.base import count_floats
from workbench.mixers.gated_deltanet import DeltaNet, GatedDeltaNet, GatedDeltaNetOptions

F64 = torch.float64
CHUNK = 8
LENGTHS = [1, 7, CHUNK, CHUNK + 3, 3 * CHUNK + 5]


def make_inputs(t, gated=True, b=2, h=3, d_k=6, d_v=5, seed=0, dtype=F64, decay_scale=1.0):
    """Unit keys, any queries and values, beta in (0, 1), log alpha from 0 down to about -3 * decay_scale."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, t, d_k, generator=gen, dtype=dtype)
    k = F.normalize(torch.randn(b, h, t, d_k, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(b, h, t, d_v, generator=gen, dtype=dtype)
    beta = torch.rand(b, h, t, generator=gen, dtype=dtype)
    log_alpha = -decay_scale * 3 * torch.rand(b, h, t, generator=gen, dtype=dtype) ** 2 if gated else None
    state = torch.randn(b, h, d_k, d_v, generator=gen, dtype=dtype)
    return q, k, v, beta, log_alpha, state


def step_loop(q, k, v, beta, log_alpha, state):
    outputs = []
    for i in range(q.shape[2]):
        o, state = gated_delta_rule_step(
            q[:, :, i], k[:, :, i], v[:, :, i], beta[:, :, i], None if log_alpha is None else log_alpha[:, :, i], state
        )
        outputs.append(o)
    return torch.stack(outputs, dim=2), state


def forms(chunk):
    return {
        "naive": gated_delta_rule_naive,
        "chunked": lambda *a: gated_delta_rule_chunked(*a, chunk_size=chunk),
        "step": step_loop,
    }


def outputs_and_grads(fn, inputs, seed=1):
    """(o, state) and the gradients of a random projection of both w.r.t. every tensor input."""
    leaves = [None if z is None else z.detach().clone().requires_grad_() for z in inputs]
    o, state = fn(*leaves)
    gen = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum()
    loss = loss + (state * torch.randn(state.shape, generator=gen, dtype=state.dtype)).sum()
    present = [z for z in leaves if z is not None]
    return o, state, torch.autograd.grad(loss, present)


# ----------------------------------------------------------------------------- the op


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("t", LENGTHS)
def test_naive_chunked_and_step_agree_values_and_gradients(t, gated):
    inputs = make_inputs(t, gated)
    results = {name: outputs_and_grads(fn, inputs) for name, fn in forms(CHUNK).items()}
    o_ref, state_ref, grads_ref = results["naive"]
    assert all(g.abs().sum() > 0 for g in grads_ref), "a zero gradient makes the comparison vacuous"
    for name in ("chunked", "step"):
        o, state, grads = results[name]
        torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10, msg=name)
        torch.testing.assert_close(state, state_ref, rtol=1e-10, atol=1e-10, msg=name)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("t", [64, 67, 197])
def test_default_chunk_of_64_agrees_with_the_definition(t):
    inputs = make_inputs(t, True, b=1, h=2, d_k=16, d_v=8)
    o_ref, state_ref, grads_ref = outputs_and_grads(gated_delta_rule_naive, inputs)
    o, state, grads = outputs_and_grads(gated_delta_rule_chunked, inputs)
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state, state_ref, rtol=1e-10, atol=1e-10)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)


def test_no_decay_is_deltanet():
    """log alpha = 0 equals the ungated op, which equals the textbook delta rule (Schlag et al.)."""
    q, k, v, beta, _, state = make_inputs(2 * CHUNK + 3, gated=False)
    zero = torch.zeros_like(beta)
    for fn in forms(CHUNK).values():
        o_gated, s_gated = fn(q, k, v, beta, zero, state)
        o_plain, s_plain = fn(q, k, v, beta, None, state)
        torch.testing.assert_close(o_gated, o_plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s_gated, s_plain, rtol=1e-12, atol=1e-12)
    # The delta rule as first written: retrieve the old value at k, write back beta of the error.
    memory = state.transpose(-1, -2).clone()  # W (d_v x d_k), the papers' orientation
    expected = []
    for i in range(q.shape[2]):
        k_i = k[:, :, i]
        old = (memory @ k_i[..., None])[..., 0]
        memory = memory + (beta[:, :, i, None] * (v[:, :, i] - old))[..., None] * k_i[..., None, :]
        expected.append((memory @ q[:, :, i, :, None])[..., 0])
    o_chunked, _ = gated_delta_rule_chunked(q, k, v, beta, None, state, chunk_size=CHUNK)
    torch.testing.assert_close(o_chunked, torch.stack(expected, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gated", [True, False])
def test_with_beta_one_and_orthogonal_keys_the_latest_write_per_key_is_retrieved(gated):
    """The delta rule overwrites by key: beta = 1 replaces the value at an orthonormal key exactly
    (scaled by the decays since that write when gated), leaving the other keys' values untouched."""
    d_k, d_v, t = 8, 4, 40
    gen = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(d_k, d_k, generator=gen, dtype=F64))[0]  # orthonormal columns
    slots = torch.randint(0, d_k, (t,), generator=gen)
    slots[:d_k] = torch.arange(d_k)  # every key written at least once, then rewritten at random
    k = basis.T[slots][None, None]  # (1, 1, T, d_k)
    v = torch.randn(1, 1, t, d_v, generator=gen, dtype=F64)
    beta = torch.ones(1, 1, t, dtype=F64)
    log_alpha = -0.2 * torch.rand(1, 1, t, generator=gen, dtype=F64) if gated else None
    probe = torch.randint(0, d_k, (t,), generator=gen)
    probe[d_k:] = torch.where(torch.rand(t - d_k, generator=gen) < 0.5, slots[d_k:], probe[d_k:])  # often the key just written
    q = basis.T[probe][None, None]
    cum = torch.zeros(t, dtype=F64) if log_alpha is None else log_alpha[0, 0].cumsum(0)
    expected = torch.zeros(t, d_v, dtype=F64)
    for i in range(t):
        writes = [j for j in range(i + 1) if slots[j] == probe[i]]
        if writes:
            j = writes[-1]
            expected[i] = v[0, 0, j] * torch.exp(cum[i] - cum[j])
    for name, fn in forms(CHUNK).items():
        o, _ = fn(q, k, v, beta, log_alpha, None if name != "step" else torch.zeros(1, 1, d_k, d_v, dtype=F64))
        torch.testing.assert_close(o[0, 0], expected, rtol=1e-10, atol=1e-10, msg=name)


def test_strong_decays_stay_finite_and_accurate_in_float32():
    """Decays down to exp(-30) per step (the chunk's cumulative log-decay reaches about -1000):
    float32 keeps to the float64 definition; no exp of a large positive number is ever taken."""
    inputs64 = make_inputs(150, True, b=2, h=2, d_k=16, d_v=16, decay_scale=10.0)
    o_ref, s_ref = gated_delta_rule_naive(*inputs64)
    inputs32 = [z.float() for z in inputs64]
    o, s = gated_delta_rule_chunked(*inputs32, chunk_size=64)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    torch.testing.assert_close(o.double(), o_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.double(), s_ref, rtol=1e-4, atol=1e-4)
    o_ref, _ = gated_delta_rule_naive(*inputs64[:4], None, inputs64[5])  # and no decay at all over 150 steps
    o, _ = gated_delta_rule_chunked(*inputs32[:4], None, inputs32[5], chunk_size=64)
    torch.testing.assert_close(o.double(), o_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("c", [1, 5, 8, 13, 64, 100])
def test_unit_lower_inverse_and_its_solve(c):
    a = torch.randn(3, c, c, dtype=F64) * 0.5
    triangle = torch.eye(c, dtype=F64) + a.tril(-1)
    torch.testing.assert_close(unit_lower_inverse(a) @ triangle, torch.eye(c, dtype=F64).expand(3, c, c))
    if c <= 13:  # gradcheck perturbs every entry: small matrices only
        rhs = torch.randn(2, c, 3, dtype=F64)
        assert torch.autograd.gradcheck(UnitLowerSolve.apply, (a[:2].requires_grad_(), rhs.requires_grad_()))


# ----------------------------------------------------------------------------- the oracle


def fla_reference(relative: str):
    """A reference file of fla-core, loaded without fla's package __init__ (see the module docstring)."""
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("fla-core (the oracle, pinned in the dev extra) is not installed: pip install -e '.[dev]'")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    module_spec = importlib.util.spec_from_file_location("fla_reference_" + path.parent.name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("t", [7, 64, 133])
def test_against_fla_gated_delta_rule_references(t):
    """fla's recurrent and chunked references (float32 inside) take (B, T, H, d), log alpha as ``g``,
    and scale the queries by ``scale`` (1 here); the state is key-major (B, H, d_k, d_v) as ours."""
    fla = fla_reference("ops/gated_delta_rule/naive.py")
    q, k, v, beta, log_alpha, state = make_inputs(t, True, b=2, h=2, d_k=16, d_v=12, dtype=torch.float32)
    ours, our_state = gated_delta_rule_chunked(q, k, v, beta, log_alpha, state, chunk_size=64)
    swap = [z.transpose(1, 2) for z in (q, k, v, beta, log_alpha)]
    o_rec, s_rec = fla.naive_recurrent_gated_delta_rule(*swap, scale=1.0, initial_state=state, output_final_state=True)
    qs, ks, vs, bs, gs = swap
    o_chk, s_chk = fla.naive_chunk_gated_delta_rule(
        qs, ks, vs, gs, bs, chunk_size=16, scale=1.0, initial_state=state, output_final_state=True
    )
    for o, s in ((o_rec, s_rec), (o_chk, s_chk)):
        torch.testing.assert_close(o.transpose(1, 2), ours, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(s, our_state, rtol=1e-4, atol=1e-4)


def test_against_fla_delta_rule_reference():
    """fla's DeltaNet reference: (B, H, T, d) layout, queries scaled by d_k^-1/2, zero initial state."""
    fla = fla_reference("ops/delta_rule/naive.py")
    q, k, v, beta, _, _ = make_inputs(45, False, b=2, h=2, d_k=16, d_v=12, dtype=torch.float32)
    o_ref, s_ref = fla.delta_rule_recurrence(q, k, v, beta, output_final_state=True)
    ours, our_state = gated_delta_rule_chunked(q * 16**-0.5, k, v, beta, None, None, chunk_size=16)
    torch.testing.assert_close(ours, o_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(our_state, s_ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the mixer


def make_mixer(name="gated_deltanet", d_model=16, seed=0, std=0.5, **options):
    torch.manual_seed(seed)
    options = {"n_heads": 2, "d_head": 6, "expand_v": 1.5, "chunk_size": CHUNK, **options}
    cls = MIXERS[name]
    mixer = cls(d_model, cls.options_from(options, d_model)).double()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # large random weights: every gate, decay and nonlinearity is exercised
        for p in mixer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * std)
    return mixer


def mixer_grads(mixer, x, forward):
    x = x.detach().clone().requires_grad_()
    y = forward(x)
    gen = torch.Generator().manual_seed(5)
    loss = (y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum()
    grads = torch.autograd.grad(loss, [x, *mixer.parameters()])
    return y, grads


@pytest.mark.parametrize("inner_conv", [0, 4])
@pytest.mark.parametrize("name", ["gated_deltanet", "deltanet"])
@pytest.mark.parametrize("t", LENGTHS)
def test_mixer_forward_equals_naive_and_recurrent_values_and_gradients(name, inner_conv, t):
    mixer = make_mixer(name, inner_conv=inner_conv)
    x = torch.randn(2, t, 16, dtype=F64, generator=torch.Generator().manual_seed(t))
    y, grads = mixer_grads(mixer, x, mixer)
    if t > 1:  # at t = 1 the state starts empty, so the decay has nothing to act on
        assert sum(g.abs().sum() > 0 for g in grads) == len(grads), "some parameter gets no gradient"
    mixer.impl = "naive"
    y_naive, grads_naive = mixer_grads(mixer, x, mixer)
    y_rec, grads_rec = mixer_grads(mixer, x, mixer.forward_recurrent)
    for other, other_grads in ((y_naive, grads_naive), (y_rec, grads_rec)):
        torch.testing.assert_close(other, y, rtol=1e-10, atol=1e-10)
        for g, g_ref in zip(other_grads, grads):
            torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["gated_deltanet", "deltanet"])
def test_inner_conv_is_causal(name):
    mixer = make_mixer(name, inner_conv=4)
    x = torch.randn(2, 21, 16, dtype=F64, requires_grad=True)
    y = mixer(x)
    for t in (0, 8, 15):
        (grad,) = torch.autograd.grad(y[:, : t + 1].sum(), x, retain_graph=True)
        assert torch.count_nonzero(grad[:, t + 1 :]) == 0 and torch.count_nonzero(grad[:, : t + 1]) > 0


def test_gate_off_equals_deltanet():
    """Gated DeltaNet with A = 0 (alpha = 1 everywhere) is DeltaNet with the same weights."""
    gated = make_mixer("gated_deltanet")
    with torch.no_grad():
        gated.A_log.fill_(-math.inf)
    plain = make_mixer("deltanet", seed=9)
    missing, unexpected = plain.load_state_dict(gated.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == ["A_log", "a_proj.weight", "dt_bias"]
    x = torch.randn(2, 3 * CHUNK + 5, 16, dtype=F64)
    torch.testing.assert_close(gated(x), plain(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gated.forward_recurrent(x), plain.forward_recurrent(x), rtol=1e-12, atol=1e-12)


def test_registered_names_and_the_deltanet_subclass():
    assert MIXERS["gated_deltanet"] is GatedDeltaNet and MIXERS["deltanet"] is DeltaNet
    assert issubclass(DeltaNet, GatedDeltaNet) and GatedDeltaNet.gated and not DeltaNet.gated
    names = {n for n, _ in DeltaNet(32).named_parameters()}
    assert not names & {"A_log", "dt_bias", "a_proj.weight"}


def test_default_sizes_parameters_and_state_at_d_model_128():
    """The numbers the report quotes: 2 heads, d_k = d_v = 64; the transformer has 65,536 parameters."""
    mixer, plain = GatedDeltaNet(128), DeltaNet(128)
    assert (mixer.n_heads, mixer.d_k, mixer.d_v) == (2, 64, 64)
    # q, k, v, gate, out: 5 * 128^2; beta, a: 2 * 2 * 128; A_log, dt_bias: 2 + 2; norm weight 64.
    assert sum(p.numel() for p in mixer.parameters()) == 5 * 128**2 + 4 * 128 + 4 + 64 == 82_500
    assert sum(p.numel() for p in plain.parameters()) == 5 * 128**2 + 2 * 128 + 64 == 82_240
    assert mixer.state_floats(10) == plain.state_floats(10_000) == 2 * 64 * 64
    assert GatedDeltaNet(128, GatedDeltaNetOptions(inner_conv=4)).state_floats(1) == 2 * 64 * 64 + 3 * (3 * 128)


def test_decay_parameters_are_initialised_as_the_paper():
    torch.manual_seed(0)
    mixer = GatedDeltaNet(32, GatedDeltaNetOptions(n_heads=64, d_head=2))
    a = mixer.A_log.exp()
    assert ((a > 0) & (a <= 16)).all() and a.max() > 8  # U(0, 16)
    dt = F.softplus(mixer.dt_bias)
    assert ((dt >= 1e-3 - 1e-7) & (dt <= 0.1 + 1e-7)).all()  # log-uniform in [1e-3, 0.1]
    assert mixer.A_log.dim() == mixer.dt_bias.dim() == 1  # the trainer's no-weight-decay group


@pytest.mark.parametrize("name", ["gated_deltanet", "deltanet"])
@pytest.mark.parametrize("inner_conv", [0, 3])
def test_recurrent_state_has_constant_size(name, inner_conv):
    mixer = make_mixer(name, inner_conv=inner_conv)
    state = mixer.init_state(2, dtype=F64)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    with torch.no_grad():
        for _ in range(30):
            _, state = mixer.step(torch.randn(2, 16, dtype=F64), state)
            assert {key: tuple(value.shape) for key, value in state.items()} == shapes
    expected = 2 * 6 * 9 + (inner_conv - 1) * (2 * 12 + 18) * (inner_conv > 0)
    assert count_floats(mixer.init_state(1)) == mixer.state_floats(1) == expected



@pytest.mark.parametrize("name", ["gated_deltanet", "deltanet"])
@pytest.mark.parametrize("inner_conv", [0, 4])
def test_no_tensor_with_two_sequence_sized_dimensions_forward_and_backward(name, inner_conv, shape_recorder):
    t = 257  # longer than every other dimension here (the widest is the fused projection, 196)
    options = GatedDeltaNetOptions(n_heads=2, d_head=16, expand_v=2.0, chunk_size=32, inner_conv=inner_conv)
    mixer = MIXERS[name](32, options)
    x = torch.randn(2, t, 32, requires_grad=True)
    with shape_recorder() as recorder:
        mixer(x).square().sum().backward()
    offenders = [(op, shape) for op, shape in recorder.shapes if sum(d >= t for d in shape) >= 2]
    assert recorder.shapes and not offenders, offenders[:5]


def test_hook_points():
    mixer = make_mixer("gated_deltanet", std=0.3).train()
    with capture(mixer) as cache:
        mixer(torch.randn(2, 11, 16, dtype=F64))
    assert {"hook_q", "hook_k", "hook_v", "hook_beta", "hook_decay", "hook_read", "hook_gate"} <= set(cache)
    torch.testing.assert_close(cache["hook_k"].norm(dim=-1), torch.ones(2, 11, 2, dtype=F64))
    torch.testing.assert_close(cache["hook_q"].norm(dim=-1), torch.ones(2, 11, 2, dtype=F64))
    assert cache["hook_v"].shape == cache["hook_read"].shape == cache["hook_gate"].shape == (2, 11, 2, 9)
    assert ((cache["hook_beta"] > 0) & (cache["hook_beta"] < 1)).all()
    assert ((cache["hook_decay"] > 0) & (cache["hook_decay"] <= 1)).all() and (cache["hook_decay"] < 1).any()
    plain = make_mixer("deltanet", std=0.3).train()
    with capture(plain) as cache:
        plain(torch.randn(2, 11, 16, dtype=F64))
    assert (cache["hook_decay"] == 1).all()


BAD_OPTIONS = [
    ({"n_heads": 0}, "n_heads"),
    ({"n_heads": -2}, "n_heads"),
    ({"n_heads": 2.0}, "n_heads"),
    ({"n_heads": True}, "n_heads"),
    ({"n_heads": "2"}, "n_heads"),
    ({"d_head": 0}, "d_head"),
    ({"d_head": False}, "d_head"),
    ({"d_head": 64.5}, "d_head"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"chunk_size": None}, "chunk_size"),
    ({"chunk_size": True}, "chunk_size"),
    ({"inner_conv": -1}, "inner_conv"),
    ({"inner_conv": True}, "inner_conv"),
    ({"inner_conv": 2.0}, "inner_conv"),
    ({"expand_v": 0}, "expand_v"),
    ({"expand_v": -1.0}, "expand_v"),
    ({"expand_v": math.inf}, "expand_v"),
    ({"expand_v": math.nan}, "expand_v"),
    ({"expand_v": True}, "expand_v"),
    ({"expand_v": "2"}, "expand_v"),
    ({"expand_v": 0.3}, "expand_v"),  # 0.3 * 64 = 19.2 is no size
    ({"expand_v": 0.001}, "expand_v"),  # rounds to 0
    ({"heads": 2}, "unknown options"),
]


@pytest.mark.parametrize("name", ["gated_deltanet", "deltanet"])
@pytest.mark.parametrize("options, message", BAD_OPTIONS)
def test_bad_options_are_rejected(name, options, message):
    with pytest.raises(ConfigError, match=message):
        MIXERS[name].options_from(options, 128)
    if message != "unknown options":
        with pytest.raises(ConfigError, match=message):
            MIXERS[name](128, GatedDeltaNetOptions(**options))


def test_fractional_expand_v_that_gives_a_whole_size_is_accepted():
    mixer = GatedDeltaNet(32, GatedDeltaNetOptions(d_head=8, expand_v=1.5))
    assert mixer.d_v == 12 and mixer(torch.randn(1, 5, 32)).shape == (1, 5, 32)
