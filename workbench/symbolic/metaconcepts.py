"""Metaconcepts grounded in System 1, learned by System 2 through reinforcement (issue 19).

The experiment, per seed:

1. draw a concept world (``metaconcept_world``): perceptual words seen in observations,
   abstract words known through ``is-a`` facts, held-out words in no fact or training query;
2. train **System 1** (a small ``workbench.model`` with a seeking or inverted mixer) by backprop on
   the token sequences: observations (``looks ? w yes|no``), facts and the training queries;
3. train an **extractor** (a small MLP, backprop) on System 1's hidden state at a word asked about
   an instance to say whether the word applies; read every perceptual word's denotation over a
   fixed set of probe instances with it - what System 2 knows about a word is what System 1
   grounded, held-out words included;
4. train the **proof policy** (``metaconcept_policy``) by REINFORCE on the training queries, and
   test it on held-out metaconcept queries and on is-a chains of depth 1-6 (trained on 1-2).

Rows beside it: the same policy on the generator's true denotations (oracle facts), an untrained
policy, the simplest fixed rule (a depth-2 proof, "no" otherwise), "always no", and System 1
alone answering the query tokens directly. ``python -m workbench.symbolic.metaconcepts --budget
demo --seeds 1 --results results`` writes ``results/system2-metaconcepts-<budget>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from workbench.config import ConfigError, ModelConfig
from workbench.model import IGNORE, Model, TaskIO
from workbench.provenance import git_commit
from workbench.symbolic.metaconcept_policy import (
    ConceptProver,
    Policy,
    TrainSettings,
    always_no_chooser,
    evaluate,
    explain,
    fixed_depth_chooser,
    policy_chooser,
    train_best_policy,
)
from workbench.symbolic.metaconcept_world import (
    ASK,
    HELDOUT_SLICES,
    ISA,
    NO,
    STOP,
    TEST_ISA_DEPTHS,
    YES,
    ConceptWorld,
    Query,
    evaluation_slices,
    make_world,
    probe_instances,
    query_sequence,
    training_queries,
)


@dataclass(frozen=True)
class Budget:
    system1_steps: int  # backprop steps of System 1
    extractor_steps: int  # backprop steps of the extractor
    policy_iterations: int  # REINFORCE updates
    n_train_queries: int  # the training split's queries (a third per kind)
    n_test: int  # queries per test slice


BUDGETS = {
    "smoke": Budget(system1_steps=60, extractor_steps=100, policy_iterations=200, n_train_queries=300, n_test=40),
    "demo": Budget(system1_steps=800, extractor_steps=300, policy_iterations=1200, n_train_queries=600, n_test=200),
    "full": Budget(system1_steps=2200, extractor_steps=400, policy_iterations=1500, n_train_queries=900, n_test=500),
}
SYSTEM1 = ModelConfig(mixer="seeking", d_model=64, n_layers=2, mixer_options={"n_units": 16, "n_heads": 2})
SYSTEM1_LR = 6e-3
COMPETENT_LOSS = 0.01  # System 1 stops early once its mean loss over 50 steps is below this (competent)
QUESTIONS_PER_OBSERVATION = 6  # more answers per sequence: System 1 learns its words faster per step
BATCH_SIZE = 64
POLICY_RESTARTS = 3  # REINFORCE runs per prover; the one with the best training reward is kept
MAX_STEPS = 16  # a proof that has not answered after this many actions counts as wrong
TARGETS = {"heldout metaconcepts": 0.90, "is-a depth 6": 0.95}
ROWS = ("system2 (S1-grounded)", "system2 (oracle facts)", "system2 untrained (S1-grounded)",
        "fixed depth-2 proof", "always no", "system1 alone")
SLICES = HELDOUT_SLICES + tuple(f"is-a depth {d}" for d in TEST_ISA_DEPTHS)


# ---------------------------------------------------------------------------------- System 1


class Vocabulary:
    def __init__(self, world: ConceptWorld) -> None:
        self.index = {t: i for i, t in enumerate(world.vocab)}

    def encode(self, rows: list[list[str]]) -> torch.Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor([[self.index[t] for t in r] + [self.index[STOP]] * (width - len(r)) for r in rows])


def _language_item(world: ConceptWorld, train: list[Query], rng: np.random.Generator) -> tuple[list[str], int, str]:
    """A fact ``x is-a y .`` (target: y after ``x is-a``) or a training query (target: the answer)."""
    facts = world.facts()
    if rng.random() < 0.3:
        fact = facts[int(rng.integers(len(facts)))]
        return fact + [STOP], 1, fact[2]
    query = train[int(rng.integers(len(train)))]
    return query_sequence(query), 3, query_sequence(query)[4]


def system1_batch(world: ConceptWorld, vocab: Vocabulary, train: list[Query], rng: np.random.Generator,
                  size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Observation then one language item per row; targets at every answer (the rest IGNORE)."""
    rows, targets = [], []
    for _ in range(size):
        observation = world.observation(rng, QUESTIONS_PER_OBSERVATION)
        item, at, answer = _language_item(world, train, rng)
        row = observation + item
        target = [IGNORE] * len(row)
        for i, token in enumerate(observation):
            if token in (YES, NO):
                target[i - 1] = vocab.index[token]
        target[len(observation) + at] = vocab.index[answer]
        rows.append(row)
        targets.append(target)
    return vocab.encode(rows), torch.tensor(targets)


