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
    args = ["compare", "--tasks", "copy,mqar,charlm", "--mixers", "transformer,inverted", "--budget", "smoke",
            "--results", str(results), "--quiet"]
    assert main(args) == 0
    summary = json.loads((results / "compare-smoke.json").read_text())
    cells = {(row["label"], row["mixer"]) for row in summary["rows"]}
    assert cells == {(t, m) for t in ("copy", "mqar-64x4", "charlm") for m in ("transformer", "inverted")}
    assert len(list(results.glob("runs/smoke/*/result.json"))) == 6
    assert "workbench compare" in capsys.readouterr().out
    # Finished runs are skipped: a second call trains nothing and gives the same summary.
    before = {p: p.stat().st_mtime for p in results.glob("runs/smoke/*/result.json")}
    assert main(args) == 0
    assert before == {p: p.stat().st_mtime for p in results.glob("runs/smoke/*/result.json")}


def test_compare_refuses_finished_runs_made_with_another_config(corpus_dir, tmp_path, monkeypatch):
    """A finished run is reused only if its config (defaults included) is what the cell uses now."""
    from workbench.config import ConfigError
    from workbench.mixers.inverted import InvertedOptions

    results = tmp_path / "results"
    args = ["compare", "--tasks", "copy", "--mixers", "inverted", "--budget", "smoke", "--results", str(results), "--quiet"]
    assert main(args) == 0
    (path,) = results.glob("runs/smoke/*/result.json")
    record = json.loads(path.read_text())
    assert record["mixer_options_resolved"]["conv_width"] == InvertedOptions.conv_width
    # A default that changed since the run: the explicit config is the same, the resolved options are not.
    import workbench.train

    resolve = workbench.train.resolved_mixer_options
    monkeypatch.setattr(workbench.train, "resolved_mixer_options", lambda c: {**resolve(c), "conv_width": 9})
    with pytest.raises(ConfigError, match=r"(?s)another config.*mixer_options_resolved.conv_width: 8 -> 9"):
        from workbench.compare import compare

        compare(["copy"], ["inverted"], budget="smoke", results=results, progress=False)
    monkeypatch.undo()
    # An option added after the run is no change while the cell uses its default (which must be the
    # behaviour from before the option existed); a recorded value that differs still is.
    del record["mixer_options_resolved"]["gate_margin"]
    path.write_text(json.dumps(record))
    assert main(args) == 0
    # An option whose default is not the behaviour from before it existed (price_ranked: the runs
    # before it priced every token) is a change, named as such.
    price = record["mixer_options_resolved"].pop("price_ranked")
    path.write_text(json.dumps(record))
    assert main(args) == 2
    record["mixer_options_resolved"]["price_ranked"] = price
    record["mixer_options_resolved"]["conv_width"] = 4
    path.write_text(json.dumps(record))
    assert main(args) == 2
    record["mixer_options_resolved"]["conv_width"] = InvertedOptions.conv_width
    # An explicit setting that changed (here the learning rate the run recorded).
    record["config"]["train"]["lr"] = 0.5
    path.write_text(json.dumps(record))
    assert main(args) == 2
    assert main(args) == 2 and path.read_text() == json.dumps(record)  # nothing was overwritten


def test_compare_processes_share_a_results_directory(corpus_dir, tmp_path, capsys):
    """A run another process holds is skipped, not trained twice; a dead holder's lock blocks nothing."""
    from workbench.compare import claim_run, protocol, run_dir

    results = tmp_path / "results"
    args = ["compare", "--tasks", "copy", "--mixers", "inverted", "--budget", "smoke", "--results", str(results)]
    out = run_dir(results, "smoke", protocol("copy", "smoke")[0], "inverted", 0)
    with claim_run(out) as holder:  # this process plays the other compare process
        assert holder is None
        assert main([*args, "--quiet"]) == 0
        assert "being trained by another process (pid" in capsys.readouterr().out
        assert not (out / "result.json").exists()
    # The holder went away (as a killed process would: its lock file stays, the OS lock does not).
    assert (out / "running.lock").exists()
    assert main([*args, "--quiet"]) == 0
    assert (out / "result.json").is_file() and not (out / "running.lock").exists()
    with claim_run(out) as holder:
        assert holder is None  # a finished run is free to lock; compare skips it as done anyway


