"""``workbench report``: result JSON files -> markdown blocks, nothing copied by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.bench import scaling as sc
from workbench.bench.long_context import run_long_recurrent
from workbench.report import orphan_markers, render_blocks, update_markdown


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    sc.run_scaling(lengths=(16, 32), mixers=("inverted", "transformer"), d_model=16, tokens_per_batch=64, repeats=1,
                   out=out, threads=1, decode_steps=2, progress=False, phases=("decode", "prefill", "train"),
                   peak_sizes=(64, 128))
    run_long_recurrent(n_tokens=60, d_model=16, chunk=20, out=out, threads=1, progress=False, mixers=("inverted",))
    return out


def test_scaling_and_long_context_blocks_render_from_the_json(results: Path):
    blocks = render_blocks(results)
    assert set(blocks) == {"scaling-cpu-1thread", "long-context-cpu-1thread"}
    table = blocks["scaling-cpu-1thread"]
    assert table.count("\n| inverted |") == 4 and table.count("\n| transformer |") == 4  # main and energy tables
    assert "ESTIMATES" in table and "log-log slopes, inverted" in table and "% peak" in table
    long = blocks["long-context-cpu-1thread"]
    assert "| inverted | 60 | float32 | plain |" in long and "state norms" in long


def test_update_markdown_replaces_only_known_blocks(results: Path, tmp_path: Path):
    page = tmp_path / "page.md"
    before = ("intro\n<!-- report:scaling-cpu-1thread -->\nstale\n<!-- /report:scaling-cpu-1thread -->\n"
              "<!-- report:compare-full -->\nkept\n<!-- /report:compare-full -->\noutro\n")
    page.write_text(before)
    replaced = update_markdown(page, render_blocks(results))
    text = page.read_text()
    assert replaced == ["scaling-cpu-1thread"]
    assert "stale" not in text and "| inverted | 16 |" in text
    assert "kept" in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert orphan_markers(page, render_blocks(results)) == ["compare-full"]  # the CLI names it as stale


def _row(label: str, variant: str, value: float, seeds: int = 3, expected: int = 3) -> dict:
    stat = {"mean": value, "std": 0.01, "n": seeds}
    return {"label": label, "variant": variant, "mixer": variant.split(":")[0], "lr": 0.003, "seeds": seeds,
            "seeds_expected": expected, "complete": seeds == expected, "diverged": 0,
            "metrics": {"accuracy": stat}, "steps": {"mean": 500.0, "std": 0.0, "n": seeds},
            "tokens_per_s": {"mean": 1000.0, "std": 0.0, "n": seeds}, "device": "cpu (test)",
            "parameters": {"mixer": 7, "total": 9},
            "state_floats": {"context": 255, "floats": 25_000, "grows_with_context": variant == "transformer"}}


def test_compare_block_shows_every_variant_its_rate_state_and_missing_seeds(tmp_path: Path):
    import json

    summary = {"experiment": "v2", "budget": "full", "seeds": 3, "lr_grid": [0.001, 0.003, 0.01],
               "rows": [_row("mqar-256x16", "transformer", 0.99), _row("mqar-256x16", "inverted", 0.98, seeds=2)],
               "incomplete": [{"label": "mqar-256x16", "variant": "inverted", "seeds": 2, "grid_done": 3, "grid": 3}]}
    (tmp_path / "compare-v2-full.json").write_text(json.dumps(summary))
    table = render_blocks(tmp_path)["compare-v2-full"]
    assert "| cell | metric | transformer | inverted |" in table
    assert "| mqar-256x16 | accuracy | 0.990 ± 0.010 | 0.980 ± 0.010 (2/3) |" in table
    assert "| mqar-256x16 | lr / steps | 0.003 / 500 | 0.003 / 500 |" in table
    assert "| all | state floats @ tokens (mqar-256x16) | 25.0k @ 255 (grows) | 25.0k @ 255 |" in table
    assert "Incomplete (1 (cell, variant) pairs): 1 short of seeds or grid points." in table
    assert "{0.001, 0.003, 0.01}" in table
    # A variant with no finished run is named under its cell; a cell none of its variants has run says
    # "all" (a variant tabled in another cell only, such as a design candidate, does not count).
    summary["rows"].append(_row("mqar-256x16", "seeking:hold=16", 0.98, seeds=1))
    summary["incomplete"] += [{"label": "copy", "variant": "inverted", "seeds": 0, "grid_done": 0, "grid": 3},
                              {"label": "copy", "variant": "transformer", "seeds": 0, "grid_done": 0, "grid": 3},
                              {"label": "charlm", "variant": "transformer", "seeds": 1, "grid_done": 1, "grid": 3},
                              {"label": "charlm", "variant": "inverted", "seeds": 0, "grid_done": 0, "grid": 3}]
    (tmp_path / "compare-v2-full.json").write_text(json.dumps(summary))
    table = render_blocks(tmp_path)["compare-v2-full"]
    assert "2 short of seeds or grid points; not run yet - copy: all; charlm: inverted." in table


def test_brief_compare_block_keeps_the_primary_metric_and_the_last_slice_and_drops_speed(tmp_path: Path):
    import json

    row = _row("mqar-256x16", "inverted", 0.98)
    row["metrics"].update({f"accuracy@{n}x64": {"mean": 0.5, "std": 0.1, "n": 3} for n in (512, 1024, 4096)})
    row["metrics"]["token_accuracy"] = {"mean": 0.99, "std": 0.0, "n": 3}  # a secondary metric: full table only
    summary = {"experiment": "v2", "budget": "full", "seeds": 3, "rows": [row], "incomplete": []}
    (tmp_path / "compare-v2-full.json").write_text(json.dumps(summary))
    blocks = render_blocks(tmp_path)
    brief, full = blocks["compare-v2-full-brief"], blocks["compare-v2-full"]
    assert "accuracy@1024x64" in full and "accuracy@1024x64" not in brief
    assert "| mqar-256x16 | accuracy | 0.980 ± 0.010 |" in brief
    assert "accuracy@512x64" not in brief and "accuracy@4096x64" in brief
    assert "token_accuracy" in full and "token_accuracy" not in brief
    assert "tokens/s" in full and "tokens/s" not in brief
    # A design candidate run beside the experiment's own variants: in the full table, counted in the brief.
    summary |= {"rows": [row, _row("mqar-256x16", "inverted:hold=1", 0.97, seeds=1)], "variants": ["inverted"]}
    (tmp_path / "compare-v2-full.json").write_text(json.dumps(summary))
    blocks = render_blocks(tmp_path)
    brief, full = blocks["compare-v2-full-brief"], blocks["compare-v2-full"]
    assert "inverted:hold=1" in full and "inverted:hold=1" not in brief
    assert "1 design candidate(s) run beside them" in brief


def test_ablation_block_lists_each_variant_with_its_change_from_the_default(tmp_path: Path):
    import json

    rows = [_row("mqar-256x16", "inverted (default)", 0.9), _row("mqar-256x16", "one pool", 0.6)]
    summary = {"experiment": "ablation", "budget": "full", "seeds": 3, "rows": rows, "incomplete": []}
    (tmp_path / "compare-ablation-full.json").write_text(json.dumps(summary))
    table = render_blocks(tmp_path)["ablation-full"]
    assert "| inverted (default) | 0.900 ± 0.010 |" in table
    assert "| one pool | 0.600 ± 0.010 (-0.300) |" in table


def test_system2_block_shows_every_system_and_both_curves():
    from workbench.report import system2_table

    stat = {"mean": 1.0, "std": 0.0, "n": 1}
    task = {
        "slices": ["hops1", "hops2"], "train_slices": ["hops1"],
        "rows": [{"system": "inverted", "accuracy": {"hops1": {**stat, "mean": 0.1}, "hops2": {**stat, "mean": 0.0}}},
                 {"system": "inverted+system2", "accuracy": {"hops1": stat, "hops2": stat},
                  "steps": {"hops1": stat, "hops2": {**stat, "mean": 2.0}}}],
        "rules": {"compare": {"true": 4, "correct": 3, "learned": 3, "precision": 1.0, "recall": 0.75}},
        "tradeoff": {"inverted": [{"cost": 0.0, "accuracy": 1.0, "mean_steps": 1.5},
                                  {"cost": 1.0, "accuracy": 0.05, "mean_steps": 0.0}]},
        "budget_curve": {"inverted": [{"budget": 0, "accuracy": 0.05, "mean_steps": 0.0, "finished": 0.0},
                                      {"budget": 2, "accuracy": 1.0, "mean_steps": 1.5, "finished": 1.0}]},
    }
    text = system2_table({"budget": "demo", "seeds": 1, "device": "cpu (test)", "tasks": {"hops": task}})
    assert "| system | hops1 | hops2 |" in text
    assert "| inverted | 0.10 | 0.00 |" in text and "| inverted+system2 | 1.00 (1.0) | 1.00 (2.0) |" in text
    assert "precision 1.00, recall 0.75 (3 of 4 true rules" in text
    assert "0: 1.00 @ 1.5, 1: 0.05 @ 0.0." in text and "Step budget B: accuracy @ mean steps: 0: 0.05 @ 0.0, 2: 1.00 @ 1.5." in text


def test_standings_call_a_difference_within_one_standard_deviation_a_tie():
    from workbench.report import standings_table, verdict

    def stat(mean, std, n=3):
        return {"mean": mean, "std": std, "n": n}

    assert verdict(stat(0.9, 0.01), stat(0.8, 0.02), "accuracy") == "better"
    assert verdict(stat(0.9, 0.05), stat(0.86, 0.01), "accuracy") == "tie"
    assert verdict(stat(2.30, 0.01), stat(2.25, 0.01), "bpc") == "worse"  # lower bpc is better
    assert verdict(stat(0.9, 0.0, n=1), stat(0.1, 0.0), "accuracy") == "n/a (1 seed)"
    rows = [{**_row("mqar-256x16", "inverted", 0.95), "metrics": {"accuracy": stat(0.95, 0.01)}},
            {**_row("mqar-256x16", "mamba", 0.5), "metrics": {"accuracy": stat(0.5, 0.01)}}]
    table = standings_table({"rows": rows})
    assert "| mqar-256x16 | accuracy | better |" in table


def test_every_committed_result_file_renders():
    """The report reads every schema the repository holds (old scaling files included)."""
    repo = Path(__file__).resolve().parent.parent
    blocks = render_blocks(repo / "results")
    assert any(name.startswith("scaling-") for name in blocks) and all(isinstance(b, str) for b in blocks.values())


def test_readme_is_short_and_starts_with_the_two_commands():
    """A newcomer's page: at most 10 KB as rendered, the two set-up commands first."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    assert len(text.encode()) <= 10 * 1024, f"README.md is {len(text.encode())} bytes"
    first_block = text.split("```")[1]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()[1:]] == ["make demo", "make test"]


