"""Seeking units: both forms agree, units compete and rest, a unit keeps its message until rewritten."""

from __future__ import annotations

import zlib

import pytest
import torch

from workbench.config import ConfigError, ModelConfig
from workbench.hooks import capture
from workbench.kernels.hard_write import position_gumbel
from workbench.mixers.seeking import SeekingOptions, SeekingUnits
from workbench.model import mixer_options


def make(seed: int = 0, **options) -> SeekingUnits:
    torch.manual_seed(seed)
    mixer = SeekingUnits(16, SeekingOptions(**{"n_heads": 2, "n_units": 5, "chunk_size": 4, **options})).double()
    with torch.no_grad():
        for name, p in mixer.named_parameters():  # each from its own stream: an option's new parameter moves no other
            p.normal_(0, 0.4, generator=torch.Generator().manual_seed(seed * 7919 + zlib.crc32(name.encode())))
        mixer.salience_bias.fill_(1.0)
    return mixer


@pytest.mark.parametrize("refractory, widths", [
    (False, {}), (True, {}), (True, {"key_dim": 3, "value_dim": 5, "bid_rank": 4}),
    (True, {"bid_temperature": 0.0}), (True, {"bid_rank": 4, "bid_temperature": 2.0}),
    (True, {"hold": 3.0}), (False, {"sink": True}), (True, {"hold": 3.0, "sink": True}),
    (True, {"hold": 3.0, "hold_heads": 1, "sink": True}), (False, {"hold": 3.0, "hold_learned": True}),
    (False, {"match": 2.0}), (True, {"match": 2.0, "hold": 3.0, "sink": True, "rest_on_wins": False}),
    (True, {"write_cost": 0.1}), (True, {"hard_writes": False}), (False, {"hard_writes": True, "sink": True}),
    (True, {"write_jitter": True, "rest_on_wins": False}),
    (True, {"write_jitter": True, "sink": True, "rest_on_wins": False}),
    (True, {"rest_on_wins": False}), (True, {"rest_on_wins": False, "hard_writes": False}),
    (True, {"rest_on_wins": False, "hold": 3.0, "sink": True}), (True, {"sink": True}),
    (True, {"occupancy_scale": True}), (False, {"occupancy_scale": True, "hard_writes": False}),
    (True, {"signed_keys": True}), (True, {"rest_learned": True}), (True, {"rest_learned": True, "sink": True}),
    (True, {"rest_learned": True, "rest_on_wins": False}), (True, {"rest_learned": True, "hard_writes": False}),
    (True, {"qk_norm": True}), (True, {"qk_norm": True, "signed_keys": True, "read_temperature": 3.0}),
    (True, {"read_before_write": True}), (False, {"read_before_write": True, "hard_writes": False, "sink": True}),
    (True, {"read_before_write": True, "rest_on_wins": False, "hold": 3.0}),
    (True, {"n_units": 6, "n_pools": 3}), (True, {"n_units": 6, "n_pools": 2, "sink": True}),
    (False, {"n_units": 6, "n_pools": 2}), (True, {"n_units": 6, "n_pools": 2, "rest_on_wins": False, "hold": 3.0}),
    (True, {"read_topk": 2}), (True, {"read_topk": 3, "occupancy_scale": True}),
    (False, {"read_topk": 1, "hard_writes": False}),
    (True, {"recency_reads": 2}), (True, {"recency_reads": 1, "write_jitter": True, "rest_on_wins": False}),
    (False, {"recency_reads": 2, "read_before_write": True, "hard_writes": False, "key_dim": 3, "value_dim": 5}),
    (True, {"head_share": True}), (False, {"head_share": True, "hard_writes": False, "sink": True}),
])
@pytest.mark.parametrize("length", [1, 4, 9, 23])
def test_parallel_equals_recurrent_values_and_gradients(refractory, widths, length):
    mixer = make(refractory=refractory, recovery=3.0, **widths)
    x = torch.randn(2, length, 16, dtype=torch.float64, requires_grad=True)
    outs = []
    for form in (mixer, mixer.forward_recurrent):
        y = form(x)
        # (allow_unused: with read_before_write a one-token sequence reads an empty memory, 0 whatever the weights)
        wrt = [x, *mixer.parameters()]
        grads = torch.autograd.grad((y * torch.sin(y)).sum(), wrt, allow_unused=True)
        outs.append((y, [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]))
    (y_par, g_par), (y_rec, g_rec) = outs
    torch.testing.assert_close(y_par, y_rec, rtol=1e-9, atol=1e-10)
    for a, b in zip(g_par, g_rec):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_writes_split_the_salience_among_the_units_and_rest_spreads_a_repeated_message():
    """Soft writes, the same message over and over: by content alone it goes to one unit; with rest the
    units take turns (hard writes: the next test)."""
    x = torch.randn(1, 1, 16, dtype=torch.float64).expand(1, 40, 16)
    loads = {}
    for rest in (False, True):
        mixer = make(refractory=rest, recovery=8.0, rest_strength=4.0, hard_writes=False)
        with torch.no_grad():  # unit 0 bids 6, the others 0: content alone picks unit 0
            h, dk = mixer.n_heads, mixer.key_dim
            key = (mixer.proj.weight[h * dk: 2 * h * dk] @ x[0, 0]).view(h, 1, dk)  # before swish
            margins = torch.tensor([6.0, 0, 0, 0, 0], dtype=torch.float64).view(1, 5, 1)
            mixer.interests.copy_(margins * dk**0.5 * key / key.pow(2).sum(-1, keepdim=True))
        with torch.no_grad(), capture(mixer, ["hook_writes", "hook_salience"]) as cache:
            mixer(x)
        writes, salience = cache["hook_writes"], cache["hook_salience"]
        torch.testing.assert_close(writes.sum(-1), salience)  # normalization over the units
        share = writes.sum(2) / writes.sum((2, 3))[..., None]  # (B, H, M) share of all writes
        loads[rest] = float(share.max(-1).values.mean())
    assert loads[False] > 0.9  # content alone: one unit absorbs nearly everything
    assert loads[True] < loads[False] - 0.25  # with rest the units take turns: the busiest one takes far less


