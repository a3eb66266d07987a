"""Issue 22, property-based: random command lines never show a traceback (exit 0 or 2); random config
overrides either train (one step, finite loss) or are refused with ConfigError; a run interrupted at
any step and resumed equals the uninterrupted run.

Kept fast: few examples, tiny models and budgets, mostly argument and config errors.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench.train as train_module
from workbench.cli import main
from workbench.config import ConfigError, RunConfig
from workbench.mixers import MIXERS
from workbench.train import check_config, train

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
# More examples for a deeper search: WORKBENCH_FUZZ_SCALE=10 pytest tests/test_reliability.py
SCALE = float(os.environ.get("WORKBENCH_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


def _corpus(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home", "über"]
    return " ".join(rng.choice(words) for _ in range(n_chars // 3))[:n_chars]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """A data directory (so nothing is downloaded), tiny checkpoints and a few hostile files."""
    root = tmp_path_factory.mktemp("reliability")
    data = root / "data"
    data.mkdir()
    (data / "tinyshakespeare.txt").write_text(_corpus(12_000), encoding="utf-8")
    files = {"root": root, "data": data}
    base = {"model": {"d_model": 8, "mlp_ratio": 1, "mixer_options": {"n_heads": 2}},
            "train": {"steps": 1, "batch_size": 2, "eval_every": 1, "warmup_steps": 0}}
    charlm = RunConfig.from_dict({**base, "task": {"name": "charlm", "options": {
        "path": str(data / "tinyshakespeare.txt"), "context": 16, "max_eval_windows": 2}}})
    copy = RunConfig.from_dict({**base, "task": {"name": "copy", "options": {"max_len": 4, "n_eval": 4,
                                                                            "long_lengths": []}}})
    for name, config in (("charlm", charlm), ("copy", copy)):
        train(config, out_dir=root / name, progress=False, device="cpu")
        files[f"{name}_ckpt"] = root / name / "checkpoint.pt"
    (root / "garbage.pt").write_bytes(b"\x00\x01garbage" * 50)
    (root / "empty.yaml").write_text("")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    (root / "good.yaml").write_text("train:\n  lr: 0.01\n")
    (root / "other.txt").write_text(_corpus(12_000, seed=3), encoding="utf-8")
    (root / "doc.md").write_text("# results\n\n<!-- report:compare-v2-smoke -->\nold\n<!-- /report:compare-v2-smoke -->\n")
    (root / "results").mkdir()
    return files


# ----------------------------------------------------------------------------- random command lines

VALUES = ["0", "-1", "1", "2", "nan", "inf", "-inf", "1e9", "true", "null", "abc", "", "[]", "{}", '"x"', "0.5",
          "99999999999999999999", "[1, 2]", '{"a": 1}']
SET_KEYS = ["train.lr", "train.steps", "train.batch_size", "train.seed", "train.grad_clip", "train.weight_decay",
            "train.warmup_steps", "train.eval_every", "train.target_metric", "train.time_budget_s", "model.d_model",
            "model.n_layers", "model.short_conv", "model.mlp_ratio", "model.mixer", "model.mixer_options",
            "model.mixer_options.n_units", "model.mixer_options.write_price", "model.mixer_options.write_bias",
            "model.mixer_options.n_heads", "model.mixer_options.refractory", "model.mixer_options.timescales",
            "task.name", "task.options", "task.options.max_len", "task.options.kv_pairs", "task.options.n_eval",
            "task.options.max_eval_windows", "task.options.context", "task.options.long_lengths", "bogus.key", "train",
            "model.d_model.x"]
SMALL = ["0", "-1", "1", "2", "x", "1.5", "", "nan"]


def _flag_values(ws: dict[str, Path]) -> dict[str, dict[str, list[str] | None]]:
    root = ws["root"]
    paths = [str(root / "nope.pt"), str(root / "garbage.pt"), str(root), str(ws["charlm_ckpt"]),
             str(ws["copy_ckpt"])]
    configs = [str(root / n) for n in ("nope.yaml", "empty.yaml", "list.yaml", "binary.yaml", "good.yaml")]
    texts = [str(root / "other.txt"), str(ws["data"] / "tinyshakespeare.txt"), str(root / "nope.txt"), str(root)]
    sets = [f"{k}={v}" for k, v in itertools.product(SET_KEYS, VALUES)] + ["noequals", "=1", "train.lr"]
    return {
        "train": {"--steps": SMALL, "--seed": SMALL + ["99999999999999999999"], "--task":
                  ["copy", "mqar", "charlm", "digits", "majority", "nope", ""], "--mixer": ["transformer", "inverted",
                  "nope"], "--set": sets, "--config": configs, "--data": texts, "--resume": None, "--overwrite": None,
                  "--bogus": None},
        "eval": {"CHECKPOINT": paths, "--final": None, "--data": texts, "--bogus": None},
        "generate": {"CHECKPOINT": paths, "--prompt": ["", "the ", "\u2603", "a" * 5, "\n"],
                     "--n": ["-1", "0", "3", "x"], "--temperature": ["nan", "inf", "-1", "0", "0.8", "x", "1e-30"],
                     "--top-k": ["0", "-3", "1", "5", "x", "1000"], "--seed": ["-1", "0", "99999999999999999999"]},
        "compare": {"--budget": ["smoke", "nope"], "--tasks": ["nosuch", "copy,hops", "mqar"],
                    "--mixers": ["nosuch", "inverted:n_units", "inverted@width=3", "transformer:n_heads=x", ""],
                    "--experiment": ["v9", "v2", "ablation", "v2-noconv"], "--seeds": ["0", "-1", "x", "2"],
                    "--results": [str(root / "results"), str(root / "nope")], "--no-wait": None,
                    "--allow-incomplete": None, "--aggregate-only": None},
        "report": {"FILE": [str(root / "doc.md"), str(root / "nope.md")],
                   "--results": [str(root / "results"), str(root / "nope"), str(root)], "--print": None},
        "notebooks": {"NAME": ["nosuch", "99", "zz_none"], "--smoke": None},
        "bench": {"--lengths": ["x", "0", "16,-1", ""], "--mixers": ["nope", "", "inverted"],
                  "--repeats": SMALL, "--time-limit": ["nan", "-1", "0", "x"], "--long": ["-1", "0", "x"],
                  "--long-dtypes": ["float8", "", "float32"], "--d-model": ["0", "-2", "x"],
                  "--memory-limit-gb": ["nan", "-1", "0"], "--no-scaling": None, "--threads": ["0", "-1"]},
    }


@st.composite
def command_lines(draw, flags: dict[str, dict[str, list[str] | None]], out_dirs) -> list[str]:
    command = draw(st.sampled_from([*flags, "frobnicate", "--bogus"]))
    if command not in flags:
        return [command, *draw(st.lists(st.sampled_from(["train", "-x", "--help"]), max_size=2))]
    table = flags[command]
    argv = {"notebooks": ["notebooks", "run"], "bench": ["bench", "scaling"]}.get(command, [command])
    if command == "train":  # a tiny budget first: a valid line trains in a blink; random pieces come after
        argv += ["--task", "copy", "--steps", "1", "--quiet", "--set", "model.d_model=8", "--set",
                 "model.mlp_ratio=1", "--set", "model.mixer_options.n_heads=2", "--set", "train.batch_size=2",
                 "--set", "train.eval_every=1", "--set", 'task.options={"max_len": 4, "n_eval": 4, "long_lengths": []}',
                 "--out", str(next(out_dirs))]
    if command == "compare":  # never a real experiment: a cell that does not exist (System 2 lines aside)
        argv += ["--cells", "nosuchcell", "--quiet"]
    if command == "bench":
        argv += ["--lengths", "x", "--out", str(next(out_dirs))]
    positional = [name for name in table if not name.startswith("-")]
    for name in positional:
        if command in ("report", "notebooks") and not draw(st.booleans()) and command != "notebooks":
            continue
        argv.append(draw(st.sampled_from(table[name])))
    options = [name for name in table if name.startswith("-")]
    for name in draw(st.lists(st.sampled_from(options), max_size=4)):
        argv.append(name)
        if table[name] is not None:
            argv.append(draw(st.sampled_from(table[name])))
    return argv


def test_random_command_lines_exit_0_or_2_and_never_show_a_traceback(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace["root"])  # relative defaults (results/, README.md) land in the sandbox
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(workspace["data"]))
    monkeypatch.delenv("WORKBENCH_DEBUG", raising=False)
    counter = itertools.count()
    out_dirs = (workspace["root"] / "runs" / f"r{i}" for i in counter)
    seen: dict[int, int] = {}

    @settings(max_examples=examples(60), deadline=None, suppress_health_check=FIXTURES)
    @given(command_lines(_flag_values(workspace), out_dirs))
    def check(argv):
        code = main(argv)
        captured = capsys.readouterr()
        seen[code] = seen.get(code, 0) + 1
        text = captured.out + captured.err
        assert "Traceback" not in text, (argv, text[-2000:])
        assert code in (0, 2), (argv, code, captured.err[-2000:])
        if code == 2:
            assert captured.err.strip(), argv

    check()
    print("exit codes seen:", seen)
    assert seen.get(2, 0) > 0


# ----------------------------------------------------------------------------- random config overrides

TASK_BASES = {
    "copy": {"max_len": 4, "n_eval": 8, "long_lengths": []},
    "mqar": {"seq_len": 16, "kv_pairs": 2, "vocab_size": 16, "n_eval": 8, "long_configs": []},
    "majority": {"alphabet": 3, "min_len": 2, "max_len": 5, "n_eval": 8},
    "charlm": {"context": 8, "max_eval_windows": 2},
    "digits": {},
}
INTS = [-1, 0, 1, 2, 3, 4, 8, True, 2.5, "x", None, 99999999999999999999]
FLOATS = [-1.0, 0.0, 0.05, 0.5, 1.0, 2.0, 1e9, math.nan, math.inf, "x", True, None, 3]
BOOLS = [True, False, 0, 1, "yes", None]
TUPLES = [[], [0.5], [0.9, 0.99], [0.5, "a"], [1.5], 0.5, None, [[1]]]


def _pool(default):
    if isinstance(default, bool):
        return BOOLS
    if isinstance(default, int):
        return INTS
    if isinstance(default, float):
        return FLOATS
    if isinstance(default, (tuple, list)):
        return TUPLES
    return INTS + ["text"]


def _override_space() -> dict[str, list]:
    import dataclasses

    space: dict[str, list] = {
        "train.lr": [1e-3, 0.1, 1.0, 0.0, -1.0, math.nan, math.inf, 1e9, "fast", True],
        "train.steps": [1, 2, 0, -1, True, 1.5], "train.batch_size": [1, 2, 3, 0, True, 2.0],
        "train.grad_clip": [0.0, 0.5, math.nan, -1.0], "train.weight_decay": [0.0, 0.1, math.nan, -0.1],
        "train.warmup_steps": [0, 1, -1, True], "train.seed": [0, 7, -1, 2**32, True, "s"],
        "train.target_metric": [None, 0.5, math.nan, "x"], "train.time_budget_s": [None, 60.0, 0, -1, math.inf],
        "train.eval_every": [1, 0, True], "train.checkpoint_every": [1, 0],
        "model.d_model": [8, 12, 16, 2, 3, 0, -4, 2.5, True, "x"], "model.n_layers": [1, 2, 0, True],
        "model.mlp_ratio": [1, 2, 0, -1], "model.short_conv": [0, 1, 4, -1, True],
    }
    for mixer in MIXERS.values():  # every registered mixer's options, peers included
        for field in dataclasses.fields(mixer.Options):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            space.setdefault(f"model.mixer_options.{field.name}", _pool(default))
    space["model.mixer_options.n_units"] = [1, 2, 4, 8, 0, -1, True, 2.5]
    space["model.mixer_options.chunk_size"] = [1, 4, 8, 0, True]
    return space


def _small_base(mixer: str) -> dict:
    """A valid tiny base for every mixer (the options it has of these), so the overrides decide what is refused."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(MIXERS[mixer].Options)}
    return {k: v for k, v in {"n_units": 4, "chunk_size": 4, "n_heads": 2}.items() if k in fields}


