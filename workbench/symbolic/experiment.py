"""System 1 alone vs System 1 + System 2, by hop count / chain length.

``run_system2(budget, seeds, results)`` does, for each task (hops, kinship, temporal, concepts)
and seed:

1. System 1: trains the inverted mixer and transformers with 1 and 2 layers on the training
   distribution (``workbench.train.train``, backprop), then reads their answer and confidence
   on every evaluation slice (hops 1-6, chain lengths 2-10, stream lengths, concept query kinds);
2. System 2: learns rules from answered training episodes and its program policy by REINFORCE
   (no gradient from the task loss); for ``concepts`` it also gets System 1's grounded concepts
   (a k-means codebook over the inverted model's hidden states);
3. the dual-process controller, trained on held-out training-distribution queries at cost
   ``COST`` per deliberation step, then applied per query on every slice; and the accuracy vs
   mean-steps curve over a sweep of costs, and the anytime curve (System 2 capped at a step
   budget, System 1 answers past it);
4. the learned rules, printed, and compared with the generator's true rules;
5. what the notebook (``notebooks/07_system2.py``) shows besides: System 2's reward curve per
   seed (``system2_reward.curves``) and, for ``concepts``, System 1's concept codes with the
   tokens each took (``concepts.codes``).

It writes ``<results>/system2-<budget>.json`` and returns the same dict.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import ConfigError, ModelConfig, RunConfig, TaskConfig, TrainConfig
from workbench.symbolic.concepts import codebook_inventory, grounded_facts
from workbench.symbolic.policy import Answered, Choice, Controller, System2, budget_curve, tradeoff_curve
from workbench.symbolic.rules import compare_rules
from workbench.symbolic.store import Store
from workbench.symbolic.tasks import KINDS, SYMBOLIC_TASKS, SYNONYM, SymbolicTask

SYSTEM1 = {  # label -> (mixer, layers)
    "inverted": ("inverted", 1),
    "transformer-1L": ("transformer", 1),
    "transformer-2L": ("transformer", 2),
}
COST = 0.01  # reward per deliberation step the table's controller pays
COSTS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
BUDGETS: dict[str, dict[str, Any]] = {
    # System 1 training, System 2 data, evaluation size
    "smoke": {"d_model": 32, "steps": 30, "batch_size": 16, "n_train": 60, "n_control": 30, "n_eval": 8, "epochs": 1},
    "demo": {"d_model": 64, "steps": 600, "batch_size": 32, "n_train": 600, "n_control": 200, "n_eval": 50, "epochs": 2},
    "full": {"d_model": 128, "steps": 4000, "batch_size": 64, "n_train": 2000, "n_control": 500, "n_eval": 200,
             "epochs": 2},
}
TASK_OPTIONS = {"smoke": {"temporal": {"test_lengths": [64]}}}


def answered(episodes) -> list[Answered]:
    out = []
    for episode in episodes:
        context = episode.context
        out += [Answered(context, episode.query(i), episode.answer(i), episode.meta[i]) for i in range(len(episode))]
    return out


def train_system1(task: SymbolicTask, label: str, cfg: dict, seed: int, device: str | None):
    from workbench.train import train

    mixer, layers = SYSTEM1[label]
    options = {"n_heads": 4} if mixer == "transformer" else {}
    steps = cfg["steps"]
    config = RunConfig(
        task=TaskConfig(task.name, {}),
        model=ModelConfig(mixer=mixer, d_model=cfg["d_model"], n_layers=layers, mixer_options=options),
        train=TrainConfig(steps=steps, batch_size=cfg["batch_size"], lr=3e-3, warmup_steps=min(100, steps // 10),
                          eval_every=steps, checkpoint_every=steps, seed=seed),
    ).validate()
    model, record = train(config, progress=False, device=device, task=task)
    return model.eval(), record


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def _grounding(model, task: SymbolicTask, episodes, seed: int) -> tuple[dict[str, list[str]], dict]:
    """System 1's concepts (k-means over the inverted model's final hidden states) -> alike links."""
    arguments = set().union(*(Store.from_tokens(e.context).entities for e in episodes))  # not relation words
    _, inventory = codebook_inventory(model, task, episodes, k=8, seed=seed, only=arguments)
    links: dict[str, list[str]] = {}
    for _, a, b in grounded_facts(inventory):
        links.setdefault(a, []).append(b)
    kinds = {w: KINDS_OF[w] for w in inventory.tokens() if w in KINDS_OF}
    codes = [{"code": c, "label": inventory.label(c, 4), "tokens": dict(inventory.members[c].most_common())}
             for c in sorted(inventory.members, key=lambda c: -sum(inventory.members[c].values()))]
    return links, {"inventory": inventory.describe(), "codes": codes, "purity_by_kind": inventory.purity(kinds)}


KINDS_OF = {w: k for k, cs in KINDS.items() for c in cs for w in (c, SYNONYM[c])}


def run_task(name: str, budget: str, seeds: int, device: str | None = None, progress: bool = True) -> dict:
    cfg = BUDGETS[budget]
    task: SymbolicTask = SYMBOLIC_TASKS[name](n_eval=cfg["n_eval"], **TASK_OPTIONS.get(budget, {}).get(name, {}))
    slices = list(task.slices)
    per_seed: list[dict] = []
    for seed in range(seeds):
        train_items = answered(task.episodes(cfg["n_train"], [seed, 1]))
        control_episodes = task.episodes(cfg["n_control"], [seed, 2])
        control_items = answered(control_episodes)
        evals = {s: task.eval_set(s) for s in slices}
        record: dict[str, Any] = {"system1": {}, "seconds": {}}

        # System 1 alone
        models = {}
        for label in SYSTEM1:
            t0 = time.perf_counter()
            model, result = train_system1(task, label, cfg, seed, device)
            models[label] = model
            preds = {s: [p for e in task.predict(model, evals[s]) for p in e] for s in slices}
            control = [p for e in task.predict(model, control_episodes) for p in e]
            record["system1"][label] = {"preds": preds, "control": control, "parameters": result["parameters"]}
            record["seconds"][label] = time.perf_counter() - t0
            if progress:
                print(f"[system2/{budget}] {name} seed {seed}: {label} trained in {record['seconds'][label]:.0f}s", flush=True)

        # System 2: rules, then the program policy, both by reinforcement
        record["system2"] = fit_system2(train_items, evals, control_items, seed, epochs=cfg["epochs"])
        record["seconds"]["system2"] = record["system2"]["seconds"]
        if name == "concepts":  # again, with System 1's grounded concepts (inverted model's codebook)
            grounding, record["concepts"] = _grounding(models["inverted"], task, control_episodes, seed)
            record["system2_grounded"] = fit_system2(train_items, evals, control_items, seed, grounding, cfg["epochs"])
        record["items"] = {s: answered(evals[s]) for s in slices}
        record["control_items"] = control_items
        per_seed.append(record)
        if progress:
            print(f"[system2/{budget}] {name} seed {seed}: System 2 in {record['seconds']['system2']:.0f}s", flush=True)
    return summarize(task, slices, per_seed)


def fit_system2(train_items, evals, control_items, seed: int, grounding: dict | None = None,
                epochs: int | None = None) -> dict:
    t0 = time.perf_counter()
    s2 = System2(seed=seed, grounding=grounding or {})
    s2.learn_rules(train_items)
    rewards = s2.train(train_items, epochs=epochs or 2)
    slow = {s: [s2.answer(i.context, i.query) for i in answered(episodes)] for s, episodes in evals.items()}
    slow_control = [s2.answer(i.context, i.query) for i in control_items]
    return {"slow": slow, "slow_control": slow_control, "rewards": rewards, "s2": s2,
            "seconds": time.perf_counter() - t0}


def _choices(items, fast, slow) -> list[Choice]:
    return [Choice(confidence=conf, fast_correct=pred == item.answer, slow_correct=result.answer == item.answer,
                   slow_steps=result.steps, query_length=len(item.query))
            for item, (pred, conf), result in zip(items, fast, slow)]


def summarize(task: SymbolicTask, slices: list[str], per_seed: list[dict]) -> dict:
    rows: dict[str, dict[str, list]] = {}

    def put(system: str, key: str, s: str, value: float) -> None:
        rows.setdefault(system, {}).setdefault(key, {}).setdefault(s, []).append(value)

    curves: dict[str, list] = {}
    budgets: dict[str, list] = {}  # one shared range of step budgets, so seeds can be averaged point by point
    max_steps = max(r.steps for record in per_seed for s in slices for r in record["system2"]["slow"][s])
    for record in per_seed:
        items, slow = record["items"], record["system2"]["slow"]
        for key, system in (("system2", "system2"), ("system2_grounded", "system2+S1-concepts")):
            if key in record:
                for s in slices:
                    answers = record[key]["slow"][s]
                    put(system, "accuracy", s, float(np.mean([r.answer == i.answer for r, i in zip(answers, items[s])])))
                    put(system, "steps", s, float(np.mean([r.steps for r in answers])))
        for label, s1 in record["system1"].items():
            control = _choices(record["control_items"], s1["control"], record["system2"]["slow_control"])
            controller = Controller(COST, seed=0).fit(control)
            test_all = []
            for s in slices:
                choices = _choices(items[s], s1["preds"][s], slow[s])
                test_all += choices
                put(label, "accuracy", s, float(np.mean([c.fast_correct for c in choices])))
                scored = controller.score(choices)
                put(f"{label}+system2", "accuracy", s, scored["accuracy"])
                put(f"{label}+system2", "steps", s, scored["mean_steps"])
                put(f"{label}+system2", "deliberate", s, scored["deliberate"])
            curves.setdefault(label, []).append(tradeoff_curve(control, test_all, COSTS))
            budgets.setdefault(label, []).append(budget_curve(test_all, range(max_steps + 1)))
    table = []
    for system, metrics in rows.items():
        table.append({"system": system, **{k: {s: _stats(v) for s, v in by_slice.items()} for k, by_slice in metrics.items()}})
    order = list(SYSTEM1) + ["system2", "system2+S1-concepts"] + [f"{label}+system2" for label in SYSTEM1]
    table.sort(key=lambda r: order.index(r["system"]))

    last = per_seed[-1]
    s2: System2 = last["system2"]["s2"]
    learned = [h for h in s2.rules.kept() if h.kind != "fact"]
    out: dict[str, Any] = {
        "slices": slices,
        "train_slices": list(task.train_slices),
        "rows": table,
        "tradeoff": {label: [{k: statistics.fmean(p[i][k] for p in runs) for k in runs[0][i]} for i in range(len(COSTS))]
                     for label, runs in curves.items()},
        "budget_curve": {label: [{k: statistics.fmean(p[i][k] for p in runs) for k in runs[0][i]}
                                 for i in range(max_steps + 1)] for label, runs in budgets.items()},
        "rules": {"text": s2.rules.describe(limit_facts=30), "compare": compare_rules(learned, task.true_rules())},
        "policy": s2.policy.describe(),
        "system2_reward": {"first_200": float(np.mean(last["system2"]["rewards"][:200])),
                           "last_200": float(np.mean(last["system2"]["rewards"][-200:])),
                           "curves": [reward_curve(r["system2"]["rewards"]) for r in per_seed]},
        "examples": _examples(last, slices),
        "seconds": {k: statistics.fmean(r["seconds"][k] for r in per_seed) for k in last["seconds"]},
        "parameters": {label: s1["parameters"] for label, s1 in last["system1"].items()},
    }
    if hasattr(task, "true_facts"):
        facts = [h for h in s2.rules.kept("fact") if h.args[0] != "has"]
        out["facts"] = compare_rules(facts, task.true_facts())
        out["facts"]["extra"] = out["facts"]["extra"][:20]
        out["facts"]["missing"] = out["facts"]["missing"][:20]
    if "system2_grounded" in last:
        grounded_s2: System2 = last["system2_grounded"]["s2"]
        out["concepts"] = {**last["concepts"], "rules_with_grounding": grounded_s2.rules.describe(limit_facts=10),
                           "rules_through_system1": sorted(str(h) for h in grounded_s2.rules.kept()
                                                           if "alike" in {r.lstrip("~") for r in h.args})}
    return out


def reward_curve(rewards: list[float], bins: int = 40) -> dict[str, list]:
    """REINFORCE task reward of the program policy in training order, as means over ``bins``
    consecutive chunks of queries; ``queries`` is how many had been seen at each chunk's end."""
    chunks = [c for c in np.array_split(np.asarray(rewards, dtype=float), min(bins, len(rewards))) if len(c)]
    return {"queries": np.cumsum([len(c) for c in chunks]).tolist(), "reward": [float(c.mean()) for c in chunks]}


