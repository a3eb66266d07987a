"""Step-by-step execution of small programs over a store, with a readable trace.

As in NS-CL (Mao et al., ICLR 2019), a question becomes a program of a few primitive
operations run over a symbolic scene; here the scene is a ``Store`` read off the token sequence
and the concepts/rules come from a ``RuleBase`` (through a ``RuleView``). Every primitive
costs one step and writes one trace line; ``Result.steps`` is what the dual-process controller
pays for deliberation.

Primitives: ``lookup`` (r-values of x), ``hop`` (follow one r edge), ``invert`` (read ~r as its
named inverse), ``path`` (chain of facts between two entities), ``compose`` (fold a chain of
relations with composition rules), ``compare_time``, ``next_event`` / ``previous_event``,
``count``, ``derive`` (does r(a, b) hold, by facts, knowledge and rules) and ``induce`` (few-shot
meaning of a new symbol from its examples and the metaconcept facts stated about it).

Templates assemble primitives into the programs the policy can choose from (``TEMPLATES``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from workbench.symbolic.rules import RuleBase, RuleView
from workbench.symbolic.store import INV, NO, YES, Store, inverse_name


class OutOfSteps(RuntimeError):
    pass


@dataclass(frozen=True)
class Program:
    template: str
    args: tuple[str, ...]  # entities named by the query
    relations: tuple[str, ...] = ()  # one relation per step (walk) or the relation (holds, count)

    def __str__(self) -> str:
        rels = f"; {' '.join(self.relations)}" if self.relations else ""
        return f"{self.template}({', '.join(self.args)}{rels})"


@dataclass
class Result:
    answer: str | None
    trace: list[str] = field(default_factory=list)
    steps: int = 0

    def __str__(self) -> str:
        return "\n".join(self.trace + [f"=> {self.answer} ({self.steps} steps)"])


class Executor:
    def __init__(self, store: Store, rules: RuleBase | RuleView | None = None, depth: int = 2, max_steps: int = 400):
        self.store = store
        self.view = rules if isinstance(rules, RuleView) else RuleView(rules or RuleBase())
        self.depth, self.max_steps = depth, max_steps
        self.trace: list[str] = []
        self.steps = 0

    def _log(self, text: str) -> None:
        self.steps += 1
        self.trace.append(f"{self.steps:3d}. {text}")
        if self.steps >= self.max_steps:
            raise OutOfSteps(text)

    def run(self, program: Program) -> Result:
        self.trace, self.steps = [f"program {program}"], 0
        try:
            answer = TEMPLATES[program.template].run(self, program)
        except OutOfSteps:
            answer = None
            self.trace.append("out of steps")
        return Result(answer, self.trace, self.steps)

    # ------------------------------------------------------------------ primitives

    def lookup(self, rel: str, x: str) -> list[str]:
        values = self.store.lookup(rel, x) + [v for v in self.view.facts_from(rel, x) if v not in self.store.lookup(rel, x)]
        self._log(f"lookup {rel}({x}, ?) -> {values[-3:] if len(values) > 3 else values}")
        return values

    def hop(self, rel: str, x: str) -> str | None:
        values = self.lookup(rel, x)
        return values[-1] if values else None  # the most recent binding wins

    def invert(self, rel: str) -> str:
        named = self.view.normalize(rel)
        self._log(f"invert {rel} = {named}")
        return named

    def path(self, x: str, y: str) -> list[str] | None:
        steps = self.store.path(x, y)
        shown = " ".join(f"-{r}-> {b}" for _, r, b in steps) if steps else "none"
        self._log(f"path {x} {shown}")
        return [r for _, r, _ in steps] if steps else None

    def compose(self, relations: list[str]) -> str | None:
        """Fold a chain left to right: ((r1 ∘ r2) ∘ r3) ..."""
        relations = [self.invert(r) if r.startswith(INV) else r for r in relations]
        result = relations[0]
        for rel in relations[1:]:
            composed = self.view.compose(result, rel)
            self._log(f"compose {result} ∘ {rel} = {composed}")
            if composed is None:
                return None
            result = composed
        return self.invert(result) if result.startswith(INV) else result

    def compare_time(self, x: str, y: str) -> str | None:
        tx, ty = self.store.time.get(x), self.store.time.get(y)
        earlier = None if tx is None or ty is None else (x if tx < ty else y)
        self._log(f"time {x}={tx} {y}={ty} -> earlier {earlier}")
        return earlier

    def next_event(self, x: str) -> str | None:
        return self.hop("follows", x)

    def previous_event(self, x: str) -> str | None:
        return self.hop(INV + "follows", x)

    def count(self, rel: str, x: str) -> int:
        n = len(self.store.lookup(rel, x))
        self._log(f"count {rel}({x}, ?) = {n}")
        return n

    def derive(self, a: str, rel: str, b: str, depth: int | None = None) -> bool:
        """Does rel(a, b) hold? Context first, then knowledge, then rules (inverse, composition)."""
        depth = self.depth if depth is None else depth
        if rel.startswith(INV):
            return self.derive(b, rel[1:], a, depth)
        verdict = self.store.truth(rel, a, b)
        if verdict is None and self.view.fact(rel, a, b):
            verdict = True
        self._log(f"holds {rel}({a}, {b})? {'unknown' if verdict is None else verdict}")
        if verdict is not None:
            return verdict
        if depth == 0:
            return False
        for s in self._inverses(rel):
            if self.derive(b, s, a, depth - 1):
                return True
        for r1, r2 in self.view.decompositions(rel):
            for m in self.store.lookup(r1, a) + self.view.facts_from(r1, a):
                if m not in (a, b) and self.derive(m, r2, b, depth - 1):
                    self.trace.append(f"     by {r1} ∘ {r2} = {rel} through {m}")
                    return True
        return False

    def _inverses(self, rel: str) -> list[str]:
        named = self.view.inverse_of(rel)
        return [] if named is None else [named]

    def induce(self, symbol: str, rel: str) -> str | None:
        """Few-shot meaning of a new symbol: which known symbol does it stand for?

        Candidates: the other r-values shared by every example x with r(x, symbol); kept only if
        every other fact the context states about the symbol (e.g. ``symbol same-kind red``)
        also holds for the candidate. Ties go to the first in sorted order (a guess).
        """
        examples = self.store.lookup(INV + rel, symbol)
        self._log(f"induce {symbol}: examples {examples}")
        if not examples:
            return None
        shared = set.intersection(*({v for v in self.store.lookup(rel, x) if v != symbol} for x in examples))
        grounded = self.store.grounded_relations  # System 1's similarity is not a stated fact
        constraints = [(r, y) for r, y in self.store.edges(symbol)
                       if r != inverse_name(rel) and r.lstrip(INV) not in grounded]
        candidates = [c for c in sorted(shared) if all(self.derive(c, r, y, 1) for r, y in constraints)]  # sorted first: derive draws rng
        self._log(f"induce {symbol}: candidates {candidates} under {constraints}")
        return candidates[0] if candidates else None

    def holds(self, a: str, rel: str, b: str) -> bool:
        if self.derive(a, rel, b):
            return True
        novel = not self.view.known(b) and self.store.lookup(INV + rel, b) and self.view.substitutions(rel)
        if novel:
            meaning = self.induce(b, rel)
            return meaning is not None and self.derive(a, rel, meaning)
        return False


# ----------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    name: str
    n_args: int
    binds: str  # "each": a relation per operator token; "one": one relation; "none"
    run: Callable[[Executor, Program], str | None]


def _walk(ex: Executor, p: Program) -> str | None:
    current: str | None = p.args[0]
    for rel in p.relations:
        current = ex.hop(rel, current)
        if current is None:
            return None
    return current


def _relate(ex: Executor, p: Program) -> str | None:
    chain = ex.path(*p.args)
    return ex.compose(chain) if chain else None


def _holds(ex: Executor, p: Program) -> str | None:
    return YES if ex.holds(p.args[0], p.relations[0], p.args[1]) else NO


def _first(ex: Executor, p: Program) -> str | None:
    return ex.compare_time(*p.args)


def _last(ex: Executor, p: Program) -> str | None:
    earlier = ex.compare_time(*p.args)
    return None if earlier is None else (p.args[1] if earlier == p.args[0] else p.args[0])


def _count(ex: Executor, p: Program) -> str | None:
    return str(ex.count(p.relations[0], p.args[0]))


TEMPLATES: dict[str, Template] = {t.name: t for t in [
    Template("walk", 1, "each", _walk),
    Template("relate", 2, "none", _relate),
    Template("holds", 2, "one", _holds),
    Template("first", 2, "none", _first),
    Template("last", 2, "none", _last),
    Template("next", 1, "none", lambda ex, p: ex.next_event(p.args[0])),
    Template("previous", 1, "none", lambda ex, p: ex.previous_event(p.args[0])),
    Template("count", 1, "one", _count),
]}


def execute(program: Program, store: Store, rules: RuleBase | RuleView | None = None) -> Result:
    return Executor(store, rules).run(program)
