"""The model around every mixer: causal, shapes per head, hook points, input checks,
recurrent form equal to the parallel one, and generation."""

from __future__ import annotations

import pytest
import torch

from workbench.config import ConfigError, ModelConfig
from workbench.hooks import capture, hook_names
from workbench.mixers import MIXERS
from workbench.model import Model, TaskIO, parameter_report

VOCAB = 20
LM_IO = TaskIO(input_kind="tokens", head="lm", vocab_size=VOCAB)


def build(mixer: str, options: dict, io: TaskIO = LM_IO, n_layers: int = 1, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    return Model(ModelConfig(mixer=mixer, d_model=32, n_layers=n_layers, mlp_ratio=2, mixer_options=options), io)


@pytest.fixture
def mixer_module(mixer_name, mixer_options, scrambled):
    """The bare mixer, float64, with large random weights (every gate and path active)."""
    cls = MIXERS[mixer_name]
    mixer = cls(32, cls.options_from(mixer_options(mixer_name), 32)).double()
    return scrambled(mixer, std=0.4, seed=1)


def exercised(mixer: torch.nn.Module) -> None:
    """For mixers that report write statistics: the run wrote some tokens and skipped others."""
    stats = getattr(mixer, "stats", None) or {}
    if "write_fraction" in stats:
        assert 0.0 < stats["write_fraction"] < 1.0, stats


# ----------------------------------------------------------------------------- causality


@pytest.mark.parametrize("training", [False, True])
def test_mixer_gradients_never_reach_back_from_the_future(mixer_module, training):
    mixer_module.train(training)
    # The inverted mixer's hard writes can leave an early position with no message to read (a zero
    # gradient there is causal, not vacuous), so the vacuity check asks for gradient at a later position.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 21, 32, dtype=torch.float64, generator=gen).requires_grad_()
    y = mixer_module(x)
    exercised(mixer_module)
    for t in (0, 5, 11, 19):
        probe = torch.randn(y[:, : t + 1].shape, dtype=y.dtype, generator=gen)
        (grad,) = torch.autograd.grad((y[:, : t + 1] * probe).sum(), x, retain_graph=True)
        assert torch.count_nonzero(grad[:, t + 1 :]) == 0, f"outputs up to {t} depend on later inputs"
        assert t < 5 or torch.count_nonzero(grad[:, : t + 1]) > 0, "no gradient at all: the check is vacuous"


def test_mixer_outputs_ignore_future_inputs(mixer_module):
    mixer_module.eval()
    x = torch.randn(2, 21, 32, dtype=torch.float64)
    y = mixer_module(x)
    for t in (0, 6, 13):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :]) * 3
        y_changed = mixer_module(changed)
        torch.testing.assert_close(y_changed[:, : t + 1], y[:, : t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(y_changed[:, t + 1 :], y[:, t + 1 :]), "future inputs changed nothing"


@pytest.mark.parametrize("n_layers", [1, 2])
def test_model_outputs_and_gradients_are_causal(mixer_name, mixer_options, scrambled, n_layers):
    model = scrambled(build(mixer_name, mixer_options(mixer_name), n_layers=n_layers), std=0.3, seed=2).double()
    model.eval()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (3, 20), generator=gen)
    logits = model(tokens)
    for t in (0, 7, 15):
        changed = tokens.clone()
        changed[:, t + 1 :] = torch.randint(0, VOCAB, changed[:, t + 1 :].shape, generator=gen)
        new = model(changed)
        torch.testing.assert_close(new[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-10)
    # Gradient through the whole stack, from the embedded inputs (hook_embed is identity).
    model.train()
    embedded = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        embedded["x"] = output

    handle = model.hook_embed.register_forward_hook(keep)
    try:
        out = model(tokens)
    finally:
        handle.remove()
    t = 9
    out[:, : t + 1].logsumexp(-1).sum().backward()
    grad = embedded["x"].grad
    assert torch.count_nonzero(grad[:, t + 1 :]) == 0
    assert torch.count_nonzero(grad[:, : t + 1]) > 0


# ----------------------------------------------------------------------------- heads and hooks


@pytest.mark.parametrize(
    "io, inputs, shape",
    [
        (LM_IO, torch.randint(0, VOCAB, (3, 9)), (3, 9, VOCAB)),
        (TaskIO(input_kind="vectors", head="classify", input_dim=4, n_outputs=10), torch.rand(3, 16, 4), (3, 10)),
        (TaskIO(input_kind="vectors", head="regress", input_dim=11, n_outputs=1), torch.randn(3, 10, 11), (3, 1)),
        (TaskIO(input_kind="tokens", head="classify", vocab_size=VOCAB, n_outputs=3), torch.randint(0, VOCAB, (3, 9)), (3, 3)),
    ],
)
def test_head_shapes_and_losses(mixer_name, mixer_options, io, inputs, shape):
    model = build(mixer_name, mixer_options(mixer_name), io)
    out = model(inputs)
    assert out.shape == shape and torch.isfinite(out).all()
    if io.head == "lm":
        targets = torch.randint(0, VOCAB, shape[:2])
        targets[:, :3] = -100  # ignored positions carry no loss
    elif io.head == "classify":
        targets = torch.randint(0, io.n_outputs, (shape[0],))
    else:
        targets = torch.randn(shape)
    loss = model.loss(inputs, targets)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.head.parameters())


def test_lm_loss_ignores_positions_marked_ignore():
    model = build("transformer", {"n_heads": 4})
    tokens = torch.randint(0, VOCAB, (2, 8))
    targets = torch.randint(0, VOCAB, (2, 8))
    masked = targets.clone()
    masked[:, :4] = -100
    logits = model(tokens)
    expected = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, VOCAB), targets[:, 4:].reshape(-1))
    torch.testing.assert_close(model.loss(tokens, masked), expected)


