"""Training: it learns, it records a complete result, it resumes exactly, and bad
checkpoints fail with CheckpointError."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

import workbench.train as train_module
from workbench.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from workbench.config import RunConfig
from workbench.model import Model
from workbench.tasks import build_task
from workbench.train import learning_rate, train

REQUIRED_FIELDS = ("task", "mixer", "parameters", "metrics", "tokens_per_s", "train_time_s", "seed", "git_commit", "torch", "device")


def test_loss_decreases_on_a_small_copy_run(small_config):
    config = small_config("copy", "transformer", steps=60, batch_size=16, eval_every=5, warmup_steps=5, lr=1e-2)
    task = build_task(config.task.name, config.task.options)
    task_batch = task.train_batch(torch.Generator().manual_seed(999), 64)  # fixed, unseen by training
    torch.manual_seed(config.train.seed)
    untrained = Model(config.model, task.io)
    with torch.no_grad():
        before = float(untrained.loss(task_batch.inputs, task_batch.targets))
    result_model, result = train(config, progress=False, device="cpu", task=task)
    model = result_model.eval()
    with torch.no_grad():
        after = float(model.loss(task_batch.inputs, task_batch.targets))
    assert after < before - 0.4, (before, after)
    # The recorded training losses fall too (mean of the first vs the last three records).
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 12 and [h["step"] for h in result["history"]] == list(range(5, 61, 5))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    assert result["metrics"]["token_accuracy"] > result["history"][0]["metrics"]["token_accuracy"]


def test_result_json_has_the_required_fields(small_config, tmp_path, mixer_name):
    config = small_config("copy", mixer_name, steps=4, eval_every=2, checkpoint_every=2, seed=5)
    out = tmp_path / "run"
    result_model, result = train(config, out_dir=out, progress=False, device="cpu")
    written = json.loads((out / "result.json").read_text())
    for field in REQUIRED_FIELDS:
        assert field in written, field
    assert written["task"] == "copy" and written["mixer"] == mixer_name and written["seed"] == 5
    assert written["steps"] == 4 and written["metric"] == "exact_match"
    assert set(written["metrics"]) >= {"exact_match", "token_accuracy"}
    assert written["parameters"]["total"] == sum(p.numel() for p in result_model.parameters())
    assert written["tokens_per_s"] > 0 and written["train_time_s"] > 0
    assert isinstance(written["git_commit"], str) and written["git_commit"]
    assert written["torch"] == torch.__version__ and written["device"].startswith("cpu")
    assert written["config"] == json.loads(json.dumps(config.to_dict()))
    assert [h["step"] for h in written["history"]] == [2, 4]
    # The machine's load at every eval, so wall-clock comparisons can be checked for a fair share.
    assert all(h["load_average_1min"] is None or h["load_average_1min"] >= 0 for h in written["history"])
    assert written["cpu_count"] == os.cpu_count()
    # The mixer's scalars are recorded at every eval, named by block (the inverted mixer's gate fractions).
    stats = written["history"][-1]["mixer_stats"]
    assert all(name.startswith("block0.") and math.isfinite(value) for name, value in stats.items())
    if mixer_name == "inverted":
        assert {"block0.write_fraction", "block0.advance_fraction"} <= set(stats)
        assert 0.0 <= stats["block0.write_fraction"] <= 1.0
    if mixer_name == "transformer":
        assert stats == {}
    # The in-process result carries the model; the file does not.
    assert "model" not in written and isinstance(result_model, Model) and "model" not in result
    assert (out / "checkpoint.pt").is_file()


def test_tokens_are_counted(small_config, tmp_path):
    config = small_config("mqar", "transformer", steps=3, batch_size=4, eval_every=3)
    result_model, result = train(config, progress=False, device="cpu")
    assert result["tokens"] == 3 * 4 * 32  # steps x batch x seq_len
    assert result["tokens_per_s"] == pytest.approx(result["tokens"] / result["train_time_s"])


def test_charlm_trains_on_any_text_file(small_config, text_file):
    config = small_config("charlm", "transformer", {"path": str(text_file), "context": 16, "max_eval_windows": 4}, steps=3)
    result_model, result = train(config, progress=False, device="cpu")
    assert set(result["metrics"]) >= {"bpc", "neg_bpc"} and result["metrics"]["bpc"] > 0
    assert result["metrics"]["val_chars"] == 4 * 16


@pytest.mark.parametrize("task", ["digits", "diabetes"])
def test_pooling_tasks_train(small_config, task):
    result_model, result = train(small_config(task, "transformer", steps=2), progress=False, device="cpu")
    assert result["metric"] in result["metrics"]


def test_target_metric_stops_early(small_config):
    # Any accuracy reaches 0: the run stops at its first evaluation.
    config = small_config("copy", "transformer", steps=20, eval_every=3, target_metric=0.0)
    result_model, result = train(config, progress=False, device="cpu")
    assert result["steps"] == 3 and result["reached_target"]


def test_learning_rate_warms_up_then_decays():
    config = RunConfig.from_dict({"train": {"steps": 100, "warmup_steps": 10, "lr": 1.0}})
    rates = [learning_rate(config, step, 0.0) for step in range(100)]
    assert rates[0] == pytest.approx(0.1)  # 1/10 of the way up, cosine not started
    assert all(a < b for a, b in zip(rates[:9], rates[1:10])), "warm-up must rise"
    assert max(rates) == rates[9] > 0.95
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])), "after warm-up the rate only decays"
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)
    # Under a time budget the schedule follows elapsed time when that is further along.
    timed = RunConfig.from_dict({"train": {"steps": 100, "warmup_steps": 0, "lr": 1.0, "time_budget_s": 10.0}})
    assert learning_rate(timed, 0, 0.0) == pytest.approx(1.0)
    assert learning_rate(timed, 0, 5.0) == pytest.approx(0.55)
    assert learning_rate(timed, 0, 10.0) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- resume


class Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("mixer", ["transformer", "inverted"])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(small_config, tmp_path, monkeypatch, mixer):
    config = small_config("copy", mixer, steps=8, eval_every=2, checkpoint_every=4, batch_size=8)
    full_model, full = train(config, out_dir=tmp_path / "full", progress=False, device="cpu")

    real = train_module.step_generator
    calls: list[int] = []
    interrupt_at = {"step": 4}

    def flaky(seed, step):
        calls.append(step)
        if step == interrupt_at["step"]:
            interrupt_at["step"] = None  # only once: the resumed run must get through
            raise Interrupt
        return real(seed, step)

    monkeypatch.setattr(train_module, "step_generator", flaky)
    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        train(config, out_dir=out, progress=False, device="cpu")
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4
    assert not (out / "result.json").exists()

    calls.clear()
    resumed_model, resumed = train(config, out_dir=out, resume=True, progress=False, device="cpu")
    assert calls == [4, 5, 6, 7], "the resumed run did not start from the checkpoint"
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for name, tensor in full_state.items():
        assert torch.equal(tensor, resumed_state[name]), name
    assert resumed["metrics"] == full["metrics"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["steps"] == full["steps"] == 8 and resumed["tokens"] == full["tokens"]


def test_resume_without_checkpoint_starts_fresh(small_config, tmp_path):
    config = small_config("copy", "transformer", steps=2)
    result_model, result = train(config, out_dir=tmp_path / "new", resume=True, progress=False, device="cpu")
    assert result["steps"] == 2


def test_resume_with_another_config_is_refused(small_config, tmp_path):
    out = tmp_path / "run"
    train(small_config("copy", "transformer", steps=2), out_dir=out, progress=False, device="cpu")
    other = small_config("copy", "transformer", steps=2, lr=1e-3)
    with pytest.raises(CheckpointError, match="another config"):
        train(other, out_dir=out, resume=True, progress=False, device="cpu")


def test_model_from_checkpoint_rebuilds_the_trained_model(small_config, tmp_path):
    out = tmp_path / "run"
    result_model, result = train(small_config("copy", "inverted", steps=3), out_dir=out, progress=False, device="cpu")
    model, config, task, payload = model_from_checkpoint(out / "checkpoint.pt")
    assert config.model.mixer == "inverted" and task.name == "copy" and payload["step"] == 3
    assert not model.training
    for name, tensor in result_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    tokens = torch.randint(0, task.io.vocab_size, (2, 9))
    torch.testing.assert_close(model(tokens), result_model.eval()(tokens), rtol=0, atol=0)


def test_a_checkpoint_keeps_the_mixer_options_it_was_built_with_when_a_default_moves(small_config, tmp_path):
    out = tmp_path / "run"
    config = small_config("copy", "seeking", steps=2)
    train(config, out_dir=out, progress=False, device="cpu")
    path = out / "checkpoint.pt"
    payload = load_checkpoint(path)
    today = payload["mixer_options_resolved"]
    assert today["rest_strength"] == config_of_model_options(config)["rest_strength"]
    # as if the run had been made when rest_strength's default was another number
    payload["mixer_options_resolved"] = dict(today, rest_strength=today["rest_strength"] + 1.5)
    torch.save(payload, path)
    model, rebuilt, _, _ = model_from_checkpoint(path)
    assert rebuilt.model.mixer_options["rest_strength"] == today["rest_strength"] + 1.5
    assert model.blocks[0].mixer.o.rest_strength == today["rest_strength"] + 1.5
    with pytest.raises(CheckpointError, match="a default moved since"):
        train(config, out_dir=out, resume=True, progress=False, device="cpu")
    payload["mixer_options_resolved"] = dict(today, rest_spread=1.0)  # an option taken out since, at its no-op
    torch.save(payload, path)
    assert model_from_checkpoint(path)[1].model.mixer_options == today
    payload["mixer_options_resolved"] = dict(today, rest_spread=4.0)  # ... used: a model this code cannot build
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="rest_spread"):
        model_from_checkpoint(path)
    # A run checkpointed before an option existed resumes and loads: it was built with that option's old behaviour.
    before = {k: v for k, v in today.items() if k != "read_before_write"}
    payload["mixer_options_resolved"] = before
    torch.save(payload, path)
    assert model_from_checkpoint(path)[1].model.mixer_options == today
    train(config, out_dir=out, resume=True, progress=False, device="cpu")
    payload = load_checkpoint(path)
    payload["mixer_options_resolved"] = ["rest_strength"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="mixer_options_resolved"):
        model_from_checkpoint(path)


def config_of_model_options(config):
    from workbench.train import resolved_mixer_options

    return resolved_mixer_options(config)


# ----------------------------------------------------------------------------- bad checkpoints


@pytest.fixture
def checkpoint(small_config, tmp_path):
    out = tmp_path / "run"
    train(small_config("copy", "transformer", steps=2), out_dir=out, progress=False, device="cpu")
    return out / "checkpoint.pt"


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        model_from_checkpoint(tmp_path / "none.pt")


def test_truncated_checkpoint(checkpoint):
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"corrupt or not a workbench checkpoint") as info:
        model_from_checkpoint(checkpoint)
    assert str(checkpoint) in str(info.value)


def test_garbage_checkpoint_and_resume_from_it(small_config, checkpoint):
    checkpoint.write_bytes(b"not a checkpoint at all \x00\x01\x02" * 10)
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(checkpoint)
    assert str(checkpoint) in str(info.value)
    with pytest.raises(CheckpointError, match="corrupt"):
        train(small_config("copy", "transformer", steps=2), out_dir=checkpoint.parent, resume=True, progress=False)


def test_foreign_payload_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a workbench checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a workbench checkpoint"):
        load_checkpoint(path)


def test_checkpoint_of_another_model_config(checkpoint):
    payload = load_checkpoint(checkpoint)
    payload["config"]["model"]["d_model"] = 64  # weights of a d_model=32 model, config says 64
    torch.save(payload, checkpoint)
    with pytest.raises(CheckpointError, match="does not match its model config") as info:
        model_from_checkpoint(checkpoint)
    assert str(checkpoint) in str(info.value)
    payload["config"]["model"]["d_model"] = 32
    payload.pop("mixer_options_resolved")  # the options a transformer was built with would not fit the ring
    payload["config"]["model"]["mixer"] = "inverted"
    payload["config"]["model"]["mixer_options"] = {"n_units": 8}
    torch.save(payload, checkpoint)
    with pytest.raises(CheckpointError, match="does not match its model config"):
        model_from_checkpoint(checkpoint)


def test_checkpoints_are_written_atomically(checkpoint):
    # No temporary file is left behind, and what is there loads.
    assert not checkpoint.with_name(checkpoint.name + ".tmp").exists()
    assert load_checkpoint(checkpoint)["format"] == train_module.CHECKPOINT_FORMAT


def test_provenance_is_fixed_at_the_start_and_the_load_is_read_each_time(monkeypatch):
    """The commit a process runs is the one it started from (a commit made while it trains must not
    be credited with its result); the load average, on the contrary, is read afresh at every eval."""
    import subprocess

    import workbench.train as train_module

    first = train_module.git_commit()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("git asked again"))
    assert train_module.git_commit() == first
    loads = iter([(1.0, 0, 0), (3.5, 0, 0)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    assert (train_module.load_average(), train_module.load_average()) == (1.0, 3.5)
