"""Which unit takes each message, and how evenly the units share the work (notebooks 02 and 03).

Read through the mixers' hook points, never their code:

* ``write_weights`` - per position, how much of its message each unit absorbs, (B, H, T, M):
  the seeking mixer's ``hook_writes`` (a_t = salience x the units' competition), or the inverted
  ring's ``hook_unit`` as a one-hot row (one head; a token that does not write has a zero row).
* ``multistream_streams`` - the stream of every event token of a multi-stream recall batch (a key
  and the value after it share their event's stream); queries are left out (-1).
* ``unit_stream_specialization`` - the mutual information (bits) between the unit and the stream
  of what is written, per head, against a null that shuffles the streams among the event tokens
  of each sequence (its mean and 95th percentile over permutations). The joint counts *write
  mass*: P(unit m, stream s) is the share of everything written that went to unit m from a token
  of stream s, so a token that writes little counts little.
* ``hard_writes`` - the same weights with each message's whole mass on its top unit, for the
  check that a softmax spread over all units does not hide a specialization of first choices.
* ``load_summary`` - each unit's load (write mass per sequence and head), the entropy of the load
  over the units against its ceiling log2 M, and the share of the busiest unit.
* ``multistream_config`` - the run config the notebooks train on multi-stream recall with (protocol
  v2's model: one block, the shared short conv), so both notebooks compare the same thing.
* ``LoadTracker`` - a task wrapper that adds ``load_summary`` of a fixed probe batch to every
  evaluation, so the load shows in a training run's history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.config import RunConfig
from workbench.hooks import capture
from workbench.lab.analysis import entropy_bits
from workbench.lab.probes import option


def write_weights(model: torch.nn.Module, inputs: torch.Tensor, layer: int = 0) -> np.ndarray:
    """(B, H, T, M) write weights of block ``layer``'s mixer on ``inputs`` (B, T); no gradients, mode kept.

    Seeking: ``hook_writes``. Inverted (the ring): ``hook_unit`` as one-hot rows over its n_units, H = 1.
    Any other mixer has no units to take messages: ValueError.
    """
    prefix = f"blocks.{layer}.mixer."
    device = next(model.parameters()).device
    with torch.no_grad(), capture(model, [prefix + "hook_writes", prefix + "hook_unit"]) as cache:
        model(inputs.to(device))
    if prefix + "hook_writes" in cache:
        return cache[prefix + "hook_writes"].float().cpu().numpy()
    if prefix + "hook_unit" in cache:
        unit = cache[prefix + "hook_unit"].cpu().numpy()  # (B, T), -1: no write
        n_units = int(option(model, layer, "n_units"))
        return (unit[:, None, :, None] == np.arange(n_units)).astype(np.float32)
    raise ValueError(f"block {layer}'s mixer has no hook_writes or hook_unit: it has no units that take messages")


def multistream_streams(inputs: torch.Tensor | np.ndarray, n_streams: int, key_range: int, n_queries: int) -> np.ndarray:
    """(B, T) stream of each event token of a multistream batch's inputs; -1 at the queries.

    Events fill the start of a sequence as ``key value`` pairs and keys of stream s are the ids
    1 + s key_range ... (s + 1) key_range (``workbench.tasks.multistream``); the n_queries queries
    follow, so a sequence of T input tokens has (T + 1) // 2 - n_queries events.
    """
    tokens = np.asarray(inputs)
    n_events = (tokens.shape[1] + 1) // 2 - n_queries
    keys = tokens[:, 0 : 2 * n_events : 2]
    stream = (keys - 1) // key_range
    if n_events <= 0 or (keys < 1).any() or (stream >= n_streams).any():
        raise ValueError("these inputs are not multistream events for the given options")
    streams = np.full(tokens.shape, -1, dtype=np.int64)
    streams[:, 0 : 2 * n_events : 2] = stream
    streams[:, 1 : 2 * n_events : 2] = stream  # the value shares its key's event
    return streams


def hard_writes(weights: np.ndarray) -> np.ndarray:
    """Each position's whole write mass on its top unit (ties: the first): the soft MI's robustness check.

    A softmax spreads every message over all units, which can dilute an MI that the units' *first
    choices* carry; the MI of these weights asks whether the unit a message goes to mostly depends
    on its stream.
    """
    weights = np.asarray(weights)
    top = weights.argmax(-1)[..., None] == np.arange(weights.shape[-1])
    return top * weights.sum(-1, keepdims=True)


def joint_mutual_information_bits(joint: np.ndarray) -> np.ndarray:
    """MI (bits) of the distribution proportional to ``joint`` over its last two axes (any leading axes)."""
    joint = np.asarray(joint, dtype=np.float64)
    rows, cols = joint.sum(-1), joint.sum(-2)
    flat = joint.reshape(*joint.shape[:-2], -1)
    return np.maximum(entropy_bits(rows) + entropy_bits(cols) - entropy_bits(flat), 0.0)


def unit_stream_joint(weights: np.ndarray, streams: np.ndarray, n_streams: int) -> np.ndarray:
    """(H, M, S) write mass each unit took from each stream; positions with stream -1 are left out."""
    onehot = (streams[..., None] == np.arange(n_streams)).astype(np.float64)  # (B, T, S)
    return np.einsum("bhtm,bts->hms", weights.astype(np.float64), onehot)


@dataclass
class Specialization:
    joint: np.ndarray  # (H, M, S) write mass by unit and stream
    mi_bits: np.ndarray  # (H,) MI(unit; stream) per head
    null_mean_bits: np.ndarray  # (H,) its mean with the streams shuffled within each sequence
    null_p95_bits: np.ndarray  # (H,) ... and 95th percentile
    p_value: np.ndarray  # (H,) (1 + permutations at or above the measured MI) / (1 + permutations)
    stream_entropy_bits: np.ndarray  # (H,) H(stream) of the written mass: the most MI could be
    n_permutations: int

    @property
    def excess_bits(self) -> np.ndarray:
        """MI above the null's mean, per head."""
        return self.mi_bits - self.null_mean_bits

    @property
    def specializes(self) -> np.ndarray:
        """Per head: MI above the null's 95th percentile."""
        return self.mi_bits > self.null_p95_bits


