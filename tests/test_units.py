"""workbench.lab.units: who takes each message (MI against a shuffled null) and load entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.config import RunConfig
from workbench.lab.units import (
    LoadTracker,
    hard_writes,
    joint_mutual_information_bits,
    load_summary,
    multistream_streams,
    unit_stream_specialization,
    write_weights,
)
from workbench.model import Model
from workbench.tasks import build_task
from workbench.tasks.multistream import make_multistream_examples

N_STREAMS, M, H = 4, 16, 2


def random_streams(rng: np.random.Generator, b: int = 24, t: int = 200) -> np.ndarray:
    streams = rng.choice(N_STREAMS, size=(b, t), p=[0.55, 0.25, 0.15, 0.05])
    streams[:, -10:] = -1  # unlabelled positions (queries) take no part
    return streams


def soft_writes(rng: np.random.Generator, b: int, t: int) -> np.ndarray:
    logits = rng.normal(size=(b, H, t, M)) * 2
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return weights * rng.uniform(0.2, 1.0, size=(b, H, t, 1))  # a salience per token


def test_joint_mutual_information_exact_cases():
    assert joint_mutual_information_bits(np.eye(2)) == pytest.approx(1.0)
    assert joint_mutual_information_bits(np.eye(4) * 3) == pytest.approx(2.0)
    assert joint_mutual_information_bits(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-12)
    assert joint_mutual_information_bits(np.outer([1, 2, 7], [3, 1])) == pytest.approx(0.0, abs=1e-12)
    stacked = joint_mutual_information_bits(np.stack([np.eye(2), np.ones((2, 2))]))
    np.testing.assert_allclose(stacked, [1.0, 0.0], atol=1e-12)


def test_independent_streams_give_mi_near_zero_and_inside_the_null():
    rng = np.random.default_rng(0)
    streams = random_streams(rng)
    weights = soft_writes(rng, *streams.shape)
    spec = unit_stream_specialization(weights, streams, N_STREAMS, n_permutations=40, rng=rng)
    assert spec.mi_bits.shape == (H,) and spec.joint.shape == (H, M, N_STREAMS)
    assert (spec.mi_bits < 0.02).all(), spec.mi_bits  # only the plug-in estimator's small bias
    assert (spec.null_mean_bits <= spec.null_p95_bits + 1e-12).all()
    assert np.abs(spec.mi_bits - spec.null_mean_bits).max() < 0.01  # the null measures that bias
    assert not spec.specializes.any() and (spec.p_value > 0.05).all()


def owned_units(streams: np.ndarray) -> np.ndarray:
    """A planted specialization: stream s writes to its own block of M / S units (one-hot rows)."""
    owned = np.zeros(streams.shape + (M,))
    for s in range(N_STREAMS):
        owned[streams == s, s * (M // N_STREAMS) : (s + 1) * (M // N_STREAMS)] = 1.0
    return owned


def test_planted_assignment_gives_high_mi_far_above_the_null():
    rng = np.random.default_rng(1)
    streams = random_streams(rng)
    # Stream s writes to its own block of M / S units (a planted specialization); head 1 ignores the stream.
    weights = soft_writes(rng, *streams.shape)
    owned = owned_units(streams)
    weights[:, 0] = owned / (M // N_STREAMS)
    spec = unit_stream_specialization(weights, streams, N_STREAMS, n_permutations=20, rng=rng)
    # Head 0: the unit tells the stream exactly, so MI equals the stream entropy of the written mass.
    assert spec.mi_bits[0] == pytest.approx(spec.stream_entropy_bits[0], rel=1e-9)
    assert spec.stream_entropy_bits[0] > 1.0
    assert spec.specializes[0] and spec.p_value[0] == pytest.approx(1 / 21)
    assert spec.null_p95_bits[0] < 0.05 and spec.excess_bits[0] > 1.0
    assert not spec.specializes[1]


def test_partial_specialization_sits_between():
    rng = np.random.default_rng(2)
    streams = random_streams(rng)
    weights = soft_writes(rng, *streams.shape)
    owned = owned_units(streams)
    mixed = 0.5 * weights + 0.5 * owned[:, None] / (M // N_STREAMS)
    full = unit_stream_specialization(owned[:, None], streams, N_STREAMS, 5, rng).mi_bits
    half = unit_stream_specialization(mixed, streams, N_STREAMS, 5, rng).mi_bits
    none = unit_stream_specialization(weights, streams, N_STREAMS, 5, rng).mi_bits
    assert (none < half).all() and (half < full[0]).all()


def test_hard_writes_reveal_first_choices_that_a_flat_softmax_hides():
    rng = np.random.default_rng(5)
    streams = random_streams(rng)
    # Every token spreads its mass almost evenly, but a little more on its stream's unit block.
    weights = np.full(streams.shape + (M,), 1.0)
    for s in range(N_STREAMS):
        weights[streams == s, s * (M // N_STREAMS) + rng.integers(0, M // N_STREAMS)] += 0.05
    weights = (weights / weights.sum(-1, keepdims=True))[:, None] * 0.7
    hard = hard_writes(weights)
    assert hard.shape == weights.shape and np.allclose(hard.sum(-1), weights.sum(-1))
    assert ((hard > 0).sum(-1) == 1).all()
    soft_mi = unit_stream_specialization(weights, streams, N_STREAMS, 5, rng).mi_bits[0]
    hard_spec = unit_stream_specialization(hard, streams, N_STREAMS, 5, rng)
    assert soft_mi < 0.01 and hard_spec.mi_bits[0] > 1.0 and hard_spec.specializes[0]


def test_null_needs_a_permutation():
    with pytest.raises(ValueError, match="n_permutations"):
        unit_stream_specialization(np.ones((1, 1, 4, 2)), np.zeros((1, 4), dtype=int), 2, 0, np.random.default_rng(0))


def test_load_entropy_bounds():
    rng = np.random.default_rng(3)
    even = load_summary(np.full((3, H, 10, M), 0.5))
    assert even.entropy_bits == pytest.approx(math.log2(M)) and even.ceiling_bits == math.log2(M)
    assert even.evenness == pytest.approx(1.0) and even.busiest_share == pytest.approx(1 / M)
    one = np.zeros((3, H, 10, M))
    one[..., 5] = 1.0
    hog = load_summary(one)
    assert hog.entropy_bits == pytest.approx(0.0) and hog.busiest_share == pytest.approx(1.0)
    assert hog.write_mass == pytest.approx(10.0)
    mid = load_summary(soft_writes(rng, 3, 10))
    assert 0 < mid.entropy_bits < math.log2(M) and 1 / M < mid.busiest_share < 1
    assert set(mid.as_dict()) == {"load_entropy_bits", "load_ceiling_bits", "load_evenness", "busiest_unit_share",
                                  "write_mass"}
    silent = load_summary(np.zeros((2, H, 5, M)))
    assert math.isnan(silent.entropy_bits) and silent.write_mass == 0.0


def test_multistream_streams_label_every_event_token():
    rng = np.random.default_rng(4)
    options = dict(n_streams=4, key_range=32, n_values=16, n_queries=8, recent=2, rate_ratio=0.25)
    batch, query_streams = make_multistream_examples(6, 96, rng=rng, **options)
    streams = multistream_streams(batch.inputs, options["n_streams"], options["key_range"], options["n_queries"])
    n_events = (batch.inputs.shape[1] + 1) // 2 - options["n_queries"]
    assert (streams[:, : 2 * n_events] >= 0).all() and (streams[:, 2 * n_events :] == -1).all()
    assert (streams[:, 0::2][:, :n_events] == streams[:, 1::2][:, :n_events]).all()  # value = its key's stream
    keys = batch.inputs.numpy()[:, 0 : 2 * n_events : 2]
    assert ((keys - 1) // options["key_range"] == streams[:, 0 : 2 * n_events : 2]).all()
    assert ((streams[:, 0::2] >= 0).sum(1) >= options["n_streams"] * options["recent"]).all()
    assert query_streams.shape == (6, 8)
    with pytest.raises(ValueError, match="not multistream"):
        multistream_streams(batch.inputs, 2, options["key_range"], options["n_queries"])


def tiny_model(mixer: str, options: dict) -> Model:
    task = build_task("multistream", {"seq_len": 64, "n_eval": 4, "key_range": 32, "n_values": 16, "n_queries": 8,
                                      "recent": 2})
    config = RunConfig.from_dict({"task": {"name": "multistream"},
                                  "model": {"mixer": mixer, "d_model": 16, "n_layers": 1, "mixer_options": options}})
    torch.manual_seed(0)
    return Model(config.model, task.io).eval(), task


def test_write_weights_of_seeking_are_salience_times_a_distribution():
    model, task = tiny_model("seeking", {"n_units": 8, "n_heads": 2})
    inputs = task.eval_batch.inputs
    weights = write_weights(model, inputs)
    assert weights.shape == (len(inputs), 2, inputs.shape[1], 8)
    total = weights.sum(-1)
    assert (weights >= 0).all() and (total > 0).all() and (total < 1).all()  # salience in (0, 1)
    assert not model.training


def test_write_weights_of_the_ring_are_one_hot_and_other_mixers_have_none():
    model, task = tiny_model("inverted", {"n_units": 8})
    weights = write_weights(model, task.eval_batch.inputs)
    assert weights.shape[1] == 1 and weights.shape[-1] == 8
    assert set(np.unique(weights.sum(-1))) <= {0.0, 1.0}
    window, _ = tiny_model("sliding_window", {"window": 8})
    with pytest.raises(ValueError, match="no units"):
        write_weights(window, task.eval_batch.inputs)


def test_load_tracker_adds_the_load_to_every_evaluation():
    from workbench.train import train

    _, task = tiny_model("seeking", {"n_units": 8, "n_heads": 2})
    config = RunConfig.from_dict({
        "task": {"name": "multistream"},
        "model": {"mixer": "seeking", "d_model": 16, "n_layers": 1, "mixer_options": {"n_units": 8, "n_heads": 2}},
        "train": {"steps": 2, "batch_size": 4, "eval_every": 1, "warmup_steps": 0, "seed": 0}})
    tracker = LoadTracker(task, task.eval_batch.inputs[:2])
    _, result = train(config, progress=False, task=tracker)
    assert len(result["history"]) == 2 and len(tracker.trace) == 3  # two evaluations and the final one
    for entry in result["history"]:
        metrics = entry["metrics"]
        assert 0 <= metrics["units/load_entropy_bits"] <= metrics["units/load_ceiling_bits"] == 3.0
        assert "accuracy" in metrics


def test_unit_survival_multiplies_what_each_unit_keeps_after_the_start():
    from workbench.lab.units import unit_survival

    w = np.zeros((1, 1, 4, 2))
    w[0, 0, 0] = [1.0, 1.0]  # before the start: not counted
    w[0, 0, 1:, 0] = 0.5  # unit 0 keeps half at each of three tokens; unit 1 is never written again
    got = unit_survival(w, start=1)
    assert got == pytest.approx({"write_mass_per_token": 0.5, "survival_mean": (0.125 + 1) / 2, "survival_min": 0.125})
    with pytest.raises(ValueError, match="start"):
        unit_survival(w, start=4)
