"""CLUTRR-style kinship stories (Sinha et al., EMNLP 2019) generated from a simulated family tree.

A story is a chain of ``k`` kinship facts between a query pair, given in shuffled order in token
form, with noise facts of one of CLUTRR's three kinds mixed in (at ``k = 1``, System 1's single-hop
slice, the one chain fact states the asked relation directly: ``(head, answer, tail)``):

* ``supporting``   - two facts that make a detour through an off-chain relative and rejoin the chain
  (a second path between chain members, every fact true);
* ``irrelevant``   - a fact from a chain member to an off-chain relative who leads nowhere (a dead end);
* ``disconnected`` - facts among the members of another family, unreachable from the query pair.

The answer is the relation between the query pair *read off the family tree* (``relation``), never
from a composition table: whether some order of composing the chain yields it is for the learner to
find. A fact ``(a, r, b)`` reads "b is a's r" (``(a, father, b)``: b is a's father); a stated fact
points either way along the chain (``(b, son, a)`` says the same as ``(a, father, b)``).

The named relations are CLUTRR's: the eight base relations, grandparents and grandchildren,
uncles and aunts, nephews and nieces, and the parents- and children-in-law. Siblings-in-law and
cousins have no name here, so some chains pass through a composition with no name on the way to a
named answer: the learner must invent a predicate for it (``induction``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

BASE = ("father", "mother", "son", "daughter", "brother", "sister", "husband", "wife")
NAMED = BASE + ("grandfather", "grandmother", "grandson", "granddaughter", "uncle", "aunt", "nephew", "niece",
                "father-in-law", "mother-in-law", "son-in-law", "daughter-in-law")
NOISE = ("none", "supporting", "irrelevant", "disconnected")
N_NAMES = 30  # per gender; a story's people get distinct names, the name tells the gender (as in CLUTRR)
SPECIALS = ("<pad>", ".", "?", "=")
NAMES = tuple(f"M{i}" for i in range(N_NAMES)) + tuple(f"F{i}" for i in range(N_NAMES))
VOCAB = SPECIALS + NAMES + NAMED
TOKEN_ID = {token: i for i, token in enumerate(VOCAB)}

Fact = tuple[str, str, str]  # (a, relation, b): b is a's relation


def gendered(male: str, female: str, gender: str) -> str:
    return male if gender == "m" else female


@dataclass
class Person:
    id: int
    gender: str  # "m" or "f"
    father: int | None = None
    mother: int | None = None
    spouse: int | None = None
    children: list[int] = field(default_factory=list)


class FamilyTree:
    """A monogamous family over a few generations; outsiders marry in, some with their own parents."""

    def __init__(self, rng: np.random.Generator, generations: int = 4) -> None:
        self.people: list[Person] = []
        self.rng = rng
        self._named: dict[int, list[tuple[str, int]]] = {}
        couples = [(self._new("m"), self._new("f"))]
        self._marry(*couples[0])
        for generation in range(generations - 1):
            next_couples = []
            for husband, wife in couples:
                for _ in range(int(rng.integers(1, 4))):
                    child = self._new("m" if rng.random() < 0.5 else "f", father=husband, mother=wife)
                    if generation < generations - 2 and rng.random() < 0.85:
                        partner = self._outsider("f" if self.people[child].gender == "m" else "m")
                        self._marry(child, partner)
                        pair = (child, partner) if self.people[child].gender == "m" else (partner, child)
                        next_couples.append(pair)
            couples = next_couples

    def _new(self, gender: str, father: int | None = None, mother: int | None = None) -> int:
        person = Person(len(self.people), gender, father, mother)
        self.people.append(person)
        for parent in (father, mother):
            if parent is not None:
                self.people[parent].children.append(person.id)
        return person.id

    def _marry(self, a: int, b: int) -> None:
        self.people[a].spouse, self.people[b].spouse = b, a

    def _outsider(self, gender: str) -> int:
        """Someone marrying in; half of them bring parents and maybe a sibling (in-laws to reach)."""
        if self.rng.random() < 0.5:
            return self._new(gender)
        father, mother = self._new("m"), self._new("f")
        self._marry(father, mother)
        person = self._new(gender, father, mother)
        if self.rng.random() < 0.5:
            self._new("m" if self.rng.random() < 0.5 else "f", father, mother)
        return person

    # ------------------------------------------------------------------ kinship read off the tree

    def parents(self, a: int) -> list[int]:
        p = self.people[a]
        return [x for x in (p.father, p.mother) if x is not None]

    def siblings(self, a: int) -> list[int]:
        p = self.people[a]
        if p.father is None:
            return []
        return [c for c in self.people[p.father].children if c != a]

    def spouse(self, a: int) -> list[int]:
        s = self.people[a].spouse
        return [] if s is None else [s]

    def neighbours(self, a: int) -> list[tuple[str, int]]:
        """Base-relation edges out of ``a``: (relation of the neighbour to a, neighbour)."""
        out = []
        for x in self.parents(a):
            out.append((gendered("father", "mother", self.people[x].gender), x))
        for x in self.people[a].children:
            out.append((gendered("son", "daughter", self.people[x].gender), x))
        for x in self.siblings(a):
            out.append((gendered("brother", "sister", self.people[x].gender), x))
        for x in self.spouse(a):
            out.append((gendered("husband", "wife", self.people[x].gender), x))
        return out

    def named_neighbours(self, a: int) -> list[tuple[str, int]]:
        """Everyone with a named relation to ``a`` (a story fact may state any named relation)."""
        if a not in self._named:
            self._named[a] = [(r, x) for x in range(len(self.people)) if x != a
                              for r in [self.relation(a, x)] if r is not None]
        return self._named[a]

    def relation(self, a: int, c: int) -> str | None:
        """The name of c's relation to a (None where CLUTRR's vocabulary has none)."""
        g = self.people[c].gender
        if c in self.spouse(a):
            return gendered("husband", "wife", g)
        if c in self.parents(a):
            return gendered("father", "mother", g)
        if c in self.people[a].children:
            return gendered("son", "daughter", g)
        if c in self.siblings(a):
            return gendered("brother", "sister", g)
        if any(c in self.parents(p) for p in self.parents(a)):
            return gendered("grandfather", "grandmother", g)
        if any(c in self.people[x].children for x in self.people[a].children):
            return gendered("grandson", "granddaughter", g)
        parents_siblings = [s for p in self.parents(a) for s in self.siblings(p)]
        if c in parents_siblings or any(c in self.spouse(s) for s in parents_siblings):
            return gendered("uncle", "aunt", g)
        siblings = self.siblings(a) + [s for x in self.spouse(a) for s in self.siblings(x)]
        if any(c in self.people[s].children for s in siblings):
            return gendered("nephew", "niece", g)
        if any(c in self.parents(x) for x in self.spouse(a)):
            return gendered("father-in-law", "mother-in-law", g)
        if any(c in self.spouse(x) for x in self.people[a].children):
            return gendered("son-in-law", "daughter-in-law", g)
        return None


@dataclass
class Story:
    facts: list[Fact]  # as stated, shuffled, noise included
    chain: list[Fact]  # the k chain facts oriented from the query head to the query tail
    query: tuple[str, str]
    answer: str
    k: int
    noise: str
    left_fold_named: bool  # every prefix of the chain has a name (a left-to-right fold of named steps can work)
    needs_invention: bool  # no bracketing with named intermediates only: some order needs an unnamed two-step span

    def tokens(self) -> list[str]:
        out: list[str] = []
        for a, r, b in self.facts:
            out += [a, r, b, "."]
        return out + ["?", self.query[0], self.query[1], "="]

    def ids(self) -> list[int]:
        return [TOKEN_ID[t] for t in self.tokens()]


def _walk(tree: FamilyTree, rng: np.random.Generator, k: int) -> list[int] | None:
    path = [int(rng.integers(len(tree.people)))]
    for _ in range(k):
        options = [x for _, x in tree.named_neighbours(path[-1]) if x not in path]
        if not options:
            return None
        path.append(options[int(rng.integers(len(options)))])
    return path


def _stated(tree: FamilyTree, a: int, b: int, rng: np.random.Generator) -> tuple[int, str, int]:
    """The base fact between neighbours a and b, told from either end."""
    if rng.random() < 0.5:
        a, b = b, a
    return a, tree.relation(a, b) or "", b


def _noise(tree: FamilyTree, path: list[int], kind: str, rng: np.random.Generator, count: int,
           generations: int) -> tuple[list[tuple[int, str, int]], FamilyTree | None]:
    on_path = set(path)
    out: list[tuple[int, str, int]] = []
    used: set[int] = set()
    if kind == "irrelevant":
        for _ in range(count):
            i = int(rng.integers(len(path)))
            options = [x for _, x in tree.named_neighbours(path[i]) if x not in on_path and x not in used]
            if options:
                x = options[int(rng.integers(len(options)))]
                used.add(x)
                out.append(_stated(tree, path[i], x, rng))
    elif kind == "supporting":
        functional2 = semantics()[0]
        detours = [(i, x) for i in range(len(path) - 1) for r1, x in tree.named_neighbours(path[i])
                   if x not in on_path and functional2.get((r1, tree.relation(x, path[i + 1])))
                   == tree.relation(path[i], path[i + 1])]
        rng.shuffle(detours)
        for i, x in detours[:count]:
            if x in used:
                continue
            used.add(x)
            out += [_stated(tree, path[i], x, rng), _stated(tree, x, path[i + 1], rng)]
    elif kind == "disconnected":
        other = FamilyTree(rng, generations)
        walk = None
        while walk is None:
            walk = _walk(other, rng, count)
        return [_stated(other, walk[i], walk[i + 1], rng) for i in range(count)], other
    return out, None


@functools.cache
def semantics(trees: int = 6, walks: int = 4000, seed: int = 12345) -> tuple[dict, dict, dict]:
    """Which compositions the family tree itself fixes, measured on simulated families.

    Walking simple paths on random trees, ``(x, y) -> z`` is *functional* when every sampled
    two-step walk with relations x then y ends in relation z to its start (a named z), and
    ``(x, y, w) -> z`` likewise for three steps whose first (or last) two have no name (a
    composition the learner must invent a predicate for). Stories are kept only if some order of such steps
    reaches the answer (CLUTRR's "the answer is fixed by composing in some order"); the learner
    never sees these tables.
    """
    rng = np.random.default_rng(seed)
    seen: list[dict[tuple, set]] = [{}, {}, {}]  # two steps; three, first pair unnamed; three, last pair unnamed
    counts: list[dict[tuple, int]] = [{}, {}, {}]

    def record(table: int, key: tuple, value: str | None) -> None:
        seen[table].setdefault(key, set()).add(value)
        counts[table][key] = counts[table].get(key, 0) + 1

    for _ in range(trees):
        tree = FamilyTree(rng, 5)
        for x in range(len(tree.people)):  # every two-step simple path
            for r1, y in tree.named_neighbours(x):
                for r2, z in tree.named_neighbours(y):
                    if z != x:
                        record(0, (r1, r2), tree.relation(x, z))
        for _ in range(walks):  # three-step ones, sampled
            path = _walk(tree, rng, 3)
            if path is None:
                continue
            r = tuple(tree.relation(path[j], path[j + 1]) for j in range(3))
            if tree.relation(path[0], path[2]) is None:
                record(1, r, tree.relation(path[0], path[3]))
            if tree.relation(path[1], path[3]) is None:
                record(2, r, tree.relation(path[0], path[3]))
    # a composition seen only a few times cannot be called functional: left out
    return tuple({key: next(iter(v)) for key, v in seen[t].items()  # type: ignore[return-value]
                  if len(v) == 1 and None not in v and counts[t][key] >= 5} for t in range(3))


def _some_order(tree: FamilyTree, path: list[int], invented: bool) -> bool:
    """Whether some bracketing of the chain composes to its answer by functional steps with every
    intermediate span named (``invented``: also a three-part step whose first or last two parts have
    no name, a composition the learner needs an invented predicate for)."""
    k = len(path) - 1
    functional2, functional3, functional3r = semantics()
    rel = functools.cache(lambda i, j: tree.relation(path[i], path[j]))

    @functools.cache
    def solvable(i: int, j: int) -> bool:
        if j - i == 1:
            return True
        target = rel(i, j)
        if target is None:
            return False
        if any(solvable(i, m) and solvable(m, j) and functional2.get((rel(i, m), rel(m, j))) == target
               for m in range(i + 1, j)):
            return True
        if not invented:
            return False
        for a in range(i + 1, j - 1):
            for b in range(a + 1, j):
                parts = (rel(i, a), rel(a, b), rel(b, j))
                if not (solvable(i, a) and solvable(a, b) and solvable(b, j)):
                    continue
                if rel(i, b) is None and functional3.get(parts) == target:
                    return True
                if rel(a, j) is None and functional3r.get(parts) == target:
                    return True
        return False

    return solvable(0, k)


def _expand(tree: FamilyTree, rng: np.random.Generator, k: int, invent: float = 0.25) -> list[int] | None:
    """A chain of ``k`` facts built backwards from its answer, CLUTRR style: start from two relatives
    and replace a random edge by two (or, with probability ``invent``, three) edges whose functional
    composition on the tree gives that edge's relation, until the chain has ``k`` edges."""
    functional2, functional3, functional3r = semantics()
    start = int(rng.integers(len(tree.people)))
    if not tree.named_neighbours(start):
        return None
    _, end = tree.named_neighbours(start)[int(rng.integers(len(tree.named_neighbours(start))))]
    path = [start, end]
    while len(path) - 1 < k:
        expanded = False
        for i in rng.permutation(len(path) - 1):
            x, z = path[i], path[i + 1]
            r = tree.relation(x, z)
            options: list[list[int]] = []
            if k - (len(path) - 1) >= 2 and rng.random() < invent:
                for r1, y1 in tree.named_neighbours(x):
                    for r2, y2 in tree.named_neighbours(y1):
                        if y1 in path or y2 in path or y2 == x:
                            continue
                        r3 = tree.relation(y2, z)
                        if r3 is None:
                            continue
                        if tree.relation(x, y2) is None and functional3.get((r1, r2, r3)) == r:
                            options.append([y1, y2])
                        elif tree.relation(y1, z) is None and functional3r.get((r1, r2, r3)) == r:
                            options.append([y1, y2])
            if not options:
                options = [[y] for r1, y in tree.named_neighbours(x) if y not in path
                           and functional2.get((r1, tree.relation(y, z))) == r]
            if options:
                path[i + 1:i + 1] = options[int(rng.integers(len(options)))]
                expanded = True
                break
        if not expanded:
            return None
    return path


def make_story(rng: np.random.Generator, k: int, noise: str = "none", generations: int = 5,
               max_noise: int = 2) -> Story:
    """One story with a chain of ``k`` facts whose endpoints' tree relation has a name."""
    if noise not in NOISE:
        raise ValueError(f"noise must be one of {NOISE}, got {noise!r}")
    while True:
        tree = FamilyTree(rng, generations)
        path = _expand(tree, rng, k)
        if path is not None:
            break
    answer = tree.relation(path[0], path[-1]) or ""
    count = int(rng.integers(1, max_noise + 1))
    extra, other = _noise(tree, path, noise, rng, count, generations)
    chain_ids = [(path[i], path[i + 1]) for i in range(k)]
    stated = [_stated(tree, a, b, rng) for a, b in chain_ids]
    if k == 1:  # a single-hop query: the asked relation is stated directly, from the query head
        stated = [(path[0], answer, path[1])]
    # names: distinct per story, by gender; the other family's people get their own names
    people = [("t", x) for x in path] + [("t", x) for f in (stated + ([] if other else extra)) for x in (f[0], f[2])]
    people += [("o", x) for f in (extra if other else []) for x in (f[0], f[2])]
    names: dict[tuple[str, int], str] = {}
    pools = {g: list(rng.permutation(N_NAMES)) for g in "mf"}
    for who in people:
        if who not in names:
            gender = (tree if who[0] == "t" else other).people[who[1]].gender  # type: ignore[union-attr]
            names[who] = f"{'M' if gender == 'm' else 'F'}{pools[gender].pop()}"
    facts = [(names["t", a], r, names["t", b]) for a, r, b in stated]
    side = "o" if other else "t"
    facts += [(names[side, a], r, names[side, b]) for a, r, b in extra]
    order = rng.permutation(len(facts))
    chain = [(names["t", a], tree.relation(a, b) or "", names["t", b]) for a, b in chain_ids]
    left = all(tree.relation(path[0], path[i]) is not None for i in range(1, k + 1))
    return Story([facts[i] for i in order], chain, (names["t", path[0]], names["t", path[-1]]), answer, k, noise,
                 left, not _some_order(tree, path, invented=False))


def make_stories(seed: int, n: int, ks: tuple[int, ...], noises: tuple[str, ...] = NOISE) -> list[Story]:
    """``n`` stories, chain lengths and noise kinds drawn uniformly from ``ks`` and ``noises``."""
    rng = np.random.default_rng(seed)
    return [make_story(rng, int(rng.choice(ks)), str(rng.choice(noises))) for _ in range(n)]


def oracle_parse(tokens: list[str]) -> list[tuple[str, str, str, float]]:
    """The hand parser (the oracle row): every ``a r b .`` group, confidence 1."""
    facts = []
    for i, token in enumerate(tokens):
        if token == "." and i >= 3:
            facts.append((tokens[i - 3], tokens[i - 2], tokens[i - 1], 1.0))
    return facts
