"""System 1 on kinship stories, and the facts System 2 reads out of it.

* ``train_reader``: a ``workbench.model`` sequence model (the transformer of the symbolic-free
  baseline; System 1, the inverted mixer, through ``train_system1``) trained by backprop as a language model on the story
  tokens, the answer being the token after ``=``. Its answer there, with its softmax confidence, is
  "System 1 alone".
* ``FactExtractor``: a small network on System 1's hidden states over each fact and its closing ``.``,
  predicting the fact's head entity, relation and tail entity, trained by backprop jointly with System 1
  (``train_system1``: its loss flows into System 1 too, so the facts stay readable while System 1
  learns to answer). Its most likely triple and the product of the three probabilities are what
  System 2 receives: System 2 never parses tokens itself (the hand parser, ``clutrr.oracle_parse``, remains as the oracle row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workbench.config import ModelConfig
from workbench.model import IGNORE, Model, TaskIO, count_parameters
from workbench.symbolic.clutrr import NAMED, NAMES, TOKEN_ID, VOCAB, Story
from workbench.symbolic.induction import ParsedFact

NAMED_IDS = torch.tensor([TOKEN_ID[r] for r in NAMED])
NAME_IDS = torch.tensor([TOKEN_ID[n] for n in NAMES])
PERIOD = TOKEN_ID["."]


def batch_tokens(stories: list[Story]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and next-token targets (padding carries no loss)."""
    ids = [s.ids() for s in stories]
    width = max(len(x) for x in ids)
    inputs = torch.zeros(len(ids), width, dtype=torch.long)
    targets = torch.full((len(ids), width), IGNORE, dtype=torch.long)
    for i, x in enumerate(ids):
        inputs[i, :len(x)] = torch.tensor(x)
        targets[i, :len(x) - 1] = torch.tensor(x[1:])
        targets[i, len(x) - 1] = TOKEN_ID[stories[i].answer]
    return inputs, targets


def train_reader(stories: list[Story], mixer: str, d_model: int, n_layers: int, steps: int, batch_size: int,
                 seed: int, progress=None) -> Model:
    """A sequence model trained on the story tokens (next token; the answer after ``=``)."""
    model, _ = _train(stories, mixer, d_model, n_layers, steps, batch_size, seed, 0.0, progress,
                      {"n_heads": 4} if mixer == "transformer" else {})
    return model


def train_system1(stories: list[Story], d_model: int, steps: int, batch_size: int, seed: int, facts: float = 1.0,
                  n_layers: int = 1, options: dict | None = None, progress=None) -> tuple[Model, FactExtractor]:
    """System 1 (the inverted mixer) trained as ``train_reader`` does, with a ``FactExtractor``
    trained beside it on the same batches: the extractor's loss, times ``facts``, flows back into System 1
    too (multi-task), so that training on answers does not wash the facts out of its hidden states."""
    if not facts > 0:
        raise ValueError(f"facts (the fact loss's weight) must be > 0, got {facts}")
    model, extractor = _train(stories, "inverted", d_model, n_layers, steps, batch_size, seed, facts, progress,
                              options)
    assert extractor is not None
    return model, extractor


def _train(stories: list[Story], mixer: str, d_model: int, n_layers: int, steps: int, batch_size: int, seed: int,
           facts: float, progress, options: dict | None) -> tuple[Model, FactExtractor | None]:
    torch.manual_seed(seed)
    model = Model(ModelConfig(mixer=mixer, d_model=d_model, n_layers=n_layers, mixer_options=dict(options or {})),
                  TaskIO("tokens", "lm", vocab_size=len(VOCAB)))
    extractor = FactExtractor(d_model) if facts > 0 else None
    trained = list(model.parameters()) + (list(extractor.parameters()) if extractor is not None else [])
    optimizer = torch.optim.AdamW(trained, lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps, pct_start=0.25)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        batch = [stories[i] for i in rng.integers(len(stories), size=batch_size)]
        inputs, targets = batch_tokens(batch)
        hidden = model.features(inputs)
        labelled = targets != IGNORE
        last = torch.tensor([len(s.ids()) - 1 for s in batch])
        answer_logits = model.head(hidden[torch.arange(len(batch)), last])
        # the whole story as a language model, and the answer once more: one token among ~40 would
        # otherwise weigh too little for System 1 to become competent on short chains
        loss = nn.functional.cross_entropy(model.head(hidden[labelled]), targets[labelled]) + \
            nn.functional.cross_entropy(answer_logits, targets[torch.arange(len(batch)), last])
        if extractor is not None:
            states, labels = fact_states(hidden, inputs, batch)
            loss = loss + facts * sum(nn.functional.cross_entropy(o, labels[:, j])
                                      for j, o in enumerate(extractor(states)))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress.update(1)
    return model.eval(), (extractor.eval() if extractor is not None else None)


