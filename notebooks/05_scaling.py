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
# # 05 · Scaling: every mixer's time, memory and distance to the machine's limit vs sequence length
#
# This notebook reads what `workbench bench scaling` (`make bench-scaling`; code in
# `workbench/bench/`: `scaling` runs it, `phases` measures, `costs` counts FLOPs, `roofline`
# measures the peak) left in `results/` and shows it. It measures nothing itself, except in smoke
# mode. Two kinds of files:
#
# - `results/scaling-<device>.json`: **every registered mixer** side by side in one run, one block
#   each at the same d_model and the same tokens per batch, n from 256 to 64K: training step,
#   prefill, decode (the plain recurrent step and the fused one of `workbench.fast`, at batch 1 and
#   at a serving batch), peak memory, state bytes, and the FLOPs each phase executed as a fraction
#   of the peak FLOP/s measured in the same run (the **roofline column**);
# - `results/long-context-<device>[-bf16].json`: every constant-state mixer's block stepped over a
#   million tokens, in windows.
#
# Sections: 1 what is measured and the full table; 2 training step vs n; 3 peak memory; 4 prefill
# throughput; 5 decode latency vs context (plain and fused, batch 1 and batched) and the state
# carried; 6 the roofline; 7 energy ESTIMATES; 8 the million-token run; 9 the targets of the speed
# issue, as measured; 10 findings computed from these numbers.
#
# With `smoke = True` (the tests) it runs a tiny benchmark of every mixer (n = 64, 128, plain
# phases only: the fused step compiles for tens of seconds) and a 400-token long run live into a
# temporary directory and shows those; the numbers are meaningless.

# %% tags=["parameters"]
smoke = False  # True: run a tiny benchmark live into a temp dir and show it (numbers meaningless)
results_dir = "results"  # where `workbench bench scaling` wrote scaling-*.json and long-context-*.json
device = "all"  # "all", or one device slug (e.g. "cpu-2threads"; a prefix like "cpu" works too)
target_min_n = 1024  # the targets hold at every n from this length up (training vs every peer, memory)
decode_baseline_s = 1.2e-3  # the inverted decode step before this work (issue 20): 1.2 ms per token
decode_speedup_target = 5.0  # the fused inverted step must be at least this much faster than the baseline
memory_slope_target = 1.05  # the inverted per-sequence memory slope must be at most this

# %%
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from workbench.bench.long_context import run_long_recurrent
from workbench.bench.scaling import run_scaling
from workbench.bench.tables import long_context_markdown, scaling_markdown
from workbench.plotting import MIXER_ORDER, mixer_colour, save_figure

notebook_started = time.perf_counter()
FIGURE_FORMATS = ("html",) if smoke else None  # smoke: no PNG/SVG export (a headless browser per figure)
NOTE = "smoke run of notebook 05 (numbers meaningless)"

if smoke:
    results_path = Path(tempfile.mkdtemp(prefix="workbench-05-"))
    started = time.perf_counter()
    run_scaling(lengths=(64, 128), tokens_per_batch=256, repeats=1, decode_steps=3, time_limit_s=60.0,
                out=results_path, threads=1, min_fit_n=64, progress=False, phases=("decode", "prefill", "train"),
                peak_sizes=(128, 256), note=NOTE)
    run_long_recurrent(400, chunk=100, out=results_path, threads=1, progress=False, note=NOTE)
    target_min_n = 64
    print(f"smoke: a tiny scaling run and long run into {results_path} in {time.perf_counter() - started:.1f}s")
else:
    results_path = Path(results_dir)
print(f"reading results from {results_path.resolve()}")

# %% [markdown]
# ## What is there
#
# Every `scaling-*.json` and `long-context-*.json` in the results directory (`device` keeps one
# device or all). A file with `complete: false` is a run in progress or stopped: it holds the
# points measured so far. A schema-1 file (before this notebook's revision: two mixers, no fused
# decode, no roofline) is shown with what it has.

# %%


