"""Tasks: seeded generators, well-formed copy/MQAR/char-LM batches, tabular shapes and heads."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from workbench.config import ConfigError
from workbench.data import DataError
from workbench.model import IGNORE
from workbench.tasks import TASKS, build_task, step_generator
from workbench.tasks.copy import ALPHABET, BOS, EOS, PAD, SEP, VOCAB, make_copy_examples
from workbench.tasks.mqar import make_mqar_examples


@pytest.fixture
def tasks(text_file):
    """One small instance of every registered task (char-LM on the self-made corpus).

    A task added after these tests is built with its default options.
    """
    options = {
        "copy": {"max_len": 6, "n_eval": 16, "long_lengths": ()},
        "mqar": {"seq_len": 32, "kv_pairs": 4, "vocab_size": 64, "n_eval": 16, "long_configs": []},
        "charlm": {"path": str(text_file), "context": 16, "max_eval_windows": 4},
    }
    return {name: build_task(name, options.get(name, {})) for name in TASKS}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_generator_is_deterministic_given_its_seed(tasks, name):
    task = tasks[name]
    a = task.train_batch(torch.Generator().manual_seed(42), 8)
    b = task.train_batch(torch.Generator().manual_seed(42), 8)
    c = task.train_batch(torch.Generator().manual_seed(43), 8)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert (a.mask is None) == (b.mask is None) and (a.mask is None or torch.equal(a.mask, b.mask))
    assert not (torch.equal(a.inputs, c.inputs) and torch.equal(a.targets, c.targets)), "seed is ignored"
    assert len(a.inputs) == len(a.targets) == 8


def test_step_generator_is_a_pure_function_of_seed_and_step():
    draw = lambda seed, step: torch.randint(0, 2**30, (4,), generator=step_generator(seed, step))  # noqa: E731
    assert torch.equal(draw(0, 5), draw(0, 5))
    assert not torch.equal(draw(0, 5), draw(0, 6))
    assert not torch.equal(draw(0, 5), draw(1, 5))


def test_evaluation_sets_are_fixed_by_eval_seed():
    a = build_task("copy", {"max_len": 6, "n_eval": 16, "long_lengths": ()})
    b = build_task("copy", {"max_len": 6, "n_eval": 16, "long_lengths": ()})
    assert torch.equal(a.eval_batch.inputs, b.eval_batch.inputs)
    m1 = build_task("mqar", {"seq_len": 32, "vocab_size": 64, "n_eval": 16, "long_configs": []})
    m2 = build_task("mqar", {"seq_len": 32, "vocab_size": 64, "n_eval": 16, "long_configs": []})
    assert torch.equal(m1.eval_batch.inputs, m2.eval_batch.inputs)
    assert torch.equal(m1.eval_batch.targets, m2.eval_batch.targets)


# ----------------------------------------------------------------------------- copy


def test_copy_batches_are_well_formed():
    lengths = [1, 3, 7, 7, 2]
    batch = make_copy_examples(lengths, torch.Generator().manual_seed(0))
    width = 2 * max(lengths) + 2
    assert batch.inputs.shape == batch.targets.shape == (len(lengths), width)
    for row, length in enumerate(lengths):
        x, y = batch.inputs[row], batch.targets[row]
        symbols = x[1 : length + 1]
        assert x[0] == BOS and x[length + 1] == SEP
        assert ((symbols >= 0) & (symbols < ALPHABET)).all()
        # After SEP the input repeats the symbols (teacher forcing), then padding.
        assert torch.equal(x[length + 2 : 2 * length + 2], symbols)
        assert (x[2 * length + 2 :] == PAD).all()
        # No loss before SEP; from the SEP position the targets are the symbols, then EOS.
        assert (y[: length + 1] == IGNORE).all()
        assert torch.equal(y[length + 1 : 2 * length + 1], symbols)
        assert y[2 * length + 1] == EOS
        assert (y[2 * length + 2 :] == IGNORE).all()
        # Every non-ignored target is what the next input is (shifted by one), except EOS.
        answer = y[length + 1 : 2 * length + 1]
        assert torch.equal(answer, x[length + 2 : 2 * length + 2])
    assert int(batch.inputs.max()) < VOCAB and int(batch.targets[batch.targets != IGNORE].max()) < VOCAB


def test_copy_train_batch_lengths_respect_max_len(tasks):
    batch = tasks["copy"].train_batch(torch.Generator().manual_seed(1), 64)
    seps = (batch.inputs == SEP).int().argmax(1)  # SEP sits right after the L symbols
    assert ((seps >= 2) & (seps <= 7)).all()  # 1 <= L <= max_len = 6
    assert ((batch.targets != IGNORE).sum(1) == seps).all()  # L symbols + EOS = L + 1 = sep index


# ----------------------------------------------------------------------------- MQAR


def check_mqar(inputs: torch.Tensor, targets: torch.Tensor, kv_pairs: int, vocab_size: int) -> None:
    half = vocab_size // 2
    assert inputs.shape == targets.shape
    assert int(inputs.min()) >= 0 and int(inputs.max()) < vocab_size
    context = 2 * kv_pairs
    for x, y in zip(inputs.tolist(), targets.tolist()):
        keys, values = x[0:context:2], x[1:context:2]
        assert len(set(keys)) == kv_pairs, "keys repeat within an example"
        assert len(set(values)) == kv_pairs, "values repeat within an example"
        assert all(0 < k < half for k in keys) and all(half <= v < vocab_size for v in values)
        pairs = dict(zip(keys, values))
        labelled = [t for t, target in enumerate(y) if target != IGNORE]
        # Each key is queried once, after the kv prefix, and its label is its paired value.
        assert len(labelled) == kv_pairs
        assert all(t >= context for t in labelled)
        assert sorted(x[t] for t in labelled) == sorted(keys)
        for t in labelled:
            assert y[t] == pairs[x[t]], f"position {t}: key {x[t]} labelled {y[t]}, paired with {pairs[x[t]]}"


@pytest.mark.parametrize("seq_len, kv_pairs, vocab_size", [(16, 4, 32), (32, 4, 64), (64, 8, 100), (40, 3, 9)])
def test_mqar_answers_are_the_paired_values(seq_len, kv_pairs, vocab_size):
    batch = make_mqar_examples(50, seq_len, kv_pairs, vocab_size, np.random.default_rng(seq_len))
    assert batch.inputs.shape == (50, seq_len)
    check_mqar(batch.inputs, batch.targets, kv_pairs, vocab_size)


def test_mqar_task_batches_and_eval_set_are_well_formed(tasks):
    task = tasks["mqar"]
    batch = task.train_batch(torch.Generator().manual_seed(0), 16)
    check_mqar(batch.inputs, batch.targets, 4, 64)
    check_mqar(task.eval_batch.inputs, task.eval_batch.targets, 4, 64)
    assert task.io.vocab_size == 64 and task.io.head == "lm"


def test_mqar_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="too short"):
        make_mqar_examples(2, 15, 4, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="too few keys"):
        make_mqar_examples(2, 64, 8, 16, np.random.default_rng(0))


# ----------------------------------------------------------------------------- char-LM


def test_charlm_windows_are_shifted_by_one(tasks):
    task = tasks["charlm"]
    batch = task.train_batch(torch.Generator().manual_seed(0), 8)
    assert batch.inputs.shape == batch.targets.shape == (8, 16)
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    # Each window is a real stretch of the training text.
    train = task.vocab.decode(task.train_data)
    for x, y in zip(batch.inputs, batch.targets):
        assert task.vocab.decode(torch.cat([x, y[-1:]])) in train


def test_charlm_vocab_split_and_validation_windows(text_file):
    text = text_file.read_text(encoding="utf-8")
    task = build_task("charlm", {"path": str(text_file), "context": 16})
    assert task.vocab.chars == "".join(sorted(set(text))) and "ü" in task.vocab.chars
    assert task.vocab.decode(task.vocab.encode(text)) == text
    assert len(task.train_data) == int(0.9 * len(text))
    assert task.vocab.decode(torch.cat([task.train_data, task.val_data])) == text
    assert task.io.vocab_size == len(task.vocab.chars)
    assert task.state() == {"chars": task.vocab.chars, "data_sha256": hashlib.sha256(text_file.read_bytes()).hexdigest()}
    windows = task.val_windows()
    # Without a cap the windows cover every validation character once (bar the first).
    valid = windows.targets != IGNORE
    assert int(valid.sum()) == len(task.val_data) - 1
    assert torch.equal(windows.targets[valid], task.val_data[1:])
    assert torch.equal(windows.inputs[valid], task.val_data[:-1])
    capped = build_task("charlm", {"path": str(text_file), "context": 16, "max_eval_windows": 3}).val_windows()
    assert capped.inputs.shape == (3, 16)


def test_charlm_rejects_too_short_text(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("to be or not to be" * 5, encoding="utf-8")
    with pytest.raises(DataError, match="needs at least"):
        build_task("charlm", {"path": str(path), "context": 64})


# ----------------------------------------------------------------------------- tabular


def test_digits_shapes_and_head(tasks):
    task = tasks["digits"]
    assert task.io.input_kind == "vectors" and task.io.head == "classify"
    assert task.io.input_dim == 4 and task.io.n_outputs == 10
    batch = task.train_batch(torch.Generator().manual_seed(0), 8)
    assert batch.inputs.shape == (8, 16, 4) and batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (8,) and batch.targets.dtype == torch.long
    assert 0 <= float(batch.inputs.min()) and float(batch.inputs.max()) <= 1
    assert set(task.test_targets.tolist()) == set(range(10))
    assert len(task.train_inputs) + len(task.test_inputs) == 1797


def test_digits_patches_tile_the_image():
    from sklearn.datasets import load_digits

    task = build_task("digits")
    image = torch.tensor(load_digits().images / 16.0, dtype=torch.float32)
    # Patch p = (row block r, column block c) holds pixels [2r:2r+2, 2c:2c+2] in reading order.
    rebuilt = task.test_inputs.view(-1, 4, 4, 2, 2).permute(0, 1, 3, 2, 4).reshape(-1, 8, 8)
    flat = image.reshape(len(image), -1)
    for img in rebuilt[:5]:
        assert (flat == img.reshape(-1)).all(1).any(), "patches do not reassemble into a digits image"


def test_diabetes_shapes_and_head(tasks):
    task = tasks["diabetes"]
    assert task.io.input_kind == "vectors" and task.io.head == "regress"
    assert task.io.input_dim == 11 and task.io.n_outputs == 1
    batch = task.train_batch(torch.Generator().manual_seed(0), 8)
    assert batch.inputs.shape == (8, 10, 11) and batch.targets.shape == (8, 1)
    assert batch.targets.dtype == torch.float32
    # Token i carries feature i's value and a one-hot of i.
    assert torch.equal(batch.inputs[0, :, 1:], torch.eye(10))
    assert len(task.train_inputs) + len(task.test_inputs) == 442


def test_tabular_split_is_seeded_and_disjoint():
    a, b, c = build_task("diabetes"), build_task("diabetes"), build_task("diabetes", {"split_seed": 1})
    assert torch.equal(a.test_inputs, b.test_inputs)
    assert not torch.equal(a.test_inputs, c.test_inputs)
    train_rows = {tuple(r) for r in a.train_inputs[:, :, 0].tolist()}
    assert not any(tuple(r) in train_rows for r in a.test_inputs[:, :, 0].tolist())


def test_build_task_errors():
    with pytest.raises(ConfigError, match="unknown task 'sorting'"):
        build_task("sorting")
    with pytest.raises(ConfigError, match=r"unknown options \['max_length'\] for task 'copy'"):
        build_task("copy", {"max_length": 6})


def test_multistream_queries_ask_once_for_each_recent_event_of_each_stream_rare_ones_too():
    from workbench.tasks.multistream import make_multistream_examples

    batch, streams = make_multistream_examples(50, 128, n_streams=3, key_range=64, n_values=16, n_queries=6, recent=2,
                                               rate_ratio=0.2, rng=np.random.default_rng(3))
    n_events = (128 + 1 - 12) // 2
    for row in range(len(batch.inputs)):
        keys, values = batch.inputs[row, : 2 * n_events : 2].tolist(), batch.inputs[row, 1 : 2 * n_events : 2].tolist()
        assert len(set(keys)) == len(keys)  # a key is used once per example
        labelled = (batch.targets[row] != -100).nonzero()[:, 0].tolist()
        asked = [int(batch.inputs[row, position]) for position in labelled]
        assert len(asked) == 6 and len(set(asked)) == 6  # no key asked twice: no answer to copy
        for q, position in enumerate(labelled):
            key, value = int(batch.inputs[row, position]), int(batch.targets[row, position])
            stream = (key - 1) // 64
            assert stream == streams[row, q] and value == values[keys.index(key)]
            own = [k for k in keys if (k - 1) // 64 == stream]
            assert len(own) >= 2 and key in own[-2:]  # one of the last `recent` events of its stream
        assert sorted(streams[row].tolist()) == [0, 0, 1, 1, 2, 2]  # every stream asked equally often
    firsts = batch.inputs[:, : 2 * n_events : 2]
    share = [float(((firsts - 1) // 64 == s).float().mean()) for s in range(3)]
    assert share[0] > 0.7 and share[2] < 0.07  # rates 1 : 0.2 : 0.04 beyond the 2 events each stream must post


def test_multistream_rejects_bad_options():
    with pytest.raises(ConfigError, match="rate_ratio"):
        build_task("multistream", {"rate_ratio": 0.0})
    with pytest.raises(ConfigError, match="raise key_range"):
        build_task("multistream", {"key_range": 8, "n_eval": 4})
    with pytest.raises(ConfigError, match="split evenly"):
        build_task("multistream", {"n_queries": 10})
