"""``workbench report``: result JSON files -> markdown blocks, nothing copied by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.bench import scaling as sc
from workbench.report import orphan_markers, render_blocks, update_markdown


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    sc.run_scaling(lengths=(16, 32), mixers=("inverted", "transformer"), d_model=16, tokens_per_batch=64, repeats=1,
                   out=out, threads=1, decode_steps=2, progress=False)
    sc.run_long_recurrent(n_tokens=60, d_model=16, chunk=20, out=out, threads=1, progress=False)
    return out


def test_scaling_and_long_context_blocks_render_from_the_json(results: Path):
    blocks = render_blocks(results)
    assert set(blocks) == {"scaling-cpu-1thread", "long-context-cpu-1thread"}
    table = blocks["scaling-cpu-1thread"]
    assert table.count("\n| inverted |") == 2 and table.count("\n| transformer |") == 2
    assert "ESTIMATES" in table and "log-log slopes, inverted" in table
    long = blocks["long-context-cpu-1thread"]
    assert "| 60 | float32 |" in long and "state norms" in long


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


def test_ablation_block_lists_each_variant_with_its_change_from_the_default(tmp_path: Path):
    """Hand-made run files (the aggregation is what is tested here, not training)."""
    import json

    from workbench.compare import ABLATIONS

    def write(label: str, mixer: str, metrics: dict[str, float]) -> None:
        run = tmp_path / "ablation" / "runs" / "demo" / f"{label}--{mixer.replace(':', '_')}--s0"
        run.mkdir(parents=True)
        run.joinpath("result.json").write_text(json.dumps({
            "label": label, "mixer_label": mixer, "metric": next(iter(metrics)), "metrics": metrics, "steps": 10,
            "train_time_s": 1.0, "tokens_per_s": 1.0, "device": "cpu (test)",
            "parameters": {"mixer": 7 if mixer == "inverted" else 5, "total": 9}}))

    write("mqar-64x4", "inverted", {"accuracy": 0.9, "accuracy@128x8": 0.5})
    write("mqar-64x4", ABLATIONS["k=1"], {"accuracy": 0.6, "accuracy@128x8": 0.1})
    write("charlm", "inverted", {"bpc": 2.8})
    write("charlm", ABLATIONS["k=1"], {"bpc": 3.0})
    blocks = render_blocks(tmp_path)
    table = blocks["ablation-demo"]
    assert "| variant | mixer params | mqar-64x4 accuracy | charlm bpc |" in table  # long-length metrics left out
    assert "| inverted (default: M=128, k=4, w=8) | 7 | 0.900 | 2.800 |" in table
    assert "| k=1 | 5 | 0.600 (-0.300) | 3.000 (+0.200) |" in table
    assert "compare-demo" not in blocks  # the ablation set keeps out of the main tables


def write(root: Path, label: str, mixer: str, bpc: float, seed: int = 0) -> None:
    """A full-budget run record as compare writes it (only the fields the report reads)."""
    import json

    run = root / "runs" / "full" / f"{label}--{mixer.replace(':', '_').replace('=', '-')}--s{seed}"
    run.mkdir(parents=True)
    run.joinpath("result.json").write_text(json.dumps({
        "label": label, "mixer_label": mixer, "metric": "bpc", "metrics": {"bpc": bpc}, "steps": 10,
        "train_time_s": 1.0, "tokens_per_s": 1.0, "device": "cpu (test)", "parameters": {"mixer": 7, "total": 9}}))


def test_experiments_block_sets_each_variant_against_the_default_cells(tmp_path: Path):
    """A variant in results/experiments is compared with the main table's default of the same label."""
    from workbench.compare import aggregate

    write(tmp_path, "charlm", "inverted", 2.4)
    write(tmp_path, "charlm", "inverted", 2.2, seed=1)
    write(tmp_path, "charlm", "transformer", 2.35)
    write(tmp_path, "mqar-64x4", "inverted", 0.5)  # a label the experiments do not have: left out
    write(tmp_path / "experiments", "charlm", "inverted:conv_width=8", 2.25)
    aggregate(tmp_path, "full")
    table = render_blocks(tmp_path)["experiments-full"]
    assert "| variant | mixer params | charlm bpc |" in table and "mqar" not in table
    assert "| inverted (default: M=128, k=4, w=8) | 7 | 2.300 ± 0.141 |" in table
    assert "| inverted:conv_width=8 | 7 | 2.250 (-0.050) |" in table
    assert "| transformer | 7 | 2.350 (+0.050) |" in table


def test_former_default_blocks_set_the_old_default_against_todays_and_its_experiments_against_it(tmp_path: Path):
    """Runs moved to results/former-defaults/<name> keep their label 'inverted'; the block renames
    them; the experiments run beside that default are set against it, not against today's."""
    from workbench.compare import aggregate

    write(tmp_path, "charlm", "inverted", 2.3)
    write(tmp_path, "charlm", "transformer", 2.35)
    former = tmp_path / "former-defaults" / "plain-price"
    write(former, "charlm", "inverted", 2.4)
    write(former / "experiments", "charlm", "inverted:gate_margin=0.1", 2.45)
    aggregate(tmp_path, "full")
    blocks = render_blocks(tmp_path)
    table = blocks["former-default-plain-price-full"]
    assert "| inverted (default: M=128, k=4, w=8) | 7 | 2.300 |" in table
    assert "| former default: plain-price | 7 | 2.400 (+0.100) |" in table
    assert "| transformer | 7 | 2.350 (+0.050) |" in table
    table = blocks["experiments-plain-price-full"]
    assert "| former default: plain-price | 7 | 2.400 |" in table
    assert "| inverted:gate_margin=0.1 | 7 | 2.450 (+0.050) |" in table
    assert "| transformer | 7 | 2.350 (-0.050) |" in table
    assert "2.300" not in table  # today's default is not this experiment's base


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


def test_compare_table_takes_parameters_and_speed_from_a_config_every_mixer_ran():
    from workbench.report import compare_table

    def row(label: str, mixer: str, speed: float) -> dict:
        stat = {"mean": 1.0, "std": 0.0, "n": 1}
        return {"label": label, "mixer": mixer, "seeds": 1, "metrics": {"bpc": stat}, "steps": stat,
                "tokens_per_s": {"mean": speed, "std": 0.0, "n": 1}, "device": "cpu (test)",
                "parameters": {"mixer": 7 if mixer == "inverted" else 5, "total": 9}}

    rows = [row("charlm", "transformer", 100.0), row("charlm-600s", "transformer", 200.0), row("charlm-600s", "inverted", 300.0)]
    table = compare_table({"budget": "full", "rows": rows})
    assert "| all | train tokens/s (charlm-600s) | 200 | 300 |" in table  # not the transformer's charlm 100
    alone = compare_table({"budget": "full", "rows": [rows[0], row("mqar-64x4", "inverted", 50.0)]})
    assert "| all | train tokens/s | 100 (charlm) | 50 (mqar-64x4) |" in alone
