"""Kinship rules induced from answered training stories, ILP style, with invented predicates.

The learner never sees the generator's semantics. From each training story (facts as System 1 or the
oracle parser read them, the query and its answer) it finds the chain of facts linking the query
pair and explains the answer by abduction over two rule families:

* **composition** ``(x, y) -> z``: if b is a's x and c is b's y, then c is a's z. Heads are named
  relations or *invented predicates*: where no bracketing of a three-fact chain is explained by
  named two-step compositions, the learner invents ``p<n>`` for the first pair, with rules
  ``(r1, r2) -> p<n>`` and ``(p<n>, r3) -> answer``, and ``q`` for the last pair, with ``(r2, r3) -> q`` and
  ``(r1, q) -> answer`` (both readings hold of the chain; which one a longer proof can use depends on
  its neighbours) (predicate invention in the sense of
  Muggleton's inverse resolution; cf. NLM, Dong et al. 2019, and CTP, Minervini et al. 2020, for
  learned compositions of any length);
* **inversion** ``(s, g) -> x``: a fact ``(b, s, a)`` read from a's side says b is a's x, where x
  depends on b's gender g (read off the name, as in CLUTRR).

Every rule keeps its support counts per head. Which head to trust, and whether to use an ambiguous
rule at all, is left to the proof policy (``proof``), trained by reinforcement; the baseline
``RuleBase.thresholded`` keeps a head only when its precision clears a threshold.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

ParsedFact = tuple[str, str, str, float]  # (a, relation, b, confidence)
Step = tuple[str, bool, str]  # (relation as stated, traversed backwards?, entity reached)


def gender(name: str) -> str:
    return "m" if name.startswith("M") else "f"


@dataclass
class RuleBase:
    compose: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    invert: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    invented: dict[str, tuple[str, str]] = field(default_factory=dict)  # p<n> -> the body it names

    def heads(self, table: str, body: tuple[str, str]) -> list[tuple[str, int, float]]:
        """(head, support, precision) for every head seen with ``body``, most supported first."""
        counts = getattr(self, table).get(body)
        if not counts:
            return []
        total = sum(counts.values())
        return [(head, n, n / total) for head, n in counts.most_common()]

    def best(self, table: str, body: tuple[str, str]) -> str | None:
        heads = self.heads(table, body)
        return heads[0][0] if heads else None

    def thresholded(self, precision: float = 0.95, support: int = 2) -> RuleBase:
        """The baseline rule keeper: per body, the most supported named head, kept only if precise and
        supported enough among the named heads; invented predicates are definitions, not observations,
        so they are kept as they are and do not count against a named head's precision."""
        kept = RuleBase(invented=dict(self.invented))
        for table in ("compose", "invert"):
            for body, counts in getattr(self, table).items():
                named = [(h, n) for h, n in counts.most_common() if h not in self.invented]
                if named and named[0][1] >= support and named[0][1] >= precision * sum(n for _, n in named):
                    getattr(kept, table)[body][named[0][0]] = named[0][1]
                for head, n in counts.items():
                    if head in self.invented:
                        getattr(kept, table)[body][head] = n
        return kept

    def size(self) -> dict[str, int]:
        return {"compose_bodies": len(self.compose), "invert_bodies": len(self.invert),
                "compose_heads": sum(len(c) for c in self.compose.values()), "invented": len(self.invented)}

    def listing(self, limit: int = 40) -> list[str]:
        """Human-readable rules, most supported first."""
        rows = []
        for x, y in self.compose:
            for head, n, p in self.heads("compose", (x, y)):
                rows.append((n, f"{head}(A,C) <- {x}(A,B), {y}(B,C)   [support {n}, precision {p:.2f}]"))
        for name, (x, y) in self.invented.items():
            rows.append((10**9, f"{name}(A,C) := {x}(A,B), {y}(B,C)   [invented]"))
        for s, g in self.invert:
            for head, n, p in self.heads("invert", (s, g)):
                rows.append((n, f"{head}(A,B) <- {s}(B,A), gender(B)={g}   [support {n}, precision {p:.2f}]"))
        rows.sort(key=lambda r: -r[0])
        return [text for _, text in rows[:limit]]


def chain_between(facts: list[ParsedFact], head: str, tail: str) -> list[Step] | None:
    """A shortest chain of facts from ``head`` to ``tail`` (used to explain training answers)."""
    links: dict[str, list[tuple[str, str, bool]]] = defaultdict(list)
    for a, r, b, _ in facts:
        links[a].append((b, r, False))
        links[b].append((a, r, True))
    previous: dict[str, tuple[str, str, bool]] = {head: ("", "", False)}
    queue = deque([head])
    while queue:
        node = queue.popleft()
        if node == tail:
            break
        for nxt, r, backwards in links[node]:
            if nxt not in previous:
                previous[nxt] = (node, r, backwards)
                queue.append(nxt)
    if tail not in previous or tail == head:
        return None
    steps: list[Step] = []
    node = tail
    while node != head:
        parent, r, backwards = previous[node]
        steps.append((r, backwards, node))
        node = parent
    return steps[::-1]


def _folds(rules: RuleBase, relations: tuple[str, ...]) -> set[str]:
    """The results of every bracketing, composing with the most supported named head and the most
    supported invented predicate of each body (an invented head's count must not hide a named one)."""
    if len(relations) == 1:
        return {relations[0]}
    out: set[str] = set()
    for i in range(len(relations) - 1):
        heads = [h for h, _, _ in rules.heads("compose", (relations[i], relations[i + 1]))]
        for head in {next((h for h in heads if h not in rules.invented), None),
                     next((h for h in heads if h in rules.invented), None)} - {None}:
            out |= _folds(rules, relations[:i] + (head,) + relations[i + 2:])
    return out


