"""Character language modelling on any UTF-8 text (tiny-shakespeare by default).

First 90% of characters train, last 10% validate. Validation bits-per-character are
measured over the whole validation split in non-overlapping windows of ``context``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from workbench.config import ConfigError, check_int
from workbench.data import DataError, read_corpus, shakespeare_path
from workbench.model import IGNORE, Model, TaskIO
from workbench.tasks.base import Batch, Task


class CharVocab:
    def __init__(self, chars: str) -> None:
        if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
            raise ValueError("a vocabulary is a non-empty string of distinct characters")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted({c for c in text if c not in self.index})
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise ValueError(f"text has {len(unknown)} character(s) outside the model's vocabulary: {shown}")
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


class CharLMTask(Task):
    name = "charlm"
    metric = "neg_bpc"  # higher is better everywhere; bpc is reported alongside

    def __init__(
        self, path: str | None = None, context: int = 256, max_eval_windows: int | None = None
    ) -> None:
        self.check_options({"path": path, "context": context, "max_eval_windows": max_eval_windows})
        self.source = Path(path) if path else shakespeare_path()
        text, self.data_sha256 = read_corpus(self.source)
        if len(text) < 2 * (context + 1) * 10:
            raise DataError(f"the text {self.source} has {len(text)} characters; char-LM with context {context} needs "
                            f"at least {20 * (context + 1)}: use a longer text or a smaller task.options.context")
        self.vocab = CharVocab("".join(sorted(set(text))))
        data = self.vocab.encode(text)
        split = int(0.9 * len(data))
        self.train_data, self.val_data = data[:split], data[split:]
        self.context, self.max_eval_windows = context, max_eval_windows
        self.io = TaskIO(input_kind="tokens", head="lm", vocab_size=len(self.vocab.chars))

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        path = options["path"]
        if path is not None and (not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path)):
            raise ConfigError(f"charlm.path must be the path of a UTF-8 text file, got {path!r}")
        check_int("charlm.context", options["context"], minimum=1)
        if options["max_eval_windows"] is not None:
            check_int("charlm.max_eval_windows", options["max_eval_windows"], minimum=1)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        starts = torch.randint(0, len(self.train_data) - self.context - 1, (batch_size,), generator=generator)
        windows = torch.stack([self.train_data[s : s + self.context + 1] for s in starts.tolist()])
        return Batch(windows[:, :-1], windows[:, 1:])

    def val_windows(self) -> Batch:
        """Non-overlapping windows covering the whole validation split (last one padded)."""
        n_windows = math.ceil((len(self.val_data) - 1) / self.context)
        if self.max_eval_windows:
            n_windows = min(n_windows, self.max_eval_windows)
        inputs = torch.zeros(n_windows, self.context, dtype=torch.long)
        targets = torch.full((n_windows, self.context), IGNORE, dtype=torch.long)
        for w in range(n_windows):
            chunk = self.val_data[w * self.context : (w + 1) * self.context + 1]
            inputs[w, : len(chunk) - 1] = chunk[:-1]
            targets[w, : len(chunk) - 1] = chunk[1:]
        return Batch(inputs, targets)

    @torch.no_grad()
    def evaluate(self, model: Model, final: bool = False) -> dict[str, float]:
        batch = self.val_windows()
        device = next(model.parameters()).device
        total_nats, total_chars = 0.0, 0
        for start in range(0, len(batch.inputs), 64):
            x = batch.inputs[start : start + 64].to(device)
            y = batch.targets[start : start + 64].to(device)
            logits = model(x).float()
            total_nats += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum"))
            total_chars += int((y != IGNORE).sum())
        bpc = total_nats / total_chars / math.log(2)
        return {"bpc": bpc, "neg_bpc": -bpc, "val_chars": float(total_chars)}

    def state(self) -> dict[str, Any]:
        """The vocabulary and the sha256 of the text it came from: a checkpoint carries both, so
        ``generate`` needs no data and ``eval``/``--resume`` refuse a text that changed."""
        return {"chars": self.vocab.chars, "data_sha256": self.data_sha256}

    def check_state(self, saved: dict[str, Any], source: str = "the checkpoint") -> None:
        saved_hash = saved.get("data_sha256")
        if saved_hash is not None and saved_hash != self.data_sha256:
            raise DataError(f"data file {self.source} is not the text {source} was trained on (sha256 "
                            f"{str(saved_hash)[:12]}... then, {self.data_sha256[:12]}... now): its vocabulary and "
                            f"splits would differ; use the original file (--data PATH)")
        if saved.get("chars") != self.vocab.chars:
            raise DataError(f"data file {self.source} does not give the vocabulary {source} was trained on "
                            f"({len(str(saved.get('chars')))} characters then, {len(self.vocab.chars)} now); "
                            f"use the original file (--data PATH)")
