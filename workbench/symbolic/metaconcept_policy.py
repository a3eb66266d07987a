"""System 2 for metaconcepts: a prover with primitive actions and a policy trained by REINFORCE.

The prover holds a *current* concept (it starts at the query's subject) and offers five actions:

* ``hop`` - move to the current concept's parent, read from the ``x is-a y`` language facts;
* ``alias`` - move to the concept with an is-a fact that System 1 grounds most alike (by the
  denotations it reads off System 1; a held-out second name lands on its first name);
* ``compare`` - look at what System 1 grounded about the current concept and the target: the
  overlap of their denotations (Jaccard, overlap coefficient, containment both ways);
* ``yes`` / ``no`` - stop and answer.

No metaconcept rule is given: which action to take in which state, and which grounded evidence
means ``synonym`` or ``same-kind``, is what the policy learns, from a reward given only at the
end of a proof (1 if the answer is right, minus a small cost per step). The policy sees a state
that never includes the step count, so the proof's depth is its own decision. Training is
REINFORCE (Williams 1992) with a learned state-value baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from workbench.symbolic.metaconcept_world import QUERY_KINDS, Query

ACTIONS = ("hop", "alias", "compare", "yes", "no")
HOP, ALIAS, COMPARE, ANSWER_YES, ANSWER_NO = range(len(ACTIONS))
N_FEATURES = len(QUERY_KINDS) + 11 + len(ACTIONS) + 1  # kind, flags and evidence, last action (or none)


@dataclass
class ProofState:
    query: Query
    current: str
    compared: bool = False
    evidence: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    aliased: bool = False
    alias_similarity: float = 0.0
    last_action: int = -1
    steps: int = 0
    hops: int = 0
    answer: bool | None = None
    trace: list[dict] = field(default_factory=list)


class ConceptProver:
    """The executor: language facts (is-a edges) plus System 1's grounded denotations.

    ``profiles``: perceptual word -> denotation over a fixed set of probe instances (the
    probability, as System 1 grounds it, that the word applies to each probe).
    """

    def __init__(self, parent: dict[str, str], profiles: dict[str, np.ndarray]) -> None:
        self.parent = dict(parent)
        self.profiles = {w: np.asarray(p, dtype=np.float64) for w, p in profiles.items()}
        self.anchors = sorted(w for w in self.profiles if w in self.parent)  # perceptual words with an is-a fact
        self._evidence: dict[tuple[str, str], tuple[float, float, float, float]] = {}

    def evidence(self, a: str, b: str) -> tuple[float, float, float, float]:
        """(Jaccard, overlap coefficient, |a∩b|/|a|, |a∩b|/|b|) of two soft denotations; zeros if
        either word is not grounded (abstract concepts have no denotation)."""
        key = (a, b)
        if key not in self._evidence:
            if a not in self.profiles or b not in self.profiles:
                self._evidence[key] = (0.0, 0.0, 0.0, 0.0)
            else:
                pa, pb = self.profiles[a], self.profiles[b]
                both, either = np.minimum(pa, pb).sum(), np.maximum(pa, pb).sum()
                sa, sb = pa.sum(), pb.sum()
                self._evidence[key] = (float(both / max(either, 1e-6)), float(both / max(min(sa, sb), 1e-6)),
                                       float(both / max(sa, 1e-6)), float(both / max(sb, 1e-6)))
        return self._evidence[key]

    def start(self, query: Query) -> ProofState:
        return ProofState(query, query.subject)

    def features(self, state: ProofState) -> np.ndarray:
        q = state.query
        kind = [float(q.kind == k) for k in QUERY_KINDS]
        flags = [float(state.current == q.target), float(state.current in self.parent),
                 float(state.current in self.profiles), float(q.target in self.profiles), float(state.compared)]
        last = [float(state.last_action == a) for a in range(-1, len(ACTIONS))]
        return np.array(kind + flags + list(state.evidence) + [float(state.aliased), state.alias_similarity] + last,
                        dtype=np.float32)

    def step(self, state: ProofState, action: int) -> None:
        before = state.current
        if action == HOP and state.current in self.parent:
            state.current, state.hops = self.parent[state.current], state.hops + 1
            state.compared, state.evidence = False, (0.0, 0.0, 0.0, 0.0)
        elif action == ALIAS and state.current in self.profiles:
            candidates = [w for w in self.anchors if w != state.current]
            if candidates:
                best = max(candidates, key=lambda w: (self.evidence(state.current, w)[0], w))
                state.alias_similarity = self.evidence(state.current, best)[0]
                state.current, state.aliased = best, True
                state.compared, state.evidence = False, (0.0, 0.0, 0.0, 0.0)
        elif action == COMPARE:
            state.compared, state.evidence = True, self.evidence(state.current, state.query.target)
        elif action in (ANSWER_YES, ANSWER_NO):
            state.answer = action == ANSWER_YES
        state.trace.append({"step": state.steps + 1, "action": ACTIONS[action], "from": before, "to": state.current,
                            "evidence": [round(x, 3) for x in state.evidence] if action == COMPARE else None})
        state.last_action, state.steps = action, state.steps + 1


class Policy(nn.Module):
    """Action logits and a state value (the REINFORCE baseline) from the prover's state features."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.actor = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, len(ACTIONS)))
        self.critic = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(features), self.critic(features).squeeze(-1)