@torch.no_grad()
def answer(model: Model, stories: list[Story], chunk: int = 64) -> tuple[list[str], list[float]]:
    """The model's answer after ``=`` (among the relation names) and its softmax confidence."""
    answers, confidences = [], []
    for start in range(0, len(stories), chunk):
        part = stories[start:start + chunk]
        inputs, _ = batch_tokens(part)
        last = torch.tensor([len(s.ids()) - 1 for s in part])
        hidden = model.features(inputs)[torch.arange(len(part)), last]
        probs = torch.softmax(model.head(hidden)[:, NAMED_IDS], -1)
        best = probs.max(-1)
        answers += [NAMED[i] for i in best.indices.tolist()]
        confidences += best.values.tolist()
    return answers, confidences


class FactExtractor(nn.Module):
    """Reads (head entity, relation, tail entity) off System 1's hidden states over a fact's span: the
    closing period and the three positions before it (a fact is three tokens and a period)."""

    def __init__(self, d_model: int, hidden: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4 * d_model, hidden), nn.GELU())
        self.head_entity = nn.Linear(hidden, len(NAMES))
        self.relation = nn.Linear(hidden, len(NAMED))
        self.tail_entity = nn.Linear(hidden, len(NAMES))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.body(h)
        return self.head_entity(z), self.relation(z), self.tail_entity(z)


@dataclass
class Reading:
    states: torch.Tensor  # (n_facts, 4 d_model): System 1's hidden states over each fact and its period
    story: list[int]  # which story each row belongs to
    labels: torch.Tensor  # (n_facts, 3): true head, relation, tail indices (training only)


def fact_states(hidden: torch.Tensor, inputs: torch.Tensor, stories: list[Story]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states over every fact's span (``(n_facts, 4 d_model)``, story by story) and the facts' true
    (head, relation, tail) indices."""
    states, labels = [], []
    for i, story in enumerate(stories):
        periods = (inputs[i] == PERIOD).nonzero().flatten()
        span = torch.stack([periods - 3, periods - 2, periods - 1, periods], -1)
        states.append(hidden[i, span].flatten(1))
        labels += [(NAMES.index(a), NAMED.index(r), NAMES.index(b)) for a, r, b in story.facts]
    return torch.cat(states), torch.tensor(labels)


@torch.no_grad()
def read_states(model: Model, stories: list[Story], chunk: int = 64) -> Reading:
    states, owners, labels = [], [], []
    for start in range(0, len(stories), chunk):
        part = stories[start:start + chunk]
        inputs, _ = batch_tokens(part)
        rows, truth = fact_states(model.features(inputs), inputs, part)
        states.append(rows)
        labels.append(truth)
        owners += [start + i for i, story in enumerate(part) for _ in story.facts]
    return Reading(torch.cat(states), owners, torch.cat(labels))


@torch.no_grad()
def extract(model: Model, extractor: FactExtractor, stories: list[Story]) -> list[list[ParsedFact]]:
    """The facts System 2 receives for each story: most likely triple per period, with its confidence."""
    reading = read_states(model, stories)
    out: list[list[ParsedFact]] = [[] for _ in stories]
    if len(reading.story) == 0:
        return out
    probs = [torch.softmax(o, -1) for o in extractor(reading.states)]
    best = [p.max(-1) for p in probs]
    for row, owner in enumerate(reading.story):
        a, r, b = (int(x.indices[row]) for x in best)
        confidence = float(best[0].values[row] * best[1].values[row] * best[2].values[row])
        out[owner].append((NAMES[a], NAMED[r], NAMES[b], confidence))
    return out


def parameters(*modules: nn.Module) -> int:
    return sum(count_parameters(m) for m in modules)