def _examples(record: dict, slices: list[str]) -> list[str]:
    """One System 2 trace per slice (the first query), for reading."""
    out = []
    for s in slices:
        item, result = record["items"][s][0], record["system2"]["slow"][s][0]
        out.append(f"[{s}] ? {' '.join(item.query)}  (answer {item.answer})\n{result}")
    return out


def run_system2(budget: str, seeds: int, results: Path, tasks: tuple[str, ...] = tuple(SYMBOLIC_TASKS),
                device: str | None = None, progress: bool = True) -> dict:
    """The table, written to ``results/system2-<budget>.json``; returns the same dict."""
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose smoke, demo or full")
    if seeds < 1:
        raise ConfigError("seeds must be >= 1")
    unknown = [t for t in tasks if t not in SYMBOLIC_TASKS]
    if unknown or not tasks:
        raise ConfigError(f"unknown System 2 task {unknown[0]!r}; choose from {', '.join(SYMBOLIC_TASKS)}" if unknown
                          else "no System 2 task given")
    import torch

    from workbench.provenance import device_name, git_commit

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    git_commit()  # fix the provenance at the start (see workbench.train.git_commit)
    summary: dict[str, Any] = {"budget": budget, "seeds": seeds, "config": BUDGETS[budget], "cost_per_step": COST,
                               "costs": list(COSTS), "tasks": {}}
    for name in tasks:
        summary["tasks"][name] = run_task(name, budget, seeds, device=str(dev), progress=progress)
    summary["targets"] = targets(summary)
    summary.update(seconds=time.perf_counter() - started, device=device_name(dev), git_commit=git_commit(),
                   torch=torch.__version__)
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"system2-{budget}.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def targets(summary: dict) -> dict[str, Any]:
    """The measured targets: S1+S2 >= 0.95 at 6 hops, >= 0.9 on kinship chains of length 4-10."""
    out: dict[str, Any] = {}
    tasks = summary["tasks"]
    if "hops" in tasks and "hops6" in tasks["hops"]["slices"]:
        row = next(r for r in tasks["hops"]["rows"] if r["system"] == "inverted+system2")
        out["hops6_inverted+system2"] = row["accuracy"]["hops6"]["mean"]
        out["hops6_target_met"] = out["hops6_inverted+system2"] >= 0.95
    if "kinship" in tasks:
        row = next(r for r in tasks["kinship"]["rows"] if r["system"] == "inverted+system2")
        long = [row["accuracy"][s]["mean"] for s in tasks["kinship"]["slices"] if int(s[3:]) >= 4]
        if long:
            out["kinship_len4-10_inverted+system2_min"] = min(long)
            out["kinship_target_met"] = min(long) >= 0.9
    return out


