"""The command line end to end: compare at the smoke budget, train/eval/generate, clear errors."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main


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
    # --aggregate-only trains nothing and tables what finished: one run gone leaves its row out, listed.
    next(results.glob("v2/smoke/copy--inverted*/result.json")).unlink()
    assert main([*args, "--aggregate-only"]) == 0
    summary = json.loads((results / "compare-v2-smoke.json").read_text())
    assert len(summary["rows"]) == 5 and not list(results.glob("v2/smoke/copy--inverted*/result.json"))


def test_compare_accepts_variants_with_options_and_model_fields(corpus_dir, tmp_path):
    results = tmp_path / "results"
    assert main(["compare", "--cells", "copy", "--mixers", "inverted:refractory=false:n_units=16@short_conv=0",
                 "--budget", "smoke", "--results", str(results), "--quiet"]) == 0
    (row,) = json.loads((results / "compare-v2-smoke.json").read_text())["rows"]
    assert row["variant"] == "inverted:refractory=false:n_units=16@short_conv=0"
    run = json.loads(next(results.glob("v2/smoke/*/result.json")).read_text())
    assert run["config"]["model"]["mixer_options"] == {"refractory": False, "n_units": 16}
    assert run["config"]["model"]["short_conv"] == 0


def test_a_narrowed_compare_keeps_the_rows_of_earlier_runs_in_the_table(corpus_dir, tmp_path, capsys):
    """One mixer, then another (an experiment variant, then a spec of one's own): the table has both."""
    results = tmp_path / "results"
    for mixer in ("transformer", "inverted:n_units=16"):
        assert main(["compare", "--cells", "copy", "--mixers", mixer, "--budget", "smoke", "--seeds", "1",
                     "--results", str(results), "--quiet"]) == 0
    rows = json.loads((results / "compare-v2-smoke.json").read_text())["rows"]
    assert {row["variant"] for row in rows} == {"transformer", "inverted:n_units=16"}
    assert "merged into the table's 2" in capsys.readouterr().out
    # The whole experiment tabled again (--aggregate-only) keeps the candidate's row beside its own.
    assert main(["compare", "--budget", "smoke", "--results", str(results), "--aggregate-only", "--quiet"]) == 0
    rows = json.loads((results / "compare-v2-smoke.json").read_text())["rows"]
    assert {row["variant"] for row in rows} == {"transformer", "inverted:n_units=16"}


def test_rates_run_one_at_a_time_join_in_one_row_with_the_better_rate(corpus_dir, tmp_path, monkeypatch):
    import dataclasses

    import workbench.experiments as experiments

    plain = experiments.get_experiment
    monkeypatch.setattr(experiments, "get_experiment",
                        lambda *a, **k: dataclasses.replace(plain(*a, **k), lr_grid=(0.01, 0.003)))
    results = tmp_path / "results"
    for rate in ("0.01", "0.003"):
        assert main(["compare", "--cells", "copy", "--mixers", "transformer", "--lrs", rate, "--budget", "smoke",
                     "--results", str(results), "--quiet"]) == 0
    (row,) = json.loads((results / "compare-v2-smoke.json").read_text())["rows"]
    assert set(row["lr_grid"]) == {"0.01", "0.003"} and None not in row["lr_grid"].values()
    assert row["lr_grid"][f"{row['lr']:g}"] == max(row["lr_grid"].values()) and not row["lr_provisional"]


def test_a_merged_row_is_complete_only_by_the_whole_experiments_seeds_and_grid():
    from types import SimpleNamespace

    from workbench.experiments.aggregate import merge_tables

    whole = SimpleNamespace(cells=[SimpleNamespace(label="a")], variants=[SimpleNamespace(label=m) for m in "xy"],
                            seeds=3, lr_grid=(0.001, 0.003))
    row = {"label": "a", "variant": "y", "seeds": 1, "seeds_expected": 1, "complete": True, "lr_grid": {"0.003": 0.9}}
    earlier = {"rows": [{"label": "a", "variant": "x", "complete": True}], "incomplete": [], "seeds": 3}
    merged = merge_tables(earlier, {"rows": [row], "incomplete": [], "seeds": 1}, {("a", "y")}, whole)
    assert [r["variant"] for r in merged["rows"]] == ["x", "y"] and merged["seeds"] == 3
    assert merged["rows"][1]["complete"] is False and merged["rows"][1]["lr_provisional"] is True
    assert merged["incomplete"] == [{"label": "a", "variant": "y", "seeds": 1, "grid_done": 1, "grid": 2}]
    # A design candidate with no run at all (its runs relabelled to a variant) is not listed as missing;
    # one of the experiment's own variants with none is.
    none = [{"label": "a", "variant": v, "seeds": 0, "grid_done": 0, "grid": 2} for v in ("x", "x:hold=1")]
    merged = merge_tables(earlier, {"rows": [], "incomplete": none, "seeds": 1}, {("a", "x"), ("a", "x:hold=1")}, whole)
    assert [i["variant"] for i in merged["incomplete"]] == ["x"]


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


# ----------------------------------------------------------------------------- issue 22: one error boundary

TINY = ["--task", "copy", "--quiet", "--set", "model.d_model=16", "--set", "train.batch_size=2",
        "--set", 'task.options={"max_len": 4, "n_eval": 4, "long_lengths": []}', "--set", "train.warmup_steps=0"]


@pytest.mark.parametrize("override", [
    "train.lr=Infinity", "train.lr=1e9", "train.grad_clip=NaN", "train.weight_decay=NaN", "train.steps=true",
    "model.mixer_options.write_price=NaN", 'model.mixer_options.write_bias="abc"',
])
def test_the_issues_bad_values_are_one_line_not_a_traceback(override, tmp_path, capsys):
    """Before: FloatingPointError / TypeError tracebacks, or a run of one step (steps=true)."""
    argv = ["train", *TINY, "--mixer", "inverted", "--set", "model.mixer_options.n_units=8", "--set", override,
            "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("workbench: error: ")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("options, message", [
    ('task.options={"kv_pairs": 0}', "kv_pairs must be a positive integer"),
    ('task.options={"max_eval_windows": -1}', "max_eval_windows must be a positive integer"),
])
def test_bad_task_options_are_one_line(options, message, tmp_path, capsys):
    task = "mqar" if "kv_pairs" in options else "charlm"
    assert main(["train", "--task", task, "--steps", "1", "--set", options, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_empty_config_file_is_refused(tmp_path, capsys):
    """Before: an empty YAML (or {}) trained the defaults."""
    for text in ("", "{}\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
        assert "is empty" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_directory_that_holds_a_run(tmp_path, capsys):
    """Before: a second `train` into the directory overwrote the checkpoint without a word."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "2", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", *TINY, "--steps", "2", "--set", "train.seed=1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a checkpoint" in err and "--resume" in err and "--overwrite" in err
    assert (out / "checkpoint.pt").read_bytes() == before
    assert main(["train", *TINY, "--steps", "2", "--out", str(out), "--resume", "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["train", *TINY, "--steps", "2", "--set", "train.seed=1", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "result.json").read_text())["seed"] == 1
    # A finished run without its checkpoint (compare deletes them): nothing to resume, said so.
    (out / "checkpoint.pt").unlink()
    assert main(["train", *TINY, "--steps", "2", "--set", "train.seed=1", "--out", str(out), "--resume"]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    assert main(["train", *TINY, "--steps", "2", "--out", str(out)]) == 2
    assert "finished run" in capsys.readouterr().err


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    """Before: --resume with no checkpoint started from scratch silently."""
    out = tmp_path / "new"
    assert main(["train", *TINY, "--steps", "2", "--out", str(out), "--resume"]) == 0
    assert f"no checkpoint in {out} to resume; starting from step 0" in capsys.readouterr().err


def test_a_run_directory_in_use_by_another_process_is_refused(tmp_path, capsys):
    from workbench.experiments.runner import claim_run

    out = tmp_path / "run"
    with claim_run(out) as holder:  # this test plays the other process
        assert holder is None
        assert main(["train", *TINY, "--steps", "2", "--out", str(out)]) == 2
        assert "is being trained by another process" in capsys.readouterr().err


def test_stale_temp_files_are_cleaned_and_records_written_atomically(tmp_path, monkeypatch, capsys):
    """A writer killed mid-write leaves a .tmp: the next run in the directory removes it. result.json
    and the checkpoint are fsynced (file and directory) before and after the rename."""
    import os

    out = tmp_path / "run"
    out.mkdir()
    for name in ("checkpoint.pt.tmp", "checkpoint.pt.abc123.tmp", "result.json.tmp", "notes.tmp"):
        (out / name).write_bytes(b"half a file")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["train", *TINY, "--steps", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "notes.tmp", "result.json"]  # not ours: kept
    assert any(p.endswith(".tmp") and "result.json." in p for p in synced)  # the file, before its rename
    assert str(out) in synced  # the directory, after it


def test_an_internal_error_is_one_line_with_exit_1_and_debug_shows_the_traceback(monkeypatch, capsys):
    import workbench.cli as cli

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "cmd_eval", broken)
    assert main(["eval", "x.pt"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "--debug" in err
    for argv in (["--debug", "eval", "x.pt"], ["eval", "x.pt", "--debug"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "internal error: KeyError" in err
    monkeypatch.setenv("WORKBENCH_DEBUG", "1")
    assert main(["eval", "x.pt"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("error, code, message", [
    (MemoryError(), 2, "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), 2,
     "out of memory"),
    (PermissionError(13, "Permission denied", "/root/x"), 2, "cannot access /root/x: Permission denied"),
    (OSError(28, "No space left on device"), 2, "No space left on device"),
    (FloatingPointError("the loss became nan at step 3 (training diverged); try a lower train.lr"), 2,
     "lower train.lr"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (ZeroDivisionError("division by zero"), 1, "internal error"),
])
def test_errors_are_classified(monkeypatch, capsys, error, code, message):
    import workbench.cli as cli

    def failing(args):
        raise error

    monkeypatch.setattr(cli, "cmd_eval", failing)
    assert main(["eval", "x.pt"]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_are_one_line_and_help_is_exit_0(capsys):
    assert main(["train", "--steps", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid int value" in err and "--help" in err
    assert main(["frobnicate"]) == 2
    assert main([]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_the_installed_entry_point_prints_no_traceback(tmp_path):
    """The real process: `python -m workbench.cli` with a bad value, end to end."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "workbench.cli", "generate", str(tmp_path / "x.pt"), "--top-k", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_bench_arguments_are_checked_before_anything_runs(tmp_path, capsys):
    for flags, message in [(["--repeats", "0"], "--repeats"), (["--time-limit", "nan"], "--time-limit"),
                           (["--lengths", "1,x"], "--lengths"), (["--mixers", "nope"], "unknown mixer"),
                           (["--long", "10", "--long-dtypes", "float8"], "--long-dtypes"),
                           (["--memory-limit-gb", "-1"], "--memory-limit-gb")]:
        assert main(["bench", "scaling", "--out", str(tmp_path), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_report_and_notebooks_user_errors_are_one_line(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "compare-v2-demo.json").write_text("{truncated")
    (tmp_path / "README.md").write_text("# x\n")
    assert main(["report", "--results", str(tmp_path), str(tmp_path / "README.md")]) == 2
    assert "cannot render the results" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path), str(tmp_path / "missing.md")]) == 2
    assert "no such markdown file" in capsys.readouterr().err
    assert main(["notebooks", "run", "no_such_notebook"]) == 2
    assert "matches no notebook" in capsys.readouterr().err


def test_compare_lrs_replaces_the_grid_and_seeds_train_at_the_chosen_rate(corpus_dir, tmp_path):
    results = tmp_path / "results"
    assert main(["compare", "--cells", "copy", "--mixers", "transformer", "--lrs", "0.01,0.003", "--seeds", "2",
                 "--budget", "smoke", "--results", str(results), "--quiet"]) == 0
    runs = sorted(p.parent.name for p in results.glob("v2/smoke/*/result.json"))
    assert [r.split("--")[2:] for r in runs if r.endswith("s0")] == [["lr0.003", "s0"], ["lr0.01", "s0"]]
    (seeded,) = [r for r in runs if r.endswith("s1")]
    summary = json.loads((results / "compare-v2-smoke.json").read_text())
    assert summary["lr_grid"] == [0.01, 0.003] and f"lr{summary['rows'][0]['lr']:g}" in seeded


@pytest.mark.parametrize("lrs", ["abc", "0", "-1e-3", ",", "nan"])
def test_compare_rejects_bad_learning_rates(tmp_path, capsys, lrs):
    assert main(["compare", "--lrs", lrs, "--budget", "smoke", "--results", str(tmp_path), "--quiet"]) == 2
    assert "--lrs" in capsys.readouterr().err


def test_a_one_rate_grid_lists_every_seed_at_once(tmp_path):
    from workbench.experiments import get_experiment
    from workbench.experiments.runner import chosen_rate

    experiment = get_experiment("multistream", "full").filtered(lr_grid=(0.003,))
    runs, blocked = experiment.runs(tmp_path, chosen_rate(experiment, tmp_path))
    assert not blocked and {r.seed for r in runs} == {0, 1, 2} and {r.lr for r in runs} == {0.003}
