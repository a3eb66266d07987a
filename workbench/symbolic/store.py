"""The symbolic store: timestamped relation triples read off a token sequence.

One clause grammar serves every token-form task (nothing in it names a task):

* the context is a list of clauses, each ended by ``.``;
* a clause of two tokens ``k v`` is ``binds(k, v)`` (key-value recall);
* a clause of three tokens ``a r b`` is ``r(a, b)`` ("b is the r of a");
* any other clause (one token, or four and more) is a stream of events: each token is an event, consecutive events give
  ``follows(x, y)``; ``before(x, y)`` (x happened earlier than y) is derived from the events'
  timestamps, never stored, so the store stays linear in the context length.

Every fact carries ``t``, the token position it was read at. Answered queries can be added as
facts (``add(..., answer=True)``), with a truth value (a "no" answer is a negative fact) and
``label=True`` when the answer *names* the relation of the pair.

Decidability ("closed pairs"): a clause ``a r b`` of the context names *the* relation of the
ordered pair (a, b), as in CLUTRR stories and VCML annotations, and so does a label answer; for
such a pair every other relation is false. About any other pair the store cannot tell (None).

A relation name starting with ``~`` is read backwards: ``~r(b, a)`` is ``r(a, b)``.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

SEP, ASK = ".", "?"
YES, NO = "yes", "no"
INV = "~"
DERIVED = ("before",)  # computed from timestamps, closed world
EVENT_RELATIONS = ("follows", "before")  # exact over the event stream (closed world)


def inverse_name(rel: str) -> str:
    """``r`` <-> ``~r``."""
    return rel[1:] if rel.startswith(INV) else INV + rel


@dataclass(frozen=True)
class Fact:
    rel: str
    a: str
    b: str
    t: int
    truth: bool = True
    answer: bool = False  # added from an answered query, not read from the context
    label: bool = False  # the answer names *the* relation of (a, b) (a "what relation" query)
    grounded: bool = False  # supplied by System 1 (a shared concept), not by the sequence

    def __str__(self) -> str:
        text = f"{self.rel}({self.a}, {self.b})"
        return text if self.truth else f"not {text}"


class Store:
    """Facts with indexes for lookup by (relation, subject), (relation, object) and by pair."""

    def __init__(self) -> None:
        self.facts: list[Fact] = []
        self._out: dict[tuple[str, str], list[str]] = defaultdict(list)  # (rel, a) -> [b] in time order
        self._in: dict[tuple[str, str], list[str]] = defaultdict(list)  # (rel, b) -> [a]
        self._pair: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)  # (a, b) -> {rel: truth}
        self._closed: set[tuple[str, str]] = set()  # pairs whose relation was named
        self._adjacency: dict[str, list[tuple[str, str]]] | None = None
        self.time: dict[str, int] = {}  # first timestamp of every event
        self.events: list[str] = []

    # ------------------------------------------------------------------ building

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> Store:
        """Read the context (stop at the first ``?``) with the clause grammar above."""
        store, clause, start = cls(), [], 0
        for t, token in enumerate(tokens):
            if token == ASK:
                break
            if token == SEP:
                store._read_clause(clause, start)
                clause, start = [], t + 1
            else:
                clause.append(token)
        store._read_clause(clause, start)
        return store

    def _read_clause(self, clause: list[str], start: int) -> None:
        if len(clause) == 2:
            self.add("binds", clause[0], clause[1], start)
        elif len(clause) == 3:
            self.add(clause[1], clause[0], clause[2], start)
        else:
            for offset, token in enumerate(clause):
                self.add_event(token, start + offset)

    def add_event(self, token: str, t: int) -> None:
        if token in self.time:  # repeated events keep their first time
            return
        if self.events:
            self.add("follows", self.events[-1], token, t)
        self.time[token] = t
        self.events.append(token)

    def add(self, rel: str, a: str, b: str, t: int | None = None, truth: bool = True,
            answer: bool = False, label: bool = False, grounded: bool = False) -> None:
        if rel.startswith(INV):
            rel, a, b = rel[1:], b, a
        t = len(self.facts) if t is None else t
        self.facts.append(Fact(rel, a, b, t, truth, answer, label, grounded))
        self._pair[(a, b)][rel] = truth
        self._adjacency = None
        if truth and (label or not (answer or grounded)) and rel not in EVENT_RELATIONS:
            self._closed.add((a, b))
        if truth:
            self._out[(rel, a)].append(b)
            self._in[(rel, b)].append(a)

    def add_answer(self, query: list[str], answer: str) -> bool:
        """Record an answered query as a fact, when its form says which fact it is.

        ``? a r b`` answered yes/no is r(a, b) true/false; ``? a b`` (two known entities)
        answered with a name w is the label w(a, b). Other forms add nothing (returns False).
        """
        t = len(self.facts) + 10_000  # after the context
        if len(query) == 3 and answer in (YES, NO):
            self.add(query[1], query[0], query[2], t, truth=answer == YES, answer=True)
            return True
        entities = self.entities
        if len(query) == 2 and all(x in entities for x in query) and answer not in entities:
            self.add(answer, query[0], query[1], t, answer=True, label=True)
            return True
        return False

    # ------------------------------------------------------------------ queries

    @property
    def entities(self) -> set[str]:
        return {x for f in self.facts for x in (f.a, f.b)} | set(self.time)

    @property
    def grounded_relations(self) -> set[str]:
        """Relations supplied by System 1 (premises for rules, never conclusions)."""
        return {f.rel for f in self.facts if f.grounded}

    @property
    def relation_names(self) -> set[str]:
        names = {f.rel for f in self.facts}
        return names | {"before"} if self.events else names

    def lookup(self, rel: str, x: str) -> list[str]:
        """Every y with rel(x, y), oldest first (``~rel`` looks backwards)."""
        if rel.startswith(INV):
            return list(self._in.get((rel[1:], x), ()))
        if rel == "before" and x in self.time:
            return [e for e in self.events if self.time[e] > self.time[x]]
        return list(self._out.get((rel, x), ()))

    def truth(self, rel: str, a: str, b: str) -> bool | None:
        """True / False when the store decides ``rel(a, b)``, None when it cannot tell."""
        if rel.startswith(INV):
            return self.truth(rel[1:], b, a)
        if rel in EVENT_RELATIONS and a in self.time and b in self.time:
            if rel == "before":
                return self.time[a] < self.time[b]
            return b in self._out.get(("follows", a), ())
        known = self._pair.get((a, b), {})
        if rel in known:
            return known[rel]
        if (a, b) in self._closed:  # the pair's relation was named, and it is another one
            return False
        return None

    def relations(self, a: str, b: str) -> list[str]:
        """Relations that hold between a and b (stated, answered or derived; ``~r`` for b -> a), sorted:
        callers draw random numbers per relation, so the order must not depend on string hashing."""
        out = {r for r, v in self._pair.get((a, b), {}).items() if v}
        out |= {INV + r for r, v in self._pair.get((b, a), {}).items() if v}
        if a in self.time and b in self.time and a != b:
            out.add("before" if self.time[a] < self.time[b] else INV + "before")
        return sorted(out)

    def edges(self, x: str) -> list[tuple[str, str]]:
        """The context's positive facts touching x, as (relation, other end); backwards ones as ``~r``."""
        if self._adjacency is None:
            self._adjacency = defaultdict(list)
            for f in self.facts:
                if f.truth and not f.answer:
                    self._adjacency[f.a].append((f.rel, f.b))
                    self._adjacency[f.b].append((INV + f.rel, f.a))
        return self._adjacency.get(x, [])

    def path(self, x: str, y: str, skip: tuple[str, ...] = EVENT_RELATIONS) -> list[tuple[str, str, str]] | None:
        """Shortest chain of context facts from x to y (breadth first): [(from, relation, to), ...]."""
        previous: dict[str, tuple[str, str] | None] = {x: None}
        frontier = deque([x])
        while frontier:
            node = frontier.popleft()
            if node == y:
                break
            for rel, other in self.edges(node):
                if other not in previous and rel.lstrip(INV) not in skip:
                    previous[other] = (node, rel)
                    frontier.append(other)
        if y not in previous or x == y:
            return None
        steps, node = [], y
        while previous[node] is not None:
            parent, rel = previous[node]
            steps.append((parent, rel, node))
            node = parent
        return steps[::-1]

    def count(self, rel: str, x: str | None = None) -> int:
        if x is None:
            return sum(1 for f in self.facts if f.rel == rel and f.truth)
        return len(self.lookup(rel, x))

    def __len__(self) -> int:
        return len(self.facts)

    def __str__(self) -> str:
        lines = [f"t={f.t:<4d} {f}" + (" (answer)" if f.answer else " (System 1)" if f.grounded else "")
                 for f in self.facts if f.rel != "follows"]
        if self.events:
            shown = " ".join(self.events[:12]) + (" ..." if len(self.events) > 12 else "")
            lines.append(f"events ({len(self.events)}, follows/before by time): {shown}")
        return "\n".join(lines)
