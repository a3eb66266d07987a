"""System 2's learners, all trained by reinforcement (REINFORCE with a baseline), never by
backpropagating a task loss:

* ``ProgramPolicy`` - the semantic parser. For a query it picks a program template
  (per query *signature*) and the store relation each operator word stands for (e.g. ``>``
  means ``binds``, ``after`` means ``follows``). As in NS-CL (Mao et al., ICLR 2019), the only
  signal is whether the executed program's answer was right.
* ``RuleLearner`` - keeps or drops metaconcept hypotheses (``workbench.symbolic.rules``). Each
  hypothesis has a keep-probability; rewards are the verdicts of its predictions on training
  stores (correct - price) and the task reward of queries it was consulted for.
* ``System2`` - both together: ``fit`` on answered training episodes, ``answer`` a query.
* ``Controller`` - the dual-process switch: per query, answer fast with System 1 or deliberate
  with System 2; reward = correct - cost x steps. ``tradeoff_curve`` sweeps the cost.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.symbolic.executor import TEMPLATES, Executor, Program, Result
from workbench.symbolic.rules import Hypothesis, RuleBase, RuleView, evidence, propose
from workbench.symbolic.store import INV, Store


def softmax(logits: Sequence[float]) -> np.ndarray:
    z = np.asarray(logits, dtype=float)
    z = np.exp(z - z.max())
    return z / z.sum()


# ----------------------------------------------------------------------------- program policy


def parse_query(query: Sequence[str], is_entity) -> tuple[tuple[str, ...], list[str], list[str]]:
    """(signature, entity arguments, operator words). Entities become ``E`` in the signature and
    repeats of an operator collapse, so ``> > a`` and ``> > > > a`` share the signature ``(>, E)``:
    what is learned on two hops applies to six."""
    signature: list[str] = []
    args, ops = [], []
    for token in query:
        kind = "E" if is_entity(token) else token
        if kind == "E":
            args.append(token)
        else:
            ops.append(token)
        if kind == "E" or not signature or signature[-1] != kind:
            signature.append(kind)
    return tuple(signature), args, ops


@dataclass
class ProgramPolicy:
    """Softmax policies: template | query signature, and relation | operator word (or signature)."""

    lr: float = 0.5
    name_prior: float = 2.0
    template_logits: dict[tuple, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    binding_logits: dict[object, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    lexicon: set[str] = field(default_factory=set)  # tokens seen as arguments in training stores

    def observe(self, store: Store) -> None:
        self.lexicon |= store.entities

    def act(self, query: Sequence[str], store: Store, view: RuleView, rng: np.random.Generator | None = None):
        """(program, decisions, signature): a program for the query, sampled with rng, greedy without."""
        entities = store.entities
        signature, args, ops = parse_query(query, lambda t: t in entities or t in self.lexicon)
        options = [t.name for t in TEMPLATES.values() if t.n_args == len(args)
                   and (t.binds != "each" or ops) and (t.binds != "one" or len(set(ops)) <= 1)]
        if not options:
            return None, [], signature
        decisions: list = []
        template = self._pick(self.template_logits[signature], options, rng, decisions)
        relations: tuple[str, ...] = ()
        if TEMPLATES[template].binds != "none":
            names = sorted(store.relation_names | view.rules.fact_relations)
            candidates = names + [INV + r for r in names]
            if TEMPLATES[template].binds == "each":
                chosen = {op: self._pick(self._bindings(op, candidates), candidates, rng, decisions)
                          for op in dict.fromkeys(ops)}
                relations = tuple(chosen[op] for op in ops)
            else:
                key = ops[0] if ops else signature
                relations = (self._pick(self._bindings(key, candidates), candidates, rng, decisions),)
        return Program(template, tuple(args), relations), decisions, signature

    def _bindings(self, key, candidates: list[str]) -> dict[str, float]:
        """Logits of what ``key`` stands for. Lexical prior: a word that names a relation of the
        store starts out preferring it (logit ``name_prior``); rewards can still overrule it."""
        table = self.binding_logits[key]
        if key in candidates and key not in table:
            table[key] = self.name_prior
        return table

    @staticmethod
    def _pick(table: dict[str, float], options: list[str], rng, decisions: list) -> str:
        probs = softmax([table.get(o, 0.0) for o in options])
        index = int(rng.choice(len(options), p=probs)) if rng is not None else int(np.argmax(probs))
        decisions.append((table, options, index, probs))
        return options[index]

    def update(self, decisions: list, advantage: float) -> None:
        """REINFORCE: logit_o += lr * advantage * (1[o chosen] - pi(o))."""
        for table, options, index, probs in decisions:
            for i, option in enumerate(options):
                table[option] = table.get(option, 0.0) + self.lr * advantage * ((i == index) - probs[i])

    def describe(self) -> str:
        lines = []
        for signature, table in self.template_logits.items():
            best = max(table, key=table.get) if table else "?"
            lines.append(f"query {' '.join(signature):<16s} -> {best}")
        used = {s for s, t in self.template_logits.items() if t and TEMPLATES[max(t, key=t.get)].binds != "none"}
        words = {w for s in used for w in s}
        for key, table in self.binding_logits.items():
            if table and (key in used or key in words):
                name = " ".join(key) if isinstance(key, tuple) else key
                lines.append(f"word  {name:<16s} -> {max(table, key=table.get)}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- rule learner


@dataclass
class RuleLearner:
    """REINFORCE over keep/drop decisions, one Bernoulli policy per hypothesis.

    Evidence reward of keeping h on a store: (fraction of its decided predictions that were right
    - price) / (1 - price): +1 for a rule right every time, negative below the price. Dropping earns
    0. The baseline is a running mean per hypothesis. Task reward: every hypothesis the executor
    consulted for a query gets the query's advantage (reward - baseline of its signature).
    """

    rules: RuleBase = field(default_factory=RuleBase)
    price: float = 0.95  # the precision a rule must beat to be worth keeping
    lr: float = 1.0
    lr_task: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def fit(self, stores: Sequence[Store], rounds: int = 2, epochs: int = 3, fact_relations: Iterable[str] = (),
            extra: Iterable[Hypothesis] = ()) -> RuleBase:
        """Propose from every store, then reinforce on their evidence; round 2 proposes again with
        the inverses and substitutions kept in round 1 (so ``~child`` reads as ``parent``)."""
        fact_relations = set(fact_relations)
        for h in extra:
            self.rules.add(h)
        for _ in range(rounds):
            normalize = self.rules.normalizer()
            substitutions = self.rules.substitutions()
            for store in stores:
                for h, n in propose(store, normalize, self.rng, fact_relations, substitutions).items():
                    self.rules.add(h, n)
            for _ in range(epochs):
                for i in self.rng.permutation(len(stores)):
                    self.reinforce_evidence(stores[i], normalize)
            self.rules.canonicalize()
        return self.rules

    def reinforce_evidence(self, store: Store, normalize=None) -> None:
        normalize = normalize or self.rules.normalizer()
        for h, verdicts in evidence(store, self.rules, normalize, self.rng).items():
            belief = self.rules.beliefs[h]
            belief.verified += sum(verdicts)
            belief.decided += len(verdicts)
            keep = self.rng.random() < belief.p
            reward = keep * (np.mean(verdicts) - self.price) / (1 - self.price)
            advantage = reward - belief.baseline
            belief.baseline += 0.1 * (reward - belief.baseline)
            self._step(h, keep, advantage, self.lr)

    def reinforce_task(self, view: RuleView, advantage: float) -> None:
        for h, keep in view.active.items():
            self._step(h, keep, advantage, self.lr_task)

    def _step(self, h: Hypothesis, keep: bool, advantage: float, lr: float) -> None:
        belief = self.rules.beliefs[h]
        belief.logit = float(np.clip(belief.logit + lr * advantage * (keep - belief.p), -6.0, 6.0))


# ----------------------------------------------------------------------------- System 2


@dataclass
class Answered:
    """One query of an episode, as System 2 sees it."""

    context: list[str]
    query: list[str]
    answer: str
    meta: dict = field(default_factory=dict)


@dataclass
class System2:
    """Program policy + rule learner. ``grounding`` (token -> tokens System 1 treats alike, see
    ``workbench.symbolic.concepts``) adds ``alike`` facts to every store it reads."""

    policy: ProgramPolicy = field(default_factory=ProgramPolicy)
    learner: RuleLearner = field(default_factory=RuleLearner)
    seed: int = 0
    grounding: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self._baseline: dict[tuple, float] = defaultdict(float)

    @property
    def rules(self) -> RuleBase:
        return self.learner.rules

    def read(self, context: list[str], queries: Iterable[Sequence[str]] = ()) -> Store:
        """The store of a context, with System 1's grounded ``alike`` facts for its symbols."""
        store = Store.from_tokens(context)
        if self.grounding:  # links between symbols of this context and its queries only
            symbols = store.entities | {t for q in queries for t in q}
            for a in sorted(symbols):
                for b in self.grounding.get(a, ()):
                    if b in symbols:
                        store.add("alike", a, b, grounded=True)
        return store

    def learn_rules(self, items: Sequence[Answered], rounds: int = 2, epochs: int = 3, extra=()) -> RuleBase:
        """Rules from the training stores with their answers added as facts."""
        stores, yes_no = [], set()
        for (_, group) in _by_context(items):
            store = self.read(group[0].context, [item.query for item in group])
            for item in group:
                store.add_answer(item.query, item.answer)
                if len(item.query) == 3 and item.answer in ("yes", "no"):
                    yes_no.add(item.query[1])
            stores.append(store)
            self.policy.observe(store)
        return self.learner.fit(stores, rounds, epochs, fact_relations=yes_no, extra=extra)

    def train(self, items: Sequence[Answered], epochs: int = 2) -> list[float]:
        """REINFORCE on task reward: the program policy, and the rules the executor consulted."""
        rewards = []
        groups = _by_context(items)
        for _ in range(epochs):
            for g in self.rng.permutation(len(groups)):
                store = self.read(groups[g][1][0].context, [item.query for item in groups[g][1]])
                self.policy.observe(store)
                for item in groups[g][1]:
                    view = RuleView(self.rules, self.rng)
                    program, decisions, key = self.policy.act(item.query, store, view, self.rng)
                    result = Executor(store, view).run(program) if program else Result(None)
                    reward = float(result.answer == item.answer)
                    advantage = reward - self._baseline[key]
                    self._baseline[key] += 0.05 * (reward - self._baseline[key])
                    self.policy.update(decisions, advantage)
                    self.learner.reinforce_task(view, advantage)
                    rewards.append(reward)
        self.rules.canonicalize()
        return rewards

    def fit(self, items: Sequence[Answered], rule_rounds: int = 2, rule_epochs: int = 3, epochs: int = 2) -> list[float]:
        self.learn_rules(items, rule_rounds, rule_epochs)
        return self.train(items, epochs)

    def answer(self, context: list[str], query: list[str], store: Store | None = None) -> Result:
        store = store or self.read(context, [query])
        view = RuleView(self.rules)
        program, _, _ = self.policy.act(query, store, view)
        return Executor(store, view).run(program) if program else Result(None)


