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
# # 02 · Routing: which unit takes which message, and who reads it back
#
# In the inverted mixer a fixed set of **M units** takes in messages that tokens post
# (see `workbench/mixers/inverted.py`):
#
# * **write gate (salience)** - token t posts a message only when `p_t > 1/2`;
# * **routing** - a posted message goes to a pool (the pool whose learned interest bids
#   highest; with one pool there is nothing to choose), and inside the pool the *most rested*
#   unit takes it and then rests (refractory gain). That is a ring pointer: with one pool,
#   **the unit is fixed by the message's ordinal** (unit = number of earlier writes mod M);
# * **read-back** - every token scores the units' messages by content and by ordinal and mixes
#   the values of its top `k` units.
#
# This notebook trains (or loads) a small model on character-level tiny-shakespeare and
# looks inside, through the mixer's hook points:
#
# 1. **sparsity** - how many tokens write, how many units each token reads;
# 2. **what units hold** across a validation batch - do units specialise (by character, by
#    context, by position), and by how much beyond chance;
# 3. an **explorer** for one text: the token -> unit write map with per-token salience, the
#    read-back weights (token x unit, and mapped back to source tokens), and a card per unit;
# 4. optionally the same questions on **MQAR** (associative recall), where we know which
#    tokens matter: do keys and values write, do queries read the right unit?
# 5. a **live** panel: change M, the pools, refractoriness and the write price, and a small MQAR
#    model re-trains and the routing figures redraw;
# 6. **seeking units on multi-stream recall**: the seeking mixer, the ring and a sliding window at
#    equal state on a task where recency is not enough - accuracy by stream, which unit takes each
#    stream's messages, and the mutual information against a shuffled null (with a live panel);
# 7. **findings** computed from the numbers above.
#
# Run it in JupyterLab for the widgets (dropdowns, sliders and a text box driving plotly
# figures). Headless (`workbench notebooks run 02_routing`) it draws the default selection
# and saves every figure to `figures/02_routing_*.html`.

# %% tags=["parameters"]
smoke = False  # True: a tiny run (what the tests use); the numbers are then meaningless
checkpoint = ""  # a char-LM inverted checkpoint.pt to load; if the path ends in checkpoint.pt and is missing, training writes it
steps = 800  # char-LM training steps (protocol v2 config otherwise: d_model 128, one block, short conv, mixer defaults)
mixer_options = {}  # overrides of the inverted mixer's defaults, e.g. {"n_pools": 4} or {"refractory": False}
seed = 0
layer = 0  # which block's mixer to inspect
n_windows = 64  # validation windows (of the training context) for the across-batch statistics
snippet_len = 160  # characters per validation snippet in the explorer
mqar = True  # also train a small MQAR model and check its routing
mqar_steps = 600
mqar_mixer_options = {}  # e.g. {"n_units": 8}: fewer units than tokens, so the gate must choose what to write
multistream = True  # train seeking, the ring (inverted, one pool) and a sliding window on multi-stream recall at equal state
ms_steps = 800  # training steps per multi-stream model
ms_d_model = 64
ms_lr = 1e-2  # the top of protocol v2's grid: at 3e-3 a 600-step seeking model stayed at chance
# A smaller multistream than the experiment's (256 tokens, 256 values) so that minutes of training leave chance;
# the four streams and their rates are the task's.
ms_task_options = {"seq_len": 128, "key_range": 64, "n_values": 32, "n_queries": 8, "recent": 2, "n_eval": 256}
ms_examples = 128  # held-out sequences for the unit x stream statistics
ms_permutations = 200  # shuffles of the streams for the null
ms_checkpoints = {}  # name ("seeking", "inverted ring", "sliding_window") -> a multistream checkpoint.pt to analyse instead
#   of training, e.g. from `workbench compare --experiment multistream` (results/multistream/full/<run>/checkpoint.pt)
ms_numbers_json = ""  # a path (e.g. results/notebooks/02_multistream.json): write the section's numbers there

# %%
import math
import time
from collections import Counter
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from workbench.checkpoint import model_from_checkpoint
from workbench.config import ConfigError, RunConfig
from workbench.experiments import Variant
from workbench.experiments.protocol_v2 import charlm_cells, mqar_cell, protocol_v2
from workbench.lab.analysis import (
    entropy_bits,
    mutual_information_bits,
    overwrite_stats,
    shuffled_mutual_information_bits,
)
from workbench.lab.corpus import charlm_options
from workbench.lab.probes import internals, option, unit_count
from workbench.lab.units import (
    hard_writes,
    load_summary,
    multistream_config,
    multistream_streams,
    unit_stream_specialization,
    write_weights,
)
from workbench.model import IGNORE
from workbench.plotting import GREY, mixer_colour, save_figure
from workbench.provenance import git_commit
from workbench.storage import write_json_atomic
from workbench.tasks import build_task
from workbench.train import train

budget = "smoke" if smoke else "full"
# Writes in the inverted mixer's colour (workbench.plotting), reads and gains in colours no mixer uses.
WRITE, READ, GAIN, LIGHT = mixer_colour("inverted"), "#332288", "#117733", "#CFCFCF"
if smoke:
    steps, mqar_steps = min(steps, 20), min(mqar_steps, 20)
    n_windows, snippet_len = min(n_windows, 4), min(snippet_len, 48)
n_shuffles = 2 if smoke else 5

