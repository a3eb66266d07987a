"""The mixer interface and its options handling."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from workbench.config import ConfigError


class Mixer(nn.Module):
    """Base class: a causal sequence mixer with a parallel and a recurrent form."""

    Options: ClassVar[type]  # a dataclass of this mixer's hyper-parameters

    def __init__(self) -> None:
        super().__init__()
        # Auxiliary loss of the last forward (e.g. a price on writing); None when unused.
        self.aux_loss: torch.Tensor | None = None

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