@dataclass
class Rollout:
    states: list[ProofState]
    features: np.ndarray  # (transitions, N_FEATURES)
    actions: np.ndarray  # (transitions,)
    episode: np.ndarray  # (transitions,) which episode each transition belongs to
    rewards: np.ndarray  # (episodes,) final reward


def reward_of(state: ProofState, step_cost: float) -> float:
    """1 for a right answer, 0 for a wrong one or none (out of steps), minus ``step_cost`` per step."""
    return float(state.answer is not None and state.answer == state.query.label) - step_cost * state.steps


Chooser = Callable[[np.ndarray, list[ProofState]], np.ndarray]


def policy_chooser(policy: Policy, greedy: bool, generator: torch.Generator | None = None) -> Chooser:
    def choose(features: np.ndarray, states: list[ProofState]) -> np.ndarray:
        with torch.no_grad():
            logits, _ = policy(torch.from_numpy(features))
        if greedy:
            return logits.argmax(-1).numpy()
        return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0].numpy()
    return choose


def rollout(prover: ConceptProver, choose: Chooser, queries: Sequence[Query], max_steps: int,
            step_cost: float = 0.0) -> Rollout:
    """Run every query's proof in lock-step until all have answered or used ``max_steps``."""
    states = [prover.start(q) for q in queries]
    features, actions, episode = [], [], []
    for _ in range(max_steps):
        active = [i for i, s in enumerate(states) if s.answer is None]
        if not active:
            break
        batch = np.stack([prover.features(states[i]) for i in active])
        chosen = choose(batch, [states[i] for i in active])
        for i, a in zip(active, chosen):
            prover.step(states[i], int(a))
        features.append(batch)
        actions.append(np.asarray(chosen, dtype=np.int64))
        episode.append(np.asarray(active, dtype=np.int64))
    return Rollout(states, np.concatenate(features), np.concatenate(actions), np.concatenate(episode),
                   np.array([reward_of(s, step_cost) for s in states]))


