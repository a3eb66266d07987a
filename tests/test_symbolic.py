"""System 2: store, executor, rule learning, REINFORCE policy, controller, generated tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.config import RunConfig
from workbench.model import IGNORE, Model
from workbench.symbolic.concepts import Codebook, ConceptInventory, grounded_facts, unit_inventory
from workbench.symbolic.executor import Executor, Program, execute
from workbench.symbolic.policy import (
    Choice,
    Controller,
    RuleLearner,
    System2,
    budget_curve,
    parse_query,
    tradeoff_curve,
)
from workbench.symbolic.rules import (
    RuleBase,
    compare_rules,
    compose,
    fact,
    inverse,
    propose,
    rules_true_in,
    symmetric,
    transitive,
)
from workbench.symbolic.store import Store
from workbench.symbolic.tasks import (
    KIN,
    KIN_NAMES,
    ConceptsTask,
    FamilyTree,
    HopsTask,
    KinshipTask,
    TemporalTask,
    concept_of,
    kin_compose,
    meta_truth,
)
from workbench.tasks import TASKS, build_task
from workbench.train import train

SMALL = {
    "hops": {"n_eval": 4},
    "kinship": {"n_eval": 4},
    "temporal": {"n_eval": 4, "test_lengths": (64,)},
    "concepts": {"n_eval": 4},
}


def keep(rules: RuleBase, *hypotheses) -> RuleBase:
    for h in hypotheses:
        rules.add(h).logit = 5.0
    return rules


def answered(episodes):
    from workbench.symbolic.experiment import answered as to_items

    return to_items(episodes)


# ----------------------------------------------------------------------------- store and executor


def test_store_reads_the_clause_grammar_and_prints():
    store = Store.from_tokens("k1 v1 . Ann parent Bob . e1 e2 e3 e4 . ? Ann Bob".split())
    assert store.lookup("binds", "k1") == ["v1"]
    assert store.lookup("parent", "Ann") == ["Bob"] and store.lookup("~parent", "Bob") == ["Ann"]
    assert store.lookup("follows", "e2") == ["e3"] and store.truth("before", "e1", "e4") is True
    assert store.truth("before", "e4", "e1") is False
    # A stated clause names the relation of its pair: others are false there, unknown elsewhere.
    assert store.truth("child", "Ann", "Bob") is False and store.truth("child", "Bob", "Ann") is None
    assert store.add_answer(["Ann", "Bob"], "parent") and not store.add_answer(["first", "e1", "e2"], "e1")
    text = str(store)
    assert "binds(k1, v1)" in text and "parent(Ann, Bob)" in text and "events (4" in text


def test_executor_runs_programs_on_a_hand_made_store():
    store = Store.from_tokens("a b . b c . c d . Ann parent Bob . Cid child Bob . e1 e2 e3 e4 .".split())
    assert execute(Program("walk", ("a",), ("binds",) * 3), store).answer == "d"
    assert execute(Program("walk", ("d",), ("~binds",) * 2), store).answer == "b"
    assert execute(Program("walk", ("a",), ("binds",) * 4), store).answer is None  # the chain ends
    assert execute(Program("first", ("e3", "e2")), store).answer == "e2"
    assert execute(Program("last", ("e3", "e2")), store).answer == "e3"
    assert execute(Program("next", ("e1",)), store).answer == "e2"
    assert execute(Program("previous", ("e2",)), store).answer == "e1"
    assert execute(Program("count", ("Ann",), ("parent",)), store).answer == "1"
    # Ann -parent-> Bob <-child- Cid: "~child" must be read as "parent" before composing.
    rules = keep(RuleBase(), inverse("parent", "child"), compose("parent", "parent", "grandparent"))
    result = execute(Program("relate", ("Ann", "Cid")), store, rules)
    assert result.answer == "grandparent", str(result)
    assert result.steps == len(result.trace) - 1 == 3  # path, invert, compose
    assert "compose parent ∘ parent = grandparent" in str(result)
    assert execute(Program("relate", ("Ann", "Cid")), store).answer is None  # no rules, no answer


def test_executor_derives_with_rules_and_knowledge_and_induces_new_words():
    store = Store.from_tokens("o1 has crimson . o2 has dax . o2 has blue . o2 has cube . dax same-kind red .".split())
    rules = keep(RuleBase(), compose("has", "synonym", "has"), symmetric("synonym"), fact("synonym", "red", "crimson"),
                 fact("same-kind", "blue", "red"), fact("synonym", "blue", "azure"), fact("synonym", "cube", "block"))
    ex = Executor(store, rules)
    assert ex.holds("o1", "has", "red") and not ex.holds("o1", "has", "blue")
    # "dax": one example (o2), and a metaconcept fact that makes it a colour -> blue.
    o3 = Store.from_tokens("o2 has dax . o2 has blue . o2 has cube . dax same-kind red . o3 has azure .".split())
    assert execute(Program("holds", ("o3", "dax"), ("has",)), o3, rules).answer == "yes"
    # Without it the example cannot tell colour from shape: two candidates, the first is a guess.
    plain = Store.from_tokens("o2 has dax . o2 has blue . o2 has cube . o3 has block .".split())
    result = execute(Program("holds", ("o3", "dax"), ("has",)), plain, rules)
    assert result.answer == "no" and "candidates ['blue', 'cube']" in str(result)  # guessed blue; it was cube
    with_meta = Store.from_tokens("o2 has dax . o2 has blue . o2 has cube . dax is-a shape . o3 has block .".split())
    rules = keep(rules, fact("is-a", "cube", "shape"))
    assert execute(Program("holds", ("o3", "dax"), ("has",)), with_meta, rules).answer == "yes"


# ----------------------------------------------------------------------------- rules


def tiny_world_stores(n: int = 12, seed: int = 0) -> list[Store]:
    """Complete little worlds: three generations (parent and grandparent stated), and events."""
    rng = np.random.default_rng(seed)
    stores = []
    for _ in range(n):
        people = [f"p{i}" for i in rng.permutation(20)[:7]]
        root, kids, grandkids = people[0], people[1:3], people[3:7]
        clauses = [[root, "parent", k] for k in kids]
        clauses += [[kids[i // 2], "parent", g] for i, g in enumerate(grandkids)]
        clauses += [[root, "grandparent", g] for g in grandkids]
        events = [f"e{i}" for i in rng.permutation(30)[:6]]
        tokens = [t for c in clauses for t in c + ["."]] + events
        stores.append(Store.from_tokens(tokens))
    return stores


def test_hypotheses_on_a_tiny_world_keep_the_true_rules_and_drop_a_false_one():
    stores = tiny_world_stores()
    proposed = propose(stores[0], rng=np.random.default_rng(0))
    assert compose("parent", "parent", "grandparent") in proposed and transitive("before") in proposed
    false = [compose("parent", "parent", "parent"), symmetric("parent"), compose("before", "~before", "before")]
    rules = RuleLearner(seed=0).fit(stores, rounds=1, epochs=3, extra=false)
    kept = set(rules.kept())
    assert compose("parent", "parent", "grandparent") in kept
    assert transitive("before") in kept
    assert not kept & set(false), [str(h) for h in kept & set(false)]
    text = str(rules)
    assert "parent ∘ parent = grandparent" in text and "before is transitive" in text
    assert compare_rules(kept, kept | {symmetric("sibling")})["recall"] < 1.0


def test_true_rules_of_the_generators():
    temporal = TemporalTask(n_eval=2, test_lengths=(64,)).true_rules()
    assert transitive("before") in temporal and compose("follows", "follows", "before") in temporal
    assert not any(h.args[-1] == "follows" for h in temporal)  # follows is not transitive
    kin = KinshipTask(n_eval=2).true_rules()
    assert compose("parent", "parent", "grandparent") in kin and symmetric("sibling") in kin
    assert compose("child", "cousin", "nephew") in kin and compose("sibling", "sibling", "sibling") in kin
    concepts = ConceptsTask(n_eval=2).true_rules()
    assert compose("has", "synonym", "has") in concepts and symmetric("same-kind") in concepts
    assert transitive("same-kind") not in concepts  # red ~ green ~ crimson, but red is crimson
    world = Store.from_tokens("a parent b . b parent c . a grandparent c .".split())
    assert rules_true_in(world) >= {compose("parent", "parent", "grandparent")}


def test_kinship_algebra_matches_random_family_trees():
    rng = np.random.default_rng(0)
    for _ in range(20):
        tree = FamilyTree(rng)
        x = tree.start
        for r1 in KIN:
            for y in tree.relatives(x, r1)[:2]:
                assert tree.relation(x, y) == r1
                for r2 in KIN:
                    r3 = kin_compose(r1, r2)
                    for z in tree.relatives(y, r2)[:3]:
                        if z != x and r3 is not None:
                            assert tree.relation(x, z) == r3, (KIN_NAMES[r1], KIN_NAMES[r2])


# ----------------------------------------------------------------------------- learning by reinforcement


def test_reinforce_improves_reward_on_a_small_seeded_run():
    task = HopsTask(n_eval=2)
    items = answered(task.episodes(40, 0))
    s2 = System2(seed=0)
    s2.learn_rules(items)
    rewards = s2.train(items, epochs=2)
    assert np.mean(rewards[-60:]) > np.mean(rewards[:60]) + 0.2, (np.mean(rewards[:60]), np.mean(rewards[-60:]))
    tests = answered(task.episodes(5, 1, "hops6"))
    assert all(s2.answer(i.context, i.query).answer == i.answer for i in tests)
    assert "> " in s2.policy.describe() and "binds" in s2.policy.describe()


def test_query_signatures_collapse_repeated_operators():
    entities = {"a", "b"}
    assert parse_query([">", ">", ">", "a"], entities.__contains__) == ((">", "E"), ["a"], [">", ">", ">"])
    assert parse_query(["first", "a", "b"], entities.__contains__)[0] == ("first", "E", "E")


def synthetic_choices(n: int, seed: int) -> list[Choice]:
    """System 1 right with probability = its confidence; System 2 always right in 6 steps."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        confidence = float(rng.random())
        out.append(Choice(confidence, bool(rng.random() < confidence), True, 6, 3))
    return out