def wanted(label: str) -> bool:
    choices = [c.strip() for c in str(device or "all").split(",") if c.strip()]
    return not choices or "all" in choices or any(label == c or label.startswith(c + "-") for c in choices)


def load(prefix: str, kind: str) -> dict[str, dict]:
    found = {}
    for path in sorted(results_path.glob(f"{prefix}-*.json")):
        label = path.stem[len(prefix) + 1:]
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"skipped unreadable {path} ({type(exc).__name__})")
            continue
        if data.get("kind") == kind and wanted(label):
            found[label] = data
    return found


def long_runs_of(data: dict) -> dict[str, dict]:
    """mixer -> run; a schema-1 file (the inverted block only, no `runs`) as one run."""
    if "runs" in data:
        return data["runs"]
    settings = data["settings"]
    return {"inverted": {"status": "ok", "step": "plain Block.step", "tokens_done": settings["tokens_done"],
                         "stopped_early": data.get("stopped_early"), "wall_s": data.get("wall_s"),
                         "windows": data["windows"], "summary": data["summary"]}}


scaling = load("scaling", "scaling")
long_files = load("long-context", "long-context")
for label, result in scaling.items():
    s, m = result["settings"], result.get("machine", {})
    print(f"scaling {label:<16} schema {result.get('schema')}, {'complete' if result.get('complete') else 'INCOMPLETE'}, "
          f"{len(result['points'])} points, mixers {s['mixers']}, n {s['lengths']}, commit "
          f"{str(result.get('git_commit'))[:12]}, load average {m.get('load_average_start')} -> "
          f"{m.get('load_average_end')}" + (f"; note: {result['note']}" if result.get("note") else ""))
for label, data in long_files.items():
    print(f"long-context {label:<11} mixers {list(long_runs_of(data))}, dtype {data['settings'].get('dtype', 'float32')}")
if not scaling:
    display(Markdown(f"**No scaling results in `{results_path}`**. Run `make bench-scaling`, or set `smoke = True`."))

# %% [markdown]
# ## Helpers
#
# A point is one (mixer, n); each phase has a `status`: `ok`, `skipped` (out of the time or the
# memory limit, then not tried at larger n) or `error`. Only `ok` values are drawn; the others are
# listed under each figure, never drawn as zero. Slopes: `numpy.polyfit` of log value on log n.

# %%


def fmt_n(n: float) -> str:
    n = int(round(n))
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else f"{n:,}"


def mixers_of(result: dict) -> list[str]:
    names = result["settings"]["mixers"]
    return [m for m in MIXER_ORDER if m in names] + [m for m in names if m not in MIXER_ORDER]


def points_of(result: dict, mixer: str) -> list[dict]:
    return sorted((p for p in result["points"] if p["mixer"] == mixer), key=lambda p: p["n"])


def get(point: dict, phase: str, key: str, sub: str | None = None):
    res = point.get(phase) or {}
    if res.get("status") != "ok":
        return None
    return (res.get(sub) or {}).get(key) if sub else res.get(key)


def why(point: dict, phase: str) -> str:
    res = point.get(phase)
    if res is None:
        return "not run"
    reason = str(res.get("reason", ""))
    if res.get("status") == "skipped":
        return "out of time" if reason.startswith("out of time") else (
            "out of memory" if reason.startswith("out of memory") else "skipped")
    return f"{res.get('status')}: {reason.splitlines()[0][:100] if reason else '-'}"


def series(result: dict, mixer: str, phase: str, key: str, per_sequence: bool = False, sub: str | None = None):
    ns, values, missing = [], [], []
    for p in points_of(result, mixer):
        v = get(p, phase, key, sub)
        if v is None:
            if phase in result["settings"].get("phases", ("train", "prefill", "decode")):
                missing.append((p["n"], why(p, phase)))
            continue
        ns.append(p["n"])
        values.append(v / p["batch"] if per_sequence else v)
    return ns, values, missing


def fit(ns, values, lo: float = 0) -> float | None:
    pairs = [(n, v) for n, v in zip(ns, values) if n >= lo and v and v > 0]
    if len(pairs) < 2:
        return None
    return float(np.polyfit(np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs]), 1)[0])


