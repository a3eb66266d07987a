"""Named hook points (TransformerLens style): notebooks read internals without patching.

Every interesting intermediate passes through a ``HookPoint``; ``capture(model)``
records them all by their dotted module names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class HookPoint(nn.Module):
    """Identity module whose only job is to be a named place to hook."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def active(self) -> bool:
        """Whether a hook listens: a caller may skip computing what only a hook would see."""
        return bool(self._forward_hooks or self._forward_pre_hooks)


@contextmanager
def capture(model: nn.Module, names: list[str] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of hook points (all, or those whose name contains any of ``names``)."""
    cache: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if not isinstance(module, HookPoint):
            continue
        if names is not None and not any(n in name for n in names):
            continue

        def record(_module, _inputs, output, name=name):
            cache[name] = output.detach()

        handles.append(module.register_forward_hook(record))
    try:
        yield cache
    finally:
        for handle in handles:
            handle.remove()


def hook_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, HookPoint)]