def test_the_controller_respects_cost():
    train_set, test_set = synthetic_choices(400, 0), synthetic_choices(400, 1)
    cheap = Controller(0.001).fit(train_set).score(test_set)
    dear = Controller(0.5).fit(train_set).score(test_set)
    assert cheap["mean_steps"] > dear["mean_steps"] and cheap["accuracy"] > dear["accuracy"]
    assert cheap["deliberate"] > 0.8 and dear["deliberate"] < 0.2
    curve = tradeoff_curve(train_set, test_set, costs=(0.0, 0.02, 0.08, 1.0))
    steps = [point["mean_steps"] for point in curve]
    assert steps == sorted(steps, reverse=True) and steps[0] > steps[-1]


def test_the_controller_separates_queries_by_length_when_that_is_the_only_signal():
    """System 1 at chance, System 2 right in `length` steps: at a cost where only 1-step queries
    pay (1 - 0.6 > 0 > 1 - 2 x 0.6) the controller deliberates on exactly those."""
    rng = np.random.default_rng(0)
    def choices(n):
        return [Choice(0.05, False, True, int(h), int(h) + 1) for h in rng.integers(1, 3, n)]
    train_set, test_set = choices(400), choices(400)
    controller = Controller(0.6).fit(train_set)
    assert all(controller.decide(c) == (c.slow_steps == 1) for c in test_set)
    assert Controller(0.1).fit(train_set).score(test_set)["deliberate"] == 1.0
    assert Controller(1.5).fit(train_set).score(test_set)["deliberate"] == 0.0