experiment = protocol_v2(budget)  # protocol v2's model: d_model 128, one block, the shared short conv
cell = charlm_cells(budget)[0]  # its char-LM cell: context 256, batch 32 (smoke: 8)
config = experiment.config(cell, Variant("inverted", "inverted", dict(mixer_options)), seed, cell.train.get("lr", 3e-3))
config.train.steps, config.train.eval_every, config.train.warmup_steps = steps, max(1, steps // 4), min(100, steps // 10)
config.train.checkpoint_every = steps
if smoke:  # a much smaller model on a generated text, so the smoke run takes seconds and needs no download
    config.task.options = charlm_options(True, context=64, max_eval_windows=4)
    config.model.d_model = 32
    config.model.mixer_options = {"n_units": 16, **mixer_options}
config.validate()
config.to_dict()

# %% [markdown]
# ## Train, or load a checkpoint
#
# With `checkpoint` pointing at an existing `checkpoint.pt` (for instance one written by
# `workbench train --task charlm --mixer inverted`), the model, its config and its task are
# rebuilt from it and nothing is trained. Otherwise the config above is trained here.

# %%
ckpt = Path(checkpoint).expanduser() if checkpoint else None
started = time.perf_counter()
if ckpt is not None and ckpt.is_file():
    model, config, task, payload = model_from_checkpoint(ckpt)
    if config.model.mixer != "inverted" or config.task.name != "charlm":
        raise ValueError(f"{ckpt} holds a {config.model.mixer} model for {config.task.name}; this notebook needs inverted on charlm")
    history = payload["history"]
    metrics = task.evaluate(model)
    print(f"loaded {ckpt} (step {payload['step']})")
else:
    task = build_task(config.task.name, config.task.options)
    out_dir = ckpt.parent if ckpt is not None and ckpt.name == "checkpoint.pt" else None
    if ckpt is not None and out_dir is None:
        print(f"{ckpt} does not exist; training here without saving (name it .../checkpoint.pt to keep the run)")
    model, result = train(config, out_dir=out_dir, progress=not smoke, task=task)
    history, metrics = result["history"], result["metrics"]
    print(f"trained {result['steps']} steps in {time.perf_counter() - started:.0f}s on {result['device']}")
    if out_dir is not None:
        print(f"checkpoint written to {out_dir / 'checkpoint.pt'}; set checkpoint to it to skip training next time")
model.eval()
device = next(model.parameters()).device
vocab = task.vocab
mixer = model.blocks[layer].mixer
# Hyper-parameters through workbench.lab.probes (the mixer's options, else the config): not its code.
M, K, n_pools = option(model, layer, "n_units"), option(model, layer, "read_topk"), option(model, layer, "n_pools", 1)
refractory, pool_size = option(model, layer, "refractory", True), M // n_pools
context = task.context
print(f"validation bits per character: {metrics['bpc']:.3f}")
print(f"mixer: M={M} units in {n_pools} pool(s) of {pool_size}, reads top k={K}, "
      f"refractory={refractory}, write_price={option(model, layer, 'write_price')}, training context {context}")

# %%
fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss (incl. write price)", "validation bits per character"))
hist_steps = [h["step"] for h in history]
fig.add_trace(go.Scatter(x=hist_steps, y=[h["loss"] for h in history], mode="lines+markers", name="loss"), row=1, col=1)
fig.add_trace(go.Scatter(x=hist_steps, y=[h["metrics"]["bpc"] for h in history], mode="lines+markers", name="bpc"), row=1, col=2)
fig.update_xaxes(title_text="step")
fig.update_yaxes(title_text="nats per character", row=1, col=1)
fig.update_yaxes(title_text="bits per character", row=1, col=2)
fig.update_layout(title=f"char-LM, inverted mixer (M={M}, k={K}): training", height=350, width=950)
save_figure(fig, "02_routing_training")
fig.show()

# %% [markdown]
# ## Looking inside: the hook points
#
# One forward pass with `workbench.hooks.capture` records, per token, the write probability
# (`hook_salience`), the unit written (`hook_unit`, -1 for no write), every unit's refractory
# gain and occupant (the position of the message it holds), and the read-back weights over the
# units. We run it on `n_windows` validation windows of the training context.

# %%
def run_hooks(ids: torch.Tensor) -> dict[str, np.ndarray]:
    """Mixer internals for a (B, T) batch of token ids, as numpy arrays (workbench.lab.probes)."""
    record, _ = internals(model, layer, lambda: model(ids.to(device)))
    return record


def show_char(c: str) -> str:
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(c, c)


val = task.val_windows()
full_windows = (val.targets != IGNORE).all(dim=1)
inputs = val.inputs[full_windows][:n_windows]
tokens = inputs.numpy()
batch = run_hooks(inputs)
B, T = tokens.shape
wrote = batch["unit"] >= 0
print(f"{B} windows x {T} characters; captured: " + ", ".join(f"{k} {v.shape}" for k, v in batch.items()))

# %% [markdown]
# ## Sparsity: who writes, how much is read
#
# * **Write fraction**: tokens whose gate opened. The write price only bites past M writes per
#   window, so the dashed line (M / T) is the fraction at which the units are exactly full.
# * **P(write | character)**: salience is per token *in context*, but its average per
#   character shows what the gate learned to care about.
# * **Writes and reads by position** (right): the fraction of tokens that write at each
#   position of the window (the gate's multi-timescale context starts empty at position 0, so
#   look for a start-of-window effect), the fraction of units occupied, and the fraction a token
#   reads - its top k of the *occupied* units, so k/M once k units hold messages.
#
# Evictions count writes that replaced a message still held; with fewer writes than units per
# window there are none and every message survives to the end of the window.

# %%
read = batch["read"]
n_read = (read > 0).sum(-1)
read_entropy = entropy_bits(read, axis=-1)
occupied = (batch["occupant"] >= 0).sum(-1)
overwrites = overwrite_stats(batch["unit"], tokens)
write_fraction = wrote.mean()
summary = {
    "fraction of tokens that write": write_fraction,
    "mean salience p_t": batch["salience"].mean(),
    "writes per window (mean)": wrote.sum(1).mean(),
    "units M (capacity per window)": M,
    "writes that evict a held message": overwrites.eviction_fraction,
    "fraction of units read per token (measured)": n_read.mean() / M,
    "fraction of units read per token (nominal k/M)": K / M,
    "effective units read per token, 2^H(read weights)": (2**read_entropy).mean(),
    "units occupied at the last position (mean)": occupied[:, -1].mean(),
    **({"read-pointer advances per token (mean)": (batch["pointer"][:, -1] + 1).mean() / T} if "pointer" in batch else {}),
    "windows with more writes than units": (wrote.sum(1) > M).mean(),
}
for name, value in summary.items():
    print(f"{name:>52s}: {value}" if isinstance(value, (int, np.integer)) else f"{name:>52s}: {float(value):.3f}")
if (wrote.sum(1) <= M).all():
    print(f"\nno window wrote more than M={M} messages: the write price was zero throughout, nothing was evicted, "
          f"and on average {M - occupied[:, -1].mean():.0f} of the {M} units stayed empty to the end of a window")

char_counts = np.bincount(tokens.ravel(), minlength=len(vocab.chars))
frequent = np.argsort(-char_counts)[:24]
write_rate = np.array([wrote[tokens == c].mean() for c in frequent])
fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.1,
                    subplot_titles=("write fraction per window", "P(write | character), 24 most frequent",
                                    "writes and reads by position"))
fig.add_trace(go.Histogram(x=wrote.mean(1), xbins=dict(start=0, end=1.0001, size=0.025), name="windows", showlegend=False),
              row=1, col=1)
fig.add_vline(x=min(1.0, M / T), line_dash="dash", line_color="grey", annotation_text="M/T (units full)", row=1, col=1)
fig.add_trace(go.Bar(x=[show_char(vocab.chars[c]) for c in frequent], y=write_rate, name="P(write | char)", showlegend=False),
              row=1, col=2)
fig.add_hline(y=write_fraction, line_dash="dot", line_color="grey", annotation_text="all characters",
              annotation_position="bottom left", row=1, col=2)
positions = np.arange(T)
fig.add_trace(go.Scatter(x=positions, y=wrote.mean(0), name="tokens that write (fraction)"), row=1, col=3)
fig.add_trace(go.Scatter(x=positions, y=n_read.mean(0) / M, name="units read / M (measured)"), row=1, col=3)
fig.add_trace(go.Scatter(x=positions, y=occupied.mean(0) / M, name="units occupied / M"), row=1, col=3)
fig.add_hline(y=K / M, line_dash="dash", line_color="grey", annotation_text="k/M", row=1, col=3)
fig.update_xaxes(title_text="fraction of tokens that write", range=[0, 1.02], row=1, col=1)
fig.update_yaxes(title_text="windows", row=1, col=1)
fig.update_xaxes(title_text="character", tickmode="array", tickvals=[show_char(vocab.chars[c]) for c in frequent],
                 tickangle=0, row=1, col=2)
fig.update_yaxes(title_text="write probability", range=[0, 1.02], row=1, col=2)
fig.update_xaxes(title_text="position in window", row=1, col=3)
fig.update_yaxes(title_text="fraction (of tokens, or of the M units)", type="log", row=1, col=3)
fig.update_layout(title=f"sparsity over {B} validation windows (M={M}, k={K})", height=420, width=1300,
                  legend=dict(x=1.0, y=0.2))
save_figure(fig, "02_routing_sparsity")
fig.show()

# %% [markdown]
# ## Do units specialise?
#
# Every write is labelled with the unit that took it. If units specialised by *content*,
# knowing the unit would tell us about the character written (or the character before it -
# the message's key is built from the token and its local window): the mutual information
# MI(unit; character) would sit clearly above what the same counts give with the unit labels
# shuffled. With **one pool and the refractory ring**, the unit is a function of the write's
# ordinal (unit = ordinal mod pool size), so MI(unit; ordinal) equals the unit's entropy by
# construction and content can only show up through whatever ties content to ordinal (e.g.
# the first writes of a window). Content routing needs `n_pools > 1` (pools bid by content)
# or `refractory=False` (each unit bids by content; the ablation).
#
# The heatmap shows P(character | unit) for the most written characters; the top row is the
# distribution over all writes. Rows that look like the top row mean: no specialisation.

# %%
b_idx, t_idx = np.nonzero(wrote)
w_unit, w_char = batch["unit"][b_idx, t_idx], tokens[b_idx, t_idx]
w_prev = np.where(t_idx > 0, tokens[b_idx, np.maximum(t_idx - 1, 0)], -1)
w_ordinal = (np.cumsum(wrote, axis=1) - 1)[b_idx, t_idx]
rng = np.random.default_rng(seed)
features = {
    "character written": w_char,
    "previous character": w_prev,
    "position (bucket of 16)": t_idx // 16,
    "write ordinal in window": w_ordinal,
}
h_unit = float(entropy_bits(np.bincount(w_unit, minlength=M)))
mi = {name: mutual_information_bits(w_unit, f) for name, f in features.items()}
mi_null = {name: shuffled_mutual_information_bits(w_unit, f, n_shuffles, rng) for name, f in features.items()}
print(f"{len(w_unit)} writes; H(unit) = {h_unit:.2f} bits (log2 M = {np.log2(M):.2f})")
for name in features:
    h_feature = float(entropy_bits(np.unique(features[name], return_counts=True)[1]))
    excess = mi[name] - mi_null[name]
    print(f"MI(unit; {name:>24s}) = {mi[name]:.3f} bits, shuffled {mi_null[name]:.3f}, "
          f"excess {excess:+.3f} = {excess / max(h_feature, 1e-9):.1%} of H({name}) = {h_feature:.2f}")
content_excess = (mi["character written"] - mi_null["character written"]) / max(mi["write ordinal in window"], 1e-9)
print(f"\ncontent vs. ordinal: the excess MI with the character written is {content_excess:.1%} of the MI with the ordinal")

