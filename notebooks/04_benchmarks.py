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
# # 04 · Benchmarks: protocol v2, every mixer side by side
#
# This notebook reads what the experiments left in `results/` and shows it; it trains nothing
# for the tables (except in smoke mode, below). Protocol v2 (`workbench/experiments/protocol_v2.py`)
# gives every mixer the same model (d_model 128, one block, the shared short causal convolution
# in front of the mixer), the same learning-rate grid (chosen on seed 0 per cell), budget and
# seeds, in Zoology's setting:
#
# * **MQAR** (multi-query associative recall, Zoology's generator with vocabulary 512: Zoology's
#   8,192 leaves every mixer at chance at this CPU budget, `results/v2-vocab8192/README.md`) at
#   (sequence length, key-value pairs) = (64, 4), (128, 8), (256, 16), (512, 64); the (256, 16)
#   models are also evaluated at (512, 32), (1024, 64), (2048, 128), (4096, 64) and (16384, 64),
#   longer than anything they saw;
# * **copy** (lengths up to 64, evaluated at 128 and 256 too);
# * **char-LM** on tiny-shakespeare for 3,000 steps, and for 600 s of wall clock.
#
# Files read (every number below comes from them):
#
# * `results/compare-<experiment>-<budget>.json`: mean ± std over seeds per (cell, mixer), the
#   learning rate chosen, parameters, recurrent state floats, tokens/s;
# * `results/<experiment>/<budget>/<cell>--<variant>--lr<lr>--s<seed>/result.json`: one run,
#   with its evaluation history (the training curves);
# * `results/compare-pareto-<budget>.json`: the Pareto sweep (MQAR (256, 16) accuracy against
#   state size), and the companions `v2-2layer`, `v2-noconv`, `ablation` when present;
# * `results/v1/compare-*.json`: protocol v1 as it ran (transformer vs inverted, no shared conv).
# * `results/recall-anatomy/*.json`: where a seeking model's MQAR recall is lost at length (write or read).
#
# A file that is absent is said to be absent; nothing fails for want of it. With `smoke = True`
# (what the tests use) a tiny protocol v2 and Pareto sweep run live into a temporary directory
# and are shown instead, so the whole path runs in about a minute.

# %% tags=["parameters"]
smoke = False  # True: run a tiny v2 + Pareto sweep live into a temp dir and show it (numbers meaningless)
results_dir = "results"  # where the experiments wrote compare-*.json and their run folders
budget = "full"  # the budget to show; falls back to demo, then smoke, when it has no results
smoke_mixers = ["transformer", "inverted"]  # mixers of the live smoke run
checkpoint = ""  # a char-LM checkpoint.pt for the text samples; empty: train a small one per mixer live
sample_mixers = ["transformer", "inverted"]  # mixers whose samples are trained live when no checkpoint is given
sample_steps = 600  # steps of each live char-LM
sample_chars = 400  # characters generated per sample
seed = 0  # live char-LM training and sampling

# %%
import dataclasses
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from workbench.checkpoint import model_from_checkpoint
from workbench.config import RunConfig
from workbench.experiments import Experiment, get_experiment
from workbench.experiments.pareto import sweep_variants
from workbench.experiments.protocol_v2 import MODEL, mqar_cell
from workbench.experiments.runner import run_experiment
from workbench.lab.corpus import charlm_options
from workbench.lab.results import (
    LOWER_IS_BETTER,
    cell_labels,
    copy_length_points,
    first_budget,
    load_summary,
    mqar_length_points,
    pareto_front,
    primary_metric,
    ranking,
    rows_by_key,
    run_records,
)
from workbench.mixers import MIXERS
from workbench.plotting import mixer_colour, mixer_order, save_figure
from workbench.report import ablation_table, compare_table, v1_table
from workbench.tasks import build_task
from workbench.train import train

