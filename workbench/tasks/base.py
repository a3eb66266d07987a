"""What every task provides: its I/O contract, a seeded batch stream and an evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from workbench.model import IGNORE, Model, TaskIO


@dataclass
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor | None = None  # True where inputs are real (pooling heads)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The training stream is a pure function of (seed, step), so resume replays it exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class Task:
    name: str = ""
    io: TaskIO
    metric: str = ""  # primary metric in evaluate()'s output (higher is better)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        raise NotImplementedError

    def evaluate(self, model: Model, final: bool = False) -> dict[str, float]:
        """Held-out metrics. ``final`` adds the slower extras (e.g. length generalization)."""
        raise NotImplementedError

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raise ConfigError for option values this task cannot use (``options``: every option, the
        defaults filled in, each already of its default's kind). Runs before any data is read."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep to use the model later (e.g. a vocabulary, a hash of the data)."""
        return {}

    def check_state(self, saved: dict[str, Any], source: str = "the checkpoint") -> None:
        """Refuse (``DataError``) when this task, built from today's data, is not the one ``saved``
        (a checkpoint's ``task_state``) was trained on: a model must never meet data it was not made for."""
        from workbench.data import DataError

        current = self.state()
        changed = sorted(k for k in saved if saved[k] != current.get(k))
        if changed:
            raise DataError(f"the task's data differ from what {source} was trained on ({', '.join(changed)} "
                            f"changed); use the data it was trained on")


@torch.no_grad()
def lm_accuracy(model: Model, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 100):
    """Teacher-forced argmax accuracy: (correct tokens, counted tokens, sequences all correct).

    For exact match this equals greedy decoding: if every teacher-forced argmax is right,
    greedy decoding walks the same path.
    """
    device = next(model.parameters()).device
    correct = counted = exact = 0
    for start in range(0, len(inputs), batch_size):
        x = inputs[start : start + batch_size].to(device)
        y = targets[start : start + batch_size].to(device)
        valid = y != IGNORE
        hit = (model.predict_labelled(x, y) == y) & valid
        correct += int(hit.sum())
        counted += int(valid.sum())
        exact += int((hit | ~valid).all(dim=1).sum())
    return correct, counted, exact
