"""System 2 round 2 on CLUTRR-style kinship: generator, rule induction, proof environment and policy,
the experiment's JSON, its CLI and its report block."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.symbolic.clutrr import NAMED, FamilyTree, make_stories, oracle_parse
from workbench.symbolic.induction import RuleBase, induce
from workbench.symbolic.proof import Problem, ProofEnv, ProofPolicy, evaluate, search_episode, train_policy


@pytest.fixture(scope="module")
def training_stories():
    return make_stories(0, 1200, (2, 3))


@pytest.fixture(scope="module")
def oracle_rules(training_stories):
    return induce([(oracle_parse(s.tokens()), s.query, s.answer) for s in training_stories])


def test_tree_relations_are_named_both_ways_and_compose_like_families():
    rng = np.random.default_rng(3)
    for _ in range(5):
        tree = FamilyTree(rng, 4)
        for a in range(len(tree.people)):
            for _, c in tree.named_neighbours(a):
                assert tree.relation(c, a) in NAMED  # every named relation has a named converse
            for _, p in [(r, x) for r, x in tree.neighbours(a) if r in ("father", "mother")]:
                for r, g in tree.neighbours(p):
                    if r in ("father", "mother"):
                        assert tree.relation(a, g) == {"father": "grandfather", "mother": "grandmother"}[r]


def test_stories_hold_their_chain_shuffled_with_each_noise_kind():
    for noise in ("none", "supporting", "irrelevant", "disconnected"):
        for story in make_stories(5, 20, (4,), (noise,)):
            assert len(story.chain) == 4 and story.chain[0][0] == story.query[0] and story.chain[-1][2] == story.query[1]
            links = {(a, b) for a, _, b in story.facts} | {(b, a) for a, _, b in story.facts}
            assert all((a, b) in links for a, _, b in story.chain)
            chain_people = {x for a, _, b in story.chain for x in (a, b)}
            extra = len(story.facts) - 4
            if noise == "none":
                assert extra == 0
            if noise == "disconnected":  # the other family shares nobody with the chain
                others = [(a, b) for a, _, b in story.facts if not ({a, b} <= chain_people)]
                assert others and all(not {a, b} & chain_people for a, b in others)


def test_some_long_chains_need_an_order_other_than_left_to_right():
    stories = make_stories(7, 60, (8,))
    assert np.mean([s.left_fold_named for s in stories]) < 0.6  # the audit's failure mode is in the test set
    assert {s.answer for s in stories} <= set(NAMED)


def test_induced_rules_recover_compositions_and_invent_predicates(oracle_rules):
    assert oracle_rules.best("compose", ("father", "father")) == "grandfather"
    assert oracle_rules.best("compose", ("mother", "brother")) == "uncle"
    assert oracle_rules.best("invert", ("son", "m")) == "father"  # (b son a) read from a: b is a's father
    assert oracle_rules.invented, "a three-fact chain with no named bracketing needs an invented predicate"
    # either pair of such a chain may be the unnamed one: invented predicates appear on both sides of a body
    assert any(left in oracle_rules.invented for left, _ in oracle_rules.compose)
    assert any(right in oracle_rules.invented for _, right in oracle_rules.compose)
    kept = oracle_rules.thresholded(0.95)
    assert 0 < kept.size()["compose_heads"] < oracle_rules.size()["compose_heads"]


def _proof_by_hand(dead_end_first: bool = False) -> ProofEnv:
    """A -father-> B, then B -brother-> C (the proof: uncle) beside B -wife-> D (a dead end)."""
    rules = RuleBase()
    rules.compose["father", "brother"]["uncle"] = 3
    facts = [("A", "father", "B", 1.0), ("B", "brother", "C", 1.0), ("B", "wife", "D", 1.0)]
    if dead_end_first:  # the environment lists the dead end's walk before the proof's
        facts[1], facts[2] = facts[2], facts[1]
    return ProofEnv(facts, ("A", "C"), rules)


def test_proof_actions_walk_compose_undo_and_stop():
    env = _proof_by_hand()
    kinds = {a.kind for a in env.actions()}
    assert kinds == {"hop", "stop"}  # nothing to compose before the walk reaches the tail
    env.step(next(a for a in env.actions() if a.kind == "hop"))
    env.step(next(a for a in env.actions() if a.kind == "hop" and a.apply[1].target == "D"))
    env.step(next(a for a in env.actions() if a.kind == "back"))
    env.step(next(a for a in env.actions() if a.kind == "hop" and a.apply[1].target == "C"))
    env.step(next(a for a in env.actions() if a.kind == "compose"))
    env.step(next(a for a in env.actions() if a.kind == "stop"))
    assert env.answer == "uncle" and env.done and env.steps == 6


def test_stopping_early_answers_nothing():
    env = _proof_by_hand()
    env.step(next(a for a in env.actions() if a.kind == "stop"))
    assert env.done and env.answer is None


def test_reinforce_beats_the_untrained_policy(training_stories, oracle_rules):
    torch.manual_seed(0)
    problems = [Problem(oracle_parse(s.tokens()), s.query, s.answer, s.k) for s in training_stories if s.k == 2]
    policy = ProofPolicy()
    untrained = [e.correct for e in evaluate(policy, oracle_rules, problems[:100])]
    curve = train_policy(policy, oracle_rules, problems[100:], 3000, seed=0, batch=64, lr=3e-3, entropy=0.005)
    trained = [e.correct for e in evaluate(policy, oracle_rules, problems[:100])]
    assert np.mean(curve[-5:]) > np.mean(curve[:5])
    assert np.mean(trained) > np.mean(untrained) + 0.3


def test_smoke_experiment_writes_every_row_the_controller_and_renders(tmp_path):
    from workbench.cli import main
    from workbench.report import render_blocks

    assert main(["system2", "--part", "kinship", "--budget", "smoke", "--results", str(tmp_path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "system2-kinship-smoke.json").read_text())
    systems = [r["system"] for r in summary["rows"]]
    assert systems == ["system2", "system2-single-proof", "system2-untrained", "system2-threshold-rules", "system2-oracle-parser",
                       "system1-inverted", "transformer-2L"]
    assert summary["slices"] == [str(k) for k in range(1, 11)]
    assert len(summary["controller"]) >= 5 and summary["runs"][0]["reward_curve"]
    block = render_blocks(tmp_path)["system2-kinship-smoke"]
    assert "| system2-untrained |" in block and "Controller" in block


def test_single_hop_stories_state_the_asked_relation_directly_among_noise():
    for noise in ("none", "supporting", "irrelevant", "disconnected"):
        for story in make_stories(11, 20, (1,), (noise,)):
            head, tail = story.query
            assert story.k == 1 and story.chain == [(head, story.answer, tail)]
            assert (head, story.answer, tail) in story.facts
            assert (len(story.facts) == 1) == (noise == "none")


def test_longer_chains_are_unchanged_by_the_single_hop_slice():
    stories = make_stories(12, 30, (2, 3))  # the chain facts still point either way along the chain
    assert any(f not in s.facts for s in stories for f in s.chain)


def test_system1_and_extractor_train_jointly_so_the_fact_loss_reaches_system1():
    from workbench.symbolic.grounding import extract, train_system1

    stories = make_stories(5, 40, (1, 2))
    options = {"read_topk": 4, "ordinal_read": False}
    light, extractor = train_system1(stories, 16, 8, 8, 0, facts=0.01, options=options)
    heavy, _ = train_system1(stories, 16, 8, 8, 0, facts=10.0, options=options)
    assert not light.blocks[0].mixer.o.ordinal_read and light.blocks[0].mixer.o.read_topk == 4
    # one seed, one batch order: only the weight of the extractor's loss differs, and System 1 moves with it
    assert any(not torch.equal(a, b) for a, b in zip(light.parameters(), heavy.parameters()))
    assert not set(map(id, extractor.parameters())) & set(map(id, light.parameters()))  # separate modules
    facts = extract(light, extractor, stories[:5])
    assert [len(f) for f in facts] == [len(s.facts) for s in stories[:5]]
    assert all(0 <= f[3] <= 1 for fs in facts for f in fs)


@pytest.mark.parametrize("facts", [0.0, -1.0])
def test_system1_needs_a_positive_fact_weight(facts):
    from workbench.symbolic.grounding import train_system1

    with pytest.raises(ValueError, match="fact loss"):
        train_system1(make_stories(5, 4, (1,)), 16, 1, 2, 0, facts=facts)


def test_system1_rejects_bad_mixer_options():
    from workbench.config import ConfigError
    from workbench.symbolic.grounding import train_system1

    with pytest.raises(ConfigError, match="read_topk"):
        train_system1(make_stories(5, 4, (1,)), 16, 1, 2, 0, options={"read_topk": 0})


def _episode(answer: str, steps: int):
    from workbench.symbolic.proof import Episode

    return Episode(steps=[], reward=0.0, correct=False, n_steps=steps, trace=[], answer=answer)


def test_controller_answers_fast_at_threshold_zero_and_always_deliberates_above_one():
    from workbench.symbolic.kinship import THRESHOLDS, controller_curve

    fast, confidence = ["son", "son", "wife"], [0.95, 0.5, 0.2]
    slow, truth = [_episode("son", 4), _episode("father", 6), _episode("wife", 8)], ["son", "son", "wife"]
    curve = {p["threshold"]: p for p in controller_curve(fast, confidence, slow, truth)}
    assert THRESHOLDS[0] == 0 and THRESHOLDS[-1] > 1
    assert curve[0.0] == {"threshold": 0.0, "accuracy": 1.0, "mean_steps": 0.0, "deliberated": 0.0}
    assert curve[THRESHOLDS[-1]]["deliberated"] == 1.0 and curve[THRESHOLDS[-1]]["mean_steps"] == 6.0
    assert curve[THRESHOLDS[-1]]["accuracy"] == pytest.approx(2 / 3)  # System 2 is wrong on the second query
    middle = curve[0.6]  # only the confident query is answered fast; the others deliberate
    assert (middle["deliberated"], middle["mean_steps"], middle["accuracy"]) == pytest.approx((2 / 3, 14 / 3, 2 / 3))


def test_bad_seed_count_is_one_line(capsys):
    from workbench.cli import main

    assert main(["system2", "--budget", "smoke", "--seeds", "0"]) == 2
    assert "seeds" in capsys.readouterr().err


def test_simulated_semantics_keep_only_compositions_the_tree_fixes():
    from workbench.symbolic.clutrr import semantics

    two, first_unnamed, last_unnamed = semantics()
    assert two["father", "father"] == "grandfather" and two["son", "mother"] == "wife"
    assert ("grandfather", "grandson") not in two  # a brother or a cousin: not fixed by the tree
    assert first_unnamed and last_unnamed  # three-step compositions through an unnamed pair exist


class FirstActionPolicy:
    """Prefers the actions in the order the environment lists them (a fixed, untrained preference)."""

    def logits(self, kinds: torch.Tensor, relations: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        return -torch.arange(len(kinds), dtype=torch.float32)


def test_search_backtracks_from_a_dead_end_to_the_next_alternative():
    env = _proof_by_hand(dead_end_first=True)
    episode = search_episode(FirstActionPolicy(), env, "uncle", budget=40)
    assert episode.correct and episode.answer == "uncle"
    assert "hop B -wife-> D" in episode.trace and "back" in episode.trace  # walked into D, found nothing, undid it
    assert episode.trace.index("back") < episode.trace.index("hop B -brother-> C")


def test_search_stops_at_its_budget_without_an_answer():
    episode = search_episode(FirstActionPolicy(), _proof_by_hand(dead_end_first=True), "uncle", budget=3)
    assert episode.answer is None and not episode.correct and episode.n_steps <= 3


def test_an_invented_predicate_is_never_an_answer():
    rules = RuleBase()
    rules.compose["wife", "brother"]["p0"] = 2
    env = ProofEnv([("A", "wife", "B", 1.0), ("B", "brother", "C", 1.0)], ("A", "C"), rules)
    for kind in ("hop", "hop", "compose", "stop"):
        env.step(next(a for a in env.actions() if a.kind == kind))
    assert env.path[0].relation == "p0" and env.done and env.answer is None


def _two_invented_alike() -> RuleBase:
    rules = RuleBase(invented={"p0": ("wife", "brother"), "p1": ("sister", "husband"), "p2": ("son", "wife")})
    rules.compose["wife", "brother"]["p0"] = 3
    rules.compose["sister", "husband"]["p1"] = 2
    rules.compose["son", "wife"]["p2"] = 2
    rules.compose["p0", "son"]["nephew"] = 2
    rules.compose["p0", "daughter"]["niece"] = 2
    rules.compose["p1", "son"]["nephew"] = 1
    rules.compose["p1", "daughter"]["niece"] = 1
    rules.compose["p1", "wife"]["sister"] = 1  # learned for one body only
    rules.compose["p2", "son"]["grandson"] = 2  # disagrees with p0 on a shared neighbour: stays apart
    rules.compose["p2", "daughter"]["granddaughter"] = 2
    return rules


def test_invented_predicates_that_compose_alike_merge_and_share_their_rules():
    from workbench.symbolic.induction import merge_invented

    merged = merge_invented(_two_invented_alike())
    shared = merged.best("compose", ("wife", "brother"))
    assert shared == merged.best("compose", ("sister", "husband"))
    assert merged.best("compose", (shared, "wife")) == "sister"  # what one body's stories taught serves the other
    assert merged.best("compose", (shared, "son")) == "nephew"
    assert merged.best("compose", ("son", "wife")) not in (shared, None)
    assert len(merged.invented) == 2


def test_threshold_baseline_keeps_invented_definitions_and_judges_named_heads_alone():
    rules = _two_invented_alike()
    rules.compose["wife", "brother"]["brother"] = 20  # a named head beside the invented definition
    rules.compose["father", "father"].update({"grandfather": 19, "father": 1})  # precision 0.95: kept
    rules.compose["son", "brother"].update({"son": 9, "nephew": 1})  # precision 0.9: dropped
    kept = rules.thresholded(0.95)
    assert set(kept.compose["wife", "brother"]) == {"brother", "p0"}
    assert set(kept.compose["father", "father"]) == {"grandfather"}
    assert ("son", "brother") not in kept.compose


def _learned_without_the_left_pair() -> RuleBase:
    """Rules induced from two-fact stories only: a husband's son is a son, a sister's son a nephew; no story
    ever composes a sister with her husband (that pair has no rule, named or invented)."""
    examples = []
    for i in range(3):
        examples.append(([(f"M{i}", "husband", f"M{i + 10}", 1.0), (f"M{i + 10}", "son", f"M{i + 20}", 1.0)],
                         (f"M{i}", f"M{i + 20}"), "son"))
        examples.append(([(f"F{i}", "sister", f"F{i + 10}", 1.0), (f"F{i + 10}", "son", f"M{i + 20}", 1.0)],
                         (f"F{i}", f"M{i + 20}"), "nephew"))
    return induce(examples)


def test_chart_composes_right_to_left_where_the_left_fold_has_no_rule():
    from workbench.symbolic.chart import compose_chart

    rules = _learned_without_the_left_pair()
    assert rules.best("compose", ("husband", "son")) == "son" and rules.best("compose", ("sister", "son")) == "nephew"
    assert not rules.heads("compose", ("sister", "husband"))  # a left-to-right fold is stuck at its first step
    chart = compose_chart(rules, ("sister", "husband", "son"))
    assert chart.roots()[0][0] == "nephew"
    assert chart.steps("nephew") == ["[1:3] husband . son = son", "[0:3] sister . son = nephew"]


def test_chart_weighs_bracketings_by_rule_precision():
    from workbench.symbolic.chart import compose_chart

    rules = RuleBase()
    rules.compose["a", "b"]["father"] = 10  # left bracketing: precise rules all the way
    rules.compose["father", "c"]["grandfather"] = 10
    rules.compose["b", "c"].update({"son": 5, "daughter": 5})  # right bracketing: a coin flip, then a guess
    rules.compose["a", "son"]["uncle"] = 3
    rules.compose["a", "daughter"]["aunt"] = 3
    roots = dict(compose_chart(rules, ("a", "b", "c")).roots())
    assert roots["grandfather"] == pytest.approx((10 / 12) ** 2 / 2)  # one split of two; 2 prior pseudo-counts
    assert roots["uncle"] == pytest.approx(5 / 12 * 3 / 5 / 2) and roots["aunt"] == pytest.approx(roots["uncle"])
    assert compose_chart(rules, ("a", "b", "c", "d")).roots() == []  # nothing composes with d: no answer


def test_chart_trusts_a_well_attested_bracketing_over_a_rule_seen_once():
    from workbench.symbolic.chart import compose_chart

    rules = RuleBase()
    rules.compose["a", "b"]["father"] = 20  # both bracketings precise, one seen 20 times, the other once
    rules.compose["father", "c"]["grandfather"] = 20
    rules.compose["b", "c"]["son"] = 1
    rules.compose["a", "son"]["uncle"] = 1
    roots = compose_chart(rules, ("a", "b", "c")).roots()
    assert roots[0][0] == "grandfather" and roots[0][1] > 2 * roots[1][1]


def test_proof_chart_action_answers_where_pairwise_composition_cannot_start():
    rules = _learned_without_the_left_pair()
    facts = [("F1", "sister", "F2", 1.0), ("F2", "husband", "M3", 1.0), ("M3", "son", "M4", 1.0)]
    env = ProofEnv(facts, ("F1", "M4"), rules)
    for _ in range(3):
        env.step(next(a for a in env.actions() if a.kind == "hop"))
    kinds = [a.kind for a in env.actions()]
    assert "chart" in kinds and [a.apply[1] for a in env.actions() if a.kind == "compose"] == [1]  # only the right pair
    env.step(next(a for a in env.actions() if a.kind == "chart"))
    env.step(next(a for a in env.actions() if a.kind == "stop"))
    assert env.answer == "nephew" and env.steps == 5
    assert "  chart [1:3] husband . son = son" in env.trace


def test_chart_reads_an_invented_head_as_a_definition_not_a_rival():
    from workbench.symbolic.chart import compose_chart, rule_weights

    rules = RuleBase(invented={"p7": ("son", "mother")})
    rules.compose["son", "mother"].update({"p7": 77, "wife": 64})  # p7 was invented for longer stories
    rules.compose["son", "son"]["grandson"] = 9
    assert dict(rule_weights(rules, ("son", "mother"), prior=0)) == {"p7": 1.0, "wife": 1.0}
    assert dict(rule_weights(rules, ("son", "mother")))["wife"] == pytest.approx(64 / 66)
    assert dict(rule_weights(rules, ("son", "mother"), definitions=False))["wife"] == pytest.approx(64 / 141)
    assert compose_chart(rules, ("son", "mother")).roots() == [("wife", pytest.approx(64 / 66))]
    assert compose_chart(rules, ("son", "son")).roots() == [("grandson", pytest.approx(9 / 11))]
