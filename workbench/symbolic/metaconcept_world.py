"""A concept world for metaconcept learning (VCML-style: Han et al., NeurIPS 2019).

Two kinds of concept words, all opaque tokens (``w17``), so no name leaks a relation:

* **perceptual** concepts - attribute values (``kind k, value v``) and the leaf categories of a
  taxonomy. System 1 sees them in *observations*: an instance is shown as look tokens
  (``p3 p9 p0 p12``, in shuffled order) followed by questions ``? w yes|no`` (does word w apply to
  it?). Some meanings have two names (synonyms).
* **abstract** concepts - the inner nodes of the taxonomy, known only through language:
  ``x is-a y`` facts. A leaf's second name has no is-a fact; its parent is reached through the
  name that has one.

Metaconcepts (``synonym``, ``same-kind``, ``is-a``) are taught only by example queries with their
answers, as token sequences ``? synonym a b yes``. **Held-out** words appear in observations but
in no metaconcept query and no fact of the training split: queries about them must be answered
from what System 1 grounded (the VCML test). ``is-a`` queries of the training split need at most
two hops; the test asks up to six.

Everything is generated from one seed (``numpy.random.default_rng``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

QUERY_KINDS = ("synonym", "same-kind", "is-a")
ASK, YES, NO, STOP, ISA = "?", "yes", "no", ".", "is-a"
CATEGORY_KIND = -1  # the "kind" of every leaf category (all leaves are alike: categories)


@dataclass(frozen=True)
class WorldSpec:
    """Sizes of a concept world; every field has a use in ``make_world``."""

    n_roots: int = 3  # taxonomy trees
    levels: int = 8  # levels 0..levels-1 of the deep trees; their leaves sit on the last one
    shallow_levels: int = 3  # the first tree's height: its leaves are within two hops of the root, so
    # the training split has negative is-a queries about leaves too (else "a leaf is-a anything" would pay)
    max_width: int = 6  # nodes per level per tree, at most
    n_kinds: int = 3  # attribute kinds (colour, shape, ...)
    n_values: int = 4  # values per kind
    synonym_rate: float = 0.6  # chance that a perceptual meaning has a second name
    heldout_rate: float = 0.45  # share of eligible words held out of every fact and training query

    def validate(self) -> None:
        for name in ("n_roots", "levels", "shallow_levels", "max_width", "n_kinds", "n_values"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {getattr(self, name)!r}")
        for name in ("synonym_rate", "heldout_rate"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie strictly between 0 and 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Query:
    kind: str  # one of QUERY_KINDS
    subject: str
    target: str
    label: bool
    depth: int = 0  # is-a: hops from the subject's category to the target's level (0 for the others)

    def tokens(self) -> list[str]:
        return [ASK, self.kind, self.subject, self.target]


@dataclass
class ConceptWorld:
    parent: dict[str, str]  # is-a edges between category primary names (child -> parent)
    level: dict[str, int]  # category -> level (0: root)
    leaves: list[str]  # perceptual category primary names
    meaning: dict[str, tuple[int, int]]  # perceptual word -> (kind, value); leaves: (CATEGORY_KIND, leaf index)
    names: dict[tuple[int, int], list[str]]  # meaning -> its names, primary first
    look: dict[tuple[int, int], str]  # meaning -> the look token an instance shows
    heldout: set[str]
    spec: WorldSpec
    vocab: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ structure

    @property
    def categories(self) -> list[str]:
        return sorted(self.level, key=lambda c: (self.level[c], c))

    @property
    def perceptual(self) -> list[str]:
        return sorted(self.meaning)

    @property
    def known(self) -> list[str]:
        return [w for w in self.perceptual if w not in self.heldout]

    def leaf_of(self, word: str) -> str | None:
        """The primary name of the leaf category a word names (None for attributes and abstract words)."""
        if word in self.level:
            return word
        meaning = self.meaning.get(word)
        return self.names[meaning][0] if meaning is not None and meaning[0] == CATEGORY_KIND else None

    def ancestors(self, category: str) -> list[str]:
        """Parent, grandparent, ... up to the root."""
        chain = []
        while category in self.parent:
            category = self.parent[category]
            chain.append(category)
        return chain

    def same_kind(self, a: str, b: str) -> bool:
        return self.meaning[a][0] == self.meaning[b][0]

    def is_synonym(self, a: str, b: str) -> bool:
        return a != b and self.meaning[a] == self.meaning[b]

    def is_a(self, a: str, b: str) -> bool:
        leaf = self.leaf_of(a)
        return leaf is not None and b in self.ancestors(leaf)

    def facts(self) -> list[list[str]]:
        """The language facts of the training split: ``x is-a y .`` for every taxonomy edge."""
        return [[child, ISA, parent, STOP] for child, parent in sorted(self.parent.items())]

    # ------------------------------------------------------------------ observations

    def sample_instance(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        return int(rng.integers(len(self.leaves))), tuple(int(v) for v in rng.integers(self.spec.n_values, size=self.spec.n_kinds))

    def applies(self, word: str, instance: tuple[int, tuple[int, ...]]) -> bool:
        kind, value = self.meaning[word]
        leaf, values = instance
        return value == leaf if kind == CATEGORY_KIND else values[kind] == value

    def looks(self, instance: tuple[int, tuple[int, ...]], rng: np.random.Generator) -> list[str]:
        leaf, values = instance
        shown = [self.look[(CATEGORY_KIND, leaf)]] + [self.look[(k, v)] for k, v in enumerate(values)]
        return [shown[i] for i in rng.permutation(len(shown))]

    def observation(self, rng: np.random.Generator, n_questions: int = 3) -> list[str]:
        """``looks ? w yes ? w no ...``: half the questions ask a word that applies."""
        instance = self.sample_instance(rng)
        words = self.perceptual
        tokens = self.looks(instance, rng)
        for _ in range(n_questions):
            want = bool(rng.random() < 0.5)
            pool = [w for w in words if self.applies(w, instance) == want]
            word = pool[int(rng.integers(len(pool)))]
            tokens += [ASK, word, YES if want else NO]
        return tokens


def _taxonomy(spec: WorldSpec, rng: np.random.Generator) -> tuple[dict[int, int], dict[int, int]]:
    """Trees (the first ``shallow_levels`` high, the others ``levels``): every inner node has 1-2
    children, a level of a tree holds <= max_width nodes, every leaf is on its tree's last level."""
    parent: dict[int, int] = {}
    level: dict[int, int] = {}
    next_id = 0
    for tree in range(spec.n_roots):
        frontier = [next_id]
        level[next_id] = 0
        next_id += 1
        for depth in range(1, spec.shallow_levels if tree == 0 else spec.levels):
            children: list[int] = []
            for node in frontier:
                room = spec.max_width - len(children) - (len(frontier) - frontier.index(node) - 1)
                n_children = 2 if rng.random() < 0.45 and room >= 2 else 1
                for _ in range(n_children):
                    parent[next_id], level[next_id] = node, depth
                    children.append(next_id)
                    next_id += 1
            frontier = children
    return parent, level