notebook_started = time.perf_counter()
repo_results = Path("results")
if smoke:
    # A tiny protocol v2 and Pareto sweep, live, for the mixers named (that exist in this checkout).
    # Char-LM cells read a generated text, so the smoke run needs no download.
    results_path = Path(tempfile.mkdtemp(prefix="workbench-04-"))
    budget = "smoke"
    mixers_here = [m for m in smoke_mixers if m in MIXERS]

    def offline(experiment):
        experiment.cells = [dataclasses.replace(c, task_options={**c.task_options, **charlm_options(True)})
                            if c.task == "charlm" else c for c in experiment.cells]
        return experiment

    started = time.perf_counter()
    v2 = get_experiment("v2", "smoke")
    run_experiment(offline(v2.filtered(variants=[v for v in v2.variants if v.mixer in mixers_here])), results_path,
                   progress=False)
    # The Pareto experiment takes its rates from v2's (256, 16) cell, which the smoke budget lacks:
    # the same sweep is built here on the smoke cell, two widths per mixer.
    chosen = [v for v in sweep_variants(mixers_here) if v.label.endswith(("d_model=64", "d_model=128"))]
    sweep = Experiment("pareto", "smoke", [mqar_cell(256, 16, "smoke")], chosen, seeds=1, model=dict(MODEL))
    run_experiment(sweep, results_path, progress=False)
    print(f"smoke: ran a tiny v2 and Pareto sweep into {results_path} in {time.perf_counter() - started:.1f}s")
else:
    results_path = Path(results_dir)
print(f"reading results from {results_path.resolve()}")

# %% [markdown]
# ## What is there
#
# One line per experiment and budget: whether its summary exists, how many (cell, mixer) rows it
# holds and how many pairs still lack seeds (a summary written while runs were still missing
# lists them as incomplete).

# %%
EXPERIMENTS = ("v2", "pareto", "v2-2layer", "v2-noconv", "ablation")
inventory = []
for name in EXPERIMENTS:
    for b in ("full", "demo", "smoke"):
        summary = load_summary(results_path, name, b)
        if summary is None:
            inventory.append(f"| `{name}` | `{b}` | absent | - | - |")
        else:
            mixers = {row["mixer"] for row in summary["rows"]}
            inventory.append(f"| `{name}` | `{b}` | {len(summary['rows'])} rows, {len(mixers)} mixer(s) | "
                             f"{summary['seeds']} | {len(summary.get('incomplete', []))} |")
display(Markdown("| experiment | budget | summary | seeds per row | pairs lacking seeds |\n|---|---|---|---|---|\n"
                 + "\n".join(inventory)))
shown, v2_summary = first_budget(results_path, "v2", budget)
if shown is None:
    display(Markdown(f"**No protocol v2 results in `{results_path}`** (no `compare-v2-*.json`). Run "
                     "`workbench compare --experiment v2 --budget full` (hours), or set `smoke = True` to run a "
                     "tiny one here. The sections below say what each one would show."))
elif shown != budget:
    display(Markdown(f"**No protocol v2 results at budget `{budget}`**; showing budget `{shown}` instead"
                     + (" - a sanity view, not a result." if shown != "full" else ".")))
print(f"protocol v2 budget shown: {shown}")
records = run_records(results_path, v2_summary) if v2_summary else {}
print(f"run records behind the summary: {sum(len(r) for r in records.values())} in {len(records)} (cell, mixer) pairs")

# %% [markdown]
# ## 1 · The headline table
#
# Every mixer side by side, one row per (cell, metric): mean ± std over seeds (a cell short of
# seeds says so, e.g. `(2/3)`), then the learning rate each mixer chose and the steps it ran
# (copy and MQAR stop early at 0.99), and per mixer its parameters, its recurrent state in floats
# (after the cell's context; `grows` marks a KV cache) and its training speed. The table is
# rendered by `workbench.report.compare_table`, the same code that writes the README's table.
# For bpc lower is better; differences smaller than the std across seeds are not differences.

# %%
if v2_summary:
    display(Markdown(compare_table(v2_summary)))
else:
    print("no protocol v2 summary: nothing to tabulate")

# %% [markdown]
# The same numbers as a figure: one panel per cell, its primary metric, a bar per mixer (height:
# mean; whisker: std over seeds) and one dot per seed from the run records.

