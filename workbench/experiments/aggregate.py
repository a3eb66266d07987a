"""Mean and standard deviation over seeds for every (cell, variant) of an experiment -> one JSON file.

A row is complete when every seed the experiment asks for has a record. Incomplete rows are left
out of the summary (and listed under ``incomplete``) unless ``allow_incomplete`` is given; then
they are kept with ``complete: false`` and the table shows how many seeds they have.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from workbench.experiments.spec import Experiment
from workbench.storage import write_json_atomic


def primary_score(record: dict[str, Any]) -> float:
    """The task's primary metric (higher is better); -inf for a run whose loss diverged."""
    value = record.get("metrics", {}).get(record.get("metric", ""), None)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def aggregate(experiment: Experiment, results: Path, allow_incomplete: bool = False, write: bool = True) -> dict[str, Any]:
    from workbench.experiments.runner import chosen_rate, finished

    results = Path(results)
    chosen = chosen_rate(experiment, results)
    rows, incomplete = [], []
    for cell in experiment.cells:
        for variant in experiment.variants:
            grid = {run.lr: finished(run) for run in (experiment.run(cell, variant, 0, lr, "grid", results)
                                                      for lr in experiment.grid(cell))}
            lr = experiment.rate(cell, variant, chosen)
            provisional = False
            if lr is None and allow_incomplete and any(r is not None for r in grid.values()):
                # The grid is unfinished: the best rate so far stands in, marked provisional.
                done = {k: r for k, r in grid.items() if r is not None}
                lr = max(done, key=lambda k: (primary_score(done[k]), -done[k].get("steps", 0), -k))
                provisional = True
            seeds: list[dict[str, Any]] = []
            if lr is not None:
                first = 1 if grid else 0
                if grid:
                    seeds.append(grid[lr])
                seeds += [finished(experiment.run(cell, variant, seed, lr, "seed", results))
                          for seed in range(first, experiment.seeds)]
            records = [r for r in seeds if r is not None]
            complete = lr is not None and not provisional and len(records) == experiment.seeds
            if not records or not (complete or allow_incomplete):
                if not complete:
                    incomplete.append({"label": cell.label, "variant": variant.label, "seeds": len(records),
                                       "grid_done": sum(r is not None for r in grid.values()), "grid": len(grid)})
                continue
            rows.append(_row(cell, variant, lr, grid, records, experiment.seeds, complete) | {"lr_provisional": provisional})
            if not complete:
                incomplete.append({"label": cell.label, "variant": variant.label, "seeds": len(records),
                                   "grid_done": sum(r is not None for r in grid.values()), "grid": len(grid)})
    summary = {"experiment": experiment.name, "budget": experiment.budget, "seeds": experiment.seeds,
               "lr_grid": list(experiment.lr_grid or []), "model": experiment.model, "notes": experiment.notes,
               "variants": [v.label for v in experiment.variants],
               "rows": rows, "incomplete": incomplete}
    if write:
        write_json_atomic(experiment.summary_path(results), summary)
    return summary


def _row(cell, variant, lr, grid, records, expected, complete) -> dict[str, Any]:
    trained = [r for r in records if r.get("status") != "diverged"]
    row: dict[str, Any] = {
        "label": cell.label, "task": cell.task, "variant": variant.label, "mixer": variant.mixer,
        "lr": lr, "lr_grid": {f"{k:g}": (None if r is None else _score_or_none(r)) for k, r in grid.items()},
        "seeds": len(records), "seeds_expected": expected, "complete": complete,
        "diverged": len(records) - len(trained), "metrics": {},
    }
    for name in cell.metrics:
        values = [r["metrics"][name] for r in trained if name in r["metrics"]]
        if values:
            row["metrics"][name] = stats(values)
    if trained:
        row["steps"] = stats([r["steps"] for r in trained])
        row["reached_target"] = sum(bool(r.get("reached_target")) for r in trained)
        row["train_time_s"] = stats([r["train_time_s"] for r in trained])
        row["tokens_per_s"] = stats([r["tokens_per_s"] for r in trained])
        row["parameters"] = trained[0]["parameters"]
        row["state_floats"] = trained[0].get("state_floats")
        row["device"] = trained[0]["device"]
        row["stability"] = stability(trained)
    return row


# Write-share statistics a mixer reports per block (``mixer_stats``): seeking's write mass per token, the
# ring's write fraction. Their last value tells whether a write gate shut during training.
WRITE_STATS = ("write_mass", "write_fraction")


def largest_fall(record: dict[str, Any]) -> float | None:
    """The largest fall of the primary metric (higher is better) between two consecutive evaluations;
    0 when it never fell, None with fewer than two evaluations."""
    name = record.get("metric", "")
    values = [e["metrics"][name] for e in record.get("history", []) if name in e.get("metrics", {})]
    if len(values) < 2:
        return None
    return max(0.0, *(before - after for before, after in zip(values, values[1:])))