def log_x(fig, lengths, cells, title="sequence length n (log)") -> None:
    ticks = sorted(set(lengths))
    for row, col in cells:
        fig.update_xaxes(type="log", title_text=title, tickvals=ticks, ticktext=[fmt_n(n) for n in ticks],
                         row=row, col=col)


def missing_note(result_label: str, result: dict, phases: tuple[str, ...]) -> None:
    notes = [f"- `{result_label}` {p['mixer']} n={fmt_n(p['n'])} {phase}: **{why(p, phase)}**"
             for phase in phases for p in result["points"]
             if phase in result["settings"].get("phases", ("train", "prefill", "decode"))
             and (p.get(phase) or {}).get("status") != "ok"]
    if notes:
        display(Markdown("**Not measured** (not drawn):\n\n" + "\n".join(notes)))


def line(fig, result, label, mixer, ns, ys, row, col, name, dash="solid", show=True):
    fig.add_trace(go.Scatter(x=ns, y=ys, mode="lines+markers", name=name, legendgroup=mixer, showlegend=show,
                             line={"color": mixer_colour(mixer), "dash": dash}, marker={"size": 7}), row=row, col=col)


all_lengths = sorted({n for r in scaling.values() for n in r["settings"]["lengths"]})

# %% [markdown]
# ## 1 · What is measured, and how
#
# One **block** per mixer (layer norm, the shared short-convolution front end, the mixer, a
# residual, layer norm, an MLP, a residual) fed random embeddings: no embedding table, no head.
# Every length uses the **same number of tokens per batch** (batch = tokens ÷ n), so a cost per
# token that does not depend on n draws a flat time-per-step line, and attention's (each token
# reads every earlier one) slope 1. Medians of repeats after a warm-up, each (mixer, n) in a fresh
# process, every mixer in the same run. The wording below is printed from each file.

# %%
for label, result in scaling.items():
    s, machine = result["settings"], result.get("machine", {})
    lines = [f"### `{label}`", "", f"- **unit**: {result.get('unit')}",
             f"- **machine**: {machine.get('cpu')}, {machine.get('usable_cpus')} usable CPU(s), torch "
             f"{result.get('torch')}, {s['threads']} thread(s); load average {machine.get('load_average_start')} at "
             f"the start, {machine.get('load_average_end')} at the end (a shared machine inflates times)",
             f"- **settings**: d_model {s['d_model']}, MLP ratio {s['mlp_ratio']}, {s['tokens_per_batch']:,} tokens per "
             f"batch, repeats {s['repeats']}, decode steps {s['decode_steps']}, fused decode "
             f"{s.get('fused_backend', 'not run')} at batch 1 and {s.get('decode_batch', '-')}, time limit "
             f"{s['time_limit_s_per_phase']:g} s per phase"]
    for mixer, info in result.get("mixers", {}).items():
        lines.append(f"- **{mixer}**: {info.get('parameters_block', 0):,} parameters in the block "
                     f"({info.get('parameters_mixer', 0):,} in the mixer); FLOPs from "
                     f"{'a formula' if info.get('flop_formula', True) else 'torch FlopCounterMode'}; options: "
                     + ", ".join(f"{k}={v}" for k, v in info.get("options", {}).items()))
    lines += ["- **methods**:"] + [f"  - *{k}*: {v}" for k, v in result.get("methods", {}).items()]
    if result.get("schema", 1) >= 2:
        lines += ["", scaling_markdown(result)]
    display(Markdown("\n".join(lines)))

# %% [markdown]
# ## 2 · Training step time vs n
#
# Left: one training step (forward + backward of one block) at the fixed tokens per step, log-log.
# Right: the inverted block's time over each peer's; below 1 the inverted block trains faster.