top_chars = np.argsort(-np.bincount(w_char, minlength=len(vocab.chars)))[:30]
joint = np.zeros((M, len(vocab.chars)))
np.add.at(joint, (w_unit, w_char), 1.0)
min_writes = 5 if not smoke else 1
shown_units = np.nonzero(joint.sum(1) >= min_writes)[0]
p_char_given_unit = joint[shown_units][:, top_chars] / joint[shown_units].sum(1, keepdims=True)
overall = joint.sum(0)[top_chars] / joint.sum()
print(f"{len(shown_units)} of {M} units took at least {min_writes} writes in the batch; "
      f"{int((joint.sum(1) == 0).sum())} took none")
fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], horizontal_spacing=0.14,
                    subplot_titles=("P(character | unit); top row: all writes", "MI(unit; feature) vs shuffled units"))
labels = [show_char(vocab.chars[c]) for c in top_chars]
fig.add_trace(go.Heatmap(z=np.vstack([overall, p_char_given_unit]), x=labels, y=["all"] + [str(m) for m in shown_units],
                         colorscale="Viridis", colorbar=dict(title="P", x=0.6, xanchor="left", thickness=12),
                         hovertemplate="unit %{y}, char %{x}: %{z:.2f}<extra></extra>"), row=1, col=1)
fig.add_trace(go.Bar(x=list(features), y=[mi[n] for n in features], name="MI"), row=1, col=2)
fig.add_trace(go.Bar(x=list(features), y=[mi_null[n] for n in features], name="shuffled units"), row=1, col=2)
fig.add_hline(y=h_unit, line_dash="dash", line_color="grey", annotation_text="H(unit)", row=1, col=2)
fig.update_yaxes(title_text="unit", autorange="reversed", type="category", row=1, col=1)
fig.update_xaxes(title_text="character written", row=1, col=1)
fig.update_yaxes(title_text="bits", row=1, col=2)
fig.update_layout(title=f"what the units hold over {B} validation windows ({len(w_unit)} writes; "
                        f"units with at least {min_writes} writes)", height=max(450, 9 * len(shown_units) + 170),
                  width=1250, barmode="group", legend=dict(x=1.0, y=1.0))
save_figure(fig, "02_routing_units")
fig.show()

# %% [markdown]
# ## One text, one unit: the explorer's figures
#
# Three views of a single text (a validation snippet by default):
#
# * **writes** - top: salience `p_t` per token (red: it wrote). Bottom: units x positions;
#   the shading is the age of the message each unit holds (hover for the character), the
#   markers are the writes: which unit absorbed which token.
# * **reads** - left: the read-back weights, token t (x) over units (y); right: the same
#   weights mapped to the *source* token each unit held at t - the inverted mixer's
#   equivalent of an attention map (it has at most k entries per column, all on tokens that
#   wrote and still held). Red ticks: the message whose ordinal equals the read pointer
#   (`hook_read_pointer`, the cumulative advance gate). The ordinal part of a read score
#   depends on pointer - ordinal, so reads that track the ticks (at any fixed offset) follow
#   the pointer, reads hugging the diagonal follow recency. Ticks are drawn only where a message
#   with that ordinal exists: when the pointer advances faster than tokens write (compare the
#   two rates in the sparsity printout), they stop after the first positions.
# * **unit card** - the chosen unit in this text (its gain waxing and waning, when it fired,
#   how much each token read from it) and across the validation batch (what it held, in which
#   contexts, and who read it, each next to the all-unit baseline).
#
# Per-unit statistics across the batch, computed once:

# %%
width = max(model.config.short_conv, 1)  # the block's short conv: what each message's key has seen
held_contexts = [Counter() for _ in range(M)]
for b, t in zip(b_idx.tolist(), t_idx.tolist()):
    window = vocab.decode(tokens[b, max(0, t - width + 1) : t + 1])
    held_contexts[batch["unit"][b, t]]["".join(show_char(c) for c in window)] += 1
reader_onehot = np.eye(len(vocab.chars))[tokens]  # (B, T, V)
reader_mass = np.einsum("btm,btv->mv", read, reader_onehot)  # read mass unit m receives from char v
writes_per_unit = joint.sum(1)


def text_record(text: str) -> dict[str, np.ndarray]:
    ids = vocab.encode(text)[None]
    record = {k: v[0] for k, v in run_hooks(ids).items()}
    record["text"] = text
    return record


