"""Gated Slot Attention and its GLA op.

* the op's three forms (naive loop, chunked, step loop) agree in values and gradients, for both
  gates, at lengths that are not multiples of the chunk, with and without an initial state, whole
  or sliced over the lead dim; float32 stays exact-enough and finite under extreme decays;
* the mixer's parallel form equals its recurrent form (values, gradients w.r.t. input and every
  parameter), and equals the paper's slot equations written out directly;
* external oracle: flash-linear-attention's pure-PyTorch reference ops (fla-core, pinned in the
  dev extra): ``naive_recurrent_gla`` for the op, ``naive_recurrent_gsa`` for the mixer;
* no tensor with two sequence-sized dimensions in forward + backward; constant state; options.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import pytest
import torch
import torch.nn.functional as F

from workbench.config import ConfigError
from workbench.hooks import capture
from workbench.kernels import gla as gla_module
from workbench.kernels.gla import gla_chunked, gla_naive, gla_step
from workbench.mixers.base import count_floats
from workbench.mixers.gsa import GatedSlotAttention, GSAOptions

C = 8  # the chunk of the exactness tests: levels h = 1, 2 (elementwise) and 4 (matmul) of the tree
LENGTHS = [1, 7, C, C + 3, 3 * C + 5]
F64 = torch.float64


def op_inputs(gate: str, t: int, seed: int = 0, dtype=F64, lead=(2, 3), dk=5, dv=6):
    """Random q, k, v, log-decays and a state. The log-decays span about -20 (forget at once) to
    -1e-4 (remember), so every regime of the decay factors is met inside one chunk."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64)

    q, k, v = 1.5 * randn(*lead, t, dk), 1.5 * randn(*lead, t, dk), 1.5 * randn(*lead, t, dv)
    g = -F.softplus(4 * randn(*lead, t, dk if gate == "key" else dv) - 1)
    state = randn(*lead, dk, dv)
    return [z.to(dtype) for z in (q, k, v, g, state)]


def step_loop(q, k, v, g, state, gate):
    outputs = []
    for t in range(q.shape[-2]):
        o, state = gla_step(q[..., t, :], k[..., t, :], v[..., t, :], g[..., t, :], state, gate=gate)
        outputs.append(o)
    return torch.stack(outputs, dim=-2), state


def values_and_grads(fn, tensors, seed=1):
    """fn(*tensors) -> (o, state); returns o, state and the gradients of a random functional of both."""
    leaves = [z.detach().clone().requires_grad_() for z in tensors]
    o, state = fn(*leaves)
    gen = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=F64).to(o.dtype)).sum()
    loss = loss + (state * torch.randn(state.shape, generator=gen, dtype=F64).to(o.dtype)).sum()
    return [o.detach(), state.detach(), *torch.autograd.grad(loss, leaves)]


def assert_all_close(got, expected, **tolerance):
    names = ["output", "final state", "dq", "dk", "dv", "dg", "d state"]
    for name, a, b in zip(names, got, expected):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}", **tolerance)


# ----------------------------------------------------------------------------- the GLA op


@pytest.mark.parametrize("gate", ["key", "value"])
@pytest.mark.parametrize("t", LENGTHS)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("sliced", [False, True])
def test_gla_naive_chunked_and_step_agree_in_values_and_gradients(gate, t, with_state, sliced, monkeypatch):
    if sliced:  # one lead row per slice: the slice-by-slice path of the chunked op
        monkeypatch.setattr(gla_module, "_SLICE_ELEMENTS", 1)
    q, k, v, g, state = op_inputs(gate, t, seed=t)
    tensors = [q, k, v, g] + ([state] if with_state else [])

    def naive(q, k, v, g, s=None):
        return gla_naive(q, k, v, g, gate=gate, initial_state=s)

    def chunked(q, k, v, g, s=None):
        return gla_chunked(q, k, v, g, gate=gate, initial_state=s, chunk_size=C)

    def stepped(q, k, v, g, s=None):
        return step_loop(q, k, v, g, torch.zeros_like(state) if s is None else s, gate)

    expected = values_and_grads(naive, tensors)
    assert_all_close(values_and_grads(chunked, tensors), expected, rtol=0, atol=1e-10)
    assert_all_close(values_and_grads(stepped, tensors), expected, rtol=0, atol=1e-10)
    assert all(grad.abs().sum() > 0 for grad in expected[2:5])  # the gradients are not vacuous
    if t > 1 or with_state:  # (one token and a zero state: the decay multiplies nothing)
        assert expected[5].abs().sum() > 0