# %%
for label, result in scaling.items():
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("ms per training step", "time ratio inverted / peer (< 1: inverted faster)"))
    inv = {p["n"]: get(p, "train", "median_s") for p in points_of(result, "inverted")}
    for mixer in mixers_of(result):
        ns, ts, _ = series(result, mixer, "train", "median_s")
        line(fig, result, label, mixer, ns, [t * 1e3 for t in ts], 1, 1, f"{mixer} (slope {fit(ns, ts) or 0:.2f})")
        if mixer != "inverted":
            pairs = [(n, inv[n] / t) for n, t in zip(ns, ts) if inv.get(n)]
            line(fig, result, label, mixer, [n for n, _ in pairs], [r for _, r in pairs], 1, 2, mixer, show=False)
    fig.add_hline(y=1.0, line={"color": "#999", "dash": "dot"}, row=1, col=2)
    log_x(fig, all_lengths, [(1, 1), (1, 2)])
    fig.update_yaxes(type="log", title_text="ms (log)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="ratio (log)", row=1, col=2)
    fig.update_layout(title=f"training step, one block, {label}", height=480, width=1250)
    save_figure(fig, "05_scaling_train_time", FIGURE_FORMATS)
    fig.show()
    missing_note(label, result, ("train",))

# %% [markdown]
# ## 3 · Peak memory vs n
#
# Peak memory of a training step and of a prefill above what the process held before the phase
# (CPU: peak resident memory, VmHWM). At fixed tokens per step, memory linear in n per sequence is
# a flat line (per-step slope 0, per-sequence slope 1).

# %%
for label, result in scaling.items():
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=("training: peak MiB", "prefill: peak MiB"))
    for mixer in mixers_of(result):
        for col, phase in enumerate(("train", "prefill"), 1):
            ns, mem, _ = series(result, mixer, phase, "peak_mem_bytes")
            line(fig, result, label, mixer, ns, [m / 2**20 for m in mem], 1, col, mixer, show=col == 1)
    log_x(fig, all_lengths, [(1, 1), (1, 2)])
    fig.update_yaxes(type="log", title_text="MiB above the phase start (log)")
    fig.update_layout(title=f"peak memory, one block, the same tokens per step at every n, {label}", height=480, width=1250)
    save_figure(fig, "05_scaling_memory", FIGURE_FORMATS)
    fig.show()
    missing_note(label, result, ("train", "prefill"))

# %% [markdown]
# ## 4 · Prefill throughput
#
# Tokens per second of a forward pass without gradients (processing a prompt); higher is better.

# %%
for label, result in scaling.items():
    fig = go.Figure()
    for mixer in mixers_of(result):
        ns, tps, _ = series(result, mixer, "prefill", "tokens_per_s")
        fig.add_trace(go.Scatter(x=ns, y=tps, mode="lines+markers", name=mixer, line={"color": mixer_colour(mixer)}))
    fig.update_xaxes(type="log", title_text="sequence length n (log)", tickvals=all_lengths,
                     ticktext=[fmt_n(n) for n in all_lengths])
    fig.update_yaxes(type="log", title_text="tokens per second (log)")
    fig.update_layout(title=f"prefill throughput, one block, {label}", height=450, width=900)
    save_figure(fig, "05_scaling_prefill", FIGURE_FORMATS)
    fig.show()

# %% [markdown]
# ## 5 · Decode latency vs context, and what each mixer carries
#
# One generated token after a context of n tokens. Left: µs per token at batch 1, the plain
# `Block.step` (dashed) and the fused step of `workbench.fast` (solid: the whole step compiled by
# inductor, so a hundred small PyTorch calls become a few kernels). Middle: tokens per second of
# the fused step when a batch of sequences is served at once. Right: the state carried from token
# to token. A constant state (every mixer but the transformer) draws flat lines; the transformer's
# KV cache grows with n and so does its step.