def test_pooling_heads_use_the_mask():
    io = TaskIO(input_kind="vectors", head="regress", input_dim=4, n_outputs=2)
    model = build("transformer", {"n_heads": 4}, io).eval()
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    padded = x.clone()
    padded[0, 4:] = 100.0  # what lies past the mask (and is causally after it) cannot matter
    torch.testing.assert_close(model(x, mask), model(padded, mask))
    torch.testing.assert_close(model(x, mask)[0], model(x[:1, :4])[0])


def test_hook_points_are_captured(mixer_name, mixer_options):
    model = build(mixer_name, mixer_options(mixer_name), n_layers=2)
    names = hook_names(model)
    for expected in ("hook_embed", "hook_final", "blocks.0.hook_resid_pre", "blocks.1.hook_mixer_out", "blocks.1.hook_mlp_out"):
        assert expected in names
    tokens = torch.randint(0, VOCAB, (2, 7))
    with capture(model) as cache:
        logits = model(tokens)
    assert set(cache) <= set(names) and {"hook_embed", "hook_final"} <= set(cache)
    for name in ("hook_embed", "hook_final", "blocks.0.hook_resid_pre", "blocks.0.hook_mixer_out", "blocks.1.hook_mlp_out"):
        assert cache[name].shape == (2, 7, 32), name
    torch.testing.assert_close(model.head(cache["hook_final"]), logits)
    # The residual stream into block 1 is block 0's output.
    block0 = model.blocks[0]
    torch.testing.assert_close(cache["blocks.1.hook_resid_pre"], block0(cache["blocks.0.hook_resid_pre"]))
    # Mixer-internal hook points are named under their block.
    assert any(n.startswith("blocks.0.mixer.") for n in cache)
    # Filtering by name, and no hooks left behind.
    with capture(model, ["hook_final"]) as only:
        model(tokens)
    assert set(only) == {"hook_final"}
    model(tokens)
    assert set(only) == {"hook_final"}
    assert all(not m._forward_hooks for m in model.modules())


# ----------------------------------------------------------------------------- input checks


def test_model_rejects_bad_token_inputs(mixer_name, mixer_options):
    model = build(mixer_name, mixer_options(mixer_name))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 20\)"):
        model(torch.tensor([[1, 2, VOCAB]]))
    with pytest.raises(ValueError, match="token ids must lie"):
        model(torch.tensor([[1, -1, 2]]))
    with pytest.raises(ValueError, match="zero length"):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.rand(2, 5))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.tensor([1, 2, 3]))


