"""workbench.lab.recall: MQAR accuracy split into pairs kept (the write) and found (the read)."""

from __future__ import annotations

import pytest
import torch

from workbench.cli import main
from workbench.config import ConfigError, ModelConfig
from workbench.lab.recall import parse_cells, recall_anatomy
from workbench.model import Model, TaskIO

VOCAB = 64


def seeking(**options) -> Model:
    torch.manual_seed(0)
    config = ModelConfig(mixer="seeking", d_model=16, mixer_options={"n_heads": 2, "n_units": 6, "chunk_size": 4,
                                                                       **options})
    return Model(config, TaskIO(input_kind="tokens", head="lm", vocab_size=VOCAB)).eval()


def test_accuracy_splits_exactly_into_kept_and_lost():
    for seq_len, pairs in ((32, 4), (64, 8)):
        row = recall_anatomy(seeking(), seq_len, pairs, VOCAB, n=6, seed=1)
        assert row["queries"] == 6 * pairs
        kept = row["share_kept"]
        split = kept * (row["accuracy_when_kept"] or 0.0) + (1 - kept) * (row["accuracy_when_lost"] or 0.0)
        assert row["accuracy"] == pytest.approx(split)
        assert 0.0 <= row["survival_mean"] <= 1.0
        assert set(row["write_mass_per_token"]) == {"kv_value", "kv_key", "filler", "filler_value_range", "query"}


def test_a_memory_that_never_writes_keeps_everything_and_one_that_overwrites_keeps_nothing():
    with torch.no_grad():
        quiet = seeking(salience_bias=-30.0)  # writes of ~1e-13: whatever a unit took, it keeps
        assert recall_anatomy(quiet, 64, 8, VOCAB, n=4)["share_kept"] == 1.0
        # One unit per head and every token writes in full: a pair is gone by the next token.
        loud = seeking(n_units=1, salience_bias=30.0, refractory=False)
        row = recall_anatomy(loud, 64, 8, VOCAB, n=4)
        assert row["share_kept"] == 0.0 and row["survival_mean"] < 1e-3


def test_a_mixer_without_write_and_read_hooks_is_refused():
    model = Model(ModelConfig(mixer="transformer", d_model=16), TaskIO(input_kind="tokens", head="lm", vocab_size=VOCAB))
    with pytest.raises(ConfigError, match="hook_writes"):
        recall_anatomy(model, 32, 4, VOCAB, n=2)


@pytest.mark.parametrize("text", ["256y16", "16x8", "", "axb"])
def test_bad_cells_are_one_line(text):
    with pytest.raises(ConfigError, match="--cells"):
        parse_cells(text)


def test_the_command_refuses_another_task_in_one_line(small_config, tmp_path, capsys):
    from workbench.train import train

    train(small_config("copy", "seeking"), out_dir=tmp_path / "copy", progress=False)
    assert main(["recall-anatomy", str(tmp_path / "copy" / "checkpoint.pt")]) == 2
    assert "runs MQAR or multistream" in capsys.readouterr().err
    train(small_config("mqar", "seeking"), out_dir=tmp_path / "mqar", progress=False)
    out = tmp_path / "anatomy.json"
    assert main(["recall-anatomy", str(tmp_path / "mqar" / "checkpoint.pt"), "--cells", "32x4", "--n", "2",
                 "--out", str(out)]) == 0
    assert out.is_file() and "accuracy" in capsys.readouterr().out


MS_OPTIONS = {"n_streams": 3, "key_range": 24, "n_values": 8, "n_queries": 6, "recent": 2, "rate_ratio": 0.5}


def test_multistream_accuracy_splits_by_stream_into_kept_and_lost_and_names_the_evictors():
    from workbench.lab.recall import multistream_anatomy
    from workbench.tasks.multistream import MultiStreamTask

    task = MultiStreamTask(seq_len=48, n_eval=8, **MS_OPTIONS)
    torch.manual_seed(0)
    config = ModelConfig(mixer="seeking", d_model=16, mixer_options={"n_heads": 2, "n_units": 3, "chunk_size": 4})
    model = Model(config, task.io).eval()
    row = multistream_anatomy(model, task.options, 48, n=8, seed=task.eval_seed)
    # The default seed traces the task's own held-out examples: the same accuracy, overall and by stream.
    held_out = task.evaluate(model)
    assert row["all"]["accuracy"] == pytest.approx(held_out["accuracy"])
    for name, part in row["streams"].items():
        assert part["accuracy"] == pytest.approx(held_out[f"accuracy@{name}"])
    for part in (row["all"], *row["streams"].values()):
        kept = part["share_kept"]
        split = kept * (part["accuracy_when_kept"] or 0.0) + (1 - kept) * (part["accuracy_when_lost"] or 0.0)
        assert part["accuracy"] == pytest.approx(split)
        if part["evicted_by"]:  # three units per head for 20 events: some messages are lost, each to someone
            assert sum(part["evicted_by"].values()) == pytest.approx(1.0)
            assert set(part["evicted_by"]) == {"stream0", "stream1", "stream2", "queries"}
    assert row["all"]["share_kept"] < 1.0
    assert set(row["write_mass_per_token"]) >= {"stream0_value", "stream2_key", "query_value"}


def test_the_command_traces_a_multistream_model_and_refuses_mqar_cells_for_it(small_config, tmp_path, capsys):
    from workbench.train import train

    train(small_config("multistream", "seeking", task_options={"seq_len": 48, "n_eval": 8, **MS_OPTIONS}),
          out_dir=tmp_path / "ms", progress=False)
    checkpoint = str(tmp_path / "ms" / "checkpoint.pt")
    assert main(["recall-anatomy", checkpoint, "--cells", "32x4"]) == 2
    assert "--cells" in capsys.readouterr().err
    out = tmp_path / "anatomy.json"
    assert main(["recall-anatomy", checkpoint, "--n", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stream2: accuracy" in printed and "evicted by" in printed and out.is_file()