# %%
for label, result in scaling.items():
    batch = result["settings"].get("decode_batch", "-")
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07, subplot_titles=(
        "µs per token, batch 1 (dashed: plain; solid: fused)", f"fused: tokens/s at batch {batch}",
        "state bytes (one block)"))
    for mixer in mixers_of(result):
        ns, ts, _ = series(result, mixer, "decode", "median_s")
        line(fig, result, label, mixer, ns, [t * 1e6 for t in ts], 1, 1, f"{mixer} plain", dash="dash", show=False)
        ns, ts, _ = series(result, mixer, "decode_fused", "median_s")
        line(fig, result, label, mixer, ns, [t * 1e6 for t in ts], 1, 1, mixer)
        ns, tps, _ = series(result, mixer, "decode_fused", "tokens_per_s", sub="batched")
        line(fig, result, label, mixer, ns, tps, 1, 2, mixer, show=False)
        ns, sizes, _ = series(result, mixer, "decode", "state_bytes")
        line(fig, result, label, mixer, ns, sizes, 1, 3, mixer, show=False)
    log_x(fig, all_lengths, [(1, 1), (1, 2), (1, 3)], "context n (log)")
    fig.update_yaxes(type="log")
    fig.update_layout(title=f"decoding one token after n tokens, {label}", height=480, width=1450)
    save_figure(fig, "05_scaling_decode", FIGURE_FORMATS)
    fig.show()
    rows = []
    for mixer in mixers_of(result):
        for p in points_of(result, mixer):
            plain, fused = get(p, "decode", "median_s"), get(p, "decode_fused", "median_s")
            if plain and fused:
                rows.append(f"| {mixer} | {fmt_n(p['n'])} | {plain * 1e6:,.0f} | {fused * 1e6:,.0f} | {plain / fused:.1f}x | "
                            f"{get(p, 'decode_fused', 'compile_s'):.0f} s | "
                            f"{get(p, 'decode_fused', 'max_abs_diff_vs_plain'):.1e} |")
    if rows:
        display(Markdown("| mixer | n | plain µs | fused µs | speed-up | compile | max abs diff fused vs plain |\n"
                         "|---|---|---|---|---|---|---|\n" + "\n".join(rows)))
    missing_note(label, result, ("decode", "decode_fused"))

# %% [markdown]
# ## 6 · The roofline: how far from the machine's limit
#
# Each file measures its machine's peak float32 FLOP/s with large matmuls at the start and the end
# of the run (same threads). For every phase, the FLOPs it executed (`workbench.bench.costs`: one
# term per operation of each mixer and of the block; torch's FlopCounterMode for a mixer without a
# formula) divided by its time, as a fraction of that peak. Small fractions mean the cost is
# overhead, memory traffic or ops that do not vectorise, not arithmetic.

# %%
for label, result in scaling.items():
    peak = result.get("peak_flops_per_s")
    if not peak:
        print(f"{label}: no peak measurement in this file (schema {result.get('schema')})")
        continue
    phases = [("train", "training"), ("prefill", "prefill"), ("decode_fused", "fused decode, batch 1")]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07, subplot_titles=[t for _, t in phases])
    for mixer in mixers_of(result):
        for col, (phase, _) in enumerate(phases, 1):
            pts = [(p["n"], ((p.get("roofline") or {}).get(phase) or {}).get("fraction_of_peak"))
                   for p in points_of(result, mixer)]
            pts = [(n, 100 * f) for n, f in pts if f]
            line(fig, result, label, mixer, [n for n, _ in pts], [f for _, f in pts], 1, col, mixer, show=col == 1)
    log_x(fig, all_lengths, [(1, 1), (1, 2), (1, 3)])
    fig.update_yaxes(type="log", title_text="% of the measured peak (log)", row=1, col=1)
    fig.update_yaxes(type="log")
    fig.update_layout(title=f"achieved FLOP/s as % of {peak / 1e9:,.1f} GFLOP/s measured in the same run, {label}",
                      height=480, width=1450)
    save_figure(fig, "05_scaling_roofline", FIGURE_FORMATS)
    fig.show()
    print("peak measurements:", {k: f"{v.get('peak_flops_per_s', 0) / 1e9:,.1f} GFLOP/s" for k, v in result["peak"].items()})