def induce(examples: list[tuple[list[ParsedFact], tuple[str, str], str]], rounds: int = 3,
           merge: bool = True) -> RuleBase:
    """Rules from (facts, query, answer) examples with chains of two or three facts."""
    chains = []
    for facts, (head, tail), answer in examples:
        chain = chain_between(facts, head, tail)
        if chain is not None and 2 <= len(chain) <= 3:
            chains.append((chain, answer))
    rules = RuleBase()
    for _ in range(rounds):
        new = RuleBase()
        # inversion first: for each backwards step, the readings that let the chain reach the answer
        for chain, answer in chains:
            for i, (r, backwards, reached) in enumerate(chain):
                if not backwards:
                    continue
                readings = _readings(rules, chain, i)
                candidates = [x for x in readings if _explains(rules, chain, answer, {i: x})]
                if len(candidates) == 1:  # count only readings the story pins down
                    new.invert[r, gender(reached)][candidates[0]] += 1
        rules.invert = new.invert or rules.invert
        # then compositions of the chains whose every step now reads forwards
        for chain, answer in chains:
            relations = _forward(rules, chain)
            if relations is None:
                continue
            if len(relations) == 2:
                new.compose[relations[0], relations[1]][answer] += 1
                continue
            r1, r2, r3 = relations
            explained = False
            for body, left in (((r1, r2), True), ((r2, r3), False)):
                inner = rules.best("compose", body)
                if inner is not None and inner not in rules.invented:
                    new.compose[(inner, r3) if left else (r1, inner)][answer] += 1
                    explained = True
            if not explained:  # no named bracketing: invent a predicate for either pair (both readings hold)
                left, right = _invent(rules, (r1, r2)), _invent(rules, (r2, r3))
                new.compose[r1, r2][left] += 1
                new.compose[left, r3][answer] += 1
                new.compose[r2, r3][right] += 1
                new.compose[r1, right][answer] += 1
        for body, counts in rules.compose.items():  # invented bodies survive between rounds
            if any(h in rules.invented for h in counts):
                for h, n in counts.items():
                    if h in rules.invented and body not in new.compose:
                        new.compose[body][h] = n
        rules.compose = new.compose
    return merge_invented(rules) if merge else rules


def _contexts(rules: RuleBase) -> dict[str, dict[tuple[str, str], str]]:
    """Per invented predicate, what it composes to: ("then", r) -> head for (p, r), ("after", r) -> head for (r, p)."""
    out: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    for (x, y), counts in rules.compose.items():
        head = counts.most_common(1)[0][0]
        if x in rules.invented:
            out[x]["then", y] = head
        if y in rules.invented:
            out[y]["after", x] = head
    return out


def merge_invented(rules: RuleBase, min_shared: int = 2) -> RuleBase:
    """One predicate for invented predicates that behave alike (cf. predicate invention by clustering).

    Two invented predicates are merged when they compose with at least ``min_shared`` same neighbours
    and give the same head on every neighbour they share (none in conflict); e.g. a wife's brother and a
    sister's husband, both unnamed, both lead to the same relatives. The merged predicate keeps the
    union of both rule sets, so what was learned from one body's stories serves the other's."""
    contexts = _contexts(rules)
    names = sorted(contexts, key=lambda p: (-len(contexts[p]), int(p[1:])))
    classes: list[tuple[str, dict[tuple[str, str], str]]] = []  # representative, merged contexts
    rename: dict[str, str] = {}
    for name in names:
        mine = contexts[name]
        for representative, theirs in classes:
            shared = mine.keys() & theirs.keys()
            if len(shared) >= min_shared and all(mine[c] == theirs[c] for c in shared):
                rename[name] = representative
                theirs.update(mine)
                break
        else:
            classes.append((name, dict(mine)))
    if not rename:
        return rules
    merged = RuleBase(invert=rules.invert, invented={p: b for p, b in rules.invented.items() if p not in rename})
    for (x, y), counts in rules.compose.items():
        for head, n in counts.items():
            merged.compose[rename.get(x, x), rename.get(y, y)][rename.get(head, head)] += n
    return merged


def _invent(rules: RuleBase, body: tuple[str, str]) -> str:
    """The invented predicate naming ``body`` (a new one the first time the body needs a name)."""
    name = next((p for p, b in rules.invented.items() if b == body), f"p{len(rules.invented)}")
    rules.invented[name] = body
    return name


def _readings(rules: RuleBase, chain: list[Step], i: int) -> set[str]:
    known = {h for counts in rules.compose.values() for h in counts if not h.startswith("p")}
    known |= {b for body in rules.compose for b in body if not b.startswith("p")}
    known |= {r for r, _, _ in chain}
    return known


def _forward(rules: RuleBase, chain: list[Step], fixed: dict[int, str] | None = None) -> list[str] | None:
    out = []
    for i, (r, backwards, reached) in enumerate(chain):
        if fixed and i in fixed:
            out.append(fixed[i])
        elif backwards:
            head = rules.best("invert", (r, gender(reached)))
            if head is None:
                return None
            out.append(head)
        else:
            out.append(r)
    return out


def _explains(rules: RuleBase, chain: list[Step], answer: str, fixed: dict[int, str]) -> bool:
    relations = _forward(rules, chain, fixed)
    if relations is None:
        # other backwards steps are not yet readable: accept a reading that is consistent with the
        # answer's gender only through later rounds; on the first round, two-fact chains suffice
        return False
    if not rules.compose:
        return False
    return answer in _folds(rules, tuple(relations))
