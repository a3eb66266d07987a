"""Heads on one backbone: the majority task's labels, and every head learning with every mixer."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from workbench.config import ConfigError, ModelConfig
from workbench.model import Model
from workbench.tasks import TASKS, build_task
from workbench.tasks.majority import MajorityTask, majority_labels, make_majority_examples


def expected_label(symbols: list[int]) -> int:
    """Reference rule, written independently: highest count, ties to the smallest symbol."""
    counts = Counter(symbols)
    return min(counts, key=lambda s: (-counts[s], s))


# ----------------------------------------------------------------------------- majority task


def test_majority_is_registered():
    assert TASKS["majority"] is MajorityTask
    task = build_task("majority", {"alphabet": 5, "n_eval": 8})
    assert task.io.head == "classify" and task.io.input_kind == "tokens"
    assert task.io.vocab_size == 6 and task.io.n_outputs == 5  # five symbols + PAD


@pytest.mark.parametrize(
    "symbols, label",
    [
        ([3, 1, 3, 2], 3),  # clear majority
        ([2, 0, 2, 0], 0),  # tie between 0 and 2 -> smallest id
        ([4, 1, 1, 4, 3], 1),  # tie between 1 and 4, order in the sequence does not matter
        ([2], 2),
        ([3, 2, 1, 0], 0),  # all tied
    ],
)
def test_majority_labels_by_hand(symbols, label):
    padded = torch.tensor([symbols + [5, 5, 5]])  # PAD = alphabet = 5, must be ignored
    mask = torch.tensor([[True] * len(symbols) + [False] * 3])
    assert majority_labels(padded, mask, alphabet=5).item() == label


def test_majority_batches_match_the_reference_rule_and_are_well_formed():
    task = MajorityTask(alphabet=4, min_len=3, max_len=9, n_eval=16)
    batch = task.train_batch(torch.Generator().manual_seed(0), 200)
    assert batch.inputs.dtype == torch.long and batch.targets.shape == (200,)
    assert batch.mask is not None and batch.mask.shape == batch.inputs.shape
    lengths = batch.mask.sum(1)
    assert int(lengths.min()) >= 3 and int(lengths.max()) <= 9
    # Mask is a prefix (right padding) and padded positions hold PAD only.
    assert torch.equal(batch.mask, torch.arange(batch.inputs.shape[1])[None] < lengths[:, None])
    assert bool((batch.inputs[~batch.mask] == task.pad).all())
    assert bool((batch.inputs[batch.mask] < task.alphabet).all())
    for row in range(200):
        symbols = batch.inputs[row, : int(lengths[row])].tolist()
        assert batch.targets[row].item() == expected_label(symbols)
    # With a four-symbol alphabet and short sequences ties are common: the rule is exercised.
    ties = sum(1 for row in range(200) if len(set(Counter(batch.inputs[row][batch.mask[row]].tolist()).values())) < 4)
    assert ties > 0


def test_majority_is_deterministic_given_its_seeds():
    task = MajorityTask(n_eval=32)
    a = task.train_batch(torch.Generator().manual_seed(7), 16)
    b = task.train_batch(torch.Generator().manual_seed(7), 16)
    c = task.train_batch(torch.Generator().manual_seed(8), 16)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.inputs, c.inputs)
    again = MajorityTask(n_eval=32)
    assert torch.equal(task.eval_batch.inputs, again.eval_batch.inputs)
    assert torch.equal(task.eval_batch.targets, again.eval_batch.targets)
    other = MajorityTask(n_eval=32, eval_seed=1)
    assert not torch.equal(task.eval_batch.inputs, other.eval_batch.inputs)


def test_majority_fixed_length_and_bad_options():
    batch = make_majority_examples(8, 5, 5, 3, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (8, 5) and bool(batch.mask.all())
    for options in ({"alphabet": 1}, {"min_len": 0}, {"min_len": 9, "max_len": 8}, {"n_eval": 0}):
        with pytest.raises(ConfigError, match=r"majority(\.| needs)"):
            build_task("majority", options)


def test_majority_evaluate_reports_accuracy_and_tie_split(mixer_name, mixer_options):
    task = MajorityTask(n_eval=64, max_len=12)
    torch.manual_seed(0)
    model = Model(ModelConfig(mixer=mixer_name, d_model=32, mlp_ratio=2, mixer_options=mixer_options(mixer_name)), task.io)
    metrics = task.evaluate(model.eval())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 < metrics["tie_fraction"] < 1.0
    assert {"accuracy_tied", "accuracy_untied"} <= set(metrics)


def test_majority_predictions_ignore_padding(mixer_name, mixer_options, scrambled):
    """Causal backbone + masked pooling: what sits in the padded positions changes nothing."""
    task = MajorityTask(alphabet=6, min_len=4, max_len=14, n_eval=8)
    model = scrambled(Model(ModelConfig(mixer=mixer_name, d_model=32, mlp_ratio=2,
                                        mixer_options=mixer_options(mixer_name)), task.io)).eval()
    batch = task.train_batch(torch.Generator().manual_seed(3), 8)
    noise = torch.randint(0, 6, batch.inputs.shape, generator=torch.Generator().manual_seed(4))
    other = torch.where(batch.mask, batch.inputs, noise)
    with torch.no_grad():
        torch.testing.assert_close(model(batch.inputs, batch.mask), model(other, batch.mask), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- every head learns


@pytest.fixture
def head_tasks(text_file):
    """One small task per head: lm (char-LM), classify on tokens, classify on patches, regress."""
    return {
        "lm": build_task("charlm", {"path": str(text_file), "context": 24, "max_eval_windows": 2}),
        "classify-tokens": build_task("majority", {"alphabet": 6, "min_len": 6, "max_len": 16, "n_eval": 16}),
        "classify-vectors": build_task("digits"),
        "regress": build_task("diabetes"),
    }


@pytest.mark.parametrize("head", ["lm", "classify-tokens", "classify-vectors", "regress"])
def test_every_head_learns_a_fixed_batch_with_every_mixer(head, head_tasks, mixer_name, mixer_options):
    task = head_tasks[head]
    torch.manual_seed(0)
    model = Model(ModelConfig(mixer=mixer_name, d_model=32, mlp_ratio=2, mixer_options=mixer_options(mixer_name)), task.io)
    batch = task.train_batch(torch.Generator().manual_seed(0), 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(12):
        loss = model.loss(batch.inputs, batch.targets, batch.mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        final = model.loss(batch.inputs, batch.targets, batch.mask).item()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert final < 0.9 * losses[0], f"{head}/{mixer_name}: loss {losses[0]:.3f} -> {final:.3f}"
    metrics = task.evaluate(model)
    assert task.metric in metrics
    if head == "lm":  # the generation head also samples through the recurrent form
        prompt = task.vocab.encode("the ")[None]
        out = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(0))
        assert out.shape == (1, 12) and len(task.vocab.decode(out[0])) == 12
