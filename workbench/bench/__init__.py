"""Performance benchmarks: ``scaling`` (time, memory, ESTIMATED energy vs sequence length).

Imports are lazy so that ``python -c 'from workbench.bench.scaling import ...'`` children and
``import workbench.bench`` stay cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "format_scaling_table",
    "run_long_recurrent",
    "run_scaling",
    "scaling_markdown",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from workbench.bench import scaling

        return getattr(scaling, name)
    raise AttributeError(f"module 'workbench.bench' has no attribute {name!r}")