def unit_stream_specialization(weights: np.ndarray, streams: np.ndarray, n_streams: int, n_permutations: int,
                               rng: np.random.Generator) -> Specialization:
    """MI(unit; stream) per head and a null from ``n_permutations`` shuffles of the streams.

    Each permutation shuffles the stream labels among the event tokens of every sequence
    separately, so the null keeps each sequence's mix of streams and its write pattern and breaks
    only the tie between a message's stream and the unit that takes it.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    joint = unit_stream_joint(weights, streams, n_streams)
    mi = joint_mutual_information_bits(joint)
    labelled = streams >= 0
    null = np.empty((n_permutations, joint.shape[0]))
    for i in range(n_permutations):
        shuffled = streams.copy()
        for row in range(len(streams)):
            shuffled[row, labelled[row]] = rng.permutation(streams[row, labelled[row]])
        null[i] = joint_mutual_information_bits(unit_stream_joint(weights, shuffled, n_streams))
    return Specialization(
        joint=joint, mi_bits=mi, null_mean_bits=null.mean(0), null_p95_bits=np.percentile(null, 95, axis=0),
        p_value=(1 + (null >= mi - 1e-12).sum(0)) / (1 + n_permutations),
        stream_entropy_bits=entropy_bits(joint.sum(-2)), n_permutations=n_permutations)


@dataclass
class LoadSummary:
    n_units: int
    entropy_bits: float  # mean over sequences and heads of the entropy of the load over the units
    busiest_share: float  # mean over sequences and heads of the busiest unit's share of the load
    write_mass: float  # mean write mass per sequence and head (how much is written at all)

    @property
    def ceiling_bits(self) -> float:
        """log2 M: every unit takes the same load."""
        return math.log2(self.n_units)

    @property
    def evenness(self) -> float:
        """entropy / log2 M (1: perfectly even; nan with one unit)."""
        return self.entropy_bits / self.ceiling_bits if self.n_units > 1 else math.nan

    def as_dict(self) -> dict[str, float]:
        return {"load_entropy_bits": self.entropy_bits, "load_ceiling_bits": self.ceiling_bits,
                "load_evenness": self.evenness, "busiest_unit_share": self.busiest_share, "write_mass": self.write_mass}


def unit_load(weights: np.ndarray) -> np.ndarray:
    """(B, H, M): the write mass each unit took in each sequence and head."""
    return np.asarray(weights, dtype=np.float64).sum(2)


def load_summary(weights: np.ndarray) -> LoadSummary:
    """How evenly the units of each head share a sequence's writes, averaged over sequences and heads."""
    load = unit_load(weights)
    total = load.sum(-1)
    written = total > 0  # a (sequence, head) that wrote nothing has no load to share
    share = load[written] / total[written][:, None]
    if not written.any():
        return LoadSummary(load.shape[-1], math.nan, math.nan, 0.0)
    return LoadSummary(n_units=load.shape[-1], entropy_bits=float(entropy_bits(share).mean()),
                       busiest_share=float(share.max(-1).mean()), write_mass=float(total.mean()))