def test_random_overrides_train_one_step_or_are_config_errors(workspace, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(workspace["data"]))
    space = _override_space()
    keys = sorted(space)
    outcomes = {"trained": 0, "refused": 0}

    @settings(max_examples=examples(40), deadline=None, suppress_health_check=FIXTURES)
    @given(st.sampled_from(sorted(TASK_BASES)), st.sampled_from(sorted(MIXERS)),
           st.lists(st.sampled_from(keys).flatmap(lambda k: st.tuples(st.just(k), st.sampled_from(space[k]))),
                    max_size=4))
    def check(task, mixer, pairs):
        base = RunConfig.from_dict({
            "task": {"name": task, "options": dict(TASK_BASES[task])},
            "model": {"mixer": mixer, "d_model": 8, "mlp_ratio": 1,
                      "mixer_options": _small_base(mixer)},
            "train": {"steps": 1, "batch_size": 2, "warmup_steps": 0, "eval_every": 1, "checkpoint_every": 1}})
        overrides = [f"{key}={json.dumps(value)}" for key, value in pairs]
        try:
            config = check_config(base.with_overrides(overrides))
        except ConfigError:
            outcomes["refused"] += 1
            return
        # What validated must train: no ConfigError (or any other error) from deeper down.
        _, record = train(config, progress=False, device="cpu")
        outcomes["trained"] += 1
        assert record["steps"] >= 1
        assert record["history"] and all(math.isfinite(h["loss"]) for h in record["history"]), overrides

    check()
    print("outcomes:", outcomes)
    assert outcomes["trained"] and outcomes["refused"], outcomes


