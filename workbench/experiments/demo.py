"""``make demo``: the main comparison at a small budget, trained fresh, printed beside the reference.

Fresh runs go to a directory of their own (``runs/demo-<time>`` unless given), so a clone that
already holds committed results still trains; the table sets each number beside the committed
reference run of the same cell (``results/compare-v2-demo.json``, made by the same command with
``--out results``). Several worker processes share the runs (one thread each), as ``make bench
JOBS=2`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workbench.experiments.protocol_v2 import protocol_v2
from workbench.experiments.runner import run_experiment
from workbench.experiments.spec import Experiment, Variant

CELLS = ["mqar-64x4", "copy", "charlm"]
MIXERS = ["transformer", "gated_deltanet", "inverted", "seeking"]
REFERENCE = Path("results/compare-v2-demo.json")


def demo_experiment(mixers: list[str] | None = None) -> Experiment:
    return protocol_v2("demo").filtered(cells=CELLS, variants=[Variant(m, m) for m in mixers or MIXERS])


def run_demo(out: Path | None = None, mixers: list[str] | None = None, jobs: int = 2,
             reference: Path = REFERENCE, progress: bool = True) -> tuple[dict[str, Any], str]:
    """Train the demo into ``out`` with ``jobs`` processes; return its summary and the side-by-side table."""
    import torch

    out = Path(out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    names = mixers or MIXERS
    experiment = demo_experiment(names)
    command = [sys.executable, "-m", "workbench.cli", "compare", "--experiment", "v2", "--budget", "demo",
               "--cells", ",".join(CELLS), "--mixers", ",".join(names), "--results", str(out), "--quiet", "--no-wait"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    helpers = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(max(0, jobs - 1))]
    torch.set_num_threads(1)
    try:
        summary, missing = run_experiment(experiment, out, progress=progress)
    finally:
        for helper in helpers:
            helper.wait()
    if missing:  # a helper that failed leaves its runs to us: one more pass
        summary, missing = run_experiment(experiment, out, progress=progress)
    return summary, side_by_side(summary, reference)


def side_by_side(summary: dict[str, Any], reference: Path) -> str:
    """Markdown: every (cell, metric) x variant, this run's value beside the committed reference."""
    ref_rows = {}
    if reference.is_file():
        ref_rows = {(r["label"], r["variant"]): r for r in json.loads(reference.read_text())["rows"]}
    variants = list(dict.fromkeys(r["variant"] for r in summary["rows"]))
    by_key = {(r["label"], r["variant"]): r for r in summary["rows"]}
    lines = ["| cell | metric | " + " | ".join(f"{v} (now / reference)" for v in variants) + " |",
             "|---|---|" + "---|" * len(variants)]
    for label in dict.fromkeys(r["label"] for r in summary["rows"]):
        metrics = dict.fromkeys(m for v in variants for m in by_key.get((label, v), {}).get("metrics", {}))
        for metric in metrics:
            cells = []
            for variant in variants:
                now = by_key.get((label, variant), {}).get("metrics", {}).get(metric)
                ref = ref_rows.get((label, variant), {}).get("metrics", {}).get(metric)
                cells.append(f"{now['mean']:.3f} / " + (f"{ref['mean']:.3f}" if ref else "-") if now else "-")
            lines.append(f"| {label} | {metric} | " + " | ".join(cells) + " |")
    note = (f"reference: {reference}" if reference.is_file() else
            f"no reference at {reference}: run `workbench demo --out results` once to make one")
    return "\n".join(lines) + f"\n\n{note}; the demo budget is a short sanity run, not a result."
