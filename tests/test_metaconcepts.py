"""Metaconcept System 2: the generator holds out what it says, the prover's actions do what they
say, REINFORCE's gradient is the policy gradient, training beats no training, bad options fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.config import ConfigError
from workbench.symbolic.metaconcept_policy import (
    ACTIONS,
    ALIAS,
    COMPARE,
    HOP,
    ConceptProver,
    Policy,
    Rollout,
    TrainSettings,
    evaluate,
    fixed_depth_chooser,
    policy_chooser,
    reinforce_loss,
    returns_of,
    train_policy,
)
from workbench.symbolic.metaconcept_world import (
    CATEGORY_KIND,
    TEST_ISA_DEPTHS,
    Query,
    evaluation_slices,
    make_world,
    probe_instances,
    query_sequence,
    training_queries,
)
from workbench.symbolic.metaconcepts import main, oracle_profiles, parsed_isa_facts, run_metaconcepts


@pytest.fixture(scope="module")
def world():
    return make_world(0)


@pytest.fixture(scope="module")
def split(world):
    rng = np.random.default_rng(5)
    return training_queries(world, 300, rng), evaluation_slices(world, 60, rng)


@pytest.fixture(scope="module")
def oracle_prover(world):
    return ConceptProver(parsed_isa_facts(world), oracle_profiles(world, probe_instances(world, np.random.default_rng(1))))


def test_same_seed_same_world_other_seed_other_world():
    assert make_world(3).vocab == make_world(3).vocab and make_world(3).parent == make_world(3).parent
    assert make_world(3).parent != make_world(4).parent


def test_heldout_words_are_in_no_fact_and_no_training_query_but_are_observed(world, split):
    train, _ = split
    assert world.heldout
    said = {t for fact in world.facts() for t in fact} | {t for q in train for t in query_sequence(q)}
    assert not world.heldout & said
    rng = np.random.default_rng(0)
    observed = {t for _ in range(400) for t in world.observation(rng)}
    assert world.heldout <= observed  # System 1 sees them: they are grounded, only their metaconcepts are unseen
    assert not observed & set(world.parent.values())  # abstract concepts are never observed


def test_heldout_slices_ask_only_about_heldout_words(world, split):
    _, slices = split
    for name in ("heldout synonym", "heldout same-kind", "heldout is-a"):
        assert {q.subject for q in slices[name]} <= world.heldout


def test_labels_and_depths_are_right(world, split):
    train, slices = split
    for q in train + [q for s in slices.values() for q in s]:
        if q.kind == "synonym":
            assert q.label == world.is_synonym(q.subject, q.target)
        elif q.kind == "same-kind":
            assert q.label == (world.meaning[q.subject][0] == world.meaning[q.target][0])
        else:
            chain = world.ancestors(world.leaf_of(q.subject))
            assert q.label == (q.target in chain)
            assert world.level[q.target] == world.level[chain[q.depth - 1]]  # the target sits `depth` levels up
            if q.label:
                assert chain[q.depth - 1] == q.target
    for depth in TEST_ISA_DEPTHS:
        queries = slices[f"is-a depth {depth}"]
        assert {q.depth for q in queries} == {depth} and abs(np.mean([q.label for q in queries]) - 0.5) < 0.05


def test_training_split_never_needs_more_than_two_hops(world, split):
    train, _ = split
    isa = [q for q in train if q.kind == "is-a"]
    assert {q.depth for q in isa} == {1, 2}
    for q in isa:
        if not q.label:  # a negative proof walks to the root: that walk is at most two hops too
            assert len(world.ancestors(world.leaf_of(q.subject))) <= 2
    leaf_second_names = [q for q in isa if q.subject in world.meaning and q.subject not in world.level]
    assert {q.label for q in leaf_second_names} == {True, False}  # no "a second name is-a anything" shortcut


def test_prover_actions(world, oracle_prover):
    second = next(w for w in sorted(world.heldout) if world.meaning[w][0] == CATEGORY_KIND)
    leaf = world.leaf_of(second)
    state = oracle_prover.start(Query("is-a", second, world.parent[leaf], True, 1))
    oracle_prover.step(state, HOP)
    assert state.current == second  # a second name has no is-a fact: hop does nothing
    oracle_prover.step(state, ALIAS)
    assert state.current == leaf and state.alias_similarity == pytest.approx(1.0)
    oracle_prover.step(state, HOP)
    assert state.current == world.parent[leaf] and state.hops == 1
    synonym = Query("synonym", second, leaf, True)
    state = oracle_prover.start(synonym)
    oracle_prover.step(state, COMPARE)
    assert state.evidence[0] == pytest.approx(1.0)
    assert len(oracle_prover.features(state)) == Policy().actor[0].in_features


def test_reinforce_gradient_matches_the_exact_policy_gradient():
    """A one-step bandit: the surrogate's gradient, averaged over samples, is -d E[r] / d logits,
    with or without a baseline (the baseline changes variance, not the mean)."""
    torch.manual_seed(0)
    rewards = torch.tensor([0.1, 0.9, 0.2, 0.5, 0.3])
    logits = torch.tensor([0.3, -0.2, 0.5, 0.0, -0.4])
    p = logits.softmax(-1)
    exact = p * (rewards - (p * rewards).sum())  # d E[r] / d logits
    n = 200_000
    actions = torch.multinomial(p, n, replacement=True)
    for baseline in (0.0, 0.6):
        batch_logits = logits.repeat(n, 1).requires_grad_(True)
        values = torch.full((n,), baseline)
        loss, _ = reinforce_loss(batch_logits, values, actions, rewards[actions])
        loss.backward()
        estimate = -batch_logits.grad.sum(0)  # the mean over samples, per logit
        assert torch.allclose(estimate, exact, atol=6e-3), (baseline, estimate, exact)


def test_value_term_pulls_the_baseline_to_the_return():
    values = torch.zeros(4, requires_grad=True)
    loss, _ = reinforce_loss(torch.zeros(4, len(ACTIONS)), values, torch.zeros(4, dtype=torch.long),
                             torch.ones(4))
    loss.backward()
    assert (values.grad < 0).all()  # gradient descent raises V toward the return of 1


def test_returns_charge_each_step_only_for_itself_and_later_steps():
    batch = Rollout(states=[], features=np.zeros((5, 1)), actions=np.zeros(5, dtype=np.int64),
                    episode=np.array([0, 1, 0, 1, 0]), rewards=np.array([0.97, -0.02]))
    assert returns_of(batch, 0.01) == pytest.approx([0.97, -0.02, 0.98, -0.01, 0.99])


def test_trained_policy_beats_the_untrained_one_and_the_fixed_rule_on_deep_chains(oracle_prover, split):
    train, slices = split
    policy, curve = train_policy(oracle_prover, train, TrainSettings(iterations=400, batch_size=64), seed=0)
    assert np.mean([c["reward"] for c in curve[-40:]]) > np.mean([c["reward"] for c in curve[:40]]) + 0.2
    torch.manual_seed(0)
    untrained = Policy()
    for name in ("heldout synonym", "is-a depth 4", "is-a depth 6"):
        trained = evaluate(oracle_prover, policy_chooser(policy, greedy=True), slices[name], 16)["accuracy"]
        before = evaluate(oracle_prover, policy_chooser(untrained, greedy=True), slices[name], 16)["accuracy"]
        assert trained >= before + 0.3, (name, trained, before)
    deep = evaluate(oracle_prover, fixed_depth_chooser(2), slices["is-a depth 6"], 16)["accuracy"]
    assert deep <= 0.55  # a fixed depth-2 proof cannot reach six levels up: only its "no" answers are right


@pytest.mark.parametrize("budget, seeds", [("huge", 1), ("smoke", 0), ("smoke", 2.5), ("smoke", True)])
def test_bad_options_are_config_errors(tmp_path, budget, seeds):
    with pytest.raises(ConfigError):
        run_metaconcepts(budget, seeds, tmp_path)


@pytest.mark.parametrize("argv", [["--budget", "huge"], ["--seeds", "abc"], ["--seeds", "0"], ["--frobnicate"]])
def test_cli_rejects_bad_values_in_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err


def test_results_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ConfigError):
        run_metaconcepts("smoke", 1, path)


@pytest.mark.slow
def test_smoke_run_writes_every_row_and_slice(tmp_path):
    summary = run_metaconcepts("smoke", 1, tmp_path)
    written = json.loads((tmp_path / "system2-metaconcepts-smoke.json").read_text())
    assert written["rows"] == json.loads(json.dumps(summary["rows"]))
    assert [r["system"] for r in written["rows"]][:2] == ["system2 (S1-grounded)", "system2 (oracle facts)"]
    for row in written["rows"]:
        assert set(row["accuracy"]) == set(written["slices"])
    assert set(written["targets"]) == {"heldout metaconcepts", "is-a depth 6"}