def blank(keep: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` where ``keep``, else None (an empty heatmap cell; widgets cannot send NaN)."""
    return np.where(keep, values, None)


def position_axis(fig, text, row, col):
    if len(text) <= 100:
        fig.update_xaxes(tickmode="array", tickvals=list(range(len(text))), ticktext=[show_char(c) for c in text],
                         tickfont=dict(size=9), tickangle=0, row=row, col=col)
    fig.update_xaxes(title_text="position t (hover for the character)", row=row, col=col)


def unit_range(rec) -> list[float]:
    """Reversed y-range covering the units this text touched (the rest stay empty)."""
    used = np.concatenate([np.nonzero((rec["occupant"] >= 0).any(0))[0], np.nonzero((rec["read"] > 0).any(0))[0], [0]])
    return [min(M - 1, int(used.max()) + 2) + 0.5, -0.5]


def fig_writes(rec) -> go.Figure:
    text, unit, sal, occ = rec["text"], rec["unit"], rec["salience"], rec["occupant"]
    pos, chars = np.arange(len(text)), np.array([show_char(c) for c in text])
    w = unit >= 0
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.25, 0.75], vertical_spacing=0.06,
                        subplot_titles=("salience p_t (red: the token wrote)", "units: age of the held message; x = writes"))
    fig.add_trace(go.Bar(x=pos, y=sal, marker_color=np.where(w, WRITE, GREY), customdata=chars, showlegend=False,
                         hovertemplate="t=%{x} '%{customdata}'<br>p=%{y:.2f}<extra></extra>"), row=1, col=1)
    fig.add_hline(y=0.5, line_dash="dash", line_color="grey", row=1, col=1)
    age = blank(occ >= 0, pos[:, None] - occ).T  # (M, T)
    held = np.where(occ >= 0, chars[np.maximum(occ, 0)], "").T
    fig.add_trace(go.Heatmap(z=age, x=pos, y=np.arange(M), colorscale="Blues", reversescale=True, customdata=held,
                             colorbar=dict(title="age", len=0.7, y=0.35),
                             hovertemplate="unit %{y}, t=%{x}: holds '%{customdata}' (age %{z})<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Scatter(x=pos[w], y=unit[w], mode="markers+text", marker=dict(symbol="x", size=7, color=WRITE),
                             text=chars[w], textposition="middle left", textfont=dict(size=9, color=WRITE),
                             customdata=chars[w], name="write", showlegend=False,
                             hovertemplate="t=%{x} '%{customdata}' -> unit %{y}<extra></extra>"), row=2, col=1)
    fig.update_yaxes(title_text="p_t", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="unit", range=unit_range(rec), row=2, col=1)
    position_axis(fig, text, 2, 1)
    fig.update_layout(title=f"token -> unit writes: {int(w.sum())} of {len(text)} tokens wrote", height=650, width=1100)
    return fig


def fig_reads(rec) -> go.Figure:
    text, weights, occ = rec["text"], rec["read"], rec["occupant"]
    n = len(text)
    pos, chars = np.arange(n), np.array([show_char(c) for c in text])
    source = np.zeros((n, n))  # [reader t, source s]
    rows, units = np.nonzero((weights > 0) & (occ >= 0))
    np.add.at(source, (rows, occ[rows, units]), weights[rows, units])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("read-back weights: token t -> unit m", "mapped to the source token s the unit held"))
    fig.add_trace(go.Heatmap(z=blank(weights.T > 0, weights.T), x=pos, y=np.arange(M), colorscale="Viridis",
                             zmin=0, zmax=1, colorbar=dict(title="weight", x=1.0),
                             hovertemplate="token t=%{x} reads unit %{y}: %{z:.2f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=blank(source.T > 0, source.T), x=pos, y=pos, colorscale="Viridis", zmin=0, zmax=1,
                             customdata=np.broadcast_to(chars[:, None], (n, n)), showscale=False,
                             hovertemplate="t=%{x} reads the message of s=%{y} '%{customdata}': %{z:.2f}<extra></extra>"),
                  row=1, col=2)
    # The read pointer (cumulative advance gate) is the reference of the ordinal read score: draw
    # the source position of the message whose ordinal equals it, where that message exists by then.
    if "pointer" in rec:  # a mixer without a read pointer has no ordinal reference to draw
        write_pos = np.nonzero(rec["unit"] >= 0)[0]
        ordinal = np.floor(rec["pointer"]).astype(int)
        ok = (ordinal >= 0) & (ordinal < len(write_pos))
        ok[ok] &= write_pos[ordinal[ok]] <= pos[ok]
        fig.add_trace(go.Scatter(x=pos[ok], y=write_pos[ordinal[ok]], mode="markers",
                                 name="message at the read pointer's ordinal",
                                 marker=dict(symbol="line-ew-open", size=7, color=WRITE)), row=1, col=2)
    fig.update_yaxes(title_text="unit m", range=unit_range(rec), row=1, col=1)
    fig.update_yaxes(title_text="source position s", autorange="reversed", row=1, col=2)
    position_axis(fig, text, 1, 1)
    fig.update_xaxes(title_text="reading position t", row=1, col=2)
    fig.update_layout(title=f"read-back: each token reads k={K} of M={M} units "
                            f"({(weights > 0).sum(-1).mean():.2f} on average in this text)", height=520, width=1150,
                      showlegend=True, legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.18))
    return fig


def fig_unit(rec, m: int) -> go.Figure:
    text, gain, weights, unit = rec["text"], rec["gain"][:, m], rec["read"][:, m], rec["unit"]
    pos = np.arange(len(text))
    fires = np.nonzero(unit == m)[0]
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.16, horizontal_spacing=0.1,
                        subplot_titles=(f"unit {m} in this text: gain, fires, read weight", "characters it held (validation batch)",
                                        f"contexts it held (last {width} characters)", "who reads it (share of its read mass)"))
    fig.add_trace(go.Bar(x=pos, y=weights, name="read weight on the unit", marker_color=READ,
                         customdata=[show_char(c) for c in text],
                         hovertemplate="t=%{x} '%{customdata}' reads %{y:.2f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=pos, y=gain, mode="lines", name="refractory gain", line=dict(color=GAIN)), row=1, col=1)
    fig.add_trace(go.Scatter(x=fires, y=np.full(len(fires), 1.08), mode="markers+text", name="fires (takes a message)",
                             text=[show_char(text[t]) for t in fires], textposition="top center",
                             marker=dict(symbol="triangle-down", size=10, color=WRITE)), row=1, col=1)
    held = joint[m]
    order = np.argsort(-held)[:12]
    share = held[order] / max(held.sum(), 1)
    base = joint.sum(0)[order] / joint.sum()
    names = [show_char(vocab.chars[c]) for c in order]
    fig.add_trace(go.Bar(x=names, y=share, name=f"unit {m}", marker_color=WRITE), row=1, col=2)
    fig.add_trace(go.Bar(x=names, y=base, name="all units", marker_color=GREY), row=1, col=2)
    top = held_contexts[m].most_common(10)[::-1]
    fig.add_trace(go.Bar(x=[c for _, c in top], y=[f"«{s}»" for s, _ in top], orientation="h", name="contexts held",
                         marker_color=WRITE, showlegend=False), row=2, col=1)
    mass = reader_mass[m]
    order = np.argsort(-mass)[:12]
    all_mass = reader_mass.sum(0)
    fig.add_trace(go.Bar(x=[show_char(vocab.chars[c]) for c in order], y=mass[order] / max(mass.sum(), 1e-12),
                         name=f"reads of unit {m}", marker_color=READ), row=2, col=2)
    fig.add_trace(go.Bar(x=[show_char(vocab.chars[c]) for c in order], y=all_mass[order] / max(all_mass.sum(), 1e-12),
                         name="reads of all units", marker_color=LIGHT), row=2, col=2)
    position_axis(fig, text, 1, 1)
    fig.update_yaxes(title_text="gain / weight", range=[0, 1.25], row=1, col=1)
    fig.update_yaxes(title_text="share of its writes", row=1, col=2)
    fig.update_xaxes(title_text="character", row=1, col=2)
    fig.update_xaxes(title_text="times held", row=2, col=1)
    fig.update_yaxes(title_text="share of read mass", row=2, col=2)
    fig.update_xaxes(title_text="reading character", row=2, col=2)
    fig.update_layout(title=f"unit {m}: {int(writes_per_unit[m])} of {len(w_unit)} writes in the batch "
                            f"({writes_per_unit[m] / max(len(w_unit), 1):.1%}; even share 1/M = {1 / M:.1%})",
                      height=720, width=1200, barmode="group")
    return fig


# Validation snippets: starts of speeches (after a blank line), evenly spread over the split.
val_text = vocab.decode(task.val_data)
starts = [i + 2 for i in range(len(val_text) - snippet_len - 2) if val_text[i : i + 2] == "\n\n"]
starts = starts or list(range(0, len(val_text) - snippet_len, max(1, (len(val_text) - snippet_len) // 12)))
starts = [starts[i] for i in np.linspace(0, len(starts) - 1, min(12, len(starts))).astype(int)]
snippets = [val_text[s : s + snippet_len] for s in starts]

default = text_record(snippets[0])
default_unit = int(default["read"].sum(0).argmax())
print(f"default selection: snippet 0 ({snippet_len} characters), unit {default_unit} (the unit read most in it)")
print(repr(snippets[0]))
for name, figure in (("writes", fig_writes(default)), ("reads", fig_reads(default)), ("unit", fig_unit(default, default_unit))):
    save_figure(figure, f"02_routing_{name}")
    figure.show()

# %% [markdown]
# ## Explorer
#
# Pick a validation snippet or type your own text (characters must be in the model's
# vocabulary; press Enter), and pick a unit. The three figures above redraw for the choice.
# Without a live kernel (a saved notebook, a headless run) only the initial state shows.

# %%
def refresh(widget: go.FigureWidget, figure: go.Figure) -> None:
    with widget.batch_update():
        widget.data = ()
        widget.layout = figure.layout
    widget.add_traces(list(figure.data))


state = {"record": default}
snippet_picker = widgets.Dropdown(options=[(f"{i}: {s[:50]!r}", i) for i, s in enumerate(snippets)], value=0,
                                  description="snippet", layout=widgets.Layout(width="520px"))
typed = widgets.Text(value="", placeholder="or type a text here and press Enter", continuous_update=False,
                     layout=widgets.Layout(width="520px"))
unit_slider = widgets.IntSlider(value=default_unit, min=0, max=M - 1, description="unit", continuous_update=False,
                                layout=widgets.Layout(width="520px"))
status = widgets.HTML()
writes_widget, reads_widget, unit_widget = (go.FigureWidget(fig_writes(default)), go.FigureWidget(fig_reads(default)),
                                            go.FigureWidget(fig_unit(default, default_unit)))


def show_text(text: str) -> None:
    state["record"] = text_record(text)
    refresh(writes_widget, fig_writes(state["record"]))
    refresh(reads_widget, fig_reads(state["record"]))
    refresh(unit_widget, fig_unit(state["record"], unit_slider.value))
    status.value = f"{len(text)} characters, {int((state['record']['unit'] >= 0).sum())} writes"


def on_snippet(change) -> None:
    show_text(snippets[change["new"]])


def on_typed(change) -> None:
    text = change["new"]
    if not text:
        return
    try:
        vocab.encode(text)
    except ValueError as exc:
        status.value = f"<span style='color:#b00'>{exc}</span>"
        return
    show_text(text)


def on_unit(change) -> None:
    refresh(unit_widget, fig_unit(state["record"], change["new"]))


snippet_picker.observe(on_snippet, names="value")
typed.observe(on_typed, names="value")
unit_slider.observe(on_unit, names="value")
display(widgets.VBox([snippet_picker, typed, unit_slider, status]))
for figure_widget in (writes_widget, reads_widget, unit_widget):  # on their own: a rendered page draws each
    display(figure_widget)

# %% [markdown]
# ## MQAR: does routing find the pairs?
#
# Multi-query associative recall (`workbench/tasks/mqar.py`): `k1 v1 k2 v2 ...` pairs, then
# each key is queried once among random filler, and the model must answer with its value.
# Here we know what matters, so routing can be checked against it:
#
# * **salience by role** - a good gate writes the pairs (the value token's message carries the
#   key through the local window, so writing values suffices) and skips the filler;
# * **read mass at the queries** - the share of a query's read weight landing on the unit that
#   holds its own pair's value (or key) message, versus other pairs and filler messages.
#
# Same model config (protocol v2 with the mixer's defaults), protocol v2's MQAR 64 x 4 cell
# (vocabulary 512, as in protocol v2).

# %%
ROLES = ["key", "value", "query", "filler"]


def mqar_routing(trained, task, n: int = 256) -> dict:
    """Routing on MQAR: write fraction by token role and where each query's read mass lands.

    A query's own pair is known, so its read weights split into: the unit holding the pair's value
    message (what it should read), its key's message, other pairs' messages, and filler or query
    messages.
    """
    inputs, targets = task.eval_batch.inputs[:n], task.eval_batch.targets[:n]
    kv = task.kv_pairs
    # Only the labelled positions are scored: full logits over a large vocabulary would be big.
    rec, predicted = internals(trained, layer, lambda: trained.predict_labelled(inputs.to(device), targets.to(device)))
    predicted = predicted.cpu()
    x, y = inputs.numpy(), targets.numpy()
    role = np.full(x.shape, "filler", dtype=object)
    role[:, : 2 * kv : 2], role[:, 1 : 2 * kv : 2] = "key", "value"
    role[y != IGNORE] = "query"
    landing: dict[str, list[float]] = {"own value": [], "own key": [], "other pairs": [], "query/filler": []}
    value_held = []
    for b, t in zip(*np.nonzero(y != IGNORE)):
        key_pos = int(np.nonzero(x[b, : 2 * kv : 2] == x[b, t])[0][0]) * 2
        holder, w = rec["occupant"][b, t], rec["read"][b, t]  # (M,) source position held by each unit; weights
        landing["own value"].append(w[holder == key_pos + 1].sum())
        landing["own key"].append(w[holder == key_pos].sum())
        other = (holder >= 0) & (holder < 2 * kv) & (holder != key_pos) & (holder != key_pos + 1)
        landing["other pairs"].append(w[other].sum())
        landing["query/filler"].append(w[holder >= 2 * kv].sum())
        value_held.append((holder == key_pos + 1).any())
    return {"rec": rec, "role": role, "role_write": {r: float((rec["unit"] >= 0)[role == r].mean()) for r in ROLES},
            "landing": {k: float(np.mean(v)) for k, v in landing.items()}, "value_held": float(np.mean(value_held)),
            "accuracy": float((predicted == targets).numpy()[y != IGNORE].mean()), "queries": len(value_held),
            "M": unit_count(rec)}


def routing_figure(routing: dict, title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("write fraction by token role", "where a query's read mass lands"))
    fig.add_trace(go.Bar(x=ROLES, y=[routing["role_write"][r] for r in ROLES], showlegend=False, marker_color=WRITE),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=list(routing["landing"]), y=list(routing["landing"].values()), showlegend=False,
                         marker_color=READ), row=1, col=2)
    fig.update_yaxes(title_text="fraction of tokens that write", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="mean read weight", range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="role", row=1, col=1)
    fig.update_xaxes(title_text="message read (by the source it came from)", row=1, col=2)
    fig.update_layout(title=title, height=420, width=1000)
    return fig


if mqar:
    mcell = mqar_cell(64, 4, "smoke" if smoke else "demo")
    mvariant = Variant("inverted", "inverted", {**mixer_options, **mqar_mixer_options})
    mconfig = experiment.config(mcell, mvariant, seed, mcell.train.get("lr", 3e-3))
    mconfig.task.options["long_configs"] = []
    mconfig.train.steps, mconfig.train.eval_every = mqar_steps, max(1, mqar_steps // 4)
    mconfig.train.warmup_steps, mconfig.train.checkpoint_every = min(100, mqar_steps // 10), mqar_steps
    if smoke:
        mconfig.model.d_model = 32
        mconfig.model.mixer_options = {"n_units": 16, **mixer_options, **mqar_mixer_options}
    mconfig.validate()
    mtask = build_task(mconfig.task.name, mconfig.task.options)
    started = time.perf_counter()
    mmodel, mresult = train(mconfig, progress=not smoke, task=mtask)
    mmodel.eval()
    print(f"MQAR {mcell.label}: {mresult['steps']} steps in {time.perf_counter() - started:.0f}s, "
          f"held-out accuracy {mresult['metrics']['accuracy']:.3f}")

    mrouting = mqar_routing(mmodel, mtask)
    mM = mrouting["M"]
    if mM >= mtask.seq_len:
        print(f"note: M={mM} units >= {mtask.seq_len} tokens per sequence, so writing is free (the price never binds) "
              f"and the gate has no reason to skip filler; set mqar_mixer_options={{'n_units': 8}} to make it choose")
    print(f"accuracy at the {mrouting['queries']} queries of this batch: {mrouting['accuracy']:.3f}; "
          f"the own value's message is still held at {mrouting['value_held']:.1%} of them")
    for r in ROLES:
        print(f"  write fraction of {r:>6s} tokens: {mrouting['role_write'][r]:.3f}")
    for name, value in mrouting["landing"].items():
        print(f"  mean read mass of a query on messages from {name:>12s}: {value:.3f}")
    fig = routing_figure(mrouting, f"MQAR {mcell.label}, inverted (M={mM}): query accuracy {mrouting['accuracy']:.2f}")
    save_figure(fig, "02_routing_mqar")
    fig.show()

    mfirst = {k: v[0] for k, v in mrouting["rec"].items()}
    mfirst["text"] = "".join("KVQ."[ROLES.index(r)] for r in mrouting["role"][0])
    fig = fig_writes(mfirst)
    fig.update_layout(title="MQAR example 0: writes (tokens labelled K key, V value, Q query, . filler)")
    save_figure(fig, "02_routing_mqar_writes")
    fig.show()

# %% [markdown]
# ## Live: change the routing and re-train
#
# The knobs that decide routing: **M** (units), **pools** (with more than one, messages go to
# the pool whose learned interest bids highest, so content gets a say), **refractoriness**
# (off: each unit bids by content and similar messages overwrite), the **write price** (what a
# write beyond capacity costs) and the step budget. Press the button: a small inverted model
# trains on MQAR (64 tokens, 4 pairs, a 256-token vocabulary) and the two panels redraw - which
# roles write, and where each query's read mass lands. Headless, it trains once at the defaults.

# %%
live_task = build_task("mqar", {"seq_len": 64, "kv_pairs": 4, "vocab_size": 256, "n_eval": 64 if smoke else 256,
                                 "long_configs": []})
live_default_steps = 20 if smoke else 400


def live_train(n_units: int, n_pools: int, refractory: bool, write_price: float, n_steps: int):
    cfg = RunConfig.from_dict({
        "task": {"name": "mqar", "options": {"seq_len": 64, "kv_pairs": 4, "vocab_size": 256,
                                             "n_eval": 64 if smoke else 256, "long_configs": []}},
        "model": {"mixer": "inverted", "d_model": 32 if smoke else 64, "n_layers": 1,
                  "mixer_options": {"n_units": n_units, "n_pools": n_pools, "refractory": refractory,
                                    "write_price": write_price}},
        "train": {"steps": n_steps, "batch_size": 32, "eval_every": n_steps, "warmup_steps": max(1, n_steps // 10),
                  "checkpoint_every": n_steps, "seed": seed},
    })  # raises ConfigError for impossible knobs (M not divisible by the pools)
    started = time.perf_counter()
    trained, _ = train(cfg, progress=False, task=live_task)
    return mqar_routing(trained.eval(), live_task), time.perf_counter() - started


def live_title(routing: dict, knob_values: dict, seconds: float) -> str:
    knob_text = ", ".join(f"{k}={v}" for k, v in knob_values.items())
    return (f"live MQAR: {knob_text} ({seconds:.0f}s)<br><sup>query accuracy {routing['accuracy']:.2f}; "
            f"own value still held at {routing['value_held']:.0%} of the queries</sup>")


live_knobs = {
    "n_units": widgets.Dropdown(options=[4, 8, 16, 32, 64], value=8, description="M (units)"),
    "n_pools": widgets.Dropdown(options=[1, 2, 4, 8], value=1, description="pools"),
    "refractory": widgets.Checkbox(value=True, description="refractory"),
    "write_price": widgets.FloatSlider(value=1.0, min=0.0, max=4.0, step=0.25, description="write price"),
    "n_steps": widgets.IntSlider(value=live_default_steps, min=10, max=1500, step=10, description="steps"),
}
live_button = widgets.Button(description="train & redraw", button_style="primary")
live_status = widgets.HTML()
knob_values = {k: w.value for k, w in live_knobs.items()}
live_routing, live_seconds = live_train(**knob_values)
live_initial = routing_figure(live_routing, live_title(live_routing, knob_values, live_seconds))
save_figure(live_initial, "02_routing_live")
live_widget = go.FigureWidget(live_initial)
live_status.value = f"trained at the default knobs in {live_seconds:.1f}s"


def on_live_click(_button) -> None:
    live_button.disabled = True
    live_status.value = "training ..."
    try:
        values = {k: w.value for k, w in live_knobs.items()}
        routing, seconds = live_train(**values)
    except ConfigError as exc:
        live_status.value = f"<span style='color:#b00'>{exc}</span>"
    else:
        refresh(live_widget, routing_figure(routing, live_title(routing, values, seconds)))
        live_status.value = f"trained in {seconds:.1f}s"
    finally:
        live_button.disabled = False


live_button.on_click(on_live_click)
display(widgets.VBox([widgets.HBox(list(live_knobs.values())[:3]),
                      widgets.HBox([live_knobs["write_price"], live_knobs["n_steps"], live_button, live_status])]))
display(live_widget)

# %% [markdown]
# ## Seeking units on multi-stream recall
#
# The ring above decides the unit by the write's ordinal, so content never chooses where a message
# goes. The **seeking** mixer (`workbench/mixers/seeking.py`) lets the M units of each head bid for
# every message (a softmax over the units, times the token's salience) and rest after absorbing
# one (a refractory gain from each unit's recent load); a unit keeps its message until it absorbs
# another. Multi-stream recall (`workbench/tasks/multistream.py`) is where that should matter: S
# interleaved key-value streams with rates 1 : 1/4 : 1/16 : 1/64, queries ask for one of each
# stream's last few values. A window (or a FIFO ring) of M recent events loses the rare streams;
# units that split by stream keep the last events of each.
#
# Three models at equal state (M = 32 units or a window of 32 tokens; the state floats are
# printed), otherwise identical (one block, the short conv of protocol v2), trained here for
# `ms_steps`. Then, on held-out sequences, through the seeking mixer's `hook_writes`
# (`workbench.lab.units`):
#
# * **P(unit | stream)** per head - the share of each stream's written mass each unit took
#   (columns sum to 1, so rare streams are visible); a head whose units specialise shows blocks;
# * **MI(unit; stream)** in bits per head, against a **null** that shuffles the streams among the
#   event tokens of each sequence (its mean and 95th percentile over `ms_permutations`
#   permutations); the ring's MI is computed the same way;
# * the same MI with each message's whole mass on its **top unit** - the softmax spreads every
#   message over all units, which could dilute a specialization of the units' first choices;
# * **write mass by stream** - the salience alone can favour rare streams (write them more
#   strongly) without any unit specialising, so it is shown beside the MI.

# %%
MS_VARIANTS = {  # equal state: 32 units per head, 32 ring units, a window of 32 tokens
    "seeking": ("seeking", {"n_units": 32}),
    "inverted ring": ("inverted", {"n_units": 32, "n_pools": 1}),
    "sliding_window": ("sliding_window", {"window": 32}),
}
if smoke:
    ms_steps, ms_d_model, ms_permutations = min(ms_steps, 8), 16, min(ms_permutations, 5)
    ms_task_options = {**ms_task_options, "seq_len": 64, "key_range": 32, "n_values": 16, "n_queries": 8, "recent": 2,
                       "n_eval": 16}
    ms_examples = min(ms_examples, 16)
    MS_VARIANTS = {name: (mixer, {k: min(v, 8) for k, v in opts.items()}) for name, (mixer, opts) in MS_VARIANTS.items()}


def train_multistream(mixer: str, options: dict, n_steps: int, ms_task):
    cfg = multistream_config(mixer, options, ms_task_options, n_steps, ms_d_model, seed=seed,
                             batch_size=8 if smoke else 32, lr=ms_lr)
    started = time.perf_counter()
    trained, record = train(cfg, progress=not smoke, task=ms_task)
    return trained.eval(), record, time.perf_counter() - started


def load_multistream(path: str):
    """A trained multistream model from its checkpoint, with a record like train's (metrics, state floats)."""
    started = time.perf_counter()
    trained, cfg, loaded_task, payload = model_from_checkpoint(Path(path).expanduser())
    if cfg.task.name != "multistream":
        raise ValueError(f"{path} holds a {cfg.task.name} model; ms_checkpoints takes multistream checkpoints")
    trained.eval()
    record = {"mixer": cfg.model.mixer, "steps": payload["step"], "metrics": loaded_task.evaluate(trained),
              "state_floats": {"floats": trained.state_floats(loaded_task.seq_len)}, "task_options": dict(cfg.task.options)}
    return trained, record, loaded_task, time.perf_counter() - started


ms_models, ms_records, ms_sources = {}, {}, {}
if multistream:
    ms_loaded = {name: load_multistream(path) for name, path in ms_checkpoints.items()}
    if ms_loaded:  # the checkpoints' task (and its held-out set) replaces ms_task_options for every model
        ms_task_options = next(iter(ms_loaded.values()))[1]["task_options"]
    ms_task = build_task("multistream", ms_task_options)
    n_streams, ms_chance = ms_task.options["n_streams"], 1 / ms_task.options["n_values"]
    for name, (mixer_name, options) in MS_VARIANTS.items():
        if name in ms_loaded:
            ms_models[name], ms_records[name], loaded_task, seconds = ms_loaded[name]
            if ms_records[name]["task_options"] != ms_task_options:
                raise ValueError(f"ms_checkpoints[{name!r}] was trained on another multistream task than the others")
            ms_sources[name] = f"loaded ({ms_records[name]['steps']} steps)"
        else:
            ms_models[name], ms_records[name], seconds = train_multistream(mixer_name, options, ms_steps, ms_task)
            ms_sources[name] = f"trained here ({ms_steps} steps)"
        m = ms_records[name]["metrics"]
        print(f"{name:>15s}: {ms_sources[name]}, {ms_records[name]['state_floats']['floats']:,} state floats, "
              f"{seconds:.0f}s, accuracy "
              f"{m['accuracy']:.3f}; by stream " + ", ".join(f"{m[f'accuracy@stream{s}']:.3f}" for s in range(n_streams)))


def stream_accuracy_figure(records: dict, title: str) -> go.Figure:
    fig = go.Figure()
    for name, record in records.items():
        fig.add_trace(go.Bar(x=[f"stream {s}" for s in range(n_streams)], name=name,
                             y=[record["metrics"][f"accuracy@stream{s}"] for s in range(n_streams)],
                             marker_color=mixer_colour(record["mixer"])))
    fig.add_hline(y=ms_chance, line_dash="dot", line_color="grey", annotation_text="chance")
    fig.update_yaxes(title_text="held-out accuracy", range=[0, 1.02])
    fig.update_xaxes(title_text="stream (rarest last)")
    fig.update_layout(title=title, barmode="group", height=400, width=850, margin=dict(t=90))
    return fig


if multistream:
    fig = stream_accuracy_figure(ms_records, "multi-stream recall at equal state: accuracy by stream<br><sup>"
                                 + "; ".join(f"{n}: {v}" for n, v in ms_sources.items()) + "</sup>")
    save_figure(fig, "02_routing_multistream_accuracy")
    fig.show()

# %%
def specialization(trained) -> tuple:
    """Write weights on the held-out batch, their streams, MI against the null, and the load."""
    inputs = ms_task.eval_batch.inputs[:ms_examples]
    weights = write_weights(trained, inputs)
    streams = multistream_streams(inputs, n_streams, ms_task.options["key_range"], ms_task.options["n_queries"])
    spec = unit_stream_specialization(weights, streams, n_streams, ms_permutations, np.random.default_rng(seed))
    return weights, streams, spec


def specialization_figure(spec, title: str, mixer_name: str = "seeking") -> go.Figure:
    heads = spec.joint.shape[0]
    p = spec.joint / np.maximum(spec.joint.sum(1, keepdims=True), 1e-12)  # (H, M, S): each stream's column sums to 1
    fig = make_subplots(rows=1, cols=heads + 1, horizontal_spacing=0.045, column_widths=[1.0] * heads + [1.6],
                        subplot_titles=[f"head {h}: P(unit | stream)" for h in range(heads)]
                        + ["MI(unit; stream); whisker: null's 95th pct"])
    for h in range(heads):  # one colour scale for every head (the layout's coloraxis)
        fig.add_trace(go.Heatmap(z=p[h], x=[f"s{s}" for s in range(n_streams)], y=list(range(p.shape[1])),
                                 coloraxis="coloraxis", hovertemplate="unit %{y}, %{x}: %{z:.3f}<extra></extra>"),
                      row=1, col=h + 1)
        fig.update_yaxes(autorange="reversed", title_text="unit" if h == 0 else None, row=1, col=h + 1)
    x = [f"head {h}" for h in range(heads)]
    fig.add_trace(go.Bar(x=x, y=spec.mi_bits, name="measured", marker_color=mixer_colour(mixer_name)), row=1, col=heads + 1)
    fig.add_trace(go.Bar(x=x, y=spec.null_mean_bits, name="shuffled streams (mean)", marker_color=GREY,
                         error_y=dict(type="data", symmetric=False, array=spec.null_p95_bits - spec.null_mean_bits,
                                      arrayminus=np.zeros(heads))), row=1, col=heads + 1)
    fig.update_yaxes(title_text="bits", row=1, col=heads + 1)
    fig.update_layout(title=title, height=500, width=240 * heads + 560, barmode="group", margin=dict(t=110),
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=max(float(p.max()), 1e-6),
                                     colorbar=dict(title="P", x=1.0, len=0.8)),
                      legend=dict(orientation="h", x=1.0, xanchor="right", y=1.13))
    return fig


if multistream:
    ms_spec, ms_weights, ms_streams = {}, {}, {}
    for name in ("seeking", "inverted ring"):
        ms_weights[name], ms_streams[name], ms_spec[name] = specialization(ms_models[name])
        s = ms_spec[name]
        for h in range(len(s.mi_bits)):
            print(f"{name:>13s} head {h}: MI(unit; stream) {s.mi_bits[h]:.4f} bits; null mean {s.null_mean_bits[h]:.4f}, "
                  f"95th percentile {s.null_p95_bits[h]:.4f} (p = {s.p_value[h]:.3f}); H(stream) of the written mass "
                  f"{s.stream_entropy_bits[h]:.3f}")
    # The softmax spreads each message over all units; does the unit it goes to *most* depend on the stream?
    seek_w, seek_s = ms_weights["seeking"], ms_streams["seeking"]
    ms_hard = unit_stream_specialization(hard_writes(seek_w), seek_s, n_streams, ms_permutations,
                                         np.random.default_rng(seed))
    print("seeking, each message's mass on its top unit: MI " + ", ".join(f"{v:.4f}" for v in ms_hard.mi_bits)
          + " bits; null 95th percentile " + ", ".join(f"{v:.4f}" for v in ms_hard.null_p95_bits))
    # Salience as the alternative: how strongly a token of each stream writes (mean write mass per event token).
    token_mass = seek_w.sum(-1).mean(1)  # (B, T): mass a token writes, averaged over heads
    mass_by_stream = np.array([token_mass[seek_s == s].mean() for s in range(n_streams)])
    ms_load = load_summary(seek_w)
    print("seeking: mean write mass per event token by stream " + ", ".join(f"s{s} {v:.3f}" for s, v in enumerate(mass_by_stream))
          + f"; load entropy {ms_load.entropy_bits:.2f} of log2 M = {ms_load.ceiling_bits:.2f} bits, busiest unit "
          f"{ms_load.busiest_share:.1%} of a head's load")
    fig = specialization_figure(ms_spec["seeking"], f"seeking (M={seek_w.shape[-1]} per head): which unit takes each "
                                                    f"stream's messages, {ms_examples} held-out sequences")
    save_figure(fig, "02_routing_multistream_units")
    fig.show()
    if ms_numbers_json:
        write_json_atomic(Path(ms_numbers_json), {
            "notebook": "02_routing", "section": "Seeking units on multi-stream recall", "smoke": smoke,
            "git_commit": git_commit(), "seed": seed, "task_options": ms_task_options, "d_model": ms_d_model,
            "lr": ms_lr, "sources": ms_sources, "examples": ms_examples, "permutations": ms_permutations,
            "models": {name: {"mixer": r["mixer"], "options": MS_VARIANTS[name][1], "metrics": r["metrics"],
                              "state_floats": r["state_floats"]["floats"]} for name, r in ms_records.items()},
            "specialization": {name: {"mi_bits": sp.mi_bits.tolist(), "null_mean_bits": sp.null_mean_bits.tolist(),
                                      "null_p95_bits": sp.null_p95_bits.tolist(), "p_value": sp.p_value.tolist(),
                                      "stream_entropy_bits": sp.stream_entropy_bits.tolist()}
                               for name, sp in {**ms_spec, "seeking (top unit)": ms_hard}.items()},
            "seeking_write_mass_by_stream": mass_by_stream.tolist(), "seeking_load": ms_load.as_dict()})
        print(f"numbers written to {ms_numbers_json}")

# %% [markdown]
# ### Where a stream's recall is lost
#
# Every query traced back to the message that answers it (`workbench.lab.recall.multistream_anatomy`,
# also `workbench recall-anatomy MODEL` on a multistream checkpoint): was the message still held when
# the query came (*kept*: at least half of what its unit took survives), did the query find it, and if
# it was lost, whose write took its unit - another stream's event, or a query's own `key value`, which
# writes like an event.

# %%
def anatomy_figure(row: dict, title: str) -> go.Figure:
    names = list(row["streams"])
    parts = {"kept, found": [], "kept, not found": []}
    evictors = [k for k in next((p["evicted_by"] for p in row["streams"].values() if p["evicted_by"]), {})]
    parts |= {f"evicted by {e}": [] for e in evictors}
    for part in row["streams"].values():
        kept, found = part["share_kept"], part["accuracy_when_kept"] or 0.0
        parts["kept, found"].append(kept * found)
        parts["kept, not found"].append(kept * (1 - found))
        for e in evictors:
            parts[f"evicted by {e}"].append((1 - kept) * part["evicted_by"].get(e, 0.0))
    fig = go.Figure([go.Bar(x=names, y=values, name=label) for label, values in parts.items()])
    fig.update_layout(title=title, barmode="stack", height=420, width=850, margin=dict(t=90))
    fig.update_yaxes(title_text="share of the stream's queries", range=[0, 1.02])
    return fig


if multistream:
    from workbench.lab.recall import multistream_anatomy

    ms_anatomy = multistream_anatomy(ms_models["seeking"], ms_task.options, ms_task.seq_len,
                                     n=min(ms_examples, ms_task.n_eval), seed=ms_task.eval_seed)
    for name, part in ms_anatomy["streams"].items():
        print(f"{name}: accuracy {part['accuracy']:.3f} = kept {part['share_kept']:.3f} x found "
              f"{part['accuracy_when_kept'] or 0.0:.3f} (+ lost x {part['accuracy_when_lost'] or 0.0:.3f}); lost to "
              + (", ".join(f"{k} {v:.2f}" for k, v in part["evicted_by"].items()) or "nothing"))
    fig = anatomy_figure(ms_anatomy, "seeking on multi-stream recall: each query's message kept and found, or whose "
                                     "write evicted it<br><sup>held-out sequences; stream 0 the most frequent</sup>")
    save_figure(fig, "02_routing_multistream_anatomy")
    fig.show()

# %% [markdown]
# ### Live: retrain the seeking model
#
# Change the heads and the units per head (at the four-head widths of a key and a value, so heads x units
# is the state: fewer heads with more units hold more distinct messages, since every head keeps its own copy
# of what it takes), the pools they form (`n_pools`: the content chooses a pool, rest the
# unit inside it, so units take turns only among their own kind), rest on or off, whether rest counts the writes units actually take
# (`rest_on_wins`, the default; off, rest counts the demand by content alone, the first design), the
# rest strength beta (small: the bids choose; large: the units take turns, like a ring), whether each
# head learns its own beta from there (`rest_learned`; the training log reports where it settles),
# a cosine read with a learned temperature (`qk_norm`), whether a token reads the units as they were
# before its own write (`read_before_write`), how many heads' reads prefer recent messages (`recency_reads`: a
# learned slope times a message's age, so the latest value of a key wins), and the step budget; the seeking model re-trains on the same task and the accuracy by stream and P(unit | stream) redraw. Headless, the panel shows
# the model trained above.

# %%
def live_specialization_figure(record: dict, spec, title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy by stream", "head 0: P(unit | stream)"))
    fig.add_trace(go.Bar(x=[f"s{s}" for s in range(n_streams)], y=[record["metrics"][f"accuracy@stream{s}"]
                                                                    for s in range(n_streams)],
                         marker_color=mixer_colour("seeking"), showlegend=False), row=1, col=1)
    p = spec.joint[0] / np.maximum(spec.joint[0].sum(0, keepdims=True), 1e-12)
    fig.add_trace(go.Heatmap(z=p, x=[f"s{s}" for s in range(n_streams)], y=list(range(p.shape[0])), colorscale="Viridis",
                             hovertemplate="unit %{y}, %{x}: %{z:.3f}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], title_text="held-out accuracy", row=1, col=1)
    fig.update_yaxes(autorange="reversed", title_text="unit", row=1, col=2)
    fig.update_layout(title=title, height=420, width=900)
    return fig


if multistream:
    from workbench.mixers.seeking import SeekingOptions

    ms_knobs = {
        "n_heads": widgets.Dropdown(options=[1, 2, 4], value=SeekingOptions().n_heads, description="heads"),
        "n_units": widgets.Dropdown(options=[4, 8, 16, 32, 64, 128], value=MS_VARIANTS["seeking"][1]["n_units"], description="M (units)"),
        "n_pools": widgets.Dropdown(options=[1, 2, 4, 8], value=SeekingOptions().n_pools, description="pools"),
        "refractory": widgets.Checkbox(value=True, description="refractory"),
        "rest_on_wins": widgets.Checkbox(value=SeekingOptions().rest_on_wins, description="rest on wins"),
        "rest_strength": widgets.FloatSlider(value=SeekingOptions().rest_strength, min=0.0, max=64.0, step=1.0,
                                             description="rest beta"),
        "rest_learned": widgets.Checkbox(value=SeekingOptions().rest_learned, description="learn beta per head"),
        "qk_norm": widgets.Checkbox(value=SeekingOptions().qk_norm, description="cosine read (qk_norm)"),
        "read_before_write": widgets.Checkbox(value=SeekingOptions().read_before_write, description="read before write"),
        "recency_reads": widgets.Dropdown(options=[0, 1, 2, 4], value=SeekingOptions().recency_reads,
                                          description="recency reads"),
        "n_steps": widgets.IntSlider(value=ms_steps, min=10, max=3000, step=10, description="steps"),
    }
    ms_button, ms_status = widgets.Button(description="train & redraw", button_style="primary"), widgets.HTML()

    def ms_title(record: dict, spec, values: dict) -> str:
        knob_text = ", ".join(f"{k}={v}" for k, v in values.items())
        stats = record["history"][-1].get("mixer_stats", {}) if record.get("history") else {}
        betas = [f"{v:.1f}" for k, v in stats.items() if "rest_strength_head" in k]  # with rest_learned
        return (f"live seeking on multistream: {knob_text}<br><sup>accuracy {record['metrics']['accuracy']:.2f}, "
                f"{record['state_floats']['floats']:,} state floats; "
                f"head 0 MI {spec.mi_bits[0]:.3f} bits vs null 95th percentile {spec.null_p95_bits[0]:.3f}"
                + (f"; learned beta per head {', '.join(betas)}" if betas else "") + "</sup>")

    ms_widget = go.FigureWidget(live_specialization_figure(ms_records["seeking"], ms_spec["seeking"], ms_title(
        ms_records["seeking"], ms_spec["seeking"], {k: w.value for k, w in ms_knobs.items()})))

    def on_ms_click(_button) -> None:
        ms_button.disabled, ms_status.value = True, "training ..."
        try:
            values = {k: w.value for k, w in ms_knobs.items()}
            widths = {"key_dim": 3 * ms_d_model // 16, "value_dim": ms_d_model // 4}  # a four-head model's
            trained, record, seconds = train_multistream(
                "seeking", {**{k: v for k, v in values.items() if k != "n_steps"}, **widths},
                values["n_steps"], ms_task)
            spec = specialization(trained)[2]
        except ConfigError as exc:
            ms_status.value = f"<span style='color:#b00'>{exc}</span>"
        else:
            refresh(ms_widget, live_specialization_figure(record, spec, ms_title(record, spec, values)))
            ms_status.value = f"trained in {seconds:.1f}s"
        finally:
            ms_button.disabled = False

    ms_button.on_click(on_ms_click)
    display(widgets.VBox([widgets.HBox(list(ms_knobs.values()) + [ms_button, ms_status]), ms_widget]))

# %% [markdown]
# ## Findings
#
# Computed from the numbers above: how selective the gate is, whether units specialise by
# content beyond chance, (on MQAR) whether queries read their own pair, and (on multi-stream
# recall) which memory keeps the rare streams and whether the seeking units split by stream.

# %%
findings = [
    f"The gate opened for {write_fraction:.1%} of the characters ({wrote.sum(1).mean():.1f} writes per "
    f"{T}-character window against M = {M} units); "
    + ("no window wrote more than M messages, so the write price never bound and nothing was evicted."
       if (wrote.sum(1) <= M).all() else
       f"{(wrote.sum(1) > M).mean():.0%} of the windows wrote more than M, and {overwrites.eviction_fraction:.1%} "
       f"of the writes evicted a message still held."),
    f"Each token reads {n_read.mean():.2f} units on average (nominal k = {K}); the read weights' "
    f"effective number of units, 2^H, is {(2 ** read_entropy).mean():.2f}.",
]
content = mi["character written"] - mi_null["character written"]
findings.append(
    f"MI(unit; character written) is {mi['character written']:.3f} bits against {mi_null['character written']:.3f} "
    f"with shuffled units: {'an excess of ' + format(content, '.3f') + ' bits, so units carry some content' if content > 0.01 else 'no excess worth the name, so units do not specialise by content'}"
    f"; MI(unit; write ordinal) is {mi['write ordinal in window']:.3f} bits of H(unit) = {h_unit:.2f}"
    + (" (one pool: the ring fixes the unit by the ordinal)." if n_pools == 1 and refractory else "."))
if mqar:
    own = mrouting["landing"]["own value"]
    findings.append(
        f"On MQAR {mcell.label} the model answers {mrouting['accuracy']:.1%} of the queries; a query puts "
        f"{own:.2f} of its read mass on its own pair's value message (held at {mrouting['value_held']:.0%} of the "
        f"queries), keys write {mrouting['role_write']['key']:.0%} and values {mrouting['role_write']['value']:.0%} "
        f"of the time, filler {mrouting['role_write']['filler']:.0%}.")
findings.append(
    f"The live panel at its defaults (M = {knob_values['n_units']}, {knob_values['n_pools']} pool(s), refractory "
    f"{knob_values['refractory']}) answers {live_routing['accuracy']:.1%} of the queries with "
    f"{live_routing['landing']['own value']:.2f} of the read mass on the own value.")
if multistream:
    accuracy = {name: [r["metrics"][f"accuracy@stream{s}"] for s in range(n_streams)] for name, r in ms_records.items()}
    rarest = n_streams - 1
    findings.append(
        f"Multi-stream recall (equal state; chance {ms_chance:.3f}): accuracy "
        + "; ".join(f"{name} [{ms_sources[name]}] {ms_records[name]['metrics']['accuracy']:.3f} (stream 0 {acc[0]:.3f}, rarest stream "
                    f"{acc[rarest]:.3f})" for name, acc in accuracy.items())
        + ".")
    # Above chance on the rarest stream: beyond a one-sided 95% binomial bound for its number of queries.
    rare_queries = int((ms_task.eval_streams == rarest).sum())
    above_chance = ms_chance + 1.645 * math.sqrt(ms_chance * (1 - ms_chance) / max(rare_queries, 1))
    best_rare = max(acc[rarest] for acc in accuracy.values())
    leaders = [name for name, acc in accuracy.items() if acc[rarest] == best_rare]
    findings.append(
        f"On the rarest stream ({rare_queries} queries) no memory is clearly above chance (the highest, {best_rare:.3f}, "
        f"is within {above_chance:.3f})." if best_rare <= above_chance else
        f"On the rarest stream ({rare_queries} queries) {' and '.join(leaders)} lead{'s' if len(leaders) == 1 else ''} with "
        f"{best_rare:.3f} (chance {ms_chance:.3f}).")
    seek = ms_spec["seeking"]
    above = int(seek.specializes.sum())
    best = int(np.argmax(seek.excess_bits))
    share = seek.excess_bits[best] / max(seek.stream_entropy_bits[best], 1e-9)
    if above == 0:
        verdict = "the seeking units do not specialise by stream: every head's MI lies inside the shuffled null"
    elif share < 0.05:
        verdict = (f"{above} of {len(seek.mi_bits)} heads lie above the null's 95th percentile, but the excess is small "
                   f"(at most {share:.1%} of H(stream); small here means under 5%): the unit tells almost nothing "
                   f"about the stream")
    else:
        verdict = (f"{above} of {len(seek.mi_bits)} heads lie above the null's 95th percentile, the best by "
                   f"{seek.excess_bits[best]:.3f} bits = {share:.1%} of H(stream): units specialise by stream")
    ring = ms_spec["inverted ring"]
    findings.append(
        f"MI(unit; stream) of the seeking heads: {', '.join(f'{v:.4f}' for v in seek.mi_bits)} bits against a null of "
        f"{', '.join(f'{v:.4f}' for v in seek.null_mean_bits)} (95th percentile "
        f"{', '.join(f'{v:.4f}' for v in seek.null_p95_bits)}; {seek.n_permutations} shuffles): {verdict}. The ring "
        f"(unit by ordinal): {ring.mi_bits[0]:.4f} bits against {ring.null_mean_bits[0]:.4f} "
        f"(95th percentile {ring.null_p95_bits[0]:.4f}).")
    hard_share = float(np.max(ms_hard.excess_bits / np.maximum(ms_hard.stream_entropy_bits, 1e-9)))
    findings.append(
        f"With each message's mass on its top unit (does the unit a message goes to most depend on its stream?), the "
        f"seeking heads' MI is {', '.join(f'{v:.4f}' for v in ms_hard.mi_bits)} bits against a null 95th percentile of "
        f"{', '.join(f'{v:.4f}' for v in ms_hard.null_p95_bits)}: an excess of at most {hard_share:.1%} of H(stream).")
    ratio = mass_by_stream[rarest] / max(mass_by_stream[0], 1e-12)
    findings.append(
        f"Salience: a token of the rarest stream writes {mass_by_stream[rarest]:.3f} of a message on average, one of "
        f"stream 0 {mass_by_stream[0]:.3f} (ratio {ratio:.2f}); the seeking load entropy is {ms_load.entropy_bits:.2f} "
        f"of log2 M = {ms_load.ceiling_bits:.2f} bits, the busiest unit takes {ms_load.busiest_share:.1%} of a head's load.")
if smoke:
    findings.append("Smoke run: a handful of steps on a generated text, so these numbers say nothing about the mixer.")
display(Markdown("\n".join(f"- {line}" for line in findings)))
