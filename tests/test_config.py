"""Configs: load/round trip, overrides, and one clear ConfigError for every bad value."""

from __future__ import annotations

import json

import pytest
import yaml

from workbench.config import ConfigError, RunConfig
from workbench.train import check_config


def checked(data: dict) -> RunConfig:
    """Parse and check a config the way the CLI does before training."""
    return check_config(RunConfig.from_dict(data))

FULL = {
    "task": {"name": "mqar", "options": {"seq_len": 32, "kv_pairs": 4}},
    "model": {
        "mixer": "inverted",
        "d_model": 32,
        "n_layers": 2,
        "mlp_ratio": 2,
        "mixer_options": {"n_units": 8, "n_pools": 2, "read_topk": 2},
    },
    "train": {"steps": 10, "batch_size": 4, "lr": 0.001, "eval_every": 5, "target_metric": 0.9, "seed": 3},
}


def test_from_dict_fills_defaults_and_keeps_values():
    config = RunConfig.from_dict(FULL)
    assert config.task.name == "mqar" and config.task.options == {"seq_len": 32, "kv_pairs": 4}
    assert config.model.mixer == "inverted" and config.model.n_layers == 2
    assert config.model.mixer_options["n_pools"] == 2
    assert config.train.steps == 10 and config.train.seed == 3 and config.train.target_metric == 0.9
    # Unset values take the defaults.
    assert config.train.grad_clip == 1.0 and config.train.checkpoint_every == 250
    assert RunConfig.from_dict({}).to_dict() == RunConfig().to_dict()


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_load_round_trip(tmp_path, suffix):
    config = RunConfig.from_dict(FULL)
    path = tmp_path / f"run{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(config.to_dict()))
    else:
        path.write_text(yaml.safe_dump(config.to_dict()))
    loaded = RunConfig.load(path)
    assert loaded == config
    assert loaded.to_dict() == config.to_dict()


def test_load_a_runs_result_json_takes_its_config(tmp_path):
    """`train --config result.json` re-runs that run: its `config`, not its top-level keys."""
    config = RunConfig.from_dict(FULL)
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"task": "charlm", "metrics": {"bpc": 2.3}, "config": config.to_dict()}))
    assert RunConfig.load(path) == config


def test_load_yaml_written_by_hand(tmp_path):
    path = tmp_path / "hand.yaml"
    path.write_text("model:\n  mixer: inverted\n  mixer_options: {n_units: 16}\ntrain:\n  steps: 7\n")
    config = RunConfig.load(path)
    assert config.model.mixer == "inverted" and config.model.mixer_options == {"n_units": 16}
    assert config.train.steps == 7 and config.task.name == "copy"


def test_load_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "nope.yaml")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        RunConfig.load(bad_json)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        RunConfig.load(bad_yaml)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        RunConfig.load(not_mapping)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"optimizer": {}}, r"unknown config sections \['optimizer'\]"),
        ({"model": {"d_modle": 32}}, r"unknown keys in model: \['d_modle'\]"),
        ({"train": {"stpes": 3}}, r"unknown keys in train: \['stpes'\]"),
        ({"task": {"nmae": "copy"}}, r"unknown keys in task"),
        ({"model": 5}, r"section 'model' must be a mapping"),
        ({"model": {"d_model": -32}}, r"model.d_model must be a positive integer, got -32"),
        ({"model": {"d_model": 0}}, r"model.d_model must be a positive integer"),
        ({"model": {"n_layers": -1}}, r"model.n_layers must be a positive integer"),
        ({"model": {"d_model": 32.5}}, r"model.d_model must be a positive integer"),
        ({"train": {"steps": -5}}, r"train.steps must be a positive integer, got -5"),
        ({"train": {"batch_size": 0}}, r"train.batch_size must be a positive integer"),
        ({"train": {"lr": 0}}, r"train.lr must be > 0"),
        ({"train": {"warmup_steps": -1}}, r"warmup_steps"),
        ({"train": {"time_budget_s": -1.0}}, r"time_budget_s must be > 0"),
        ({"model": {"mixer": "no-such-mixer"}}, r"unknown mixer .no-such-mixer.; choose one of \[.*'inverted'.*'transformer'"),
        ({"task": {"name": "sorting"}}, r"unknown task 'sorting'; choose one of \[.*'copy'.*'mqar'"),
    ],
)
def test_bad_values_raise_config_error(data, message):
    with pytest.raises(ConfigError, match=message):
        checked(data)


@pytest.mark.parametrize(
    "mixer, options, message",
    [
        ("inverted", {"n_units": 8, "read_topk": 9}, r"read_topk=9 cannot exceed n_units=8"),
        ("inverted", {"n_units": 10, "n_pools": 3}, r"n_units=10 must divide into n_pools=3"),
        ("inverted", {"n_units": 0}, r"n_units must be a positive integer"),
        ("inverted", {"n_units": -4}, r"n_units must be a positive integer"),
        ("inverted", {"timescales": [0.5, 1.5]}, r"timescales must lie in \(0, 1\)"),
        ("inverted", {"n_unit": 8}, r"unknown options \['n_unit'\]"),
        ("transformer", {"n_heads": 5}, r"d_model=32 must split into 5 heads"),
        ("transformer", {"n_heads": 0}, r"n_heads must be a positive integer"),
        ("transformer", {"heads": 4}, r"unknown options \['heads'\]"),
    ],
)
def test_bad_mixer_options_raise_config_error(mixer, options, message):
    data = {"model": {"mixer": mixer, "d_model": 32, "mixer_options": options}}
    with pytest.raises(ConfigError, match=message):
        checked(data)


@pytest.mark.parametrize("options", [[1, 2], 5, "n_units=8"])
def test_options_must_be_mappings(options):
    with pytest.raises(ConfigError, match="model.mixer_options must be a mapping"):
        RunConfig.from_dict({"model": {"mixer_options": options}})
    with pytest.raises(ConfigError, match="task.options must be a mapping"):
        RunConfig.from_dict({"task": {"options": options}})


def test_mistyped_mixer_option_is_a_config_error():
    # The mixer's own check compares numbers; a string there must not escape as a TypeError.
    with pytest.raises(ConfigError, match="inverted"):
        checked({"model": {"mixer": "inverted", "mixer_options": {"write_price": "high"}}})


def test_config_error_is_a_value_error():
    # Callers that catch ValueError (argument parsing, notebooks) still see config errors.
    assert issubclass(ConfigError, ValueError)


def test_with_overrides_sets_values_and_keeps_the_rest():
    base = RunConfig.from_dict(FULL)
    config = base.with_overrides(["model.d_model=64", "model.mixer_options.n_units=16", "train.lr=0.01"])
    assert config.model.d_model == 64 and isinstance(config.model.d_model, int)
    assert config.model.mixer_options == {"n_units": 16, "n_pools": 2, "read_topk": 2}
    assert config.train.lr == 0.01
    assert config.train.steps == base.train.steps and config.task == base.task
    # The original is untouched.
    assert base.model.d_model == 32 and base.model.mixer_options["n_units"] == 8


def test_with_overrides_parses_strings_none_and_free_form_options():
    config = RunConfig().with_overrides(
        [
            "model.mixer=inverted",
            "model.mixer_options.n_units=8",
            "train.target_metric=null",
            "task.options.n_eval=32",
            "task.options.long_lengths=[]",
        ]
    )
    assert config.model.mixer == "inverted"
    assert config.train.target_metric is None
    assert config.task.options == {"n_eval": 32, "long_lengths": []}


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_model", r"must look like section.key=value"),
        ("d_model=64", r"must start with task., model. or train."),
        ("optim.lr=0.1", r"must start with task., model. or train."),
        ("model.width=64", r"unknown config key 'model.width'"),
        ("train.lr.value=1", r"unknown config key"),
        ("model.d_model=-64", r"model.d_model must be a positive integer"),
        ("model.d_model=wide", r"model.d_model must be a positive integer"),
        ("model.mixer=rnn", r"unknown mixer 'rnn'"),
        ("model.mixer_options.n_heads=3", r"must split into 3 heads"),
        ("model.mixer_options.bogus=1", r"unknown options \['bogus'\]"),
        ("train.lr=fast", r"train.lr must be a finite number, got 'fast'"),
        ("train.grad_clip=much", r"train.grad_clip must be a finite number, got 'much'"),
        ("train.lr=Infinity", r"train.lr must be a finite number"),
        ("train.lr=NaN", r"train.lr must be a finite number"),
        ("train.lr=1e9", r"train.lr=1000000000.0 is above 1"),
        ("train.weight_decay=NaN", r"train.weight_decay must be a finite number"),
        ("train.steps=true", r"train.steps must be a positive integer, got True"),
        ("task.options.bogus=1", r"unknown options \['bogus'\] for task 'copy'"),
        ("train.seed=abc", r"train.seed must be an integer"),
        ("train.target_metric=high", r"train.target_metric must be a finite number"),
    ],
)
def test_bad_override_raises_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(RunConfig().with_overrides([override]))