def _by_context(items: Sequence[Answered]) -> list[tuple[int, list[Answered]]]:
    groups: dict[int, list[Answered]] = {}
    for item in items:
        groups.setdefault(id(item.context), []).append(item)
    return list(groups.items())


# ----------------------------------------------------------------------------- dual process


@dataclass
class Choice:
    """What the controller knows about a query, and what each system would score on it."""

    confidence: float  # System 1's probability of its own answer
    fast_correct: bool
    slow_correct: bool
    slow_steps: int
    query_length: int

    def features(self) -> np.ndarray:
        return np.array([self.confidence, float(self.query_length)])


@dataclass
class Controller:
    """Deliberate with probability sigmoid(w . [1, standardized features]); REINFORCE with a running baseline.

    The features (System 1's confidence, the query's length) are standardized on the training
    choices: raw, a one-token difference in length (one more hop) is too small a step for the
    logistic to separate within a few epochs, and the controller fell back to all-or-nothing.
    """

    cost: float
    lr: float = 0.5
    seed: int = 0
    w: np.ndarray = field(default_factory=lambda: np.zeros(3))
    center: np.ndarray = field(default_factory=lambda: np.zeros(2))
    scale: np.ndarray = field(default_factory=lambda: np.ones(2))

    def inputs(self, c: Choice) -> np.ndarray:
        return np.concatenate([[1.0], (c.features() - self.center) / self.scale])

    def p_deliberate(self, c: Choice) -> float:
        return 1.0 / (1.0 + math.exp(-float(self.w @ self.inputs(c))))

    def reward(self, c: Choice, deliberate: bool) -> float:
        return float(c.slow_correct) - self.cost * c.slow_steps if deliberate else float(c.fast_correct)

    def fit(self, choices: Sequence[Choice], epochs: int = 20) -> Controller:
        rng = np.random.default_rng(self.seed)
        if choices:
            features = np.stack([c.features() for c in choices])
            std = features.std(axis=0)
            self.center, self.scale = features.mean(axis=0), np.where(std > 0, std, 1.0)
        baseline = 0.0
        for _ in range(epochs):
            for i in rng.permutation(len(choices)):
                c = choices[i]
                p = self.p_deliberate(c)
                deliberate = rng.random() < p
                r = self.reward(c, deliberate)
                self.w += self.lr * (r - baseline) * (deliberate - p) * self.inputs(c)
                baseline += 0.02 * (r - baseline)
        return self

    def decide(self, c: Choice) -> bool:
        return self.p_deliberate(c) > 0.5

    def score(self, choices: Sequence[Choice]) -> dict[str, float]:
        decisions = [self.decide(c) for c in choices]
        correct = [c.slow_correct if d else c.fast_correct for c, d in zip(choices, decisions)]
        steps = [c.slow_steps if d else 0 for c, d in zip(choices, decisions)]
        n = max(len(choices), 1)
        return {"cost": self.cost, "accuracy": sum(correct) / n, "mean_steps": sum(steps) / n,
                "deliberate": sum(decisions) / n}