def unit_survival(weights: np.ndarray, start: int) -> dict[str, float]:
    """What the units keep from position ``start`` to the end: the write mass per token there, and each
    unit's surviving share prod_{t >= start} (1 - w_t[m]) of what it held at ``start`` (mean and
    minimum over sequences, heads and units). On MQAR with ``start`` after the key-value section it
    tells whether filler tokens wear the memory away (the length failure hold and sink address)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or not 0 <= start < w.shape[2]:
        raise ValueError(f"weights must be (B, H, T, M) and start in [0, T), got shape {w.shape} and start {start}")
    after = np.clip(w[:, :, start:], 0.0, 1.0)
    survival = np.exp(np.log1p(-np.minimum(after, 1 - 1e-12)).sum(2))  # (B, H, M)
    return {"write_mass_per_token": float(after.sum(-1).mean()), "survival_mean": float(survival.mean()),
            "survival_min": float(survival.min())}


def multistream_config(mixer: str, mixer_options: dict[str, Any], task_options: dict[str, Any], steps: int,
                       d_model: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                       evals: int = 4) -> RunConfig:
    """One block of ``mixer`` with the short conv of protocol v2, trained ``steps`` on multistream."""
    return RunConfig.from_dict({
        "task": {"name": "multistream", "options": dict(task_options)},
        "model": {"mixer": mixer, "d_model": d_model, "n_layers": 1, "short_conv": 8,
                  "mixer_options": dict(mixer_options)},
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "eval_every": max(1, steps // evals),
                  "warmup_steps": min(100, steps // 10), "checkpoint_every": steps, "seed": seed},
    })


@dataclass
class LoadTracker:
    """Wraps a task for ``workbench.train.train``: every evaluation also reports ``load_summary`` of
    ``probe_inputs`` (keys ``units/<name>`` in the history's metrics). Everything else is the task's."""

    task: Any
    probe_inputs: torch.Tensor
    layer: int = 0
    trace: list[dict[str, float]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        if name == "task":  # not yet set (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.task, name)

    def evaluate(self, model: torch.nn.Module, final: bool = False) -> dict[str, float]:
        metrics = self.task.evaluate(model, final=final)
        load = load_summary(write_weights(model, self.probe_inputs, self.layer)).as_dict()
        self.trace.append(load)
        return {**metrics, **{f"units/{name}": value for name, value in load.items()}}


__all__ = ["LoadSummary", "LoadTracker", "Specialization", "hard_writes", "joint_mutual_information_bits", "load_summary",
           "multistream_config", "multistream_streams", "unit_load", "unit_stream_joint", "unit_stream_specialization", "write_weights"]
