"""The command line end to end: compare at the smoke budget, train/eval/generate, clear errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from workbench.cli import main


@pytest.fixture()
def corpus_dir(tmp_path, monkeypatch) -> Path:
    """A small generated text corpus standing in for tiny-shakespeare (no shared path needed)."""
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(1500)]
    data = tmp_path / "data"
    data.mkdir()
    (data / "tinyshakespeare.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(data))
    return data


def test_compare_smoke_writes_runs_and_summary(corpus_dir, tmp_path, capsys):
    results = tmp_path / "results"
    args = ["compare", "--cells", "copy,mqar-64x4,charlm", "--mixers", "transformer,inverted", "--budget", "smoke",
            "--results", str(results), "--quiet"]
    assert main(args) == 0
    summary = json.loads((results / "compare-v2-smoke.json").read_text())
    cells = {(row["label"], row["variant"]) for row in summary["rows"]}
    assert cells == {(t, m) for t in ("copy", "mqar-64x4", "charlm") for m in ("transformer", "inverted")}
    assert all(row["state_floats"]["floats"] > 0 and row["complete"] for row in summary["rows"])
    assert len(list(results.glob("v2/smoke/*/result.json"))) == 6
    assert "workbench compare" in capsys.readouterr().out
    # Finished runs are skipped: a second call trains nothing and gives the same summary.
    before = {p: p.stat().st_mtime for p in results.glob("v2/smoke/*/result.json")}
    assert main(args) == 0
    assert before == {p: p.stat().st_mtime for p in results.glob("v2/smoke/*/result.json")}


def test_compare_accepts_variants_with_options_and_model_fields(corpus_dir, tmp_path):
    results = tmp_path / "results"
    assert main(["compare", "--cells", "copy", "--mixers", "inverted:refractory=false:n_units=16@short_conv=0",
                 "--budget", "smoke", "--results", str(results), "--quiet"]) == 0
    (row,) = json.loads((results / "compare-v2-smoke.json").read_text())["rows"]
    assert row["variant"] == "inverted:refractory=false:n_units=16@short_conv=0"
    run = json.loads(next(results.glob("v2/smoke/*/result.json")).read_text())
    assert run["config"]["model"]["mixer_options"] == {"refractory": False, "n_units": 16}
    assert run["config"]["model"]["short_conv"] == 0


def test_compare_runs_system2_tasks_as_one_command(tmp_path, capsys):
    """System 2 task names go to run_system2: its table, its JSON, no protocol runs."""
    results = tmp_path / "results"
    assert main(["compare", "--tasks", "hops", "--budget", "smoke", "--results", str(results), "--quiet"]) == 0
    summary = json.loads((results / "system2-smoke.json").read_text())
    assert list(summary["tasks"]) == ["hops"] and summary["budget"] == "smoke"
    assert not list(results.glob("compare-*.json"))
    assert "system2-smoke.json" in capsys.readouterr().out


def test_train_eval_generate_roundtrip(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "charlm", "--mixer", "inverted", "--steps", "6", "--out", str(out), "--quiet",
                 "--set", "model.d_model=32", "--set", "train.batch_size=4", "--set", "task.options.max_eval_windows=2",
                 "--set", "model.mixer_options.n_units=8"]) == 0
    assert (out / "checkpoint.pt").is_file() and (out / "result.json").is_file()
    assert main(["eval", str(out / "checkpoint.pt")]) == 0
    assert "bpc" in capsys.readouterr().out
    assert main(["generate", str(out / "checkpoint.pt"), "--prompt", "the cat", "--n", "20"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("the cat") and len(text.rstrip("\n")) >= len("the cat") + 20 - 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--mixer", "nope"], "unknown mixer"),
        (["train", "--config", "/no/such/config.yaml"], "does not exist"),
        (["train", "--set", "model.d_model=-3"], "positive integer"),
        (["train", "--set", "model.mixer_options.read_topk=999", "--mixer", "inverted"], "cannot exceed"),
        (["eval", "/no/such/checkpoint.pt"], "does not exist"),
        (["compare", "--budget", "smoke", "--tasks", "nosuchtask"], "has no task ['nosuchtask']"),
        (["compare", "--budget", "smoke", "--cells", "mqar-9x9"], "has no cell ['mqar-9x9']"),
        (["compare", "--budget", "smoke", "--experiment", "v9"], "unknown experiment 'v9'"),
        (["compare", "--budget", "smoke", "--tasks", "copy,hops"], "System 2 tasks"),
        (["compare", "--budget", "smoke", "--cells", "copy", "--mixers", "nosuchmixer"], "unknown mixer"),
        (["compare", "--budget", "smoke", "--cells", "copy", "--mixers", "inverted:n_units"], "key=value"),
        (["compare", "--budget", "smoke", "--cells", "copy", "--mixers", "inverted@width=3"], "unknown model fields"),
    ],
)
def test_user_errors_are_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_corrupt_checkpoint_and_bad_prompt(corpus_dir, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["eval", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err
    out = tmp_path / "run"
    main(["train", "--task", "charlm", "--steps", "2", "--out", str(out), "--quiet", "--set", "model.d_model=16",
          "--set", "train.batch_size=2", "--set", "task.options.max_eval_windows=1"])
    assert main(["generate", str(out / "checkpoint.pt"), "--prompt", "zebra \u00e9"]) == 2
    assert "outside the model's vocabulary" in capsys.readouterr().err
    assert main(["generate", str(out / "checkpoint.pt"), "--prompt", ""]) == 2
    assert "empty" in capsys.readouterr().err