def test_compare_accepts_ablation_variants(corpus_dir, tmp_path):
    results = tmp_path / "results"
    assert main(["compare", "--tasks", "copy", "--mixers", "inverted:refractory=false:n_units=16", "--budget", "smoke",
                 "--results", str(results), "--quiet"]) == 0
    (row,) = json.loads((results / "compare-smoke.json").read_text())["rows"]
    assert row["mixer"] == "inverted:refractory=false:n_units=16"
    run = json.loads(next(results.glob("runs/smoke/*/result.json")).read_text())
    assert run["config"]["model"]["mixer_options"] == {"refractory": False, "n_units": 16}


def test_compare_ablation_set_runs_every_variant_and_says_what_is_left(corpus_dir, tmp_path, capsys):
    from workbench.compare import ABLATIONS

    results = tmp_path / "results"
    args = ["compare", "--tasks", "copy", "--mixers", "ablation", "--budget", "smoke", "--results", str(results)]
    assert main([*args, "--quiet"]) == 0
    rows = json.loads((results / "compare-smoke.json").read_text())["rows"]
    assert {row["mixer"] for row in rows} == set(ABLATIONS.values())
    capsys.readouterr()
    assert main(args) == 0  # everything done: nothing runs, and it says so
    assert f"{len(ABLATIONS)} of {len(ABLATIONS)} runs already done, 0 to run" in capsys.readouterr().out


def test_compare_runs_system2_tasks_as_one_command(tmp_path, capsys):
    """System 2 task names go to run_system2: its table, its JSON, no protocol runs."""
    results = tmp_path / "results"
    assert main(["compare", "--tasks", "hops", "--budget", "smoke", "--results", str(results), "--quiet"]) == 0
    summary = json.loads((results / "system2-smoke.json").read_text())
    assert list(summary["tasks"]) == ["hops"] and summary["budget"] == "smoke"
    hops = summary["tasks"]["hops"]
    systems = {row["system"] for row in hops["rows"]}
    assert {"inverted", "transformer-1L", "transformer-2L", "system2", "inverted+system2"} <= systems
    assert set(hops["rows"][0]["accuracy"]) == {f"hops{h}" for h in range(1, 7)}
    assert hops["system2_reward"]["curves"][0]["reward"]  # the REINFORCE reward curve is recorded
    assert not (results / "compare-smoke.json").exists() and not (results / "runs").exists()
    out = capsys.readouterr().out
    assert "System 1 vs System 1 + System 2 - hops" in out and "system2-smoke.json" in out


def test_compare_mixed_task_list_runs_both_parts(tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["compare", "--tasks", "copy,temporal", "--mixers", "inverted", "--budget", "smoke",
                 "--results", str(results), "--quiet"]) == 0
    (row,) = json.loads((results / "compare-smoke.json").read_text())["rows"]
    assert (row["label"], row["mixer"]) == ("copy", "inverted")
    assert list(json.loads((results / "system2-smoke.json").read_text())["tasks"]) == ["temporal"]
    out = capsys.readouterr().out
    assert "workbench compare - budget smoke" in out and "System 1 + System 2 - temporal" in out


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
        (["compare", "--budget", "smoke", "--tasks", "nosuchtask"], "unknown compare task"),
        (["compare", "--budget", "smoke", "--tasks", "copy,hops,nosuchtask"], "unknown compare task"),
        (["compare", "--budget", "smoke", "--tasks", "hops", "--mixers", "inverted"], "--mixers applies to protocol"),
        (["compare", "--budget", "smoke", "--tasks", "kinship", "--labels", "len2"], "--labels applies to protocol"),
        (["compare", "--budget", "smoke", "--tasks", "hops", "--seeds", "0"], "seeds must be >= 1"),
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