def test_a_unit_that_does_not_win_keeps_its_message():
    """The slot memory of a unit changes only by how much it absorbs: zero write, zero change."""
    mixer = make(refractory=False).eval()
    state = mixer.init_state(1, dtype=torch.float64)
    x = torch.randn(1, 16, dtype=torch.float64)
    _, state = mixer.step(x, state)
    with torch.no_grad():  # make unit 0 of every head lose every later bid
        h, dk = mixer.n_heads, mixer.key_dim
        key = (mixer.proj.weight[h * dk: 2 * h * dk] @ x[0]).view(h, dk)  # the message's key, before swish
        mixer.interests[:, 0] = -100 * key / key.norm(dim=-1, keepdim=True)
    before = state["value_slots"][..., 0, :].clone()
    _, after = mixer.step(x, state)
    torch.testing.assert_close(after["value_slots"][..., 0, :], before, rtol=0, atol=1e-30)


def test_a_fresh_model_sends_a_message_mostly_to_one_unit_only_with_the_bid_temperature():
    """Fixed 1/sqrt(d_k) bids of a fresh model are nearly equal (every unit a few percent of every
    message); the default temperature starts sharp enough that one unit takes most of it. Measured on
    soft writes: their shares are what the straight-through gradient of hard writes follows."""
    x = torch.nn.functional.rms_norm(torch.randn(2, 64, 128, generator=torch.Generator().manual_seed(0)), (128,))
    top_share = {}
    for temperature in (0.0, 8.0):
        torch.manual_seed(0)
        mixer = SeekingUnits(128, SeekingOptions(bid_temperature=temperature, refractory=False, hard_writes=False))
        with torch.no_grad(), capture(mixer, ["hook_writes"]) as cache:
            mixer(x)
        writes = cache["hook_writes"]
        top_share[temperature] = float((writes.max(-1).values / writes.sum(-1)).mean())
    assert top_share[0.0] < 0.1 < 0.4 < top_share[8.0]


