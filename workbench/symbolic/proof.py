"""Learned proof search over kinship facts: primitive actions, a small neural policy, REINFORCE.

The environment (``ProofEnv``) holds the facts System 2 has read (entity, relation, entity,
confidence) and a proof in progress: a path of relation edges starting at the query head. At every
step the policy picks one of the primitive actions available:

* ``hop``     - look up a fact stated out of the path's end and walk along it (until the walk
  reaches the tail, which closes it);
* ``invert``  - walk along a fact stated *into* the path's end, read backwards with an inversion
  rule (one candidate per head the rule base offers);
* ``compose`` - once the path links the query pair, replace two adjacent edges by one, with a
  composition rule (one candidate per head: named relation or invented predicate), in any order;
* ``chart``   - once the path links the query pair, replace the whole path by one named edge, composed in
  every bracketing at once with the induced rules (``chart``, CYK-style inside sums weighted by rule
  precision): one candidate per named root, the policy choosing whether to trust it or compose pairwise;
* ``back``    - undo the last action (backtracking is the policy's to decide);
* ``stop``    - answer: the proof is done when the path is one edge from the head to the tail.

No action is forced: where to walk, in which order to compose, which rule head to trust and when
to stop are all chosen by the policy, which scores each candidate action from its features (kind,
relation embeddings, rule support and precision, whether the walk reaches the tail, a fact's
confidence, ...). It is trained by REINFORCE with a learned baseline, the reward coming only at the
end of the episode (1 for a right answer, 0 otherwise, minus a small cost per step), so the credit
for each step is assigned by the gradient, not by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from workbench.symbolic.chart import Chart, compose_chart
from workbench.symbolic.clutrr import NAMED
from workbench.symbolic.induction import ParsedFact, RuleBase, gender

KINDS = ("hop", "invert", "compose", "chart", "back", "stop")
CHART_ROOTS = 2  # named roots of the chart offered as actions, most probable first
N_INVENTED_SLOTS = 48
N_SCALARS = 13
STEP_COST = 0.02


def relation_index(name: str | None) -> int:
    """0: none; 1..20: named relations; then invented predicates, hashed into a fixed number of slots."""
    if name is None:
        return 0
    if name in NAMED:
        return 1 + NAMED.index(name)
    return 1 + len(NAMED) + int(name[1:]) % N_INVENTED_SLOTS


N_RELATION_INDICES = 1 + len(NAMED) + N_INVENTED_SLOTS


@dataclass
class Edge:
    source: str
    relation: str
    target: str
    confidence: float


@dataclass
class Action:
    kind: str
    relations: tuple[int, int, int]
    scalars: list[float]
    apply: tuple  # what to do: ("hop", edge) | ("compose", i, head) | ("back",) | ("stop",)


@dataclass
class ProofEnv:
    facts: list[ParsedFact]
    query: tuple[str, str]
    rules: RuleBase
    max_steps: int = 0
    path: list[Edge] = field(default_factory=list)
    history: list[tuple[list[Edge], set[str], tuple]] = field(default_factory=list)
    undone: dict[tuple, int] = field(default_factory=dict)  # how often each action was taken back
    absorbed: set[str] = field(default_factory=set)  # entities a composition took off the path
    steps: int = 0
    done: bool = False
    answer: str | None = None
    trace: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.max_steps = self.max_steps or 4 * len(self.facts) + 12
        self.charts: dict[tuple[str, ...], Chart] = {}  # one chart per relation path (the search revisits them)
        self.degree: dict[str, int] = {}
        for a, _, b, _ in self.facts:
            self.degree[a] = self.degree.get(a, 0) + 1
            self.degree[b] = self.degree.get(b, 0) + 1

    def can_answer(self) -> bool:
        """A stop answers only with one edge from head to tail named in the task's vocabulary (an invented
        predicate is internal to the proof, never an answer)."""
        return len(self.path) == 1 and self.end == self.query[1] and self.path[0].relation in NAMED

    def state_key(self) -> tuple:
        """The proof's state: the path and the entities compositions took off it (the order that led
        here does not matter). Once the walk has reached the tail only compositions remain, and what
        they can derive depends on the relations alone: equal relation sequences are one state."""
        if self.end == self.query[1]:
            return ("composing", tuple(e.relation for e in self.path))
        return tuple((e.source, e.relation, e.target) for e in self.path), frozenset(self.absorbed)

    @property
    def end(self) -> str:
        return self.path[-1].target if self.path else self.query[0]

    def _visited(self) -> set[str]:
        return {self.query[0]} | {e.target for e in self.path} | self.absorbed

    def _rule_scalars(self, support: int, precision: float, named: bool) -> list[float]:
        return [math.log1p(support) / 5, precision, float(named)]

    def _signature(self, action: Action) -> tuple:
        if action.apply[0] == "hop":
            edge = action.apply[1]
            return ("hop", len(self.path), edge.source, edge.relation, edge.target)
        return (action.apply[0], tuple(e.relation for e in self.path), *action.apply[1:])

    def actions(self) -> list[Action]:
        """Every action available now; the last feature says how often it was taken back before (memory
        that keeps a greedy policy from walking the same dead end twice)."""
        out = self._actions()
        for action in out:
            tried = self.undone.get(self._signature(action), 0) if action.kind not in ("back", "stop") else 0
            action.scalars.append(min(tried, 3) / 3)
        return out

    def _actions(self) -> list[Action]:
        tail, end, visited = self.query[1], self.end, self._visited()
        at_tail = float(end == tail)
        done_shape = float(len(self.path) == 1 and at_tail)
        common = [at_tail, len(self.path) / 10, done_shape]
        out: list[Action] = []
        for a, r, b, confidence in self.facts if end != tail else ():  # the tail closes the walk
            if a == end and b not in visited:
                edge = Edge(end, r, b, confidence)
                out.append(self._walk("hop", edge, (relation_index(r), 0, 0), [0.0, 1.0, 1.0], common))
            elif b == end and a not in visited:
                for head, n, p in self.rules.heads("invert", (r, gender(a))):
                    edge = Edge(end, head, a, confidence)
                    out.append(self._walk("invert", edge, (relation_index(r), relation_index(head), 0),
                                          self._rule_scalars(n, p, head in NAMED), common))
        for i in range(len(self.path) - 1 if end == tail else 0):
            left, right = self.path[i], self.path[i + 1]
            for head, n, p in self.rules.heads("compose", (left.relation, right.relation)):
                lookahead = self._continues(i, head)
                scalars = self._rule_scalars(n, p, head in NAMED) + [lookahead, float(i == 0),
                                                                      float(i == len(self.path) - 2)]
                out.append(Action("compose", (relation_index(left.relation), relation_index(right.relation),
                                              relation_index(head)),
                                  scalars + [min(left.confidence, right.confidence)] + common + [0.0, 0.0],
                                  ("compose", i, head)))
        if end == tail and len(self.path) >= 2:
            out += self._charts(common)
        # for back and stop: is the proof stuck (nothing to walk or compose, and not done)?
        stuck = float(not out and not done_shape)
        state = [stuck, min(len(out), 10) / 10] + [0.0] * 7 + common
        if self.history:
            out.append(Action("back", (0, 0, 0), list(state), ("back",)))
        out.append(Action("stop", (relation_index(self.path[0].relation) if self.path else 0, 0, 0),
                          list(state), ("stop",)))
        return out

    def _charts(self, common: list[float]) -> list[Action]:
        """One ``chart`` action per named root the whole path composes to (in any bracketing)."""
        relations = tuple(e.relation for e in self.path)
        if relations not in self.charts:
            self.charts[relations] = compose_chart(self.rules, relations)
        roots = self.charts[relations].roots()
        total = sum(p for _, p in roots) or 1.0
        confidence = min(e.confidence for e in self.path)
        out = []
        for rank, (head, p) in enumerate(roots[:CHART_ROOTS]):
            scalars = [p, p / total, 1.0, float(rank == 0), 0.0, 0.0, confidence] + common + [0.0, 0.0]
            out.append(Action("chart", (relation_index(relations[0]), relation_index(relations[-1]),
                                        relation_index(head)), scalars, ("chart", head)))
        return out

    def _walk(self, kind: str, edge: Edge, relations: tuple[int, int, int], rule: list[float],
              common: list[float]) -> Action:
        reaches = float(edge.target == self.query[1])
        dead_end = float(self.degree.get(edge.target, 0) <= 1 and edge.target != self.query[1])
        scalars = rule + [reaches, dead_end, min(self.degree.get(edge.target, 0), 6) / 6, edge.confidence]
        return Action(kind, relations, scalars + [0.0, 0.0] + common, ("hop", edge))

    def _continues(self, i: int, head: str) -> float:
        """Lookahead: does the merged edge compose with a neighbour (or is it the whole proof)?"""
        if len(self.path) == 2:
            return 1.0
        neighbours = []
        if i > 0:
            neighbours.append((self.path[i - 1].relation, head))
        if i + 2 < len(self.path):
            neighbours.append((head, self.path[i + 2].relation))
        return float(any(self.rules.heads("compose", body) for body in neighbours))

    def step(self, action: Action) -> None:
        self.steps += 1
        kind = action.apply[0]
        if kind == "stop":
            self.done = True
            if self.can_answer():
                self.answer = self.path[0].relation
            self.trace.append(f"stop -> {self.answer}")
            return
        if kind == "back":
            self.path, self.absorbed, signature = self.history.pop()
            self.undone[signature] = self.undone.get(signature, 0) + 1
            self.trace.append("back")
        else:
            self.history.append((list(self.path), set(self.absorbed), self._signature(action)))
            if kind == "hop":
                self.path = self.path + [action.apply[1]]
                e = action.apply[1]
                self.trace.append(f"{action.kind} {e.source} -{e.relation}-> {e.target}")
            elif kind == "chart":
                head = action.apply[1]
                chart = self.charts[tuple(e.relation for e in self.path)]
                self.trace += [f"  chart {line}" for line in chart.steps(head)]
                self.trace.append(f"chart {' . '.join(chart.relations)} = {head}")
                self.absorbed = self.absorbed | {e.target for e in self.path[:-1]}
                self.path = [Edge(self.path[0].source, head, self.end, min(e.confidence for e in self.path))]
            else:
                i, head = action.apply[1], action.apply[2]
                left, right = self.path[i], self.path[i + 1]
                merged = Edge(left.source, head, right.target, min(left.confidence, right.confidence))
                self.absorbed = self.absorbed | {left.target}
                self.path = self.path[:i] + [merged] + self.path[i + 2:]
                self.trace.append(f"compose {left.relation} . {right.relation} = {head}")
        if self.steps >= self.max_steps:
            self.done = True
            self.trace.append("out of steps")


class ProofPolicy(nn.Module):
    """Scores each candidate action; a separate head estimates the return (the learned baseline)."""

    def __init__(self, hidden: int = 64, embed: int = 16) -> None:
        super().__init__()
        self.relations = nn.Embedding(N_RELATION_INDICES, embed)
        width = len(KINDS) + 3 * embed + N_SCALARS
        self.score = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                   nn.Linear(hidden, 1))
        self.value = nn.Sequential(nn.Linear(N_SCALARS, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def features(self, kinds: torch.Tensor, relations: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        kind = nn.functional.one_hot(kinds, len(KINDS)).float()
        return torch.cat([kind, self.relations(relations).flatten(-2), scalars], -1)

    def logits(self, kinds: torch.Tensor, relations: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(kinds, relations, scalars)).squeeze(-1)


def encode(actions: list[Action]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kinds = torch.tensor([KINDS.index(a.kind) for a in actions])
    relations = torch.tensor([a.relations for a in actions])
    scalars = torch.tensor([a.scalars for a in actions], dtype=torch.float32)
    return kinds, relations, scalars


@dataclass
class Episode:
    steps: list[tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], int]]
    reward: float
    correct: bool
    n_steps: int
    trace: list[str]
    answer: str | None


def run_episode(policy: ProofPolicy, env: ProofEnv, answer: str | None, rng: np.random.Generator | None,
                record: bool = False) -> Episode:
    """One proof: sampled actions when ``rng`` is given, else greedy."""
    steps = []
    with torch.no_grad():
        while not env.done:
            actions = env.actions()
            encoded = encode(actions)
            logits = policy.logits(*encoded)
            if rng is None:
                choice = int(logits.argmax())
            else:
                probs = torch.softmax(logits, 0).numpy().astype(np.float64)
                choice = int(rng.choice(len(actions), p=probs / probs.sum()))
            if record:
                steps.append((encoded, choice))
            env.step(actions[choice])
    correct = env.answer is not None and env.answer == answer
    return Episode(steps, float(correct) - STEP_COST * env.steps, correct, env.steps, env.trace, env.answer)


def search_episode(policy: ProofPolicy, env: ProofEnv, answer: str | None, budget: int) -> Episode:
    """Policy-guided depth-first proof search with backtracking: System 2 thinking again.

    At every state the policy's actions are tried best first. Where its choice is a stop that answers
    nothing (the path is not one named edge from head to tail), the next alternative is tried instead;
    where every alternative of a state has failed (a dead end), the search takes the last action back
    (the environment's ``back``) and marks the state failed, so no order of actions re-enters it. The
    search ends at the first answer, when nothing is left to try, or after ``budget`` steps; every
    action, rejected stop and backtrack counts as a step. Only whether an answer *exists* is checked,
    never whether it is right."""
    env.max_steps = budget
    failed: set[tuple] = set()
    tried: dict[tuple, set[tuple]] = {}
    with torch.no_grad():
        while not env.done:
            state = env.state_key()
            actions = [a for a in env.actions() if a.kind != "back"]
            logits = policy.logits(*encode(actions))
            tried_here = tried.setdefault(state, set())
            choice = None
            for i in torch.argsort(logits, descending=True).tolist():
                if _search_signature(actions[i]) not in tried_here:
                    choice = actions[i]
                    break
            if choice is None:  # a dead end: every alternative here failed
                failed.add(state)
                if not env.history:
                    break
                env.step(Action("back", (0, 0, 0), [], ("back",)))
                continue
            tried_here.add(_search_signature(choice))
            if choice.kind == "stop" and not env.can_answer():
                env.steps += 1  # considered stopping, found no answer: try the next alternative
                env.trace.append("stop? no answer here")
                if env.steps >= env.max_steps:
                    env.done = True
                continue
            env.step(choice)
            if not env.done and env.state_key() in failed:
                env.step(Action("back", (0, 0, 0), [], ("back",)))
    correct = env.answer is not None and env.answer == answer
    return Episode([], float(correct) - STEP_COST * env.steps, correct, env.steps, env.trace, env.answer)


def _search_signature(action: Action) -> tuple:
    if action.apply[0] == "hop":
        edge = action.apply[1]
        return ("hop", edge.source, edge.relation, edge.target)
    return action.apply


@dataclass
class Problem:
    facts: list[ParsedFact]
    query: tuple[str, str]
    answer: str
    k: int


def train_policy(policy: ProofPolicy, rules: RuleBase, problems: list[Problem], episodes: int, seed: int,
                 batch: int = 16, lr: float = 3e-3, entropy: float = 0.01, progress=None) -> list[float]:
    """REINFORCE with a learned baseline; returns the mean reward of every batch (the reward curve)."""
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    curve = []
    for start in range(0, episodes, batch):
        batch_episodes = []
        for _ in range(min(batch, episodes - start)):
            problem = problems[int(rng.integers(len(problems)))]
            env = ProofEnv(problem.facts, problem.query, rules)
            batch_episodes.append(run_episode(policy, env, problem.answer, rng, record=True))
        loss = _reinforce_loss(policy, batch_episodes, entropy)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        curve.append(float(np.mean([e.reward for e in batch_episodes])))
        if progress is not None:
            progress.update(len(batch_episodes))
    return curve


def _reinforce_loss(policy: ProofPolicy, episodes: list[Episode], entropy: float) -> torch.Tensor:
    """Policy-gradient loss over every step of every episode, batched with padding."""
    steps = [(encoded, choice, e.reward) for e in episodes for encoded, choice in e.steps]
    width = max(len(encoded[0]) for encoded, _, _ in steps)
    n = len(steps)
    kinds = torch.zeros(n, width, dtype=torch.long)
    relations = torch.zeros(n, width, 3, dtype=torch.long)
    scalars = torch.zeros(n, width, N_SCALARS)
    mask = torch.zeros(n, width, dtype=torch.bool)
    for i, ((k, r, s), _, _) in enumerate(steps):
        m = len(k)
        kinds[i, :m], relations[i, :m], scalars[i, :m], mask[i, :m] = k, r, s, True
    logits = policy.logits(kinds, relations, scalars).masked_fill(~mask, -1e9)
    log_probs = torch.log_softmax(logits, -1)
    chosen = log_probs[torch.arange(n), torch.tensor([c for _, c, _ in steps])]
    returns = torch.tensor([reward for _, _, reward in steps])
    # the baseline sees the state's common features (the stop action's scalars describe the state)
    state = scalars[torch.arange(n), mask.sum(1) - 1]
    baseline = policy.value(state).squeeze(-1)
    advantage = returns - baseline.detach()
    probs = log_probs.exp() * mask
    entropy_term = -(probs * log_probs.masked_fill(~mask, 0)).sum(-1).mean()
    return -(advantage * chosen).mean() + 0.5 * ((returns - baseline) ** 2).mean() - entropy * entropy_term


def search_budget(n_facts: int, attempts: int) -> int:
    """Steps a search may take: ``attempts`` times one proof's step limit, which grows with the story."""
    return attempts * (4 * n_facts + 12)


def evaluate_search(policy: ProofPolicy, rules: RuleBase, problems: list[Problem], attempts: int) -> list[Episode]:
    """A policy-guided backtracking search per problem (``search_episode``), within ``search_budget``."""
    return [search_episode(policy, ProofEnv(p.facts, p.query, rules), p.answer, search_budget(len(p.facts), attempts))
            for p in problems]


def evaluate(policy: ProofPolicy, rules: RuleBase, problems: list[Problem], retries: int = 0,
             seed: int = 0) -> list[Episode]:
    """A greedy proof per problem (no learning); with ``retries``, a proof that ends without an answer
    (stuck, or stopped short) is followed by up to that many proofs sampled from the policy, until
    one answers: System 2 thinking again. Steps add up over the attempts."""
    rng = np.random.default_rng(seed)
    out = []
    for p in problems:
        episode = run_episode(policy, ProofEnv(p.facts, p.query, rules), p.answer, None)
        steps, trace = episode.n_steps, list(episode.trace)
        for _ in range(retries):
            if episode.answer is not None:
                break
            episode = run_episode(policy, ProofEnv(p.facts, p.query, rules), p.answer, rng)
            steps += episode.n_steps
            trace += ["-- again, sampling --"] + episode.trace
        out.append(Episode([], episode.reward, episode.correct, steps, trace, episode.answer))
    return out