# %% [markdown]
# ## 7 · Energy per token: ESTIMATES, not measurements
#
# Nothing here was measured with a power meter. Each point carries two estimates (the energy table
# of section 1): measured time × an *assumed* power, and counted FLOPs and bytes × *assumed* joules
# per FLOP and per byte. Read the ratios between mixers, not the joules. The assumptions:

# %%
for label, result in scaling.items():
    figures = (result.get("energy") or {}).get("device_figures") or {}
    display(Markdown(f"**`{label}`**, {figures.get('name')}:\n\n"
                     + "\n".join(f"- *{k}*: {v}" for k, v in (figures.get("assumptions") or {}).items())))

# %% [markdown]
# ## 8 · A million tokens through every constant-state mixer
#
# Each constant-state mixer's block stepped over one long stream (batch 1, no gradients; the fused
# step where the file says so), timed in windows: the time per token should stay level, the
# process's memory should not grow, and the state keeps its size.

# %%
for label, data in long_files.items():
    runs = {m: r for m, r in long_runs_of(data).items() if r.get("status", "ok") == "ok"}
    if not runs:
        continue
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=("µs per token, per window", "RSS (MiB)"))
    for mixer, run in runs.items():
        done = [w["tokens_done"] for w in run["windows"]]
        fig.add_trace(go.Scatter(x=done, y=[w["s_per_token"] * 1e6 for w in run["windows"]], mode="lines+markers",
                                 name=mixer, line={"color": mixer_colour(mixer)}), row=1, col=1)
        fig.add_trace(go.Scatter(x=done, y=[(w["rss_bytes"] or 0) / 2**20 for w in run["windows"]], mode="lines+markers",
                                 name=mixer, showlegend=False, line={"color": mixer_colour(mixer)}), row=1, col=2)
    fig.update_xaxes(title_text="tokens done")
    fig.update_yaxes(type="log", title_text="µs per token (log)", row=1, col=1)
    fig.update_yaxes(title_text="MiB", rangemode="tozero", row=1, col=2)
    fig.update_layout(title=f"the recurrent step over a long stream, {label}", height=450, width=1250)
    save_figure(fig, f"05_scaling_long_context{'' if label.startswith('cpu-') and not label.endswith('bf16') else '_' + label}",
                FIGURE_FORMATS)
    fig.show()
    if "runs" in data:
        display(Markdown(long_context_markdown(data)))

# %% [markdown]
# ## 9 · Targets of the speed issue, as measured
#
# One run, every mixer side by side, ratios (a target missed is printed with its figure):
#
# 1. the inverted training step is at most every peer's at every n ≥ `target_min_n`, and at most
#    the transformer's at the smallest n;
# 2. the inverted decode step is at most the transformer's KV-cache step at every n (fused against
#    fused, plain against plain), and the fused one at least `decode_speedup_target` x faster than
#    `decode_baseline_s`;
# 3. the inverted prefill and training peak memory are at most the transformer's at every n ≥
#    `target_min_n`, and its per-sequence memory slope at most `memory_slope_target`;
# 4. the roofline column is there for every mixer.

# %%
verdicts: dict[str, dict[str, bool | None]] = {}


def compare(result, phase, a, b, lengths, key="median_s"):
    """(all a <= b, rows): a missing a counts against, a missing b (out of time/memory) for."""
    by = {(p["mixer"], p["n"]): p for p in result["points"]}
    rows, flags = [], []
    for n in lengths:
        pa, pb = by.get((a, n)), by.get((b, n))
        if not pa or not pb:
            continue
        va, vb = get(pa, phase, key), get(pb, phase, key)
        if va is not None and vb is not None:
            flags.append(va <= vb)
            rows.append(f"n={fmt_n(n)}: {a} {va:.4g} vs {b} {vb:.4g} (ratio {va / vb:.2f})")
        elif va is not None:
            flags.append(True)
            rows.append(f"n={fmt_n(n)}: {b} {why(pb, phase)}")
        elif vb is not None or pa.get(phase):
            flags.append(False)
            rows.append(f"n={fmt_n(n)}: {a} {why(pa, phase)}")
    return (all(flags) if flags else None), rows