def test_held_units_refuse_messages_and_a_full_memory_writes_into_the_sink():
    """Five messages, each wanted by its own unit, fill the five units; a sixth finds every unit
    holding a message: with hold it is mostly written nowhere, without hold it overwrites a unit."""
    x = torch.randn(1, 6, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mass = {}
    for hold in (0.0, 30.0):
        mixer = make(refractory=False, hold=hold, sink=True)
        with torch.no_grad():
            h, dk = mixer.n_heads, mixer.key_dim
            keys = (mixer.proj.weight[h * dk: 2 * h * dk] @ x[0, :5].T).view(h, dk, 5)  # before swish
            mixer.interests.copy_(8 * dk**0.5 * torch.linalg.pinv(keys))  # unit m bids 8 for message m, 0 for the rest
            mixer.bid_log_scale.zero_()
            mixer.sink_bid.fill_(-2.0)
            mixer.salience_bias.fill_(20.0)  # every token writes in full
            mixer.proj.weight[-h:].zero_()
        with torch.no_grad(), capture(mixer, ["hook_writes"]) as cache:
            mixer(x)
        writes = cache["hook_writes"][0]  # (H, T, M)
        mass[hold] = writes.sum(-1)
        torch.testing.assert_close(writes[:, :5].argmax(-1), torch.arange(5).expand(h, 5))  # each to its unit
    assert float(mass[30.0][:, :5].min()) > 0.9  # the first five find free units
    assert float(mass[30.0][:, 5].max()) < 0.1 < 0.9 < float(mass[0.0][:, 5].min())  # the sixth: nowhere vs a unit


def test_hard_writes_put_each_message_whole_into_one_unit_and_still_train_the_bids():
    mixer = make(hard_writes=True, sink=True)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    with capture(mixer, ["hook_writes", "hook_salience"]) as cache:
        y = mixer(x)
    writes, salience = cache["hook_writes"], cache["hook_salience"]
    assert int(((writes > 0).sum(-1) > 1).sum()) == 0  # at most one unit per message (none: the sink won)
    won = writes.sum(-1) > 0
    torch.testing.assert_close(writes.sum(-1)[won], salience[won])  # the winner takes the whole salience
    (interests_grad,) = torch.autograd.grad(y.square().sum(), [mixer.interests])
    assert float(interests_grad.abs().sum()) > 0  # the straight-through softmax still teaches the bids


def _repeated_message_busiest_share(per_head: bool = False, rest_scale: list[float] | None = None,
                                    **options) -> float | list[float]:
    """The same message 40 times, unit 0 favoured by 6 logits: the busiest unit's share of the writes."""
    x = torch.randn(1, 1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).expand(1, 40, 16)
    mixer = make(recovery=8.0, rest_strength=4.0, **options)
    with torch.no_grad():
        h, dk = mixer.n_heads, mixer.key_dim
        key = (mixer.proj.weight[h * dk: 2 * h * dk] @ x[0, 0]).view(h, 1, dk)
        margins = torch.tensor([6.0, 0, 0, 0, 0], dtype=torch.float64).view(1, 5, 1)
        mixer.interests.copy_(margins * dk**0.5 * key / key.pow(2).sum(-1, keepdim=True))
        if rest_scale is not None:  # beta_h over rest_strength, per head (rest_learned)
            mixer.rest_log_scale.copy_(torch.tensor(rest_scale, dtype=torch.float64).log())
    with torch.no_grad(), capture(mixer, ["hook_writes"]) as cache:
        mixer(x)
    writes = cache["hook_writes"]
    busiest = (writes.sum(2) / writes.sum((2, 3))[..., None]).max(-1).values.mean(0)  # (H,)
    return busiest.tolist() if per_head else float(busiest.mean())


def test_hard_writes_move_a_rested_favourite_s_messages_to_one_runner_up_unless_jittered():
    """Rest is computed from the writes by content alone (parallel form): a hard argmax then sends every
    message the rested favourite loses to the same runner-up, which never rests. With the jitter the
    winner is drawn like the softmax's shares (Gumbel-max, noise fixed by position) and the units take turns."""
    soft = _repeated_message_busiest_share(hard_writes=False, rest_on_wins=False)
    hard = _repeated_message_busiest_share(hard_writes=True, rest_on_wins=False)
    jittered = _repeated_message_busiest_share(hard_writes=True, write_jitter=True, rest_on_wins=False)
    assert soft < 0.5 and jittered < 0.5
    assert hard > 0.6


def test_rest_on_the_writes_units_take_makes_hard_writes_take_turns_without_noise():
    """Rest from the writes units actually take (a scan, token by token): the runner-up that takes the
    rested favourite's message rests too, so the runners-up take turns (the favourite, 6 logits ahead,
    still takes about every other message)."""
    on_wins = _repeated_message_busiest_share(hard_writes=True, rest_on_wins=True)
    plain = _repeated_message_busiest_share(hard_writes=True, rest_on_wins=False)
    assert on_wins < 0.6 and plain > 0.8


def test_a_head_with_a_stronger_learned_rest_takes_turns():
    """rest_learned: each head rests with its own beta_h. With beta_1 = 8 beta the second head's rest
    outweighs the favourite's 6-logit lead, so its units take turns; the first head, left at beta, is
    unchanged (same parameters otherwise)."""
    first, second = _repeated_message_busiest_share(per_head=True, rest_scale=[1.0, 8.0], rest_learned=True)
    alike = _repeated_message_busiest_share(per_head=True, rest_scale=[1.0, 1.0], rest_learned=True)
    assert first == pytest.approx(alike[0]) and second < alike[1] - 0.1


def test_a_learned_rest_strength_starts_at_the_fixed_one_and_gets_a_gradient():
    """rest_learned: the forward pass is the fixed-strength one at initialisation; the rest's gradient
    reaches log beta_h through the writes' softmax (a straight-through share with hard writes)."""
    x = torch.randn(2, 23, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    learned, fixed = make(rest_learned=True, recovery=3.0), make(recovery=3.0)
    fixed.load_state_dict({k: v for k, v in learned.state_dict().items() if k != "rest_log_scale"})
    with torch.no_grad():
        learned.rest_log_scale.zero_()
    torch.testing.assert_close(learned(x), fixed(x), rtol=1e-12, atol=1e-12)
    (learned(x) ** 2).sum().backward()
    assert learned.rest_log_scale.grad is not None and bool((learned.rest_log_scale.grad.abs() > 0).all())
    learned.train()
    learned(x)
    assert learned.stats["rest_strength_head0"] == pytest.approx(8.0)  # beta_h, reported while training


def test_write_jitter_is_a_fixed_gumbel_noise_of_position_head_and_unit():
    positions = torch.arange(4096)
    noise = position_gumbel(positions, 2, 5)  # (H, T, M)
    assert noise.shape == (2, 4096, 5) and torch.isfinite(noise).all()
    torch.testing.assert_close(noise, position_gumbel(positions, 2, 5))  # the same positions, the same noise
    torch.testing.assert_close(noise[:, 100:200], position_gumbel(positions[100:200], 2, 5))
    assert abs(float(noise.mean()) - 0.5772) < 0.03 and abs(float(noise.std()) - 1.2825) < 0.05  # Gumbel(0, 1)
    winners = torch.bincount(noise.argmax(-1).flatten(), minlength=5).double() / noise[..., 0].numel()
    assert float((winners - 0.2).abs().max()) < 0.02  # equal logits: every unit wins about equally often
    assert position_gumbel(torch.tensor([10**12]), 2, 5).isfinite().all()  # no max_len


def test_match_lets_a_held_unit_take_the_key_it_holds_again():
    """Five one-hot keys fill the five units, each wanted by its own unit; held, a full memory
    sends the first key's return into the sink - unless the unit that holds that key matches it."""
    mass = {}
    for match in (0.0, 8.0):
        # raw keys (no unit length): the test sets each key's size to 5 so that a match of 8 per unit outbids hold
        mixer = make(refractory=False, hold=30.0, sink=True, match=match, qk_norm=False, signed_keys=False)
        h, dk = mixer.n_heads, mixer.key_dim
        with torch.no_grad():
            mixer.proj.weight[h * dk: 2 * h * dk].zero_()
            for i in range(5):  # token e_i has key 5 e_i in every head (swish(5) ~ 5): orthogonal keys
                mixer.proj.weight[h * dk + torch.arange(h) * dk + i, i] = 5.0
            mixer.interests.copy_(1.6 * dk**0.5 * torch.eye(5, dk).expand(h, 5, dk))  # unit m bids 8 for key m
            mixer.bid_log_scale.zero_()
            mixer.sink_bid.fill_(-2.0)
            mixer.salience_bias.fill_(20.0)  # every token writes in full
            mixer.proj.weight[-h:].zero_()
            if match:
                mixer.match_strength.fill_(match)
        tokens = torch.eye(16, dtype=torch.float64)[:5]
        with torch.no_grad(), capture(mixer, ["hook_writes"]) as cache:
            mixer(torch.cat([tokens, tokens[:1]])[None])  # keys 0, 1, 2, 3, 4, then 0 again
        writes = cache["hook_writes"][0]  # (H, T, M)
        torch.testing.assert_close(writes[:, :5].argmax(-1), torch.arange(5).expand(h, 5))  # each to its unit
        mass[match] = writes[:, 5, 0]  # what the holder of key 0 takes of its return
    assert float(mass[0.0].max()) < 0.1 < 0.9 < float(mass[8.0].min())


def test_occupancy_scale_sharpens_the_read_as_units_fill():
    mixer = make(occupancy_scale=True, n_units=5)
    x = torch.randn(1, 40, 16, dtype=torch.float64)
    with torch.no_grad(), capture(mixer, ["hook_writes"]) as seen:
        mixer(x)
    writes = seen["hook_writes"]
    scale = mixer._read_scale(torch.log1p(-writes).cumsum(2))  # (1, H, T)
    occupied = 1 - torch.prod(1 - writes, dim=2)  # after the last token, by the definition
    assert torch.all(scale[..., 1:] >= scale[..., :-1] - 1e-12)  # units only fill
    s_h = mixer.occupancy_log_scale.detach().exp().squeeze(-1)
    torch.testing.assert_close(scale[0, :, -1], s_h * torch.log1p(occupied[0].sum(-1)))
    fresh = SeekingUnits(16, SeekingOptions(n_heads=2, n_units=5, occupancy_scale=True))
    torch.testing.assert_close(fresh.occupancy_log_scale.exp() * torch.log1p(torch.tensor(5.0)), torch.ones(2, 1))
    assert make(occupancy_scale=True).state_floats(1) == 2 * 5 * (6 + 8 + 1 + 1)


def test_state_is_constant_and_counted():
    assert make(refractory=True).state_floats(1) == 2 * 5 * (6 + 8 + 1)  # keys 3/4 of a head by default
    assert make(refractory=False).state_floats(1) == 2 * 5 * (6 + 8)
    assert make(key_dim=8).state_floats(1) == 2 * 5 * (8 + 8 + 1)
    assert make(value_dim=3).state_floats(1) == 2 * 5 * (6 + 3 + 1)


def test_fewer_parameters_than_softmax_attention_at_the_protocol_width():
    from workbench.mixers import SoftmaxAttention

    def count(module):
        return sum(p.numel() for p in module.parameters())

    for units in (32, 64):
        assert count(SeekingUnits(128, SeekingOptions(n_units=units))) < count(SoftmaxAttention(128))


@pytest.mark.parametrize("options, message", [
    ({"n_units": 0}, "n_units"), ({"refractory": 1}, "true or false"), ({"recovery": 0.0}, "recovery"),
    ({"rest_strength": -1.0}, "rest_strength"), ({"chunk_size": 6}, "power of two"), ({"n_heads": 3}, "equal heads"),
    ({"key_dim": -1}, "key_dim"), ({"value_dim": 1.5}, "value_dim"), ({"bid_rank": -2}, "bid_rank"),
    ({"bid_temperature": -1.0}, "bid_temperature"), ({"hold": -1.0}, "hold"), ({"sink": "yes"}, "true or false"),
    ({"hold_heads": 5}, "more than"), ({"hold_heads": -1}, "hold_heads"),
    ({"hold_learned": 0}, "true or false"), ({"hard_writes": "no"}, "true or false"),
    ({"write_jitter": True, "hard_writes": False}, "needs seeking.hard_writes=true"), ({"write_jitter": True}, "rest_on_wins=false"),
    ({"rest_on_wins": True, "match": 1.0}, "rest_on_wins=false"), ({"match": -1.0}, "match"),
    ({"write_cost": float("inf")}, "finite"), ({"occupancy_scale": 1}, "true or false"),
    ({"signed_keys": "yes"}, "true or false"),
    ({"rest_learned": 1}, "true or false"), ({"rest_learned": True, "refractory": False}, "refractory=true"),
    ({"rest_learned": True, "rest_strength": 0.0}, "rest_strength > 0"),
    ({"salience_bias": float("nan")}, "finite"), ({"n_units": True}, "n_units"),
    ({"n_pools": 0}, "n_pools"), ({"n_units": 6, "n_pools": 4}, "divide"),
    ({"n_units": 6, "n_pools": 2, "hard_writes": False}, "hard_writes=true"),
    ({"n_units": 6, "n_pools": 2, "write_jitter": True, "rest_on_wins": False}, "n_pools"),
    ({"read_topk": -1}, "read_topk"), ({"read_topk": 2.0}, "read_topk"), ({"n_units": 4, "read_topk": 5}, "more than"),
    ({"head_share": 1}, "true or false"), ({"recency_reads": -1}, "recency_reads"), ({"recency_reads": 5}, "more than seeking.n_heads"),
])
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ConfigError, match=message):
        mixer_options(ModelConfig(mixer="seeking", d_model=16, mixer_options=options))


def test_no_tensor_with_two_sequence_sized_dimensions_forward_and_backward(shape_recorder):
    t = 100  # longer than the chunk (8) and the units (5)
    mixer = SeekingUnits(16, SeekingOptions(n_heads=2, n_units=5, chunk_size=8))
    x = torch.randn(2, t, 16, requires_grad=True)
    with shape_recorder() as recorder:
        mixer(x).square().sum().backward()
    offenders = [(op, shape) for op, shape in recorder.shapes if sum(d >= t for d in shape) >= 2]
    assert recorder.shapes and not offenders, offenders[:5]



def test_hard_write_is_the_one_hot_forward_and_the_softmax_gradient_backward():
    """The written-out straight-through write against its definition, s * (onehot + softmax - softmax.detach()),
    with and without the sink's column (a message the sink wins is written nowhere)."""
    from workbench.kernels.hard_write import HardWrite

    torch.manual_seed(0)
    for sink in (False, True):
        logits = torch.randn(2, 3, 5, 7 + sink, dtype=torch.float64, requires_grad=True)
        salience = torch.rand(2, 3, 5, dtype=torch.float64, requires_grad=True)
        grad = torch.randn(2, 3, 5, 7, dtype=torch.float64)
        winner = torch.randint(0, 7 + sink, (2, 3, 5))  # any winner: the rest scan's, not always the argmax
        winner[0, 0, :] = 7 if sink else 0  # with the sink: a row it wins
        hard = HardWrite.apply(logits, salience, winner, sink)
        mine = torch.autograd.grad(hard, (logits, salience), grad)
        share = logits.softmax(-1)
        full = salience[..., None] * (torch.nn.functional.one_hot(winner, 7 + sink).to(share.dtype) + share - share.detach())
        reference = full[..., :7]
        theirs = torch.autograd.grad(reference, (logits, salience), grad)
        # (the definition rounds: 1 + s - s is 1 only to the last bit; the written-out form is exact)
        assert torch.allclose(hard, reference.detach(), atol=1e-12)
        assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(mine, theirs))
        assert ((hard > 0).sum(-1) <= 1).all() and (hard.sum(-1) == salience.detach() * (winner < 7)).all()


