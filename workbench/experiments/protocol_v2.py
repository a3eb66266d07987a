"""Protocol v2: every mixer with the same front end, learning-rate grid, budget and seeds (Zoology style).

* Model: d_model 128, one block, the shared short causal convolution (width 8) in front of every
  mixer (``ModelConfig.short_conv``), each mixer at its paper's defaults scaled to d_model 128.
* Learning rate: the grid {1e-3, 3e-3, 1e-2} for every mixer, chosen on seed 0 per cell (the
  grid's other points are kept in the summary), then seeds 1 and 2 at the chosen rate.
* Cells: MQAR with Zoology's generator (vocabulary 512 - Zoology's 8,192 does not leave chance at this
  budget, see results/v2-vocab8192; the head scores only labelled positions)
  at (64, 4), (128, 8), (256, 16) and (512, 64), the (256, 16) models also evaluated at (512, 32),
  (1024, 64) and (2048, 128); copy (lengths up to 64, evaluated at 128 and 256 too); char-LM on
  tiny-shakespeare for 3,000 steps, and for 600 s of wall clock at the rate chosen at 3,000 steps.
* Every row reports parameters (mixer / total), the recurrent state in floats (from the state
  tensors themselves) and train tokens/s.

Companion experiments: ``v2-2layer`` (the (256, 16) cell with two blocks), ``v2-noconv`` (no
front end), ``pareto`` (accuracy vs state size) and ``ablation`` (the inverted mixer's switches).
"""

from __future__ import annotations

from typing import Any

from workbench.experiments.spec import Cell, Experiment, Variant

LR_GRID = (1e-3, 3e-3, 1e-2)
# Zoology uses 8,192; at this budget no mixer leaves chance with it (results/v2-vocab8192/README.md),
# so protocol v2 keeps protocol v1's 512 on this CPU.
MQAR_VOCAB = 512
MODEL: dict[str, Any] = {"d_model": 128, "n_layers": 1, "short_conv": 8}
# The peers of protocol v2, each at its own defaults (see each mixer's docstring for the paper).
MIXERS = ["transformer", "sliding_window", "based", "mamba", "gated_deltanet", "deltanet", "gsa", "inverted", "seeking"]
EXTRAPOLATION = [(512, 32), (1024, 64), (2048, 128), (4096, 64), (16384, 64)]
N_EVAL_LONG = 50  # held-out sequences per extrapolation length (3,200+ queries each; 1,000 sequences at 256)


def _train(budget: str, full: dict[str, Any], demo: dict[str, Any] | None = None) -> dict[str, Any]:
    if budget == "smoke":
        return {"steps": 12, "batch_size": 8, "eval_every": 6, "warmup_steps": 2, "checkpoint_every": 6,
                **({"target_metric": full["target_metric"]} if "target_metric" in full else {})}
    chosen = full if budget == "full" else {**full, **(demo or {})}
    return {"warmup_steps": min(100, chosen["steps"] // 10), "checkpoint_every": 250, **chosen}


def mqar_cell(seq_len: int, kv: int, budget: str, extrapolate: bool = False) -> Cell:
    long = [list(c) for c in EXTRAPOLATION] if extrapolate else []
    options: dict[str, Any] = {"seq_len": seq_len, "kv_pairs": kv, "vocab_size": MQAR_VOCAB, "long_configs": long,
                               "n_eval_long": N_EVAL_LONG}
    batch = 32 if seq_len >= 512 else 64  # (512, 64): the same tokens per step as (256, 16)
    train = _train(budget, {"steps": 2000, "batch_size": batch, "eval_every": 250, "target_metric": 0.99},
                   {"steps": 600, "eval_every": 100})
    if budget == "smoke":
        options |= {"n_eval": 16, "long_configs": [[2 * seq_len, kv]] if extrapolate else []}
    elif budget == "demo":
        options |= {"n_eval": 200, "long_configs": [[2 * seq_len, 2 * kv]]}
    metrics = ("accuracy", *(f"accuracy@{s}x{k}" for s, k in options["long_configs"]))
    return Cell(f"mqar-{seq_len}x{kv}", "mqar", options, train, metrics)


def copy_cell(budget: str) -> Cell:
    options: dict[str, Any] = {}
    if budget == "smoke":
        options = {"max_len": 8, "n_eval": 16, "long_lengths": [16], "n_eval_long": 8}
    elif budget == "demo":
        options = {"n_eval": 200, "long_lengths": [128], "n_eval_long": 100}
    train = _train(budget, {"steps": 5000, "batch_size": 64, "eval_every": 250, "target_metric": 0.99},
                   {"steps": 300, "batch_size": 32, "eval_every": 100})
    lengths = options.get("long_lengths", [128, 256])
    metrics = ("exact_match", "token_accuracy", *(f"exact_match@L{n}" for n in lengths))
    return Cell("copy", "copy", options, train, metrics)


def charlm_cells(budget: str, wall_clock: bool = True) -> list[Cell]:
    options = {"max_eval_windows": 4} if budget == "smoke" else ({"max_eval_windows": 60} if budget == "demo" else {})
    train = _train(budget, {"steps": 3000, "batch_size": 32, "eval_every": 500}, {"steps": 250, "eval_every": 100})
    cells = [Cell("charlm", "charlm", options, train, ("bpc",))]
    if wall_clock:
        seconds = {"smoke": 3, "demo": 60, "full": 600}[budget]
        timed = {**train, "steps": 1_000_000, "time_budget_s": seconds, "eval_every": train["eval_every"]}
        cells.append(Cell("charlm-600s" if budget == "full" else f"charlm-{seconds}s", "charlm", options, timed,
                          ("bpc",), lr_from="charlm"))
    return cells


def variants(names: list[str]) -> list[Variant]:
    return [Variant(name, name) for name in names]


def protocol_v2(budget: str) -> Experiment:
    if budget == "full":
        mqar = [mqar_cell(256, 16, budget, extrapolate=True), mqar_cell(64, 4, budget), mqar_cell(128, 8, budget),
                mqar_cell(512, 64, budget)]
    else:
        mqar = [mqar_cell(64, 4, budget)]
    # Order is priority: a partial run of the protocol fills the headline cells first.
    cells = [mqar[0], *charlm_cells(budget)[:1], copy_cell(budget), *mqar[1:], *charlm_cells(budget)[1:]]
    return Experiment("v2", budget, cells, variants(MIXERS), seeds=3 if budget == "full" else 1, model=dict(MODEL),
                      lr_grid=LR_GRID if budget == "full" else None,
                      notes="protocol v2: shared short conv (width 8), lr grid on seed 0, 3 seeds at the chosen rate")


def two_layer(budget: str) -> Experiment:
    cell = mqar_cell(256, 16, budget, extrapolate=budget == "full")
    return Experiment("v2-2layer", budget, [cell], variants(MIXERS), seeds=3 if budget == "full" else 1,
                      model={**MODEL, "n_layers": 2}, lr_grid=LR_GRID if budget == "full" else None,
                      notes="protocol v2, two blocks: MQAR (256, 16)")


def no_short_conv(budget: str) -> Experiment:
    cells = [mqar_cell(256, 16, budget), *charlm_cells(budget, wall_clock=False)]
    return Experiment("v2-noconv", budget, cells, variants(MIXERS), seeds=3 if budget == "full" else 1,
                      model={**MODEL, "short_conv": 0}, lr_grid=LR_GRID if budget == "full" else None,
                      notes="protocol v2 without the shared short convolution")