# %%
def headline_figure(summary: dict, records: dict) -> go.Figure:
    labels = cell_labels(summary)
    by_key = rows_by_key(summary)
    variants = mixer_order({row["variant"] for row in summary["rows"]})
    n_cols = min(3, len(labels))
    n_rows = -(-len(labels) // n_cols)
    titles = [f"{label}: {primary_metric(summary, label)}"
              + (" (lower is better)" if primary_metric(summary, label) in LOWER_IS_BETTER else "") for label in labels]
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=titles, vertical_spacing=0.22 / n_rows + 0.08,
                        horizontal_spacing=0.07)
    for index, label in enumerate(labels):
        row, col = index // n_cols + 1, index % n_cols + 1
        metric = primary_metric(summary, label)
        for variant in variants:
            cell = by_key.get((label, variant))
            stat = cell["metrics"].get(metric) if cell else None
            if not stat:
                continue
            fig.add_trace(go.Bar(x=[variant], y=[stat["mean"]], marker_color=mixer_colour(variant), name=variant,
                                 error_y=dict(type="data", array=[stat["std"]], visible=stat["n"] > 1, color="#333"),
                                 legendgroup=variant, showlegend=False,
                                 hovertemplate=f"{variant}: %{{y:.3f}} ± {stat['std']:.3f} (n={stat['n']})<extra></extra>"),
                          row=row, col=col)
            seeds = [r["metrics"][metric] for r in records.get((label, variant), []) if metric in r["metrics"]]
            if len(seeds) > 1:
                fig.add_trace(go.Scatter(x=[variant] * len(seeds), y=seeds, mode="markers", showlegend=False,
                                         marker=dict(color="black", size=5, symbol="circle-open"),
                                         hovertemplate="seed: %{y:.3f}<extra></extra>"), row=row, col=col)
        fig.update_xaxes(tickangle=40, row=row, col=col)
    fig.update_layout(title=f"protocol v2, budget {summary['budget']}: primary metric per cell "
                            f"(mean ± std over {summary['seeds']} seed(s); circles: seeds)",
                      height=330 * n_rows + 80, width=1150, bargap=0.25)
    return fig


if v2_summary:
    fig = headline_figure(v2_summary, records)
    save_figure(fig, "04_benchmarks_headline")
    fig.show()

# %% [markdown]
# ## 2 · Training curves
#
# Each line is one seed of one mixer (at the learning rate it chose): the cell's primary metric at
# each evaluation, against steps (sample efficiency) and against training wall time (compute
# efficiency on this device; evaluation time excluded). Copy and MQAR runs stop once they reach
# 0.99, which is why some lines end early; the 600-s char-LM cell runs as many steps as fit.

# %%
def curves_figure(summary: dict, records: dict, x_key: str, x_title: str) -> go.Figure | None:
    labels = [label for label in cell_labels(summary) if any(k[0] == label for k in records)]
    if not labels:
        return None
    n_cols = min(3, len(labels))
    n_rows = -(-len(labels) // n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=[f"{lab}: {primary_metric(summary, lab)}" for lab in labels],
                        vertical_spacing=0.2 / n_rows + 0.07, horizontal_spacing=0.07)
    legend = set()
    for index, label in enumerate(labels):
        row, col = index // n_cols + 1, index % n_cols + 1
        metric = primary_metric(summary, label)
        history_metric = "neg_bpc" if metric == "bpc" else metric
        for variant in mixer_order({v for (lab, v) in records if lab == label}):
            for record in records[(label, variant)]:
                points = [(h[x_key], h["metrics"].get(metric, -h["metrics"].get(history_metric, math.nan)
                                                        if metric == "bpc" else math.nan)) for h in record.get("history", [])]
                points = [(x, y) for x, y in points if not math.isnan(y)]
                if not points:
                    continue
                fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines",
                                         line=dict(color=mixer_colour(variant), width=1.6), name=variant,
                                         legendgroup=variant, showlegend=variant not in legend,
                                         hovertemplate=f"{variant}, seed {record.get('seed')}: %{{y:.3f}}<extra></extra>"),
                              row=row, col=col)
                legend.add(variant)
        fig.update_xaxes(title_text=x_title, row=row, col=col)
        if metric in LOWER_IS_BETTER:
            fig.update_yaxes(title_text=f"{metric} (lower is better)", row=row, col=col)
    fig.update_layout(title=f"training curves, protocol v2 budget {summary['budget']}: primary metric vs {x_title}",
                      height=320 * n_rows + 90, width=1150, legend=dict(orientation="h", y=-0.12))
    return fig


if v2_summary:
    for x_key, x_title, stem in (("step", "step", "04_benchmarks_curves_step"),
                                 ("time_s", "training time (s)", "04_benchmarks_curves_time")):
        fig = curves_figure(v2_summary, records, x_key, x_title)
        if fig is None:
            print("no run records with histories next to the summary: no curves")
            break
        save_figure(fig, stem)
        fig.show()

