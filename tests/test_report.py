"""``workbench report``: result JSON files -> markdown blocks, nothing copied by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.bench import scaling as sc
from workbench.report import render_blocks, update_markdown


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
