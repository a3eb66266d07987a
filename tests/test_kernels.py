"""Kernel ops of the inverted mixer: every fast path and Triton kernel against its reference.

Triton kernels run on the CPU interpreter: the tests taking the ``interpreted`` fixture run in a
child process started by ``test_kernels_under_the_interpreter`` with ``TRITON_INTERPRET=1`` (set
before triton is imported, as it must be), so the variable never reaches this process or other
test modules; here they are reported as skipped and the child's result as that one test. The
``cuda`` tests take the ``compiled`` fixture and run the same comparisons on a GPU.

Inputs of the read are built so that every score is exact in float32 whatever the summation
order (small integers plus a distinct multiple of 1/1024 per candidate): the top-k selection
is then unambiguous and the kernel must pick exactly the reference's candidates.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from workbench.kernels import dispatch
from workbench.kernels.chunk_read.reference import chunk_candidates, chunk_read_naive
from workbench.kernels.chunk_read.torch_impl import chunk_read_torch
from workbench.kernels.ema.reference import ema_naive
from workbench.kernels.ema.torch_impl import ema_chunked
from workbench.kernels.rest_scan.numpy_impl import rest_scan_numpy
from workbench.kernels.rest_scan.reference import rest_scan_naive, rest_step
from workbench.mixers.inverted import InvertedMixer, InvertedOptions, ema_scan

KERNEL_MODULES = {"ema": "workbench.kernels.ema.triton_impl", "chunk_read": "workbench.kernels.chunk_read.triton_impl",
                  "rest_scan": "workbench.kernels.rest_scan.triton_impl"}
HAS_TRITON = importlib.util.find_spec("triton") is not None
# TRITON_INTERPRET=1 for this whole process: the child started by test_kernels_under_the_interpreter
# (or a run where the user set it). Triton fixes interpreted-or-compiled for every @triton.jit function,
# its own tl.max/tl.sum included, when triton is imported, so a process is one or the other.
INTERPRETING = dispatch.interpreting()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
MIN_INTERPRETED = 24  # interpreted tests that must pass in the child (the wired-mixer one may skip)


def _kernels(interpret: bool) -> types.SimpleNamespace:
    mods = types.SimpleNamespace(**{op: importlib.import_module(name) for op, name in KERNEL_MODULES.items()})
    kind = "InterpretedFunction" if interpret else "JITFunction"
    assert type(mods.ema._ema_fwd_kernel).__name__ == kind, "triton was imported before TRITON_INTERPRET was set"
    assert type(mods.chunk_read._chunk_read_fwd_kernel).__name__ == kind
    return mods


@pytest.fixture
def interpreted():
    """The kernel modules on the Triton CPU interpreter (only in a TRITON_INTERPRET=1 process)."""
    if not INTERPRETING:
        pytest.skip("runs in the TRITON_INTERPRET=1 subprocess of test_kernels_under_the_interpreter")
    return _kernels(interpret=True)


@pytest.fixture
def compiled():
    """The kernel modules compiled for the GPU (not in an interpreting process)."""
    if INTERPRETING:
        pytest.skip("needs compiled kernels; TRITON_INTERPRET=1 is set in this process")
    return _kernels(interpret=False)


@needs_triton
def test_kernels_under_the_interpreter():
    """Run this file's ``interpreted`` tests in a child process with TRITON_INTERPRET=1.

    The variable then never touches this process (nor the other test modules), and triton is
    imported in the child with it already set.
    """
    if INTERPRETING:
        pytest.skip("this process interprets already: the interpreted tests run in it directly")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "interpreted"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= MIN_INTERPRETED, report  # they really ran, not skipped


def assert_close(actual, expected, tol, name=""):
    """Max abs error within ``tol`` times the reference's scale (relative, robust to tiny entries)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (name, actual.shape, expected.shape)
    scale = expected.abs().max().clamp_min(1.0) if expected.numel() else 1.0
    err = (actual - expected).abs().max() if expected.numel() else 0.0
    assert err <= tol * scale, f"{name}: max error {float(err):.3g} > {tol:.1g} * {float(scale):.3g}"


TOL = {torch.float32: 1e-5, torch.float64: 1e-12}

# ----------------------------------------------------------------------------- op 0: the rest scan


