"""Accuracy against recurrent state size on MQAR (256, 16): the Pareto sweep of protocol v2.

Every mixer at d_model 64, 128 and 256 (its default state knob), and at d_model 128 with its
state knob halved and doubled (M units for the inverted mixer, the window for sliding-window
attention, slots for GSA, ...). One seed, at the learning rate protocol v2 chose for that mixer on
the same cell (the sweep waits for it). The x axis of the figure is the state each run reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import TrainConfig
from workbench.experiments.protocol_v2 import MIXERS, MODEL, mqar_cell, protocol_v2
from workbench.experiments.spec import Cell, Experiment, Variant

# The option that sets each mixer's state size, and its values beside the default at d_model 128.
KNOBS: dict[str, tuple[str, list[Any]]] = {
    "inverted": ("n_units", [64, 256]),
    "seeking": ("n_units", [32, 128]),
    "sliding_window": ("window", [64, 256]),
    "gsa": ("n_slots", [32, 128]),
    "mamba": ("d_state", [8, 32]),
    "based": ("feature_dim", [8, 24]),
    "gated_deltanet": ("n_heads", [1, 4]),
    "deltanet": ("n_heads", [1, 4]),
}
WIDTHS = (64, 128, 256)


def sweep_variants(mixers: list[str]) -> list[Variant]:
    out = []
    for mixer in mixers:
        for width in WIDTHS:
            out.append(Variant(f"{mixer}@d_model={width}", mixer, {}, {"d_model": width}))
        if mixer in KNOBS:
            name, values = KNOBS[mixer]
            out += [Variant(f"{mixer}:{name}={value}", mixer, {name: value}, {}) for value in values]
    return out


def pareto(budget: str, results: Path = Path("results")) -> Experiment:
    cell = mqar_cell(256, 16, budget)
    source = protocol_v2(budget)
    source_cell = next((c for c in source.cells if c.label == cell.label), None)

    def lr_lookup(_cell: Cell, variant: Variant) -> float | None:
        from workbench.experiments.runner import chosen_rate

        if not source.lr_grid or source_cell is None:  # below the full budget v2 trains at its one default rate
            return cell.train.get("lr", TrainConfig.lr)
        return chosen_rate(source, results)(source_cell, Variant(variant.mixer, variant.mixer))

    return Experiment("pareto", budget, [cell], sweep_variants(MIXERS), seeds=1, model=dict(MODEL),
                      lr_lookup=lr_lookup, notes="MQAR (256, 16) accuracy vs state floats, one seed, v2's rate")