# %% [markdown]
# ## 3 · Accuracy against state size: the Pareto sweep
#
# A recurrent mixer holds a state of fixed size; recall quality is bounded by it (Zoology's
# argument). The Pareto sweep (`workbench/experiments/pareto.py`) trains every mixer on MQAR
# (256, 16) at d_model 64, 128 and 256 and at d_model 128 with its state knob (units, window,
# slots, state dimension, feature dimension, heads) halved and doubled, one seed each at the rate
# protocol v2 chose. The x axis is the state each run reports (floats after 256 tokens, one
# sequence; for softmax attention the KV cache). Filled circles: protocol v2's own (256, 16)
# rows (mean ± std over seeds). A point is on the **front** when no other run has both a smaller
# state and a higher accuracy.

# %%
pareto_budget, pareto_summary = first_budget(results_path, "pareto", shown or budget)
pareto_points: list[tuple[float, float, str]] = []
if pareto_summary is None:
    display(Markdown(f"**No Pareto sweep in `{results_path}`** (`compare-pareto-full.json` is absent). Run "
                     "`workbench compare --experiment pareto --budget full` after protocol v2's (256, 16) grid."))
else:
    fig = go.Figure()
    for variant in mixer_order({row["variant"] for row in pareto_summary["rows"]}):
        row = rows_by_key(pareto_summary)[("mqar-256x16", variant)] if ("mqar-256x16", variant) in rows_by_key(
            pareto_summary) else None
        if not row or not row.get("state_floats") or "accuracy" not in row["metrics"]:
            continue
        x, y = row["state_floats"]["floats"], row["metrics"]["accuracy"]["mean"]
        pareto_points.append((x, y, variant))
    front = pareto_front(pareto_points)
    for mixer in mixer_order({p[2].split("@")[0].split(":")[0] for p in pareto_points}):
        mine = sorted((p for p in pareto_points if p[2].split("@")[0].split(":")[0] == mixer), key=lambda p: p[0])
        fig.add_trace(go.Scatter(x=[p[0] for p in mine], y=[p[1] for p in mine], mode="markers+lines",
                                 line=dict(color=mixer_colour(mixer), width=1, dash="dot"), name=mixer, legendgroup=mixer,
                                 marker=dict(color=mixer_colour(mixer), size=[12 if p[2] in front else 8 for p in mine],
                                             symbol=["diamond" if p[2] in front else "circle-open" for p in mine],
                                             line=dict(width=2)),
                                 text=[p[2] for p in mine], hovertemplate="%{text}: %{y:.3f} at %{x:,} floats<extra></extra>"))
    if v2_summary:
        for variant in mixer_order({row["variant"] for row in v2_summary["rows"]}):
            row = rows_by_key(v2_summary).get(("mqar-256x16", variant))
            if row and row.get("state_floats") and "accuracy" in row["metrics"]:
                stat = row["metrics"]["accuracy"]
                fig.add_trace(go.Scatter(x=[row["state_floats"]["floats"]], y=[stat["mean"]], mode="markers",
                                         error_y=dict(type="data", array=[stat["std"]], visible=stat["n"] > 1),
                                         marker=dict(color=mixer_colour(variant), size=11), legendgroup=variant,
                                         showlegend=False, name=f"{variant} (v2)",
                                         hovertemplate=f"{variant}, protocol v2: %{{y:.3f}} (n={stat['n']})<extra></extra>"))
    fig.update_xaxes(type="log", title_text="recurrent state (floats, one sequence of 256 tokens)")
    fig.update_yaxes(title_text="MQAR (256, 16) accuracy", range=[-0.02, 1.02])
    fig.update_layout(title=f"accuracy vs state size, Pareto sweep budget {pareto_budget} "
                            f"(diamonds: on the front; filled: protocol v2 rows)", height=520, width=1000)
    save_figure(fig, "04_benchmarks_pareto")
    fig.show()
    print("on the Pareto front: " + ", ".join(front) if front else "no points with a state size and an accuracy")

# %% [markdown]
# ## 4 · Accuracy against length
#
# Left, **MQAR**: every mixer's (256, 16) model at its own length and at (512, 32), (1024, 64)
# and (2048, 128): longer contexts *and* more facts to hold than in training (solid). Dotted: the
# cells trained and tested at one configuration each, (64, 4) to (512, 64). Right, **copy**:
# exact match over the training lengths (1 to 64, shown at 64) and at 128 and 256, never seen in
# training. Whiskers: std over seeds.