def test_model_rejects_bad_vector_inputs(mixer_name, mixer_options):
    io = TaskIO(input_kind="vectors", head="classify", input_dim=4, n_outputs=3)
    model = build(mixer_name, mixer_options(mixer_name), io)
    x = torch.rand(2, 5, 4)
    x[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(x)
    x[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        model(x)
    with pytest.raises(ValueError, match="zero length"):
        model(torch.rand(2, 0, 4))
    with pytest.raises(ValueError, match=r"\(batch, time, 4\)"):
        model(torch.rand(2, 5, 3))


def test_task_io_is_validated():
    config = ModelConfig(mixer="transformer", d_model=32, mixer_options={"n_heads": 4})
    for io, message in [
        (TaskIO(input_kind="pixels", head="lm", vocab_size=5), "input_kind"),
        (TaskIO(input_kind="tokens", head="rank", vocab_size=5), "unknown head"),
        (TaskIO(input_kind="tokens", head="lm"), "vocab_size"),
        (TaskIO(input_kind="vectors", head="regress", n_outputs=1), "input_dim"),
        (TaskIO(input_kind="vectors", head="classify", input_dim=3), "n_outputs"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Model(config, io)


def test_parameter_report_counts_parts(mixer_name, mixer_options):
    model = build(mixer_name, mixer_options(mixer_name), n_layers=2)
    report = parameter_report(model)
    assert report["total"] == sum(p.numel() for p in model.parameters())
    assert 0 < report["mixer"] < report["blocks"] < report["total"]


# ----------------------------------------------------------------------------- recurrent form


@pytest.mark.parametrize("n_layers", [1, 2])
def test_recurrent_step_equals_parallel_forward(mixer_name, mixer_options, scrambled, n_layers):
    model = scrambled(build(mixer_name, mixer_options(mixer_name), n_layers=n_layers), std=0.3, seed=3).double().eval()
    tokens = torch.randint(0, VOCAB, (3, 19), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        parallel = model(tokens)
        state = model.init_state(3)
        steps = []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
    recurrent = torch.stack(steps, dim=1)
    assert recurrent.shape == parallel.shape
    torch.testing.assert_close(recurrent, parallel, rtol=0, atol=1e-9)


def test_state_floats_counts_the_state_a_mixer_really_holds(mixer_module):
    """``state_floats(n)`` equals the floating-point numbers in the state after n steps (batch 1)."""
    from workbench.mixers.base import count_floats

    state = mixer_module.init_state(1, dtype=torch.float64)
    with torch.no_grad():
        for n in range(1, 14):
            _, state = mixer_module.step(torch.randn(1, 32, dtype=torch.float64), state)
            if n in (1, 5, 13):
                assert count_floats(state) == mixer_module.state_floats(n), n
    if not mixer_module.growing_state:
        assert mixer_module.state_floats(1) == mixer_module.state_floats(10_000)


def test_recurrent_step_equals_parallel_for_vector_inputs(mixer_name, mixer_options, scrambled):
    # A per-position (lm) head on real-vector inputs: the step output is comparable position by position.
    io = TaskIO(input_kind="vectors", head="lm", input_dim=5, vocab_size=7)
    model = scrambled(build(mixer_name, mixer_options(mixer_name), io), std=0.3, seed=5).double().eval()
    x = torch.randn(2, 13, 5, dtype=torch.float64)
    with torch.no_grad():
        parallel = model(x)
        state = model.init_state(2)
        steps = []
        for t in range(x.shape[1]):
            out, state = model.step(x[:, t], state)
            steps.append(out)
    torch.testing.assert_close(torch.stack(steps, dim=1), parallel, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- generation


def test_generate_shapes_and_greedy_determinism(mixer_name, mixer_options, scrambled):
    model = scrambled(build(mixer_name, mixer_options(mixer_name)), std=0.3, seed=6).eval()
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    out = model.generate(prompt, n_new=7, temperature=0)
    assert out.shape == (2, 12) and out.dtype == prompt.dtype
    assert torch.equal(out[:, :5], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < VOCAB
    assert torch.equal(model.generate(prompt, n_new=7, temperature=0), out)
    # Greedy decoding with the recurrent form equals argmax of the parallel form, step by step.
    with torch.no_grad():
        for t in range(5, 12):
            assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])
    # top_k=1 sampling is greedy too.
    assert torch.equal(model.generate(prompt, n_new=7, temperature=1.0, top_k=1), out)


def test_generate_sampling_follows_the_generator(mixer_name, mixer_options):
    model = build(mixer_name, mixer_options(mixer_name)).eval()
    prompt = torch.randint(0, VOCAB, (4, 3), generator=torch.Generator().manual_seed(0))
    a = model.generate(prompt, 20, temperature=1.5, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 20, temperature=1.5, generator=torch.Generator().manual_seed(7))
    c = model.generate(prompt, 20, temperature=1.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 23)


def test_generate_rejects_bad_requests():
    model = build("transformer", {"n_heads": 4})
    with pytest.raises(ValueError, match="non-empty prompt"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 3, temperature=-1)
    with pytest.raises(ValueError, match="token ids must lie"):
        model.generate(torch.full((1, 2), VOCAB), 3)
    regress = build("transformer", {"n_heads": 4}, TaskIO(input_kind="vectors", head="regress", input_dim=3, n_outputs=1))
    with pytest.raises(ValueError, match="lm head"):
        regress.generate(torch.zeros(1, 2, dtype=torch.long), 3)
