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
# # 01 · Quickstart: train one mixer on the copy task
#
# This notebook is the shortest path through the workbench. It
#
# 1. trains a small model (one block: a sequence mixer plus an MLP) on **copy**: the model
#    reads `BOS x1 … xL SEP` and must then write `x1 … xL EOS`, with `L` drawn from 1 to 64;
# 2. plots the training loss and the held-out accuracy as training goes on;
# 3. checks how accuracy depends on the length of the sequence to copy, including lengths
#    longer than any seen in training;
# 4. lets you change the mixer, the inverted mixer's number of units **M** and how many of them
#    each token reads (**k**), and re-trains a small model live (in JupyterLab: `make lab`).
#
# The mixer is a parameter: `transformer` (softmax attention, the baseline), `inverted` (the
# inverted-attention mixer this workbench is about) or any other registered mixer. Everything
# goes through the same `workbench.train.train` function the command line uses, so a run here is
# the same as `workbench train` with the same config.
#
# The model has two blocks here, not the one block of the benchmark protocol. Copying needs an
# "induction" circuit: mark each position with the token before it, then look that up. The
# short causal convolution in front of every mixer (`ModelConfig.short_conv`) supplies the
# first half; a second block gives every mixer room for the rest within this notebook's few
# hundred steps. Protocol v1 ran one block without the convolution: its copy row is in
# `results/v1/compare-full.json` (notebook 04 shows it).
#
# Run it top to bottom in Jupyter, or headless with `workbench notebooks run 01_quickstart`
# (add `--smoke` for a tiny run that finishes in seconds). Figures are written to `figures/`.

# %% tags=["parameters"]
smoke = False  # True: a tiny run (what the tests use); the numbers are then meaningless
steps = 600  # training steps
mixer = "transformer"  # "transformer" or "inverted"
seed = 0  # model initialisation and training data
n_layers = 2  # blocks; the benchmark protocol (workbench compare) uses 1, see above

# %%
import time

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from workbench.config import ConfigError, RunConfig
from workbench.mixers import MIXERS
from workbench.plotting import GREY, mixer_colour, save_figure
from workbench.tasks.base import lm_accuracy
from workbench.tasks.copy import ALPHABET, BOS, EOS, SEP, make_copy_examples
from workbench.train import train

if smoke:
    # Tiny everything: a handful of steps on short sequences, a small held-out set.
    steps = min(steps, 30)
    max_len, batch_size, eval_every, n_eval = 16, 16, 10, 64
    lengths = list(range(1, 17)) + [24, 32]
    n_per_length = 4
else:
    max_len, batch_size, eval_every, n_eval = 64, 32, 25, 200
    lengths = list(range(1, 65)) + [80, 96, 128]
    n_per_length = 32

config = RunConfig.from_dict(
    {
        "task": {"name": "copy", "options": {"max_len": max_len, "n_eval": n_eval, "long_lengths": []}},
        "model": {"mixer": mixer, "n_layers": n_layers},
        "train": {
            "steps": steps,
            "batch_size": batch_size,
            "eval_every": eval_every,
            "warmup_steps": max(1, steps // 10),
            "seed": seed,
        },
    }
)
config.to_dict()

# %% [markdown]
# ## Train
#
# One call trains the model, evaluating every `eval_every` steps on a fixed held-out set of
# copy problems (lengths 1 to `max_len`). It returns the trained model and the run record (the
# final metrics, the evaluation history, parameter counts and the recurrent state size).

# %%
started = time.perf_counter()
model, result = train(config, progress=not smoke)
print(f"{mixer}: {result['steps']} steps in {time.perf_counter() - started:.1f}s on {result['device']}")
print(f"parameters: {result['parameters']}")
for key, value in result["metrics"].items():
    print(f"  {key:>16s} = {value:.3f}")

# %% [markdown]
# ## Learning curves
#
# Left: the training loss (cross-entropy on the answer tokens only, log scale) at each
# evaluation point. Right: on the held-out set, **token accuracy** is the fraction of answer
# tokens the model gets right, and **exact match** the fraction of sequences it copies with no
# mistake at all. Exact match is the strict one: a single wrong token in a length-60 answer
# makes the whole sequence count as wrong, so it usually rises later and more suddenly than
# token accuracy. Chance level for token accuracy is about 1/16 (sixteen symbols).

# %%
DASH = {"token_accuracy": "solid", "exact_match": "dash"}


def training_figure(history: list[dict], name: str) -> go.Figure:
    """Loss (left) and held-out accuracies (right) against steps, in the mixer's colour."""
    steps_seen = [h["step"] for h in history]
    colour = mixer_colour(name)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "held-out accuracy"), horizontal_spacing=0.12)
    fig.add_trace(go.Scatter(x=steps_seen, y=[h["loss"] for h in history], mode="lines+markers", name="loss",
                             line=dict(color=GREY)), row=1, col=1)
    for metric, dash in DASH.items():
        fig.add_trace(go.Scatter(x=steps_seen, y=[h["metrics"][metric] for h in history], mode="lines+markers",
                                 name=metric.replace("_", " "), line=dict(color=colour, dash=dash)), row=1, col=2)
    fig.update_yaxes(type="log", title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=f"copy, {name} mixer: training", height=420, width=1000,
                      legend=dict(orientation="h", y=-0.2))
    return fig


