"""Real-data tasks for the non-LM heads, from datasets scikit-learn ships offline.

- ``digits`` (vision): 8x8 handwritten digits as a sequence of 16 2x2 patches -> 10 classes.
- ``diabetes`` (regression): 10 clinical features, one token per feature -> disease progression.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.config import MAX_SEED, check_int
from workbench.model import Model, TaskIO
from workbench.tasks.base import Batch, Task


def _split(n: int, seed: int, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return order[n_test:], order[:n_test]


class _ArrayTask(Task):
    """Fixed arrays with a seeded train/test split; batches sample the train part."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def _setup(self, inputs: np.ndarray, targets: np.ndarray, split_seed: int) -> None:
        train, test = _split(len(inputs), split_seed)
        self.train_inputs = torch.tensor(inputs[train], dtype=torch.float32)
        self.test_inputs = torch.tensor(inputs[test], dtype=torch.float32)
        dtype = torch.long if self.io.head == "classify" else torch.float32
        self.train_targets = torch.tensor(targets[train], dtype=dtype)
        self.test_targets = torch.tensor(targets[test], dtype=dtype)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        check_int(f"{cls.name}.split_seed", options["split_seed"], minimum=0, maximum=MAX_SEED)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        rows = torch.randint(0, len(self.train_inputs), (batch_size,), generator=generator)
        return Batch(self.train_inputs[rows], self.train_targets[rows])


class DigitsTask(_ArrayTask):
    name = "digits"
    metric = "accuracy"
    io = TaskIO(input_kind="vectors", head="classify", input_dim=4, n_outputs=10)

    def __init__(self, split_seed: int = 0) -> None:
        from sklearn.datasets import load_digits

        self.check_options({"split_seed": split_seed})
        images = load_digits().images / 16.0  # (n, 8, 8) in [0, 1]
        patches = images.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 16, 4)
        self._setup(patches, load_digits().target, split_seed)

    @torch.no_grad()
    def evaluate(self, model: Model, final: bool = False) -> dict[str, float]:
        device = next(model.parameters()).device
        preds = model(self.test_inputs.to(device)).argmax(-1).cpu()
        return {"accuracy": float((preds == self.test_targets).float().mean())}


class DiabetesTask(_ArrayTask):
    name = "diabetes"
    metric = "r2"
    io = TaskIO(input_kind="vectors", head="regress", input_dim=11, n_outputs=1)

    def __init__(self, split_seed: int = 0) -> None:
        from sklearn.datasets import load_diabetes

        self.check_options({"split_seed": split_seed})
        data = load_diabetes()
        features = (data.data - data.data.mean(0)) / data.data.std(0)
        target = (data.target - data.target.mean()) / data.target.std()
        n, f = features.shape
        # One token per feature: [value, one-hot of which feature it is].
        tokens = np.concatenate([features[..., None], np.broadcast_to(np.eye(f), (n, f, f))], axis=-1)
        self._setup(tokens, target[:, None], split_seed)

    @torch.no_grad()
    def evaluate(self, model: Model, final: bool = False) -> dict[str, float]:
        device = next(model.parameters()).device
        preds = model(self.test_inputs.to(device)).cpu()
        mse = float(((preds - self.test_targets) ** 2).mean())
        variance = float(((self.test_targets - self.test_targets.mean()) ** 2).mean())
        return {"mse": mse, "r2": 1.0 - mse / variance}
