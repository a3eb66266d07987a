# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Benchmarks: protocol v1, transformer vs inverted
#
# This notebook reads what `workbench compare` left in `results/` and shows it. It trains
# nothing for the tables (except in smoke mode, below): every number comes from
# `results/runs/<budget>/<task config>--<mixer>--s<seed>/result.json` (one file per run,
# with its evaluation history) and `results/compare-<budget>.json` (the aggregate).
#
# Protocol v1 (`workbench/compare.py`): the same model for every task - d_model 128, one
# block (mixer + MLP) - and budgets counted in steps: `smoke` (seconds, meaningless
# numbers), `demo` (`make demo`, a sanity view) and `full` (`make bench`, 3 seeds).
#
# Sections:
#
# 1. **Protocol table** per budget: both mixers side by side, mean ± std over seeds, the
#    number of seeds in each cell, and *steps to target* (sample efficiency).
# 2. **Training curves** from each run's history, against steps and against wall time.
# 3. **Accuracy vs context length**: copy at the training lengths (L ≤ 64) and beyond
#    (L = 128, 256); MQAR by sequence length, with the 1024×64 length-generalization probe.
# 4. **Ablations** of the inverted mixer (variants such as `inverted:refractory=false`),
#    when such runs exist.
# 5. **Char-LM samples**: text generated with `model.generate` (recurrent form).
#
# With `smoke = True` (what the tests use) it runs a tiny compare live into a temporary
# directory and shows that, so the whole path - compare, result files, tables, figures -
# is exercised in under a minute.

# %% tags=["parameters"]
smoke = False  # True: run a tiny compare live into a temp dir and show it (numbers meaningless)
results_dir = "results"  # where `workbench compare` wrote runs/ and compare-*.json
budget = "full"  # the budget to show; falls back to demo, then smoke, when it has no results
checkpoint = ""  # path of a char-LM checkpoint for the text samples; empty: train a small one live
sample_steps = 600  # steps of the live char-LM trained per mixer when no checkpoint is given
sample_chars = 400  # characters generated per sample
seed = 0  # live char-LM training and sampling

# %%
import json
import re
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from workbench.compare import RunSpec, compare, protocol, run_config
from workbench.plotting import save_figure
from workbench.tasks import build_task
from workbench.train import model_from_checkpoint, train

notebook_started = time.perf_counter()
BUDGETS = ("full", "demo", "smoke")
TASK_ORDER = ("copy", "mqar", "charlm", "charlm-600s", "digits", "diabetes")
LOWER_IS_BETTER = {"bpc", "mse"}
PALETTE = {"transformer": "#1f77b4", "inverted": "#d62728"}
EXTRA_COLOURS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e"]

if smoke:
    # A tiny protocol run, live: one inverted ablation on MQAR first (so the ablation path
    # runs too), then the main comparison. compare() rewrites compare-smoke.json with the
    # rows of its own call only, so the main call goes last.
    results_path = Path(tempfile.mkdtemp(prefix="workbench-04-"))
    budget = "smoke"
    started = time.perf_counter()
    compare(tasks=["mqar"], mixers=["inverted:refractory=false"], budget="smoke", seeds=1,
            results=results_path, progress=False)
    compare(tasks=["copy", "mqar", "charlm"], mixers=["transformer", "inverted"], budget="smoke", seeds=1,
            results=results_path, progress=False)
    print(f"smoke: ran a tiny compare into {results_path} in {time.perf_counter() - started:.1f}s")
else:
    results_path = Path(results_dir)
print(f"reading results from {results_path.resolve()}")

# %% [markdown]
# ## What is there
#
# Every `result.json` under `runs/` is one (task config, mixer, seed) run. The tables below
# aggregate those files directly - they are the source of truth; `compare-<budget>.json`
# holds only the rows of the *last* `compare` call for that budget, so it can lag behind the
# runs (e.g. after an ablation-only call). The inventory says when the two disagree.

# %%
records: list[dict] = []
skipped: list[str] = []
for path in sorted(results_path.glob("runs/*/*/result.json")):
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        skipped.append(f"{path} ({type(exc).__name__})")
        continue
    record["budget"] = path.parent.parent.name  # runs/<budget>/...: where compare looks for it
    record.setdefault("label", path.parent.name.split("--")[0])  # <label>--<mixer>--s<seed>
    record.setdefault("mixer_label", record.get("mixer", "?"))
    records.append(record)

summaries: dict[str, dict] = {}
for path in sorted(results_path.glob("compare-*.json")):
    try:
        summary = json.loads(path.read_text())
        summaries[summary["budget"]] = summary
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        skipped.append(f"{path} ({type(exc).__name__})")

