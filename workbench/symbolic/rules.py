"""Metaconcept hypotheses: properties of relations and relations between concepts.

Two families, after VCML (Han et al., NeurIPS 2019), where concepts and *metaconcepts*
(synonym, same-kind, hypernym) are learned jointly and each constrains the other:

* relation rules, over relation names: ``inverse(r, s)`` (``symmetric`` when r == s) and
  ``compose(r1, r2, r3)`` ("r1 ∘ r2 = r3", ``transitive`` when all three are equal); a
  name may be read backwards, ``~r``;
* concept facts, ``fact(r, a, b)``: lasting relations between symbols, e.g. ``crimson synonym red``,
  ``red same-kind blue``, ``red is-a color`` (the relation words come from the data).

Hypotheses are *proposed* from stores (``propose``): a pattern seen once is a candidate.
Each store then gives *evidence*, the verdicts of a hypothesis' predictions that the store
decides (``evidence``). Whether a hypothesis is kept is a stochastic policy (``RuleBase``:
one keep-logit per hypothesis) trained by REINFORCE in ``workbench.symbolic.policy`` from
those verdicts and from the task reward of the queries it helped answer; nothing here uses
gradients of a task loss.

Instances never close on themselves: a two-step pattern a -> b -> c needs a != c.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from workbench.symbolic.store import EVENT_RELATIONS, INV, Store, inverse_name


@dataclass(frozen=True, order=True)
class Hypothesis:
    kind: str  # "inverse", "compose" or "fact"
    args: tuple[str, ...]

    def __str__(self) -> str:
        if self.kind == "inverse":
            r, s = self.args
            return f"{r} is symmetric" if r == s else f"{r} is the inverse of {s}"
        if self.kind == "compose":
            r1, r2, r3 = self.args
            return f"{r1} is transitive" if r1 == r2 == r3 else f"{r1} ∘ {r2} = {r3}"
        rel, a, b = self.args
        return f"{a} {rel} {b}"


def inverse(r: str, s: str) -> Hypothesis:
    """``r(a, b)`` iff ``s(b, a)``; stored in a canonical order."""
    return Hypothesis("inverse", tuple(sorted((r, s))))


def symmetric(r: str) -> Hypothesis:
    return inverse(r, r)


def compose(r1: str, r2: str, r3: str) -> Hypothesis:
    return Hypothesis("compose", (r1, r2, r3))


def transitive(r: str) -> Hypothesis:
    return compose(r, r, r)


def fact(rel: str, a: str, b: str) -> Hypothesis:
    return Hypothesis("fact", (rel, a, b))


Normalizer = Callable[[str], str]


def _identity(rel: str) -> str:
    return rel


# ----------------------------------------------------------------------------- patterns in a store


def two_paths(store: Store, normalize: Normalizer = _identity, rng: np.random.Generator | None = None,
              n_event_triples: int | None = 16) -> list[tuple[str, str, str, str, str]]:
    """Premises ``(r1, r2, a, b, c)``: r1(a, b) and r2(b, c) hold, a != c.

    From the context's stated facts (both directions, ``~r`` backwards), plus random triples of
    events (``n_event_triples`` of them with ``rng``; all of them when ``n_event_triples`` is None),
    whose timestamps relate every pair (before / follows are derived).
    """
    out = []
    grounded = store.grounded_relations  # at most one System 1 link per premise pair
    nodes = {f.a for f in store.facts if not f.answer} | {f.b for f in store.facts if not f.answer}
    for b in sorted(nodes):  # System 1's links come in both directions already: skip their ~ reading
        edges = [(rel, other) for rel, other in store.edges(b)
                 if other != b and not (rel.startswith(INV) and rel[1:] in grounded)]
        for s1, a in edges:
            r1 = normalize(inverse_name(s1))
            for s2, c in edges:
                if c != a and not (s1.lstrip(INV) in grounded and s2.lstrip(INV) in grounded):
                    out.append((r1, normalize(s2), a, b, c))
    events = store.events
    if len(events) < 3:
        return out
    if n_event_triples is None:
        triples = [(a, b, c) for a in events for b in events for c in events if len({a, b, c}) == 3]
    elif rng is not None and n_event_triples:
        triples = [tuple(events[i] for i in rng.choice(len(events), 3, replace=False)) for _ in range(n_event_triples)]
    else:
        triples = []
    for a, b, c in triples:
        for r1 in store.relations(a, b):
            for r2 in store.relations(b, c):
                out.append((normalize(r1), normalize(r2), a, b, c))
    return out


def decide(store: Store, rel: str, a: str, b: str, normalize: Normalizer = _identity) -> bool | None:
    """The store's verdict on rel(a, b); also reads the pair backwards through a known named inverse."""
    verdict = store.truth(rel, a, b)
    if verdict is None:
        named = normalize(inverse_name(rel))  # e.g. parent -> ~parent -> child
        if named != inverse_name(rel):
            verdict = store.truth(named, b, a)
    return verdict