def test_log_keep_matches_log1p_in_value_and_gradient():
    from workbench.kernels.hard_write import LogKeep

    writes = torch.rand(3, 4, 5, dtype=torch.float64).mul(0.999).requires_grad_()
    assert torch.autograd.gradcheck(LogKeep.apply, (writes,))
    assert torch.allclose(LogKeep.apply(writes), torch.log1p(-writes))


def test_qk_norm_reads_by_cosine_with_a_learned_temperature_per_head():
    """With qk_norm the read's query has the head's temperature as its length and the keys unit length,
    whatever the projection's scale; the temperature starts at read_temperature and gets a gradient."""
    torch.manual_seed(0)
    mixer = SeekingUnits(16, SeekingOptions(n_heads=2, n_units=5, chunk_size=4, qk_norm=True, signed_keys=True,
                                            read_temperature=5.0)).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    q, k, *_ = mixer._project(x)
    torch.testing.assert_close(q.norm(dim=-1), torch.full_like(q[..., 0], 5.0))
    torch.testing.assert_close(k.norm(dim=-1), torch.ones_like(k[..., 0]))
    with torch.no_grad():
        mixer.proj.weight.mul_(10.0)  # the projection's scale no longer reaches the scores
    q10, k10, *_ = mixer._project(x)
    torch.testing.assert_close(q10, q)
    torch.testing.assert_close(k10, k)
    mixer(x).square().sum().backward()
    assert mixer.read_log_scale.grad is not None and mixer.read_log_scale.grad.abs().sum() > 0