def make_world(seed: int, spec: WorldSpec | None = None) -> ConceptWorld:
    """A concept world drawn from ``seed``; the same seed gives the same world."""
    spec = spec or WorldSpec()
    spec.validate()
    rng = np.random.default_rng([seed, 1901])
    tree_parent, tree_level = _taxonomy(spec, rng)
    leaf_ids = sorted(set(tree_level) - set(tree_parent.values()))
    meanings = [(CATEGORY_KIND, i) for i in range(len(leaf_ids))]
    meanings += [(k, v) for k in range(spec.n_kinds) for v in range(spec.n_values)]
    second_name = {m: bool(rng.random() < spec.synonym_rate) for m in meanings}
    # The shallow tree's leaves always have a known second name: the training split then asks is-a
    # about second names with "no" answers too (its other second names are all deep, hence "yes").
    shallow = {(CATEGORY_KIND, i) for i, n in enumerate(leaf_ids) if tree_level[n] < spec.levels - 1}
    second_name.update({m: True for m in shallow})
    n_words = len(tree_level) + len(meanings) + sum(second_name.values())
    word_ids = rng.permutation(n_words)  # opaque, shuffled names: a word's number says nothing
    look_ids = rng.permutation(len(meanings))
    taken = iter(f"w{i}" for i in word_ids)
    category_name = {node: next(taken) for node in sorted(tree_level)}
    names: dict[tuple[int, int], list[str]] = {}
    for m in meanings:
        primary = category_name[leaf_ids[m[1]]] if m[0] == CATEGORY_KIND else next(taken)
        names[m] = [primary] + ([next(taken)] if second_name[m] else [])
    meaning = {w: m for m, ws in names.items() for w in ws}
    # Held out: any attribute name, and a leaf's *second* name (the first carries the is-a facts).
    eligible = sorted(w for m, ws in names.items() for i, w in enumerate(ws) if m[0] != CATEGORY_KIND or i > 0)
    heldout = {w for w in eligible if rng.random() < spec.heldout_rate and meaning[w] not in shallow}
    world = ConceptWorld(
        parent={category_name[c]: category_name[p] for c, p in tree_parent.items()},
        level={category_name[n]: lv for n, lv in tree_level.items()},
        leaves=[category_name[n] for n in leaf_ids],
        meaning=meaning, names=names,
        look={m: f"p{look_ids[i]}" for i, m in enumerate(meanings)},
        heldout=heldout, spec=spec)
    world.vocab = [ASK, YES, NO, STOP, *QUERY_KINDS] + sorted({*world.level, *meaning}) + sorted(world.look.values())
    return world


# ---------------------------------------------------------------------------------- queries


def _pick(items: list, rng: np.random.Generator):
    return items[int(rng.integers(len(items)))]


