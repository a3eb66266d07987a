"""Multi-stream recall at equal state (issue 18's test of seeking): where recency is not enough.

One cell, ``workbench/tasks/multistream.py`` at its defaults (4 streams with rates 1 : 1/4 : 1/16 :
1/64, 112 events, 16 queries for one of the last 4 events of a stream, the streams asked about
equally often). Every mixer is sized to about 8,192 recurrent floats (a window of 32 tokens, 32
units or slots per head, ...) so the table compares what each memory keeps, not how much. The
learning-rate grid and seeds are protocol v2's.
"""

from __future__ import annotations

from workbench.experiments.protocol_v2 import LR_GRID, MODEL, _train
from workbench.experiments.spec import Cell, Experiment, Variant

# Variants at about 8,192 state floats at d_model 128 (the transformer's KV cache grows instead).
VARIANTS = [
    Variant("sliding_window:window=32", "sliding_window", {"window": 32}),
    Variant("inverted:n_units=32", "inverted", {"n_units": 32}),
    Variant("inverted:n_units=32:n_pools=4", "inverted", {"n_units": 32, "n_pools": 4}),
    Variant("seeking:n_units=32", "seeking", {"n_units": 32}),
    Variant("seeking:n_units=32:refractory=false", "seeking", {"n_units": 32, "refractory": False}),
    Variant("gsa:n_slots=32", "gsa", {"n_slots": 32}),
    Variant("gated_deltanet", "gated_deltanet", {}),
    Variant("mamba:d_state=32", "mamba", {"d_state": 32}),
    Variant("transformer", "transformer", {}),
]


def multistream_cell(budget: str) -> Cell:
    options = {"n_eval": 16} if budget == "smoke" else ({"n_eval": 200} if budget == "demo" else {})
    train = _train(budget, {"steps": 2000, "batch_size": 32, "eval_every": 250, "target_metric": 0.99},
                   {"steps": 400, "eval_every": 100})
    streams = [f"accuracy@stream{s}" for s in range(4)]
    return Cell("multistream", "multistream", options, train, ("accuracy", *streams))


def multistream(budget: str) -> Experiment:
    return Experiment("multistream", budget, [multistream_cell(budget)], list(VARIANTS),
                      seeds=3 if budget == "full" else 1, model=dict(MODEL),
                      lr_grid=LR_GRID if budget == "full" else None,
                      notes="multi-stream recall at about 8,192 state floats per mixer")


# Notebook 02's small multi-stream recall (d_model 64, 800 steps at lr 1e-2), where the seeking mixer's
# widths were chosen: how much narrower keys and values cost (docs/changelog.md).
SMALL_TASK = {"seq_len": 128, "key_range": 64, "n_values": 32, "n_queries": 8, "recent": 2, "n_eval": 256}
WIDTH_VARIANTS = [
    Variant(f"seeking:n_units=32:{label}", "seeking", {"n_units": 32, **options})
    for label, options in (("key_dim=16", {"key_dim": 16}), ("key_dim=12", {"key_dim": 12}),
                           ("key_dim=8", {"key_dim": 8}), ("key_dim=16:value_dim=8", {"key_dim": 16, "value_dim": 8}))
]


def seeking_widths(budget: str) -> Experiment:
    options = {**SMALL_TASK, "n_eval": 16} if budget == "smoke" else dict(SMALL_TASK)
    train = _train(budget, {"steps": 800, "batch_size": 32, "eval_every": 200, "lr": 1e-2, "checkpoint_every": 800},
                   {"steps": 200, "eval_every": 50})
    cell = Cell("multistream-small", "multistream", options, train, ("accuracy", *(f"accuracy@stream{s}" for s in range(4))))
    return Experiment("seeking-widths", budget, [cell], list(WIDTH_VARIANTS), seeds=2 if budget == "full" else 1,
                      model={"d_model": 64, "n_layers": 1, "short_conv": 8},
                      notes="seeking's key and value widths on notebook 02's small multi-stream recall")
