"""Chart composition (CYK-style) of a relation path with induced rules, in every bracketing at once.

A proof that has walked from the query head to its tail holds a path of relations r1 ... rn. Folding
it pairwise is a choice of bracketing; a left-to-right fold (or any one order) fails where one of
its intermediate spans has no rule, though another order would have composed. The chart tries them
all: for every span (i, j) it keeps a distribution over the relations the span composes to - named
relations and invented predicates alike - averaged over split points m, summed over the heads of the
rules ``(left, right) -> head``, each weighted by the rule's precision (a named head's share of the
body's named support in the training stories, smoothed by a prior pseudo-count; an invented predicate
is the body's definition and weighs 1, ``rule_weights``). This is the inside algorithm of a weighted grammar whose rules are the
induced composition table; nothing in it is kinship-specific.

The root cell's most probable *named* relation is the chart's answer, and its most probable single
derivation (Viterbi, kept beside the sums) is the bracketing shown in the trace. Whether to use the
chart at all, and which root to trust, stays the proof policy's choice (``proof``: action ``chart``).
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.symbolic.clutrr import NAMED
from workbench.symbolic.induction import RuleBase

BEAM = 8  # heads kept per span: spans deep in a long chain otherwise grow with every rule's heads
# pseudo-count of unseen heads per body: a named head seen once weighs 1/3, seen 20 times 0.91, so a rule
# the training stories barely support cannot outvote a well-attested bracketing (2: chosen on fresh
# validation stories, k = 6 and 10, seeds 0-2; not on the test sets)
PRIOR_COUNT = 2.0


@dataclass
class Derivation:
    """The best single bracketing of a span into ``head``: a leaf (``split`` None) or two sub-spans."""

    head: str
    score: float
    split: int | None = None
    left: str | None = None
    right: str | None = None


@dataclass
class Chart:
    relations: tuple[str, ...]
    inside: dict[tuple[int, int], dict[str, float]]  # span -> head -> mass (averaged over split points)
    best: dict[tuple[int, int], dict[str, Derivation]]  # span -> head -> Viterbi derivation

    def roots(self) -> list[tuple[str, float]]:
        """Named relations the whole path composes to, most probable first (invented ones are never answers)."""
        root = self.inside.get((0, len(self.relations)), {})
        return sorted(((h, p) for h, p in root.items() if h in NAMED), key=lambda x: -x[1])

    def steps(self, head: str) -> list[str]:
        """The Viterbi derivation of ``head`` over the whole path, as compositions in the order they apply
        (innermost first), e.g. ``["son . wife = daughter-in-law", "father . daughter-in-law = ..."]``."""
        out: list[str] = []

        def walk(i: int, j: int, h: str) -> None:
            d = self.best[i, j][h]
            if d.split is None or d.left is None or d.right is None:
                return
            walk(i, d.split, d.left)
            walk(d.split, j, d.right)
            out.append(f"[{i}:{j}] {d.left} . {d.right} = {h}")

        if head in self.best.get((0, len(self.relations)), {}):
            walk(0, len(self.relations), head)
        return out


def rule_weights(rules: RuleBase, body: tuple[str, str], definitions: bool = True,
                 prior: float = PRIOR_COUNT) -> list[tuple[str, float]]:
    """(head, weight) per head of ``body``. A named head weighs its share of the body's named support (how
    often the training stories bore it out), smoothed by ``prior`` pseudo-counts; an invented head is a
    definition of the body (it holds by construction), weight 1, and does not dilute the named heads.
    ``definitions=False``: every head weighs its plain share of all the body's support, invented ones
    included."""
    heads = rules.heads("compose", body)
    if not definitions:
        return [(h, p) for h, _, p in heads]
    named = sum(n for h, n, _ in heads if h not in rules.invented)
    return [(h, 1.0 if h in rules.invented else n / (named + prior)) for h, n, _ in heads]


def compose_chart(rules: RuleBase, relations: tuple[str, ...] | list[str], beam: int = BEAM,
                  definitions: bool = True) -> Chart:
    """The inside chart of ``relations`` under the composition rules of ``rules`` (weights: ``rule_weights``)."""
    relations = tuple(relations)
    n = len(relations)
    inside: dict[tuple[int, int], dict[str, float]] = {}
    best: dict[tuple[int, int], dict[str, Derivation]] = {}
    for i, r in enumerate(relations):
        inside[i, i + 1] = {r: 1.0}
        best[i, i + 1] = {r: Derivation(r, 1.0)}
    for length in range(2, n + 1):
        for i in range(n - length + 1):
            j = i + length
            mass: dict[str, float] = {}
            viterbi: dict[str, Derivation] = {}
            for m in range(i + 1, j):
                for a, pa in inside[i, m].items():
                    for b, pb in inside[m, j].items():
                        heads = rule_weights(rules, (a, b), definitions)
                        if not heads:
                            continue
                        sa, sb = best[i, m][a].score, best[m, j][b].score
                        for head, precision in heads:
                            mass[head] = mass.get(head, 0.0) + pa * pb * precision
                            score = sa * sb * precision
                            if head not in viterbi or score > viterbi[head].score:
                                viterbi[head] = Derivation(head, score, m, a, b)
            kept = sorted(mass, key=lambda h: -mass[h])[:beam]
            # averaged over split points (a uniform prior on where the span splits): a span that composes
            # in only a few of its bracketings carries less weight into the spans above it
            inside[i, j] = {h: mass[h] / (length - 1) for h in kept}
            best[i, j] = {h: viterbi[h] for h in kept}
    return Chart(relations, inside, best)
