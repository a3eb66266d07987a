"""Experiments as data: protocol v2 and its companions, each a list of cells x variants x seeds.

``get_experiment(name, budget)`` builds one; ``run_experiment`` (``runner``) trains what is missing
and ``aggregate`` writes ``results/compare-<name>-<budget>.json``, which ``workbench report`` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workbench.config import ConfigError
from workbench.experiments.ablation import ablation
from workbench.experiments.multistream import multistream, seeking_widths
from workbench.experiments.pareto import pareto
from workbench.experiments.protocol_v2 import no_short_conv, protocol_v2, two_layer
from workbench.experiments.spec import BUDGETS, Cell, Experiment, Run, Variant, parse_variant

EXPERIMENTS: dict[str, Callable[..., Experiment]] = {
    "v2": protocol_v2,
    "v2-2layer": two_layer,
    "v2-noconv": no_short_conv,
    "pareto": pareto,
    "ablation": ablation,
    "multistream": multistream,
    "seeking-widths": seeking_widths,
}


def get_experiment(name: str, budget: str, results: str | Path = "results") -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    builder = EXPERIMENTS[name]
    return builder(budget, Path(results)) if name in ("pareto", "ablation") else builder(budget)


__all__ = ["EXPERIMENTS", "Cell", "Experiment", "Run", "Variant", "get_experiment", "parse_variant"]