def test_read_before_write_reads_the_slots_as_they_were_before_the_tokens_own_write():
    """Take token 4's write away (a hook on the writes): with read_before_write outputs up to 4 do not move,
    without it output 4 does (it read its own message back). Outputs after 4 move either way."""
    x = torch.randn(2, 7, 16, dtype=torch.float64)

    def drop_write_4(_module, _inputs, writes):
        writes = writes.clone()
        writes[:, :, 4] = 0
        return writes

    for before in (True, False):
        mixer = make(read_before_write=before)
        y = mixer(x)
        handle = mixer.hook_writes.register_forward_hook(drop_write_4)
        y_dropped = mixer(x)
        handle.remove()
        assert torch.equal(y[:, :4], y_dropped[:, :4])
        assert torch.equal(y[:, 4], y_dropped[:, 4]) == before
        assert not torch.allclose(y[:, 5:], y_dropped[:, 5:])
    with pytest.raises(ConfigError, match="read_before_write"):
        SeekingUnits.check_options(SeekingOptions(read_before_write=True, occupancy_scale=True), 128)


def test_pools_send_a_message_to_the_pool_its_content_chose_and_rest_only_turns_units_inside_it():
    """n_pools: the pool is argmax_p logsumexp of its units' bids (content alone); the unit inside it is the
    best after rest. The same message over and over: without pools rest spreads it over every unit, with
    pools only over the chosen pool's units, which take turns."""
    mixer = make(n_units=6, n_pools=3, recovery=50.0, rest_strength=8.0)
    x = torch.randn(1, 1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).expand(1, 40, 16)
    with capture(mixer, ["hook_bids", "hook_writes"]) as seen:
        mixer(x)
    bids, writes = seen["hook_bids"][0, :, 0], seen["hook_writes"][0]  # (H, M), (H, T, M)
    for head in range(2):
        pool = int(bids[head].view(3, 2).logsumexp(-1).argmax())
        took = writes[head].sum(0) > 0
        assert took[2 * pool: 2 * pool + 2].all() and took.sum() == 2  # both units of the pool, no other
    free = make(n_units=6, recovery=50.0, rest_strength=8.0)
    with capture(free, ["hook_writes"]) as seen:
        free(x)
    assert ((seen["hook_writes"][0].sum(1) > 0).sum(-1) > 2).all()  # one pool: rest spreads it wider