def format_table(summary: dict):
    """Rich tables, one per task: systems x slices (accuracy; mean steps for System 2 rows)."""
    from rich.table import Table

    tables = []
    for name, result in summary["tasks"].items():
        table = Table(title=f"System 1 vs System 1 + System 2 - {name} - budget {summary['budget']} "
                            f"(train: {', '.join(result['train_slices'])})")
        table.add_column("system")
        for s in result["slices"]:
            table.add_column(s, justify="right")
        for row in result["rows"]:
            cells = []
            for s in result["slices"]:
                acc = row["accuracy"][s]
                text = f"{acc['mean']:.2f}" + (f"±{acc['std']:.2f}" if acc["n"] > 1 else "")
                if "steps" in row:
                    text += f" ({row['steps'][s]['mean']:.1f})"
                cells.append(text)
            table.add_row(row["system"], *cells)
        tables.append(table)
    return tables


def main(argv: list[str] | None = None) -> None:
    """``python -m workbench.symbolic.experiment --budget demo``; the same as
    ``workbench compare --tasks hops,kinship,temporal,concepts --budget demo``."""
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--tasks", default=",".join(SYMBOLIC_TASKS))
    args = parser.parse_args(argv)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    unknown = [t for t in tasks if t not in SYMBOLIC_TASKS]
    if unknown:
        parser.error(f"unknown System 2 task {unknown[0]!r}; choose from {', '.join(SYMBOLIC_TASKS)}")
    summary = run_system2(args.budget, args.seeds, args.results, tasks=tasks)
    print_summary(summary, Console(width=200))
    print(f"wrote {args.results / f'system2-{args.budget}.json'}")


def print_summary(summary: dict, console=None) -> None:
    """The tables, each task's rule precision / recall, and the targets (what the CLI prints)."""
    if console is None:
        from rich.console import Console

        console = Console(width=200)
    for table in format_table(summary):
        console.print(table)
    for name, result in summary["tasks"].items():
        scores = result["rules"]["compare"]
        if not scores["true"]:
            console.print(f"{name}: the generator has no relation rules to learn; {scores['learned']} kept")
            continue
        console.print(f"{name}: rules precision {scores['precision']:.2f} recall {scores['recall']:.2f} "
                      f"({scores['correct']}/{scores['true']} true rules, {scores['learned']} kept)")
    console.print(json.dumps(summary["targets"]))


if __name__ == "__main__":
    main()
