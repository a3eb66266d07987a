"""Grounded concepts: discrete symbols System 2 reads off System 1.

NS-CL grounds each concept in perception (Mao et al., ICLR 2019); VCML learns concept
embeddings whose geometry supports metaconcepts (Han et al., NeurIPS 2019). Here System 1 is
the sequence model, and a concept is a discrete code for "how System 1 represents this token":

* ``unit_inventory`` - which unit (or pool of units) of an inverted mixer absorbed each token,
  read at the mixer's ``hook_unit`` point (a structural code: with one pool the ring pointer
  makes it mostly positional; with several pools the routing is by content);
* ``Codebook`` / ``codebook_inventory`` - k-means over System 1 hidden states at a hook point
  (default: the final hidden state), one concept per centroid (a VQ code).

Either gives a ``ConceptInventory``: concept -> the tokens it took, labelled by its most
typical tokens. ``grounded_facts`` turns shared concepts into ``alike(a, b)`` facts, which the
rule learner may use as premises (e.g. ``alike ∘ is-a = is-a``: a token System 1 treats like a
colour word is a colour); whether such a rule is kept is, as always, up to reward.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np
import torch

from workbench.hooks import capture
from workbench.model import Model
from workbench.symbolic.store import ASK, SEP

ALIKE = "alike"


class ConceptInventory:
    """Concept id -> Counter of the tokens it was given; readable labels and purity."""

    def __init__(self, name: str = "concepts") -> None:
        self.name = name
        self.members: dict[int, Counter] = defaultdict(Counter)

    def add(self, concept: int, token: str, count: int = 1) -> None:
        self.members[int(concept)][token] += count

    def label(self, concept: int, k: int = 3) -> str:
        return "/".join(t for t, _ in self.members[concept].most_common(k))

    def concept_of(self, token: str) -> int | None:
        """The concept that took the token most often."""
        best = [(c[token], concept) for concept, c in self.members.items() if token in c]
        return max(best)[1] if best else None

    def tokens(self) -> set[str]:
        return {t for c in self.members.values() for t in c}

    def purity(self, truth: dict[str, str]) -> float:
        """Share of the truth-labelled tokens whose concept's majority class is their own class."""
        groups: dict[int, list[str]] = defaultdict(list)
        for token in truth:
            concept = self.concept_of(token)
            if concept is not None:
                groups[concept].append(token)
        hits = sum(Counter(truth[t] for t in tokens).most_common(1)[0][1] for tokens in groups.values())
        return hits / max(sum(len(t) for t in groups.values()), 1)

    def describe(self, k: int = 4) -> str:
        rows = sorted(self.members, key=lambda c: -sum(self.members[c].values()))
        return "\n".join(f"{self.name} {c:>3d}: {self.label(c, k)}  ({sum(self.members[c].values())} tokens)" for c in rows)

    def __str__(self) -> str:
        return self.describe()


def _batches(task, episodes, batch_size: int = 32):
    for start in range(0, len(episodes), batch_size):
        chunk = episodes[start : start + batch_size]
        yield chunk, task.encode(chunk)


def _context_positions(episode) -> list[int]:
    """Positions of the context's content tokens (not separators, not queries)."""
    end = episode.queries[0][0]
    return [i for i in range(end) if episode.tokens[i] not in (SEP, ASK)]


@torch.no_grad()
def unit_inventory(model: Model, task, episodes, by_pool: bool = False) -> ConceptInventory:
    """Concepts = inverted-mixer units (layer, unit), or their pools, that absorbed each token."""
    inventory = ConceptInventory("pool" if by_pool else "unit")
    model.eval()
    for chunk, batch in _batches(task, episodes):
        with capture(model, ["hook_unit"]) as cache:
            model(batch.inputs)
        if not cache:
            raise ValueError("the model has no inverted mixer (no hook_unit point)")
        for name, units in cache.items():
            layer = int(name.split(".")[1])  # blocks.<layer>.mixer.hook_unit
            mixer = model.blocks[layer].mixer
            for row, episode in enumerate(chunk):
                for i in _context_positions(episode):
                    unit = int(units[row, i])
                    if unit >= 0:
                        code = unit // mixer.pool_size if by_pool else unit
                        inventory.add(layer * 100_000 + code, episode.tokens[i])
    return inventory


@torch.no_grad()
def hidden_states(model: Model, task, episodes, hook: str = "hook_final") -> tuple[np.ndarray, list[str]]:
    """System 1 hidden states at every context token (rows) and the tokens they belong to."""
    model.eval()
    states, tokens = [], []
    for chunk, batch in _batches(task, episodes):
        with capture(model, [hook]) as cache:
            model(batch.inputs)
        h = cache[next(k for k in cache if k.endswith(hook))]
        for row, episode in enumerate(chunk):
            for i in _context_positions(episode):
                states.append(h[row, i].float().numpy())
                tokens.append(episode.tokens[i])
    return np.stack(states), tokens


class Codebook:
    """k-means (k-means++ start, Lloyd steps) over hidden states: a VQ code per state."""

    def __init__(self, k: int, iterations: int = 25, seed: int = 0) -> None:
        self.k, self.iterations, self.seed = k, iterations, seed
        self.centroids: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> Codebook:
        rng = np.random.default_rng(self.seed)
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)
        centroids = [x[rng.integers(len(x))]]
        for _ in range(1, self.k):  # k-means++: far points are likelier seeds
            d = np.min([((x - c) ** 2).sum(1) for c in centroids], axis=0)
            centroids.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
        c = np.stack(centroids)
        for _ in range(self.iterations):
            assign = self._nearest(x, c)
            c = np.stack([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(self.k)])
        self.centroids = c
        return self

    @staticmethod
    def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
        return ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)

    def assign(self, x: np.ndarray) -> np.ndarray:
        if self.centroids is None:
            raise ValueError("fit the codebook first")
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)
        return self._nearest(x, self.centroids)


def codebook_inventory(model: Model, task, episodes, k: int = 8, hook: str = "hook_final", seed: int = 0,
                       only: set[str] | None = None, per_token: bool = True) -> tuple[Codebook, ConceptInventory]:
    """Concepts from a codebook over hidden states (of the tokens in ``only``, if given).

    ``per_token``: fit the codebook on each token's mean state, so frequent tokens do not take
    all the centroids; the inventory still counts every occurrence under its own code.
    """
    states, tokens = hidden_states(model, task, episodes, hook)
    if only is not None:
        keep = [i for i, t in enumerate(tokens) if t in only]
        states, tokens = states[keep], [tokens[i] for i in keep]
    if per_token:
        names = sorted(set(tokens))
        index = {t: i for i, t in enumerate(names)}
        rows = np.array([index[t] for t in tokens])
        means = np.stack([states[rows == i].mean(0) for i in range(len(names))])
        codebook = Codebook(min(k, len(names)), seed=seed).fit(means)
    else:
        codebook = Codebook(k, seed=seed).fit(states)
    inventory = ConceptInventory("code")
    for code, token in zip(codebook.assign(states), tokens):
        inventory.add(int(code), token)
    return codebook, inventory


def grounded_facts(inventory: ConceptInventory, tokens: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
    """``alike(a, b)`` for every two tokens whose dominant concept is the same."""
    tokens = sorted(inventory.tokens() if tokens is None else set(tokens) & inventory.tokens())
    by_concept: dict[int, list[str]] = defaultdict(list)
    for t in tokens:
        by_concept[inventory.concept_of(t)].append(t)
    return [(ALIKE, a, b) for group in by_concept.values() for a in group for b in group if a != b]
