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
#    longer than any seen in training.
#
# The mixer is a parameter: `transformer` (softmax attention, the baseline) or `inverted`
# (the inverted-attention mixer this workbench is about). Everything goes through the same
# `workbench.train.train` function the command line uses, so a run here is the same as
# `workbench train` with the same config.
#
# The model has two blocks here, not the one block of the benchmark protocol: softmax
# attention needs two layers to copy (one layer marks each position with the token before
# it, the next looks that up - the "induction head" circuit). With `n_layers = 1` the
# transformer stays near 20% token accuracy after 600 steps; with two it learns copy within
# a few hundred steps.
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

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from workbench.config import RunConfig
from workbench.plotting import save_figure
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
history = result["history"]
hist_steps = [h["step"] for h in history]
fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "held-out accuracy"))
fig.add_trace(go.Scatter(x=hist_steps, y=[h["loss"] for h in history], mode="lines+markers", name="loss"), row=1, col=1)
for metric in ("token_accuracy", "exact_match"):
    values = [h["metrics"][metric] for h in history]
    fig.add_trace(go.Scatter(x=hist_steps, y=values, mode="lines+markers", name=metric.replace("_", " ")), row=1, col=2)
fig.update_yaxes(type="log", title_text="cross-entropy", row=1, col=1)
fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=2)
fig.update_xaxes(title_text="step")
fig.update_layout(title=f"copy, {mixer} mixer: training", height=400, width=950)
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
generator = torch.Generator().manual_seed(10_000 + seed)
by_length = {"length": [], "token_accuracy": [], "exact_match": []}
for length in lengths:
    batch = make_copy_examples([length] * n_per_length, generator)
    correct, counted, exact = lm_accuracy(model, batch.inputs, batch.targets, batch_size=64)
    by_length["length"].append(length)
    by_length["token_accuracy"].append(correct / counted)
    by_length["exact_match"].append(exact / n_per_length)

fig = go.Figure()
for metric in ("token_accuracy", "exact_match"):
    fig.add_trace(
        go.Scatter(x=by_length["length"], y=by_length[metric], mode="lines+markers", name=metric.replace("_", " "))
    )
fig.add_vline(x=max_len, line_dash="dash", line_color="grey", annotation_text="longest training length")
fig.update_layout(
    title=f"copy, {mixer} mixer: accuracy by length ({n_per_length} sequences per length)",
    xaxis_title="sequence length L",
    yaxis_title="accuracy",
    yaxis_range=[0, 1.02],
    height=400,
    width=950,
)
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
