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
# # 08 · Edge: the recurrent model outside PyTorch, per token
#
# `workbench export CHECKPOINT --format onnx [--quantize int8] --out DIR` writes the whole
# recurrent model (embedding, every block's `step`, final norm, head) as **one ONNX graph** whose
# state is explicit inputs and outputs, plus a manifest (vocabulary, state leaves with their
# shapes and dtypes, model config, data and checkpoint hashes). `workbench generate --runtime onnx
# DIR` runs it with numpy and onnxruntime only: no torch in the process.
#
# This notebook reads what `make bench-edge` (`workbench bench edge`, code in
# `workbench/export/bench.py`) left in `results/edge-<device>.json` and shows it. It measures
# nothing itself. Sections:
#
# 1. **What is there**: the files, their settings, how busy the (shared) machine was.
# 2. **Per token at batch 1**: the inverted char-LM's step in eager PyTorch, ONNX fp32 and ONNX
#    int8 (and ExecuTorch when it was installed), one and two threads; the process's peak memory.
# 3. **Latency vs context, both runtimes**: inverted and transformer, eager and ONNX, at contexts
#    from 256 to 64K: the recurrent state is constant, the KV cache grows.
# 4. **What each carries from token to token** (state bytes vs context).
#    **Where the time goes**: both exported graphs at n = 256 through onnxruntime's profiler (nodes
#    per step, kernel time by operator).
# 5. **Quality**: validation bits per character, PyTorch vs exported fp32 vs int8.
# 6. **Targets** of the edge issue, as measured.
#
# With `smoke = True` (what the tests use) it shows the committed results the same way (there is
# nothing to run live that would take seconds: one export alone takes tens of seconds).

# %% tags=["parameters"]
smoke = False  # True: the test run (same figures from the committed results, PNG export skipped)
results_dir = "results"  # where `workbench bench edge` wrote edge-*.json
device = "all"  # "all", or one device label (the part after edge-)

# %%
import json
import time
from pathlib import Path

import plotly.graph_objects as go
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from workbench.export.bench import edge_markdown
from workbench.plotting import save_figure

notebook_started = time.perf_counter()
FIGURE_FORMATS = ("html",) if smoke else ("html", "png")
COLOURS = {("inverted", "onnx-fp32"): "#d62728", ("inverted", "eager"): "#ff9896", ("inverted", "onnx-int8"): "#8c564b",
           ("inverted", "executorch"): "#9467bd",
           ("transformer", "onnx-fp32"): "#1f77b4", ("transformer", "eager"): "#aec7e8"}
results_path = Path(results_dir)


