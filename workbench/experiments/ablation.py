"""Each mechanism's switches, each turned off on its own, at protocol v2's full budget.

Cells: MQAR (256, 16) and char-LM (3,000 steps), at the learning rate protocol v2 chose for the same
mixer on the same cell (the ablation waits for it), three seeds. (Multi-stream recall has its own
rest-off and pools rows in the multistream experiment, at its equal state.) A switch that changes
nothing measurable here has no claim on the default.
"""

from __future__ import annotations

from pathlib import Path

from workbench.config import TrainConfig
from workbench.experiments.protocol_v2 import MODEL, charlm_cells, mqar_cell, protocol_v2
from workbench.experiments.spec import Cell, Experiment, Variant

SWITCHES: dict[str, str] = {
    "seeking (default)": "seeking",
    "seeking: rest off": "seeking:refractory=false",
    "seeking: no short conv": "seeking@short_conv=0",
    "inverted (default)": "inverted",
    "refractory off (content routing)": "inverted:refractory=false",
    "one pool": "inverted:n_pools=1",
    "write gate off (every token writes)": "inverted:write_gate=false",
    "write surrogate off": "inverted:write_surrogate=false",
    "ordinal read off": "inverted:ordinal_read=false",
    "multi-timescale off": "inverted:timescales=[]",
    "no short conv": "inverted@short_conv=0",
}


def ablation(budget: str, results: Path = Path("results")) -> Experiment:
    from workbench.experiments.spec import parse_variant

    cells = [mqar_cell(256, 16, budget), *charlm_cells(budget, wall_clock=False)]
    source = protocol_v2(budget)
    variants = [Variant(name, *_split(parse_variant(spec))) for name, spec in SWITCHES.items()]

    def lr_lookup(cell: Cell, variant: Variant) -> float | None:
        from workbench.experiments.runner import chosen_rate

        source_cell = next((c for c in source.cells if c.label == cell.label), None)
        if not source.lr_grid or source_cell is None:  # below the full budget v2 trains at its one default rate
            return cell.train.get("lr", TrainConfig.lr)
        return chosen_rate(source, results)(source_cell, Variant(variant.mixer, variant.mixer))

    return Experiment("ablation", budget, cells, variants, seeds=3 if budget == "full" else 1, model=dict(MODEL),
                      lr_lookup=lr_lookup, notes="each mechanism's switches, one at a time, at v2's rate")


def _split(variant: Variant) -> tuple[str, dict, dict]:
    return variant.mixer, variant.options, variant.model