# %%
def length_figure(summary: dict) -> go.Figure | None:
    by_key = rows_by_key(summary)
    variants = mixer_order({row["variant"] for row in summary["rows"]})
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "MQAR: accuracy vs sequence length", "copy: exact match vs length"))
    drawn = False
    for variant in variants:
        colour = mixer_colour(variant)
        trained_here = [(label, by_key[(label, variant)]) for label in cell_labels(summary)
                        if label.startswith("mqar-") and (label, variant) in by_key]
        extrapolating = [(label, row) for label, row in trained_here if len(mqar_length_points(row)) > 1]
        for label, row in extrapolating:
            points = mqar_length_points(row)
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[2]["mean"] for p in points], mode="lines+markers",
                                     error_y=dict(type="data", array=[p[2]["std"] for p in points]),
                                     line=dict(color=colour, width=2.2), name=variant, legendgroup=variant,
                                     text=[f"{p[0]}x{p[1]}" for p in points],
                                     hovertemplate=f"{variant}, trained {label}, tested %{{text}}: %{{y:.3f}}<extra></extra>"),
                          row=1, col=1)
            drawn = True
        own = sorted(mqar_length_points(row)[0] for _, row in trained_here if mqar_length_points(row))
        if len(own) > 1:
            fig.add_trace(go.Scatter(x=[p[0] for p in own], y=[p[2]["mean"] for p in own], mode="lines+markers",
                                     error_y=dict(type="data", array=[p[2]["std"] for p in own]),
                                     line=dict(color=colour, dash="dot", width=1.4), marker=dict(symbol="square-open"),
                                     legendgroup=variant, showlegend=not extrapolating, name=variant,
                                     text=[f"{p[0]}x{p[1]}" for p in own],
                                     hovertemplate=f"{variant}, trained and tested %{{text}}: %{{y:.3f}}<extra></extra>"),
                          row=1, col=1)
            drawn = True
        copy_row = by_key.get(("copy", variant))
        if copy_row:
            points = copy_length_points(copy_row)
            train_len = max((r["config"]["task"]["options"].get("max_len", 64)
                             for r in records.get(("copy", variant), [])), default=64)
            xs = [train_len if length is None else length for length, _ in points]
            fig.add_trace(go.Scatter(x=xs, y=[s["mean"] for _, s in points], mode="lines+markers",
                                     error_y=dict(type="data", array=[s["std"] for _, s in points]),
                                     line=dict(color=colour, width=2.2), legendgroup=variant, name=variant,
                                     showlegend=not trained_here, hovertemplate=f"{variant}: L=%{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=1, col=2)
            drawn = True
    if not drawn:
        return None
    # Ticks at the lengths measured, not at every log decade's minor ticks.
    xs = {col: sorted({x for trace in fig.select_traces(col=col, row=1) for x in (trace.x or ())}) for col in (1, 2)}
    fig.update_xaxes(type="log", title_text="MQAR sequence length", tickvals=xs[1], row=1, col=1)
    fig.update_xaxes(type="log", title_text="copy length L (first point: the training range)", tickvals=xs[2], row=1, col=2)
    fig.update_yaxes(title_text="accuracy", range=[-0.02, 1.04], row=1, col=1)
    fig.update_yaxes(title_text="exact match", range=[-0.02, 1.04], row=1, col=2)
    fig.update_layout(title=f"accuracy vs length, protocol v2 budget {summary['budget']} "
                            "(solid: one model tested longer; dotted: trained at each length)", height=480, width=1150)
    return fig


fig = length_figure(v2_summary) if v2_summary else None
if fig is None:
    print("no MQAR or copy rows: no length figure")
else:
    save_figure(fig, "04_benchmarks_length")
    fig.show()

# %% [markdown]
# ### Where a seeking model's recall is lost at length
#
# `workbench recall-anatomy MODEL --out results/recall-anatomy/<run>.json` (a model kept by
# `workbench compare --keep-models`) traces every MQAR query back to the message that carries its
# answer and splits the accuracy exactly: *share kept* (at least half of what the pair's unit took
# is still there when it is asked: the write) x *accuracy when kept* (the read), plus what is lost.
# Read from the repository's `results/recall-anatomy/` in every mode; absent files are said absent.

# %%
anatomy = {path.stem: data for path in sorted((repo_results / "recall-anatomy").glob("*.json"))
           if (data := json.loads(path.read_text())).get("kind") == "recall-anatomy"}  # MQAR; multi-stream: notebook 02
if not anatomy:
    print("results/recall-anatomy holds no JSON (absent)")
else:
    fig = make_subplots(rows=1, cols=3, subplot_titles=("accuracy", "share of pairs kept until asked (write)",
                                                        "accuracy when kept (read)"))
    for name, record in anatomy.items():
        rows = sorted(record["rows"], key=lambda r: (r["seq_len"], r["kv_pairs"]))
        xs = [f"{r['seq_len']}x{r['kv_pairs']}" for r in rows]
        for col, key in enumerate(("accuracy", "share_kept", "accuracy_when_kept"), 1):
            fig.add_trace(go.Scatter(x=xs, y=[r[key] for r in rows], mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=col == 1), row=1, col=col)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(title_text="MQAR (length x pairs); trained at 256x16")
    fig.update_layout(title="seeking on MQAR at length: the write and the read", height=420, width=1150)
    save_figure(fig, "04_benchmarks_recall_anatomy")
    fig.show()
    lines = ["| model | cell | accuracy | kept | acc. when kept | acc. when lost | read weight on holder |",
             "|---|---|---|---|---|---|---|"]
    for name, record in anatomy.items():
        for r in sorted(record["rows"], key=lambda r: (r["seq_len"], r["kv_pairs"])):
            cells = [r[k] for k in ("accuracy", "share_kept", "accuracy_when_kept", "accuracy_when_lost",
                                    "read_weight_on_holder_when_kept")]
            lines.append(f"| {name} | ({r['seq_len']}, {r['kv_pairs']}) | "
                         + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    display(Markdown("\n".join(lines)))

# %% [markdown]
# ## 5 · Companion experiments
#
# Each when its summary exists: `v2-2layer` (MQAR (256, 16) with two blocks), `v2-noconv` (no
# shared short convolution: what the front end buys each mixer) and `ablation` (the inverted
# mixer's switches one at a time, with the change from the default in brackets).

# %%
companions = {}
for name in ("v2-2layer", "v2-noconv", "ablation"):
    found, summary = first_budget(results_path, name, shown or budget)
    companions[name] = summary
    if summary is None:
        display(Markdown(f"`{name}`: no summary in `{results_path}` (absent)."))
    else:
        table = ablation_table(summary) if name == "ablation" else compare_table(summary)
        display(Markdown(f"### `{name}`, budget `{found}`\n\n{table}"))

# %% [markdown]
# ## 6 · Protocol v1, as it ran
#
# Protocol v1 compared the transformer and the inverted mixer only, without the shared short
# convolution in front of the transformer (the inverted mixer had its own); its files are kept
# under `results/v1/`, read from the repository in every mode.

# %%
v1_found = False
for b in ("full", "demo"):
    path = repo_results / "v1" / f"compare-{b}.json"
    if path.is_file():
        display(Markdown(f"### Protocol v1, budget `{b}`\n\n" + v1_table(json.loads(path.read_text()))))
        v1_found = True
if not v1_found:
    print("results/v1 holds no compare-*.json")

# %% [markdown]
# ## 7 · Char-LM samples
#
# The experiments delete their checkpoints to keep `results/` small (unless run with `--keep-models`), so text samples come from a
# checkpoint you point `checkpoint` at, or from a char-LM trained here with protocol v2's model
# for each mixer in `sample_mixers` (`sample_steps` steps; a handful in smoke mode, where the
# text is noise). Generation uses `model.generate`, the recurrent form, at temperature 0.8 from
# the same prompt and random seed for each mixer.

# %%
PROMPT = "ROMEO:\n"
samples: dict[str, tuple[str, str]] = {}


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
    options = charlm_options(smoke, context=64 if smoke else 256, max_eval_windows=4 if smoke else 60)
    task = build_task("charlm", options)  # built once: every mixer sees the same text and vocabulary
    for mixer in [m for m in sample_mixers if m in MIXERS]:
        config = RunConfig.from_dict({
            "task": {"name": "charlm", "options": options}, "model": {**MODEL, "mixer": mixer},
            "train": {"steps": steps, "batch_size": 8 if smoke else 32, "eval_every": steps,
                      "warmup_steps": max(1, steps // 10), "checkpoint_every": steps, "seed": seed}})
        started = time.perf_counter()
        model, result = train(config, progress=not smoke, task=task)
        bpc_text = (f"validation bpc {result['metrics']['bpc']:.3f} after {result['steps']} steps "
                    f"({time.perf_counter() - started:.0f}s to train on {result['device']})")
        samples[mixer] = (bpc_text, sample_from(model, task.vocab, n_new))

for name, (bpc_text, text) in samples.items():
    print(f"=== {name}: {bpc_text}")
    print(text)
    print()

# %% [markdown]
# ## Findings
#
# Computed from the summaries above (nothing here is typed by hand): per cell, which mixer leads
# and whether its lead exceeds the spread across seeds; where the inverted mixer ranks; how recall
# holds up with length; which runs sit on the accuracy/state front.

# %%
def spread(stat: dict) -> float:
    return stat["std"] if stat["n"] > 1 else 0.0


findings: list[str] = []
if v2_summary:
    for label in cell_labels(v2_summary):
        metric = primary_metric(v2_summary, label)
        order = ranking(v2_summary, label, metric)
        if not order:
            continue
        (lead, best), rest = order[0], order[1:]
        text = f"**{label}** ({metric}{', lower is better' if metric in LOWER_IS_BETTER else ''}): `{lead}` leads with {best['mean']:.3f}"
        if rest:
            runner, second = rest[0]
            gap = abs(best["mean"] - second["mean"])
            if gap == 0:
                text = f"**{label}** ({metric}): `{lead}` and `{runner}` tie at {best['mean']:.3f}"
            elif min(best["n"], second["n"]) < 2:
                text += f", {gap:.3f} ahead of `{runner}` ({second['mean']:.3f}); one seed, so no error bar to judge by"
            else:
                clear = gap > spread(best) + spread(second)
                text += (f", {gap:.3f} ahead of `{runner}` ({second['mean']:.3f}); "
                         + ("more than their two std together" if clear else "within the std across seeds"))
        names = [v for v, _ in order]
        if "inverted" in names and lead != "inverted":
            inv = dict(order)["inverted"]
            text += f"; `inverted` ranks {names.index('inverted') + 1} of {len(names)} ({inv['mean']:.3f})"
        findings.append(text + ".")
    by_key = rows_by_key(v2_summary)
    longest = {}
    for (_label, variant), row in by_key.items():
        points = mqar_length_points(row)
        if len(points) > 1:
            longest[variant] = points[-1]
    if longest:
        s_len, kv, _ = next(iter(longest.values()))
        order = sorted(longest.items(), key=lambda item: -item[1][2]["mean"])
        findings.append(f"**MQAR at the longest evaluation ({s_len}, {kv})**, trained at (256, 16): "
                        + ", ".join(f"`{v}` {p[2]['mean']:.3f}" for v, p in order) + ".")
    copies = {variant: copy_length_points(row) for (label, variant), row in by_key.items() if label == "copy"}
    longer = {v: pts[-1] for v, pts in copies.items() if len(pts) > 1 and pts[-1][0] is not None}
    if longer:
        length = max(p[0] for p in longer.values())
        findings.append(f"**copy at L={length}** (beyond training): "
                        + ", ".join(f"`{v}` {p[1]['mean']:.3f}" for v, p in
                                    sorted(longer.items(), key=lambda item: -item[1][1]["mean"]) if p[0] == length) + ".")
    incomplete = v2_summary.get("incomplete", [])
    if incomplete:
        findings.append(f"{len(incomplete)} (cell, mixer) pair(s) still lack seeds or grid runs; their rows are "
                        "missing or marked `(n/expected)` above.")
else:
    findings.append(f"No protocol v2 summary in `{results_path}`: nothing to conclude yet.")
if pareto_points:
    front = pareto_front(pareto_points)
    best = max(pareto_points, key=lambda p: p[1])
    findings.append(f"**Pareto sweep** ({len(pareto_points)} runs): on the front are " + ", ".join(f"`{n}`" for n in front)
                    + f"; the highest accuracy, {best[1]:.3f}, takes {best[0]:,.0f} state floats (`{best[2]}`).")
elif pareto_summary is None:
    findings.append("The Pareto sweep has not been run (no `compare-pareto-*.json`).")
if smoke:
    findings.append("Smoke run: 12 training steps per run, so these numbers say nothing about the mixers.")
display(Markdown("\n".join(f"- {line}" for line in findings)))
print(f"notebook ran in {time.perf_counter() - notebook_started:.1f}s (budget shown: {shown})")
if smoke:
    shutil.rmtree(results_path, ignore_errors=True)  # the live smoke run was only for this notebook
