"""Generated reasoning tasks in token form, deterministic by seed, registered for the harness.

Every episode is one token sequence in the clause grammar of ``workbench.symbolic.store``:
context clauses ended by ``.``, then queries ``? q1 .. qn answer``. The lm head is trained on the
answer token only (the label); every other position carries no loss.

* ``hops`` - multi-hop recall. Chains a -> b -> c ... stated as shuffled ``k v`` pairs; the
  query ``? > > > a`` asks for a's third successor (the key comes last, so one hop is plain
  associative recall, predicted at the key). Train 1-2 hops, test 3-6.
* ``kinship`` - CLUTRR-style (Sinha et al., 2019). A random family tree, a chain of kinship
  facts through it (some stated backwards with the inverse relation, some restated, plus
  distractor relatives); ``? x z`` asks the relation of z to x. Train chains 2-3, test 4-10.
  Relations are gender-free and named by (generations up to the common ancestor, down from it).
* ``temporal`` - a stream of distinct events; ``? first x y`` (which came first) and
  ``? after x`` (what came right after). Train streams of 16-48 events, test up to 256.
* ``concepts`` - VCML-style (Han et al., 2019). Objects with a colour, shape and material,
  each named by one of two synonyms; metaconcept facts (``synonym``, ``same-kind``, ``is-a``)
  stated in some contexts; yes/no queries about objects (``? o has w``), metaconcepts
  (``? a same-kind b``), and few-shot concepts: a new word introduced by one example, with or
  without a metaconcept fact about it. Test metaconcept queries use held-out words.

Each task also returns its generator's true rules (``true_rules``), to score learned ones.

Registration: ``workbench.tasks`` imports this module, which adds ``SYMBOLIC_TASKS`` to
``workbench.tasks.TASKS`` when it has loaded (either import order works).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.model import IGNORE, Model, TaskIO
from workbench.symbolic.rules import Hypothesis, compose, inverse, rules_true_in
from workbench.symbolic.store import ASK, NO, SEP, YES, Store
from workbench.tasks.base import Batch, Task

PAD = "<pad>"
SPECIALS = [PAD, SEP, ASK, YES, NO]


# ----------------------------------------------------------------------------- episodes


@dataclass
class Episode:
    tokens: list[str]
    queries: list[tuple[int, int]]  # (position of "?", position of its answer)
    meta: list[dict] = field(default_factory=list)

    @property
    def context(self) -> list[str]:
        return self.tokens[: self.queries[0][0]]

    def query(self, i: int) -> list[str]:
        start, end = self.queries[i]
        return self.tokens[start + 1 : end]

    def answer(self, i: int) -> str:
        return self.tokens[self.queries[i][1]]

    def __len__(self) -> int:
        return len(self.queries)


def make_episode(clauses: list[list[str]], queries: list[tuple[list[str], str, dict]]) -> Episode:
    tokens: list[str] = []
    for clause in clauses:
        tokens += clause + [SEP]
    spans, meta = [], []
    for q, answer, info in queries:
        start = len(tokens)
        tokens += [ASK] + q + [answer]
        spans.append((start, len(tokens) - 1))
        meta.append(info)
    return Episode(tokens, spans, meta)


# ----------------------------------------------------------------------------- the harness side


class SymbolicTask(Task):
    """Shared Task machinery: vocabulary, batches, per-slice evaluation, System 1 read-out.

    Subclasses define ``vocabulary()``, ``generate(rng, slice)`` (slice None = the training
    distribution), ``train_slices`` and ``test_slices``.
    """

    name = ""
    metric = "accuracy"
    train_slices: tuple[str, ...] = ()
    test_slices: tuple[str, ...] = ()

    def __init__(self, n_eval: int = 200, eval_seed: int = 4321) -> None:
        self.vocab = SPECIALS + [t for t in self.vocabulary() if t not in SPECIALS]
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.io = TaskIO(input_kind="tokens", head="lm", vocab_size=len(self.vocab))
        self.n_eval, self.eval_seed = n_eval, eval_seed
        self._eval: dict[str, list[Episode]] = {}

    # -- to define
    def vocabulary(self) -> list[str]:
        raise NotImplementedError

    def generate(self, rng: np.random.Generator, slice_name: str | None = None) -> Episode:
        raise NotImplementedError

    def true_rules(self) -> set[Hypothesis]:
        return set()

    # -- data
    @property
    def slices(self) -> tuple[str, ...]:
        return self.train_slices + tuple(s for s in self.test_slices if s not in self.train_slices)

    def episodes(self, n: int, seed: int | list[int], slice_name: str | None = None) -> list[Episode]:
        rng = np.random.default_rng(seed)
        return [self.generate(rng, slice_name) for _ in range(n)]

    def eval_set(self, slice_name: str) -> list[Episode]:
        if slice_name not in self._eval:
            self._eval[slice_name] = self.episodes(self.n_eval, [self.eval_seed, self.slices.index(slice_name)], slice_name)
        return self._eval[slice_name]

    def encode(self, episodes: list[Episode]) -> Batch:
        width = max(len(e.tokens) for e in episodes) - 1
        inputs = torch.full((len(episodes), width), self.index[PAD], dtype=torch.long)
        targets = torch.full((len(episodes), width), IGNORE, dtype=torch.long)
        for row, episode in enumerate(episodes):
            ids = torch.tensor([self.index[t] for t in episode.tokens])
            inputs[row, : len(ids) - 1] = ids[:-1]
            for _, answer in episode.queries:
                targets[row, answer - 1] = ids[answer]
        return Batch(inputs, targets)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return self.encode(self.episodes(batch_size, seed))

    # -- System 1 read-out
    @torch.no_grad()
    def predict(self, model: Model, episodes: list[Episode], batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """System 1's answer and its probability for every query of every episode."""
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(episodes), batch_size):
            chunk = episodes[start : start + batch_size]
            batch = self.encode(chunk)
            probs = model(batch.inputs.to(device)).float().softmax(-1).cpu()
            for row, episode in enumerate(chunk):
                answers = []
                for _, answer in episode.queries:
                    p, i = probs[row, answer - 1].max(-1)
                    answers.append((self.vocab[int(i)], float(p)))
                out.append(answers)
        return out

    def accuracy(self, model: Model, episodes: list[Episode]) -> float:
        hits = [pred == e.answer(i) for e, preds in zip(episodes, self.predict(model, episodes))
                for i, (pred, _) in enumerate(preds)]
        return sum(hits) / max(len(hits), 1)

    def evaluate(self, model: Model, final: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        inside = [e for s in self.train_slices for e in self.eval_set(s)]
        metrics = {"accuracy": self.accuracy(model, inside)}
        if final:
            for s in self.slices:
                metrics[f"accuracy@{s}"] = self.accuracy(model, self.eval_set(s))
        model.train(was_training)
        return metrics

    def state(self) -> dict[str, Any]:
        return {"vocab": list(self.vocab)}


# ----------------------------------------------------------------------------- hops


class HopsTask(SymbolicTask):
    name = "hops"

    def __init__(self, n_chains: int = 4, chain_len: int = 6, n_symbols: int = 64, n_queries: int = 4,
                 train_hops: int = 2, n_eval: int = 200, eval_seed: int = 4321) -> None:
        if n_chains * (chain_len + 1) > n_symbols:
            raise ValueError(f"{n_chains} chains of {chain_len} hops need {n_chains * (chain_len + 1)} symbols")
        self.n_chains, self.chain_len, self.n_symbols = n_chains, chain_len, n_symbols
        self.n_queries, self.train_hops = n_queries, train_hops
        self.train_slices = tuple(f"hops{h}" for h in range(1, train_hops + 1))
        self.test_slices = tuple(f"hops{h}" for h in range(1, chain_len + 1))
        super().__init__(n_eval, eval_seed)

    def vocabulary(self) -> list[str]:
        return [">"] + [f"s{i}" for i in range(self.n_symbols)]

    def generate(self, rng: np.random.Generator, slice_name: str | None = None) -> Episode:
        symbols = [f"s{i}" for i in rng.choice(self.n_symbols, self.n_chains * (self.chain_len + 1), replace=False)]
        chains = [symbols[c * (self.chain_len + 1) : (c + 1) * (self.chain_len + 1)] for c in range(self.n_chains)]
        pairs = [[chain[i], chain[i + 1]] for chain in chains for i in range(self.chain_len)]
        clauses = [pairs[i] for i in rng.permutation(len(pairs))]
        queries = []
        for _ in range(self.n_queries):
            hops = int(slice_name[4:]) if slice_name else int(rng.integers(1, self.train_hops + 1))
            chain = chains[rng.integers(self.n_chains)]
            start = int(rng.integers(0, self.chain_len - hops + 1))
            queries.append(([">"] * hops + [chain[start]], chain[start + hops], {"slice": f"hops{hops}", "hops": hops}))
        return make_episode(clauses, queries)


# ----------------------------------------------------------------------------- kinship

KIN_NAMES = {
    (1, 0): "parent", (2, 0): "grandparent", (3, 0): "great-grandparent",
    (0, 1): "child", (0, 2): "grandchild", (0, 3): "great-grandchild",
    (1, 1): "sibling", (2, 1): "uncle", (3, 1): "great-uncle", (1, 2): "nephew", (1, 3): "grand-nephew",
    (2, 2): "cousin", (3, 2): "parents-cousin", (2, 3): "cousins-child", (3, 3): "second-cousin",
}
KIN = sorted(KIN_NAMES)
PEOPLE = ("Ada Ben Cy Dee Eli Fay Gus Hal Ida Jo Kai Lea Max Ned Oda Pia Quy Rex Sue Tom Uma Viv Wes Xia Yul Zoe "
          "Abe Bo Cam Dot Ewa Fox Gil Hue Ivo Jan Kim Lou Mia Nia").split()


def kin_compose(r1: tuple[int, int], r2: tuple[int, int]) -> tuple[int, int] | None:
    """Relation of z to x when y is x's r1 and z is y's r2 (x, y, z distinct), if the tree fixes it.

    A relation (u, d): up u generations to the common ancestor, then down d, through another
    branch than the one we came up (for u, d > 0). With A = y's ancestor u2 up:
    * A below x's and y's common ancestor (u2 < d1): z stays in y's branch -> (u1, d1 - u2 + d2);
    * A is that common ancestor (u2 = d1): z = A -> (u1, 0); under x itself -> (0, d2); z may fall
      in x's branch otherwise, so only siblings are fixed (u1 = d2 = 1, z != x) -> (1, 1);
    * A above it (u2 > d1): z avoids the branch holding both x and y -> (u1 + u2 - d1, d2).
    """
    (u1, d1), (u2, d2) = r1, r2
    if u2 < d1:
        out = (u1, d1 - u2 + d2)
    elif u2 == d1:
        if d2 == 0:
            out = (u1, 0)
        elif u1 == 0:
            out = (0, d2)
        elif u1 == 1 and d2 == 1:
            out = (1, 1)
        else:
            return None
    else:
        out = (u1 + u2 - d1, d2)
    return out if out in KIN_NAMES else None


class FamilyTree:
    """A random gender-free family tree grown lazily (children drawn when first needed)."""

    def __init__(self, rng: np.random.Generator, start_depth: int = 3, max_depth: int = 6, branching=(2, 3)):
        self.rng, self.max_depth, self.branching = rng, max_depth, branching
        self.parent: list[int | None] = [None]
        self.depth = [0]
        self.kids: dict[int, list[int]] = {}
        node = 0
        for _ in range(start_depth):
            kids = self.children(node)
            node = kids[int(rng.integers(len(kids)))]
        self.start = node

    def children(self, node: int) -> list[int]:
        if node not in self.kids:
            n = int(self.rng.integers(self.branching[0], self.branching[1] + 1)) if self.depth[node] < self.max_depth else 0
            self.kids[node] = list(range(len(self.parent), len(self.parent) + n))
            self.parent += [node] * n
            self.depth += [self.depth[node] + 1] * n
        return self.kids[node]

    def ancestor(self, node: int, up: int) -> int | None:
        for _ in range(up):
            node = self.parent[node]
            if node is None:
                return None
        return node

    def descendants(self, node: int, down: int) -> list[int]:
        layer = [node]
        for _ in range(down):
            layer = [k for n in layer for k in self.children(n)]
        return layer

    def relation(self, a: int, b: int) -> tuple[int, int]:
        x, y, u, d = a, b, 0, 0
        while self.depth[x] > self.depth[y]:
            x, u = self.parent[x], u + 1
        while self.depth[y] > self.depth[x]:
            y, d = self.parent[y], d + 1
        while x != y:
            x, y, u, d = self.parent[x], self.parent[y], u + 1, d + 1
        return u, d

    def relatives(self, node: int, rel: tuple[int, int]) -> list[int]:
        up, down = rel
        top = self.ancestor(node, up)
        if top is None:
            return []
        if up == 0 or down == 0:
            return [top] if down == 0 else self.descendants(top, down)
        toward = self.ancestor(node, up - 1)  # the branch x hangs from: excluded
        return [y for k in self.children(top) if k != toward for y in self.descendants(k, down - 1)]


class KinshipTask(SymbolicTask):
    name = "kinship"

    def __init__(self, train_lengths: tuple[int, int] = (2, 3), test_lengths: tuple[int, int] = (4, 10),
                 p_backwards: float = 0.3, p_restate: float = 0.7, distractors: tuple[int, int] = (1, 3),
                 n_eval: int = 200, eval_seed: int = 4321) -> None:
        self.train_lengths, self.test_lengths = tuple(train_lengths), tuple(test_lengths)
        self.p_backwards, self.p_restate, self.distractors = p_backwards, p_restate, tuple(distractors)
        self.train_slices = tuple(f"len{k}" for k in range(self.train_lengths[0], self.train_lengths[1] + 1))
        self.test_slices = tuple(f"len{k}" for k in range(self.test_lengths[0], self.test_lengths[1] + 1))
        super().__init__(n_eval, eval_seed)

    def vocabulary(self) -> list[str]:
        return [KIN_NAMES[r] for r in KIN] + list(PEOPLE)

    def _chain(self, rng: np.random.Generator, length: int):
        while True:
            tree = FamilyTree(rng)
            path, rels, total, ok = [tree.start], [], None, True
            for _ in range(length):
                options = [r for r in KIN if total is None or kin_compose(total, r) is not None]
                order = [options[i] for i in rng.permutation(len(options))]
                for r in order:
                    people = [y for y in tree.relatives(path[-1], r) if y not in path]
                    if people:
                        path.append(people[int(rng.integers(len(people)))])
                        rels.append(r)
                        total = r if total is None else kin_compose(total, r)
                        assert tree.relation(path[0], path[-1]) == total
                        break
                else:
                    ok = False
                    break
            if ok:
                return tree, path, rels

    def generate(self, rng: np.random.Generator, slice_name: str | None = None) -> Episode:
        length = int(slice_name[3:]) if slice_name else int(rng.integers(self.train_lengths[0], self.train_lengths[1] + 1))
        tree, path, rels = self._chain(rng, length)
        names = dict(zip(path, (PEOPLE[i] for i in rng.permutation(len(PEOPLE)))))

        def statement(a: int, r: tuple[int, int], b: int, backwards: bool) -> list[str]:
            if backwards:
                return [names[b], KIN_NAMES[r[::-1]], names[a]]
            return [names[a], KIN_NAMES[r], names[b]]

        clauses = [statement(path[i], rels[i], path[i + 1], rng.random() < self.p_backwards) for i in range(length)]
        extra = []
        if rng.random() < self.p_restate:  # the same fact told the other way round
            i = int(rng.integers(length))
            forward = clauses[i][0] == names[path[i]]
            extra.append(statement(path[i], rels[i], path[i + 1], forward))
        for _ in range(int(rng.integers(self.distractors[0], self.distractors[1] + 1))):
            anchor = path[int(rng.integers(len(path)))]
            r = KIN[int(rng.integers(len(KIN)))]
            people = [y for y in tree.relatives(anchor, r) if y not in names]
            if people and len(names) < len(PEOPLE):
                other = people[int(rng.integers(len(people)))]
                names[other] = next(p for p in PEOPLE[int(rng.integers(len(PEOPLE))):] + PEOPLE if p not in names.values())
                extra.append(statement(anchor, r, other, rng.random() < 0.5))
        for clause in extra:
            clauses.insert(int(rng.integers(len(clauses) + 1)), clause)
        targets = range(2, length + 1) if slice_name is None else [length]
        queries = [([names[path[0]], names[path[k]]], KIN_NAMES[tree.relation(path[0], path[k])],
                    {"slice": f"len{k}", "length": k}) for k in targets]
        return make_episode(clauses, queries)

    def true_rules(self) -> set[Hypothesis]:
        rules = {inverse(KIN_NAMES[r], KIN_NAMES[r[::-1]]) for r in KIN}
        for r1 in KIN:
            for r2 in KIN:
                r3 = kin_compose(r1, r2)
                if r3 is not None:
                    rules.add(compose(KIN_NAMES[r1], KIN_NAMES[r2], KIN_NAMES[r3]))
        return rules


# ----------------------------------------------------------------------------- temporal


class TemporalTask(SymbolicTask):
    name = "temporal"

    def __init__(self, n_events: int = 300, train_lengths: tuple[int, int] = (16, 48),
                 test_lengths: tuple[int, ...] = (64, 128, 256), n_queries: int = 4,
                 n_eval: int = 100, eval_seed: int = 4321) -> None:
        if max(test_lengths) > n_events:
            raise ValueError(f"streams of {max(test_lengths)} distinct events need n_events >= that")
        self.n_events, self.train_lengths, self.test_lengths = n_events, tuple(train_lengths), tuple(test_lengths)
        self.n_queries = n_queries
        self.train_slices = (f"L{train_lengths[0]}-{train_lengths[1]}",)
        self.test_slices = tuple(f"L{n}" for n in test_lengths)
        super().__init__(n_eval, eval_seed)

    def vocabulary(self) -> list[str]:
        return ["first", "after"] + [f"e{i}" for i in range(self.n_events)]

    def generate(self, rng: np.random.Generator, slice_name: str | None = None) -> Episode:
        if slice_name is None or slice_name == self.train_slices[0]:
            length, name = int(rng.integers(self.train_lengths[0], self.train_lengths[1] + 1)), self.train_slices[0]
        else:
            length, name = int(slice_name[1:]), slice_name
        events = [f"e{i}" for i in rng.choice(self.n_events, length, replace=False)]
        queries = []
        for _ in range(self.n_queries):
            if rng.random() < 0.5:
                i, j = rng.choice(length, 2, replace=False)
                queries.append((["first", events[i], events[j]], events[min(i, j)], {"slice": name, "kind": "first",
                                                                                     "distance": abs(int(i - j))}))
            else:
                i = int(rng.integers(length - 1))
                queries.append((["after", events[i]], events[i + 1], {"slice": name, "kind": "after"}))
        return make_episode([events], queries)

    def true_rules(self) -> set[Hypothesis]:
        world = Store.from_tokens([f"e{i}" for i in range(7)])
        return rules_true_in(world)


# ----------------------------------------------------------------------------- concepts

KINDS = {"color": ("red", "green", "blue", "yellow"), "shape": ("cube", "sphere", "cylinder", "cone"),
         "material": ("metal", "rubber", "glass")}
SYNONYM = {"red": "crimson", "green": "emerald", "blue": "azure", "yellow": "golden", "cube": "block",
           "sphere": "ball", "cylinder": "tube", "cone": "spike", "metal": "metallic", "rubber": "elastic",
           "glass": "crystal"}
HELD_OUT = ("yellow", "cone", "glass")  # their synonym / kind facts never appear in training metaconcepts
NONCE = ("dax", "wug", "fep", "blick", "toma", "zup")
OBJECTS = tuple(f"o{i}" for i in range(1, 13))
KIND_OF = {c: k for k, cs in KINDS.items() for c in cs}
CONCEPTS = tuple(KIND_OF)


def words(concept: str) -> tuple[str, str]:
    return concept, SYNONYM[concept]


def concept_of(word: str) -> str:
    return word if word in KIND_OF else next(c for c, s in SYNONYM.items() if s == word)


def meta_truth(rel: str, a: str, b: str) -> bool:
    if rel == "is-a":
        return KIND_OF[concept_of(a)] == b
    ca, cb = concept_of(a), concept_of(b)
    if rel == "synonym":
        return ca == cb and a != b
    return ca != cb and KIND_OF[ca] == KIND_OF[cb]  # same-kind: different concepts, one kind


class ConceptsTask(SymbolicTask):
    name = "concepts"
    train_slices = ("mixed",)
    test_slices = ("attr", "meta", "fewshot", "fewshot+meta")

    def __init__(self, n_objects: int = 4, n_meta: int = 3, n_queries: int = 4, n_eval: int = 200,
                 eval_seed: int = 4321) -> None:
        self.n_objects, self.n_meta, self.n_queries = n_objects, n_meta, n_queries
        super().__init__(n_eval, eval_seed)

    def vocabulary(self) -> list[str]:
        return (["has", "synonym", "same-kind", "is-a"] + list(KINDS) + [w for c in CONCEPTS for w in words(c)]
                + list(NONCE) + list(OBJECTS))

    @staticmethod
    def _visible(word: str, held_out: bool) -> bool:
        return (concept_of(word) in HELD_OUT) == held_out

    def _meta_fact(self, rng, anchor: str, held_out: bool, truth: bool | None = None) -> list[str] | None:
        """A metaconcept clause about ``anchor`` (true unless truth is False), within the chosen split."""
        rel = ("synonym", "same-kind", "is-a")[int(rng.integers(3))]
        if truth is None or truth:
            if rel == "is-a":
                return [anchor, rel, KIND_OF[concept_of(anchor)]]
            pool = [w for c in CONCEPTS for w in words(c) if meta_truth(rel, anchor, w)]
        else:
            if rel == "is-a":
                return [anchor, rel, [k for k in KINDS if k != KIND_OF[concept_of(anchor)]][int(rng.integers(2))]]
            pool = [w for c in CONCEPTS for w in words(c) if w != anchor and not meta_truth(rel, anchor, w)]
        pool = [w for w in pool if self._visible(w, False) or held_out]
        return [anchor, rel, pool[int(rng.integers(len(pool)))]] if pool else None

    def generate(self, rng: np.random.Generator, slice_name: str | None = None) -> Episode:
        kind = slice_name or "mixed"
        objects = [OBJECTS[i] for i in rng.choice(len(OBJECTS), self.n_objects, replace=False)]
        scene = {o: {k: KINDS[k][int(rng.integers(len(KINDS[k])))] for k in KINDS} for o in objects}
        named = {o: {k: words(c)[int(rng.integers(2))] for k, c in attrs.items()} for o, attrs in scene.items()}
        clauses = [[o, "has", w] for o in objects for w in named[o].values()]
        train_words = [w for c in CONCEPTS if c not in HELD_OUT for w in words(c)]
        queries = []
        # metaconcept facts: a star around one word of the scene (training words only)
        scene_words = [w for o in objects for w in named[o].values() if self._visible(w, False)]
        near = [scene_words[int(rng.integers(len(scene_words)))]]
        for _ in range(self.n_meta):
            fact = self._meta_fact(rng, near[0], held_out=False)
            if fact and fact not in clauses:
                clauses.append(fact)
                near += [fact[2]] if fact[1] != "is-a" else []
        # a new word, shown once (few-shot)
        fewshot = kind in ("mixed", "fewshot", "fewshot+meta") and (kind != "mixed" or rng.random() < 0.5)
        if fewshot:
            new = NONCE[int(rng.integers(len(NONCE)))]
            shown = objects[0]
            k = list(KINDS)[int(rng.integers(len(KINDS)))]
            meaning = scene[shown][k]
            others = [c for c in KINDS[k] if c != meaning]
            scene[objects[1]][k] = meaning  # someone else shares the meaning, someone does not
            scene[objects[2]][k] = others[int(rng.integers(len(others)))]
            for o in objects[1:3]:
                named[o][k] = words(scene[o][k])[int(rng.integers(2))]
            clauses = [c for c in clauses if c[1] != "has"] + [[o, "has", w] for o in objects for w in named[o].values()]
            clauses.append([shown, "has", new])
            with_meta = kind == "fewshot+meta" or (kind == "mixed" and rng.random() < 0.5)
            if with_meta:
                others = [w for c in KINDS[k] if c != meaning and c not in HELD_OUT for w in words(c)]
                clauses.append([new, "same-kind", others[int(rng.integers(len(others)))]] if rng.random() < 0.5
                               else [new, "is-a", k])
        order = rng.permutation(len(clauses))
        clauses = [clauses[i] for i in order]
        for _ in range(self.n_queries):
            q_kind = kind if kind != "mixed" else ("attr", "meta", "fewshot")[int(rng.integers(3 if fewshot else 2))]
            if q_kind == "attr":
                o = objects[int(rng.integers(len(objects)))]
                k = list(KINDS)[int(rng.integers(3))]
                if rng.random() < 0.5:
                    c = scene[o][k]
                else:  # a plausible no: another value of the same kind
                    others = [c for c in KINDS[k] if c != scene[o][k]]
                    c = others[int(rng.integers(len(others)))]
                w = words(c)[int(rng.integers(2))]
                queries.append(([o, "has", w], YES if c == scene[o][k] else NO, {"slice": "attr"}))
            elif q_kind == "meta":
                held = kind == "meta"
                stated = [c for c in clauses if c[1] in ("synonym", "same-kind")]
                if not held and stated and rng.random() < 0.3:  # the same fact, asked the other way round
                    a, rel, b = stated[int(rng.integers(len(stated)))]
                    queries.append(([b, rel, a], YES, {"slice": "meta"}))
                    continue
                if not held and len(near) > 2 and rng.random() < 0.3:  # two words of the neighbourhood
                    a, b = (near[i] for i in rng.choice(len(near), 2, replace=False))
                    if a != b:
                        rel = ("synonym", "same-kind")[int(rng.integers(2))]
                        queries.append(([a, rel, b], YES if meta_truth(rel, a, b) else NO, {"slice": "meta"}))
                        continue
                pool = [w for c in HELD_OUT for w in words(c)] if held else train_words
                fact = None
                while fact is None:
                    fact = self._meta_fact(rng, pool[int(rng.integers(len(pool)))], held, truth=bool(rng.random() < 0.5))
                queries.append((fact, YES if meta_truth(fact[1], fact[0], fact[2]) else NO, {"slice": "meta"}))
            else:
                o = objects[1 + int(rng.integers(len(objects) - 1))]
                truth = scene[o][k] == meaning
                queries.append(([o, "has", new], YES if truth else NO,
                                {"slice": "fewshot+meta" if with_meta else "fewshot"}))
        return make_episode(clauses, queries)

    def world(self) -> Store:
        """Every true fact: metaconcepts between all words, and objects of every combination."""
        store, t = Store(), 0
        all_words = [w for c in CONCEPTS for w in words(c)]
        for a in all_words:
            for rel in ("synonym", "same-kind"):
                for b in all_words:
                    if meta_truth(rel, a, b):
                        store.add(rel, a, b, t)
            store.add("is-a", a, KIND_OF[concept_of(a)], t)
        for i, combo in enumerate(np.array(np.meshgrid(*KINDS.values(), indexing="ij")).reshape(3, -1).T):
            for c in combo:
                for w in words(str(c)):
                    store.add("has", f"x{i}", w, t)
        return store

    def true_rules(self) -> set[Hypothesis]:
        return rules_true_in(self.world())

    def true_facts(self) -> set[Hypothesis]:
        from workbench.symbolic.rules import fact

        return {fact(f.rel, f.a, f.b) for f in self.world().facts if f.rel != "has"}


SYMBOLIC_TASKS = {"hops": HopsTask, "kinship": KinshipTask, "temporal": TemporalTask, "concepts": ConceptsTask}


def _register() -> None:
    from workbench.tasks import TASKS

    TASKS.update(SYMBOLIC_TASKS)


_register()