def propose(store: Store, normalize: Normalizer = _identity, rng: np.random.Generator | None = None,
            fact_relations: Iterable[str] = (), substitutions: dict[str, list[str]] | None = None) -> Counter:
    """Candidate hypotheses suggested by one store, with how often each pattern occurred.

    * ``inverse(r, s)`` when r(a, b) and s(b, a) both hold;
    * ``compose(r1, r2, r3)`` when r1(a, b), r2(b, c) and r3(a, c) hold;
    * ``fact(r, a, b)`` for stated or answered facts of the relations in ``fact_relations``
      (those the world asks yes/no questions about: their truth outlives one context);
    * abduction: if r(a, c) was answered yes, r(a, b) is stated and ``compose(r, s, r)`` is
      kept (``substitutions[r]`` lists such s), then ``fact(s, b, c)`` might explain it.
    """
    found: Counter = Counter()
    fact_relations = set(fact_relations)
    grounded = store.grounded_relations  # System 1's relations are premises, never conclusions
    for f in store.facts:
        if not f.truth or f.grounded:
            continue
        for rel in store.relations(f.b, f.a):
            if not rel.startswith(INV) and rel not in grounded:
                found[inverse(normalize(f.rel), normalize(rel))] += 1
        if f.rel in fact_relations:
            found[fact(f.rel, f.a, f.b)] += 1
        if f.answer and substitutions and f.rel in substitutions:
            stated = [g.b for g in store.facts if g.rel == f.rel and g.a == f.a and g.truth and not g.answer]
            if f.b not in stated:  # the answer is not in the context: what could explain it?
                for b in stated:
                    for s in substitutions[f.rel]:
                        found[fact(s, b, f.b)] += 1
    for r1, r2, a, _b, c in two_paths(store, normalize, rng):
        for r3 in store.relations(a, c):
            if r3.lstrip(INV) not in grounded:
                found[compose(r1, r2, normalize(r3))] += 1
    return found


# ----------------------------------------------------------------------------- the rule base


@dataclass
class Belief:
    """What the learner holds about one hypothesis."""

    logit: float  # keep-probability sigmoid(logit): the REINFORCE policy parameter
    support: int = 0  # times proposed
    verified: int = 0  # store verdicts: true
    decided: int = 0  # store verdicts: decided at all
    baseline: float = 0.0

    @property
    def p(self) -> float:
        return 1.0 / (1.0 + math.exp(-self.logit))