def test_stability_rows_show_the_worst_seeds_fall_and_write_share_in_the_full_table_only(tmp_path: Path):
    import json

    from workbench.experiments.aggregate import stability

    def record(values, shares):
        history = [{"metrics": {"exact_match": v}, "mixer_stats": {"block0.write_mass": w, "block1.write_mass": 1.0}}
                   for v, w in zip(values, shares)]
        return {"metric": "exact_match", "history": history}

    # Seed 0 falls by 0.3 once (0.8 -> 0.5); seed 1 only rises; a shut gate on seed 1 ends at 0.05.
    stab = stability([record([0.2, 0.8, 0.5, 0.9], [1.0, 0.9, 0.9, 0.8]), record([0.1, 0.4, 0.7, 0.9], [1.0, 0.5, 0.1, 0.05])])
    assert stab["largest_fall"]["worst"] == pytest.approx(0.3) and stab["largest_fall"]["mean"] == pytest.approx(0.15)
    assert stab["final_write_share"]["worst"] == pytest.approx(0.05)  # the lowest block of the lowest seed
    assert stability([{"metric": "exact_match", "history": [{"metrics": {"exact_match": 0.5}}]}]) == {}
    row = _row("copy", "seeking", 0.9) | {"stability": stab}
    (tmp_path / "compare-v2-full.json").write_text(json.dumps(
        {"experiment": "v2", "budget": "full", "seeds": 3, "rows": [row, _row("copy", "transformer", 0.99)],
         "incomplete": []}))
    blocks = render_blocks(tmp_path)
    assert "| copy | largest fall between evals (worst seed) | 0.300 | - |" in blocks["compare-v2-full"]
    assert "| copy | write share at the end (lowest seed) | 0.050 | - |" in blocks["compare-v2-full"]
    assert "largest fall" not in blocks["compare-v2-full-brief"]


def test_memory_profile_block_shows_each_mixers_peak_and_its_ratio_to_the_transformer(tmp_path: Path):
    import json

    points = [{"mixer": m, "variant": "default", "n": 1024, "phase": ph, "peak_live_mib": mib}
              for m, ph, mib in (("seeking", "train", 1400.0), ("seeking", "prefill", 430.0),
                                 ("transformer", "train", 800.0), ("transformer", "prefill", 416.0))]
    (tmp_path / "memory-profile-cpu-1thread.json").write_text(json.dumps(
        {"points": points, "settings": {"d_model": 128, "tokens_per_batch": 65536, "dtype": "float32"},
         "method": "profiler", "git_commit": "abc", "device": "cpu-1thread"}))
    table = render_blocks(tmp_path)["memory-profile-cpu-1thread"]
    assert "| mixer | train n=1024 | prefill n=1024 |" in table
    assert "| seeking | 1,400 (1.75x) | 430 (1.03x) |" in table and "| transformer | 800 | 416 |" in table
