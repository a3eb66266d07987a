"""The mixer interface and its options handling.

A mixer maps (batch, time, d_model) -> (batch, time, d_model) causally and has two forms
that must agree to float tolerance (flash-linear-attention's convention):

* ``forward(x)``: the training form, parallel over time (chunked or scanned; no Python loop
  over positions);
* ``init_state(batch)`` then ``step(x_t, state) -> (y_t, state)``: the recurrent form used by
  ``generate``; ``forward_recurrent`` loops it over time (tests and references only).

``state_floats(context)`` is the size of the recurrent state after ``context`` tokens, in
numbers, for one sequence: what protocol v2 reports beside every accuracy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from workbench.config import ConfigError


def count_floats(state: Any) -> int:
    """Numbers held in floating-point tensors anywhere inside ``state`` (dicts, lists, tuples)."""
    if isinstance(state, torch.Tensor):
        return state.numel() if state.is_floating_point() else 0
    if isinstance(state, dict):
        return sum(count_floats(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(count_floats(v) for v in state)
    return 0


class Mixer(nn.Module):
    """Base class: a causal sequence mixer with a parallel and a recurrent form."""

    Options: ClassVar[type]  # a dataclass of this mixer's hyper-parameters
    # True when the state grows with the context (a KV cache); such mixers override state_floats.
    growing_state: ClassVar[bool] = False
    # Options added after runs were recorded -> the value that does what the code did before them,
    # so those runs are not refused as stale (``workbench.experiments.runner.refuse_stale``).
    options_added_later: ClassVar[dict[str, Any]] = {}
    # Options taken out again -> the value at which they did nothing: a record (a run, a checkpoint)
    # that holds one at that value was made with what the code still does.
    options_removed: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        # Auxiliary loss of the last forward (e.g. a price on writing); None when unused.
        self.aux_loss: torch.Tensor | None = None
        # Scalars of the last training forward worth logging (e.g. a write fraction).
        self.stats: dict[str, float] = {}

    @classmethod
    def options_from(cls, data: dict[str, Any], d_model: int):
        names = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(
                f"unknown options {sorted(unknown)} for mixer {cls.__name__}; known: {sorted(names)}"
            )
        options = cls.Options(**data)
        cls.check_options(options, d_model)
        return options

    @classmethod
    def check_options(cls, options, d_model: int) -> None:  # pragma: no cover - overridden
        """Raise ConfigError for impossible values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def forward_recurrent(self, x: torch.Tensor) -> torch.Tensor:
        """Reference: the recurrent form looped over time (plain, for tests; differentiable)."""
        state = self.init_state(x.shape[0], x.device, x.dtype)
        outputs = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            outputs.append(y)
        return torch.stack(outputs, dim=1)

    def state_floats(self, context: int) -> int:
        """Numbers in the recurrent state of one sequence after ``context`` tokens.

        Constant-state mixers count their ``init_state`` tensors; mixers whose state grows
        (``growing_state``) override this, and a test checks the formula against the tensors.
        """
        return count_floats(self.init_state(1))
