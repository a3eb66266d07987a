"""Performance benchmarks, split by job:

* ``scaling``: the run (every registered mixer side by side, lengths 256 to 64K) and its command line;
* ``phases``: what is measured inside a point's process (train, prefill, decode, fused decode);
* ``supervisor``: process isolation (a fresh process per point; time and memory limits);
* ``costs``: the one cost model (FLOPs, multiply-adds, bytes per token of every mixer);
* ``energy``: ESTIMATED joules from those counts and from time x an assumed power;
* ``roofline``: the machine's peak FLOP/s, measured, and the fraction each phase achieves;
* ``fits``: log-log slopes and crossovers;
* ``long_context``: every constant-state mixer stepped over a million tokens;
* ``tables``: terminal and markdown tables (``workbench report`` renders these).

Imports are lazy so that ``import workbench.bench`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_scaling": "scaling",
    "run_long_recurrent": "long_context",
    "format_scaling_table": "tables",
    "scaling_markdown": "tables",
    "long_context_markdown": "tables",
    "counted_costs": "costs",
    "measure_peak": "roofline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"workbench.bench.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'workbench.bench' has no attribute {name!r}")
