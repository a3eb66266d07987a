"""Mamba (S6): the selective scan's three forms agree, the mixer's two forms agree, mambapy agrees,
no (batch, T, E, N) state tensor and no T x T tensor is built, the state is constant, options are checked."""

from __future__ import annotations

import math

import pytest
import torch

import workbench.kernels.selective_scan as ss
from workbench.config import ConfigError
from workbench.hooks import capture
from workbench.kernels.selective_scan import scan_, selective_scan_chunked, selective_scan_naive, selective_scan_step
from workbench.mixers import MIXERS
from workbench.mixers.mamba import Mamba, MambaOptions

F64 = torch.float64
CHUNK = 8
LENGTHS = [1, 7, CHUNK, CHUNK + 3, 3 * CHUNK + 5]


def scan_inputs(batch=3, t=11, e=5, n=4, seed=0, dtype=F64, spread=1.5):
    """Inputs that exercise every regime: decays from ~0 (delta |A| up to ~30) to ~1 (delta ~ 0.01)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    u = randn(batch, t, e)
    delta = torch.nn.functional.softplus(randn(batch, t, e) * 2 * spread - 1)  # (0, ~10)
    A = -torch.exp(randn(e, n) * spread)  # -(0.1 .. 10)
    B, C, D = randn(batch, t, n), randn(batch, t, n), randn(e)
    return [v.requires_grad_() for v in (u, delta, A, B, C, D)]


def step_loop(u, delta, A, B, C, D):
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        y, h = selective_scan_step(u[:, t], delta[:, t], A, B[:, t], C[:, t], h, D)
        ys.append(y)
    return torch.stack(ys, dim=1)


def values_and_grads(fn, inputs, seed=1):
    y = fn(*inputs)
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(y.dtype)
    wanted = [v for v in inputs if v is not None and v.requires_grad]
    return y, torch.autograd.grad((y * weight).sum() + (y**2).sum() / 7, wanted)


def assert_all_close(got, want, rtol=1e-10):
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=rtol, atol=rtol * (b.abs().max().item() + 1e-30)), (a - b).abs().max()


# ----------------------------------------------------------------------------- the in-place scan


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("keep", [False, True])
def test_scan_solves_the_linear_recurrence_at_every_length(reverse, keep):
    for length in range(1, 19):
        a = torch.rand(2, length, 3, dtype=F64)
        x = torch.randn(2, length, 3, dtype=F64)
        want = x.clone()
        order = range(length - 2, -1, -1) if reverse else range(1, length)
        for t in order:
            want[:, t] = want[:, t] + a[:, t] * want[:, t + 1 if reverse else t - 1]
        got, coefficients = x.clone(), a.clone()
        scan_(coefficients, got, reverse, scratch=torch.empty(a.numel(), dtype=F64) if keep else None)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        if keep:
            assert torch.equal(coefficients, a), "with scratch the coefficients are left as they were"


# ----------------------------------------------------------------------------- the op: three forms


@pytest.mark.parametrize("t", LENGTHS)
def test_naive_chunked_and_step_loop_agree_values_and_gradients(t):
    inputs = scan_inputs(t=t, seed=t)
    y_ref, g_ref = values_and_grads(selective_scan_naive, inputs)
    y_step, g_step = values_and_grads(step_loop, inputs)
    y_chunk, g_chunk = values_and_grads(lambda *v: selective_scan_chunked(*v, chunk_size=CHUNK), inputs)
    assert_all_close([y_step, *g_step], [y_ref, *g_ref])
    assert_all_close([y_chunk, *g_chunk], [y_ref, *g_ref])
    assert len(g_ref) == 6 and all(g.abs().max() > 0 for i, g in enumerate(g_ref) if t > 1 or i != 2), \
        "every input gets a gradient (A's is 0 at t = 1: it only scales h_{-1} = 0)"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 32, 100])
def test_chunked_result_does_not_depend_on_the_chunk(chunk):
    inputs = scan_inputs(t=37, seed=3)
    y_ref, g_ref = values_and_grads(selective_scan_naive, inputs)
    y, g = values_and_grads(lambda *v: selective_scan_chunked(*v, chunk_size=chunk), inputs)
    assert_all_close([y, *g], [y_ref, *g_ref])
    with torch.no_grad():  # the inference path keeps no chunk-entry states
        assert_all_close([selective_scan_chunked(*inputs, chunk_size=chunk)], [y_ref])


def test_chunked_batch_blocks_with_a_remainder(monkeypatch):
    # Buffers of 2 sequences x 8 tokens: a batch of 5 runs as blocks of 2, 2, 1.
    monkeypatch.setattr(ss, "_TARGET_BLOCK", 2 * CHUNK * 5 * 4)
    inputs = scan_inputs(batch=5, t=3 * CHUNK + 5, seed=4)
    y_ref, g_ref = values_and_grads(selective_scan_naive, inputs)
    y, g = values_and_grads(lambda *v: selective_scan_chunked(*v, chunk_size=CHUNK), inputs)
    assert_all_close([y, *g], [y_ref, *g_ref])


def test_without_skip_term_and_with_frozen_inputs():
    u, delta, A, B, C, _ = scan_inputs(t=19, seed=5)
    A, C = A.detach(), C.detach()  # no gradient wanted for these
    inputs = [u, delta, A, B, C, None]
    y_ref, g_ref = values_and_grads(selective_scan_naive, inputs)
    y, g = values_and_grads(lambda *v: selective_scan_chunked(*v, chunk_size=CHUNK), inputs)
    assert_all_close([y, *g], [y_ref, *g_ref])


def test_extreme_step_sizes_stay_finite_in_float32():
    """delta |A| up to 1e4 (decay exactly 0) and down to 1e-8 (decay 1): nothing overflows, no NaN."""
    u, delta, A, B, C, D = (v.detach().float() for v in scan_inputs(batch=2, t=70, e=6, n=5, seed=6))
    delta = torch.where(torch.rand(delta.shape) < 0.5, torch.full_like(delta, 1e2), torch.full_like(delta, 1e-8))
    A = A * 10
    inputs = [v.requires_grad_() for v in (u, delta, A, B, C, D)]
    y, grads = values_and_grads(lambda *v: selective_scan_chunked(*v, chunk_size=32), inputs)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    y64, grads64 = values_and_grads(selective_scan_naive, [v.detach().double().requires_grad_() for v in inputs])
    # To float32's precision: the decays' gradient is formed as g_t a_t h_{t-1}, not g_t (h_t - x_t),
    # which cancels catastrophically when delta B u dwarfs the decayed past.
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-6 * y64.abs().max().item())
    for g, g64 in zip(grads, grads64):
        torch.testing.assert_close(g.double(), g64, rtol=1e-5, atol=1e-6 * g64.abs().max().item())


def test_float32_chunked_tracks_the_float64_definition_over_a_long_sequence():
    inputs = scan_inputs(batch=2, t=300, e=8, n=16, seed=7, spread=0.7)
    y64, g64 = values_and_grads(selective_scan_naive, inputs)
    inputs32 = [v.detach().float().requires_grad_() for v in inputs]
    y32, g32 = values_and_grads(selective_scan_chunked, inputs32)  # the default chunk
    # As close as float32 allows (the float32 naive loop is off by the same ~1e-7 of the largest value).
    torch.testing.assert_close(y32.double(), y64, rtol=1e-5, atol=1e-6 * y64.abs().max().item())
    for a, b in zip(g32, g64):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6 * b.abs().max().item())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v.__setitem__(1, v[1][:, :-1]), "u and delta"),
        (lambda v: v.__setitem__(2, v[2][:-1]), "A must be"),
        (lambda v: v.__setitem__(3, v[3][..., :-1]), "B must be"),
        (lambda v: v.__setitem__(4, v[4][:1]), "C must be"),
        (lambda v: v.__setitem__(5, v[5][:-1]), "D must be"),
    ],
)
def test_op_rejects_inconsistent_shapes(change, message):
    inputs = [v.detach() for v in scan_inputs()]
    change(inputs)
    for fn in (selective_scan_naive, selective_scan_chunked):
        with pytest.raises(ValueError, match=message):
            fn(*inputs)


@pytest.mark.parametrize("chunk", [0, -1, 2.0, True])
def test_op_rejects_bad_chunk_sizes(chunk):
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan_chunked(*[v.detach() for v in scan_inputs()], chunk_size=chunk)


# ----------------------------------------------------------------------------- the mixer


def make_mixer(seed: int = 0, d_model: int = 16, **options) -> Mamba:
    torch.manual_seed(seed)
    mixer = Mamba(d_model, Mamba.options_from({"d_state": 4, "chunk_size": 5, **options}, d_model)).double()
    with torch.no_grad():  # large random weights: decays from ~0 to ~1, gates open and shut
        for p in mixer.parameters():
            p.normal_(std=0.5)
        mixer.dt_proj.bias.normal_(mean=-1.0, std=1.5)
    return mixer


def mixer_values_and_grads(mixer: Mamba, x: torch.Tensor, recurrent: bool):
    y = mixer.forward_recurrent(x) if recurrent else mixer(x)
    return y, torch.autograd.grad((y * torch.sin(y)).sum(), [x, *mixer.parameters()])


@pytest.mark.parametrize("inner_conv", [0, 1, 4])
def test_forward_equals_recurrent_values_and_gradients(inner_conv):
    mixer = make_mixer(inner_conv=inner_conv)
    x = torch.randn(2, 17, 16, dtype=F64, requires_grad=True)
    y, g = mixer_values_and_grads(mixer, x, recurrent=False)
    y_rec, g_rec = mixer_values_and_grads(mixer, x, recurrent=True)
    assert_all_close([y, *g], [y_rec, *g_rec], rtol=1e-9)
    names = ["x"] + [name for name, _ in mixer.named_parameters()]
    assert all(grad.abs().max() > 0 for grad in g), [n for n, grad in zip(names, g) if grad.abs().max() == 0]


def test_inner_conv_is_causal():
    mixer = make_mixer(inner_conv=4)
    x = torch.randn(2, 12, 16, dtype=F64, requires_grad=True)
    y = mixer(x)
    for t in (0, 4, 9):
        (grad,) = torch.autograd.grad(y[:, t].sum(), x, retain_graph=True)
        assert torch.count_nonzero(grad[:, t + 1 :]) == 0 and torch.count_nonzero(grad[:, : t + 1]) > 0


def test_paper_initialisation():
    mixer = Mamba(128)
    assert (mixer.d_inner, mixer.d_state, mixer.dt_rank) == (256, 16, 8)  # E = 2 d, N = 16, R = ceil(d / 16)
    torch.testing.assert_close(mixer._A(), -torch.arange(1.0, 17.0).repeat(256, 1))  # S4D-real
    assert torch.equal(mixer.D, torch.ones(256))
    start = torch.nn.functional.softplus(mixer.dt_proj.bias)  # delta for a zero input
    assert start.min() >= 1e-3 * (1 - 1e-5) and start.max() <= 1e-1 * (1 + 1e-5)
    assert start.log().std() > 0.5, "log-uniform, not constant"
    bound = 8**-0.5
    assert mixer.dt_proj.weight.abs().max() <= bound
    assert not hasattr(mixer, "conv"), "no inner convolution by default: the Block has the shared one"


def test_a_log_and_d_are_not_weight_decayed_by_the_project_optimizer():
    from workbench.config import RunConfig
    from workbench.model import Model, TaskIO
    from workbench.train import build_optimizer

    config = RunConfig.from_dict({"task": {"name": "copy"}, "model": {"mixer": "mamba", "d_model": 32}})
    model = Model(config.model, TaskIO(input_kind="tokens", head="lm", vocab_size=10))
    no_decay = {id(p) for group in build_optimizer(model, config).param_groups if group["weight_decay"] == 0
                for p in group["params"]}  # fmt: skip
    mixer = model.blocks[0].mixer
    assert id(mixer.A_log) in no_decay and id(mixer.D) in no_decay  # as in the paper's reference code
    assert id(mixer.in_proj.weight) not in no_decay


def test_parameter_count_and_state_size_at_d_model_128():
    mixer = Mamba(128)
    # in_proj 128*512, x_proj 256*(8+32), dt_proj 8*256+256, A_log 256*16, D 256, out_proj 256*128.
    assert sum(p.numel() for p in mixer.parameters()) == 65_536 + 10_240 + 2_304 + 4_096 + 256 + 32_768 == 115_200
    assert mixer.state_floats(10) == mixer.state_floats(100_000) == 256 * 16
    with_conv = Mamba(128, MambaOptions(inner_conv=4))
    assert with_conv.state_floats(7) == 256 * 16 + 256 * 3  # plus the conv window of the last 3 inputs
    assert Mamba(128, MambaOptions(d_state=4, expand=1)).state_floats(1) == 128 * 4  # the state knob


@pytest.mark.parametrize("inner_conv", [0, 4])
def test_recurrent_state_has_constant_size(inner_conv):
    mixer = make_mixer(inner_conv=inner_conv)
    state = mixer.init_state(2, dtype=F64)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    with torch.no_grad():
        for _ in range(40):
            _, state = mixer.step(torch.randn(2, 16, dtype=F64), state)
            assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    assert mixer.state_floats(1) == sum(math.prod(s[1:]) for s in shapes.values())


def test_hook_points_see_the_selective_parameters():
    mixer = Mamba(32, MambaOptions(d_state=4))
    with capture(mixer) as cache:
        mixer(torch.randn(2, 9, 32))
    assert cache["hook_delta"].shape == (2, 9, 64) and (cache["hook_delta"] > 0).all()
    assert cache["hook_B"].shape == cache["hook_C"].shape == (2, 9, 4)
    assert cache["hook_u"].shape == cache["hook_gate"].shape == (2, 9, 64)



def test_no_sequence_squared_tensor_and_no_full_state_tensor_forward_and_backward(shape_recorder):
    batch, t = 2, 200
    mixer = Mamba(32, MambaOptions(chunk_size=32))  # E = 64, N = 16
    x = torch.randn(batch, t, 32, requires_grad=True)
    with shape_recorder() as recorder:
        mixer(x).square().sum().backward()
    assert recorder.shapes
    squared = [(op, shape) for op, shape in recorder.shapes if sum(d >= t for d in shape) >= 2]
    assert not squared, squared[:5]
    # The states of every position, (batch, T, E, N), are never held at once: the largest tensor
    # is far smaller (the chunk buffers hold at most 2^19 numbers, here batch x 32 tokens).
    full_states = batch * t * 64 * 16
    largest = max(math.prod(shape) for _, shape in recorder.shapes)
    assert largest <= full_states // 4, (largest, full_states)


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options, message",
    [
        ({"d_state": 0}, "d_state"),
        ({"d_state": -4}, "d_state"),
        ({"d_state": 16.0}, "d_state"),
        ({"d_state": True}, "d_state"),
        ({"d_state": "16"}, "d_state"),
        ({"expand": 0}, "expand"),
        ({"expand": 1.5}, "expand"),
        ({"expand": True}, "expand"),
        ({"dt_rank": 0}, "dt_rank"),
        ({"dt_rank": 2.5}, "dt_rank"),
        ({"dt_rank": False}, "dt_rank"),
        ({"dt_rank": "auto"}, "dt_rank"),
        ({"inner_conv": -1}, "inner_conv"),
        ({"inner_conv": 4.0}, "inner_conv"),
        ({"inner_conv": True}, "inner_conv"),
        ({"dt_min": 0.0}, "dt_min"),
        ({"dt_min": -1e-3}, "dt_min"),
        ({"dt_min": float("nan")}, "dt_min"),
        ({"dt_min": True}, "dt_min"),
        ({"dt_max": float("inf")}, "dt_max"),
        ({"dt_max": "0.1"}, "dt_max"),
        ({"dt_max": None}, "dt_max"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "cannot exceed"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 32.0}, "chunk_size"),
        ({"chunk_size": False}, "chunk_size"),
        ({"n_heads": 4}, "unknown options"),
    ],
)
def test_bad_options_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        Mamba.options_from(options, 32)
    if "n_heads" not in options:
        with pytest.raises(ConfigError, match=message):
            Mamba(32, MambaOptions(**options))


def test_registered_and_defaults_accepted():
    assert MIXERS["mamba"] is Mamba
    assert Mamba.options_from({}, 128) == MambaOptions()
    Mamba.options_from({"dt_rank": 3, "inner_conv": 4, "dt_min": 0.01, "dt_max": 0.01, "expand": 1}, 128)


# ----------------------------------------------------------------------------- the external oracle: mambapy


def _mambapy():
    """mambapy 1.2.0 (pinned in the dev extra: pure-PyTorch Mamba, its own parallel scan). A hard import:
    when it is missing the oracle tests fail instead of passing silently."""
    from mambapy import mamba as reference

    return reference


@pytest.mark.parametrize("t", [1, 13, 70])
def test_op_matches_mambapy_parallel_scan(t):
    reference = _mambapy()
    u, delta, A, B, C, D = (v.detach() for v in scan_inputs(batch=2, t=t, e=6, n=5, seed=8))
    want = reference.MambaBlock.selective_scan(None, u, delta, A, B, C, D)  # no use of self
    torch.testing.assert_close(selective_scan_chunked(u, delta, A, B, C, D, chunk_size=CHUNK), want,
                               rtol=1e-10, atol=1e-10)  # fmt: skip


@pytest.mark.parametrize("inner_conv", [0, 4])
def test_mixer_matches_mambapy_block_forward_and_step(inner_conv):
    """Our weights in mambapy's MambaBlock (conv width 1 with weight 1 and bias 0 when ours is off).

    The recurrent steps are compared with the paper's conv (width 4) only: mambapy's ``step`` keeps
    a conv window of width d_conv - 1 that its update grows by one when d_conv = 1.

    mambapy evaluates A = -exp(A_log) in float32 even in a float64 block, so the agreement is to
    float32's precision of the decays (relative 1e-5), not float64's; the op itself is compared
    to mambapy's scan at 1e-10 above, with A given directly."""
    reference = _mambapy()
    ours = make_mixer(seed=9, d_model=32, inner_conv=inner_conv)
    with torch.no_grad():  # mambapy casts A_log and D to float32: give ours values that survive the cast
        ours.A_log.copy_(ours.A_log.float().double())
        ours.D.copy_(ours.D.float().double())
    config = reference.MambaConfig(d_model=32, n_layers=1, d_state=4, expand_factor=2, d_conv=max(inner_conv, 1))
    theirs = reference.MambaBlock(config).double()
    with torch.no_grad():
        for name in ("in_proj", "x_proj", "dt_proj", "out_proj"):
            getattr(theirs, name).load_state_dict(getattr(ours, name).state_dict())
        theirs.A_log.copy_(ours.A_log.view(64, 4))
        theirs.D.copy_(ours.D)
        if inner_conv:
            theirs.conv1d.load_state_dict(ours.conv.state_dict())
        else:
            theirs.conv1d.weight.fill_(1.0)
            theirs.conv1d.bias.zero_()
    x = torch.randn(2, 21, 32, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
        cache = (None, torch.zeros(2, 64, config.d_conv - 1, dtype=F64))
        state = ours.init_state(2, dtype=F64)
        for t in range(5 if inner_conv else 0):
            want, cache = theirs.step(x[:, t], cache)
            got, state = ours.step(x[:, t], state)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
