"""Property tests (hypothesis) for the parts users feed directly: config overrides and data."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.config import ConfigError, RunConfig
from workbench.data import DataError, read_text
from workbench.model import IGNORE
from workbench.tasks.charlm import CharVocab
from workbench.tasks.mqar import make_mqar_examples

KEYS = ["model.d_model", "model.n_layers", "model.mixer", "model.mixer_options.n_units", "model.mixer_options.read_topk",
        "train.lr", "train.steps", "train.batch_size", "task.name", "nonsense.key", "model", "train.lr.x", ""]
VALUES = st.one_of(st.integers(-5, 300), st.floats(allow_nan=True, allow_subnormal=False), st.text(max_size=6), st.booleans(), st.none(),
                   st.lists(st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4), st.sampled_from(["transformer", "inverted"]))
def test_overrides_either_validate_or_raise_config_error(pairs, mixer):
    import json

    overrides = [f"model.mixer={json.dumps(mixer)}"] + [f"{k}={json.dumps(v)}" for k, v in pairs]
    try:
        config = RunConfig().with_overrides(overrides)
    except ConfigError:
        return
    assert config.model.d_model > 0 and config.train.lr > 0  # what validated is usable


@given(st.text(min_size=1, max_size=200))
def test_vocab_round_trips_and_rejects_unknown_characters(text):
    vocab = CharVocab("".join(sorted(set(text))))
    assert vocab.decode(vocab.encode(text)) == text
    outside = next(chr(c) for c in range(32, 0x3000) if chr(c) not in vocab.index)
    try:
        vocab.encode(text + outside)
    except ValueError as exc:
        assert repr(outside) in str(exc)
    else:
        raise AssertionError("an unknown character was accepted")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_read_text_returns_text_or_a_clear_data_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_bytes(raw)
    try:
        text = read_text(path)
    except DataError as exc:
        assert str(path) in str(exc)
    else:
        assert text.encode("utf-8") == raw and text


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(0, 40), st.integers(0, 2**31))
def test_mqar_answers_are_the_paired_values(kv_pairs, extra, seed):
    seq_len = 4 * kv_pairs + 2 * extra
    batch = make_mqar_examples(3, seq_len, kv_pairs, 64, np.random.default_rng(seed))
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        pairs = dict(zip(inputs[0 : 2 * kv_pairs : 2], inputs[1 : 2 * kv_pairs : 2]))
        labelled = [(inputs[i], t) for i, t in enumerate(targets) if t != IGNORE]
        assert len(labelled) == kv_pairs and all(pairs[key] == value for key, value in labelled)
