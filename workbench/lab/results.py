"""Reading experiment results for the notebooks: summaries and the run records behind them.

Protocol v2 and its companions write ``results/compare-<experiment>-<budget>.json`` (the
aggregate over seeds, ``workbench.experiments.aggregate``) and one record per run at
``results/<experiment>/<budget>/<cell>--<variant>--lr<lr>--s<seed>/result.json`` (with its
evaluation history). Protocol v1's files stay under ``results/v1/`` as they ran. This module
only reads; an absent file is reported as absent, never an error.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

BUDGETS = ("full", "demo", "smoke")
LOWER_IS_BETTER = {"bpc", "mse"}
LONG_MQAR = re.compile(r"^accuracy@(\d+)x(\d+)$")
LONG_COPY = re.compile(r"^(exact_match|token_accuracy)@L(\d+)$")


def summary_path(results: Path, experiment: str, budget: str) -> Path:
    return Path(results) / f"compare-{experiment}-{budget}.json"


def load_summary(results: Path, experiment: str, budget: str) -> dict[str, Any] | None:
    """The summary of ``experiment`` at ``budget``, or None when the file is absent or unreadable."""
    path = summary_path(results, experiment, budget)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def first_budget(results: Path, experiment: str, preferred: str) -> tuple[str | None, dict[str, Any] | None]:
    """``preferred`` if its summary has rows, else the first of full, demo, smoke that has; (None, None) if none."""
    for budget in [preferred, *(b for b in BUDGETS if b != preferred)]:
        summary = load_summary(results, experiment, budget)
        if summary and summary.get("rows"):
            return budget, summary
    return None, None


def run_records(results: Path, summary: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(cell label, variant) -> the records of the seeds that make up the summary row.

    Only the runs at the row's chosen learning rate count (the grid's other rates are kept on
    disk but are not the result); records are sorted by seed.
    """
    chosen = {(row["label"], row["variant"]): row["lr"] for row in summary.get("rows", [])}
    folder = Path(results) / summary["experiment"] / summary["budget"]
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(folder.glob("*/result.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        key = (record.get("label"), record.get("variant"))
        lr = chosen.get(key)
        if lr is not None and math.isclose(float(record.get("lr", math.nan)), lr, rel_tol=1e-9):
            out[key].append(record)
    for records in out.values():
        records.sort(key=lambda r: r.get("seed", 0))
    return dict(out)


def rows_by_key(summary: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["label"], row["variant"]): row for row in summary.get("rows", [])}


def cell_labels(summary: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(row["label"] for row in summary.get("rows", [])))


def primary_metric(summary: dict[str, Any], label: str) -> str | None:
    """The first metric the cell lists (the task's primary one: accuracy, exact match, bpc)."""
    for row in summary.get("rows", []):
        if row["label"] == label and row.get("metrics"):
            return next(iter(row["metrics"]))
    return None


def better(metric: str, a: float, b: float) -> bool:
    """True when ``a`` is better than ``b`` for this metric."""
    return a < b if metric in LOWER_IS_BETTER else a > b


def ranking(summary: dict[str, Any], label: str, metric: str | None = None) -> list[tuple[str, dict[str, float]]]:
    """Variants of one cell, best first by the mean of ``metric`` (default: the primary one)."""
    metric = metric or primary_metric(summary, label)
    entries = [(row["variant"], row["metrics"][metric]) for row in summary.get("rows", [])
               if row["label"] == label and metric in row.get("metrics", {})]
    reverse = metric not in LOWER_IS_BETTER
    return sorted(entries, key=lambda e: e[1]["mean"], reverse=reverse)


def pareto_front(points: list[tuple[float, float, str]]) -> list[str]:
    """Names of the points no other point beats on both axes (fewer state floats, higher accuracy)."""
    front = []
    for x, y, name in points:
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2, _ in points)
        if not dominated:
            front.append(name)
    return front


def mqar_length_points(row: dict[str, Any]) -> list[tuple[int, int, dict[str, float]]]:
    """(seq_len, kv_pairs, stat) of the cell itself and of every longer config it was evaluated at."""
    match = re.match(r"^mqar-(\d+)x(\d+)$", row["label"])
    points = []
    if match and "accuracy" in row["metrics"]:
        points.append((int(match.group(1)), int(match.group(2)), row["metrics"]["accuracy"]))
    for name, stat in row["metrics"].items():
        long = LONG_MQAR.match(name)
        if long:
            points.append((int(long.group(1)), int(long.group(2)), stat))
    return sorted(points)


def copy_length_points(row: dict[str, Any], metric: str = "exact_match") -> list[tuple[int | None, dict[str, float]]]:
    """(length, stat) of copy: None for the training range, then each longer length evaluated."""
    points: list[tuple[int | None, dict[str, float]]] = []
    if metric in row["metrics"]:
        points.append((None, row["metrics"][metric]))
    for name, stat in row["metrics"].items():
        long = LONG_COPY.match(name)
        if long and long.group(1) == metric:
            points.append((int(long.group(2)), stat))
    return points