def final_write_share(record: dict[str, Any]) -> float | None:
    """The smallest write share any block reported at the last evaluation (None: the mixer has none)."""
    for entry in reversed(record.get("history", [])):
        shares = [v for k, v in entry.get("mixer_stats", {}).items() if k.rsplit(".", 1)[-1] in WRITE_STATS]
        if shares:
            return min(shares)
    return None


def stability(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 18's goal 4 per row: the largest fall of the held-out metric between evaluations and the
    write share at the end (a shut gate), each as mean ± std over seeds plus the worst seed."""
    out: dict[str, Any] = {}
    for name, values, worst in (("largest_fall", [largest_fall(r) for r in records], max),
                                ("final_write_share", [final_write_share(r) for r in records], min)):
        values = [v for v in values if v is not None]
        if values:
            out[name] = stats(values) | {"worst": worst(values)}
    return out


def _score_or_none(record: dict[str, Any]) -> float | None:
    score = primary_score(record)
    return None if score == -math.inf else score


def load_summary(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def merge_into_table(summary: dict[str, Any], narrowed: Experiment, whole: Experiment, results: Path) -> dict[str, Any]:
    """Write a narrowed run's summary (some cells, variants, seeds or rates of ``whole``) into the
    experiment's table as it is now - other processes may have added rows meanwhile - and return it."""
    path = whole.summary_path(results)
    try:
        earlier = json.loads(path.read_text()) if path.is_file() else {}
        earlier = earlier if isinstance(earlier, dict) and isinstance(earlier.get("rows"), list) else {}
    except (OSError, ValueError):
        earlier = {}
    # The rows again under the whole experiment's grid and seeds: a rate run on its own (--lrs)
    # joins the grid points run before it, and the best of them is the row's rate.
    regrid = aggregate(whole.filtered(cells=[c.label for c in narrowed.cells], variants=narrowed.variants),
                       results, allow_incomplete=True, write=False)
    again = {(r["label"], r["variant"]): r for r in regrid["rows"]}
    summary = summary | {"rows": [again.get((r["label"], r["variant"]), r) for r in summary["rows"]]}
    scope = {(c.label, v.label) for c in narrowed.cells for v in narrowed.variants}
    merged = merge_tables(earlier, summary, scope, whole) if earlier else summary
    write_json_atomic(path, merged)
    return merged


def merge_tables(earlier: dict, summary: dict, scope: set[tuple[str, str]], whole: Experiment) -> dict:
    """A narrowed compare (some cells, mixers, seeds or rates) must not narrow the experiment's table:
    the (cell, variant) rows in its scope come from this run, the earlier table's others stay, and a
    row is complete only by the whole experiment's seeds and learning-rate grid."""
    cells, variants = [c.label for c in whole.cells], [v.label for v in whole.variants]
    fresh = []
    for row in summary["rows"]:
        tried = {k for k, v in row.get("lr_grid", {}).items() if v is not None}
        short_grid = bool(whole.lr_grid) and bool({f"{g:g}" for g in whole.lr_grid} - tried)
        short_seeds = row["seeds"] < whole.seeds
        if short_grid or short_seeds:
            row = row | {"complete": False, "seeds_expected": max(row["seeds_expected"], whole.seeds),
                         "lr_provisional": row.get("lr_provisional", False) or short_grid}
        fresh.append(row)
    rows = [r for r in earlier.get("rows", []) if (r.get("label"), r.get("variant")) not in scope] + fresh

    def place(name: str, order: list[str]) -> int:
        return order.index(name) if name in order else len(order)
    rows.sort(key=lambda r: (place(r["label"], cells), place(r["variant"], variants)))  # others: in the order met
    incomplete = [i for i in earlier.get("incomplete", []) if (i.get("label"), i.get("variant")) not in scope]
    # A design candidate (not one of the experiment's variants) with no run at all is not missing from it.
    incomplete += [i for i in summary["incomplete"] if (i["label"], i["variant"]) not in {
        (r["label"], r["variant"]) for r in fresh} and (i["variant"] in variants or i["seeds"] or i["grid_done"])]
    incomplete += [{"label": r["label"], "variant": r["variant"], "seeds": r["seeds"],
                    "grid_done": sum(v is not None for v in r.get("lr_grid", {}).values()),
                    "grid": len(whole.lr_grid or ())} for r in fresh if not r["complete"]]
    merged = {**summary, **{k: earlier[k] for k in ("seeds", "lr_grid", "notes") if k in earlier}}
    return merged | {"rows": rows, "incomplete": incomplete, "variants": variants}