def train_system1(world: ConceptWorld, train: list[Query], steps: int, seed: int,
                  progress: bool = False) -> tuple[Model, Vocabulary, list[float]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 11])
    vocab = Vocabulary(world)
    model = Model(SYSTEM1, TaskIO("tokens", "lm", vocab_size=len(world.vocab)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=SYSTEM1_LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=SYSTEM1_LR, total_steps=steps, pct_start=0.1)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="system 1", disable=not progress, leave=False):
        inputs, targets = system1_batch(world, vocab, train, rng, BATCH_SIZE)
        loss = model.loss(inputs, targets)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if len(losses) >= 50 and np.mean(losses[-50:]) < COMPETENT_LOSS:
            break  # competent on its own training task: more steps buy nothing
    model.eval()
    return model, vocab, losses


@torch.no_grad()
def _answer_yes(model: Model, vocab: Vocabulary, rows: list[list[str]]) -> np.ndarray:
    """System 1's own answer at each row's last token: does it put "yes" above "no"?"""
    out = []
    for start in range(0, len(rows), 512):
        logits = model(vocab.encode(rows[start:start + 512]))[:, -1]
        out.append((logits[:, vocab.index[YES]] > logits[:, vocab.index[NO]]).numpy())
    return np.concatenate(out)


def system1_alone(model: Model, vocab: Vocabulary, world: ConceptWorld, queries: list[Query],
                  rng: np.random.Generator) -> float:
    """System 1 answering ``? kind a b`` directly, after an observation as in training."""
    rows = [world.observation(rng, QUESTIONS_PER_OBSERVATION) + q.tokens() for q in queries]
    return float(np.mean(_answer_yes(model, vocab, rows) == np.array([q.label for q in queries])))


# ---------------------------------------------------------------------------------- extractor