@dataclass
class RuleBase:
    """Every hypothesis ever proposed, with a keep-probability; the kept ones are the rules."""

    prior_logit: float = -1.0  # sceptical start for relation rules: p = 0.27
    fact_prior_logit: float = -3.0  # concept facts are many, most episodic: p = 0.05
    beliefs: dict[Hypothesis, Belief] = field(default_factory=dict)
    _by_key: dict[tuple, list[Hypothesis]] = field(default_factory=lambda: defaultdict(list))

    def add(self, h: Hypothesis, count: int = 1) -> Belief:
        belief = self.beliefs.get(h)
        if belief is None:
            belief = self.beliefs[h] = Belief(self.fact_prior_logit if h.kind == "fact" else self.prior_logit)
            for key in self._keys(h):
                self._by_key[key].append(h)
        belief.support += count
        return belief

    @staticmethod
    def _keys(h: Hypothesis) -> list[tuple]:
        if h.kind == "inverse":
            r, s = h.args
            return [("inverse", r), ("inverse", s)] if r != s else [("inverse", r)]
        if h.kind == "compose":
            r1, r2, r3 = h.args
            return [("compose", r1, r2), ("decompose", r3)]
        rel, a, b = h.args
        return [("fact", rel, a), ("fact~", rel, b), ("pair", a, b), ("symbol", a), ("symbol", b)]

    def candidates(self, *key) -> list[Hypothesis]:
        return self._by_key.get(key, [])

    def kept(self, kind: str | None = None) -> list[Hypothesis]:
        return sorted(h for h, b in self.beliefs.items() if b.p > 0.5 and (kind is None or h.kind == kind))

    def is_kept(self, h: Hypothesis) -> bool:
        belief = self.beliefs.get(h)
        return belief is not None and belief.p > 0.5

    def normalizer(self) -> Normalizer:
        """``~r`` -> its kept named inverse (``r`` if symmetric), else unchanged."""
        return RuleView(self).normalize

    def canonicalize(self) -> None:
        """Rewrite ``~r`` as its kept named inverse everywhere, merging duplicate hypotheses
        (the merged one keeps the higher keep-logit and the summed evidence)."""
        view = RuleView(self)
        symbols = {r for h in self.beliefs if h.kind == "compose" for r in h.args}
        renamed = {r: view.normalize(r) for r in symbols}  # before the indexes are rebuilt
        normalize = renamed.get
        old, self.beliefs, self._by_key = self.beliefs, {}, defaultdict(list)
        for h, belief in old.items():
            if h.kind == "inverse":
                new = inverse(*h.args)
            elif h.kind == "compose":
                new = compose(*(normalize(r) for r in h.args))
            else:
                new = h
            if new.kind == "inverse" and new != h:
                new = h
            merged = self.beliefs.get(new)
            if merged is None:
                self.add(new, 0)
                merged = self.beliefs[new]
                merged.logit = belief.logit
            else:
                merged.logit = max(merged.logit, belief.logit)
            merged.support += belief.support
            merged.verified += belief.verified
            merged.decided += belief.decided

    def substitutions(self) -> dict[str, list[str]]:
        """r -> [s, ...] for every kept ``compose(r, s, r)`` (s can stand in for r's object)."""
        out: dict[str, list[str]] = defaultdict(list)
        for h in self.kept("compose"):
            r1, r2, r3 = h.args
            if r1 == r3 and r2 != r1:
                out[r1].append(r2)
        return dict(out)

    @property
    def fact_relations(self) -> set[str]:
        """Relations some concept-fact hypothesis is about."""
        return {h.args[0] for h in self.beliefs if h.kind == "fact"}

    def describe(self, limit_facts: int = 40) -> str:
        """The kept rules, readable: relation rules first, then concept facts."""
        rules = [h for h in self.kept() if h.kind != "fact"]
        facts = self.kept("fact")
        lines = [f"{str(h):<44s} p={self.beliefs[h].p:.2f} evidence={self.beliefs[h].verified}/{self.beliefs[h].decided}"
                 for h in rules]
        if facts:
            lines.append(f"-- {len(facts)} concept facts" + (f" (first {limit_facts})" if len(facts) > limit_facts else ""))
            lines += [f"{str(h):<44s} p={self.beliefs[h].p:.2f}" for h in facts[:limit_facts]]
        return "\n".join(lines) if lines else "(no rules kept)"

    def __str__(self) -> str:
        return self.describe()


class RuleView:
    """How the executor sees a RuleBase during one query.

    Greedy (no rng): a hypothesis is active iff kept. Sampled (rng): each hypothesis the executor
    consults is switched on with its keep-probability, once per view; ``active`` records every
    consulted hypothesis and its draw, which is what REINFORCE needs afterwards.
    """

    def __init__(self, rules: RuleBase, rng: np.random.Generator | None = None) -> None:
        self.rules, self.rng = rules, rng
        self.active: dict[Hypothesis, bool] = {}

    def on(self, h: Hypothesis) -> bool:
        if h not in self.active:
            p = self.rules.beliefs[h].p
            self.active[h] = p > 0.5 if self.rng is None else bool(self.rng.random() < p)
        return self.active[h]

    def best(self, hypotheses: Iterable[Hypothesis]) -> Hypothesis | None:
        on = [h for h in hypotheses if self.on(h)]
        return max(on, key=lambda h: (self.rules.beliefs[h].p, h)) if on else None

    def inverse_of(self, rel: str) -> str | None:
        """The named inverse of a forward relation (itself when symmetric), if one is active."""
        h = self.best(self.rules.candidates("inverse", rel))
        if h is None:
            return None
        r, s = h.args
        return s if r == rel else r

    def normalize(self, rel: str) -> str:
        if not rel.startswith(INV):
            return rel
        named = self.inverse_of(rel[1:])
        return rel if named is None else named

    def compose(self, r1: str, r2: str) -> str | None:
        h = self.best(self.rules.candidates("compose", r1, r2))
        return None if h is None else self.normalize(h.args[2])

    def decompositions(self, r3: str) -> list[tuple[str, str]]:
        return [h.args[:2] for h in self.rules.candidates("decompose", r3) if self.on(h)]

    def substitutions(self, rel: str) -> list[str]:
        """s with an active ``compose(rel, s, rel)``: s may replace rel's object."""
        return [r2 for r1, r2 in self.decompositions(rel) if r1 == rel and r2 != rel]

    def facts_from(self, rel: str, a: str) -> list[str]:
        if rel.startswith(INV):
            return [h.args[1] for h in self.rules.candidates("fact~", rel[1:], a) if self.on(h)]
        return [h.args[2] for h in self.rules.candidates("fact", rel, a) if self.on(h)]

    def fact(self, rel: str, a: str, b: str) -> bool:
        if rel.startswith(INV):
            rel, a, b = rel[1:], b, a
        h = fact(rel, a, b)
        return h in self.rules.beliefs and self.on(h)

    def known(self, symbol: str) -> bool:
        """Does any active concept fact mention the symbol (is it a concept the learner knows)?"""
        return any(self.on(h) for h in self.rules.candidates("symbol", symbol))