def fmt_n(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else f"{n:,}"


# %% [markdown]
# ## 1 · What is there

# %%
runs = {}
for path in sorted(results_path.glob("edge-*.json")):
    label = path.stem[len("edge-"):]
    data = json.loads(path.read_text())
    if data.get("kind") != "edge" or (device != "all" and label != device):
        continue
    runs[label] = data
    m, s = data["machine"], data["settings"]
    print(f"edge-{label}: created {data['created']}, {m['processor']} ({m['cpu_count']} cores, shared; load average "
          f"{m.get('load_average_1min_start')} -> {m.get('load_average_1min_end')}), threads {s['threads']}, "
          f"contexts {s['contexts']}, {s['steps']} timed steps per cell" + (f"; note: {data['note']}" if data.get("note") else ""))
if not runs:
    message = f"**No edge results in `{results_path}`.** Run `make bench-edge` (or `workbench bench edge`)."
    print("NOTE:", message.replace("**", "").replace("`", ""))
    display(Markdown(message))

# %% [markdown]
# ## 2 · Per token at batch 1
#
# The inverted char-LM's recurrent step after a 256-token context, fed the validation text.
# Each bar is the median over the timed steps of one fresh process; ONNX processes never import
# torch. Peak memory is the whole process's high-water mark (runtime + model + state): what a
# device would have to hold.

# %%
for label, data in runs.items():
    cells = [c for c in data["per_token"] if c.get("status") == "ok"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("µs per token (median, log)", "peak RSS of the process (MiB)"))
    for runtime in dict.fromkeys(c["runtime"] for c in cells):  # eager, onnx-fp32, onnx-int8[, executorch]
        mine = [c for c in cells if c["runtime"] == runtime]
        x = [f"{c['threads']} thread{'s' if c['threads'] > 1 else ''}" for c in mine]
        colour = COLOURS.get(("inverted", runtime), "#7f7f7f")
        fig.add_trace(go.Bar(name=runtime, x=x, y=[c["median_us"] for c in mine], marker_color=colour,
                             text=[f"{c['median_us']:,.0f}" for c in mine], textposition="outside"), row=1, col=1)
        fig.add_trace(go.Bar(name=runtime, x=x, y=[c["peak_rss_bytes"] / 2**20 for c in mine], marker_color=colour,
                             showlegend=False, text=[f"{c['peak_rss_bytes'] / 2**20:.0f}" for c in mine],
                             textposition="outside"), row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(barmode="group", height=420, width=1000, title=f"Inverted char-LM, one step at batch 1 ({label})")
    for path in save_figure(fig, f"08_edge_per_token_{label}", FIGURE_FORMATS):
        print(f"wrote {path}")
    fig.show()

# %% [markdown]
# ## 3 · Latency vs context, both runtimes
#
# One step at a context of n tokens (log-log). The inverted state at n is the real one (the
# validation text stepped n tokens through the graph); the transformer's KV cache holds n
# random keys and values (its cost does not depend on their values). A flat line is a
# per-token cost that does not grow with the context.

# %%
for label, data in runs.items():
    threads = data["settings"]["threads"]
    fig = make_subplots(rows=1, cols=len(threads), subplot_titles=[f"{t} thread{'s' if t > 1 else ''}" for t in threads],
                        shared_yaxes=True)
    for col, t in enumerate(threads, start=1):
        for cell in data["by_context"]:
            if cell["threads"] != t or cell.get("status") != "ok":
                continue
            key = (cell["model"], cell["runtime"])
            fig.add_trace(go.Scatter(x=[p["context"] for p in cell["points"]], y=[p["median_us"] for p in cell["points"]],
                                     mode="lines+markers", name=f"{cell['model']} {cell['runtime']}",
                                     line={"color": COLOURS.get(key, "#7f7f7f"), "dash": "solid" if "onnx" in cell["runtime"] else "dash"},
                                     showlegend=col == 1), row=1, col=col)
        ticks = data["settings"]["contexts"]
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=[fmt_n(n) for n in ticks], title_text="context n",
                         row=1, col=col)
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="µs per token (median, log)", row=1, col=1)
    fig.update_layout(height=450, width=1100, title=f"Per-token latency vs context, eager and ONNX ({label})")
    for path in save_figure(fig, f"08_edge_context_{label}", FIGURE_FORMATS):
        print(f"wrote {path}")
    fig.show()

# %% [markdown]
# ### Paired: both graphs under the same load
#
# Separate processes minutes apart on a shared machine differ by more than the two graphs do at
# short contexts, so the bench also steps both fp32 graphs in one process, in turns (blocks of 25
# timed steps, each after 3 untimed ones that refill the caches the other graph evicted). The target "inverted faster than the transformer at every context >= 256"
# is read from these cells.

# %%
for label, data in runs.items():
    for cell in data.get("paired", []):
        if cell.get("status") != "ok":
            print(f"{label}: paired cell at {cell['threads']} thread(s): {cell.get('reason')}")
            continue
        for p in cell["points"]:
            inv, tr = p["inverted"]["median_us"], p["transformer"]["median_us"]
            print(f"{label}, {cell['threads']} thread(s), n={fmt_n(p['context']):>4}: inverted {inv:9,.0f} µs, "
                  f"transformer {tr:11,.0f} µs ({tr / inv:6.1f}x); inverted faster in "
                  f"{100 * p['inverted_faster_blocks']:.0f}% of {p['blocks']} blocks")

