"""System 2 on CLUTRR-style kinship: learned rules, learned proof search, facts read from System 1.

``run_kinship(budget, seeds, results)`` does, per seed:

1. generates training stories (chains of 2-3 facts; System 1 also trains on single-hop stories,
   k = 1, the asked relation stated among the same noise) and test stories for every chain length
   k = 1..10, all three noise kinds mixed in (``clutrr``);
2. trains System 1 (the inverted mixer, ``workbench.model``) by backprop on the story tokens and the
   answers, jointly with a fact extractor on its hidden states whose loss flows into System 1 too
   (``grounding``); and the symbolic-free
   baseline, a two-layer transformer of about the parameters of System 1 + extractor + policy,
   trained on the same stories for as many steps;
3. induces rules from the training stories as System 1 reads them (``induction``), and trains the
   proof policy by REINFORCE on them (``proof``; its actions include ``chart``, composing a walked
   path in every bracketing with the induced rules, ``chart``);
4. evaluates per k: System 2 (trained policy: a policy-guided depth-first proof search that tries
   the policy's next alternative where a choice leads nowhere and backtracks from dead ends, within
   ``ATTEMPTS`` times one proof's step limit, which grows with the story; every step counts), a
   single greedy proof, the untrained policy, precision-threshold rules,
   the oracle parser (facts from the hand parser, rules induced from them), System 1 alone and the
   transformer; and the dual-process controller (System 1 when its confidence clears a threshold,
   else System 2) over a sweep of thresholds on the whole test mix (k = 1..10): accuracy, mean
   deliberation steps and the share of queries deliberated.

It writes ``<results>/system2-kinship-<budget>.json``: mean and std over seeds per row and slice,
the reward curves, the rules, a proof step by step and failure cases (for notebook 07).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.config import ConfigError
from workbench.symbolic.clutrr import Story, make_stories, oracle_parse
from workbench.symbolic.grounding import answer, extract, parameters, train_reader, train_system1
from workbench.symbolic.induction import induce
from workbench.symbolic.proof import Episode, Problem, ProofPolicy, evaluate, evaluate_search, train_policy

TEST_KS = tuple(range(1, 11))  # k = 1: one fact states the asked relation (System 1's single-hop slice)
ATTEMPTS = 9  # search budget in single-proof step limits (every System 2 row alike; the earlier greedy + 8 retries)
THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01)
# System 1 is the one-layer inverted mixer with content-only reads: read by recency as well (its default), it
# answers single-hop stories mostly from the last fact told. It trains jointly with the fact extractor
# (``grounding.train_system1(facts=...)``) so the facts stay readable (docs/changelog.md has the history).
# The transformer baseline trains on the same stories for as many steps.
SYSTEM1_OPTIONS = {"read_topk": 16, "ordinal_read": False}
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"n_train": 200, "n_single": 66, "reader_steps": 12, "d_model": 16, "fact_weight": 1.0,
              "episodes": 128, "n_test": 3},
    "demo": {"n_train": 3000, "n_single": 3000, "reader_steps": 1000, "d_model": 64, "fact_weight": 1.0,
             "episodes": 15000, "n_test": 100},
    "full": {"n_train": 5000, "n_single": 10_000, "reader_steps": 3000, "d_model": 64, "fact_weight": 1.0,
             "episodes": 30000, "n_test": 500},
}
ROWS = ("system2", "system2-single-proof", "system2-untrained", "system2-threshold-rules", "system2-oracle-parser",
        "system1-inverted", "transformer-2L")


def _problems(stories: list[Story], facts: list[list]) -> list[Problem]:
    return [Problem(f, s.query, s.answer, s.k) for s, f in zip(stories, facts)]


def _accuracy(stories: list[Story], answers: list[str | None]) -> dict[int, float]:
    return {k: float(np.mean([a == s.answer for s, a in zip(stories, answers) if s.k == k])) for k in TEST_KS}


def _steps(stories: list[Story], episodes: list[Episode]) -> dict[int, float]:
    return {k: float(np.mean([e.n_steps for s, e in zip(stories, episodes) if s.k == k])) for k in TEST_KS}


def controller_curve(fast: list[str], confidence: list[float], slow: list[Episode], truth: list[str]) -> list[dict]:
    """Answer with System 1 where its confidence clears the threshold, else deliberate (System 2)."""
    curve = []
    for threshold in THRESHOLDS:
        deliberate = [c < threshold for c in confidence]
        answers = [e.answer if d else f for f, e, d in zip(fast, slow, deliberate)]
        curve.append({"threshold": threshold,
                      "accuracy": float(np.mean([a == t for a, t in zip(answers, truth)])),
                      "mean_steps": float(np.mean([e.n_steps if d else 0 for e, d in zip(slow, deliberate)])),
                      "deliberated": float(np.mean(deliberate))})
    return curve


def run_seed(budget: str, seed: int, progress: bool = False) -> dict[str, Any]:
    cfg = BUDGETS[budget]
    torch.manual_seed(seed)
    say = print if progress else (lambda *a, **k: None)
    t0 = time.time()
    train = make_stories(10_000 * seed + 1, cfg["n_train"], (2, 3))
    reader_train = train + make_stories(10_000 * seed + 2, cfg["n_single"], (1,))
    test = [s for k in TEST_KS for s in make_stories(10_000 * seed + 100 + k, cfg["n_test"], (k,))]
    say(f"[seed {seed}] stories {time.time() - t0:.0f}s")
    system1, extractor = train_system1(reader_train, cfg["d_model"], cfg["reader_steps"], 32, seed, cfg["fact_weight"],
                                       options=SYSTEM1_OPTIONS)
    policy = ProofPolicy()
    untrained = ProofPolicy()
    untrained.load_state_dict(policy.state_dict())
    size = parameters(system1, extractor, policy)
    neural = train_reader(reader_train, "transformer", cfg["d_model"], 2, cfg["reader_steps"], 32, seed)
    say(f"[seed {seed}] System 1, extractor, transformer {time.time() - t0:.0f}s")

    train_facts = extract(system1, extractor, train)
    rules = induce([(f, s.query, s.answer) for s, f in zip(train, train_facts)])
    oracle_rules = induce([(oracle_parse(s.tokens()), s.query, s.answer) for s in train])
    curve = train_policy(policy, rules, _problems(train, train_facts), cfg["episodes"], seed, batch=64, lr=2e-3,
                         entropy=0.005)
    say(f"[seed {seed}] rules and policy {time.time() - t0:.0f}s")

    test_facts = extract(system1, extractor, test)
    problems = _problems(test, test_facts)
    oracle_problems = _problems(test, [oracle_parse(s.tokens()) for s in test])
    episodes = {
        "system2": evaluate_search(policy, rules, problems, ATTEMPTS),
        "system2-single-proof": evaluate(policy, rules, problems),
        "system2-untrained": evaluate_search(untrained, rules, problems, ATTEMPTS),
        "system2-threshold-rules": evaluate_search(policy, rules.thresholded(), problems, ATTEMPTS),
        "system2-oracle-parser": evaluate_search(policy, oracle_rules, oracle_problems, ATTEMPTS),
    }
    fast, confidence = answer(system1, test)
    neural_answers, _ = answer(neural, test)
    accuracy = {name: _accuracy(test, [e.answer for e in eps]) for name, eps in episodes.items()}
    accuracy["system1-inverted"] = _accuracy(test, fast)
    accuracy["transformer-2L"] = _accuracy(test, neural_answers)
    steps = {name: _steps(test, eps) for name, eps in episodes.items()}
    extraction = float(np.mean([f[:3] == g for fs, s in zip(test_facts, test) for f, g in zip(fs, s.facts)]))
    say(f"[seed {seed}] evaluated {time.time() - t0:.0f}s")
    sys2 = episodes["system2"]
    right = [(s, e) for s, e in zip(test, sys2) if e.correct and s.k >= 4]
    wrong = [(s, e) for s, e in zip(test, sys2) if not e.correct]
    return {
        "seed": seed, "accuracy": accuracy, "steps": steps, "reward_curve": curve,
        "controller": controller_curve(fast, confidence, sys2, [s.answer for s in test]),
        "parameters": {"system1+extractor+policy": size, "transformer-2L": parameters(neural),
                       "system1": parameters(system1), "extractor": parameters(extractor),
                       "policy": parameters(policy)},
        "extraction_accuracy": extraction,
        "rules": {"size": rules.size(), "listing": rules.listing(30), "threshold_size": rules.thresholded().size()},
        "diagnostics": {str(k): {"left_fold_named": float(np.mean([s.left_fold_named for s in test if s.k == k])),
                                 "needs_invention": float(np.mean([s.needs_invention for s in test if s.k == k]))}
                        for k in TEST_KS},
        "examples": {"proof": [_example(s, e) for s, e in right[:2]],
                     "failures": [_example(s, e) for s, e in wrong[:6]]},
        "seconds": time.time() - t0,
    }


def _example(story: Story, episode: Episode) -> dict[str, Any]:
    return {"k": story.k, "noise": story.noise, "story": " ".join(story.tokens()), "answer": story.answer,
            "predicted": episode.answer, "trace": episode.trace}


def _stat(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(budget: str, runs: list[dict[str, Any]], device: str) -> dict[str, Any]:
    slices = [str(k) for k in TEST_KS]
    rows = []
    for name in ROWS:
        row: dict[str, Any] = {"system": name,
                               "accuracy": {str(k): _stat([r["accuracy"][name][k] for r in runs]) for k in TEST_KS}}
        if name in runs[0]["steps"]:
            row["steps"] = {str(k): _stat([r["steps"][name][k] for r in runs]) for k in TEST_KS}
        rows.append(row)
    controller = [{"threshold": p["threshold"], **{key: _stat([r["controller"][i][key] for r in runs])
                                                   for key in ("accuracy", "mean_steps", "deliberated")}}
                  for i, p in enumerate(runs[0]["controller"])]
    return {"budget": budget, "seeds": len(runs), "device": device, "test_per_slice": BUDGETS[budget]["n_test"],
            "train_slices": ["2", "3"], "system1_train_slices": ["1", "2", "3"], "slices": slices, "rows": rows, "controller": controller,
            "extraction_accuracy": _stat([r["extraction_accuracy"] for r in runs]),
            "parameters": runs[0]["parameters"], "runs": runs}


def _run_seed_one_thread(budget: str, seed: int, progress: bool) -> dict[str, Any]:
    torch.set_num_threads(1)
    return run_seed(budget, seed, progress)


def run_kinship(budget: str, seeds: int, results: Path, progress: bool = False, jobs: int = 1) -> dict[str, Any]:
    """Every seed (``jobs`` worker processes, one thread each), summarised and written as JSON."""
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {sorted(BUDGETS)}")
    if seeds < 1 or jobs < 1:
        raise ConfigError(f"seeds and jobs must be at least 1, got {seeds} and {jobs}")
    torch.set_num_threads(1)
    if jobs == 1:
        runs = [run_seed(budget, seed, progress) for seed in range(seeds)]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(jobs, seeds), mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(_run_seed_one_thread, [budget] * seeds, range(seeds), [progress] * seeds))
    summary = summarise(budget, runs, f"cpu ({torch.get_num_threads()} thread)")
    results.mkdir(parents=True, exist_ok=True)
    (results / f"system2-kinship-{budget}.json").write_text(json.dumps(summary, indent=1))
    return summary


def kinship_table(summary: dict[str, Any], brief: bool = False) -> str:
    """Accuracy by chain length k for every row (mean steps in brackets for System 2 rows), mean +- std.

    ``brief``: only k = 1 (System 1's slice, where present) and the lengths the targets name (k = 4, 6, 10),
    no steps; the controller's ends and up to three of the points between them (that deliberate on some queries
    but not all), spread over the sweep."""
    slices = summary["slices"]
    if brief:
        slices = [k for k in slices if str(k) in {"1", "4", "6", "10"}] or slices
    lines = ["| system | " + " | ".join(f"k={k}" for k in slices) + " |", "|---|" + "---|" * len(slices)]
    for row in summary["rows"]:
        if brief and row["system"] == "system2-single-proof":  # the README's table: the search and its baselines
            continue
        cells = []
        for k in slices:
            a = row["accuracy"][k]
            text = f"{a['mean']:.2f}" + (f" ± {a['std']:.2f}" if summary["seeds"] > 1 else "")
            if "steps" in row and not brief:
                text += f" ({row['steps'][k]['mean']:.1f})"
            cells.append(text)
        lines.append(f"| {row['system']} | " + " | ".join(cells) + " |")
    trained = "trained on k = 2-3" + (" (System 1 also on k = 1)" if "1" in summary["slices"] else "")
    if brief:
        inner = [p for p in summary["controller"] if 0 < p["deliberated"]["mean"] < 1]
        shown = [inner[i] for i in sorted({round(j * (len(inner) - 1) / 2) for j in range(3)})] if inner else []
        fast, slow = summary["controller"][0], summary["controller"][-1]
        points = "; ".join([f"all fast {fast['accuracy']['mean']:.2f} @ {fast['mean_steps']['mean']:.1f}"]
                           + [f"{p['threshold']:g}: {p['accuracy']['mean']:.2f} @ {p['mean_steps']['mean']:.1f}, "
                              f"{p['deliberated']['mean']:.0%}" for p in shown]
                           + [f"all slow {slow['accuracy']['mean']:.2f} @ {slow['mean_steps']['mean']:.1f}"])
        return "\n".join(lines + ["", f"Controller (System 1 if confident, else System 2; threshold: accuracy @ "
                                       f"steps, deliberated; {len(shown)} of {len(inner)} inner points): {points}. Budget `{summary['budget']}`, {summary['seeds']} "
                                       f"seed(s), {summary['test_per_slice']} test stories per k, {trained}."])
    points = ", ".join(f"{p['threshold']:g}: {p['accuracy']['mean']:.3f} @ {p['mean_steps']['mean']:.1f} "
                       f"({p['deliberated']['mean']:.1%})" for p in summary["controller"])
    params = summary["parameters"]
    lines += ["", f"Controller (System 1 if its confidence >= threshold, else System 2), threshold: accuracy @ "
                  f"mean steps (share deliberated) over all k: {points}.",
              f"Fact extraction from System 1's states: {summary['extraction_accuracy']['mean']:.4f} of facts exact. "
              f"Parameters: System 1 + extractor + policy {params['system1+extractor+policy']:,}, "
              f"transformer-2L {params['transformer-2L']:,}.",
              f"Budget `{summary['budget']}`, {summary['seeds']} seed(s), {summary['test_per_slice']} test stories "
              f"per k, {trained}; in brackets mean proof steps; measured on {summary['device']}."]
    return "\n".join(lines)