runs_by_budget: dict[str, list[dict]] = defaultdict(list)
for record in records:
    runs_by_budget[record["budget"]].append(record)

for name in BUDGETS:
    runs = runs_by_budget.get(name, [])
    summary = summaries.get(name)
    groups = {(r["label"], r["mixer_label"]) for r in runs}
    line = f"{name:>5}: {len(runs):3d} runs in {len(groups):2d} (task config, mixer) cells"
    if summary is not None:
        listed = {(row["label"], row["mixer"]) for row in summary["rows"]}
        line += f"; compare-{name}.json lists {len(listed)} cells"
        if runs and listed != groups:
            line += f" (runs not in it: {len(groups - listed)}, in it without runs: {len(listed - groups)})"
    else:
        line += f"; no compare-{name}.json"
    print(line)
for item in skipped:
    print(f"skipped unreadable {item}")

available = [b for b in BUDGETS if runs_by_budget.get(b) or (summaries.get(b) or {}).get("rows")]
if budget in available:
    shown = budget
elif available:
    shown = available[0]
    message = (
        f"**No results at budget `{budget}` in `{results_path}`.** Showing budget `{shown}` instead"
        + (" - a smoke-level sanity view, not a result." if shown != "full" else ".")
        + " Run `make bench` (the full protocol, 3 seeds, resumable) to fill the full tables."
    )
    print("NOTE:", message.replace("**", "").replace("`", ""))
    display(Markdown(message))
else:
    shown = None
    message = (
        f"**No benchmark results at all in `{results_path}`** (no runs/*/*/result.json, no compare-*.json). "
        "Run `make demo` (minutes) or `make bench` (hours), or set `smoke = True` to run a tiny one here."
    )
    print("NOTE:", message.replace("**", "").replace("`", ""))
    display(Markdown(message))
print(f"budget shown in the figures: {shown}")

# %% [markdown]
# ## Aggregation
#
# For each (task config, mixer) the helpers below take mean and standard deviation over
# the seeds present (std is shown only with two or more). The *primary* metric of a task
# config is the first one protocol v1 lists for it (exact match for copy, accuracy for
# MQAR and digits, bits per character for char-LM, R² for diabetes).
#
# **Steps to target** is the first evaluation step at which a run's primary metric
# reached the protocol's target (0.99 for copy and MQAR; training stops there), averaged
# over the seeds that reached it - `k/n` says how many did. Fewer steps = more sample
# efficient. Task configs without a target (char-LM, tabular) get **steps to common level**
# instead: the level is the worse mixer's final mean, so it asks how early the better
# mixer got to where the other one ended. Evaluation happens every `eval_every` steps, so
# these counts are rounded up to that grid.

# %%


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def fmt(stat: dict | None, digits: int = 3, show_n: bool = True) -> str:
    if not stat:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    if stat["n"] > 1:
        text += f" ± {stat['std']:.{digits}f}"
    return text + (f" (n={stat['n']})" if show_n else "")


def spec_metrics(budget_name: str) -> dict[str, list[str]]:
    """Task config label -> the metrics protocol v1 shows for it (primary first)."""
    return {s.label: s.metrics for task in TASK_ORDER for s in protocol(task, budget_name)}


def label_order(labels, budget_name: str) -> list[str]:
    known = list(spec_metrics(budget_name))
    return [x for x in known if x in labels] + sorted(set(labels) - set(known))


def mixer_order(mixers) -> list[str]:
    base = [m for m in ("transformer", "inverted") if m in mixers]
    return base + sorted(set(mixers) - set(base))


def colour(mixer: str, index: int = 0) -> str:
    return PALETTE.get(mixer, EXTRA_COLOURS[index % len(EXTRA_COLOURS)])


def metric_value(metrics: dict, name: str) -> float | None:
    if name in metrics:
        return metrics[name]
    if name == "bpc" and "neg_bpc" in metrics:
        return -metrics["neg_bpc"]
    return None


def primary_metric(label: str, runs: list[dict], budget_name: str) -> str:
    names = spec_metrics(budget_name).get(label)
    if names:
        return names[0]
    return "bpc" if runs[0]["metric"] == "neg_bpc" else runs[0]["metric"]


def first_step_reaching(run: dict, level: float, metric: str, lower_better: bool):
    """(step, train seconds) of the first history entry at or past ``level``; None if never."""
    for entry in run.get("history", []):
        value = metric_value(entry["metrics"], metric)
        if value is not None and (value <= level if lower_better else value >= level):
            return entry["step"], entry["time_s"]
    return None


