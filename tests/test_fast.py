"""workbench.fast: the fused recurrent step gives the plain step's outputs and state, for every mixer.

Compiling takes seconds to tens of seconds per graph on 2 cores: the default run checks the
inverted block and the transformer's static KV cache with ``torch.compile`` (Python wrapper: the
quickest compile); every registered mixer, AOTInductor and ``generate(fused=True)`` are ``slow``.
"""

from __future__ import annotations

import pytest
import torch

from workbench import fast
from workbench.bench.common import build_block
from workbench.config import ModelConfig
from workbench.mixers import MIXERS
from workbench.model import Model, TaskIO

QUICK = {"cpp_wrapper": False, "max_autotune": False, "freezing": False}  # the default run: the quickest compile


def check_block(mixer: str, backend: str, options=None, batch: int = 2, context: int = 5, steps: int = 10,
                mixer_options: dict | None = None):
    torch.manual_seed(0)
    block = build_block(mixer, 16, 2, mixer_options or {}).eval()
    xs = torch.randn(context + steps, batch, 16)
    with torch.no_grad():
        state = block.init_state(batch)
        for t in range(context):
            _, state = block.step(xs[t], state)
        fused = fast.FusedStep(block, batch, backend=backend, capacity=64, options=options)
        given, snapshot = state, {k: v.clone() for k, v in state["mixer"].items() if isinstance(v, torch.Tensor)}
        flat = fused.from_state(state)
        for t in range(context, context + steps):
            y, state = block.step(xs[t], state)
            y_fused, flat = fused(xs[t].t().contiguous().t() if t % 2 else xs[t], flat)  # strided inputs too
            torch.testing.assert_close(y_fused, y, rtol=1e-5, atol=1e-5)
        back = fused.to_state(flat)
    for key, value in snapshot.items():  # a state written in place (InPlaceState) is a copy of the one handed in
        assert torch.equal(given["mixer"][key], value), key
    assert back["mixer"].keys() == state["mixer"].keys()
    for key, value in state["mixer"].items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(back["mixer"][key].to(value.dtype), value, rtol=1e-5, atol=1e-5)
        else:
            assert back["mixer"][key] == value, key
    torch.testing.assert_close(back["conv"], state["conv"], rtol=1e-5, atol=1e-5)
    return fused


def test_fused_inverted_block_equals_the_plain_step():
    fused = check_block("inverted", "compile", QUICK)
    assert fused.compile_s > 0


def test_fused_seeking_block_equals_the_plain_step():
    check_block("seeking", "compile", QUICK)


def test_fused_seeking_block_with_jittered_hard_writes_equals_the_plain_step():
    """The jitter's position counter is an integer state entry: the fused step carries it too."""
    check_block("seeking", "compile", QUICK, mixer_options={"write_jitter": True, "rest_on_wins": False})


def test_fused_seeking_block_with_rest_on_wins_equals_the_plain_step():
    """The rest scan's step (an argmax over the bids and the sink) fuses like the rest of the step."""
    check_block("seeking", "compile", QUICK, mixer_options={"rest_on_wins": True, "rest_strength": 8.0, "sink": True})


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_no_state_entry_is_a_placeholder(mixer):
    """A fused step flattens the state into tensors: an option that is off leaves its entry out, not None."""
    block = build_block(mixer, 16, 2, {})
    state = block.init_state(2)
    assert all(value is not None for value in state["mixer"].values()), state["mixer"]
    _, after = block.step(torch.randn(2, 16), state)
    assert after["mixer"].keys() == state["mixer"].keys()


def test_fused_transformer_static_kv_cache_equals_the_growing_cache():
    fused = check_block("transformer", "compile", QUICK, batch=1)
    state = fused.init_state()
    assert state[1].shape[2] == 64  # the cache is pre-allocated to the capacity
    assert fused.to_state(state)["mixer"]["k"].shape[2] == 0  # and read back cut to its length


@pytest.mark.slow
@pytest.mark.parametrize("backend", fast.BACKENDS)
@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_fused_block_equals_the_plain_step_for_every_mixer(mixer, backend):
    check_block(mixer, backend)


@pytest.mark.slow
@pytest.mark.parametrize("mixer", ["inverted", "transformer"])
def test_generate_fused_gives_the_plain_tokens(mixer):
    torch.manual_seed(0)
    model = Model(ModelConfig(mixer=mixer, d_model=16, n_layers=2), TaskIO(input_kind="tokens", head="lm",
                                                                             vocab_size=11)).eval()
    prompt = torch.randint(0, 11, (3, 6))
    plain = model.generate(prompt, 12, temperature=0)
    fused = model.generate(prompt, 12, temperature=0, fused=True)
    assert torch.equal(plain, fused)


def test_fused_step_is_cached_until_the_weights_change(monkeypatch):
    built = []

    class Stub:
        def __init__(self, module, batch_size, **kwargs):
            built.append((batch_size, kwargs["capacity"]))
            self.version = fast._weights_version(module)

    monkeypatch.setattr(fast, "FusedStep", Stub)
    block = build_block("inverted", 16, 2, {})
    first = fast.fused_step(block, 2, capacity=100)
    assert fast.fused_step(block, 2, capacity=300) is first  # constant state: capacity ignored
    assert fast.fused_step(block, 3) is not first  # another batch size
    with torch.no_grad():
        next(block.parameters()).add_(1.0)  # an optimizer step changes a weight in place
    assert fast.fused_step(block, 2) is not first
    assert built == [(2, None), (3, None), (2, None)]
    attention = build_block("transformer", 16, 2, {})
    fast.fused_step(attention, 1, capacity=100)
    fast.fused_step(attention, 1, capacity=120)  # rounded up to the same power of two: cached
    assert built[-1] == (1, 128) and len(built) == 4


def test_fused_step_refuses_what_it_cannot_fuse():
    block = build_block("transformer", 16, 2, {})
    with pytest.raises(ValueError, match="capacity"):
        fast.FusedStep(block, 1)
    with pytest.raises(ValueError, match="backend"):
        fast.FusedStep(block, 1, backend="jit", capacity=8)