def test_read_topk_reads_only_each_query_s_k_best_units():
    """read_topk = k: a query's read weights are zero outside its k best-scoring units and are the softmax of
    those k scores inside; k = M is the full read."""
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    full, top2 = make(n_units=5), make(n_units=5, read_topk=2)
    with capture(full, ["hook_read_weights"]) as seen_full, capture(top2, ["hook_read_weights"]) as seen_top:
        y_full, y_top = full(x), top2(x)
    dense, sparse = seen_full["hook_read_weights"], seen_top["hook_read_weights"]  # (B, H, T, M), same model
    kth = dense.topk(2, dim=-1).values[..., -1:]
    best = dense >= kth  # the two best units (more only where scores tie, as empty units' zeros do)
    assert torch.equal(sparse > 0, best) and (best.sum(-1) == 2).float().mean() > 0.5
    torch.testing.assert_close(sparse, torch.where(best, dense, 0.0) / torch.where(best, dense, 0.0).sum(-1, keepdim=True))
    assert not torch.allclose(y_full, y_top)
    torch.testing.assert_close(make(n_units=5, read_topk=5)(x), y_full)


def test_a_recency_read_prefers_the_latest_of_equal_messages_and_a_content_read_does_not():
    """The same message four times goes to four units (rest); the recency read (head 0) weighs each later
    copy exp(slope x salience) times the one before (the slot holds salience x position), head 1 alike."""
    mixer = make(recency_reads=1, recovery=50.0)
    with torch.no_grad():
        mixer.recency_log_slope.fill_(0.0)  # slope 1
        mixer.interests.zero_()  # equal bids: rest alone picks the unit
    x = torch.randn(1, 1, 16, dtype=torch.float64).expand(1, 4, 16)
    with torch.no_grad(), capture(mixer, ["hook_writes", "hook_read_weights", "hook_salience"]) as seen:
        mixer(x)
    writes, reads, salience = seen["hook_writes"][0], seen["hook_read_weights"][0], seen["hook_salience"][0]
    for head in (0, 1):
        units = writes[head].argmax(-1)
        assert len(set(units.tolist())) == 4  # rest sent each copy to a unit of its own
        last = reads[head, 3, units]  # the last token's read over the units, in the order they were written
        ratio = last[1:] / last[:-1]
        expected = torch.full_like(ratio, float(torch.exp(salience[head, 0]))) if head == 0 else torch.ones_like(ratio)
        torch.testing.assert_close(ratio, expected)


def test_with_a_shared_salience_the_heads_split_a_message_and_never_write_more_than_all_of_it():
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    alone, shared = make(), make(head_share=True)
    with torch.no_grad(), capture(alone, ["hook_salience"]) as a, capture(shared, ["hook_salience"]) as b:
        alone(x), shared(x)
    own, split = a["hook_salience"], b["hook_salience"]  # (B, H, T), the same weights
    assert float(own.sum(1).max()) > 1.0  # alone, the two heads write more than one message's worth
    torch.testing.assert_close(split, own / own.sum(1, keepdim=True).clamp_min(1.0))
    assert float(split.sum(1).max()) <= 1.0 + 1e-12