# ----------------------------------------------------------------------------- evidence


def evidence(store: Store, rules: RuleBase, normalize: Normalizer = _identity,
             rng: np.random.Generator | None = None) -> dict[Hypothesis, list[bool]]:
    """Verdicts of every known hypothesis' predictions that this store decides."""
    out: dict[Hypothesis, list[bool]] = defaultdict(list)
    for f in store.facts:
        if not f.truth or f.answer:
            continue
        rel = normalize(f.rel)
        for h in rules.candidates("inverse", rel):
            r, s = h.args
            other = s if r == rel else r
            verdict = decide(store, other, f.b, f.a, normalize)
            if verdict is not None:
                out[h].append(verdict)
    for r1, r2, a, _b, c in two_paths(store, normalize, rng):
        for h in rules.candidates("compose", r1, r2):
            verdict = decide(store, h.args[2], a, c, normalize)
            if verdict is not None:
                out[h].append(verdict)
    # Concept facts: a context only ever states true facts of that context, so a statement
    # seen again cannot tell a lasting fact from an episodic one; questions can (they also ask
    # about false ones). So support comes from answers, refutation from answers or named pairs.
    answered = {(f.rel, f.a, f.b) for f in store.facts if f.answer}
    for a, b in sorted({(f.a, f.b) for f in store.facts}):  # sorted: hash order would pick the rng draws
        for h in rules.candidates("pair", a, b):
            verdict = store.truth(h.args[0], a, b)
            if verdict is False or (verdict and (h.args[0], a, b) in answered):
                out[h].append(verdict)
    return out


# ----------------------------------------------------------------------------- ground truth


def rules_true_in(world: Store, normalize_names: bool = True, min_instances: int = 1) -> set[Hypothesis]:
    """Relation rules that hold on every instance of a complete world (closed world: unstated = false).

    Used to get a generator's true rules by brute force. Names read backwards are replaced by
    their true inverse name when the world has one, as the learner does with kept inverses.
    """
    def holds(rel: str, a: str, b: str) -> bool:
        verdict = world.truth(rel, a, b)
        return bool(verdict)

    names = sorted(world.relation_names)
    symbols = names + [INV + r for r in names]
    true: set[Hypothesis] = set()
    rename: dict[str, str] = {}
    for r in names:
        for s in names:
            instances = [(f.a, f.b) for f in world.facts if f.rel == r and f.truth]
            if instances and all(holds(s, b, a) for a, b in instances) and \
                    all(holds(r, f.b, f.a) for f in world.facts if f.rel == s and f.truth):
                true.add(inverse(r, s))
                rename.setdefault(INV + r, s)
    normalize = (lambda rel: rename.get(rel, rel)) if normalize_names else _identity
    grouped: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for r1, r2, a, _b, c in two_paths(world, n_event_triples=None):
        grouped[(normalize(r1), normalize(r2))].append((a, c))
    for (r1, r2), pairs in grouped.items():
        if len(pairs) < min_instances:
            continue
        for r3 in symbols:
            if normalize(r3) == r3 and all(holds(r3, a, c) for a, c in pairs):
                true.add(compose(r1, r2, r3))
    return true


def compare_rules(learned: Iterable[Hypothesis], truth: Iterable[Hypothesis]) -> dict:
    """Precision / recall of the learned rules against the true ones, with what differs."""
    learned, truth = set(learned), set(truth)
    hit = learned & truth
    return {
        "learned": len(learned),
        "true": len(truth),
        "correct": len(hit),
        "precision": len(hit) / len(learned) if learned else 0.0,
        "recall": len(hit) / len(truth) if truth else 0.0,
        "extra": sorted(str(h) for h in learned - truth),
        "missing": sorted(str(h) for h in truth - learned),
    }


__all__ = [
    "EVENT_RELATIONS", "Belief", "Hypothesis", "RuleBase", "RuleView", "compare_rules", "compose", "decide", "evidence", "fact",
    "inverse", "propose", "rules_true_in", "symmetric", "transitive", "two_paths",
]