def pair_queries(world: ConceptWorld, kind: str, n: int, heldout: bool, rng: np.random.Generator) -> list[Query]:
    """Balanced ``synonym`` / ``same-kind`` queries; with ``heldout`` the subject is a held-out word,
    else both words are known (the training split never names a held-out word)."""
    if kind not in ("synonym", "same-kind"):
        raise ValueError(f"pair queries are synonym or same-kind, not {kind!r}")
    relation = world.is_synonym if kind == "synonym" else world.same_kind
    subjects = sorted(world.heldout) if heldout else world.known
    others = world.perceptual if heldout else world.known
    queries: list[Query] = []
    for _ in range(50 * n):
        if len(queries) == n:
            break
        subject, want = _pick(subjects, rng), len(queries) % 2 == 0
        pool = [w for w in others if w != subject and relation(subject, w) == want]
        if not want and kind == "synonym" and rng.random() < 0.5:  # hard negatives: the same kind, another value
            pool = [w for w in pool if world.same_kind(subject, w)] or pool
        if pool:
            queries.append(Query(kind, subject, _pick(pool, rng), want))
    if len(queries) < n:
        raise ValueError(f"the world has too few {'held-out ' if heldout else ''}words for {n} {kind} queries")
    return queries


def isa_queries(world: ConceptWorld, depths: Iterable[int], n: int, heldout: bool, rng: np.random.Generator,
                train_split: bool = False) -> list[Query]:
    """Balanced ``is-a`` queries at the given depths (hops from the subject's category).

    Positive: the target is the ancestor ``depth`` hops up. Negative: a category on that same
    level that is not an ancestor. Subjects: held-out leaf second names (``heldout``), or known
    categories and known leaf second names. ``train_split``: only queries whose proof needs at
    most ``max(depths)`` hops - a negative's proof walks to the root, so its subject must be that
    close to the root.
    """
    depths = list(depths)
    leaf_seconds = [w for w in world.perceptual if world.meaning[w][0] == CATEGORY_KIND and w not in world.level]
    if heldout:
        groups = [[w for w in leaf_seconds if w in world.heldout]]
    else:  # categories and second names in equal shares, each half "yes": no group is always "yes"
        groups = [g for g in (world.categories, [w for w in leaf_seconds if w not in world.heldout]) if g]
    queries: list[Query] = []
    for _ in range(50 * n):
        if len(queries) == n:
            break
        depth, want = _pick(depths, rng), len(queries) % 2 == 0
        subject = _pick(groups[(len(queries) // 2) % len(groups)], rng)
        chain = world.ancestors(world.leaf_of(subject))
        if len(chain) < depth or (train_split and not want and len(chain) > max(depths)):
            continue
        if want:
            target = chain[depth - 1]
        else:
            level = world.level[chain[depth - 1]]
            pool = [c for c in world.categories if world.level[c] == level and c not in chain]
            if not pool:
                continue
            target = _pick(pool, rng)
        queries.append(Query("is-a", subject, target, want, depth))
    if len(queries) < n:
        raise ValueError(f"the world has too few subjects for {n} is-a queries at depths {depths}")
    return queries


TRAIN_ISA_DEPTHS = (1, 2)
TEST_ISA_DEPTHS = (1, 2, 3, 4, 5, 6)
HELDOUT_SLICES = ("heldout synonym", "heldout same-kind", "heldout is-a")


def training_queries(world: ConceptWorld, n: int, rng: np.random.Generator) -> list[Query]:
    """The training split: known words only, is-a of depth 1-2, the three kinds in equal shares."""
    third = max(n // 3, 2)
    queries = (pair_queries(world, "synonym", third, False, rng) + pair_queries(world, "same-kind", third, False, rng)
               + isa_queries(world, TRAIN_ISA_DEPTHS, third, False, rng, train_split=True))
    return [queries[i] for i in rng.permutation(len(queries))]


def evaluation_slices(world: ConceptWorld, n: int, rng: np.random.Generator) -> dict[str, list[Query]]:
    """Held-out metaconcept slices (subjects never in a fact or training query) and is-a by depth."""
    slices = {
        "heldout synonym": pair_queries(world, "synonym", n, True, rng),
        "heldout same-kind": pair_queries(world, "same-kind", n, True, rng),
        "heldout is-a": isa_queries(world, TEST_ISA_DEPTHS, n, True, rng),
    }
    for depth in TEST_ISA_DEPTHS:
        slices[f"is-a depth {depth}"] = isa_queries(world, [depth], n, False, rng)
    return slices


def query_sequence(query: Query) -> list[str]:
    """A training query as System 1 reads it: ``? kind a b yes|no``."""
    return query.tokens() + [YES if query.label else NO]


def probe_instances(world: ConceptWorld, rng: np.random.Generator, per_leaf: int = 2) -> list[tuple[int, tuple[int, ...]]]:
    """Instances to read denotations on: every leaf shown with every value of every kind
    ``per_leaf`` times (a random cyclic shift per kind), so any two concepts that can co-occur do."""
    n_values, probes = world.spec.n_values, []
    for leaf in range(len(world.leaves)):
        for _ in range(per_leaf):
            shifts = rng.integers(n_values, size=world.spec.n_kinds)
            probes += [(leaf, tuple(int((j + s) % n_values) for s in shifts)) for j in range(n_values)]
    return probes
