"""Where associative recall is lost: at the write (the pair was never kept) or at the read.

For a model whose mixer exposes ``hook_writes`` (B, H, T, M) and ``hook_read_weights`` (B, H, T, M)
- the seeking units - on MQAR examples of a given length, every query is traced back to the value
token of its pair (the message that carries the answer):

* the unit that took most of that message in each head, and how much of it survives there until the
  query: prod over the later tokens s of (1 - a_s[m]) (a unit keeps its message until it absorbs
  another); the pair is *kept* when it survives by at least a half in some head;
* the read weight the query gives that unit (in the head where it survives best).

So accuracy splits exactly into share kept x accuracy when kept + share lost x accuracy when lost:
a low first factor is a write problem (eviction: other messages took the unit), a low second one
a read problem (the message is there, the query does not find it). Write mass per token, by token
class (key-value section, filler, queries), says what the units spend their writes on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.config import ConfigError
from workbench.hooks import capture
from workbench.model import IGNORE
from workbench.tasks.mqar import make_mqar_examples

KEPT = 0.5  # a pair counts as kept when at least half of what its unit took survives to the query


def _hook_names(model: torch.nn.Module, layer: int) -> list[str]:
    """The block's write and read hook names; refused in one line (before a long forward pass) where absent."""
    prefix = f"blocks.{layer}.mixer."
    names = [prefix + "hook_writes", prefix + "hook_read_weights"]
    if not set(names) <= {name for name, _ in model.named_modules()}:
        raise ConfigError(f"recall anatomy reads a mixer's hook_writes and hook_read_weights (the seeking units); "
                          f"block {layer}'s {type(model.blocks[layer].mixer).__name__} has no such hooks")
    return names