def rest_inputs(rows, t, m, dtype, sink, device="cpu", seed=0):
    """Logits on a grid of 1/8 and a strength that is a power of two, so that every sum the scan makes
    stays far from a tie between units whatever the summation order (the winners must match exactly)."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randint(-40, 40, (rows, t, m), generator=gen) / 8 + torch.arange(m) / (64 * m)).to(dtype)
    salience = torch.rand(rows, t, generator=gen, dtype=dtype)
    sink_bid = torch.randn(rows, generator=gen, dtype=dtype) if sink else None
    return [z.to(device) if z is not None else None for z in (logits, salience, sink_bid)]


def check_rest_scan(fn, rows, t, m, dtype, sink, hard, device="cpu", per_row=False):
    logits, salience, sink_bid = rest_inputs(rows, t, m, dtype, sink, device)
    keep = torch.tensor(0.75, dtype=dtype, device=device)
    # One strength per row (the seeking mixer's rest_learned: a strength per head), or one for all.
    strength = torch.linspace(1.0, 16.0, rows, dtype=dtype, device=device) if per_row else 4.0
    got = fn(logits, salience, sink_bid, keep, strength, hard)
    ref = rest_scan_naive(logits, salience, sink_bid, keep, strength, hard)
    if per_row:  # the last row's scan is the scan of that row alone at its own strength
        alone = rest_scan_naive(logits[-1:], salience[-1:], None if sink_bid is None else sink_bid[-1:], keep,
                                16.0, hard)
        assert_close(ref[0][-1:], alone[0], TOL[dtype], "per-row rest")
    assert_close(got[0], ref[0], TOL[dtype], "rest")
    assert_close(got[2], ref[2], TOL[dtype], "load")
    if hard:
        assert torch.equal(got[1], ref[1])
        assert int((ref[1] == 0).sum()) < ref[1].numel()  # rest moved some messages off unit 0
    else:
        assert got[1] is None and ref[1] is None


def test_rest_scan_is_the_mixers_recurrent_step_token_by_token():
    logits, salience, sink_bid = rest_inputs(3, 9, 5, torch.float64, sink=True)
    rest, winner, load = rest_scan_naive(logits, salience, sink_bid, 0.75, 4.0, True)
    state = torch.zeros(3, 5, dtype=torch.float64)
    for i in range(9):
        r, w, state = rest_step(logits[:, i], salience[:, i], state, sink_bid, 0.75, 4.0, True)
        assert torch.equal(r, rest[:, i]) and torch.equal(w, winner[:, i])
    assert torch.equal(state, load)
    assert int((winner == 5).sum()) > 0  # the sink wins some (those write nowhere)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sink, hard", [(False, True), (True, True), (False, False), (True, False)])
@pytest.mark.parametrize("per_row", [False, True])
def test_rest_scan_numpy_is_the_loop(dtype, sink, hard, per_row):
    check_rest_scan(rest_scan_numpy, 5, 17, 7, dtype, sink, hard, per_row=per_row)


def test_rest_scan_numpy_carries_a_load_and_keeps_the_dtype():
    logits, salience, sink_bid = rest_inputs(3, 8, 4, torch.float32, sink=True)
    start = torch.rand(3, 4)
    ref = rest_scan_naive(logits, salience, sink_bid, 0.5, 2.0, True, load=start.clone())
    got = rest_scan_numpy(logits, salience, sink_bid, 0.5, 2.0, True, load=start)
    assert torch.equal(got[1], ref[1]) and torch.allclose(got[2], ref[2]) and torch.allclose(got[0], ref[0])
    low = rest_scan_numpy(logits.bfloat16(), salience.bfloat16(), None, 0.5, 2.0, True)
    assert low[0].dtype == low[2].dtype == torch.bfloat16 and low[1].shape == (3, 8)
    assert dispatch.get_impl("rest_scan", "cpu", "torch") is rest_scan_numpy
    assert dispatch.get_impl("rest_scan", "cpu", "naive") is rest_scan_naive


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sink, hard", [(False, True), (True, True), (False, False), (True, False)])
@pytest.mark.parametrize("per_row", [False, True])
def test_rest_scan_triton_interpreted(interpreted, dtype, sink, hard, per_row):
    check_rest_scan(interpreted.rest_scan.rest_scan_triton, 4, 13, 6, dtype, sink, hard, per_row=per_row)


@needs_triton
def test_rest_scan_triton_is_the_seeking_mixers_scan_interpreted(interpreted, monkeypatch):
    from workbench.mixers.seeking import SeekingOptions, SeekingUnits

    torch.manual_seed(0)
    mixer = SeekingUnits(16, SeekingOptions(n_heads=2, n_units=5, chunk_size=4, rest_on_wins=True, sink=True))
    x = torch.randn(2, 11, 16)
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    y_ref = mixer(x)
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    assert_close(mixer(x), y_ref, 1e-5, "y")


# ----------------------------------------------------------------------------- op 1: EMA


def ema_inputs(b, t, d, dtype, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=gen, dtype=dtype).to(device).requires_grad_()
    decay = (torch.rand(d, generator=gen, dtype=dtype) * 0.98 + 0.01).to(device).requires_grad_()
    return x, decay


def check_ema(fn, x, decay, tol):
    y = fn(x, decay)
    y_ref = ema_naive(x, decay)
    gy = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, [x, decay], gy)
    grads_ref = torch.autograd.grad(y_ref, [x, decay], gy)
    assert_close(y, y_ref, tol, "y")
    for name, g, g_ref in zip(("dx", "ddecay"), grads, grads_ref):
        assert_close(g, g_ref, tol * max(1, x.shape[1]) ** 0.5, name)


@pytest.mark.parametrize("t", [1, 2, 7, 33])
def test_ema_scan_matches_naive(t):
    x, decay = ema_inputs(2, t, 5, torch.float64)
    check_ema(ema_scan, x, decay, 1e-12)


@pytest.mark.parametrize("t", [1, 5, 8, 9, 40, 130])
@pytest.mark.parametrize("channels", [5, 12], ids=["distinct-decays", "per-channel"])
def test_ema_chunked_matches_naive(t, channels):
    """Chunk 8: T below, at and across chunk boundaries; <= 8 distinct decays use the grouped path."""
    x, decay = ema_inputs(2, t, channels, torch.float64)
    check_ema(lambda x, a: ema_chunked(x, a, chunk_size=8), x, decay, 1e-12)


@pytest.mark.parametrize("t", [1, 16, 70])
@pytest.mark.parametrize("groups", ["contiguous", "interleaved"])
def test_ema_chunked_grouped_timescales_match_naive(groups, t):
    """The mixer's layout: a few timescales shared by groups of channels (contiguous or not).

    Chunk 16: T inside one chunk, exactly one, and five with padding; the backward is the adjoint pass.
    """
    x, _ = ema_inputs(2, t, 9, torch.float64)
    scales = torch.tensor([0.9, 0.99, 0.999], dtype=torch.float64)
    index = torch.arange(9) // 3 if groups == "contiguous" else torch.arange(9) % 3
    decay = scales[index]  # a fixed buffer, as in the mixer: the grouped path
    y = ema_chunked(x, decay, chunk_size=16)
    gy = torch.randn_like(y)
    y_ref = ema_naive(x, decay)
    assert_close(y, y_ref, 1e-12, "y")
    assert_close(torch.autograd.grad(y, x, gy)[0], torch.autograd.grad(y_ref, x, gy)[0], 1e-11, "dx")


EMA_SHAPES = [(2, 1, 3), (2, 19, 5), (1, 33, 130)]  # T odd / 1; D = 130 spans two channel blocks, masked


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", EMA_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_ema_triton_interpreted(interpreted, shape, dtype):
    x, decay = ema_inputs(*shape, dtype)
    check_ema(interpreted.ema.ema_triton, x, decay, TOL[dtype])


@needs_triton
def test_ema_triton_bfloat16_input_float32_decay_interpreted(interpreted):
    """Half-precision input: the decay stays float32 (0.999 is 1.0 in bfloat16) and the output is float32."""
    x = torch.randn(2, 9, 4, dtype=torch.bfloat16, requires_grad=True)
    decay = torch.tensor([0.9, 0.99, 0.999, 0.5])
    y, y_ref = interpreted.ema.ema_triton(x, decay), ema_scan(x, decay)
    assert y.dtype == y_ref.dtype == torch.float32
    assert_close(y, y_ref, 1e-5, "y")
    dx, dx_ref = (torch.autograd.grad(z.square().sum(), x)[0] for z in (y, y_ref))
    assert_close(dx.float(), dx_ref.float(), 1e-2, "dx")  # bfloat16 gradients


@needs_triton
def test_ema_triton_gradcheck_interpreted(interpreted):
    x, decay = ema_inputs(1, 4, 3, torch.float64)
    assert torch.autograd.gradcheck(interpreted.ema.ema_triton, (x, decay))


@needs_triton
def test_ema_triton_rejects_bad_shapes(interpreted):
    with pytest.raises(ValueError, match="expects x"):
        interpreted.ema.ema_triton(torch.zeros(2, 3, 4), torch.zeros(3))


# ----------------------------------------------------------------------------- op 2: chunked top-k read


def read_inputs(b, n, c, m, e, dv, dtype, device="cpu", seed=0, p_valid=0.6):
    """(q, state_key, chunk_key, state_value, chunk_value, valid) with exact, distinct scores per row.

    Row (0, 0, 0) has no valid candidate, row (0, 0, 1) (if any) exactly one, the first chunk's
    state part is empty (as in the mixer), and ``p_valid`` of the rest are valid.
    """
    gen = torch.Generator().manual_seed(seed)
    nc = m + c
    q = torch.randint(-2, 3, (b, n, c, e), generator=gen).to(dtype)
    keys = torch.randint(-2, 3, (b, n, nc, e), generator=gen).to(dtype)
    q[..., -1] = 1.0  # the last key channel tags each candidate with a distinct fraction
    keys[..., -1] = (torch.stack([torch.randperm(nc, generator=gen) for _ in range(b * n)]).view(b, n, nc) + 1) / 1024
    values = torch.randn(b, n, nc, dv, generator=gen, dtype=dtype)
    valid = torch.rand(b, n, c, nc, generator=gen) < p_valid
    valid[:, 0, :, :m] = False
    valid[0, 0, 0] = False
    if c > 1:
        valid[0, 0, 1] = False
        valid[0, 0, 1, m + 1] = True
    tensors = (q, keys[..., :m, :], keys[..., m:, :], values[..., :m, :], values[..., m:, :])
    return (*(z.contiguous().to(device).requires_grad_() for z in tensors), valid.to(device))


def check_read(fn, args, k, tol, ref=chunk_read_torch):
    inputs, valid = args[:5], args[5]
    read, lse, weights = fn(*inputs, valid, k, need_weights=True)
    read_ref, lse_ref, weights_ref = ref(*inputs, valid, k, need_weights=True)
    assert_close(read, read_ref, tol, "read")
    assert_close(lse, lse_ref, tol, "lse")
    assert_close(weights.detach(), weights_ref.detach(), tol, "weights")
    assert torch.all(read[~valid.any(-1)] == 0)  # nothing valid: reads exactly zero
    g_read = torch.randn_like(read_ref)
    g_lse = torch.randn_like(lse_ref)
    grads = torch.autograd.grad([read, lse], inputs, [g_read, g_lse])
    grads_ref = torch.autograd.grad([read_ref, lse_ref], inputs, [g_read, g_lse])
    for name, g, g_ref in zip(("dq", "dstate_key", "dchunk_key", "dstate_value", "dchunk_value"), grads, grads_ref):
        assert_close(g, g_ref, tol, name)


# (B, n, C, M, E, Dv, k): C = 17 spans two row blocks, M = 40 two column tiles; C = 5, 6, 3 are
# not powers of two; the last case has k >= M + C, the dense read.
READ_CASES = [
    (1, 2, 5, 7, 6, 9, 1),
    (2, 1, 17, 40, 20, 5, 2),
    (1, 2, 6, 8, 12, 16, 4),
    (1, 1, 3, 2, 4, 3, 8),
]


@pytest.mark.parametrize("case", READ_CASES[:2] + READ_CASES[3:], ids=str)
def test_chunk_read_torch_matches_naive(case):
    *shape, k = case
    check_read(chunk_read_torch, read_inputs(*shape, torch.float64), k, 1e-12, ref=chunk_read_naive)


@needs_triton
@pytest.mark.parametrize("case", READ_CASES, ids=str)
def test_chunk_read_triton_interpreted(interpreted, case):
    *shape, k = case
    check_read(interpreted.chunk_read.chunk_read_triton, read_inputs(*shape, torch.float32), k, TOL[torch.float32])


@needs_triton
def test_chunk_read_triton_float64_random_interpreted(interpreted):
    """Plain random inputs (no exact-score construction) in float64: ties are then impossible."""
    gen = torch.Generator().manual_seed(1)
    b, n, c, m, e, dv = 1, 2, 6, 9, 5, 7
    shapes = [(b, n, c, e), (b, n, m, e), (b, n, c, e), (b, n, m, dv), (b, n, c, dv)]
    inputs = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]
    valid = torch.rand(b, n, c, m + c, generator=gen) < 0.5
    check_read(interpreted.chunk_read.chunk_read_triton, (*inputs, valid), 2, TOL[torch.float64])


@needs_triton
def test_chunk_read_triton_rejects_large_k_and_bad_mask(interpreted):
    args = read_inputs(1, 1, 12, 16, 4, 4, torch.float32)
    with pytest.raises(ValueError, match="supports"):
        interpreted.chunk_read.chunk_read_triton(*args, 9)
    with pytest.raises(ValueError, match="bool"):
        interpreted.chunk_read.chunk_read_triton(*args[:5], args[5].float(), 2)


# ----------------------------------------------------------------------------- the mixer's read, factored


def mixer_read_inputs(b, t, m, e, dv, dtype, device="cpu", seed=0):
    """Random (query, key, value, occupant, unit) with the mixer's write/evict structure.

    Exact, distinct scores as in ``read_inputs``: each position's key carries its own tag.
    """
    gen = torch.Generator().manual_seed(seed)
    unit = torch.randint(-1, m, (b, t), generator=gen)  # -1: no write
    posted = torch.where(unit[..., None] == torch.arange(m), torch.arange(t)[:, None], -1)
    occupant = posted.cummax(dim=1).values
    query = torch.randint(-2, 3, (b, t, e), generator=gen).to(dtype)
    key = torch.randint(-2, 3, (b, t, e), generator=gen).to(dtype)
    query[..., -1] = 1.0
    key[..., -1] = (torch.randperm(t, generator=gen) + 1).to(dtype) / 1024
    value = torch.randn(b, t, dv, generator=gen, dtype=dtype)
    tensors = [z.to(device).requires_grad_() for z in (query, key, value)]
    return (*tensors, occupant.to(device), unit.to(device))


def mixer_read(mixer, query, key, value, occupant, unit):
    """``InvertedMixer._mix_chunked`` with the read-weights hook on (so it also returns the weights).

    The mixer builds its candidate tables from ``unit`` alone (``chunk_tables``); the factored
    read below derives them from the occupant table instead, so comparing the two checks both.
    """
    handle = mixer.hook_read_weights.register_forward_hook(lambda *_: None)
    try:
        return mixer._mix_chunked(query, key, value, unit)
    finally:
        handle.remove()


def factored_read(fn, mixer, query, key, value, occupant, unit):
    """The same read through ``chunk_candidates`` + an op implementation (what the wiring will do)."""
    b, t, _ = query.shape
    m, c, k = mixer.o.n_units, min(mixer.o.chunk_size, t), mixer.o.read_topk
    q, sk, ck, sv, cv, valid = chunk_candidates(query, key, value, occupant, unit, m, mixer.o.chunk_size)
    read, lse, weights = fn(q, sk, ck, sv, cv, valid, k, need_weights=True)
    n = q.shape[1]
    chunk_unit = torch.nn.functional.pad(unit, (0, n * c - t), value=-1).view(b, n, 1, c)
    dense = weights[..., :m].clone()
    dense.scatter_add_(-1, chunk_unit.clamp_min(0).expand(b, n, c, c), weights[..., m:])
    return read.reshape(b, n * c, -1)[:, :t], dense.reshape(b, n * c, m)[:, :t], lse.reshape(b, n * c)[:, :t]


MIXER_CASES = [(2, 23, 8, 2, 5), (1, 9, 6, 1, 4), (1, 13, 8, 4, 13)]  # (B, T, M, k, chunk): T % chunk != 0


@pytest.mark.parametrize("case", MIXER_CASES, ids=str)
def test_chunk_read_torch_is_the_mixers_read(case):
    b, t, m, k, chunk = case
    mixer = InvertedMixer(16, InvertedOptions(n_units=m, read_topk=k, chunk_size=chunk))
    inputs = mixer_read_inputs(b, t, m, 6, 7, torch.float64)
    expected = mixer_read(mixer, *inputs)
    got = factored_read(chunk_read_torch, mixer, *inputs)
    for a, e in zip(got, expected):
        assert torch.equal(a, e)


@pytest.mark.parametrize("case", MIXER_CASES, ids=str)
def test_chunk_read_gather_is_the_mixers_dense_read(case):
    """The CPU path without the weights hook (values fetched by position) against the hooked one
    (dense weights through ``chunk_read_torch``): values and gradients."""
    b, t, m, k, chunk = case
    mixer = InvertedMixer(16, InvertedOptions(n_units=m, read_topk=k, chunk_size=chunk))
    inputs = mixer_read_inputs(b, t, m, 6, 7, torch.float64)
    expected = mixer_read(mixer, *inputs)
    read, dense, lse = mixer._mix_chunked(*inputs[:3], inputs[4])
    assert dense is None  # the gather path ran
    assert_close(read, expected[0], 1e-12, "read")
    assert_close(lse, expected[2], 1e-12, "lse")
    g_read, g_lse = torch.randn_like(read), torch.randn_like(lse)
    grads = torch.autograd.grad([read, lse], inputs[:3], [g_read, g_lse])
    grads_ref = torch.autograd.grad([expected[0], expected[2]], inputs[:3], [g_read, g_lse])
    for name, g, g_ref in zip(("dquery", "dkey", "dvalue"), grads, grads_ref):
        assert_close(g, g_ref, 1e-12, name)


def check_mixer_read(fn, mixer, inputs, tol):
    expected = mixer_read(mixer, *inputs)
    got = factored_read(fn, mixer, *inputs)
    for name, a, e in zip(("read", "weights", "lse"), got, expected):
        assert_close(a.detach(), e.detach(), tol, name)
    g_read, g_lse = torch.randn_like(expected[0]), torch.randn_like(expected[2])
    grads = torch.autograd.grad([got[0], got[2]], inputs[:3], [g_read, g_lse])
    grads_ref = torch.autograd.grad([expected[0], expected[2]], inputs[:3], [g_read, g_lse])
    for name, g, g_ref in zip(("dquery", "dkey", "dvalue"), grads, grads_ref):
        assert_close(g, g_ref, tol, name)


@needs_triton
def test_chunk_read_triton_is_the_mixers_read_interpreted(interpreted):
    _, t, m, k, chunk = MIXER_CASES[0]
    mixer = InvertedMixer(16, InvertedOptions(n_units=m, read_topk=k, chunk_size=chunk))
    for dtype in (torch.float32, torch.float64):
        inputs = mixer_read_inputs(1, t, m, 6, 7, dtype)
        check_mixer_read(interpreted.chunk_read.chunk_read_triton, mixer, inputs, TOL[dtype])


def _wired() -> bool:
    return hasattr(InvertedMixer(8, InvertedOptions(n_units=4)), "kernels")


@needs_triton
def test_wired_mixer_backends_agree_interpreted(interpreted):
    """``InvertedMixer.kernels`` selects the backend; all three give the same mixer, values and gradients."""
    assert _wired(), "the dispatcher must be wired into InvertedMixer (a `kernels` attribute)"
    from workbench.hooks import capture

    torch.manual_seed(0)
    mixer = InvertedMixer(16, InvertedOptions(n_units=8, read_topk=2, chunk_size=5, write_bias=0.0)).double()
    for p in mixer.parameters():  # large random weights: gates flip, rings wrap, units get evicted
        torch.nn.init.normal_(p, std=0.4)
    x = torch.randn(1, 13, 16, dtype=torch.float64, requires_grad=True)
    results = {}
    for backend in ("torch", "triton", "naive"):
        mixer.kernels = backend
        with capture(mixer, ["hook_read_weights"]) as cache:
            y = mixer(x)
        grads = torch.autograd.grad((y * torch.sin(y)).sum(), [x, *mixer.parameters()])
        results[backend] = (y, cache["hook_read_weights"], *grads)
    assert 0.2 < mixer.stats["write_fraction"] < 0.9
    for backend in ("triton", "naive"):
        for a, e in zip(results[backend], results["torch"]):
            assert_close(a.detach(), e.detach(), 1e-12, backend)


# ----------------------------------------------------------------------------- dispatch


def test_dispatch_cpu_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    cpu = torch.device("cpu")
    assert dispatch.get_impl("ema", cpu) is ema_chunked
    assert dispatch.get_impl("chunk_read", "cpu") is chunk_read_torch
    assert dispatch.get_impl("ema", cpu, "naive") is ema_naive
    assert dispatch.get_impl("chunk_read", cpu, "naive") is chunk_read_naive
    monkeypatch.setenv(dispatch.ENV_VAR, "naive")
    assert dispatch.get_impl("ema", cpu) is ema_naive
    assert dispatch.get_impl("ema", cpu, "torch") is ema_chunked  # the argument wins over the environment
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="WORKBENCH_KERNELS"):
        dispatch.get_impl("ema", cpu)
    with pytest.raises(ValueError, match="unknown kernel op"):
        dispatch.get_impl("conv", cpu, "auto")


@needs_triton
def test_dispatch_triton_needs_cuda_or_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="CUDA"):
        dispatch.get_impl("ema", "cpu", "triton")


@needs_triton
def test_dispatch_triton_backend_interpreted(interpreted, monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert dispatch.get_impl("ema", "cpu", "triton") is interpreted.ema.ema_triton
    assert dispatch.get_impl("chunk_read", "cpu", "triton") is interpreted.chunk_read.chunk_read_triton
    # auto on a CUDA device picks triton (here run with CPU tensors on the interpreter) and falls
    # back to the PyTorch read for k > MAX_K
    auto = dispatch.get_impl("chunk_read", torch.device("cuda"))
    assert auto is not chunk_read_torch and auto.__wrapped__ is interpreted.chunk_read.chunk_read_triton
    args = read_inputs(1, 1, 12, 16, 4, 4, torch.float32)
    for k in (2, 9):
        check_read(auto, args, k, TOL[torch.float32])


# ----------------------------------------------------------------------------- the same on a GPU

CUDA_READ_CASES = READ_CASES + [(2, 3, 64, 128, 64, 128, k) for k in (1, 2, 4, 8)] + [(1, 2, 48, 100, 40, 72, 3)]


@needs_cuda
@needs_triton
@pytest.mark.parametrize("shape", EMA_SHAPES + [(4, 1000, 384)], ids=lambda s: "x".join(map(str, s)))
def test_ema_triton_cuda(compiled, shape):
    x, decay = ema_inputs(*shape, torch.float32, device="cuda")
    check_ema(compiled.ema.ema_triton, x, decay, 1e-5)


@needs_triton
@needs_cuda
@pytest.mark.parametrize("sink, hard", [(False, True), (True, True), (True, False)])
def test_rest_scan_triton_cuda(compiled, sink, hard):
    check_rest_scan(compiled.rest_scan.rest_scan_triton, 64, 300, 64, torch.float32, sink, hard, device="cuda")


@needs_cuda
@needs_triton
@pytest.mark.parametrize("case", CUDA_READ_CASES, ids=str)
def test_chunk_read_triton_cuda(compiled, case):
    *shape, k = case
    check_read(compiled.chunk_read.chunk_read_triton, read_inputs(*shape, torch.float32, device="cuda"), k, 1e-5)


@needs_cuda
@needs_triton
@pytest.mark.parametrize("case", MIXER_CASES + [(2, 300, 128, 2, 64)], ids=str)
def test_chunk_read_triton_is_the_mixers_read_cuda(compiled, case):
    b, t, m, k, chunk = case
    mixer = InvertedMixer(16, InvertedOptions(n_units=m, read_topk=k, chunk_size=chunk))
    inputs = mixer_read_inputs(b, t, m, 6, 7, torch.float32, "cuda")
    check_mixer_read(compiled.chunk_read.chunk_read_triton, mixer, inputs, 1e-5)


# ----------------------------------------------------------------------------- op: the ordinal code


def test_ordinal_code_recompute_matches_the_definition():
    """Values equal; gradients (ordinals and frequencies) equal to autograd through the definition."""
    from workbench.kernels.ordinal import ordinal_code_naive, ordinal_code_recompute

    gen = torch.Generator().manual_seed(0)
    freqs = (64.0 ** -(torch.arange(8, dtype=torch.float64) / 7)).requires_grad_()
    for dtype in (torch.float32, torch.float64):
        ordinal = (torch.rand(3, 17, generator=gen, dtype=dtype) * 1000).requires_grad_()
        y, y_ref = ordinal_code_recompute(ordinal, freqs), ordinal_code_naive(ordinal, freqs)
        assert torch.equal(y, y_ref)
        g = torch.randn(y.shape, generator=gen)
        grads = torch.autograd.grad(y, [ordinal, freqs], g)
        grads_ref = torch.autograd.grad(y_ref, [ordinal, freqs], g)
        for got, ref in zip(grads, grads_ref):
            assert got.dtype == ref.dtype
            torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