def cells_from_runs(runs: list[dict], budget_name: str) -> dict[tuple[str, str], dict]:
    """(label, mixer label) -> aggregated cell, including steps/seconds to target."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        grouped[(run["label"], run["mixer_label"])].append(run)
    names = spec_metrics(budget_name)
    cells: dict[tuple[str, str], dict] = {}
    for (label, mixer), group in grouped.items():
        metric_names = names.get(label) or [k for k in group[0]["metrics"] if k not in ("neg_bpc", "val_chars")]
        # Plus probes of the primary metric the protocol list does not name (e.g. another long MQAR config).
        metric_names = list(dict.fromkeys(metric_names + sorted(
            {k for r in group for k in r["metrics"] if k.startswith(metric_names[0] + "@")})))
        cell = {
            "runs": group,
            "seeds": len(group),
            "primary": primary_metric(label, group, budget_name),
            "metrics": {m: stats([v for r in group if (v := metric_value(r["metrics"], m)) is not None])
                        for m in metric_names},
            "steps": stats([r["steps"] for r in group]),
            "train_time_s": stats([r["train_time_s"] for r in group]),
            "tokens_per_s": stats([r["tokens_per_s"] for r in group]),
            "parameters": group[0]["parameters"],
            "device": group[0]["device"],
            "target": group[0]["config"]["train"].get("target_metric"),
        }
        cells[(label, mixer)] = cell
    # Steps to target (or to the common level when the config has no target).
    for label in {key[0] for key in cells}:
        here = {m: c for (lab, m), c in cells.items() if lab == label}
        any_cell = next(iter(here.values()))
        primary = any_cell["primary"]
        lower = primary in LOWER_IS_BETTER
        if any_cell["target"] is not None:
            level, kind = any_cell["target"], "target"
            metric = any_cell["runs"][0]["metric"]  # the target is set on the training metric
        else:
            # The level comes from the baseline mixers only, so ablation runs never move it.
            base = [c for m, c in here.items() if ":" not in m] or list(here.values())
            finals = [c["metrics"][primary]["mean"] for c in base if c["metrics"].get(primary)]
            if not finals:
                continue
            level, kind, metric = (max(finals) if lower else min(finals)), "common level", primary
        for cell in here.values():
            hits = [first_step_reaching(r, level, metric, lower and kind != "target") for r in cell["runs"]]
            reached = [h for h in hits if h is not None]
            cell["to_level"] = {
                "kind": kind, "level": level, "reached": len(reached), "n": len(hits),
                "steps": stats([h[0] for h in reached]), "seconds": stats([h[1] for h in reached]),
            }
    return cells


def cells_from_summary(summary: dict) -> dict[tuple[str, str], dict]:
    """Cells from a compare-<budget>.json when the run files are not there (no curves then)."""
    cells = {}
    for row in summary["rows"]:
        metrics = dict(row["metrics"])
        cells[(row["label"], row["mixer"])] = {
            "runs": [], "seeds": row["seeds"], "primary": next(iter(metrics), "-"), "metrics": metrics,
            "steps": row["steps"], "train_time_s": row["train_time_s"], "tokens_per_s": row["tokens_per_s"],
            "parameters": row["parameters"], "device": row["device"], "target": None,
            "reached_target": row.get("reached_target"),
        }
    return cells


cells_by_budget = {}
for name in available:
    if runs_by_budget.get(name):
        cells_by_budget[name] = cells_from_runs(runs_by_budget[name], name)
    else:
        print(f"{name}: no run files, tables from compare-{name}.json only (no curves, no steps to target)")
        cells_by_budget[name] = cells_from_summary(summaries[name])

# %% [markdown]
# ## 1 · Protocol table
#
# One table per budget that has results, the two mixers side by side; variants with a `:`
# in their name are ablations and get their own table in section 4. Each cell is
# `mean ± std (n=seeds)`; the better mean of a row is in bold (for bpc and MSE lower is
# better, marked ↓). What to look for:
#
# - **copy / MQAR accuracy** near 1 for both at the full budget, so the interesting rows are
#   the **steps to target** (who learns the task with fewer examples) and the
#   length-generalization columns (`@L128`, `@L256`, `@1024x64`), where a mixer that learned a
#   position-independent procedure keeps its accuracy.
# - **char-LM bpc** (lower is better): the language-modelling quality at equal steps
#   (`charlm`) and at equal wall-clock time (`charlm-600s`, where a faster mixer gets more
#   steps - compare the *steps* row).
# - Differences smaller than the std across seeds are not differences.
#
# The cost table after it gives parameters (mixer / whole model), training throughput and
# training time, measured on the device named there.

# %%


def protocol_table(cells: dict, budget_name: str) -> str:
    mixers = mixer_order({m for (_, m) in cells if ":" not in m})
    labels = label_order({lab for (lab, m) in cells if m in mixers}, budget_name)
    lines = ["| task config | quantity | " + " | ".join(f"`{m}`" for m in mixers) + " |",
             "|---|---|" + "---|" * len(mixers)]
    for label in labels:
        row_cells = [cells.get((label, m)) for m in mixers]
        metric_names = list(dict.fromkeys(k for c in row_cells if c for k in c["metrics"]))
        for metric in metric_names:
            values = [c["metrics"].get(metric) if c else None for c in row_cells]
            means = [v["mean"] for v in values if v]
            if not means:
                continue  # not measured at this budget (e.g. the long-length probes in smoke)
            best = min(means) if metric in LOWER_IS_BETTER else max(means)
            if len(means) < 2 or means.count(best) > 1:
                best = None  # bold only a unique winner
            texts = []
            for v in values:
                text = fmt(v)
                texts.append(f"**{text}**" if v and best is not None and v["mean"] == best else text)
            arrow = " ↓" if metric in LOWER_IS_BETTER else ""
            lines.append(f"| {label} | {metric}{arrow} | " + " | ".join(texts) + " |")
        to_level = [c.get("to_level") if c else None for c in row_cells]
        if any(to_level):
            kind = next(t for t in to_level if t)["kind"]
            level = next(t for t in to_level if t)["level"]
            texts = [f"{fmt(t['steps'], 0, False)} ({t['reached']}/{t['n']})" if t else "-" for t in to_level]
            lines.append(f"| {label} | steps to {kind} ({level:.3g}) | " + " | ".join(texts) + " |")
        elif any(c and c.get("reached_target") is not None for c in row_cells):
            texts = [f"{c['reached_target']}/{c['seeds']} reached" if c else "-" for c in row_cells]
            lines.append(f"| {label} | target | " + " | ".join(texts) + " |")
        lines.append(f"| {label} | steps run | " + " | ".join(fmt(c["steps"], 0) if c else "-" for c in row_cells) + " |")
    return "\n".join(lines)


def cost_table(cells: dict) -> str:
    mixers = mixer_order({m for (_, m) in cells if ":" not in m})
    labels = label_order({lab for (lab, m) in cells if m in mixers}, "full")
    lines = ["| task config | mixer | params mixer / total | train tokens/s | train time (s) | device |",
             "|---|---|---|---|---|---|"]
    for label in labels:
        for mixer in mixers:
            c = cells.get((label, mixer))
            if c:
                p = c["parameters"]
                lines.append(f"| {label} | `{mixer}` | {p['mixer']:,} / {p['total']:,} | "
                             f"{c['tokens_per_s']['mean']:,.0f} | {fmt(c['train_time_s'], 1, False)} | {c['device']} |")
    return "\n".join(lines)


for name in available:
    cells = cells_by_budget[name]
    if not any(":" not in m for (_, m) in cells):
        print(f"budget {name}: only ablation variants, no baseline mixer runs")
        continue
    note = " (sanity view, not a result)" if name != "full" else ""
    display(Markdown(f"### Budget `{name}`{note}\n\n" + protocol_table(cells, name)))
    display(Markdown(f"Cost, budget `{name}`:\n\n" + cost_table(cells)))

# %% [markdown]
# A compact view of the same table for the budget shown: the primary metric of each task
# config, one panel per config, a bar per mixer (height = mean, whisker = std) and one dot
# per seed. Panels have their own y scales; for bpc lower is better.

# %%
if shown is not None:
    cells = cells_by_budget[shown]
    mixers = mixer_order({m for (_, m) in cells if ":" not in m})
    labels = label_order({lab for (lab, m) in cells if m in mixers}, shown)
    n_cols = min(4, max(1, len(labels)))
    n_rows = -(-len(labels) // n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=[
        f"{lab}: {next(c['primary'] for (x, m), c in cells.items() if x == lab)}" for lab in labels])
    for index, label in enumerate(labels):
        row, col = index // n_cols + 1, index % n_cols + 1
        for j, mixer in enumerate(mixers):
            c = cells.get((label, mixer))
            stat = c["metrics"].get(c["primary"]) if c else None
            if not stat:
                continue
            fig.add_trace(go.Bar(x=[mixer], y=[stat["mean"]], error_y={"type": "data", "array": [stat["std"]]},
                                 marker_color=colour(mixer, j), name=mixer, legendgroup=mixer, showlegend=index == 0),
                          row=row, col=col)
            seeds = [metric_value(r["metrics"], c["primary"]) for r in c["runs"]]
            fig.add_trace(go.Scatter(x=[mixer] * len(seeds), y=seeds, mode="markers", marker={"color": "black", "size": 5},
                                     name="seeds", legendgroup="seeds", showlegend=index == 0 and j == 0),
                          row=row, col=col)
            arrow = " (lower is better)" if c["primary"] in LOWER_IS_BETTER else ""
            fig.update_yaxes(title_text=c["primary"] + arrow, row=row, col=col)
    fig.update_xaxes(title_text="mixer")
    fig.update_layout(title=f"protocol v1, budget {shown}: primary metric per task config (mean ± std over seeds)",
                      height=320 * n_rows, width=1100, barmode="group")
    for path in save_figure(fig, "04_benchmarks_protocol"):
        print(f"wrote {path}")
    fig.show()

# %% [markdown]
# ## 2 · Training curves
#
# Each line is one run (one seed), coloured by mixer: the primary metric at each
# evaluation during training. The first figure puts **steps** on the x axis (sample
# efficiency: which mixer learns more per example), the second **training wall time**
# (compute efficiency on this device: evaluation time is excluded). A mixer that is ahead
# per step but behind per second is more sample-efficient but slower per step. Dashed grey
# lines mark the target where the protocol sets one; copy and MQAR runs stop once they
# reach it, which is why some lines end early.

# %%


def curves_figure(cells: dict, budget_name: str, x_key: str, x_title: str):
    mixers = mixer_order({m for (_, m) in cells if ":" not in m})
    labels = [lab for lab in label_order({lab for (lab, m) in cells if m in mixers}, budget_name)
              if any(cells.get((lab, m), {}).get("runs") for m in mixers)]
    if not labels:
        return None
    n_cols = min(3, len(labels))
    n_rows = -(-len(labels) // n_cols)
    titles = [f"{lab}: {next(cells[(lab, m)]['primary'] for m in mixers if (lab, m) in cells)}" for lab in labels]
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=titles)
    shown_legend = set()
    for index, label in enumerate(labels):
        row, col = index // n_cols + 1, index % n_cols + 1
        for j, mixer in enumerate(mixers):
            cell = cells.get((label, mixer))
            if not cell:
                continue
            for run in cell["runs"]:
                points = [(h[x_key], metric_value(h["metrics"], cell["primary"])) for h in run.get("history", [])]
                points = [(x, y) for x, y in points if y is not None]
                if not points:
                    continue
                fig.add_trace(go.Scatter(
                    x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                    line={"color": colour(mixer, j), "width": 1.5}, marker={"size": 4},
                    name=mixer, legendgroup=mixer, showlegend=mixer not in shown_legend,
                    hovertext=f"{mixer}, seed {run.get('seed')}"), row=row, col=col)
                shown_legend.add(mixer)
            if cell.get("target") is not None and cell["primary"] == cell["runs"][0]["metric"]:
                fig.add_hline(y=cell["target"], line_dash="dash", line_color="grey", row=row, col=col)
        fig.update_yaxes(title_text=titles[index].split(": ")[-1], row=row, col=col)
        fig.update_xaxes(title_text=x_title, row=row, col=col)
    fig.update_layout(title=f"training curves, budget {budget_name}: primary metric vs {x_title}",
                      height=320 * n_rows, width=1100)
    return fig


if shown is not None:
    for x_key, x_title, stem in (("step", "step", "04_benchmarks_curves_step"),
                                 ("time_s", "training time (s)", "04_benchmarks_curves_time")):
        fig = curves_figure(cells_by_budget[shown], shown, x_key, x_title)
        if fig is None:
            print(f"budget {shown}: no run histories to plot (only compare-{shown}.json)")
            break
        for path in save_figure(fig, stem):
            print(f"wrote {path}")
        fig.show()

# %% [markdown]
# ## 3 · Accuracy vs context length
#
# Left, **copy**: the model trains on lengths 1-64. The point at L = 64 is the held-out set
# over the training range (lengths 1-64 mixed); L = 128 and 256 are longer than anything
# seen in training (measured at the end of the run, when the budget includes them - smoke
# runs skip them). Exact match is solid, token accuracy dotted.
#
# Right, **MQAR**: each solid point is a model trained *and* tested at one (sequence length ×
# key-value pairs) config, so the line shows how recall holds up as the context and the
# number of facts to hold grow together. Open diamonds are the length-generalization probe:
# the same trained models tested at a longer config (1024×64 in the full protocol, 128×8
# in demo) they never saw, spread a little around that length so they do not overlap. A
# fixed-size memory (the inverted mixer's M units) has to hold 64 pairs there; softmax
# attention has to attend over positions past its training range.
# Whiskers are std over seeds.

# %%
LONG_COPY = re.compile(r"^(exact_match|token_accuracy)@L(\d+)$")
LONG_MQAR = re.compile(r"^accuracy@(\d+)x(\d+)$")


def seed_stats(runs: list[dict], key: str) -> dict | None:
    return stats([r["metrics"][key] for r in runs if key in r["metrics"]])


if shown is not None:
    cells = cells_by_budget[shown]
    mixers = mixer_order({m for (_, m) in cells if ":" not in m})
    fig = make_subplots(rows=1, cols=2, subplot_titles=("copy: accuracy vs length L", "MQAR: accuracy vs sequence length"))
    plotted = False
    for j, mixer in enumerate(mixers):
        copy_runs = cells.get(("copy", mixer), {}).get("runs", [])
        for metric, dash in (("exact_match", "solid"), ("token_accuracy", "dot")):
            base = seed_stats(copy_runs, metric)
            points = [(64, base)] if base else []
            longer = sorted({int(m.group(2)) for r in copy_runs for k in r["metrics"]
                             if (m := LONG_COPY.match(k)) and m.group(1) == metric})
            points += [(length, seed_stats(copy_runs, f"{metric}@L{length}")) for length in longer]
            xs, ys, errs = [x for x, _ in points], [s["mean"] for _, s in points], [s["std"] for _, s in points]
            if xs:
                plotted = True
                fig.add_trace(go.Scatter(x=xs, y=ys, error_y={"type": "data", "array": errs}, mode="lines+markers",
                                         line={"color": colour(mixer, j), "dash": dash},
                                         name=f"{mixer}: copy {metric.replace('_', ' ')}"), row=1, col=1)
        trained = []
        for (label, mixer_label), cell in cells.items():
            if mixer_label != mixer or not cell["runs"] or cell["runs"][0]["task"] != "mqar":
                continue
            options = cell["runs"][0]["task_options"]
            trained.append((options.get("seq_len", 64), options.get("kv_pairs", 4), label, cell))
        trained.sort()
        if trained:
            plotted = True
            stat_list = [seed_stats(c["runs"], "accuracy") for *_, c in trained]
            fig.add_trace(go.Scatter(
                x=[t[0] for t in trained], y=[s["mean"] for s in stat_list],
                error_y={"type": "data", "array": [s["std"] for s in stat_list]}, mode="lines+markers",
                text=[f"{t[0]}x{t[1]}" for t in trained], textposition="top center",
                line={"color": colour(mixer, j)}, name=f"{mixer}: MQAR trained & tested"), row=1, col=2)
            for position, (seq_len, kv, _label, cell) in enumerate(trained):
                for key in sorted({k for r in cell["runs"] for k in r["metrics"] if LONG_MQAR.match(k)}):
                    stat = seed_stats(cell["runs"], key)
                    long_len = int(LONG_MQAR.match(key).group(1))
                    # Spread the probes of the different trained models a little around their length.
                    spread = 2 ** (0.05 * (position - (len(trained) - 1) / 2) + 0.02 * (j - (len(mixers) - 1) / 2))
                    fig.add_trace(go.Scatter(
                        x=[long_len * spread], y=[stat["mean"]], error_y={"type": "data", "array": [stat["std"]]},
                        mode="markers", marker={"symbol": "diamond-open", "size": 10, "color": colour(mixer, j)},
                        name=f"{mixer}: trained {seq_len}x{kv}, tested {key.split('@')[1]}"), row=1, col=2)
    if plotted:
        fig.update_xaxes(type="log", title_text="sequence length L to copy (64 = training range 1-64)",
                         tickvals=[16, 32, 64, 128, 256, 512], row=1, col=1)
        fig.update_xaxes(type="log", title_text="MQAR sequence length", tickvals=[64, 128, 256, 512, 1024], row=1, col=2)
        fig.update_yaxes(range=[0, 1.05], title_text="accuracy")
        fig.update_layout(title=f"accuracy vs context length, budget {shown}", height=450, width=1150)
        for path in save_figure(fig, "04_benchmarks_length"):
            print(f"wrote {path}")
        fig.show()
    else:
        print(f"budget {shown}: no copy or MQAR runs with run files")

# %% [markdown]
# ## 4 · Ablations of the inverted mixer
#
# Rows are the inverted mixer as protocol v1 runs it (`inverted`, the reference) and every
# variant run with options changed in its name (`inverted:refractory=false`, `conv_width=0`,
# `read_topk=1/2/4`, `n_units=32/128`, ...); columns are task configs, cells the primary
# metric `mean ± std (n=seeds)` with its change from the reference in brackets. Two more
# tables follow where they apply: **steps to target** (copy and MQAR accuracy saturate near 1,
# so a component can matter for how *fast* the task is learned while the final accuracy is
# the same; n there counts the seeds that reached the target) and **length generalization**
# (the `@` probes). Run ablations with e.g.
# `workbench compare --tasks copy,mqar,charlm --mixers inverted,inverted:refractory=false,inverted:conv_width=0 --budget full --seeds 3`.
# What to look for: a component matters for a task when removing it moves the metric by
# more than the seed-to-seed spread - e.g. the refractory allocation for MQAR (similar
# messages overwrite each other without it), the local convolution for copy (order and the
# predecessor), the number of units for the long MQAR configs.

# %%


def ablation_table(cells: dict, rows: list[str], columns: list[tuple], digits: int = 3) -> str:
    """Rows = variants; columns = (task config, header, cell -> stat); [change vs the reference]."""
    lines = ["| variant | " + " | ".join(header for _, header, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    for variant in rows:
        texts = []
        for label, _, get in columns:
            cell, ref = cells.get((label, variant)), cells.get((label, "inverted"))
            stat, ref_stat = (get(cell) if cell else None), (get(ref) if ref else None)
            text = fmt(stat, digits)
            if stat and ref_stat and variant != "inverted":
                text += f" [{stat['mean'] - ref_stat['mean']:+.{digits}f}]"
            texts.append(text)
        name = "`inverted` (reference)" if variant == "inverted" else f"`{variant}`"
        lines.append(f"| {name} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def ablation_views(cells: dict, budget_name: str):
    variants = sorted({m for (_, m) in cells if m.startswith("inverted:")})
    if not variants:
        return [], None
    rows = ["inverted"] + variants
    labels = label_order({lab for (lab, m) in cells if m in variants}, budget_name)
    here = {lab: [cells[(lab, m)] for m in rows if (lab, m) in cells] for lab in labels}
    tables = []
    # 1. The primary metric of every task config.
    columns = [(lab, f"{lab}: {here[lab][0]['primary']}", lambda c: c["metrics"].get(c["primary"])) for lab in labels]
    tables.append(("primary metric", ablation_table(cells, rows, columns)))
    # 2. Sample efficiency where the protocol sets a target (copy, MQAR), where accuracy saturates.
    columns = [(lab, f"{lab}: steps", lambda c: (c.get("to_level") or {}).get("steps")) for lab in labels
               if any((c.get("to_level") or {}).get("kind") == "target" for c in here[lab])]
    if columns:
        tables.append(("steps to target (fewer = more sample-efficient)", ablation_table(cells, rows, columns, 0)))
    # 3. Length probes: metrics measured past the training length (names with '@').
    columns = [(lab, f"{lab}: {name}", lambda c, name=name: c["metrics"].get(name)) for lab in labels
               for name in dict.fromkeys(k for c in here[lab] for k, v in c["metrics"].items() if "@" in k and v)]
    if columns:
        tables.append(("length generalization", ablation_table(cells, rows, columns)))
    # Figure: the primary metric per task config (top) and, where the protocol sets a target,
    # the steps to reach it (bottom) - accuracy often saturates while the speed differs.
    with_target = any((c.get("to_level") or {}).get("kind") == "target" for lab in labels for c in here[lab])
    n_rows = 2 if with_target else 1
    fig = make_subplots(rows=n_rows, cols=len(labels), subplot_titles=labels, vertical_spacing=0.25)
    quantities = [(1, lambda c: c["metrics"].get(c["primary"]), None)]
    if with_target:
        quantities.append((2, lambda c: (c.get("to_level") or {}).get("steps")
                           if (c.get("to_level") or {}).get("kind") == "target" else None, "steps to target"))
    for col, label in enumerate(labels, start=1):
        for row, get, title in quantities:
            drawn = False
            for j, variant in enumerate(rows):
                cell = cells.get((label, variant))
                stat = get(cell) if cell else None
                if stat:
                    drawn = True
                    fig.add_trace(go.Bar(x=[variant.replace("inverted:", "")], y=[stat["mean"]],
                                         error_y={"type": "data", "array": [stat["std"]]},
                                         marker_color="#d62728" if variant == "inverted" else EXTRA_COLOURS[j % 8],
                                         showlegend=False, hovertext=f"n={stat['n']}"), row=row, col=col)
            if drawn:
                primary = here[label][0]["primary"]
                text = title or primary + (" (lower is better)" if primary in LOWER_IS_BETTER else "")
                fig.update_yaxes(title_text=text, row=row, col=col)
                fig.update_xaxes(title_text="variant", tickangle=30, row=row, col=col)
    fig.update_layout(title=f"inverted-mixer ablations, budget {budget_name} (mean ± std over seeds)",
                      height=450 * n_rows, width=max(500, 330 * len(labels)))
    return tables, fig


found_ablation = False
for name in available:
    tables, fig = ablation_views(cells_by_budget[name], name)
    if not tables:
        continue
    display(Markdown(f"### Ablations, budget `{name}`\n\n"
                     + "\n\n".join(f"**{title}**\n\n{table}" for title, table in tables)))
    if name == shown or not found_ablation:
        for path in save_figure(fig, "04_benchmarks_ablation"):
            print(f"wrote {path}")
        fig.show()
    found_ablation = True
if not found_ablation:
    print("no ablation runs (mixer labels like inverted:refractory=false) in any budget; see the command above")

# %% [markdown]
# ## 5 · Char-LM samples
#
# The benchmark deletes its checkpoints to keep `results/` small, so text samples come
# either from a checkpoint you point `checkpoint` at (e.g. from
# `workbench train --task charlm --mixer inverted`), or from a char-LM trained here with the
# protocol's model (d_model 128, one block), once per mixer: `sample_steps` steps (a handful
# in smoke mode, where the "text" is noise). Generation uses `model.generate`, the recurrent
# form - one character at a time with a state of fixed size for the inverted mixer - at
# temperature 0.8 from the same prompt and random seed for each mixer. What to look for:
# word shapes, line breaks and speaker names (`NAME:`) appearing; bpc and samples improve
# together.

# %%
PROMPT = "ROMEO:\n"
samples: dict[str, tuple[str, str]] = {}  # name -> (bpc text, generated text)


def sample_from(model, vocab, n_new: int) -> str:
    prompt_text = PROMPT if all(ch in vocab.index for ch in PROMPT) else vocab.chars[:1]
    device = next(model.parameters()).device
    prompt = vocab.encode(prompt_text)[None].to(device)
    out = model.generate(prompt, n_new, temperature=0.8, generator=torch.Generator(device=device).manual_seed(seed))
    return vocab.decode(out[0].cpu())


if checkpoint:
    model, config, task, payload = model_from_checkpoint(checkpoint)
    if config.task.name != "charlm":
        raise ValueError(f"checkpoint {checkpoint} is a {config.task.name!r} model; samples need a char-LM checkpoint")
    last = payload["history"][-1]["metrics"] if payload.get("history") else {}
    bpc_text = f"bpc {last['bpc']:.3f} at step {payload['step']}" if "bpc" in last else f"step {payload['step']}"
    samples[f"{config.model.mixer} (checkpoint)"] = (bpc_text, sample_from(model, task.vocab, sample_chars))
else:
    steps = 20 if smoke else sample_steps
    n_new = min(sample_chars, 80) if smoke else sample_chars
    options = {"context": 64, "max_eval_windows": 4} if smoke else {"context": 256, "max_eval_windows": 60}
    task = build_task("charlm", options)  # built once: both mixers see the same text and vocabulary
    for mixer in ("transformer", "inverted"):
        spec = RunSpec(
            "charlm-sample", "charlm", options,
            {"steps": steps, "batch_size": 8 if smoke else 32, "eval_every": steps, "warmup_steps": max(1, steps // 10)},
        )
        started = time.perf_counter()
        result = train(run_config(spec, mixer, {}, seed), progress=not smoke, task=task)
        bpc_text = (f"validation bpc {result['metrics']['bpc']:.3f} after {result['steps']} steps "
                    f"({time.perf_counter() - started:.0f}s to train on {result['device']})")
        samples[mixer] = (bpc_text, sample_from(result["model"], task.vocab, n_new))

for name, (bpc_text, text) in samples.items():
    print(f"=== {name}: {bpc_text}")
    print(text)
    print()

# %% [markdown]
# ## Run time

# %%
print(f"notebook ran in {time.perf_counter() - notebook_started:.1f}s (budget shown: {shown})")
if smoke:
    shutil.rmtree(results_path, ignore_errors=True)  # the live smoke compare was only for this run