def reinforce_loss(logits: torch.Tensor, values: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor,
                   entropy_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE with a learned baseline: -E[log pi(a|s) (G - V(s))] + 1/2 E[(G - V(s))^2] - w H.

    The advantage is detached, so the policy term's gradient is the score-function estimate of
    the gradient of expected return, with V only reducing its variance.
    """
    log_probs = logits.log_softmax(-1)
    chosen = log_probs.gather(-1, actions[:, None])[:, 0]
    advantage = returns - values
    policy_term = -(chosen * advantage.detach()).mean()
    value_term = 0.5 * advantage.pow(2).mean()
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    loss = policy_term + value_term - entropy_weight * entropy
    return loss, {"policy": float(policy_term.detach()), "value": float(value_term.detach()), "entropy": float(entropy.detach())}


def returns_of(batch: Rollout, step_cost: float) -> np.ndarray:
    """Each transition's return: the episode's final reward plus the step costs not yet paid
    before it (so a step is charged only for itself and the ones after it)."""
    steps_before = np.zeros(len(batch.actions))
    seen: dict[int, int] = {}
    for t, e in enumerate(batch.episode):
        steps_before[t] = seen.get(int(e), 0)
        seen[int(e)] = seen.get(int(e), 0) + 1
    return batch.rewards[batch.episode] + step_cost * steps_before


@dataclass
class TrainSettings:
    iterations: int = 300
    batch_size: int = 96
    lr: float = 1e-2
    max_steps: int = 16
    step_cost: float = 0.01
    entropy_start: float = 0.05  # entropy bonus, annealed linearly to 0 over training


def train_policy(prover: ConceptProver, queries: Sequence[Query], settings: TrainSettings, seed: int,
                 progress: Callable[[int], None] | None = None) -> tuple[Policy, list[dict[str, float]]]:
    """REINFORCE on episodes drawn from ``queries``; returns the policy and its per-iteration curve."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 7])
    policy = Policy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.lr)
    curve: list[dict[str, float]] = []
    for iteration in range(settings.iterations):
        batch_queries = [queries[i] for i in rng.integers(len(queries), size=settings.batch_size)]
        batch = rollout(prover, policy_chooser(policy, greedy=False, generator=generator), batch_queries,
                        settings.max_steps, settings.step_cost)
        logits, values = policy(torch.from_numpy(batch.features))
        returns = torch.from_numpy(returns_of(batch, settings.step_cost)).float()
        weight = settings.entropy_start * (1 - iteration / max(settings.iterations - 1, 1))
        loss, parts = reinforce_loss(logits, values, torch.from_numpy(batch.actions), returns, weight)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        correct = [s.answer is not None and s.answer == s.query.label for s in batch.states]
        curve.append({"reward": float(batch.rewards.mean()), "accuracy": float(np.mean(correct)),
                      "steps": float(np.mean([s.steps for s in batch.states])), **parts})
        if progress is not None:
            progress(1)
    return policy, curve


def train_best_policy(prover: ConceptProver, queries: Sequence[Query], settings: TrainSettings, seed: int,
                      restarts: int, progress: Callable[[int], None] | None = None
                      ) -> tuple[Policy, list[dict[str, float]], list[float]]:
    """``restarts`` REINFORCE runs from different seeds; keep the one whose reward over its last
    tenth of training is highest (chosen on training episodes only, never on a test slice).
    Policy gradient can settle in a local optimum (answering before comparing); a restart is
    the plain remedy. Returns the kept policy, its curve, and every run's final reward."""
    runs = [train_policy(prover, queries, settings, seed * 1000 + r, progress) for r in range(restarts)]
    tail = max(settings.iterations // 10, 1)
    finals = [float(np.mean([point["reward"] for point in curve[-tail:]])) for _, curve in runs]
    best = int(np.argmax(finals))
    return runs[best][0], runs[best][1], finals


def fixed_depth_chooser(max_hops: int = 2) -> Chooser:
    """The simplest non-learned rule: is-a by a proof of at most ``max_hops`` hops (after an alias
    if the subject has no is-a fact); every other metaconcept query is answered ``no``."""
    def choose(features: np.ndarray, states: list[ProofState]) -> np.ndarray:
        out = []
        for f, s in zip(features, states):
            at_target, has_parent, perceptual = f[3] > 0, f[4] > 0, f[5] > 0
            if s.query.kind != "is-a":
                out.append(ANSWER_NO)
            elif at_target:
                out.append(ANSWER_YES)
            elif not has_parent and perceptual and not s.aliased:
                out.append(ALIAS)
            elif has_parent and s.hops < max_hops:
                out.append(HOP)
            else:
                out.append(ANSWER_NO)
        return np.array(out)
    return choose


def always_no_chooser() -> Chooser:
    return lambda features, states: np.full(len(states), ANSWER_NO)


def evaluate(prover: ConceptProver, choose: Chooser, queries: Sequence[Query], max_steps: int) -> dict[str, float]:
    """Accuracy (no answer within ``max_steps`` counts wrong) and mean proof steps."""
    done = rollout(prover, choose, queries, max_steps)
    correct = [s.answer is not None and s.answer == s.query.label for s in done.states]
    return {"accuracy": float(np.mean(correct)), "steps": float(np.mean([s.steps for s in done.states]))}


def explain(prover: ConceptProver, choose: Chooser, query: Query, max_steps: int) -> list[dict]:
    """One proof, step by step: action, the concept before and after it, the evidence compared."""
    return rollout(prover, choose, [query], max_steps).states[0].trace