def verdict(flag) -> str:
    return "MET" if flag else ("NOT MET" if flag is not None else "NOT MEASURED")


for label, result in scaling.items():
    if "inverted" not in result["settings"]["mixers"]:
        continue
    lengths = sorted(result["settings"]["lengths"])
    large = [n for n in lengths if n >= target_min_n]
    v = verdicts.setdefault(label, {})
    print(f"=== {label}" + ("" if result.get("complete") else " (INCOMPLETE run)"))
    peers = [m for m in mixers_of(result) if m != "inverted"]
    flags = []
    for peer in peers:
        flag, rows = compare(result, "train", "inverted", peer, large)
        flags.append(flag)
        print(f"1. train, inverted <= {peer} at n >= {fmt_n(target_min_n)}: {verdict(flag)}; " + "; ".join(rows))
    v["train <= every peer (n >= target_min_n)"] = None if None in flags or not flags else all(flags)
    if "transformer" in peers:
        flag, rows = compare(result, "train", "inverted", "transformer", lengths[:1])
        v["train <= transformer at the smallest n"] = flag
        print(f"1. train, inverted <= transformer at n={fmt_n(lengths[0])}: {verdict(flag)}; " + "; ".join(rows))
        for phase in ("decode_fused", "decode"):
            flag, rows = compare(result, phase, "inverted", "transformer", lengths)
            v[f"{phase} <= transformer at every n"] = flag
            print(f"2. {phase}, inverted <= transformer at every n: {verdict(flag)}; " + "; ".join(rows))
    fused = [get(p, "decode_fused", "median_s") for p in points_of(result, "inverted")]
    fused = [f for f in fused if f]
    if fused:
        worst = max(fused)
        v["fused decode >= target x faster than the baseline"] = decode_baseline_s / worst >= decode_speedup_target
        print(f"2. fused inverted decode {worst * 1e6:,.0f} µs at worst = {decode_baseline_s / worst:.1f}x faster than "
              f"{decode_baseline_s * 1e3:g} ms (target {decode_speedup_target:g}x): "
              f"{verdict(v['fused decode >= target x faster than the baseline'])}")
    else:
        v["fused decode >= target x faster than the baseline"] = None
        print("2. fused decode: not in this file")
    if "transformer" in peers:
        for phase in ("prefill", "train"):
            flag, rows = compare(result, phase, "inverted", "transformer", large, key="peak_mem_bytes")
            v[f"{phase} memory <= transformer (n >= target_min_n)"] = flag
            print(f"3. {phase} peak memory, inverted <= transformer at n >= {fmt_n(target_min_n)}: {verdict(flag)}; "
                  + "; ".join(rows))
    for phase in ("train", "prefill"):
        ns, mem, _ = series(result, "inverted", phase, "peak_mem_bytes", per_sequence=True)
        slope = fit(ns, mem, target_min_n)
        v[f"{phase} memory slope <= target"] = None if slope is None else slope <= memory_slope_target
        print(f"3. inverted {phase} memory slope per sequence (n >= {fmt_n(target_min_n)}): "
              f"{'-' if slope is None else f'{slope:.3f}'} (target <= {memory_slope_target}): "
              f"{verdict(v[f'{phase} memory slope <= target'])}")
    has_roof = all(any((p.get("roofline") or {}).get(ph) for ph in ("train", "prefill", "decode", "decode_fused"))
                   for p in result["points"] if any((p.get(ph) or {}).get("status") == "ok" for ph in ("train", "prefill")))
    v["roofline column for every mixer"] = bool(result.get("peak_flops_per_s")) and has_roof
    print(f"4. roofline column for every mixer: {verdict(v['roofline column for every mixer'])}")

# %% [markdown]
# ## 10 · Findings
#
# Computed from the numbers above (they change when the files change).