def tradeoff_curve(train: Sequence[Choice], test: Sequence[Choice], costs: Iterable[float] = (0, 0.003, 0.01, 0.03, 0.1, 0.3, 1),
                   seed: int = 0, epochs: int = 20) -> list[dict[str, float]]:
    """Accuracy vs mean deliberation steps on ``test``, one controller trained on ``train`` per cost."""
    return [Controller(cost, seed=seed).fit(train, epochs).score(test) for cost in costs]


def budget_curve(test: Sequence[Choice], budgets: Iterable[int] | None = None) -> list[dict[str, float]]:
    """Anytime deliberation: System 2 may take up to ``budget`` steps, then System 1 answers.

    No controller and no signal needed: a query whose program finishes within the budget gets
    System 2's answer and costs its steps; a longer one costs the whole budget and falls back to
    System 1. Where nothing tells the controller which queries are hard (kinship: every query
    is two names), this is the trade-off a step-by-step reasoner still has.
    """
    if budgets is None:
        budgets = range(0, max((c.slow_steps for c in test), default=0) + 1)
    n = max(len(test), 1)
    out = []
    for budget in budgets:
        finished = [c.slow_steps <= budget for c in test]
        correct = [c.slow_correct if done else c.fast_correct for c, done in zip(test, finished)]
        steps = [min(c.slow_steps, budget) for c in test]
        out.append({"budget": budget, "accuracy": sum(correct) / n, "mean_steps": sum(steps) / n,
                    "finished": sum(finished) / n})
    return out

