"""A mixer's internals as the notebooks read them: through its hook points, not its code.

The mechanism notebooks (02 routing, 03 refractoriness) ask the inverted mixer what it did per
token - salience, the unit written, every unit's gain and occupant, the read-back weights - at
the hook points it exposes. Reading them here, by name and with absent hooks left out, keeps the
notebooks working while the mixer's internals change; ``option`` reads a hyper-parameter from
the mixer's resolved options when it has them, else from the model config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from workbench.hooks import capture

# What the notebooks call each hook point of the inverted mixer.
HOOKS = {"salience": "hook_salience", "unit": "hook_unit", "gain": "hook_gain", "occupant": "hook_occupant",
         "read": "hook_read_weights", "pointer": "hook_read_pointer"}


def internals(model: torch.nn.Module, layer: int, forward: Callable[[], Any]) -> tuple[dict[str, np.ndarray], Any]:
    """Run ``forward()`` with every hook of block ``layer``'s mixer recorded; (arrays by name, its result).

    Hooks the mixer does not have are simply absent from the dict.
    """
    prefix = f"blocks.{layer}.mixer."
    with torch.no_grad(), capture(model, [prefix + "hook_"]) as cache:
        result = forward()
    return {key: cache[prefix + hook].cpu().numpy() for key, hook in HOOKS.items() if prefix + hook in cache}, result


def option(model: torch.nn.Module, layer: int, name: str, default: Any = None) -> Any:
    """A hyper-parameter of block ``layer``'s mixer: its resolved options first, then the model config."""
    mixer = model.blocks[layer].mixer
    resolved = getattr(mixer, "o", None)
    if resolved is not None and hasattr(resolved, name):
        return getattr(resolved, name)
    config = getattr(model, "config", None)
    return config.mixer_options.get(name, default) if config is not None else default


def unit_count(record: dict[str, np.ndarray]) -> int:
    """M, from the last axis of any per-unit hook (occupant, gain or read weights)."""
    for key in ("occupant", "gain", "read"):
        if key in record:
            return int(record[key].shape[-1])
    raise ValueError("no per-unit hook (hook_occupant, hook_gain, hook_read_weights) was recorded")