@pytest.mark.parametrize("gate", ["key", "value"])
@pytest.mark.parametrize("chunk", [1, 2, 16, 32, 64])
def test_gla_chunked_agrees_at_every_chunk_size(gate, chunk):
    # 16 and 32 run tree levels with h = 8 and 16 (matmuls); 64 is longer than the sequence.
    tensors = op_inputs(gate, 37, seed=chunk, lead=(2,))
    expected = values_and_grads(lambda *z: gla_naive(*z[:4], gate=gate, initial_state=z[4]), tensors)
    got = values_and_grads(lambda *z: gla_chunked(*z[:4], gate=gate, initial_state=z[4], chunk_size=chunk), tensors)
    assert_all_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("gate", ["key", "value"])
def test_gla_chunked_is_stable_in_float32_under_extreme_decays(gate):
    """Decays from exp(-200) to exp(-1e-6) in one chunk of 64: the cumulative log-decays span
    thousands, far beyond float32's exp range, yet no exponent the op takes is positive."""
    t = 150
    q, k, v, g, state = op_inputs(gate, t, seed=3, lead=(2,))
    g = g * torch.where(torch.rand(g.shape, generator=torch.Generator().manual_seed(4), dtype=F64) < 0.1, 10.0, 1.0)
    g[..., 70:75, :] = -200.0
    g[..., 100:, :] = -1e-6
    assert g.min() < -150 and g.sum(-2).min() < -1000
    expected = values_and_grads(lambda *z: gla_naive(*z[:4], gate=gate, initial_state=z[4]), [q, k, v, g, state])
    tensors32 = [z.float() for z in (q, k, v, g, state)]
    got = values_and_grads(lambda *z: gla_chunked(*z[:4], gate=gate, initial_state=z[4], chunk_size=64), tensors32)
    for name, a, b in zip(["output", "state", "dq", "dk", "dv", "dg", "d state"], got, expected):
        assert torch.isfinite(a).all(), name
        scale = b.abs().max().item() + 1.0
        assert (a.double() - b).abs().max().item() < 2e-5 * scale, name


@pytest.mark.parametrize("gate", ["key", "value"])
def test_gla_total_forgetting_keeps_only_the_current_token(gate):
    # exp(-1000) underflows to 0 in float32: each output is then (q_t . k_t) v_t exactly, with no NaN.
    q, k, v, g, _ = (z.float() for z in op_inputs(gate, 40, seed=5))
    o, state = gla_chunked(q, k, v, torch.full_like(g, -1000.0), gate=gate, chunk_size=16)
    torch.testing.assert_close(o, (q * k).sum(-1, keepdim=True) * v)
    torch.testing.assert_close(state, k[..., -1, :, None] * v[..., -1, None, :])


def test_gla_without_decay_is_causal_linear_attention():
    q, k, v, g, _ = op_inputs("key", 23, seed=6)
    o, _ = gla_chunked(q, k, v, torch.zeros_like(g), gate="key", chunk_size=8)
    expected = ((q @ k.transpose(-1, -2)).tril() @ v)
    torch.testing.assert_close(o, expected, rtol=0, atol=1e-10)


def test_gla_rejects_bad_arguments():
    q, k, v, g, state = op_inputs("key", 5)
    with pytest.raises(ValueError, match="gate"):
        gla_chunked(q, k, v, g, gate="both")
    with pytest.raises(ValueError, match="gate"):
        gla_step(q[..., 0, :], k[..., 0, :], v[..., 0, :], g[..., 0, :], state, gate="both")
    with pytest.raises(ValueError, match="value shape"):
        gla_naive(q, k, v, g, gate="value")  # g has the key dimension
    with pytest.raises(ValueError, match="do not match"):
        gla_chunked(q, k[..., :3], v, g)
    with pytest.raises(ValueError, match="power of two"):
        gla_chunked(q, k, v, g, chunk_size=6)
    with pytest.raises(ValueError, match="T >= 1"):
        gla_chunked(q[..., :0, :], k[..., :0, :], v[..., :0, :], g[..., :0, :])
    with pytest.raises(ValueError, match="state"):
        gla_chunked(q, k, v, g, initial_state=state[..., :2, :])


# ----------------------------------------------------------------------------- the oracle (fla-core)


def fla_naive(module: str):
    """A pure-PyTorch reference module of fla-core (``fla/ops/<module>/naive.py``), loaded by file.

    Importing ``fla.ops`` itself pulls in its Triton kernels and torch._dynamo (10 s on this machine);
    the naive modules need only torch and einops. fla-core is pinned in the dev extra: a missing
    install fails here rather than skipping.
    """
    spec = importlib.util.find_spec("fla")
    assert spec is not None and spec.submodule_search_locations, "fla-core is missing: pip install -e '.[dev]'"
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "ops" / module / "naive.py"
    loaded = importlib.util.spec_from_file_location(f"fla_naive_{module}", path)
    mod = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(mod)
    return mod


