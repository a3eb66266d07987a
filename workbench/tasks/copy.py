"""Copy: ``BOS x1..xL SEP`` then the model must emit ``x1..xL EOS``; loss only on the answer."""

from __future__ import annotations

from typing import Any

import torch

from workbench.config import MAX_SEED, check_int
from workbench.model import IGNORE, Model, TaskIO
from workbench.tasks.base import Batch, Task, lm_accuracy

ALPHABET = 16
PAD, BOS, SEP, EOS = ALPHABET, ALPHABET + 1, ALPHABET + 2, ALPHABET + 3
VOCAB = ALPHABET + 4


def make_copy_examples(lengths: list[int], generator: torch.Generator) -> Batch:
    """Right-padded inputs/targets for sequences of the given lengths."""
    width = 2 * max(lengths) + 2
    inputs = torch.full((len(lengths), width), PAD, dtype=torch.long)
    targets = torch.full((len(lengths), width), IGNORE, dtype=torch.long)
    for row, length in enumerate(lengths):
        symbols = torch.randint(0, ALPHABET, (length,), generator=generator)
        sequence = torch.cat([torch.tensor([BOS]), symbols, torch.tensor([SEP]), symbols, torch.tensor([EOS])])
        inputs[row, : 2 * length + 2] = sequence[:-1]
        # Predictions from the SEP position on are the answer: x1..xL EOS.
        targets[row, length + 1 : 2 * length + 2] = sequence[length + 2 :]
    return Batch(inputs, targets)


class CopyTask(Task):
    name = "copy"
    metric = "exact_match"
    io = TaskIO(input_kind="tokens", head="lm", vocab_size=VOCAB)

    def __init__(
        self,
        max_len: int = 64,
        n_eval: int = 1000,
        long_lengths: tuple[int, ...] = (128, 256),
        n_eval_long: int = 1000,
        eval_seed: int = 12345,
    ) -> None:
        self.check_options({"max_len": max_len, "n_eval": n_eval, "long_lengths": long_lengths,
                            "n_eval_long": n_eval_long, "eval_seed": eval_seed})
        self.max_len, self.long_lengths, self.n_eval_long = max_len, tuple(long_lengths), n_eval_long
        self.eval_seed = eval_seed
        gen = torch.Generator().manual_seed(eval_seed)
        lengths = torch.randint(1, max_len + 1, (n_eval,), generator=gen).tolist()
        self.eval_batch = make_copy_examples(lengths, gen)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        for name in ("max_len", "n_eval", "n_eval_long"):
            check_int(f"copy.{name}", options[name], minimum=1)
        check_int("copy.eval_seed", options["eval_seed"], minimum=0, maximum=MAX_SEED)
        for length in options["long_lengths"] or ():
            check_int("copy.long_lengths[]", length, minimum=1)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        lengths = torch.randint(1, self.max_len + 1, (batch_size,), generator=generator).tolist()
        return make_copy_examples(lengths, generator)

    def evaluate(self, model: Model, final: bool = False) -> dict[str, float]:
        correct, counted, exact = lm_accuracy(model, self.eval_batch.inputs, self.eval_batch.targets)
        metrics = {"token_accuracy": correct / counted, "exact_match": exact / len(self.eval_batch.inputs)}
        if final:
            for length in self.long_lengths:
                gen = torch.Generator().manual_seed(self.eval_seed + length)
                batch = make_copy_examples([length] * self.n_eval_long, gen)
                correct, counted, exact = lm_accuracy(model, batch.inputs, batch.targets, batch_size=50)
                metrics[f"token_accuracy@L{length}"] = correct / counted
                metrics[f"exact_match@L{length}"] = exact / self.n_eval_long
        return metrics