def test_budget_curve_runs_from_system1_alone_to_system2_alone():
    test_set = [Choice(0.5, fast, slow, steps, 3) for fast, slow, steps in
                [(True, True, 1), (False, True, 2), (False, True, 4), (True, False, 4), (False, False, 3)]]
    curve = budget_curve(test_set)
    assert [p["budget"] for p in curve] == [0, 1, 2, 3, 4]
    assert curve[0]["accuracy"] == 2 / 5 and curve[0]["mean_steps"] == 0  # nobody finishes: System 1 alone
    assert curve[-1]["accuracy"] == 3 / 5 and curve[-1]["finished"] == 1.0  # everybody finishes: System 2 alone
    assert curve[-1]["mean_steps"] == (1 + 2 + 4 + 4 + 3) / 5
    assert curve[2]["accuracy"] == 3 / 5 and curve[2]["mean_steps"] == (1 + 2 + 2 + 2 + 2) / 5
    steps = [p["mean_steps"] for p in curve]
    assert steps == sorted(steps)


# ----------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("name", sorted(SMALL))
def test_generators_are_deterministic_by_seed_and_registered(name):
    assert TASKS[name] is type(build_task(name, SMALL[name]))
    task = build_task(name, SMALL[name])
    a = task.train_batch(torch.Generator().manual_seed(3), 4)
    b = task.train_batch(torch.Generator().manual_seed(3), 4)
    c = task.train_batch(torch.Generator().manual_seed(4), 4)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.targets, c.targets) or not torch.equal(a.inputs, c.inputs)
    for s in task.slices:
        assert [e.tokens for e in task.episodes(3, 9, s)] == [e.tokens for e in task.episodes(3, 9, s)]
    # The label sits at the answer: the position before it predicts it, nothing else has a loss.
    episodes = task.episodes(4, 5)
    batch = task.encode(episodes)
    for row, episode in enumerate(episodes):
        targets = batch.targets[row]
        assert int((targets != IGNORE).sum()) == len(episode)
        for _, answer in episode.queries:
            assert task.vocab[int(targets[answer - 1])] == episode.tokens[answer]