def test_gla_matches_fla_naive_recurrent_gla():
    """fla's reference GLA (gate on the key side, queries scaled by K^-1/2, float32 inside)."""
    naive_recurrent_gla = fla_naive("gla").naive_recurrent_gla
    q, k, v, g, state = (z.float() for z in op_inputs("key", 37, seed=7, lead=(2, 3), dk=8, dv=6))
    tensors = [q, k, v, g, state]

    def ours(q, k, v, g, s):
        return gla_chunked(q * 8**-0.5, k, v, g, gate="key", initial_state=s, chunk_size=16)

    def theirs(q, k, v, g, s):  # (B, H, T, D) here, (B, T, H, D) there
        q, k, v, g = (z.transpose(1, 2) for z in (q, k, v, g))
        o, final = naive_recurrent_gla(q, k, v, g, initial_state=s, output_final_state=True)
        return o.transpose(1, 2), final

    assert_all_close(values_and_grads(ours, tensors), values_and_grads(theirs, tensors), rtol=1e-4, atol=1e-4)


def small_mixer(seed: int = 0, dtype=F64, **options) -> GatedSlotAttention:
    """d_model 16, 2 heads of 8, 8 slots, chunk C; large random weights so the gates spread."""
    options = {"n_heads": 2, "n_slots": 8, "chunk_size": C, **options}
    mixer = GatedSlotAttention(16, GSAOptions(**options)).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * 0.5 + (1.0 if p.dim() == 1 else 0.0))
    return mixer


def test_mixer_matches_fla_naive_recurrent_gsa():
    """The mixer's q, k, v, log alpha and 1 - alpha through fla's reference GSA, then the mixer's
    output norm and projection, equal the mixer's forward; the final slots equal the step loop's."""
    naive_recurrent_gsa = fla_naive("gsa").naive_recurrent_gsa
    mixer = small_mixer(seed=8, dtype=torch.float32)
    x = torch.randn(2, 41, 16, generator=torch.Generator().manual_seed(9))

    def theirs(x):
        q, k, v, log_alpha, write = mixer._project(x, head_major=False)  # (B, T, H, .): fla's layout
        o, state = naive_recurrent_gsa(q, k, v, write, log_alpha, scale=1.0, output_final_state=True)
        return mixer._finish(o.reshape(*x.shape)), state

    params = list(mixer.parameters())
    results = []
    for fn in (mixer, lambda x: theirs(x)[0]):
        xx = x.clone().requires_grad_()
        y = fn(xx)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(10))
        results.append([y.detach(), *torch.autograd.grad((y * w).sum(), [xx, *params])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    state = mixer.init_state(2)
    with torch.no_grad():
        for t in range(x.shape[1]):
            _, state = mixer.step(x[:, t], state)
        _, (key_slots, value_slots) = theirs(x)
    torch.testing.assert_close(state["key_slots"], key_slots, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state["value_slots"], value_slots, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- the mixer


@pytest.mark.parametrize("t", LENGTHS)
@pytest.mark.parametrize("gate_rank", [0, 3])
def test_mixer_parallel_equals_recurrent_values_and_gradients(t, gate_rank):
    mixer = small_mixer(seed=t, gate_rank=gate_rank)
    x = torch.randn(2, t, 16, generator=torch.Generator().manual_seed(t), dtype=F64)
    params = list(mixer.parameters())
    results = []
    for fn in (mixer.forward, mixer.forward_recurrent):
        xx = x.clone().requires_grad_()
        y = fn(xx)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
        results.append([y.detach(), *torch.autograd.grad((y * w).sum(), [xx, *params])])
    assert len(results[0]) == 2 + len(params) and all(g.abs().sum() > 0 for g in results[0][1:])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_mixer_follows_the_papers_slot_equations():
    """alpha = sigmoid(W_alpha x)^(1/tau); K~ and V~ updated slot by slot; o = V~^T softmax(K~ q);
    y = W_o RMSNorm(swish(o)), written out from the weights, against the mixer's forward."""
    mixer = small_mixer(seed=11)
    b, t, d, h, m, dh = 2, 19, 16, 2, 8, 8
    x = torch.randn(b, t, d, generator=torch.Generator().manual_seed(12), dtype=F64)
    w_q, w_k, w_v, w_alpha = mixer.proj.weight.split([d, d, d, h * m])
    q, k, v = (F.silu(x @ w.T).view(b, t, h, dh) for w in (w_q, w_k, w_v))
    alpha = torch.sigmoid(x @ w_alpha.T).pow(1 / 8).view(b, t, h, m)
    key_slots = torch.zeros(b, h, m, dh, dtype=F64)
    value_slots = torch.zeros(b, h, m, dh, dtype=F64)
    reads = []
    for i in range(t):
        a = alpha[:, i, :, :, None]
        key_slots = a * key_slots + (1 - a) * k[:, i, :, None, :]
        value_slots = a * value_slots + (1 - a) * v[:, i, :, None, :]
        weights = torch.einsum("bhmd,bhd->bhm", key_slots, q[:, i]).softmax(-1)
        reads.append(torch.einsum("bhmd,bhm->bhd", value_slots, weights).reshape(b, d))
    o = F.silu(torch.stack(reads, dim=1))
    normed = o / o.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * mixer.norm_weight
    torch.testing.assert_close(mixer(x), normed @ mixer.out.weight.T, rtol=0, atol=1e-10)



def test_no_tensor_with_two_sequence_sized_dimensions_forward_and_backward(shape_recorder):
    t = 300  # longer than the chunk (32) and every feature size (the fused projection is 4 * 32 wide)
    mixer = GatedSlotAttention(32, GSAOptions(n_heads=4, n_slots=8, chunk_size=32))
    x = torch.randn(2, t, 32, requires_grad=True)
    with shape_recorder() as recorder:
        mixer(x).square().sum().backward()
    offenders = [(op, shape) for op, shape in recorder.shapes if sum(d >= t for d in shape) >= 2]
    assert recorder.shapes and not offenders, offenders[:5]


def test_recurrent_state_has_constant_size():
    mixer = small_mixer()
    state = mixer.init_state(3, dtype=F64)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes == {"key_slots": (3, 2, 8, 8), "value_slots": (3, 2, 8, 8)}
    with torch.no_grad():
        for _ in range(30):
            _, state = mixer.step(torch.randn(3, 16, dtype=F64), state)
            assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    assert count_floats(state) == 3 * mixer.state_floats(30) == 3 * 2 * 8 * (8 + 8)


def test_defaults_at_d_model_128():
    mixer = GatedSlotAttention(128)
    assert (mixer.n_heads, mixer.n_slots, mixer.d_head) == (4, 64, 32)
    # q, k, v, o: 4 d^2; the full-rank gate: d * heads * slots; the norm's scale: d.
    assert sum(p.numel() for p in mixer.parameters()) == 4 * 128**2 + 128 * 4 * 64 + 128 == 98_432
    assert mixer.state_floats(1) == mixer.state_floats(100_000) == 4 * 64 * (32 + 32) == 16_384
    low_rank = GatedSlotAttention(128, GSAOptions(gate_rank=16))
    assert sum(p.numel() for p in low_rank.parameters()) == 4 * 128**2 + 16 * (128 + 256) + 128 == 71_808


def test_hook_points_show_gates_scores_and_read_weights():
    mixer = small_mixer()
    x = torch.randn(2, 11, 16, dtype=F64)
    with capture(mixer) as cache:
        mixer(x)
    assert cache["hook_log_forget"].shape == (2, 2, 11, 8) and (cache["hook_log_forget"] <= 0).all()
    assert cache["hook_slot_scores"].shape == (2, 2, 11, 8)
    weights = cache["hook_read_weights"]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 11, dtype=F64))
    assert cache["hook_read"].shape == (2, 11, 16)
    with capture(mixer) as step_cache, torch.no_grad():
        mixer.step(x[:, 0], mixer.init_state(2, dtype=F64))
    torch.testing.assert_close(step_cache["hook_read_weights"], weights[:, :, 0])


BAD_OPTIONS = [
    ("n_slots", 0), ("n_slots", -4), ("n_slots", 8.0), ("n_slots", True),
    ("n_heads", 0), ("n_heads", 3), ("n_heads", True), ("n_heads", "4"),
    ("gate_temperature", 0.0), ("gate_temperature", -8.0), ("gate_temperature", math.inf),
    ("gate_temperature", math.nan), ("gate_temperature", True), ("gate_temperature", "8"),
    ("gate_rank", -1), ("gate_rank", 2.0), ("gate_rank", False),
    ("norm_eps", 0.0), ("norm_eps", -1e-5), ("norm_eps", math.inf), ("norm_eps", None),
    ("chunk_size", 0), ("chunk_size", 48), ("chunk_size", 3), ("chunk_size", 32.0), ("chunk_size", True),
]


@pytest.mark.parametrize("name, value", BAD_OPTIONS)
def test_bad_options_are_rejected(name, value):
    with pytest.raises(ConfigError, match=name):
        GatedSlotAttention.options_from({name: value}, d_model=32)
    with pytest.raises(ConfigError):
        GatedSlotAttention(32, GSAOptions(**{name: value}))


def test_good_options_are_accepted():
    options = GatedSlotAttention.options_from(
        {"n_slots": 1, "n_heads": 32, "gate_temperature": 1, "gate_rank": 4, "norm_eps": 1e-6, "chunk_size": 1}, 32
    )
    mixer = GatedSlotAttention(32, options)
    x = torch.randn(1, 5, 32)
    torch.testing.assert_close(mixer(x), mixer.forward_recurrent(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown"):
        GatedSlotAttention.options_from({"slots": 8}, d_model=32)