def _trace(model: torch.nn.Module, names: list[str], inputs: torch.Tensor):
    """logits and the hooks' writes and read weights (B, H, T, M, in float64) of an eval-mode pass."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), capture(model, names) as seen:
        logits = model(inputs)
    model.train(was_training)
    return logits, seen[names[0]].double(), seen[names[1]].double()


def recall_anatomy(model: torch.nn.Module, seq_len: int, kv_pairs: int, vocab_size: int, n: int = 32,
                   seed: int = 0, layer: int = 0) -> dict[str, Any]:
    """The split of MQAR accuracy at (seq_len, kv_pairs) into write and read, on n examples of ``seed``."""
    names = _hook_names(model, layer)
    batch = make_mqar_examples(n, seq_len, kv_pairs, vocab_size, np.random.default_rng(seed))
    inputs, targets = batch.inputs, batch.targets
    logits, writes, reads = _trace(model, names, inputs)
    context = 2 * kv_pairs
    asked = targets != IGNORE
    correct = logits.argmax(-1) == targets
    # log of what survives: kept[t] - kept[tw] = sum over tw < s <= t of log(1 - a_s)
    log_keep = torch.log1p(-writes.clamp(max=1 - 1e-9)).cumsum(2)
    survivals, read_weights, right = [], [], []
    for b, t in asked.nonzero().tolist():
        pair = int((inputs[b, :context:2] == inputs[b, t]).nonzero()[0])  # a query asks a key of its example
        value_at = 2 * pair + 1
        unit = writes[b, :, value_at].argmax(-1)  # (H,): the unit that took most of the message, per head
        heads = torch.arange(writes.shape[1])
        survival = (log_keep[b, heads, t, unit] - log_keep[b, heads, value_at, unit]).exp()
        best = int(survival.argmax())
        survivals.append(float(survival[best]))
        read_weights.append(float(reads[b, best, t, unit[best]]))
        right.append(bool(correct[b, t]))
    survivals_a, reads_a, right_a = np.array(survivals), np.array(read_weights), np.array(right)
    kept = survivals_a >= KEPT

    def mean(values: np.ndarray) -> float | None:
        return float(values.mean()) if values.size else None

    mass = writes.sum(-1).mean(1)  # (B, T): write mass per token, averaged over heads
    section = torch.zeros_like(asked)
    section[:, :context] = True
    key_range = inputs < vocab_size // 2
    filler = ~section & ~asked
    classes = {"kv_value": section & ~key_range, "kv_key": section & key_range, "filler": filler,
               "filler_value_range": filler & ~key_range, "query": asked}
    return {
        "seq_len": seq_len, "kv_pairs": kv_pairs, "examples": n, "seed": seed, "queries": int(right_a.size),
        "accuracy": mean(right_a),
        "share_kept": mean(kept),
        "accuracy_when_kept": mean(right_a[kept]),
        "accuracy_when_lost": mean(right_a[~kept]),
        "read_weight_on_holder_when_kept": mean(reads_a[kept]),
        "survival_mean": mean(survivals_a),
        "write_mass_per_token": {name: float(mass[mask].mean()) if mask.any() else None for name, mask in classes.items()},
    }


def parse_cells(text: str) -> list[tuple[int, int]]:
    """'256x16,1024x64' -> [(256, 16), (1024, 64)]; anything else is one ConfigError."""
    cells = []
    for part in (p for p in text.split(",") if p.strip()):
        try:
            seq_len, pairs = (int(x) for x in part.strip().lower().split("x"))
        except ValueError:
            raise ConfigError(f"--cells takes SEQ_LENxPAIRS items such as 1024x64, got {part!r}") from None
        if pairs < 1 or seq_len < 4 * pairs:
            raise ConfigError(f"--cells {part!r}: needs pairs >= 1 and seq_len >= 4 x pairs (the pairs and their queries)")
        cells.append((seq_len, pairs))
    if not cells:
        raise ConfigError("--cells is empty; give e.g. 256x16,1024x64")
    return cells


def multistream_anatomy(model: torch.nn.Module, task_options: dict[str, Any], seq_len: int, n: int = 200,
                        seed: int = 4242, layer: int = 0) -> dict[str, Any]:
    """Multi-stream recall split by stream into write and read, and each lost query's evictor.

    As :func:`recall_anatomy`, on ``make_multistream_examples(n, seq_len, **task_options)``: every
    query is traced back to the value token of its event (the message that carries the answer), in
    the head where that message survives best. For a query whose message was not kept, the *evictor*
    is the later token that took the most of its unit before the query: an event of some stream (its
    key or value token) or a token of the queries (which post ``key value`` too, so a query's value
    writes like an event's). The default seed is the task's held-out set.
    """
    from workbench.tasks.multistream import make_multistream_examples

    names = _hook_names(model, layer)
    batch, query_streams = make_multistream_examples(n, seq_len, rng=np.random.default_rng([seed, seq_len]),
                                                     **task_options)
    inputs, targets = batch.inputs, batch.targets
    logits, writes, reads = _trace(model, names, inputs)
    n_streams, key_range = task_options["n_streams"], task_options["key_range"]
    asked = targets != IGNORE
    queries_from = int(asked[0].nonzero()[0])  # every example has its events first, then its queries
    correct = logits.argmax(-1) == targets
    log_keep = torch.log1p(-writes.clamp(max=1 - 1e-9)).cumsum(2)
    events = inputs[:, :queries_from:2]  # the events' keys
    stream_of_key = (events - 1) // key_range  # (B, events)

    def source(b: int, position: int) -> str:
        if position >= queries_from:
            return "queries"
        return f"stream{int(stream_of_key[b, position // 2])}"

    sources = [f"stream{s}" for s in range(n_streams)] + ["queries"]
    rows: list[tuple[int, bool, float, float, str | None]] = []  # stream, right, survival, read weight, evictor
    heads = torch.arange(writes.shape[1])
    for b in range(inputs.shape[0]):
        for q, t in enumerate(asked[b].nonzero().flatten().tolist()):
            value_at = 2 * int((events[b] == inputs[b, t]).nonzero()[0]) + 1
            unit = writes[b, :, value_at].argmax(-1)
            survival = (log_keep[b, heads, t, unit] - log_keep[b, heads, value_at, unit]).exp()
            best = int(survival.argmax())
            evictor = None
            if survival[best] < KEPT:
                later = writes[b, best, value_at + 1:t, unit[best]]
                evictor = source(b, value_at + 1 + int(later.argmax()))
            rows.append((int(query_streams[b, q]), bool(correct[b, t]), float(survival[best]),
                         float(reads[b, best, t, unit[best]]), evictor))

    def split(chosen: list[tuple]) -> dict[str, Any]:
        right = np.array([r[1] for r in chosen])
        kept = np.array([r[2] >= KEPT for r in chosen])
        lost = [r[4] for r in chosen if r[2] < KEPT]
        return {"queries": len(chosen), "accuracy": float(right.mean()), "share_kept": float(kept.mean()),
                "accuracy_when_kept": float(right[kept].mean()) if kept.any() else None,
                "accuracy_when_lost": float(right[~kept].mean()) if (~kept).any() else None,
                "read_weight_on_holder_when_kept": float(np.mean([r[3] for r in chosen if r[2] >= KEPT]))
                if kept.any() else None,
                "evicted_by": {name: lost.count(name) / len(lost) for name in sources} if lost else {}}

    mass = writes.sum(-1).mean(1)  # (B, T): write mass per token, averaged over heads
    key_stream = torch.where((inputs >= 1) & (inputs <= n_streams * key_range), (inputs - 1) // key_range, -1)
    in_events = torch.arange(inputs.shape[1]) < queries_from
    mass_by_source = {}
    for s in range(n_streams):
        is_key = in_events & (key_stream == s) & (torch.arange(inputs.shape[1]) % 2 == 0)
        is_value = torch.zeros_like(is_key)
        is_value[:, 1:] = is_key[:, :-1]
        mass_by_source[f"stream{s}_key"] = float(mass[is_key].mean()) if is_key.any() else None
        mass_by_source[f"stream{s}_value"] = float(mass[is_value].mean()) if is_value.any() else None
    mass_by_source["query_key"] = float(mass[:, queries_from::2].mean())
    mass_by_source["query_value"] = float(mass[:, queries_from + 1::2].mean())
    return {"seq_len": seq_len, "examples": n, "seed": seed, "all": split(rows),
            "streams": {f"stream{s}": split([r for r in rows if r[0] == s]) for s in range(n_streams)},
            "write_mass_per_token": mass_by_source}
