"""Experiments as data: runs listed from cells x variants x seeds, the learning-rate grid, the runner
(resumable, shared between processes, honest about divergence and what is missing) and the summary."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from workbench.config import ConfigError
from workbench.experiments import get_experiment, parse_variant
from workbench.experiments.aggregate import aggregate
from workbench.experiments.protocol_v2 import MIXERS, protocol_v2
from workbench.experiments.runner import chosen_rate, claim_run, finished, run_experiment
from workbench.experiments.spec import Experiment, Variant


def small(experiment: Experiment, cells: list[str], mixers: list[str], **changes) -> Experiment:
    """The experiment on a few cells and tiny models (d_model 32), so a test trains in seconds."""
    variants = [Variant(m, m, {"n_units": 8, "chunk_size": 8} if m == "inverted" else {}) for m in mixers]
    out = experiment.filtered(cells=cells, variants=variants)
    out.model = {**out.model, "d_model": 32}
    for key, value in changes.items():
        setattr(out, key, value)
    return out


def test_protocol_v2_lists_every_mixer_cell_and_the_grid_then_seeds():
    full = protocol_v2("full")
    assert [v.label for v in full.variants] == MIXERS and full.seeds == 3 and full.lr_grid == (1e-3, 3e-3, 1e-2)
    labels = [c.label for c in full.cells]
    assert {"mqar-64x4", "mqar-128x8", "mqar-256x16", "mqar-512x64", "copy", "charlm", "charlm-600s"} == set(labels)
    mqar = next(c for c in full.cells if c.label == "mqar-256x16")
    assert mqar.task_options["vocab_size"] == 512
    assert mqar.task_options["long_configs"] == [[512, 32], [1024, 64], [2048, 128], [4096, 64], [16384, 64]]
    runs, blocked = full.runs(Path("/nonexistent"), lambda cell, variant: None)
    # Before any grid run has finished, only the grid runs are listed: 3 rates x seed 0 per pair,
    # none for the 600 s cell (it takes the rate char-LM chose).
    assert len(runs) == 3 * len(MIXERS) * (len(labels) - 1) and all(r.stage == "grid" and r.seed == 0 for r in runs)
    assert len(blocked) == len(MIXERS) * len(labels)
    every = {r.config.model.short_conv for r in runs} | {r.config.model.d_model for r in runs}
    assert every == {8, 128}  # one front end and one width for every mixer


def test_parse_variant_splits_mixer_options_from_model_fields():
    variant = parse_variant("inverted:n_pools=4:timescales=[]@n_layers=2:short_conv=0")
    assert (variant.mixer, variant.options, variant.model) == ("inverted", {"n_pools": 4, "timescales": []},
                                                              {"n_layers": 2, "short_conv": 0})
    assert "@" not in variant.safe and ":" not in variant.safe
    with pytest.raises(ConfigError, match="key=value"):
        parse_variant("inverted:n_pools")
    with pytest.raises(ConfigError, match="unknown model fields"):
        parse_variant("transformer@depth=2")


def test_grid_picks_the_best_rate_on_seed_0_then_trains_the_other_seeds_there(corpus_dir, tmp_path, monkeypatch):
    experiment = small(protocol_v2("smoke"), ["copy"], ["transformer"], lr_grid=(1e-3, 3e-2), seeds=2)
    results = tmp_path / "results"
    summary, missing = run_experiment(experiment, results, progress=False)
    assert missing == []
    (row,) = summary["rows"]
    grid = row["lr_grid"]
    assert set(grid) == {"0.001", "0.03"} and all(v is not None for v in grid.values())
    best = max(grid, key=lambda k: (grid[k], -float(k)))
    chosen = chosen_rate(experiment, results)(experiment.cells[0], experiment.variants[0])
    assert row["lr"] == chosen
    assert float(best) == chosen or grid[best] == grid[f"{chosen:g}"]  # a tie is broken by steps, then the rate
    seeds = sorted(p.name for p in (results / "v2" / "smoke").iterdir())
    assert len(seeds) == 3 and sum(f"lr{chosen:g}--s1" in name for name in seeds) == 1
    assert row["seeds"] == 2 and row["complete"]


def test_a_diverging_run_is_recorded_and_never_chosen(corpus_dir, tmp_path, monkeypatch):
    import workbench.train

    original = workbench.train.train

    def fake(config, **kwargs):
        if config.train.lr > 0.01:
            raise FloatingPointError("loss became nan at step 3; try a lower train.lr")
        return original(config, **kwargs)

    monkeypatch.setattr(workbench.train, "train", fake)
    experiment = small(protocol_v2("smoke"), ["copy"], ["transformer"], lr_grid=(1e-3, 1.0), seeds=1)
    summary, missing = run_experiment(experiment, tmp_path / "r", progress=False)
    (row,) = summary["rows"]
    assert row["lr"] == 1e-3 and row["lr_grid"]["1"] is None and missing == []
    diverged = finished(experiment.run(experiment.cells[0], experiment.variants[0], 0, 1.0, "grid", tmp_path / "r"))
    assert diverged["status"] == "diverged" and "nan" in diverged["error"]


def test_runs_held_by_another_process_are_waited_for_or_reported_missing(corpus_dir, tmp_path):
    experiment = small(protocol_v2("smoke"), ["copy"], ["transformer", "inverted"])
    results = tmp_path / "results"
    runs, _ = experiment.runs(results, chosen_rate(experiment, results))
    held = runs[0]
    with claim_run(held.directory) as holder:  # this test plays the other process
        assert holder is None
        summary, missing = run_experiment(experiment, results, progress=False, wait=False)
        assert len(missing) == 1 and held.variant.label in missing[0]
        assert [r["variant"] for r in summary["rows"]] == [runs[1].variant.label]  # incomplete left out...
        assert summary["incomplete"][0]["variant"] == held.variant.label  # ...and listed
    # The holder died (its lock file stays, the OS lock does not): the next pass takes the run over.
    summary, missing = run_experiment(experiment, results, progress=False, wait=False)
    assert missing == [] and len(summary["rows"]) == 2 and not (held.directory / "running.lock").exists()


def test_a_waiting_process_picks_up_a_run_whose_holder_finishes(corpus_dir, tmp_path, monkeypatch):
    import workbench.experiments.runner as runner

    experiment = small(protocol_v2("smoke"), ["copy"], ["transformer"])
    results = tmp_path / "results"
    (run,) = experiment.runs(results, chosen_rate(experiment, results))[0]
    state = {"sleeps": 0}
    lock = claim_run(run.directory)
    lock.__enter__()

    def sleep(_seconds):  # the other process finishes while we wait
        state["sleeps"] += 1
        lock.__exit__(None, None, None)

    monkeypatch.setattr(runner.time, "sleep", sleep)
    summary, missing = run_experiment(experiment, results, progress=False, wait=True, poll_s=0)
    assert state["sleeps"] == 1 and missing == [] and summary["rows"][0]["complete"]


def test_finished_runs_made_with_another_config_are_refused(corpus_dir, tmp_path):
    experiment = small(protocol_v2("smoke"), ["copy"], ["inverted"])
    results = tmp_path / "results"
    run_experiment(experiment, results, progress=False)
    (path,) = (results / "v2" / "smoke").glob("*/result.json")
    record = json.loads(path.read_text())
    record["config"]["train"]["lr"] = 0.5
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"(?s)another config.*train.lr: 0.5 -> 0.003"):
        run_experiment(experiment, results, progress=False)
    record["config"]["train"]["lr"] = 0.003
    record["mixer_options_resolved"]["read_topk"] = 99  # a default that moved since the run
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"mixer_options_resolved.read_topk: 99 -> 4"):
        run_experiment(experiment, results, progress=False)


def test_kept_models_load_and_score_what_their_run_recorded(corpus_dir, tmp_path):
    from workbench.checkpoint import model_from_checkpoint

    experiment = small(protocol_v2("smoke"), ["copy"], ["inverted", "transformer"])
    results = tmp_path / "results"
    run_experiment(experiment, results, progress=False, keep_models=True)
    directories = sorted(p.parent for p in (results / "v2" / "smoke").glob("*/result.json"))
    assert len(directories) == 2
    for directory in directories:
        assert not (directory / "checkpoint.pt").exists()
        model, config, task, payload = model_from_checkpoint(directory / "model.pt")
        assert "optimizer" not in payload
        record = json.loads((directory / "result.json").read_text())
        assert config.model.mixer == record["mixer"] and payload["step"] == record["steps"]
        assert task.evaluate(model, final=True) == pytest.approx(record["metrics"])
    other = tmp_path / "other"
    run_experiment(experiment, other, progress=False)  # by default nothing but result.json stays
    assert not list(other.rglob("model.pt")) and not list(other.rglob("checkpoint.pt"))


def test_aggregate_refuses_partial_rows_unless_told(corpus_dir, tmp_path):
    experiment = small(protocol_v2("smoke"), ["copy"], ["transformer"], seeds=2)
    results = tmp_path / "results"
    only_seed_0 = replace(experiment, seeds=1)
    run_experiment(only_seed_0, results, progress=False)
    strict = aggregate(experiment, results)
    assert strict["rows"] == [] and strict["incomplete"][0]["seeds"] == 1
    loose = aggregate(experiment, results, allow_incomplete=True)
    assert loose["rows"][0]["complete"] is False and loose["rows"][0]["seeds"] == 1
    written = json.loads(experiment.summary_path(results).read_text())
    assert written == json.loads(json.dumps(loose))


def test_companion_experiments_build_and_take_their_rates_from_v2(tmp_path):
    for name in ("v2-2layer", "v2-noconv", "pareto", "ablation"):
        experiment = get_experiment(name, "full", tmp_path)
        runs, blocked = experiment.runs(tmp_path, chosen_rate(experiment, tmp_path))
        assert runs or blocked
        if name in ("pareto", "ablation"):  # no v2 results yet: every run waits for v2's rate
            assert not runs and blocked
    pareto = get_experiment("pareto", "full", tmp_path)
    widths = {v.model.get("d_model") for v in pareto.variants}
    assert {64, 128, 256} <= widths and pareto.seeds == 1
    assert get_experiment("v2-2layer", "full", tmp_path).model["n_layers"] == 2


def test_demo_prints_fresh_numbers_beside_the_committed_reference(tmp_path):
    from workbench.experiments.demo import CELLS, demo_experiment, side_by_side

    experiment = demo_experiment(["transformer", "inverted"])
    assert {c.label for c in experiment.cells} == set(CELLS) == {"mqar-64x4", "copy", "charlm"}
    assert experiment.budget == "demo" and experiment.seeds == 1

    def row(variant, value):
        return {"label": "copy", "variant": variant, "metrics": {"exact_match": {"mean": value, "std": 0.0, "n": 1}}}

    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"rows": [row("transformer", 0.25)]}))
    table = side_by_side({"rows": [row("transformer", 0.5), row("inverted", 0.75)]}, reference)
    assert "| copy | exact_match | 0.500 / 0.250 | 0.750 / - |" in table
    assert "no reference" in side_by_side({"rows": [row("inverted", 0.75)]}, tmp_path / "absent.json")


def test_a_partial_grid_gives_a_provisional_row_only_when_asked_and_runs_the_middle_rate_first(corpus_dir, tmp_path):
    from workbench.experiments.runner import _priority

    experiment = small(protocol_v2("smoke"), ["copy"], ["transformer"], lr_grid=(1e-3, 3e-3, 1e-2), seeds=2)
    results = tmp_path / "results"
    runs, _ = experiment.runs(results, chosen_rate(experiment, results))
    assert min(runs, key=lambda r: _priority(experiment, r)).lr == 3e-3
    middle = replace(experiment, lr_grid=(3e-3,), seeds=1)  # trains exactly the middle grid run
    run_experiment(middle, results, progress=False)
    assert aggregate(experiment, results)["rows"] == []
    (row,) = aggregate(experiment, results, allow_incomplete=True)["rows"]
    assert row["lr"] == 3e-3 and row["lr_provisional"] and not row["complete"] and row["seeds"] == 1


def test_a_run_whose_holder_dies_during_the_pass_is_taken_over_at_once(corpus_dir, tmp_path, monkeypatch):
    """After a pass that found its only run held, a process retries at once when the holder died
    meanwhile (before: it slept a poll interval first, 30 s by default)."""
    from contextlib import contextmanager

    import workbench.experiments.runner as runner

    experiment = small(protocol_v2("smoke"), ["copy"], ["transformer"])
    results = tmp_path / "results"
    (run,), _ = experiment.runs(results, chosen_rate(experiment, results))
    other = claim_run(run.directory)  # the other process, which dies just after we found its run held
    assert other.__enter__() is None
    real_claim = runner.claim_run

    @contextmanager
    def claim_then_the_holder_dies(directory):
        with real_claim(directory) as holder:
            yield holder
        if holder is not None:
            other.__exit__(None, None, None)

    real_sleep = runner.time.sleep

    def sleep(seconds):
        if seconds == 12345:  # the poll wait (other sleeps: subprocess internals)
            pytest.fail("waited although nothing was held any more")
        real_sleep(seconds)

    monkeypatch.setattr(runner, "claim_run", claim_then_the_holder_dies)
    monkeypatch.setattr(runner.time, "sleep", sleep)
    summary, missing = run_experiment(experiment, results, progress=False, wait=True, poll_s=12345)
    assert missing == [] and summary["rows"][0]["complete"]


@pytest.mark.slow
def test_two_compare_processes_with_one_killed_leave_every_cell_complete(corpus_dir, tmp_path):
    """Issue 22: a run held by a process that is killed is taken over by the survivor, which exits 0
    only once every cell has all its seeds (before: skipped, and 5 seeds of 6 averaged silently)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    results = tmp_path / "results"
    argv = [sys.executable, "-m", "workbench.cli", "compare", "--budget", "smoke", "--cells", "copy", "--mixers",
            "transformer@d_model=16,inverted:n_units=8:chunk_size=8@d_model=16", "--seeds", "2",
            "--results", str(results), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    survivor = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    held = None
    while held is None and time.time() < deadline and victim.poll() is None:
        for lock in results.glob("v2/smoke/*/running.lock"):
            try:
                if lock.read_text().startswith(f"pid {victim.pid} "):
                    held = lock.parent
            except OSError:
                continue
        time.sleep(0.02)
    assert held is not None, "the victim never claimed a run"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    assert (held / "result.json").is_file()  # the killed process's run was finished by the survivor
    summary = json.loads((results / "compare-v2-smoke.json").read_text())
    assert len(summary["rows"]) == 2 and summary["incomplete"] == []
    assert all(row["complete"] and row["seeds"] == 2 for row in summary["rows"])
    assert len(list(results.glob("v2/smoke/*/result.json"))) == 4


def test_the_summary_is_written_atomically(corpus_dir, tmp_path, monkeypatch):
    """compare-<experiment>-<budget>.json goes through storage.write_json_atomic; a write that fails
    midway leaves the previous summary whole and no temp file behind."""
    import workbench.experiments.aggregate as aggregate_module
    import workbench.storage as storage

    experiment = small(protocol_v2("smoke"), ["copy"], ["transformer"])
    results = tmp_path / "results"
    run_experiment(experiment, results, progress=False)
    path = experiment.summary_path(results)
    before = path.read_text()
    assert aggregate_module.write_json_atomic is storage.write_json_atomic

    def dies_midway(handle):
        handle.write(b'{"rows": [')
        raise KeyboardInterrupt  # a kill between two writes

    with pytest.raises(KeyboardInterrupt):
        storage.write_atomic(path, dies_midway)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_finished_run_with_another_config_is_refused_but_an_option_added_later_is_not(tmp_path):
    import json

    from workbench.config import ConfigError
    from workbench.experiments import get_experiment
    from workbench.experiments.runner import chosen_rate, refuse_stale
    from workbench.experiments.spec import parse_variant
    from workbench.train import resolved_mixer_options

    experiment = get_experiment("multistream", "full").filtered(variants=[parse_variant("seeking:n_units=32")],
                                                                lr_grid=(0.003,))
    run = experiment.runs(tmp_path, chosen_rate(experiment, tmp_path))[0][0]
    resolved = resolved_mixer_options(run.config)

    def record(options):
        run.directory.mkdir(parents=True, exist_ok=True)
        (run.directory / "result.json").write_text(json.dumps(
            {"config": run.config.to_dict(), "mixer_options_resolved": options, "metrics": {}}))

    record({k: v for k, v in resolved.items() if k != "bid_rank"})  # made before bid_rank existed
    refuse_stale([run])
    record({**resolved, "key_dim": resolved["key_dim"] + 1})  # a default that moved
    with pytest.raises(ConfigError, match="key_dim"):
        refuse_stale([run])
    record({**resolved, "rest_spread": 1.0})  # made while an option since taken out was there, at its no-op
    refuse_stale([run])
    record({**resolved, "rest_spread": 16.0})  # ... but used: another model
    with pytest.raises(ConfigError, match="rest_spread"):
        refuse_stale([run])
