"""Benchmark protocol v1: the same model config for every task, budgets in steps.

``compare(tasks, mixers, budget, seeds)`` runs every (task config, mixer, seed) that has
no result yet - each writes ``results/runs/<budget>/<run>/result.json`` - then aggregates
whatever runs exist (mean and std over seeds) into ``results/compare-<budget>.json``.
So a full run that takes hours can be stopped and restarted at will.

The System 2 tasks (hops, kinship, temporal, concepts) have their own protocol
(``workbench.symbolic.experiment``); ``split_tasks`` tells the two kinds apart for the CLI.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, ModelConfig, RunConfig, TaskConfig, TrainConfig

MQAR_CONFIGS = [(64, 4), (128, 8), (256, 16), (512, 32)]


@dataclass
class RunSpec:
    """One cell of the protocol: a task configuration and its training budget."""

    label: str  # e.g. "mqar-256x16"
    task: str
    task_options: dict[str, Any]
    train: dict[str, Any]
    metrics: list[str] = field(default_factory=list)  # what the table shows, primary first


def protocol(task: str, budget: str) -> list[RunSpec]:
    """The runs that make up ``task`` under ``budget`` ("smoke", "demo" or "full")."""
    if budget not in ("smoke", "demo", "full"):
        raise ConfigError(f"unknown budget {budget!r}; choose smoke, demo or full")
    smoke, demo = budget == "smoke", budget == "demo"
    if task == "copy":
        steps = {"smoke": 20, "demo": 300, "full": 5000}[budget]
        options = {"n_eval": 64, "long_lengths": [], "n_eval_long": 16} if smoke else {}
        if demo:
            options = {"n_eval": 200, "long_lengths": [128], "n_eval_long": 100}
        train = {"steps": steps, "batch_size": 16 if smoke else (32 if demo else 64), "target_metric": 0.99,
                 "eval_every": 10 if smoke else (100 if demo else 250), "warmup_steps": min(100, steps // 10)}
        return [RunSpec("copy", "copy", options, train, ["exact_match", "token_accuracy", "exact_match@L128", "exact_match@L256"])]
    if task == "mqar":
        configs = MQAR_CONFIGS if budget == "full" else [(64, 4)]
        specs = []
        for seq_len, kv in configs:
            options: dict[str, Any] = {"seq_len": seq_len, "kv_pairs": kv}
            if smoke:
                options |= {"n_eval": 32, "long_config": None}
            elif demo:
                options |= {"n_eval": 200, "long_config": [128, 8]}
            steps = {"smoke": 20, "demo": 600, "full": 5000}[budget]
            train = {"steps": steps, "batch_size": 16 if smoke else 64, "target_metric": 0.99,
                     "eval_every": 10 if smoke else (100 if demo else 250), "warmup_steps": min(100, steps // 10)}
            long_key = "accuracy@128x8" if demo else "accuracy@1024x64"
            specs.append(RunSpec(f"mqar-{seq_len}x{kv}", "mqar", options, train, ["accuracy", long_key]))
        return specs
    if task in ("charlm", "charlm-600s"):
        options = {"max_eval_windows": 4} if smoke else ({"max_eval_windows": 60} if demo else {})
        steps = {"smoke": 20, "demo": 250, "full": 3000}[budget]
        train = {"steps": steps, "batch_size": 8 if smoke else 32, "eval_every": 10 if smoke else (100 if demo else 500),
                 "warmup_steps": min(100, steps // 10)}
        if task == "charlm-600s":
            seconds = {"smoke": 5, "demo": 60, "full": 600}[budget]
            train |= {"steps": 1_000_000, "time_budget_s": seconds, "eval_every": 10 if smoke else 500}
        return [RunSpec(task, "charlm", options, train, ["bpc"])]
    if task in ("digits", "diabetes"):
        steps = {"smoke": 20, "demo": 300, "full": 1000}[budget]
        train = {"steps": steps, "batch_size": 64, "eval_every": 10 if smoke else 100, "warmup_steps": min(50, steps // 10)}
        return [RunSpec(task, task, {}, train, ["accuracy"] if task == "digits" else ["r2", "mse"])]
    raise ConfigError(f"unknown compare task {task!r}; choose from copy, mqar, charlm, charlm-600s, digits, diabetes")


def parse_mixer(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``inverted`` or ``inverted:refractory=false:n_units=32`` -> (label, mixer, options)."""
    name, *pairs = spec.split(":")
    options: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"mixer variant {spec!r}: expected name:key=value[:key=value]")
        key, raw = pair.split("=", 1)
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    ModelConfig(mixer=name, mixer_options=options).validate()
    return spec, name, options


