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
# # 03 · Refractoriness: gain, load, and what happens without rest
#
# Inside a pool of the inverted mixer the *most rested* unit takes the next message, then
# rests. Its **refractory gain**
#
# `gain_m(t) = (writes to m's pool since m last fired) / pool size`, clipped to [0, 1]
#
# drops to 0 when the unit fires and climbs back as its pool works: it waxes and wanes. The
# winner is `argmax_m gain_m(t)`, which is a ring pointer - so with refractoriness on, the work
# is spread over a pool's units by construction. The ablation `refractory=False` chooses the
# unit by content alone (a learned bid per unit), so similar messages land on the same unit and
# overwrite each other. (With it off, `gain` is still measured the same way, with all M units
# as one pool.)
#
# This notebook trains two small char-LM models that differ **only** in `refractory` and
# compares:
#
# 1. gain over time - traces for a few units and a units x time heatmap;
# 2. load - the entropy of the write counts over units as a window goes on (how evenly the
#    work spreads), against the most even spread possible;
# 3. the cost of no rest - evictions, same-character overwrites, message lifetimes, and
#    bits per character / next-character accuracy;
# 4. firing statistics - avalanche sizes, with a discrete power-law fit (`workbench.lab.analysis`)
#    compared against an exponential fit and against shuffled firing. In spiking networks,
#    power-law avalanches are read as a sign of criticality; here they are an *observation*
#    about one small model, reported with the numbers that could contradict it;
# 5. a **live** panel: change M, k, pools, write price, refractoriness and the step budget,
#    press the button, and a tiny model re-trains in seconds and the figures redraw;
# 6. **load balanced by refractoriness** in the seeking mixer, where rest is a soft gain against
#    content bids: load entropy against log2 M and the busiest unit's share over training, with
#    and without rest, on multi-stream recall;
# 7. **findings** computed from the tables and fits.
#
# Headless (`workbench notebooks run 03_refractory`) it runs top to bottom, trains the live
# model once at its default knobs and saves every figure to `figures/03_refractory_*.html`.

# %% tags=["parameters"]
smoke = False  # True: a tiny run (what the tests use); the numbers are then meaningless
steps = 600  # training steps per model
seed = 0
d_model = 64
context = 256  # characters per training / analysis window
batch_size = 32
mixer_options = {"n_units": 32, "n_pools": 4, "read_topk": 2}  # both models; the ablation flips refractory only
n_windows = 64  # validation windows analysed
eval_windows = 100  # validation windows for bits per character (None: the whole split)
n_boot = 100  # bootstrap samples for the power-law goodness-of-fit p (0: skip)
skip_start = 16  # positions at the start of each window left out of the avalanche statistics (edge effect)
live_steps = 150  # default step budget of the live panel
seek_steps = 800  # training steps per seeking model (refractory on, off) on multi-stream recall
seek_units = 32  # units per head
seek_d_model = 64
seek_lr = 1e-2
seek_task_options = {"seq_len": 128, "key_range": 64, "n_values": 32, "n_queries": 8, "recent": 2, "n_eval": 256}  # notebook 02's
seek_points = 12  # evaluations over training at which the load is measured
seek_probe_examples = 64  # held-out sequences the load is measured on
seek_numbers_json = ""  # a path (e.g. results/notebooks/03_seeking_load.json): write the section's numbers there
results_dir = "results"  # where `workbench compare` wrote its run folders (the learned-rest section reads them)

# %%
import json
import math
import time
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from workbench.config import ConfigError, RunConfig
from workbench.lab.analysis import (
    binned_avalanches,
    ccdf,
    compare_powerlaw_exponential,
    discrete_powerlaw_cdf,
    fit_discrete_exponential,
    fit_discrete_powerlaw,
    load_entropy,
    mean_interevent_interval,
    overwrite_stats,
    powerlaw_gof_pvalue,
    run_lengths,
)
from workbench.lab.corpus import charlm_options
from workbench.lab.probes import internals, option, unit_count
from workbench.lab.units import LoadTracker, load_summary, multistream_config, unit_load, write_weights
from workbench.model import IGNORE
from workbench.plotting import GREY, mixer_colour, save_figure
from workbench.provenance import git_commit
from workbench.storage import write_json_atomic
from workbench.tasks import build_task
from workbench.train import train

if smoke:
    steps, d_model, context, batch_size = min(steps, 20), 32, 64, 8
    n_windows, eval_windows, n_boot, live_steps = min(n_windows, 4), 4, min(n_boot, 3), min(live_steps, 20)

# Refractoriness on is the inverted mixer as it ships: its colour everywhere (workbench.plotting).
COLORS = {"refractory on": mixer_colour("inverted"), "refractory off": "#332288", "shuffled (on)": GREY}