# %% [markdown]
# ## 4 · What each carries from token to token

# %%
for label, data in runs.items():
    seen = set()
    fig = go.Figure()
    for cell in data["by_context"]:
        if cell.get("status") != "ok" or cell["model"] in seen:
            continue
        seen.add(cell["model"])
        fig.add_trace(go.Scatter(x=[p["context"] for p in cell["points"]], y=[p["state_bytes"] / 2**20 for p in cell["points"]],
                                 mode="lines+markers", name=cell["model"], line={"color": COLOURS[(cell["model"], "onnx-fp32")]}))
    ticks = data["settings"]["contexts"]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[fmt_n(n) for n in ticks], title_text="context n")
    fig.update_yaxes(type="log", title_text="state (MiB)")
    fig.update_layout(height=400, width=700, title=f"Recurrent state vs KV cache ({label})")
    for path in save_figure(fig, f"08_edge_state_{label}", FIGURE_FORMATS):
        print(f"wrote {path}")
    fig.show()

# %% [markdown]
# ### Where the time goes
#
# At d_model 128 a step is small enough that its cost is mostly the dispatch of its nodes, not
# arithmetic: the exported inverted step was made cheaper by giving it fewer nodes (no
# straight-through carriers without autograd, the ring write as one `Where`, one rotary code for
# both ordinals), with the same values as before, bit for bit. Bars: kernel time per step by
# operator type under the profiler (whose overhead inflates every node, so read the shares and
# the node counts, not the absolute times).

# %%
for label, data in runs.items():
    cells = [c for c in data.get("profile", []) if c.get("status") == "ok"]
    if not cells:
        print(f"{label}: no profile in this file (older run)")
        continue
    ops = list(dict.fromkeys(op for c in cells for op in list(c["per_op"])[:10]))
    fig = go.Figure()
    for cell in cells:
        fig.add_trace(go.Bar(name=f"{cell['model']} ({cell['nodes_per_step']:.0f} nodes)", y=ops, orientation="h",
                             x=[cell["per_op"].get(op, {}).get("us_per_step", 0) for op in ops],
                             marker_color=COLOURS[(cell["model"], "onnx-fp32")]))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(barmode="group", height=500, width=800, xaxis_title="µs per step under the profiler",
                      title=f"Exported fp32 step at n={fmt_n(cells[0]['context'])}, by operator ({label})")
    for path in save_figure(fig, f"08_edge_profile_{label}", FIGURE_FORMATS):
        print(f"wrote {path}")
    fig.show()

# %% [markdown]
# ## 5 · Quality, and 6 · targets
#
# The table `workbench report` puts in the README (block `edge-<device>`), with the issue's
# targets checked as measured: the exported inverted step at least 5x faster than eager, faster
# than the exported transformer at every context >= 256, int8 costing at most 0.02 BPC.

# %%
for label, data in runs.items():
    bpc = data.get("bpc") or {}
    if "pytorch" in bpc:
        print(f"{label}: validation BPC PyTorch {bpc['pytorch']:.4f}, ONNX fp32 {bpc['onnx-fp32']:.4f} "
              f"({bpc['onnx-fp32_minus_pytorch']:+.1e}), ONNX int8 {bpc['onnx-int8']:.4f} "
              f"({bpc['onnx-int8_minus_pytorch']:+.4f})")
    for name, check in data.get("targets", {}).items():
        print(f"  {'MET   ' if check['met'] else 'MISSED'} {name} ({check['target']})"
              + (f": {check['value']:.3g}" if "value" in check else ""))
    display(Markdown(edge_markdown(data)))

# %%
print(f"notebook ran in {time.perf_counter() - notebook_started:.1f}s ({len(runs)} edge file(s))")
