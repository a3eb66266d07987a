"""Multi-stream recall: interleaved key-value streams of very different rates (issue 18).

Where recency is not enough. S streams each own a range of key tokens. An example is a sequence of
events: each event picks a stream by its rate (geometric: stream s has weight ``rate_ratio ** s``)
and posts ``key value`` with a key of that stream not used before in the example and a random
value; every stream posts at least ``recent`` events. After the events come ``n_queries`` queries
``key value`` on distinct events among the last ``recent`` of each stream, the streams asked about
equally often, in a random order; the value is the label.
Every other position carries no loss.

A memory that keeps the last M messages of the whole sequence (a window, a FIFO ring) loses the
rare streams, whose recent events lie many frequent-stream events back; a memory whose units are
split between the streams by content keeps the last few events of each. ``accuracy@stream<s>``
reports each stream separately.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.config import ConfigError
from workbench.model import IGNORE, Model, TaskIO
from workbench.tasks.base import Batch, Task, lm_accuracy


def make_multistream_examples(
    n: int, seq_len: int, n_streams: int, key_range: int, n_values: int, n_queries: int, recent: int,
    rate_ratio: float, rng: np.random.Generator,
) -> tuple[Batch, np.ndarray]:
    """(batch, stream of each query (n, n_queries)). Token ids: 0 unused, keys by stream, then values.

    Every stream posts at least ``recent`` events (the rest are drawn by rate), so each has a last
    ``recent`` to ask about; each stream gets ``n_queries / n_streams`` queries on distinct events among
    its last ``recent`` (no key is asked twice, so no answer can be copied from an earlier query), in
    a random order.
    """
    n_events = (seq_len + 1 - 2 * n_queries) // 2
    per_stream = n_queries // n_streams
    rates = rate_ratio ** np.arange(n_streams)
    rates = rates / rates.sum()
    value_base = 1 + n_streams * key_range
    tokens = np.zeros((n, 2 * (n_events + n_queries)), dtype=np.int64)
    labels = np.full_like(tokens, IGNORE)
    query_streams = np.zeros((n, n_queries), dtype=np.int64)
    for row in range(n):
        counts = recent + rng.multinomial(n_events - n_streams * recent, rates)
        if counts.max() > key_range:
            raise ConfigError(f"multistream: a stream posted {counts.max()} events but has {key_range} keys; "
                              f"raise key_range or shorten seq_len")
        streams = rng.permutation(np.repeat(np.arange(n_streams), counts))
        keys = [s * key_range + 1 + rng.permutation(key_range)[: counts[s]] for s in range(n_streams)]
        values = value_base + rng.integers(0, n_values, n_events)
        events: list[list[tuple[int, int]]] = [[] for _ in range(n_streams)]
        for e, stream in enumerate(streams):
            key = int(keys[stream][len(events[stream])])
            tokens[row, 2 * e], tokens[row, 2 * e + 1] = key, values[e]
            events[stream].append((key, int(values[e])))
        asked = [(s, events[s][-1 - i]) for s in range(n_streams) for i in rng.permutation(recent)[:per_stream]]
        for q, index in enumerate(rng.permutation(len(asked))):
            stream, (key, value) = asked[index]
            position = 2 * (n_events + q)
            tokens[row, position], tokens[row, position + 1] = key, value
            labels[row, position + 1] = value
            query_streams[row, q] = stream
    inputs, targets = tokens[:, :-1], labels[:, 1:]
    return Batch(torch.from_numpy(inputs.copy()), torch.from_numpy(targets.copy())), query_streams


class MultiStreamTask(Task):
    name = "multistream"
    metric = "accuracy"

    def __init__(
        self,
        seq_len: int = 256,
        n_streams: int = 4,
        key_range: int = 128,
        n_values: int = 256,
        n_queries: int = 16,
        recent: int = 4,
        rate_ratio: float = 0.25,
        n_eval: int = 1000,
        eval_seed: int = 4242,
        long_lengths: list[int] | tuple = (),
    ) -> None:
        for name, value in (("seq_len", seq_len), ("n_streams", n_streams), ("key_range", key_range),
                            ("n_values", n_values), ("n_queries", n_queries), ("recent", recent), ("n_eval", n_eval)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"multistream.{name} must be a positive integer, got {value!r}")
        if not isinstance(rate_ratio, (int, float)) or isinstance(rate_ratio, bool) or not 0 < rate_ratio <= 1:
            raise ConfigError(f"multistream.rate_ratio must lie in (0, 1], got {rate_ratio!r}")
        if n_queries % n_streams or n_queries // n_streams > recent:
            raise ConfigError(f"multistream.n_queries={n_queries} must split evenly over {n_streams} streams, at most "
                              f"recent={recent} each")
        if (seq_len + 1 - 2 * n_queries) // 2 < n_streams * recent:
            raise ConfigError(f"multistream.seq_len={seq_len} leaves too few events for {n_streams} streams of "
                              f"{recent} and {n_queries} queries")
        self.options = dict(n_streams=n_streams, key_range=key_range, n_values=n_values, n_queries=n_queries,
                            recent=recent, rate_ratio=float(rate_ratio))
        self.seq_len, self.n_eval, self.eval_seed = seq_len, n_eval, eval_seed
        self.long_lengths = [int(n) for n in long_lengths]
        vocab = 1 + n_streams * key_range + n_values
        self.io = TaskIO(input_kind="tokens", head="lm", vocab_size=vocab)
        self.eval_batch, self.eval_streams = self._examples(n_eval, seq_len, np.random.default_rng([eval_seed, seq_len]))

    def _examples(self, n: int, seq_len: int, rng: np.random.Generator) -> tuple[Batch, np.ndarray]:
        return make_multistream_examples(n, seq_len, rng=rng, **self.options)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        return self._examples(batch_size, self.seq_len, rng)[0]

    def _accuracy(self, model: Model, batch: Batch, streams: np.ndarray, suffix: str = "") -> dict[str, float]:
        predictions = []
        for start in range(0, len(batch.inputs), 100):
            predictions.append(model.predict_labelled(batch.inputs[start:start + 100], batch.targets[start:start + 100]))
        predicted = torch.cat(predictions)
        labelled = batch.targets != IGNORE
        hits = (predicted[labelled] == batch.targets[labelled]).view(len(batch.inputs), -1).numpy()
        metrics = {f"accuracy{suffix}": float(hits.mean())}
        for s in range(self.options["n_streams"]):
            chosen = streams == s
            if chosen.any():
                metrics[f"accuracy@stream{s}{suffix}"] = float(hits[chosen].mean())
        return metrics

    @torch.no_grad()
    def evaluate(self, model: Model, final: bool = False) -> dict[str, float]:
        metrics = self._accuracy(model, self.eval_batch, self.eval_streams)
        for length in self.long_lengths if final else []:
            batch, streams = self._examples(self.n_eval, length, np.random.default_rng([self.eval_seed, length]))
            metrics |= self._accuracy(model, batch, streams, suffix=f"@{length}")
        return metrics


__all__ = ["MultiStreamTask", "make_multistream_examples", "lm_accuracy"]