def make_config(options: dict, n_steps: int, width: int, window: int, batch: int, evals, run_seed: int) -> RunConfig:
    """One block, inverted mixer, char-LM; everything not named here is the workbench default."""
    return RunConfig.from_dict({
        "task": {"name": "charlm", "options": charlm_options(smoke, context=window, max_eval_windows=evals)},
        "model": {"mixer": "inverted", "d_model": width, "n_layers": 1, "mixer_options": dict(options)},
        "train": {"steps": n_steps, "batch_size": batch, "eval_every": max(1, n_steps // 4),
                  "warmup_steps": min(100, n_steps // 10), "seed": run_seed},
    })


def analyse(model, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """Mixer internals (numpy) and next-character accuracy on a batch of windows."""
    model.eval()
    device = next(model.parameters()).device
    rec, logits = internals(model, 0, lambda: model(inputs.to(device)))  # hook points, workbench.lab.probes
    rec["accuracy"] = float((logits.argmax(-1).cpu() == targets).float().mean())
    rec["tokens"] = inputs.numpy()
    rec["M"], rec["refractory"] = unit_count(rec), option(model, 0, "refractory", True)
    rec["pool_size"] = rec["M"] // option(model, 0, "n_pools", 1)
    return rec


def validation_batch(task, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    val = task.val_windows()
    full = (val.targets != IGNORE).all(dim=1)
    return val.inputs[full][:n], val.targets[full][:n]


configs = {
    "refractory on": make_config({**mixer_options, "refractory": True}, steps, d_model, context, batch_size, eval_windows, seed),
    "refractory off": make_config({**mixer_options, "refractory": False}, steps, d_model, context, batch_size, eval_windows, seed),
}
configs["refractory on"].to_dict()

# %% [markdown]
# ## Train the two models
#
# Same seed, same data stream, same options; only `refractory` differs. Bits per character
# are measured on the first `eval_windows` validation windows.

# %%
task = build_task("charlm", configs["refractory on"].task.options)
inputs, targets = validation_batch(task, n_windows)
results, recs = {}, {}
for name, cfg in configs.items():
    started = time.perf_counter()
    trained_model, results[name] = train(cfg, progress=not smoke, task=task)
    recs[name] = analyse(trained_model, inputs, targets)
    print(f"{name:>15s}: {results[name]['steps']} steps in {time.perf_counter() - started:.0f}s, "
          f"bpc {results[name]['metrics']['bpc']:.3f}, next-char accuracy {recs[name]['accuracy']:.3f}, "
          f"write fraction {(recs[name]['unit'] >= 0).mean():.3f}")
M, pool_size = recs["refractory on"]["M"], recs["refractory on"]["pool_size"]
B, T = inputs.shape
print(f"M={M} units, pool size {pool_size} (refractory on); analysis on {B} windows x {T} characters")

# %% [markdown]
# ## Gain waxes and wanes
#
# Top: `gain_m(t)` for the four units that fire most in one validation window - the one where
# the refractory model writes most (markers: the unit fires - takes a message). Bottom: all units' gain over the same window. With
# refractoriness on, each unit is a sawtooth: 0 right after it fires, rising one step per
# write to its pool, and it fires again when it is the most rested. With it off, a unit that
# content keeps choosing stays near 0 (it is overwritten again and again) while others never
# fire and stay at 1.
#
# A direct check of "the most rested unit takes the message": the fraction of writes whose
# unit had the highest gain in its pool just before (1.0 is the ring; ties count as a hit).

# %%
def rest_following(rec) -> float:
    """Fraction of writes (t > 0) that went to a unit of maximal gain in its pool at t - 1."""
    unit, gain = rec["unit"], rec["gain"]
    period = rec["pool_size"] if rec["refractory"] else rec["M"]
    b, t = np.nonzero(unit[:, 1:] >= 0)
    t = t + 1
    u = unit[b, t]
    before = gain[b, t - 1]  # (n, M)
    pool = (np.arange(rec["M"])[None, :] // period) == (u // period)[:, None]
    best = np.where(pool, before, -np.inf).max(1)
    return float(np.mean(before[np.arange(len(u)), u] >= best - 1e-6)) if len(u) else math.nan


for name, rec in recs.items():
    print(f"{name:>15s}: writes that went to the most rested unit of their pool: {rest_following(rec):.1%}")

shown = int((recs["refractory on"]["unit"] >= 0).sum(1).argmax())
print(f"showing validation window {shown}: " + ", ".join(f"{n} writes {int((r['unit'][shown] >= 0).sum())}" for n, r in recs.items()))
fig = make_subplots(rows=2, cols=2, shared_xaxes=True, row_heights=[0.4, 0.6], vertical_spacing=0.08,
                    horizontal_spacing=0.08, subplot_titles=[f"{n}: gain of 4 busiest units" for n in recs]
                    + [f"{n}: gain of every unit" for n in recs])
positions = np.arange(T)
palette = ["#D55E00", "#332288", "#117733", "#AA4499"]  # four busiest units, told apart
for col, rec in enumerate(recs.values(), start=1):
    unit, gain = rec["unit"][shown], rec["gain"][shown]
    busiest = np.argsort(-np.bincount(unit[unit >= 0], minlength=rec["M"]), kind="stable")[:4]
    for i, m in enumerate(busiest):
        fires = np.nonzero(unit == m)[0]
        fig.add_trace(go.Scatter(x=positions, y=gain[:, m], mode="lines", line=dict(color=palette[i]), legendgroup=str(i),
                                 name=f"unit {m}", showlegend=False), row=1, col=col)
        fig.add_trace(go.Scatter(x=fires, y=np.zeros(len(fires)), mode="markers", marker=dict(color=palette[i], size=7,
                                 symbol="triangle-up"), name=f"unit {m} fires", showlegend=False), row=1, col=col)
    fig.add_trace(go.Heatmap(z=gain.T, x=positions, y=np.arange(rec["M"]), zmin=0, zmax=1, colorscale="Viridis",
                             colorbar=dict(title="gain", len=0.55, y=0.28), showscale=col == 2,
                             hovertemplate="unit %{y}, t=%{x}: gain %{z:.2f}<extra></extra>"), row=2, col=col)
    fig.update_yaxes(title_text="gain_m(t)", range=[-0.05, 1.05], row=1, col=col)
    fig.update_yaxes(title_text="unit", autorange="reversed", row=2, col=col)
    fig.update_xaxes(title_text="position t in the window", row=2, col=col)
fig.update_layout(title=f"refractory gain over validation window {shown} (M={M}, pool size {pool_size} when on)",
                  height=650, width=1200)
save_figure(fig, "03_refractory_gain")
fig.show()

# %% [markdown]
# ## Load: how evenly does the work spread?
#
# Left: for each position t, the entropy (bits) of the cumulative write counts over the M
# units, averaged over windows, next to the highest entropy that many writes could have
# (spread as evenly as possible, dashed). The ratio of the two is the load evenness: 1 means
# no unit did more than its share. Right: each unit's share of all writes in the batch,
# sorted; the dotted line is the even share 1/M.
#
# The two panels can disagree. The ring starts afresh in every window (the units' state is
# per sequence), so with few writes per window the first units of each pool's ring take a
# message in almost every window and the last ones rarely do: the load *within* a window is as
# even as it can be, while the share *across* windows is not.

# %%
fig = make_subplots(rows=1, cols=2, subplot_titles=("load entropy over the window", "share of writes per unit, sorted"))
evenness = {}
for name, rec in recs.items():
    entropy, ceiling = load_entropy(rec["unit"], rec["M"])
    evenness[name] = float(entropy[-1] / ceiling[-1]) if ceiling[-1] > 0 else math.nan
    fig.add_trace(go.Scatter(x=positions, y=entropy, name=f"{name}", line=dict(color=COLORS[name])), row=1, col=1)
    fig.add_trace(go.Scatter(x=positions, y=ceiling, name=f"{name}: most even possible", line=dict(color=COLORS[name], dash="dash")),
                  row=1, col=1)
    share = np.sort(np.bincount(rec["unit"][rec["unit"] >= 0], minlength=rec["M"]))[::-1]
    fig.add_trace(go.Bar(x=np.arange(rec["M"]), y=share / max(share.sum(), 1), name=f"{name}: share", marker_color=COLORS[name],
                         opacity=0.7), row=1, col=2)
    print(f"{name:>15s}: load entropy at the window end {entropy[-1]:.2f} bits of at most {ceiling[-1]:.2f} "
          f"(evenness {evenness[name]:.1%}; log2 M = {math.log2(rec['M']):.2f}); "
          f"units never written in the batch: {int((share == 0).sum())} of {rec['M']}")
fig.add_hline(y=math.log2(M), line_dash="dot", line_color="grey", annotation_text="log2 M", row=1, col=1)
fig.add_hline(y=1 / M, line_dash="dot", line_color="grey", annotation_text="1/M", row=1, col=2)
fig.update_xaxes(title_text="position t in the window", row=1, col=1)
fig.update_yaxes(title_text="entropy of the load (bits)", row=1, col=1)
fig.update_xaxes(title_text="unit rank (busiest first)", row=1, col=2)
fig.update_yaxes(title_text="share of all writes", row=1, col=2)
fig.update_layout(title="load over units", height=420, width=1200, barmode="overlay")
save_figure(fig, "03_refractory_load")
fig.show()

# %% [markdown]
# ## What resting buys: overwrites and accuracy
#
# An **eviction** is a write to a unit that still held a message: the old message is lost.
# Evictions are unavoidable once a window has more writes than units; the question is *which*
# messages are lost. Content routing sends similar messages to the same unit, so the share of
# evictions in which the new message comes from the **same character** as the one it replaces
# measures "similar messages overwrite"; compare it with the chance that two writes picked at
# random share a character (`sum of p_char^2`, from what the model writes). Lifetime: positions
# an evicted message was held.

# %%
table = {}
for name, rec in recs.items():
    ow = overwrite_stats(rec["unit"], rec["tokens"])
    written_chars = np.bincount(rec["tokens"][rec["unit"] >= 0], minlength=len(task.vocab.chars))
    table[name] = {
        "bits per character": results[name]["metrics"]["bpc"],
        "next-char accuracy": rec["accuracy"],
        "write fraction": float((rec["unit"] >= 0).mean()),
        "writes per window": float((rec["unit"] >= 0).sum(1).mean()),
        "evictions per write": ow.eviction_fraction,
        "same-char evictions (of evictions)": ow.same_token_fraction,
        "same char by chance (sum of p_char^2)": float(((written_chars / max(written_chars.sum(), 1)) ** 2).sum()),
        "median lifetime of evicted messages": float(np.median(ow.lifetimes)) if len(ow.lifetimes) else math.nan,
        "load evenness at window end": evenness[name],
    }
rows = list(next(iter(table.values())))
print(f"{'':>38s}" + "".join(f"{n:>16s}" for n in table))
for row in rows:
    print(f"{row:>38s}" + "".join(f"{table[n][row]:16.3f}" for n in table))

shown = ["bits per character", "next-char accuracy", "evictions per write", "same-char evictions (of evictions)"]
fig = make_subplots(rows=1, cols=len(shown), subplot_titles=shown, horizontal_spacing=0.07)
for col, row in enumerate(shown, start=1):
    fig.add_trace(go.Bar(x=list(table), y=[table[n][row] for n in table], marker_color=[COLORS[n] for n in table],
                         showlegend=False, text=[f"{table[n][row]:.3f}" for n in table], textposition="auto"), row=1, col=col)
    fig.update_yaxes(title_text=row, row=1, col=col)
fig.update_layout(title=f"refractory on vs off (same seed and data; {steps} steps, d_model {d_model}, M={M})",
                  height=380, width=1200)
save_figure(fig, "03_refractory_compare")
fig.show()

# %% [markdown]
# ## Firing statistics: avalanches
#
# Two definitions of an avalanche, both on the write events (a token "fires" when its write
# gate opens; at most one unit fires per token):
#
# * **A - runs**: a maximal run of consecutive tokens that all write; size = its length.
# * **B - binned (Beggs & Plenz 2003)**: cut each window into bins of Δ tokens, Δ = the mean
#   interval between writes (rounded, at least 1); an avalanche is a maximal run of bins that
#   each hold at least one write; size = the number of writes in it.
#
# Avalanches never cross a window edge, so sizes are capped by the window length (a finite-size
# cutoff). The first `skip_start` positions of each window are left out: the gate's context
# starts empty there and the write rate differs (printed below) - an edge effect of cutting
# text into windows, not dynamics. **Null model**: the same writes shuffled in time within each window (same count per
# window, no temporal structure); its run lengths are close to geometric, i.e. exponential.
#
# For each set of sizes we fit a discrete power law by maximum likelihood (x_min chosen by the
# Kolmogorov-Smirnov distance), report the KS distance, the log-likelihood ratio R against an
# exponential fitted on the same tail (R > 0 favours the power law; p is Vuong's test for the
# sign of R) and a bootstrap goodness-of-fit p (p > 0.1: a power law is plausible, not proven).
# Read these together with how many decades the sizes span and how much of the data the tail
# holds (`n_tail / n`): a power law over less than a decade, or over a small tail, says little.

# %%
rng = np.random.default_rng(seed)


def size_sets(rec, bin_width: int | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Avalanche sizes by both definitions; B's bin is the mean inter-write interval unless given."""
    wrote = rec["unit"] >= 0
    if bin_width is None:
        gap = mean_interevent_interval(wrote)
        bin_width = max(1, round(gap)) if math.isfinite(gap) else 1
    return {"A: runs": run_lengths(wrote), f"B: bins of {bin_width}": binned_avalanches(wrote, bin_width)}, bin_width


def describe(sizes: np.ndarray) -> dict:
    """Power-law fit, LR test and bootstrap p for one set of sizes; 'no fit' when impossible."""
    out = {"n": len(sizes), "max": int(sizes.max()) if len(sizes) else 0, "mean": float(sizes.mean()) if len(sizes) else math.nan}
    try:
        fit = fit_discrete_powerlaw(sizes)
    except ValueError as exc:
        return out | {"fit": None, "why": str(exc)}
    lr = compare_powerlaw_exponential(sizes, fit)
    gof = powerlaw_gof_pvalue(sizes, fit, n_boot, rng) if n_boot else math.nan
    return out | {"fit": fit, "lr": lr, "gof": gof, "exp": fit_discrete_exponential(sizes, fit.xmin)}


skip = min(skip_start, T - 1)
trimmed = {name: {"unit": rec["unit"][:, skip:]} for name, rec in recs.items()}
for name, rec in recs.items():
    wrote = rec["unit"] >= 0
    print(f"{name:>15s}: write rate in the first {skip} positions {wrote[:, :skip].mean() if skip else math.nan:.3f}, "
          f"after them {wrote[:, skip:].mean():.3f}")
sets, avalanche_fits = {}, {}
sets["refractory on"], width_on = size_sets(trimmed["refractory on"])
sets["refractory off"], width_off = size_sets(trimmed["refractory off"])
shuffled = {"unit": np.where(rng.permuted(trimmed["refractory on"]["unit"] >= 0, axis=1), 0, -1)}
sets["shuffled (on)"], _ = size_sets(shuffled, width_on)
print(f"{'':>15s} {'definition':>14s} {'n':>6s} {'mean':>5s} {'max':>5s} {'x_min':>5s} {'n_tail':>6s} {'alpha':>12s} "
      f"{'KS':>6s} {'R (PL-exp)':>11s} {'p(R)':>8s} {'prefers':>12s} {'GOF p':>6s}")
for name, by_definition in sets.items():
    for definition, sizes in by_definition.items():
        d = avalanche_fits[(name, definition)] = describe(sizes)
        if d["fit"] is None:
            print(f"{name:>15s} {definition:>14s} {d['n']:6d} {d['mean']:5.2f} {d['max']:5d}   no fit: {d['why']}")
            continue
        fit, lr = d["fit"], d["lr"]
        print(f"{name:>15s} {definition:>14s} {d['n']:6d} {d['mean']:5.2f} {d['max']:5d} {fit.xmin:5d} {fit.n_tail:6d} "
              f"{fit.alpha:6.2f}±{fit.alpha_se:4.2f} {fit.ks:6.3f} {lr.ratio:11.1f} {lr.p_value:8.3g} {lr.preferred:>12s} "
              f"{d['gof']:6.2f}")
span = {name: math.log10(max(1, max(int(s.max()) if len(s) else 1 for s in sets[name].values()))) for name in sets}
print("\nsizes span " + ", ".join(f"{span[n]:.1f} decades ({n})" for n in sets) + f"; the window caps them at {T - skip}")

fig = make_subplots(rows=1, cols=2, subplot_titles=("A: runs of consecutive writes", "B: binned (Beggs & Plenz)"))
for col, index in ((1, 0), (2, 1)):
    for name, by_definition in sets.items():
        definition, sizes = list(by_definition.items())[index]
        if not len(sizes):
            continue
        values, survival = ccdf(sizes)
        fig.add_trace(go.Scatter(x=values, y=survival, mode="markers", marker=dict(color=COLORS[name], size=6),
                                 name=f"{name}, {definition}", legendgroup=name), row=1, col=col)
        d = avalanche_fits[(name, definition)]
        if d["fit"] is None or name == "shuffled (on)":
            continue
        fit, exp_fit = d["fit"], d["exp"]
        x = np.arange(fit.xmin, values.max() + 1)
        scale, floor = fit.n_tail / fit.n, survival.min() / 3  # fitted curves drawn down to a third of the data
        power_curve = scale * (1 - discrete_powerlaw_cdf(x - 1, fit.alpha, fit.xmin))
        exp_curve = scale * np.exp(-exp_fit.lam * (x - fit.xmin))
        fig.add_trace(go.Scatter(x=x[power_curve >= floor], y=power_curve[power_curve >= floor], mode="lines",
                                 line=dict(color=COLORS[name], dash="dash"), legendgroup=name,
                                 name=f"{name}: power law α={fit.alpha:.2f}, x_min={fit.xmin}"), row=1, col=col)
        fig.add_trace(go.Scatter(x=x[exp_curve >= floor], y=exp_curve[exp_curve >= floor], mode="lines",
                                 line=dict(color=COLORS[name], dash="dot"), legendgroup=name,
                                 name=f"{name}: exponential λ={exp_fit.lam:.2f}"), row=1, col=col)
    fig.update_xaxes(type="log", title_text="avalanche size s", row=1, col=col)
    fig.update_yaxes(type="log", title_text="P(size ≥ s)", row=1, col=col)
fig.update_layout(title="avalanche sizes (CCDF): model vs shuffled writes; dashed: power-law fit, dotted: exponential fit",
                  height=480, width=1250)
save_figure(fig, "03_refractory_avalanches")
fig.show()

# %% [markdown]
# How to read it: if the model's markers lie on the grey (shuffled) ones, the write gate fires
# like independent coin flips at its average rate and there is no avalanche structure to
# explain. If they fall off more slowly, writes cluster in bursts; whether those bursts are
# better described by a power law than by an exponential is what `prefers` and `GOF p` say,
# over the `n_tail` sizes from `x_min` up. The sentence below is computed from the table.

# %%
for name in ("refractory on", "refractory off"):
    for definition in sets[name]:
        d = avalanche_fits[(name, definition)]
        if d["fit"] is None:
            print(f"{name}, {definition}: too few distinct sizes to fit anything.")
            continue
        gof = "not tested" if math.isnan(d["gof"]) else ("plausible" if d["gof"] > 0.1 else "rejected")
        print(f"{name}, {definition}: power law from x_min={d['fit'].xmin} covers {d['fit'].n_tail / d['n']:.0%} of "
              f"{d['n']} avalanches; the likelihood ratio prefers {d['lr'].preferred}; power-law fit {gof} "
              f"(GOF p = {d['gof']:.2f}); sizes span {math.log10(max(d['max'], 1)):.1f} decades.")

# %% [markdown]
# ## Live: turn the knobs
#
# In spiking-network models the knobs that move a network towards or away from criticality are
# an inverse temperature (β) and a leak or decay (λ). The inverted mixer's analogues are its
# options: the number of units **M**, how many each token reads (**k**), the number of
# normalisation **pools**, the **write price** (what a write beyond capacity costs), and
# **refractoriness** itself. Set them, choose a step budget, and press the button: a tiny model
# (d_model 32, window 64) trains in seconds and the three panels redraw - gain of every unit
# over one window (the one with most writes), load entropy against its ceiling, and the
# run-size CCDF (after `skip_start`) with its power-law fit. The numbers above the panels compare with the ones computed for the main models.

# %%
live_context, live_windows = 64, 16
live_task = build_task("charlm", charlm_options(smoke, context=live_context, max_eval_windows=8))
live_inputs, live_targets = validation_batch(live_task, live_windows)


def live_train(n_units: int, read_topk: int, n_pools: int, write_price: float, refractory: bool, n_steps: int):
    options = {"n_units": n_units, "read_topk": read_topk, "n_pools": n_pools, "write_price": write_price,
               "refractory": refractory}
    cfg = make_config(options, n_steps, 32, live_context, 16, 8, seed)  # raises ConfigError for impossible knobs
    started = time.perf_counter()
    live_model, res = train(cfg, progress=False, task=live_task)
    rec = analyse(live_model, live_inputs, live_targets)
    return options, res, rec, time.perf_counter() - started


def live_figure(options, res, rec, seconds) -> go.Figure:
    unit, gain = rec["unit"], rec["gain"]
    entropy, ceiling = load_entropy(unit, rec["M"])
    sizes = run_lengths(unit[:, min(skip_start, unit.shape[1] - 1):] >= 0)
    busiest = int((unit >= 0).sum(1).argmax())
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.12,
                        subplot_titles=(f"gain of every unit (window {busiest})", "load entropy vs most even",
                                        "run sizes (CCDF)"))
    fig.add_trace(go.Heatmap(z=gain[busiest].T, zmin=0, zmax=1, colorscale="Viridis",
                             colorbar=dict(title="gain", x=0.26, xanchor="left", thickness=12),
                             hovertemplate="unit %{y}, t=%{x}: %{z:.2f}<extra></extra>"), row=1, col=1)
    pos = np.arange(unit.shape[1])
    fig.add_trace(go.Scatter(x=pos, y=entropy, name="load entropy", line=dict(color=COLORS["refractory on"])), row=1, col=2)
    fig.add_trace(go.Scatter(x=pos, y=ceiling, name="most even possible", line=dict(color=COLORS["refractory on"], dash="dash")), row=1, col=2)
    fit_text = "no power-law fit (too few distinct sizes)"
    if len(sizes):
        values, survival = ccdf(sizes)
        fig.add_trace(go.Scatter(x=values, y=survival, mode="markers", name="run sizes", marker=dict(color=COLORS["refractory off"])),
                      row=1, col=3)
        try:
            fit = fit_discrete_powerlaw(sizes, min_tail=10)
            lr = compare_powerlaw_exponential(sizes, fit)
            x = np.arange(fit.xmin, values.max() + 1)
            fig.add_trace(go.Scatter(x=x, y=fit.n_tail / fit.n * (1 - discrete_powerlaw_cdf(x - 1, fit.alpha, fit.xmin)),
                                     mode="lines", line=dict(color=COLORS["refractory off"], dash="dash"), name=f"power law α={fit.alpha:.2f}"),
                          row=1, col=3)
            fit_text = f"α={fit.alpha:.2f} from x_min={fit.xmin} (KS {fit.ks:.3f}), LR prefers {lr.preferred}"
        except ValueError:
            pass
    ow = overwrite_stats(unit, rec["tokens"])
    fig.update_yaxes(title_text="unit", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="position t", row=1, col=1)
    fig.update_xaxes(title_text="position t", row=1, col=2)
    fig.update_yaxes(title_text="bits", row=1, col=2)
    fig.update_xaxes(type="log", title_text="run size s", row=1, col=3)
    fig.update_yaxes(type="log", title_text="P(size ≥ s)", row=1, col=3)
    knobs = ", ".join(f"{k}={v}" for k, v in options.items())
    fig.update_layout(
        title=(f"live: {knobs}, {res['steps']} steps ({seconds:.0f}s)<br><sup>bpc {res['metrics']['bpc']:.3f}, "
               f"accuracy {rec['accuracy']:.3f}, write fraction {(unit >= 0).mean():.3f}, evictions/write "
               f"{ow.eviction_fraction:.2f}, load evenness {entropy[-1] / max(ceiling[-1], 1e-9):.0%}; {fit_text}</sup>"),
        height=460, width=1250, legend=dict(x=0.55, y=-0.25, orientation="h"))
    return fig


def refresh(widget: go.FigureWidget, figure: go.Figure) -> None:
    with widget.batch_update():
        widget.data = ()
        widget.layout = figure.layout
    widget.add_traces(list(figure.data))


knobs = {
    "n_units": widgets.Dropdown(options=[4, 8, 16, 32, 64], value=16, description="M (units)"),
    "read_topk": widgets.Dropdown(options=[1, 2, 4, 8], value=4, description="k (read)"),
    "n_pools": widgets.Dropdown(options=[1, 2, 4, 8], value=2, description="pools"),
    "write_price": widgets.FloatSlider(value=1.0, min=0.0, max=4.0, step=0.25, description="write price"),
    "refractory": widgets.Checkbox(value=True, description="refractory"),
    "n_steps": widgets.IntSlider(value=live_steps, min=10, max=600, step=10, description="steps"),
}
button = widgets.Button(description="train & redraw", button_style="primary")
status = widgets.HTML()
first = live_train(**{k: w.value for k, w in knobs.items()})
initial = live_figure(*first)
save_figure(initial, "03_refractory_live")
live_widget = go.FigureWidget(initial)
status.value = f"trained at the default knobs in {first[3]:.1f}s"


def on_click(_button) -> None:
    button.disabled = True
    status.value = "training ..."
    try:
        run = live_train(**{k: w.value for k, w in knobs.items()})
    except ConfigError as exc:
        status.value = f"<span style='color:#b00'>{exc}</span>"
    else:
        refresh(live_widget, live_figure(*run))
        status.value = f"trained in {run[3]:.1f}s"
    finally:
        button.disabled = False


button.on_click(on_click)
display(widgets.VBox([widgets.HBox(list(knobs.values())[:3]), widgets.HBox(list(knobs.values())[3:]),
                      widgets.HBox([button, status])]))
display(live_widget)  # on its own: a rendered page draws it as a figure

# %% [markdown]
# ## Load balanced by refractoriness
#
# The **seeking** mixer (`workbench/mixers/seeking.py`) has no ring: the M units of a head bid for
# every message by content (a softmax over the units, times the token's salience), and rest is a
# soft gain - each unit's bid is damped by `exp(-beta M L)`, where L is the unit's recent load (an
# exponential average of what it absorbed, over about `recovery` tokens). So here load balance is
# not given by construction: it is what rest buys against content, which may send most messages
# to a few units.
#
# Two seeking models that differ **only** in `refractory` train on multi-stream recall (the task
# of notebook 02: interleaved key-value streams with rates 1 : 1/4 : 1/16 : 1/64). At
# `seek_points` evaluations during training, the load on a fixed batch of held-out sequences is
# read through `hook_writes` (`workbench.lab.units.LoadTracker`): each unit's write mass per
# sequence and head, the **entropy of that load over the units** against its ceiling
# **log2 M** (every unit takes the same share), and the **share of the busiest unit** against
# 1/M.

# %%
seek_variants = {"refractory on": {"n_units": seek_units, "refractory": True},
                 "refractory off": {"n_units": seek_units, "refractory": False}}
if smoke:
    seek_steps, seek_d_model, seek_points = min(seek_steps, 8), 16, min(seek_points, 4)
    seek_task_options = {**seek_task_options, "seq_len": 64, "key_range": 32, "n_values": 16, "n_queries": 8,
                         "recent": 2, "n_eval": 16}
    seek_variants = {name: {**options, "n_units": min(seek_units, 8)} for name, options in seek_variants.items()}
seek_task = build_task("multistream", seek_task_options)
seek_probe = seek_task.eval_batch.inputs[:seek_probe_examples]
seek_records, seek_models = {}, {}
for name, options in seek_variants.items():
    cfg = multistream_config("seeking", options, seek_task_options, seek_steps, seek_d_model, seed=seed,
                             batch_size=8 if smoke else 32, lr=seek_lr, evals=seek_points)
    tracker = LoadTracker(seek_task, seek_probe)
    started = time.perf_counter()
    seek_models[name], seek_records[name] = train(cfg, progress=not smoke, task=tracker)
    final = load_summary(write_weights(seek_models[name].eval(), seek_probe))
    seek_records[name]["final_load"] = final
    print(f"{name:>15s}: {seek_steps} steps in {time.perf_counter() - started:.0f}s, accuracy "
          f"{seek_records[name]['metrics']['accuracy']:.3f}; load entropy {final.entropy_bits:.2f} of log2 M = "
          f"{final.ceiling_bits:.2f} bits, busiest unit {final.busiest_share:.1%} (1/M = {1 / final.n_units:.1%})")
seek_M = seek_records["refractory on"]["final_load"].n_units

fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                    subplot_titles=("load entropy over training", "busiest unit's share", "held-out accuracy"))
for name, record in seek_records.items():
    steps_seen = [h["step"] for h in record["history"]]
    for col, key in ((1, "units/load_entropy_bits"), (2, "units/busiest_unit_share"), (3, "accuracy")):
        fig.add_trace(go.Scatter(x=steps_seen, y=[h["metrics"][key] for h in record["history"]], mode="lines+markers",
                                 name=name, legendgroup=name, showlegend=col == 1, line=dict(color=COLORS[name])),
                      row=1, col=col)
fig.add_hline(y=math.log2(seek_M), line_dash="dot", line_color="grey", annotation_text="log2 M", row=1, col=1)
fig.add_hline(y=1 / seek_M, line_dash="dot", line_color="grey", annotation_text="1/M", row=1, col=2)
fig.add_hline(y=1 / seek_task.options["n_values"], line_dash="dot", line_color="grey", annotation_text="chance", row=1, col=3)
fig.update_xaxes(title_text="training step")
fig.update_yaxes(title_text="bits (per sequence and head)", row=1, col=1)  # not from zero: the gap is a fraction of a bit
fig.update_yaxes(title_text="share of a head's load", rangemode="tozero", row=1, col=2)
fig.update_yaxes(title_text="accuracy", rangemode="tozero", row=1, col=3)
fig.update_layout(title=f"seeking on multi-stream recall (M = {seek_M} units per head): load with and without rest",
                  height=400, width=1300)
save_figure(fig, "03_refractory_seeking_load")
fig.show()

# %% [markdown]
# At the end of training, each unit's share of a head's load in a sequence, sorted (busiest
# first) and averaged over the probe sequences and heads: a flat profile at 1/M is an even load.

# %%
fig, profiles = go.Figure(), {}
for name in seek_records:
    load = unit_load(write_weights(seek_models[name], seek_probe))  # (B, H, M)
    share = load / np.maximum(load.sum(-1, keepdims=True), 1e-12)
    profiles[name] = -np.sort(-share, axis=-1).reshape(-1, share.shape[-1]).mean(0)
    fig.add_trace(go.Scatter(x=np.arange(1, seek_M + 1), y=profiles[name], mode="lines+markers", name=name,
                             line=dict(color=COLORS[name])))
fig.add_hline(y=1 / seek_M, line_dash="dot", line_color="grey", annotation_text="1/M", annotation_position="bottom left")
shown = np.concatenate(list(profiles.values()) + [[1 / seek_M]])
fig.update_xaxes(title_text="unit rank in its head (busiest first)")
fig.update_yaxes(title_text="share of the head's load", type="log",
                 range=[math.log10(max(shown.min(), 1e-6)) - 0.1, math.log10(shown.max()) + 0.1])
fig.update_layout(title="seeking: sorted load profile at the end of training", height=400, width=800)
save_figure(fig, "03_refractory_seeking_profile")
fig.show()
if seek_numbers_json:
    write_json_atomic(Path(seek_numbers_json), {
        "notebook": "03_refractory", "section": "Load balanced by refractoriness", "smoke": smoke,
        "git_commit": git_commit(), "seed": seed, "task_options": seek_task_options, "d_model": seek_d_model,
        "lr": seek_lr, "steps": seek_steps, "probe_examples": seek_probe_examples,
        "models": {name: {"options": seek_variants[name], "metrics": r["metrics"], "final_load": r["final_load"].as_dict(),
                          "load_over_training": [{"step": h["step"], **{k: v for k, v in h["metrics"].items()
                                                                        if k.startswith("units/")}}
                                                 for h in r["history"]]}
                   for name, r in seek_records.items()}})
    print(f"numbers written to {seek_numbers_json}")

# %% [markdown]
# ## Where a learned rest settles, task by task
#
# The rest strength beta is one axis: beta -> 0 lets the bids alone choose a message's unit (seeking
# by content), beta -> inf gives it to the least recently loaded unit (taking turns, a ring). With
# `seeking:rest_learned=true` each head learns its own beta_h (log beta_h a parameter, starting at
# `rest_strength` = 8; its gradient reaches it through the writes' softmax). The training log of
# every full-budget run records beta_h at each evaluation (`mixer_stats`); here they are read from
# the run folders under `results_dir` (`workbench compare ... --mixers seeking:rest_learned=true`),
# one panel per task, one line per head and seed. Nothing is trained here.

# %%
def learned_rest_runs(root: Path) -> dict[str, list[tuple[int, list[dict]]]]:
    """{cell: [(seed, history), ...]} of the finished runs of a rest_learned variant under root."""
    runs: dict[str, list[tuple[int, list[dict]]]] = {}
    for path in sorted(root.glob("*/full/*rest_learned_true*/result.json")):
        record = json.loads(path.read_text())
        history = [h for h in record.get("history", []) if any("rest_strength_head" in k for k in h.get("mixer_stats", {}))]
        if history:
            runs.setdefault(record.get("label", path.parent.name.split("--")[0]), []).append((record["seed"], history))
    return runs


rest_runs = learned_rest_runs(Path(results_dir))
if not rest_runs:
    print(f"no finished rest_learned runs under {Path(results_dir).resolve()}: run e.g. `workbench compare "
          "--experiment v2 --budget full --cells charlm --mixers seeking:rest_learned=true --seeds 3 --lrs 0.003`")
else:
    cells = sorted(rest_runs)
    fig = make_subplots(rows=1, cols=len(cells), subplot_titles=cells, horizontal_spacing=0.06)
    settled = {}
    for col, cell in enumerate(cells, start=1):
        for seed_i, history in sorted(rest_runs[cell]):
            heads = sorted({k for h in history for k in h["mixer_stats"] if "rest_strength_head" in k})
            for key in heads:
                fig.add_trace(go.Scatter(x=[h["step"] for h in history], y=[h["mixer_stats"][key] for h in history],
                                         mode="lines", name=f"seed {seed_i}", legendgroup=f"seed {seed_i}",
                                         showlegend=col == 1 and key == heads[0],
                                         line=dict(color=mixer_colour("seeking"), dash=("solid", "dash", "dot")[seed_i % 3]),
                                         hovertext=key.split(".")[-1]), row=1, col=col)
            settled.setdefault(cell, []).extend(history[-1]["mixer_stats"][k] for k in heads)
    fig.add_hline(y=8.0, line_dash="dot", line_color="grey", annotation_text="start (8)")
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(type="log", title_text="beta_h", col=1)
    fig.update_layout(title="learned rest strength per head: seeking by content (low) or taking turns (high)",
                      height=380, width=max(500, 330 * len(cells)))
    save_figure(fig, "03_refractory_learned_rest")
    fig.show()
    display(Markdown("\n".join(
        f"- **{cell}** ({len(rest_runs[cell])} seed(s)): beta_h at the end {min(v):.1f}-{max(v):.1f}"
        for cell, v in settled.items())))

# %% [markdown]
# ## Findings
#
# Computed from the tables and fits above (one seed, one text: observations about this model, not
# laws).

# %%
on, off = table["refractory on"], table["refractory off"]
findings = [
    f"Resting is exact: {rest_following(recs['refractory on']):.1%} of the writes with refractoriness on went to "
    f"the most rested unit of their pool (without it: {rest_following(recs['refractory off']):.1%}).",
    f"Load evenness at the window end (entropy of the write counts over its most even value): "
    f"{on['load evenness at window end']:.1%} on, {off['load evenness at window end']:.1%} off. With refractoriness on "
    f"the entropy reaches {load_entropy(recs['refractory on']['unit'], M)[0][-1]:.2f} bits; a window's writes allow at "
    f"most {load_entropy(recs['refractory on']['unit'], M)[1][-1]:.2f} (log2 M = {math.log2(M):.2f} would need at least "
    f"M writes spread evenly).",
]
same, chance = off["same-char evictions (of evictions)"], off["same char by chance (sum of p_char^2)"]
if not math.isnan(same):
    findings.append(
        f"Without rest, {same:.1%} of the evictions replace a message of the same character (chance: {chance:.1%}); "
        f"with rest, {on['same-char evictions (of evictions)']:.1%} (chance {on['same char by chance (sum of p_char^2)']:.1%}). "
        f"Evictions per write: {on['evictions per write']:.3f} on, {off['evictions per write']:.3f} off.")
gap = off["bits per character"] - on["bits per character"]
findings.append(
    f"Bits per character: {on['bits per character']:.3f} on, {off['bits per character']:.3f} off "
    f"({'rest is better by' if gap > 0 else 'rest is worse by'} {abs(gap):.3f}); one seed, so a difference in the "
    f"second decimal is within run-to-run noise.")
for name in ("refractory on", "refractory off"):
    definition = next(iter(sets[name]))
    d = avalanche_fits[(name, definition)]
    if d["fit"] is None:
        findings.append(f"{name}, {definition}: too few distinct sizes to fit a power law.")
        continue
    verdict = "not tested" if math.isnan(d["gof"]) else ("not rejected" if d["gof"] > 0.1 else "rejected")
    findings.append(
        f"{name}, avalanches {definition}: mean size {d['mean']:.2f} against {sets['shuffled (on)'][next(iter(sets['shuffled (on)']))].mean():.2f} "
        f"for shuffled writes; the likelihood ratio prefers {d['lr'].preferred} and a power law is {verdict}, over "
        f"sizes spanning {math.log10(max(d['max'], 1)):.1f} decades (capped by the window): too narrow to claim criticality.")
seek_on, seek_off = seek_records["refractory on"], seek_records["refractory off"]
load_on, load_off = seek_on["final_load"], seek_off["final_load"]
entropy_trace = {name: [h["metrics"]["units/load_entropy_bits"] for h in r["history"]] for name, r in seek_records.items()}
findings.append(
    f"Seeking on multi-stream recall ({seek_steps} steps, M = {seek_M} units per head): at the end the load entropy is "
    f"{load_on.entropy_bits:.2f} bits with rest and {load_off.entropy_bits:.2f} without, of a ceiling log2 M = "
    f"{load_on.ceiling_bits:.2f} (evenness {load_on.evenness:.1%} and {load_off.evenness:.1%}); the busiest unit takes "
    f"{load_on.busiest_share:.1%} and {load_off.busiest_share:.1%} of a head's load (1/M = {1 / seek_M:.1%}). Over "
    f"training the entropy stayed within [{min(entropy_trace['refractory on']):.2f}, "
    f"{max(entropy_trace['refractory on']):.2f}] bits with rest and [{min(entropy_trace['refractory off']):.2f}, "
    f"{max(entropy_trace['refractory off']):.2f}] without.")
gap_bits = load_on.entropy_bits - load_off.entropy_bits
findings.append(
    # Differences within 0.05 bits count as none (about 1% of log2 M at M = 32).
    (f"Rest spreads the load: {gap_bits:.2f} bits more entropy than without it. " if gap_bits > 0.05 else
     f"Rest makes no material difference to the load here ({gap_bits:+.2f} bits): content alone already spreads it. "
     if abs(gap_bits) <= 0.05 else f"The load is more even without rest ({-gap_bits:.2f} bits). ")
    + f"Held-out accuracy: {seek_on['metrics']['accuracy']:.3f} with rest, {seek_off['metrics']['accuracy']:.3f} "
    f"without (chance {1 / seek_task.options['n_values']:.3f}); one seed.")
if smoke:
    findings.append("Smoke run: a handful of steps on a generated text, so these numbers say nothing about the mixer.")
display(Markdown("\n".join(f"- {line}" for line in findings)))