# %%
findings = []
for label, result in scaling.items():
    mixers = mixers_of(result)
    common_n = [n for n in sorted(result["settings"]["lengths"])
                if all(get(p, "train", "median_s") for p in result["points"] if p["n"] == n)]
    load = (result.get("machine", {}).get("load_average_start") or [None])[0]
    where = (f"`{label}` (load average {'-' if load is None else f'{load:.1f}'} at the start"
             f"{'; a shared machine: times inflated' if load and load > 1.5 else ''})")
    for n in (common_n[:1] + common_n[-1:]) if common_n else []:
        times = sorted((get(p, "train", "median_s"), p["mixer"]) for p in result["points"] if p["n"] == n)
        rank = [m for _, m in times].index("inverted") + 1 if "inverted" in mixers else None
        findings.append(f"{where}: at n = {fmt_n(n)} the fastest training step is {times[0][1]}'s "
                        f"({times[0][0] * 1e3:,.0f} ms), the slowest {times[-1][1]}'s ({times[-1][0] * 1e3:,.0f} ms)"
                        + (f"; the inverted block ranks {rank} of {len(times)}" if rank else "") + ".")
    speedups = {}
    for mixer in mixers:
        pairs = [(get(p, "decode", "median_s"), get(p, "decode_fused", "median_s")) for p in points_of(result, mixer)]
        ratios = [a / b for a, b in pairs if a and b]
        if ratios:
            speedups[mixer] = (min(ratios), max(ratios))
    if speedups:
        findings.append(f"{where}: the fused step is " + ", ".join(f"{m} {lo:.1f}-{hi:.1f}x" for m, (lo, hi) in speedups.items())
                        + " faster than the plain one at batch 1 (the constant-state mixers most: their plain step "
                        "is per-op overhead).")
        fused_inv = [get(p, "decode_fused", "median_s") for p in points_of(result, "inverted")]
        fused_inv = [f for f in fused_inv if f]
        if fused_inv:
            findings.append(f"{where}: the fused inverted step takes {min(fused_inv) * 1e6:,.0f}-{max(fused_inv) * 1e6:,.0f} µs "
                            f"per token at every n, {decode_baseline_s / max(fused_inv):.1f}x below the "
                            f"{decode_baseline_s * 1e3:g} ms the issue started from.")
    fractions = [(f["fraction_of_peak"], p["mixer"], p["n"], ph) for p in result["points"]
                 for ph, f in (p.get("roofline") or {}).items() if f.get("fraction_of_peak")]
    if fractions:
        best, worst = max(fractions), min(fractions)
        findings.append(f"{where}: against {result['peak_flops_per_s'] / 1e9:,.1f} GFLOP/s measured in the run, the "
                        f"phases reach {100 * worst[0]:.2g}% ({worst[1]} {worst[3]}, n = {fmt_n(worst[2])}) to "
                        f"{100 * best[0]:.2g}% ({best[1]} {best[3]}, n = {fmt_n(best[2])}) of peak.")
    v = verdicts.get(label, {})
    if v:
        met = [k for k, f in v.items() if f]
        missed = [k for k, f in v.items() if f is False]
        findings.append(f"{where}: targets met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}; "
                        f"not measured: {', '.join(k for k, f in v.items() if f is None) or 'none'}.")
for label, data in long_files.items():
    runs = {m: r for m, r in long_runs_of(data).items() if r.get("status", "ok") == "ok"}
    if runs:
        constant = [m for m, r in runs.items() if r["summary"]["state_bytes_constant"]]
        finite = [m for m, r in runs.items() if r["summary"]["all_outputs_finite"]]
        tokens = min(r["tokens_done"] for r in runs.values())
        findings.append(f"`long-context-{label}`: {len(runs)} mixer(s) stepped over at least {tokens:,} tokens; state "
                        f"constant in size for {len(constant)} of them, every output finite for {len(finite)}"
                        + (f" (not: {sorted(set(runs) - set(finite))})" if len(finite) < len(runs) else "") + ".")
display(Markdown("\n".join(f"- {f}" for f in findings) or "No results to summarise."))
for f in findings:
    print("-", f)

# %%
print(f"notebook ran in {time.perf_counter() - notebook_started:.1f}s")
if smoke:
    shutil.rmtree(results_path, ignore_errors=True)
