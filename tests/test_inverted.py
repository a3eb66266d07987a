"""The inverted mixer: its three forms agree, it never builds a T x T tensor, its state is constant."""

from __future__ import annotations

import pytest
import torch

from workbench.config import ConfigError, ModelConfig
from workbench.mixers.inverted import InvertedMixer, InvertedOptions, ema_scan
from workbench.model import mixer_options

VARIANTS = {
    "ring": dict(n_units=8, read_topk=2, chunk_size=5),
    "pools-dense-read": dict(n_units=8, n_pools=2, read_topk=8, chunk_size=7),
    "content-only": dict(n_units=8, refractory=False, read_topk=3, n_freq=4, chunk_size=4),
    "no-time": dict(n_units=6, timescales=(), ordinal_read=False, chunk_size=64),
}


def make_mixer(seed: int = 0, **options) -> InvertedMixer:
    torch.manual_seed(seed)
    mixer = InvertedMixer(16, InvertedOptions(write_bias=0.0, **options)).double()
    for p in mixer.parameters():  # large random weights: gates flip, rings wrap, units get evicted
        torch.nn.init.normal_(p, std=0.4)
    return mixer


def run(mixer: InvertedMixer, impl: str, x: torch.Tensor):
    if impl == "recurrent":
        y = mixer.forward_recurrent(x)
    else:
        mixer.impl = impl
        y = mixer(x)
    grads = torch.autograd.grad((y * torch.sin(y)).sum(), [x, *mixer.parameters()])
    return y, grads


def assert_close_grads(ga, gb, rtol=1e-9):
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, rtol=rtol, atol=rtol * (a.abs().max() + 1e-30)), (a - b).abs().max()


def assert_forms_agree(mixer: InvertedMixer, x: torch.Tensor) -> None:
    """Naive and chunked parallel forms equal the recurrent form, values and gradients."""
    y_ref, g_ref = run(mixer, "recurrent", x)
    for impl in ("naive", "chunked"):
        y, g = run(mixer, impl, x)
        assert torch.allclose(y, y_ref, atol=1e-10), (impl, (y - y_ref).abs().max())
        assert_close_grads(g, g_ref)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parallel_equals_recurrent_values_and_gradients(name):
    mixer = make_mixer(write_surrogate=False, **VARIANTS[name])
    assert_forms_agree(mixer, torch.randn(3, 23, 16, dtype=torch.float64, requires_grad=True))
    # The run really exercised writes, skips and evictions.
    assert 0.2 < mixer.stats["write_fraction"] < 0.9


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_write_surrogate_changes_gradients_not_values(name):
    mixer = make_mixer(write_surrogate=True, **VARIANTS[name])
    x = torch.randn(2, 19, 16, dtype=torch.float64, requires_grad=True)
    y_naive, g_naive = run(mixer, "naive", x)
    y_chunk, g_chunk = run(mixer, "chunked", x)
    y_rec, g_rec = run(mixer, "recurrent", x)
    assert torch.allclose(y_naive, y_rec, atol=1e-10) and torch.allclose(y_chunk, y_rec, atol=1e-10)
    assert_close_grads(g_naive, g_chunk)
    gate_grad = dict(zip(["x", *[n for n, _ in mixer.named_parameters()]], g_chunk))["gates.weight"]
    rec_gate_grad = dict(zip(["x", *[n for n, _ in mixer.named_parameters()]], g_rec))["gates.weight"]
    assert not torch.allclose(gate_grad, rec_gate_grad)  # unwritten tokens now get a signal


@pytest.mark.parametrize("length", [5, 16, 21])
def test_surrogate_read_is_a_zero_offer_with_autograds_gradient(length):
    """SurrogateRead == read + W @ v written out for autograd (v zero where nothing was written)."""
    from workbench.mixers.inverted import SurrogateRead, surrogate_weights

    torch.manual_seed(length)
    b, e, d, chunk = 2, 6, 5, 8
    query, raw_key = torch.randn(b, length, e, dtype=torch.float64), torch.randn(b, length, e, dtype=torch.float64)
    written = torch.rand(b, length) < 0.5
    lse = torch.randn(b, length, dtype=torch.float64)
    read = torch.randn(b, length, d, dtype=torch.float64, requires_grad=True)
    raw_value = torch.randn(b, length, d, dtype=torch.float64, requires_grad=True)
    value = raw_value * written[..., None]
    weight = surrogate_weights(query, raw_key, written, lse, chunk)
    n = weight.shape[1]
    padded = torch.nn.functional.pad(value, (0, 0, 0, n * chunk - length)).view(b, n, chunk, d)
    offer = (weight @ padded).reshape(b, n * chunk, d)[:, :length]
    plain = read + offer
    fast = SurrogateRead.apply(read, value, query, raw_key, written, lse, chunk)
    assert torch.equal(offer, torch.zeros_like(offer)) and torch.equal(fast, read)
    grad = torch.randn_like(plain)
    fast_grads = torch.autograd.grad(fast, (read, raw_value), grad, retain_graph=True)
    assert_close_grads(fast_grads, torch.autograd.grad(plain, (read, raw_value), grad))