def run_config(spec: RunSpec, mixer: str, mixer_options: dict[str, Any], seed: int) -> RunConfig:
    """Protocol v1's model: d_model 128, one block, the mixer's default options for every task."""
    return RunConfig(
        task=TaskConfig(spec.task, dict(spec.task_options)),
        model=ModelConfig(mixer=mixer, d_model=128, n_layers=1, mixer_options=dict(mixer_options)),
        train=TrainConfig(**{**spec.train, "seed": seed}),
    ).validate()


def run_dir(results: Path, budget: str, spec: RunSpec, mixer_label: str, seed: int) -> Path:
    safe = mixer_label.replace(":", "_").replace("=", "-").replace("/", "-")
    return results / "runs" / budget / f"{spec.label}--{safe}--s{seed}"


def compare(
    tasks: list[str],
    mixers: list[str],
    budget: str = "demo",
    seeds: int = 1,
    results: str | Path = "results",
    progress: bool = True,
    device: str | None = None,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """Run missing cells (all, or only those whose label is in ``labels``), then aggregate."""
    from workbench.train import train

    results = Path(results)
    variants = [parse_mixer(m) for m in mixers]
    specs = [spec for task in tasks for spec in protocol(task, budget)]
    if labels:
        unknown = set(labels) - {s.label for s in specs}
        if unknown:
            raise ConfigError(f"unknown labels {sorted(unknown)}; these tasks have {[s.label for s in specs]}")
        specs = [s for s in specs if s.label in labels]
    cells = [(spec, label, mixer, options, seed) for spec in specs for label, mixer, options in variants
             for seed in range(seeds)]
    todo = [cell for cell in cells if not (run_dir(results, budget, cell[0], cell[1], cell[4]) / "result.json").is_file()]
    _refuse_stale([cell for cell in cells if cell not in todo], results, budget)
    if progress:
        print(f"[{budget}] {len(cells) - len(todo)} of {len(cells)} runs already done, {len(todo)} to run", flush=True)
    for index, (spec, label, mixer, options, seed) in enumerate(todo, 1):
        out = run_dir(results, budget, spec, label, seed)
        with claim_run(out) as holder:
            if holder is not None:  # another compare process has this run: leave it to that one
                print(f"[{budget}] run {index}/{len(todo)}: {spec.label} / {label} / seed {seed} is being "
                      f"trained by another process ({holder}); skipped here", flush=True)
                continue
            if (out / "result.json").is_file():  # finished by another process since the list was made
                continue
            if progress:
                print(f"[{budget}] run {index}/{len(todo)}: {spec.label} / {label} / seed {seed}", flush=True)
            extra = {"budget": budget, "label": spec.label, "mixer_label": label}
            config = run_config(spec, mixer, options, seed)
            train(config, out_dir=out, resume=True, progress=progress, device=device, extra=extra)
            (out / "checkpoint.pt").unlink(missing_ok=True)  # keep results small; result.json stays
    return aggregate(results, budget)


@contextmanager
def claim_run(out: Path) -> Iterator[str | None]:
    """Hold an exclusive lock on one run while it trains; yields None when it is ours.

    Several ``compare`` processes may share one results directory (``make bench JOBS=2``: one
    single-threaded process per core): each run is trained by whichever process locks it first,
    the others skip it. The lock is the operating system's (``flock``), so a process that dies
    releases it and its checkpoint is resumed by the next process that reaches the run. Yields
    a description of the holder (its pid) when another process has the run. Needs ``fcntl``
    (Linux, macOS).
    """
    out.mkdir(parents=True, exist_ok=True)
    lock_path = out / "running.lock"
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            yield handle.read().strip() or "pid unknown"
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield None
        # Only a finished run's lock goes: a process that opened the old file meanwhile finds the
        # result and skips; after a failure the file stays, so every process locks the same one.
        if (out / "result.json").is_file():
            lock_path.unlink(missing_ok=True)


def _config_changes(recorded: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: recorded -> current`` for every leaf where the two configs differ."""
    changes = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def _refuse_stale(done: list[tuple], results: Path, budget: str) -> None:
    """A finished run counts only if it was made with the config this cell would use today.

    A default that changed since (say a mixer option) would otherwise be averaged in silently
    with new seeds; the run is named with what changed, so the user moves it away or deletes it.
    """
    from workbench.mixers import MIXERS
    from workbench.train import resolved_mixer_options

    stale = []
    for spec, label, mixer, options, seed in done:
        path = run_dir(results, budget, spec, label, seed) / "result.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is unreadable ({exc}); delete it to re-run that cell") from None
        config = run_config(spec, mixer, options, seed)
        recorded, current = record.get("config"), json.loads(json.dumps(config.to_dict()))
        if "mixer_options_resolved" in record:  # runs since this field exist: defaults are compared too
            was, now = record["mixer_options_resolved"], resolved_mixer_options(config)
            # An option added after the run: the run had the behaviour from before the option
            # existed, which the mixer names in its options' LEGACY; without an entry there, the
            # option's default is taken to be that behaviour.
            legacy = getattr(MIXERS[config.model.mixer].Options, "LEGACY", {})
            was = {**{k: v for k, v in legacy.items() if k in now}, **was}
            defaults = resolved_mixer_options(run_config(spec, mixer, {}, seed))
            now = {k: v for k, v in now.items() if k in was or v != defaults[k]}
            recorded = {**recorded, "mixer_options_resolved": was}
            current = {**current, "mixer_options_resolved": now}
        if recorded is not None and recorded != current:
            stale.append(f"{path}: " + "; ".join(_config_changes(recorded, current)[:3]))
    if stale:
        listing = "\n  ".join(stale[:5]) + (f"\n  ... and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise ConfigError(f"{len(stale)} finished run(s) were made with another config than these cells use now "
                          f"(recorded -> now):\n  {listing}\nmove them away (or delete them) to re-run those cells")


ALL_TASKS = ["copy", "mqar", "charlm", "charlm-600s", "digits", "diabetes"]

# The ablation set: each switch of the inverted mixer off (or moved) on its own, everything else at
# the default; the transformer for scale. ``make ablation`` runs it; results go to their own
# directory (``results/ablation``) so the main tables keep two columns.
ABLATIONS = {
    "transformer": "transformer",
    "inverted (default: M=128, k=4, w=8)": "inverted",
    "refractory off (content routing)": "inverted:refractory=false",
    "local channel off": "inverted:conv_width=0",
    "local channel w=4": "inverted:conv_width=4",
    "multi-timescale off": "inverted:timescales=[]",
    "write gate off (every token writes)": "inverted:write_gate=false",
    "price on every token (not ranked)": "inverted:price_ranked=false",
    "k=1": "inverted:read_topk=1",
    "k=2": "inverted:read_topk=2",
    "M=32": "inverted:n_units=32",
}
ABLATION_TASKS = ["mqar", "copy", "charlm"]
SYSTEM2_TASKS = ["hops", "kinship", "temporal", "concepts"]  # workbench.symbolic.tasks.SYMBOLIC_TASKS


def split_tasks(tasks: list[str]) -> tuple[list[str], list[str]]:
    """(protocol v1 tasks, System 2 tasks), each in the order given; an unknown name is a ConfigError.

    Protocol tasks run through ``compare`` (one run per task config x mixer x seed); System 2
    tasks (hops, kinship, temporal, concepts) through ``workbench.symbolic.experiment.run_system2``,
    which compares its own System 1 set (inverted, transformer-1L, transformer-2L) with and
    without System 2 and writes ``system2-<budget>.json``.
    """
    from workbench.symbolic.tasks import SYMBOLIC_TASKS

    unknown = [t for t in tasks if t not in ALL_TASKS and t not in SYMBOLIC_TASKS]
    if unknown:
        raise ConfigError(f"unknown compare task {unknown[0]!r}; choose from {', '.join(ALL_TASKS)} (protocol v1) "
                          f"or {', '.join(SYMBOLIC_TASKS)} (System 1 vs System 1 + System 2)")
    if not tasks:
        raise ConfigError("no tasks given")
    return [t for t in tasks if t not in SYMBOLIC_TASKS], [t for t in tasks if t in SYMBOLIC_TASKS]


def aggregate(results: Path, budget: str) -> dict[str, Any]:
    """Mean and std over whatever seeds exist for every (task config, mixer) run under this budget."""
    order = [s for task in ALL_TASKS for s in protocol(task, budget)]
    metric_names = {s.label: s.metrics for s in order}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted((results / "runs" / budget).glob("*/result.json")):
        record = json.loads(path.read_text())
        if "label" not in record or "mixer_label" not in record:
            continue  # not written by compare
        groups.setdefault((record["label"], record["mixer_label"]), []).append(record)
    label_rank = {s.label: i for i, s in enumerate(order)}
    keys = sorted(groups, key=lambda k: (label_rank.get(k[0], len(order)), ":" in k[1], k[1] != "transformer", k[1]))
    rows = []
    for label, mixer_label in keys:
        runs = groups[(label, mixer_label)]
        row: dict[str, Any] = {"label": label, "mixer": mixer_label, "seeds": len(runs), "metrics": {}}
        for name in metric_names.get(label, [runs[0]["metric"]]):
            values = [r["metrics"][name] for r in runs if name in r["metrics"]]
            if values:
                row["metrics"][name] = _stats(values)
        row["steps"] = _stats([r["steps"] for r in runs])
        row["reached_target"] = sum(bool(r.get("reached_target")) for r in runs)
        row["train_time_s"] = _stats([r["train_time_s"] for r in runs])
        row["tokens_per_s"] = _stats([r["tokens_per_s"] for r in runs])
        row["parameters"] = runs[0]["parameters"]
        row["device"] = runs[0]["device"]
        rows.append(row)
    summary = {"budget": budget, "rows": rows}
    results.mkdir(parents=True, exist_ok=True)
    (results / f"compare-{budget}.json").write_text(json.dumps(summary, indent=2))
    return summary


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def format_table(summary: dict[str, Any]):
    """A rich table: one row per (task config, mixer)."""
    from rich.table import Table

    table = Table(title=f"workbench compare - budget {summary['budget']}")
    for column in ("task", "mixer", "seeds", "metrics (mean ± std)", "steps", "params (mixer/total)", "tokens/s"):
        table.add_column(column)
    for row in summary["rows"]:
        metrics = ", ".join(f"{k} {v['mean']:.3f}±{v['std']:.3f}" for k, v in row["metrics"].items())
        table.add_row(
            row["label"],
            row["mixer"],
            str(row["seeds"]),
            metrics,
            f"{row['steps']['mean']:.0f}",
            f"{row['parameters']['mixer']:,}/{row['parameters']['total']:,}",
            f"{row['tokens_per_s']['mean']:,.0f}",
        )
    return table
