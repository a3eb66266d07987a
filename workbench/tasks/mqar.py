"""Multi-query associative recall with Zoology's generator semantics.

Keys come from the first half of the vocabulary, values from the second, both unique
within an example. All key-value pairs come first (``k1 v1 k2 v2 ...``); then each
key is queried once, at gaps drawn from a power law (near queries are likelier); the
label at a query is its paired value, every other position carries no loss. Filler
positions hold random tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.config import MAX_SEED, ConfigError, check_int
from workbench.model import IGNORE, Model, TaskIO
from workbench.tasks.base import Batch, Task, lm_accuracy


def make_mqar_examples(
    n: int, seq_len: int, kv_pairs: int, vocab_size: int, rng: np.random.Generator, power_a: float = 0.01
) -> Batch:
    context = 2 * kv_pairs
    half = vocab_size // 2
    if seq_len < 4 * kv_pairs:
        raise ValueError(f"seq_len={seq_len} is too short for {kv_pairs} pairs and their queries")
    if kv_pairs >= half:
        raise ValueError(f"vocab_size={vocab_size} has too few keys for {kv_pairs} pairs")
    keys = np.stack([rng.choice(np.arange(1, half), kv_pairs, replace=False) for _ in range(n)])
    values = np.stack([rng.choice(np.arange(half, vocab_size), kv_pairs, replace=False) for _ in range(n)])
    kvs = np.empty((n, context), dtype=np.int64)
    kvs[:, 0::2], kvs[:, 1::2] = keys, values

    space = (seq_len - context) // 2
    p = power_a * np.arange(1, space + 1) ** (power_a - 1)
    p = p / p.sum()
    gaps = np.stack([rng.choice(space, kv_pairs, replace=False, p=p) for _ in range(n)])

    queries = np.zeros((n, seq_len - context + 1), dtype=np.int64)
    labels = np.full((n, seq_len - context + 1), IGNORE, dtype=np.int64)
    rows = np.arange(n)[:, None]
    queries[rows, gaps * 2] = keys
    labels[rows, gaps * 2 + 1] = values

    examples = np.concatenate([kvs, queries], axis=1)
    labels = np.concatenate([np.full((n, context), IGNORE, dtype=np.int64), labels], axis=1)
    inputs, targets = examples[:, :-1], labels[:, 1:]
    filler = inputs == 0
    inputs[filler] = rng.integers(0, vocab_size, size=int(filler.sum()))
    return Batch(torch.from_numpy(inputs.copy()), torch.from_numpy(targets.copy()))


class MQARTask(Task):
    name = "mqar"
    metric = "accuracy"

    def __init__(
        self,
        seq_len: int = 64,
        kv_pairs: int = 4,
        vocab_size: int = 512,
        n_eval: int = 1000,
        eval_seed: int = 777,
        long_configs: list[tuple[int, int]] | tuple = ((1024, 64),),
        n_eval_long: int | None = None,
    ) -> None:
        n_eval_long = n_eval if n_eval_long is None else n_eval_long
        self.check_options({"seq_len": seq_len, "kv_pairs": kv_pairs, "vocab_size": vocab_size, "n_eval": n_eval,
                            "eval_seed": eval_seed, "long_configs": long_configs, "n_eval_long": n_eval_long})
        self.long_configs = [(int(s), int(k)) for s, k in (long_configs or [])]
        self.seq_len, self.kv_pairs, self.vocab_size = seq_len, kv_pairs, vocab_size
        self.io = TaskIO(input_kind="tokens", head="lm", vocab_size=vocab_size)
        self.eval_seed, self.n_eval, self.n_eval_long = eval_seed, n_eval, n_eval_long
        rng = np.random.default_rng([eval_seed, seq_len, kv_pairs])
        try:
            self.eval_batch = make_mqar_examples(n_eval, seq_len, kv_pairs, vocab_size, rng)
            for s, k in self.long_configs:  # fail now, not after hours of training
                make_mqar_examples(1, s, k, vocab_size, np.random.default_rng(0))
        except ValueError as exc:
            raise ConfigError(f"mqar: {exc}") from None

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        for name in ("seq_len", "kv_pairs", "vocab_size", "n_eval"):
            check_int(f"mqar.{name}", options[name], minimum=1)
        if options.get("n_eval_long") is not None:
            check_int("mqar.n_eval_long", options["n_eval_long"], minimum=1)
        check_int("mqar.eval_seed", options["eval_seed"], minimum=0, maximum=MAX_SEED)
        long_configs = options["long_configs"] or []
        if not isinstance(long_configs, (list, tuple)) or not all(
                isinstance(c, (list, tuple)) and len(c) == 2 for c in long_configs):
            raise ConfigError(f"mqar.long_configs must be a list of [seq_len, kv_pairs], got {long_configs!r}")
        vocab = options["vocab_size"]
        for where, (seq_len, kv_pairs) in [("", (options["seq_len"], options["kv_pairs"])),
                                           *((f"long_configs {list(c)}: ", c) for c in long_configs)]:
            check_int(f"mqar.{where}seq_len", seq_len, minimum=1)
            check_int(f"mqar.{where}kv_pairs", kv_pairs, minimum=1)
            if seq_len < 4 * kv_pairs:
                raise ConfigError(f"mqar: {where}seq_len={seq_len} is too short for {kv_pairs} pairs and their "
                                  f"queries (needs >= {4 * kv_pairs})")
            if kv_pairs >= vocab // 2:
                raise ConfigError(f"mqar: {where}vocab_size={vocab} has too few keys for {kv_pairs} pairs "
                                  f"(needs > {2 * kv_pairs + 1})")

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        return make_mqar_examples(batch_size, self.seq_len, self.kv_pairs, self.vocab_size, rng)

    def evaluate(self, model: Model, final: bool = False) -> dict[str, float]:
        correct, counted, _ = lm_accuracy(model, self.eval_batch.inputs, self.eval_batch.targets)
        metrics = {"accuracy": correct / counted}
        for seq_len, kv_pairs in self.long_configs if final else []:
            rng = np.random.default_rng([self.eval_seed, seq_len, kv_pairs])
            batch = make_mqar_examples(self.n_eval_long, seq_len, kv_pairs, self.vocab_size, rng)
            correct, counted, _ = lm_accuracy(model, batch.inputs, batch.targets, batch_size=max(1, 25_000 // seq_len))
            metrics[f"accuracy@{seq_len}x{kv_pairs}"] = correct / counted
        return metrics
