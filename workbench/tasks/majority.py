"""Majority: classify a token sequence by its most frequent symbol (classify head, masked pooling).

Each example is a sequence of ``length`` symbols drawn uniformly and independently from
``0 .. alphabet-1``, with ``length`` uniform in ``[min_len, max_len]``. Sequences are
right-padded with ``PAD = alphabet`` to the longest one in the batch; the batch's ``mask``
is True on real symbols, so the classify head pools over real positions only.

Label: the symbol that occurs most often. **Ties go to the smallest symbol id** among the
tied ones (the rule of ``numpy.argmax`` on the count vector). The rule depends on counts
only, never on order, so the label is a function of the sequence's histogram: a pooled
linear read-out of the symbol counts can express it exactly (``logit_c = count_c - eps * c``).
That makes the task a clean check of the token-sequence classify path (embedding ->
backbone -> masked mean -> linear) rather than a test of long-range mixing.

Deterministic: training batches are a pure function of the generator passed in, the
held-out set a pure function of ``eval_seed``.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.config import MAX_SEED, ConfigError, check_int
from workbench.model import Model, TaskIO
from workbench.tasks.base import Batch, Task


def majority_labels(sequences: torch.Tensor, mask: torch.Tensor, alphabet: int) -> torch.Tensor:
    """Most frequent symbol per row over positions where ``mask`` is True; ties -> smallest id."""
    counts = torch.zeros(len(sequences), alphabet + 1, dtype=torch.long)
    counts.scatter_add_(1, sequences, mask.long())
    counts = counts[:, :alphabet]
    # First index of the maximum (torch.argmax does not promise which tied index it returns).
    best = counts.max(dim=1, keepdim=True).values
    ids = torch.arange(alphabet).expand_as(counts)
    return torch.where(counts == best, ids, alphabet).min(dim=1).values


def make_majority_examples(
    n: int, min_len: int, max_len: int, alphabet: int, generator: torch.Generator
) -> Batch:
    """``n`` right-padded examples with their labels and padding mask."""
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=generator)
    width = int(lengths.max())
    symbols = torch.randint(0, alphabet, (n, width), generator=generator)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    inputs = torch.where(mask, symbols, alphabet)  # PAD = alphabet
    return Batch(inputs, majority_labels(inputs, mask, alphabet), mask)


class MajorityTask(Task):
    name = "majority"
    metric = "accuracy"

    def __init__(
        self,
        alphabet: int = 8,
        min_len: int = 8,
        max_len: int = 32,
        n_eval: int = 1000,
        eval_seed: int = 4242,
    ) -> None:
        self.check_options({"alphabet": alphabet, "min_len": min_len, "max_len": max_len, "n_eval": n_eval,
                            "eval_seed": eval_seed})
        self.alphabet, self.min_len, self.max_len = alphabet, min_len, max_len
        self.pad = alphabet
        self.io = TaskIO(input_kind="tokens", head="classify", vocab_size=alphabet + 1, n_outputs=alphabet)
        self.eval_batch = make_majority_examples(n_eval, min_len, max_len, alphabet, torch.Generator().manual_seed(eval_seed))

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        check_int("majority.alphabet", options["alphabet"], minimum=2)
        for name in ("min_len", "max_len", "n_eval"):
            check_int(f"majority.{name}", options[name], minimum=1)
        check_int("majority.eval_seed", options["eval_seed"], minimum=0, maximum=MAX_SEED)
        if options["min_len"] > options["max_len"]:
            raise ConfigError(f"majority needs min_len <= max_len, got {options['min_len']}, {options['max_len']}")

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        return make_majority_examples(batch_size, self.min_len, self.max_len, self.alphabet, generator)

    @torch.no_grad()
    def predict(self, model: Model, batch: Batch, batch_size: int = 250) -> torch.Tensor:
        device = next(model.parameters()).device
        preds = []
        for start in range(0, len(batch.inputs), batch_size):
            x = batch.inputs[start : start + batch_size].to(device)
            m = batch.mask[start : start + batch_size].to(device)
            preds.append(model(x, m).argmax(-1).cpu())
        return torch.cat(preds)

    def evaluate(self, model: Model, final: bool = False) -> dict[str, float]:
        batch = self.eval_batch
        hit = self.predict(model, batch) == batch.targets
        # Accuracy on examples whose top count is shared (decided by the tie rule) vs not.
        counts = torch.zeros(len(batch.inputs), self.alphabet + 1, dtype=torch.long)
        counts.scatter_add_(1, batch.inputs, batch.mask.long())
        top = counts[:, : self.alphabet].topk(2, dim=1).values
        tied = top[:, 0] == top[:, 1]
        metrics = {"accuracy": float(hit.float().mean()), "tie_fraction": float(tied.float().mean())}
        if tied.any():
            metrics["accuracy_tied"] = float(hit[tied].float().mean())
        if (~tied).any():
            metrics["accuracy_untied"] = float(hit[~tied].float().mean())
        return metrics