fig = training_figure(result["history"], mixer)
for path in save_figure(fig, "01_quickstart_training"):
    print(f"wrote {path}")
fig.show()

# %% [markdown]
# ## Accuracy by sequence length
#
# The held-out numbers above average over all lengths. Here we draw fresh copy problems
# (never seen in training or in the held-out set) at each length separately and measure
# the same two accuracies. Lengths to the right of the dashed line are longer than anything
# in training: they test whether the model learned a copying *procedure* or only something
# that works at the lengths it was shown.
#
# Accuracy is teacher-forced (the model sees the correct previous answer tokens and we
# check each next-token guess), which for exact match is the same as greedy decoding.

# %%
def accuracy_by_length(trained, lengths: list[int], n_per_length: int) -> dict[str, list[float]]:
    """Token accuracy and exact match on fresh copy problems, one length at a time."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    out: dict[str, list[float]] = {"length": [], "token_accuracy": [], "exact_match": []}
    for length in lengths:
        batch = make_copy_examples([length] * n_per_length, generator)
        correct, counted, exact = lm_accuracy(trained, batch.inputs, batch.targets, batch_size=64)
        out["length"].append(length)
        out["token_accuracy"].append(correct / counted)
        out["exact_match"].append(exact / n_per_length)
    return out


def length_figure(by_length: dict[str, list[float]], name: str, train_len: int, n: int) -> go.Figure:
    fig = go.Figure()
    for metric, dash in DASH.items():
        fig.add_trace(go.Scatter(x=by_length["length"], y=by_length[metric], mode="lines+markers",
                                 name=metric.replace("_", " "), line=dict(color=mixer_colour(name), dash=dash)))
    fig.add_vline(x=train_len, line_dash="dot", line_color=GREY, annotation_text="longest training length",
                  annotation_position="bottom left")  # low: the curves sit near 1 at the top
    fig.update_layout(title=f"copy, {name} mixer: accuracy by length ({n} sequences per length)",
                      xaxis_title="sequence length L", yaxis_title="accuracy", yaxis_range=[0, 1.05], height=420,
                      width=1000, legend=dict(orientation="h", y=-0.2))
    return fig


by_length = accuracy_by_length(model, lengths, n_per_length)
fig = length_figure(by_length, mixer, max_len, n_per_length)
for path in save_figure(fig, "01_quickstart_length"):
    print(f"wrote {path}")
fig.show()

# %% [markdown]
# ## One example, decoded
#
# Finally, a single problem written out. The model generates its answer one token at a time
# from the prompt `BOS x1 … xL SEP` (greedy decoding, using the mixer's recurrent form);
# symbols are shown as letters.

# %%
symbols = "abcdefghijklmnopqrstuvwxyz"[:ALPHABET]
names = {BOS: "<bos>", SEP: "<sep>", EOS: "<eos>"}


def show(tokens):
    return " ".join(names.get(t, symbols[t] if t < ALPHABET else "?") for t in tokens)


length = min(12, max_len)
example = make_copy_examples([length], torch.Generator().manual_seed(20_000 + seed)).inputs[:, : length + 2]
device = next(model.parameters()).device
output = model.generate(example.to(device), n_new=length + 1, temperature=0).cpu()[0].tolist()
print("prompt:  ", show(output[: length + 2]))
print("expected:", show(example[0, 1 : length + 1].tolist() + [EOS]))
print("model:   ", show(output[length + 2 :]))

# %% [markdown]
# ## Try it: the mixer, M and k
#
# Pick a mixer and, for the inverted one, its number of units **M** (`n_units`: the fixed
# memory every token writes into and reads from) and how many units each token reads back
# (**k**, `read_topk`); choose a step budget and press the button. A small model (one width-64
# block pair, copy up to length 16) trains in seconds to a minute and both figures redraw:
# learning curves, and accuracy by length up to twice the training length. M and k are
# ignored by the other mixers. Headless, the panel trains once at its defaults.

# %%
live_len, live_lengths = 16, list(range(1, 17)) + [20, 24, 28, 32]
live_steps_default, live_per_length = (20, 4) if smoke else (300, 16)


def live_train(mixer_name: str, n_units: int, read_topk: int, n_steps: int):
    options = {"n_units": n_units, "read_topk": read_topk} if mixer_name == "inverted" else {}
    cfg = RunConfig.from_dict({
        "task": {"name": "copy", "options": {"max_len": live_len, "n_eval": 64, "long_lengths": []}},
        "model": {"mixer": mixer_name, "n_layers": 2, "d_model": 64, "mixer_options": options},
        "train": {"steps": n_steps, "batch_size": 16, "eval_every": max(1, n_steps // 6),
                  "warmup_steps": max(1, n_steps // 10), "checkpoint_every": n_steps, "seed": seed},
    })
    started = time.perf_counter()
    trained, record = train(cfg, progress=False)
    by_len = accuracy_by_length(trained, live_lengths, live_per_length)
    return record, by_len, time.perf_counter() - started


def refresh(widget: go.FigureWidget, figure: go.Figure) -> None:
    with widget.batch_update():
        widget.data = ()
        widget.layout = figure.layout
    widget.add_traces(list(figure.data))


knobs = {
    "mixer_name": widgets.Dropdown(options=sorted(MIXERS), value="inverted", description="mixer"),
    "n_units": widgets.Dropdown(options=[4, 8, 16, 32, 64, 128], value=16, description="M (units)"),
    "read_topk": widgets.Dropdown(options=[1, 2, 4, 8], value=4, description="k (read)"),
    "n_steps": widgets.IntSlider(value=live_steps_default, min=10, max=1000, step=10, description="steps"),
}
button = widgets.Button(description="train & redraw", button_style="primary")
status = widgets.HTML()
live_record, live_by_length, live_seconds = live_train(**{k: w.value for k, w in knobs.items()})
live_curves = go.FigureWidget(training_figure(live_record["history"], knobs["mixer_name"].value))
live_lengths_fig = go.FigureWidget(length_figure(live_by_length, knobs["mixer_name"].value, live_len, live_per_length))
status.value = f"trained at the default knobs in {live_seconds:.1f}s: exact match {live_record['metrics']['exact_match']:.3f}"


def on_click(_button) -> None:
    button.disabled = True
    status.value = "training ..."
    try:
        record, by_len, seconds = live_train(**{k: w.value for k, w in knobs.items()})
    except ConfigError as exc:
        status.value = f"<span style='color:#b00'>{exc}</span>"
    else:
        name = knobs["mixer_name"].value
        refresh(live_curves, training_figure(record["history"], name))
        refresh(live_lengths_fig, length_figure(by_len, name, live_len, live_per_length))
        status.value = f"trained in {seconds:.1f}s: exact match {record['metrics']['exact_match']:.3f}"
    finally:
        button.disabled = False


button.on_click(on_click)
display(widgets.VBox([widgets.HBox(list(knobs.values())[:3]), widgets.HBox([knobs["n_steps"], button, status])]))
display(live_curves)
display(live_lengths_fig)

# %% [markdown]
# ## Findings
#
# Computed from the run above (one seed; a different seed moves these numbers by a few points).

# %%
lengths_in = [i for i, n in enumerate(by_length["length"]) if n <= max_len]
lengths_out = [i for i, n in enumerate(by_length["length"]) if n > max_len]
mean_in = sum(by_length["exact_match"][i] for i in lengths_in) / max(len(lengths_in), 1)
last_perfect = max((by_length["length"][i] for i in lengths_in if by_length["exact_match"][i] == 1.0), default=None)
first_step = next((h["step"] for h in result["history"] if h["metrics"]["exact_match"] >= 0.99), None)
findings = [
    f"The {n_layers}-block `{mixer}` model reached held-out exact match {result['metrics']['exact_match']:.3f} "
    f"(token accuracy {result['metrics']['token_accuracy']:.3f}) after {result['steps']} steps; "
    + (f"it first passed 0.99 at step {first_step}." if first_step is not None else "it never passed 0.99."),
    f"Over the training lengths 1-{max_len} its mean exact match is {mean_in:.3f}; "
    + (f"the longest length at which all {n_per_length} sampled sequences were copied exactly is L = {last_perfect}."
       if last_perfect else f"at no length were all {n_per_length} sampled sequences copied exactly."),
]
if lengths_out:
    beyond = ", ".join(f"L = {by_length['length'][i]}: {by_length['exact_match'][i]:.2f}" for i in lengths_out)
    findings.append(f"Beyond the training lengths, exact match is {beyond}.")
findings.append(f"The live panel, run at its defaults (`{knobs['mixer_name'].value}`, M = {knobs['n_units'].value}, "
                f"k = {knobs['read_topk'].value}) reached exact match {live_record['metrics']['exact_match']:.3f} "
                f"in {live_record['steps']} steps.")
if smoke:
    findings.append("Smoke run: a handful of steps, so these numbers say nothing about the mixer.")
display(Markdown("\n".join(f"- {line}" for line in findings)))