def test_chunked_matches_naive_in_float32_at_odd_lengths():
    torch.manual_seed(1)
    mixer = InvertedMixer(32, InvertedOptions(n_units=16, chunk_size=8, write_bias=0.0))
    for p in mixer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    for length in (1, 7, 8, 9, 33):
        x = torch.randn(2, length, 32)
        mixer.impl = "naive"
        y_naive = mixer(x)
        mixer.impl = "chunked"
        assert torch.allclose(mixer(x), y_naive, atol=1e-5), length



def test_no_tensor_with_two_sequence_sized_dimensions_forward_and_backward(shape_recorder):
    t = 100  # longer than the units (32) and the chunk (32)
    mixer = InvertedMixer(32, InvertedOptions(n_units=32, chunk_size=32))
    x = torch.randn(2, t, 32, requires_grad=True)
    with shape_recorder() as recorder:
        mixer(x).square().sum().backward()
    offenders = [(op, shape) for op, shape in recorder.shapes if sum(d >= t for d in shape) >= 2]
    assert recorder.shapes and not offenders, offenders[:5]


@pytest.mark.parametrize("name", [*sorted(VARIANTS), "every-token-writes"])
def test_step_without_autograd_equals_step_with_it(name):
    """Generation and the exported graph run the no-grad step, which drops the straight-through
    carriers and the one-pool routing ops: the same outputs and state, bit for bit, over ring wraps."""
    mixer = make_mixer(**VARIANTS.get(name, dict(n_units=6, write_gate=False, chunk_size=4)))
    x = torch.randn(2, 40, 16, dtype=torch.float64)
    with_grad = without = mixer.init_state(2, dtype=torch.float64)
    for t in range(40):
        y_grad, with_grad = mixer.step(x[:, t], with_grad)
        assert y_grad.requires_grad  # the carrying path really ran
        with torch.no_grad():
            y, without = mixer.step(x[:, t], without)
        assert torch.equal(y, y_grad.detach()), t
        for key, value in with_grad.items():
            if value is not None:
                assert torch.equal(without[key], value.detach()), (key, t)
    assert float(without["count"].max()) > mixer.o.n_units  # the ring wrapped


def test_recurrent_state_has_constant_size():
    mixer = InvertedMixer(32, InvertedOptions(n_units=8))
    state = mixer.init_state(2)
    sizes = None
    with torch.no_grad():
        for step in range(40):
            _, state = mixer.step(torch.randn(2, 32), state)
            now = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
            if step == 0:
                sizes = now
            assert now == sizes


def test_deterministic_given_seed():
    x = torch.randn(2, 50, 16, dtype=torch.float64)
    assert torch.equal(make_mixer(seed=3)(x), make_mixer(seed=3)(x))


def test_ema_scan_matches_recurrence():
    x = torch.randn(2, 37, 6, dtype=torch.float64)
    decay = torch.tensor([0.5, 0.9, 0.99, 0.3, 0.0, 0.999], dtype=torch.float64)
    y, expected = ema_scan(x, decay), torch.zeros(2, 6, dtype=torch.float64)
    for t in range(37):
        expected = decay * expected + (1 - decay) * x[:, t]
        assert torch.allclose(y[:, t], expected)