class Extractor(nn.Module):
    """Hidden state of System 1 at a word asked about an instance -> logit that the word applies."""

    def __init__(self, d_model: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(-1)


@torch.no_grad()
def _states_at_words(model: Model, vocab: Vocabulary, rows: list[list[str]]) -> torch.Tensor:
    """System 1's final hidden state at the last token of each ``looks ? w`` row."""
    out = []
    for start in range(0, len(rows), 1024):
        out.append(model.features(vocab.encode(rows[start:start + 1024]))[:, -1])
    return torch.cat(out)


def _asked(world: ConceptWorld, rng: np.random.Generator, n: int) -> tuple[list[list[str]], np.ndarray, list[str]]:
    """``looks ? w`` rows, half of them with a word that applies, and the answers."""
    rows, labels, words = [], [], []
    for _ in range(n):
        instance = world.sample_instance(rng)
        want = bool(rng.random() < 0.5)
        pool = [w for w in world.perceptual if world.applies(w, instance) == want]
        word = pool[int(rng.integers(len(pool)))]
        rows.append(world.looks(instance, rng) + [ASK, word])
        labels.append(want)
        words.append(word)
    return rows, np.array(labels), words


def train_extractor(model: Model, vocab: Vocabulary, world: ConceptWorld, steps: int, seed: int) -> tuple[Extractor, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 13])
    rows, labels, _ = _asked(world, rng, 4096)
    states, targets = _states_at_words(model, vocab, rows), torch.tensor(labels, dtype=torch.float32)
    extractor = Extractor(model.config.d_model)
    optimizer = torch.optim.Adam(extractor.parameters(), lr=3e-3)
    for _ in range(steps):
        pick = torch.from_numpy(rng.integers(len(rows), size=256))
        loss = nn.functional.binary_cross_entropy_with_logits(extractor(states[pick]), targets[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_rows, test_labels, test_words = _asked(world, rng, 2048)
    with torch.no_grad():
        said = (extractor(_states_at_words(model, vocab, test_rows)) > 0).numpy()
    heldout = np.array([w in world.heldout for w in test_words])
    right = said == test_labels
    return extractor, {"extractor accuracy": float(right.mean()),
                       "extractor accuracy, held-out words": float(right[heldout].mean()) if heldout.any() else None}


@torch.no_grad()
def grounded_profiles(model: Model, vocab: Vocabulary, extractor: Extractor, world: ConceptWorld,
                      probes: list, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every perceptual word's denotation over the probes, as the extractor reads System 1."""
    looks = [world.looks(p, rng) for p in probes]
    words = world.perceptual
    rows = [shown + [ASK, w] for w in words for shown in looks]
    p = torch.sigmoid(extractor(_states_at_words(model, vocab, rows))).numpy().reshape(len(words), len(probes))
    return dict(zip(words, p))


def oracle_profiles(world: ConceptWorld, probes: list) -> dict[str, np.ndarray]:
    return {w: np.array([float(world.applies(w, p)) for p in probes]) for w in world.perceptual}


def parsed_isa_facts(world: ConceptWorld) -> dict[str, str]:
    """The is-a edges as read from the fact sentences ``x is-a y .``."""
    return {fact[0]: fact[2] for fact in world.facts() if len(fact) == 4 and fact[1] == ISA}


# ---------------------------------------------------------------------------------- experiment


def run_seed(budget: Budget, seed: int, progress: bool = False) -> dict[str, Any]:
    """One seed: every row's accuracy and steps per slice, grounding quality, curves and a trace."""
    started = time.perf_counter()
    world = make_world(seed)
    rng = np.random.default_rng([seed, 3])
    train = training_queries(world, budget.n_train_queries, rng)
    slices = evaluation_slices(world, budget.n_test, rng)
    model, vocab, losses = train_system1(world, train, budget.system1_steps, seed, progress)
    extractor, grounding = train_extractor(model, vocab, world, budget.extractor_steps, seed)
    probes = probe_instances(world, rng, per_leaf=3)
    truth = oracle_profiles(world, probes)
    read = grounded_profiles(model, vocab, extractor, world, probes, rng)
    grounding["profile agreement"] = float(np.mean([((read[w] > 0.5) == (truth[w] > 0.5)).mean() for w in truth]))
    kb = parsed_isa_facts(world)
    grounded, oracle = ConceptProver(kb, read), ConceptProver(kb, truth)
    settings = TrainSettings(iterations=budget.policy_iterations, max_steps=MAX_STEPS)
    bar = tqdm(total=2 * POLICY_RESTARTS * settings.iterations, desc=f"policies (seed {seed})", disable=not progress,
               leave=False)
    policy, curve, finals = train_best_policy(grounded, train, settings, seed, POLICY_RESTARTS, bar.update)
    oracle_policy, oracle_curve, oracle_finals = train_best_policy(oracle, train, settings, seed, POLICY_RESTARTS,
                                                                   bar.update)
    bar.close()
    torch.manual_seed(seed)
    untrained = Policy()  # the same architecture and seed, never updated
    choosers = {
        "system2 (S1-grounded)": (grounded, policy_chooser(policy, greedy=True)),
        "system2 (oracle facts)": (oracle, policy_chooser(oracle_policy, greedy=True)),
        "system2 untrained (S1-grounded)": (grounded, policy_chooser(untrained, greedy=True)),
        "fixed depth-2 proof": (grounded, fixed_depth_chooser(2)),
        "always no": (grounded, always_no_chooser()),
    }
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for name, (prover, choose) in choosers.items():
        rows[name] = {s: evaluate(prover, choose, queries, MAX_STEPS) for s, queries in slices.items()}
    rows["system1 alone"] = {s: {"accuracy": system1_alone(model, vocab, world, queries, rng), "steps": 0.0}
                             for s, queries in slices.items()}
    deep = next(q for q in slices["is-a depth 6"] if q.label)
    traces = {"is-a depth 6": (deep, explain(grounded, choosers[ROWS[0]][1], deep, MAX_STEPS))}
    for s in HELDOUT_SLICES:
        query = next(q for q in slices[s] if q.label)
        traces[s] = (query, explain(grounded, choosers[ROWS[0]][1], query, MAX_STEPS))
    return {
        "seed": seed, "seconds": time.perf_counter() - started, "rows": rows, "grounding": grounding,
        "system1 final loss": float(np.mean(losses[-20:])), "system1 steps": len(losses),
        "world": {"categories": len(world.level), "leaves": len(world.leaves), "perceptual words": len(world.meaning),
                  "held-out words": len(world.heldout),
                  "distinct held-out subjects": {s: len({q.subject for q in slices[s]}) for s in HELDOUT_SLICES}},
        "reward curve": curve, "oracle reward curve": oracle_curve,
        "restart final rewards": {"S1-grounded": finals, "oracle": oracle_finals},
        "traces": {s: {"query": asdict(q), "steps": t} for s, (q, t) in traces.items()},
    }


def _mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values),
            "values": [round(v, 4) for v in values]}


def summarize(budget_name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [{"system": name,
             "accuracy": {s: _mean_std([r["rows"][name][s]["accuracy"] for r in runs]) for s in SLICES},
             "steps": {s: _mean_std([r["rows"][name][s]["steps"] for r in runs]) for s in SLICES}} for name in ROWS]
    main = rows[0]["accuracy"]
    heldout = float(np.mean([main[s]["mean"] for s in HELDOUT_SLICES]))
    every_curve = [[point["reward"] for point in r["reward curve"]] for r in runs]
    return {
        "experiment": "system2-metaconcepts", "budget": budget_name, "seeds": len(runs),
        "config": {"budget": asdict(BUDGETS[budget_name]), "system1": asdict(SYSTEM1), "system1_lr": SYSTEM1_LR, "system1_competent_loss": COMPETENT_LOSS,
                   "questions_per_observation": QUESTIONS_PER_OBSERVATION, "batch_size": BATCH_SIZE,
                   "max_proof_steps": MAX_STEPS, "policy": asdict(TrainSettings()), "policy_restarts": POLICY_RESTARTS},
        "slices": list(SLICES), "train_slices": ["synonym (known words)", "same-kind (known words)", "is-a depth 1-2"],
        "rows": rows,
        "targets": {
            "heldout metaconcepts": {"target": TARGETS["heldout metaconcepts"], "value": heldout,
                                     "met": heldout >= TARGETS["heldout metaconcepts"],
                                     "per slice": {s: main[s]["mean"] for s in HELDOUT_SLICES}},
            "is-a depth 6": {"target": TARGETS["is-a depth 6"], "value": main["is-a depth 6"]["mean"],
                             "met": main["is-a depth 6"]["mean"] >= TARGETS["is-a depth 6"]},
        },
        "grounding": {k: _mean_std([r["grounding"][k] for r in runs if r["grounding"][k] is not None])
                      for k in runs[0]["grounding"]},
        "reward curve": {"mean": np.mean(every_curve, axis=0).round(4).tolist(),
                         "std": np.std(every_curve, axis=0).round(4).tolist()},
        "per seed": [{k: v for k, v in r.items() if k not in ("reward curve", "oracle reward curve")} for r in runs],
        "git_commit": git_commit(), "seconds": float(sum(r["seconds"] for r in runs)),
        "device": "cpu", "torch_threads": torch.get_num_threads(),
    }


def run_metaconcepts(budget: str, seeds: int, results: str | Path, progress: bool = False) -> dict[str, Any]:
    """Run ``seeds`` seeds (0 .. seeds-1) at ``budget``; write results/system2-metaconcepts-<budget>.json."""
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 20:
        raise ConfigError(f"seeds must be an integer from 1 to 20, got {seeds!r}")
    results = Path(results)
    if results.exists() and not results.is_dir():
        raise ConfigError(f"results {results} exists and is not a directory")
    runs = [run_seed(BUDGETS[budget], seed, progress) for seed in tqdm(range(seeds), desc="seeds", disable=not progress)]
    summary = summarize(budget, runs)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"system2-metaconcepts-{budget}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def metaconcepts_table(summary: dict[str, Any], brief: bool = False) -> str:
    """Accuracy by slice for every row, mean +- std; ``brief``: the held-out slices and is-a depths 1, 2, 6."""
    slices = summary["slices"]
    if brief:
        slices = [s for s in slices if s.startswith("heldout") or s in ("is-a depth 1", "is-a depth 2", "is-a depth 6")]
    several = summary["rows"][0]["accuracy"][slices[0]]["n"] > 1
    lines = ["| system | " + " | ".join(s.replace("heldout", "held-out") for s in slices) + " |",
             "|---|" + "---|" * len(slices)]
    for row in summary["rows"]:
        cells = [f"{row['accuracy'][s]['mean']:.2f}" + (f" ± {row['accuracy'][s]['std']:.2f}" if several else "")
                 for s in slices]
        lines.append(f"| {row['system']} | " + " | ".join(cells) + " |")
    targets = "; ".join(f"{name} {t['value']:.3f} (target >= {t['target']}: {'met' if t['met'] else 'missed'})"
                        for name, t in summary["targets"].items())
    grounding = summary["grounding"]["extractor accuracy"]["mean"]
    lines += ["", f"{targets}. Extractor reads System 1 right on {grounding:.3f} of questions. Budget "
                  f"`{summary['budget']}`, trained on {', '.join(summary['train_slices'])}."]
    return "\n".join(lines)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, not argparse's usage block
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m workbench.symbolic.metaconcepts", description=__doc__.split("\n")[0])
    parser.add_argument("--budget", default="demo", help="smoke, demo or full")
    parser.add_argument("--seeds", default="1", help="number of seeds (1-20)")
    parser.add_argument("--results", default="results", help="directory for system2-metaconcepts-<budget>.json")
    args = parser.parse_args(argv)
    try:
        try:
            seeds = int(args.seeds)
        except ValueError:
            raise ConfigError(f"seeds must be an integer from 1 to 20, got {args.seeds!r}") from None
        summary = run_metaconcepts(args.budget, seeds, args.results, progress=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for row in summary["rows"]:
        print(f"{row['system']:>32s}  " + "  ".join(f"{s}: {row['accuracy'][s]['mean']:.2f}" for s in SLICES))
    for name, target in summary["targets"].items():
        print(f"target {name}: {target['value']:.3f} (>= {target['target']}) {'met' if target['met'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