def test_hops_and_temporal_answers_are_correct():
    hops = HopsTask(n_eval=2)
    for s in ("hops1", "hops6"):
        for e in hops.episodes(5, 0, s):
            store = Store.from_tokens(e.context)
            for i in range(len(e)):
                *ops, start = e.query(i)
                node = start
                for _ in ops:
                    (node,) = store.lookup("binds", node)
                assert node == e.answer(i) and len(ops) == int(s[4:])
    temporal = TemporalTask(n_eval=2, test_lengths=(64,))
    for e in temporal.episodes(5, 0, "L64"):
        order = {t: i for i, t in enumerate(e.context)}
        assert len(order) == 65  # 64 distinct events and "."
        for i in range(len(e)):
            q = e.query(i)
            if q[0] == "first":
                assert e.answer(i) == min(q[1:], key=order.get)
            else:
                assert order[e.answer(i)] == order[q[1]] + 1


def test_kinship_answers_follow_the_true_rules():
    task = KinshipTask(n_eval=2)
    rules = keep(RuleBase(), *task.true_rules())
    for s in ("len2", "len5", "len10"):
        for e in task.episodes(4, 0, s):
            (q,) = [e.query(i) for i in range(len(e))]
            result = execute(Program("relate", tuple(q)), Store.from_tokens(e.context), rules)
            assert result.answer == e.answer(0), str(result)


def test_concept_answers_are_correct():
    task = ConceptsTask(n_eval=2)
    knowledge = [fact(f.rel, f.a, f.b) for f in task.world().facts if f.rel != "has"]
    rules = keep(RuleBase(), *task.true_rules(), *knowledge)
    for s in ("attr", "meta", "fewshot+meta"):
        for e in task.episodes(6, 0, s):
            store = Store.from_tokens(e.context)
            for i in range(len(e)):
                q, answer = e.query(i), e.answer(i)
                if s == "meta":
                    assert answer == ("yes" if meta_truth(q[1], q[0], q[2]) else "no")
                    assert concept_of(q[0]) in ("yellow", "cone", "glass")  # held-out words
                elif s == "attr":
                    said = {concept_of(w) for w in store.lookup("has", q[0])}
                    assert answer == ("yes" if concept_of(q[2]) in said else "no")
                else:  # the metaconcept fact makes the new word decidable
                    got = execute(Program("holds", (q[0], q[2]), ("has",)), store, rules).answer
                    assert got == answer


def test_symbolic_tasks_train_in_the_harness():
    config = RunConfig.from_dict({
        "task": {"name": "kinship", "options": {"n_eval": 3}},
        "model": {"mixer": "inverted", "d_model": 32, "n_layers": 1, "mlp_ratio": 2,
                  "mixer_options": {"n_units": 8, "chunk_size": 16}},
        "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "eval_every": 3, "checkpoint_every": 3},
    })
    _, result = train(config, progress=False, device="cpu")
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0 and "accuracy@len10" in result["metrics"]


# ----------------------------------------------------------------------------- concepts from System 1


def test_codebook_and_inventory_label_concepts():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 5
    x = np.concatenate([centres[i] + rng.normal(size=(30, 3)) * 0.1 for i in range(3)])
    tokens = ["red"] * 30 + ["cube"] * 30 + ["metal"] * 30
    codes = Codebook(3, seed=0).fit(x).assign(x)
    inventory = ConceptInventory()
    for code, token in zip(codes, tokens):
        inventory.add(int(code), token)
    assert inventory.purity({"red": "color", "cube": "shape", "metal": "material"}) == 1.0
    assert {inventory.label(c) for c in inventory.members} == {"red", "cube", "metal"}
    inventory.add(inventory.concept_of("red"), "crimson", 5)
    assert ("alike", "crimson", "red") in grounded_facts(inventory)


def test_unit_inventory_reads_the_inverted_mixer():
    task = HopsTask(n_eval=2)
    from workbench.config import ModelConfig

    model = Model(ModelConfig(mixer="inverted", d_model=32, mixer_options={"n_units": 8, "n_pools": 2}), task.io)
    inventory = unit_inventory(model, task, task.episodes(3, 0), by_pool=True)
    assert inventory.members and all(0 <= c < 2 for c in inventory.members)
    assert "s" in inventory.describe()


def test_system2_does_not_depend_on_string_hashing():
    """Python salts str hashes per process (PYTHONHASHSEED): iterating a set of names in hash order
    and drawing random numbers per item made System 2 differ between runs of the same seed."""
    import os
    import subprocess
    import sys

    script = (
        "import hashlib, json\n"
        "from workbench.symbolic.experiment import answered\n"
        "from workbench.symbolic.policy import System2\n"
        "from workbench.symbolic.tasks import SYMBOLIC_TASKS\n"
        "task = SYMBOLIC_TASKS['concepts'](n_eval=2)\n"
        "items = answered(task.episodes(60, [0, 1]))\n"
        "s2 = System2(seed=0)\n"
        "rules = s2.learn_rules(items)\n"
        "rewards = s2.train(items, epochs=1)\n"
        "beliefs = sorted((str(h), round(b.p, 9)) for h, b in rules.beliefs.items())\n"
        "print(hashlib.md5(json.dumps([beliefs, rewards]).encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests
