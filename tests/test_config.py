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
    with pytest.raises(ConfigError, match="write_price must be a finite number, got 'high'"):
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


# ----------------------------------------------------------------------------- issue 22: every option value checked


@pytest.mark.parametrize(
    "override, message",
    [
        # Mixer options: finite numbers, true/false for switches, integers for counts (never taken from bools).
        ('model.mixer_options.write_price=NaN', r"model.mixer_options.write_price must be a finite number, got nan"),
        ('model.mixer_options.write_price=Infinity', r"write_price must be a finite number"),
        ('model.mixer_options.write_bias="abc"', r"write_bias must be a finite number, got 'abc'"),
        ('model.mixer_options.gate_margin=NaN', r"gate_margin must be a finite number"),
        ('model.mixer_options.refractory=1', r"refractory must be true or false, got 1"),
        ('model.mixer_options.n_units=true', r"n_units must be an integer, got True"),
        ('model.mixer_options.n_units=8.0', r"n_units must be an integer, got 8.0"),
        ('model.mixer_options.timescales=[0.5, "a"]', r"timescales\[1\] must be a finite number"),
        ('model.mixer_options.timescales=0.5', r"timescales must be a list"),
        ('model.mixer_options.n_units=null', r"n_units must not be null"),
        # Task options: the kind of the default, then the task's own ranges, before any data is read.
        ('task.options.max_len=true', r"task.options.max_len must be an integer, got True"),
        ('task.options.max_len=2.5', r"task.options.max_len must be an integer, got 2.5"),
        ('task.options.long_lengths=[0]', r"copy.long_lengths\[\] must be a positive integer"),
        ('task.options.long_lengths=7', r"task.options.long_lengths must be a list"),
        ('task.options.eval_seed=-1', r"copy.eval_seed must be an integer in \[0, "),
        ('train.seed=-1', r"train.seed must be an integer in \[0, "),
        ('train.seed=18446744073709551616', r"train.seed must be an integer in \[0, "),
    ],
)
def test_bad_option_values_are_refused_before_building(override, message):
    base = ["model.mixer=inverted"] if "mixer_options" in override else []
    with pytest.raises(ConfigError, match=message):
        check_config(RunConfig().with_overrides(base + [override]))


@pytest.mark.parametrize(
    "task, options, message",
    [
        ("mqar", {"kv_pairs": 0}, r"mqar.kv_pairs must be a positive integer, got 0"),
        ("mqar", {"seq_len": 8, "kv_pairs": 4}, r"seq_len=8 is too short for 4 pairs"),
        ("mqar", {"vocab_size": 8, "kv_pairs": 4}, r"vocab_size=8 has too few keys"),
        ("mqar", {"long_configs": [[64]]}, r"long_configs must be a list of \[seq_len, kv_pairs\]"),
        ("mqar", {"long_configs": [[8, 4]]}, r"long_configs \[8, 4\]: seq_len=8 is too short"),
        ("mqar", {"long_configs": [["a", 4]]}, r"must be an integer"),
        ("charlm", {"max_eval_windows": -1}, r"charlm.max_eval_windows must be a positive integer, got -1"),
        ("charlm", {"max_eval_windows": 0}, r"charlm.max_eval_windows must be a positive integer"),
        ("charlm", {"context": 0}, r"charlm.context must be a positive integer"),
        ("charlm", {"path": 5}, r"task.options.path must be text"),
        ("charlm", {"path": ""}, r"charlm.path must be the path of a UTF-8 text file"),
        ("majority", {"min_len": 9, "max_len": 4}, r"min_len <= max_len"),
        ("majority", {"alphabet": 1}, r"majority.alphabet must be an integer >= 2"),
        ("digits", {"split_seed": -3}, r"digits.split_seed must be an integer in \[0, "),
    ],
)
def test_bad_task_option_values_are_config_errors(task, options, message):
    config = RunConfig.from_dict({"task": {"name": task, "options": options}})
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_every_option_of_every_registered_mixer_and_task_is_type_checked():
    """Peers' options too: a value of the wrong kind never reaches a constructor (bools are not ints)."""
    import dataclasses

    from workbench.config import option_spec_of_signature
    from workbench.mixers import MIXERS
    from workbench.tasks import TASKS

    wrong = {bool: "yes", int: True, float: "x", str: 3, tuple: 3, list: 3}
    checked_count = 0
    for name, mixer in MIXERS.items():
        for field in dataclasses.fields(mixer.Options):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            if type(default) in wrong:
                data = {"model": {"mixer": name, "mixer_options": {field.name: wrong[type(default)]}}}
                with pytest.raises(ConfigError, match=f"model.mixer_options.{field.name}"):
                    checked(data)
                checked_count += 1
    for name, task in TASKS.items():
        for option, (default, _) in option_spec_of_signature(task.__init__).items():
            if type(default) in wrong:
                with pytest.raises(ConfigError, match=f"task.options.{option}"):
                    checked({"task": {"name": name, "options": {option: wrong[type(default)]}}})
                checked_count += 1
    assert checked_count > 20


def test_a_peer_mixers_options_are_checked_from_its_defaults(monkeypatch):
    """A mixer added beside the core (its own Options dataclass, no checks of its own) gets the same
    checks: finite numbers, bools for switches, integers for counts."""
    from dataclasses import dataclass

    from workbench.mixers import MIXERS
    from workbench.mixers.transformer import SoftmaxAttention

    @dataclass
    class PeerOptions:
        n_heads: int = 4
        decay: float = 0.9
        gated: bool = True

    class Peer(SoftmaxAttention):
        Options = PeerOptions

        @classmethod
        def check_options(cls, options, d_model):  # a peer that checks nothing itself
            pass

    monkeypatch.setitem(MIXERS, "peer", Peer)
    for options, message in [({"decay": float("nan")}, "decay must be a finite number"),
                             ({"gated": 0}, "gated must be true or false"),
                             ({"n_heads": False}, "n_heads must be an integer")]:
        with pytest.raises(ConfigError, match=message):
            checked({"model": {"mixer": "peer", "mixer_options": options}})
    checked({"model": {"mixer": "peer", "mixer_options": {"decay": 1, "gated": False}}})  # an int is a number


@pytest.mark.parametrize("text", ["{}", "", "   \n", "# only a comment\n", "[]", "5", "just text"])
def test_empty_or_non_mapping_config_files_are_refused(tmp_path, text):
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"config{suffix}"
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"empty|mapping|cannot parse"):
            RunConfig.load(path)


def test_binary_or_directory_config_is_a_config_error(tmp_path):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not UTF-8"):
        RunConfig.load(binary)
    with pytest.raises(ConfigError, match="not a file"):
        RunConfig.load(tmp_path)


def test_absurd_override_values_are_config_errors():
    deep = "[" * 100_000 + "]" * 100_000  # json.loads would recurse past the limit
    with pytest.raises(ConfigError, match="model.d_model must be a positive integer"):
        RunConfig().with_overrides([f"model.d_model={deep}"])


@pytest.mark.parametrize("override", ["model.d_model=99999999999999999999", "train.batch_size=99999999999999999999",
                                      "model.short_conv=99999999999999999999", "model.mixer_options.n_units=2e40",
                                      "model.mixer_options.n_freq=99999999999999999999",
                                      "task.options.max_len=99999999999999999999"])
def test_integers_beyond_any_machine_are_config_errors(override):
    """Before: TypeError / OverflowError from inside torch."""
    with pytest.raises(ConfigError, match=r"beyond any machine|must be an integer"):
        check_config(RunConfig().with_overrides(["model.mixer=inverted", override]))