# ----------------------------------------------------------------------------- resume at any step


class _Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way may catch it."""


_REFERENCE: dict[str, tuple[dict[str, torch.Tensor], list[float]]] = {}


def _config(mixer: str, checkpoint_every: int) -> RunConfig:
    return RunConfig.from_dict({
        "task": {"name": "mqar", "options": {"seq_len": 16, "kv_pairs": 2, "vocab_size": 16, "n_eval": 8,
                                             "long_configs": []}},
        "model": {"mixer": mixer, "d_model": 8, "mlp_ratio": 1,
                  "mixer_options": {"n_heads": 2} if mixer == "transformer" else {"n_units": 4, "chunk_size": 4}},
        "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "eval_every": 1,
                  "checkpoint_every": checkpoint_every}})


@settings(max_examples=examples(12), deadline=None, suppress_health_check=FIXTURES)
@given(st.sampled_from(["transformer", "inverted"]), st.integers(0, 5), st.integers(1, 6))
def test_resume_at_any_step_equals_an_uninterrupted_run(tmp_path_factory, mixer, kill_at, checkpoint_every):
    if mixer not in _REFERENCE:
        model, record = train(_config(mixer, 6), progress=False, device="cpu")
        _REFERENCE[mixer] = ({k: v.clone() for k, v in model.state_dict().items()},
                             [h["loss"] for h in record["history"]])
    weights, losses = _REFERENCE[mixer]
    config = _config(mixer, checkpoint_every)
    out = tmp_path_factory.mktemp("resume")
    real = train_module.step_generator

    def killed_at(seed, step):
        if step == kill_at:
            raise _Killed
        return real(seed, step)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "step_generator", killed_at)
        with pytest.raises(_Killed):
            train(config, out_dir=out, progress=False, device="cpu")
    resumed, record = train(config, out_dir=out, resume=True, progress=False, device="cpu")
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, weights[name]), (mixer, kill_at, checkpoint_every, name)
    assert [h["loss"] for h in record["history"]] == losses
    assert record["steps"] == 6


def test_pareto_and_ablation_below_the_full_budget_take_v2s_default_rate(tmp_path):
    """Found by the command-line property: below the full budget v2 has no (256, 16) cell and no grid."""
    from workbench.experiments import get_experiment
    from workbench.experiments.runner import chosen_rate

    for name in ("pareto", "ablation"):
        experiment = get_experiment(name, "smoke", tmp_path)
        runs, blocked = experiment.runs(tmp_path, chosen_rate(experiment, tmp_path))
        assert runs and not blocked and {r.lr for r in runs} == {3e-3}