def test_refractory_ring_allocates_units_in_turn_and_gain_recovers():
    from workbench.hooks import capture

    mixer = InvertedMixer(16, InvertedOptions(n_units=4, write_bias=10.0))  # every token writes
    with capture(mixer) as cache:
        mixer(torch.randn(1, 10, 16))
    assert cache["hook_unit"][0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    gain = cache["hook_gain"][0]  # (T, M): 0 right after firing, then rising by 1/M per write
    assert gain[4, 0] == 0 and gain[5, 0] == 0.25 and gain[7, 0] == 0.75 and gain[0, 3] == 1.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_units": 4, "read_topk": 5}, "cannot exceed"),
        ({"n_units": 6, "n_pools": 4}, "equal pools"),
        ({"n_units": -1}, "positive integer"),
        ({"timescales": [1.5]}, "(0, 1)"),
        ({"write_price": -1}, ">= 0"),
        ({"gate_margin": -0.1}, ">= 0"),
        ({"write_gate": "no"}, "true or false"),
        ({"no_such_option": 1}, "unknown options"),
    ],
)
def test_bad_options_are_rejected_clearly(options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mixer_options(ModelConfig(mixer="inverted", d_model=32, mixer_options=options))


def test_gate_margin_adds_only_a_loss_that_moves_gates_off_their_threshold():
    """The forward pass is untouched; the aux loss is p(1-p), and descending it moves p away from 1/2."""
    from workbench.mixers.inverted import InvertedMixer, InvertedOptions

    torch.manual_seed(0)
    x = torch.randn(2, 40, 32)
    plain = InvertedMixer(32, InvertedOptions(n_units=64, chunk_size=16)).train()
    margined = InvertedMixer(32, InvertedOptions(n_units=64, chunk_size=16, gate_margin=1.0)).train()
    margined.load_state_dict(plain.state_dict())
    for mixer in (plain, margined):
        torch.nn.init.constant_(mixer.gates.bias, 0.3)  # gates near their 1/2 threshold
    assert torch.equal(plain(x), margined(x))
    assert plain.aux_loss.item() == 0  # writes fit the units: no price, and no margin without the option
    spread = []
    optimizer = torch.optim.SGD(margined.gates.parameters(), lr=10.0)
    for _ in range(20):
        margined(x)
        spread.append(margined.aux_loss.item())
        optimizer.zero_grad()
        margined.aux_loss.backward()
        optimizer.step()
    assert 0 < spread[-1] < 0.5 * spread[0]


def test_write_gate_off_writes_every_token_with_no_price_and_forms_still_agree():
    """The ablation of demand: every token posts (the ring evicts the oldest), nothing prices it."""
    from workbench.hooks import capture

    mixer = make_mixer(write_surrogate=False, write_gate=False, n_units=8, read_topk=2, chunk_size=5)
    x = torch.randn(2, 23, 16, dtype=torch.float64, requires_grad=True)
    assert_forms_agree(mixer, x)
    assert mixer.stats["write_fraction"] == 1.0
    with capture(mixer) as cache:
        mixer.train()(x)
    assert cache["hook_unit"][0].tolist() == [t % 8 for t in range(23)]  # 23 writes > 8 units: evictions
    assert mixer.aux_loss is None  # the write price has no gate to act on
    gate_grad = torch.autograd.grad(mixer(x).sum(), mixer.gates.weight)[0]
    assert gate_grad[0].abs().max() == 0 and gate_grad[1].abs().max() > 0  # write row idle, advance row used


def test_ranked_price_has_the_plain_value_and_falls_on_the_least_salient_writes():
    torch.manual_seed(0)
    x = torch.randn(3, 40, 32)
    plain = InvertedMixer(32, InvertedOptions(n_units=8, chunk_size=16, write_bias=0.5, price_ranked=False)).train()
    torch.nn.init.normal_(plain.gates.weight, std=0.3)
    ranked = InvertedMixer(32, InvertedOptions(n_units=8, chunk_size=16, write_bias=0.5, price_ranked=True)).train()
    ranked.load_state_dict(plain.state_dict())
    salience, price_grads = {}, []
    for mixer in (plain, ranked):
        def keep(_module, _inputs, output, mixer=mixer):
            output.retain_grad()
            salience[mixer] = output

        handle = mixer.hook_salience.register_forward_hook(keep)
        mixer(x)
        handle.remove()
        mixer.aux_loss.backward()  # the price alone: its gradient on each token's write probability
        price_grads.append(salience[mixer].grad)
    assert torch.equal(plain(x), ranked(x))
    assert plain.aux_loss.item() > 0 and torch.allclose(plain.aux_loss, ranked.aux_loss)
    p = salience[ranked].detach()
    written = p > 0.5
    everyone, lowest = price_grads
    assert (everyone[written] > 0).all()  # the plain price pushes every writer down
    for row in range(3):
        rank = p[row].argsort(descending=True).argsort()
        priced = lowest[row] > 0
        assert int(priced.sum()) == max(int(written[row].sum()) - 8, 0) > 0
        assert (rank[priced] >= 8).all() and written[row][priced].all()


def test_fewer_parameters_than_the_transformer_at_the_same_width():
    from workbench.mixers.transformer import SoftmaxAttention

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(InvertedMixer(128)) < count(SoftmaxAttention(128))


def test_glossary_functions_are_the_mechanism():
    from workbench.mixers.inverted import adaptive_scale, attention_compress, compute_weights, memory_state_update

    mixer = make_mixer(n_units=8, read_topk=2)
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    outputs, state = attention_compress(mixer, x)
    mixer.impl = "chunked"
    assert torch.allclose(outputs, mixer(x), atol=1e-10)
    assert state["keys"].shape[1] == 8  # M units hold the compressed context, whatever T is
    y, next_state = memory_state_update(mixer, state, x[:, 0])
    weights = compute_weights(mixer, state, x[:, 0])
    assert weights.shape == (2, 8) and torch.allclose(weights.sum(-1), torch.ones(2, dtype=torch.float64))
    assert (weights > 0).sum(-1).max() <= 2  # top-k read
    small, large = adaptive_scale(1_000), adaptive_scale(1_000_000)
    for key in ("macs_per_token_parallel", "macs_per_token_step", "state_floats"):
        assert small[key] == large[key]
    assert large["total_macs_parallel"] == 1000 * small["total_macs_parallel"]
    state_numbers = sum(v[0].numel() for v in state.values() if torch.is_tensor(v))  # per sequence
    assert adaptive_scale(12, mixer.o, 16)["state_floats"] == state_numbers
    with pytest.raises(ValueError):
        adaptive_scale(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_recurrent_run_stays_finite_bounded_and_counts_exactly(dtype):
    """A shorter CI version of the 1M-token run: finite outputs, bounded state, exact counters."""
    torch.manual_seed(0)
    mixer = InvertedMixer(32, InvertedOptions(n_units=16, write_bias=0.5)).to(dtype).eval()
    for p in mixer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    state = mixer.init_state(1, dtype=dtype)
    writes, largest = 0, 0.0
    with torch.no_grad():
        for step in range(1200):
            x = torch.randn(1, 32).to(dtype)
            before = state["count"].clone()
            y, state = mixer.step(x, state)
            writes += int(state["count"] - before)
            assert torch.isfinite(y).all(), step
            largest = max(largest, float(state["values"].float().abs().max()), float(state["ema"].float().abs().max()))
    assert writes > 300 and int(state["count"]) == writes  # bf16 alone would stop counting at 256
    assert state["count"].dtype == torch.float64
    assert largest < 50  # unit contents are copies of messages; the EMA is a convex average


def test_pool_balance_loss_is_switch_style_and_reaches_the_router():
    mixer = make_mixer(n_units=8, n_pools=4, read_topk=2, chunk_size=5, write_price=0.0, pool_balance=0.5)
    x = torch.randn(3, 23, 16, dtype=torch.float64)
    mixer.train()
    mixer(x)
    (gate_logits, route_logits, _), _ = mixer._features(x, get_impl_ema(mixer, x))
    _, write, _ = mixer._gates(gate_logits)
    written = write > 0.5
    choice = route_logits.argmax(-1)
    fraction = torch.stack([((choice == p) & written).sum() for p in range(4)]).double() / written.sum()
    mean_prob = (route_logits.softmax(-1) * written[..., None]).sum((0, 1)) / written.sum()
    torch.testing.assert_close(mixer.aux_loss, 0.5 * 4 * (fraction * mean_prob).sum())
    assert 0 < mixer.stats["pool_entropy_bits"] <= 2.0
    mixer.aux_loss.backward()
    assert mixer.router.weight.grad.abs().sum() > 0


def test_write_floor_pushes_a_closing_gate_open_and_is_silent_above_the_floor():
    mixer = make_mixer(n_units=8, read_topk=2, chunk_size=5, write_price=0.0, write_floor=0.3)
    x = torch.randn(2, 19, 16, dtype=torch.float64)
    with torch.no_grad():
        mixer.gates.bias[0] = -3.0  # nearly shut: mean p is far below the floor
    mixer(x)
    assert mixer.aux_loss is not None and float(mixer.aux_loss.detach()) > 0.2
    mixer.aux_loss.backward()
    assert mixer.gates.bias.grad[0] < 0  # descent raises the write bias
    with torch.no_grad():
        mixer.gates.bias[0] = 6.0  # wide open: above the floor
    mixer(x)
    assert float(mixer.aux_loss) == 0.0  # the hinge is flat above the floor


def get_impl_ema(mixer, x):
    from workbench.kernels.dispatch import get_impl

    return get_impl("ema", x.device, mixer.kernels)(x, mixer.decay) if mixer.o.timescales else None
