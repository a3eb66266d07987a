"""Markdown tables from ``results/*.json`` - the only way numbers reach README, notebooks and papers.

``workbench report`` rewrites the blocks between ``<!-- report:NAME -->`` and
``<!-- /report:NAME -->`` in the given markdown files, so no number is copied by hand. This
module only reads: the experiments write their summaries (``workbench.experiments.aggregate``).

Blocks: ``compare-<experiment>-<budget>`` (protocol v2 and its companions), ``ablation-<budget>``,
``v1-<budget>`` (protocol v1, kept as it ran), ``system2-<budget>``, ``scaling-<device>``,
``long-context-<device>``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def _cell(stat: dict[str, float] | None, digits: int = 3) -> str:
    if not stat:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("n", 1) > 1:
        text += f" ± {stat['std']:.{digits}f}"
    return text


def _seeds_note(row: dict[str, Any]) -> str:
    """`` (2/3)`` for a row that lacks seeds, ``""`` for a complete one."""
    expected = row.get("seeds_expected", row["seeds"])
    return "" if row["seeds"] >= expected else f" ({row['seeds']}/{expected})"


def _floats(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e3 else str(n))


def compare_table(summary: dict[str, Any], brief: bool = False) -> str:
    """Protocol v2 style: one row per (cell, metric), one column per variant; then the learning rate
    each chose, parameters, recurrent state and speed. A cell short of seeds says so: ``(2/3)``.
    ``brief`` (the README's): a cell's primary metric and its last sliced one (``name@slice``: the
    longest extrapolation), no speed row, and only the experiment's own variants (design candidates run beside them are
    counted in a line, and tabled in the full form)."""
    variants = list(dict.fromkeys(row["variant"] for row in summary["rows"]))
    candidates = []
    if brief and isinstance(summary.get("variants"), list):
        candidates = [v for v in variants if v not in summary["variants"]]
        variants = [v for v in variants if v in summary["variants"]]
    by_key = {(row["label"], row["variant"]): row for row in summary["rows"]}
    labels = list(dict.fromkeys(row["label"] for row in summary["rows"]))
    lines = ["| cell | metric | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for label in labels:
        names = list(dict.fromkeys(n for v in variants for n in by_key.get((label, v), {}).get("metrics", {})))
        if brief:
            sliced = [n for n in names if "@" in n]
            names = names[:1] + [n for n in sliced[-1:] if n not in names[:1]]
        for name in names:
            cells = []
            for variant in variants:
                row = by_key.get((label, variant))
                cells.append(_cell(row["metrics"].get(name)) + _seeds_note(row) if row else "-")
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
        cells = []
        for variant in variants:
            row = by_key.get((label, variant))
            cells.append("-" if row is None or "steps" not in row else
                         f"{row['lr']:g}{'*' if row.get('lr_provisional') else ''} / {row['steps']['mean']:.0f}"
                         + (f", {row['diverged']} diverged" if row.get("diverged") else ""))
        lines.append(f"| {label} | lr / steps | " + " | ".join(cells) + " |")
        if not brief:
            for name, text in (("largest_fall", "largest fall between evals (worst seed)"),
                               ("final_write_share", "write share at the end (lowest seed)")):
                stab = [by_key.get((label, v), {}).get("stability", {}).get(name) for v in variants]
                if any(stab):
                    lines.append(f"| {label} | {text} | " + " | ".join(
                        "-" if s is None else f"{s['worst']:.3f}" for s in stab) + " |")
    params, state, speed = [], [], []
    for variant in variants:
        rows = [r for r in summary["rows"] if r["variant"] == variant and "parameters" in r]
        if not rows:
            params.append("-"), state.append("-"), speed.append("-")
            continue
        row = rows[0]
        params.append(f"{row['parameters']['mixer']:,}")
        floats = row.get("state_floats") or {}
        grows = " (grows)" if floats.get("grows_with_context") else ""
        state.append(f"{_floats(floats['floats'])} @ {floats['context']}{grows}" if floats else "-")
        speed.append(", ".join(f"{r['tokens_per_s']['mean']:,.0f}" for r in rows[:1]))
    first = next(iter(labels), "")
    lines.append("| all | mixer parameters | " + " | ".join(params) + " |")
    lines.append(f"| all | state floats @ tokens ({first}) | " + " | ".join(state) + " |")
    if not brief:
        lines.append(f"| all | train tokens/s ({first}) | " + " | ".join(speed) + " |")
    devices = sorted({r["device"] for r in summary["rows"] if "device" in r})
    missing = summary.get("incomplete", [])
    lines += ["", f"Experiment `{summary['experiment']}`, budget `{summary['budget']}`, {summary['seeds']} seed(s) per "
              f"cell" + (f", learning rate chosen on seed 0 from {{{', '.join(f'{x:g}' for x in summary['lr_grid'])}}}"
                         if summary.get("lr_grid") else "") + f"; measured on: {', '.join(devices) or '-'}."]
    if any(r.get("lr_provisional") for r in summary["rows"]):
        lines.append("`*`: the learning rate is the best of the grid points finished so far (the grid is unfinished).")
    if candidates:
        lines.append(f"{len(candidates)} design candidate(s) run beside them: the paper's full table.")
    if missing:
        lines.append(_missing_note(missing, summary["rows"]))
    return "\n".join(lines)


def _missing_note(missing: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """One line: per cell, the variants with no finished run yet ("all": none of the variants tabled or
    listed for that cell has one), and how many pairs are short of seeds."""
    every: dict[str, set[str]] = {}
    for item in [*rows, *missing]:
        every.setdefault(item["label"], set()).add(item["variant"])
    empty: dict[str, list[str]] = {}
    short = 0
    for m in missing:
        if m["seeds"] == 0:
            empty.setdefault(m["label"], []).append(m["variant"])
        else:
            short += 1
    cells = [f"{label}: all" if set(names) == every[label] else f"{label}: {', '.join(names)}"
             for label, names in empty.items()]
    text = f"Incomplete ({len(missing)} (cell, variant) pairs): {short} short of seeds or grid points"
    return text + (f"; not run yet - {'; '.join(cells)}." if cells else ".")


LOWER_IS_BETTER = {"bpc"}


def verdict(mine: dict[str, float] | None, theirs: dict[str, float] | None, metric: str) -> str:
    """``better``/``worse`` when the means differ by more than the larger standard deviation of the two
    (each over at least 2 seeds), ``tie`` when they do not, ``n/a`` without enough seeds."""
    if not mine or not theirs:
        return "-"
    if min(mine.get("n", 1), theirs.get("n", 1)) < 2:
        return "n/a (1 seed)"
    difference = mine["mean"] - theirs["mean"]
    if metric in LOWER_IS_BETTER:
        difference = -difference
    if abs(difference) <= max(mine["std"], theirs["std"]):
        return "tie"
    return "better" if difference > 0 else "worse"


def standings_table(summary: dict[str, Any], focus: str = "inverted") -> str:
    """Where ``focus`` stands against every other variant, cell by cell, on each cell's primary metric
    (and the extrapolation metrics): better / tie / worse by the one-standard-deviation rule."""
    variants = [v for v in dict.fromkeys(r["variant"] for r in summary["rows"]) if v != focus]
    by_key = {(r["label"], r["variant"]): r for r in summary["rows"]}
    lines = ["| cell | metric | " + " | ".join(f"vs {v}" for v in variants) + " |",
             "|---|---|" + "---|" * len(variants)]
    for label in dict.fromkeys(r["label"] for r in summary["rows"]):
        mine = by_key.get((label, focus))
        if mine is None:
            continue
        for metric in mine["metrics"]:
            if metric.startswith(("token_accuracy", "val_")):
                continue
            cells = []
            for variant in variants:
                other = by_key.get((label, variant))
                cells.append(verdict(mine["metrics"].get(metric), other["metrics"].get(metric) if other else None,
                                     metric))
            lines.append(f"| {label} | {metric} | " + " | ".join(cells) + " |")
    lines += ["", f"`{focus}` against each variant: better or worse when the means differ by more than the larger "
              "of the two standard deviations over seeds, else a tie (protocol v2's rule)."]
    return "\n".join(lines)


def ablation_table(summary: dict[str, Any]) -> str:
    """One row per variant, one column per (cell, metric), with the change from the first (default) row."""
    variants = list(dict.fromkeys(row["variant"] for row in summary["rows"]))
    by_key = {(row["label"], row["variant"]): row for row in summary["rows"]}
    labels = list(dict.fromkeys(row["label"] for row in summary["rows"]))
    columns = [(label, metric) for label in labels
               for metric in next(r for r in summary["rows"] if r["label"] == label)["metrics"] if "@" not in metric]
    default = variants[0] if variants else None
    lines = ["| variant | " + " | ".join(f"{label} {metric}" for label, metric in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for variant in variants:
        cells = []
        for label, metric in columns:
            row, base = by_key.get((label, variant)), by_key.get((label, default))
            stat = row["metrics"].get(metric) if row else None
            text = _cell(stat) + (_seeds_note(row) if row else "")
            if stat and base and variant != default and metric in base["metrics"]:
                text += f" ({stat['mean'] - base['metrics'][metric]['mean']:+.3f})"
            cells.append(text)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", f"Budget `{summary['budget']}`, {summary['seeds']} seed(s) per cell; in brackets the change from "
              f"`{default}` (for bpc lower is better)."]
    return "\n".join(lines)


def v1_table(summary: dict[str, Any]) -> str:
    """Protocol v1 as it ran (transformer without the short convolution): one column per mixer."""
    mixers = list(dict.fromkeys(row["mixer"] for row in summary["rows"]))
    by_key = {(row["label"], row["mixer"]): row for row in summary["rows"]}
    labels = list(dict.fromkeys(row["label"] for row in summary["rows"]))
    lines = ["| task | metric | " + " | ".join(mixers) + " |", "|---|---|" + "---|" * len(mixers)]
    for label in labels:
        names = list(dict.fromkeys(n for m in mixers for n in by_key.get((label, m), {}).get("metrics", {})))
        for name in names:
            cells = [_cell(by_key[(label, m)]["metrics"].get(name)) if (label, m) in by_key else "-" for m in mixers]
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Protocol v1, budget `{summary['budget']}` (no short convolution in the transformer)."]
    return "\n".join(lines)


def format_summary(summary: dict[str, Any]):
    """A rich table for the terminal: one row per (cell, variant)."""
    from rich.table import Table

    table = Table(title=f"workbench compare - {summary['experiment']} / {summary['budget']}")
    for column in ("cell", "variant", "seeds", "lr", "metrics (mean ± std)", "steps", "mixer params", "state floats",
                   "tokens/s"):
        table.add_column(column)
    for row in summary["rows"]:
        metrics = ", ".join(f"{k} {v['mean']:.3f}±{v['std']:.3f}" for k, v in row["metrics"].items())
        floats = row.get("state_floats") or {}
        table.add_row(row["label"], row["variant"], f"{row['seeds']}/{row['seeds_expected']}", f"{row['lr']:g}",
                      metrics, f"{row['steps']['mean']:.0f}" if "steps" in row else "-",
                      f"{row['parameters']['mixer']:,}" if "parameters" in row else "-",
                      _floats(floats["floats"]) if floats else "-",
                      f"{row['tokens_per_s']['mean']:,.0f}" if "tokens_per_s" in row else "-")
    return table


def system2_table(summary: dict[str, Any]) -> str:
    """Per task: accuracy by slice for every system (mean steps for System 2 rows), the rules' precision
    and recall, and the inverted model's two trade-off curves (controller per cost; step budget)."""
    lines = []
    for name, task in summary["tasks"].items():
        lines += [f"**{name}** (trained on {', '.join(task['train_slices'])})", "",
                  "| system | " + " | ".join(task["slices"]) + " |", "|---|" + "---|" * len(task["slices"])]
        for row in task["rows"]:
            cells = []
            for s in task["slices"]:
                text = _cell(row["accuracy"][s], 2)
                if "steps" in row:
                    text += f" ({row['steps'][s]['mean']:.1f})"
                cells.append(text)
            lines.append(f"| {row['system']} | " + " | ".join(cells) + " |")
        rules = task["rules"]["compare"]
        lines.append("")
        if rules["true"]:
            lines.append(f"Rules learned: precision {rules['precision']:.2f}, recall {rules['recall']:.2f} "
                         f"({rules['correct']} of {rules['true']} true rules, {rules['learned']} kept).")
        curve = task["tradeoff"].get("inverted", [])
        if curve:
            points = ", ".join(f"{p['cost']:g}: {p['accuracy']:.2f} @ {p['mean_steps']:.1f}" for p in curve)
            lines.append(f"Controller, cost per step: accuracy @ mean steps (inverted System 1): {points}.")
        budget = task.get("budget_curve", {}).get("inverted", [])
        if budget:
            points = ", ".join(f"{p['budget']}: {p['accuracy']:.2f} @ {p['mean_steps']:.1f}" for p in budget)
            lines.append(f"Step budget B: accuracy @ mean steps: {points}.")
        lines.append("")
    lines.append(f"Budget `{summary['budget']}`, {summary['seeds']} seed(s); in brackets System 2's mean steps; "
                 f"measured on: {summary.get('device', '?')}.")
    return "\n".join(lines)


def notebook_multistream_table(units: dict[str, Any], load: dict[str, Any] | None) -> str:
    """Notebook 02's multi-stream section (and 03's rest on/off), from the numbers they wrote: accuracy
    by stream at equal state, the units' stream information against its shuffled null, the load."""
    models = units["models"]
    streams = sorted(k for k in next(iter(models.values()))["metrics"] if k.startswith("accuracy@"))
    lines = ["| model | state floats | accuracy | " + " | ".join(s.removeprefix("accuracy@") for s in streams) + " |",
             "|---|---|---|" + "---|" * len(streams)]
    for name, model in models.items():
        m = model["metrics"]
        lines.append(f"| {name} | {model['state_floats']:,} | {m['accuracy']:.3f} | "
                     + " | ".join(f"{m[s]:.3f}" for s in streams) + " |")
    task = units["task_options"]
    trained = ", ".join(sorted(set(units.get("sources", {}).values()))) or "trained in the notebook"
    lines += ["", f"One seed ({units['seed']}), d_model {units['d_model']}, lr {units['lr']:g}, {trained}, on a small "
              f"multi-stream recall ({task['seq_len']} tokens, {task['n_values']} values, {task['n_queries']} "
              "queries): a short run, not the protocol's cell."]
    spec = units["specialization"].get("seeking")
    if spec:
        excess = [(mi - null) / h for mi, null, h in zip(spec["mi_bits"], spec["null_mean_bits"],
                                                          spec["stream_entropy_bits"], strict=True)]
        lines.append(f"Seeking units' stream information per head: MI {', '.join(f'{v:.3f}' for v in spec['mi_bits'])} "
                     f"bits against a shuffled null of {', '.join(f'{v:.3f}' for v in spec['null_p95_bits'])} (95th "
                     f"percentile); the excess is at most {max(excess):.1%} of the stream entropy.")
    if load:
        parts = [f"{name}: load entropy {model['final_load']['load_entropy_bits']:.2f} of "
                 f"{model['final_load']['load_ceiling_bits']:.2f} bits, busiest unit "
                 f"{model['final_load']['busiest_unit_share']:.1%}, accuracy {model['metrics']['accuracy']:.3f}"
                 for name, model in load["models"].items()]
        lines.append("Rest (notebook 03, same model): " + "; ".join(parts) + ".")
    return "\n".join(lines)


def render_blocks(results: Path) -> dict[str, str]:
    """Every block the result files in ``results`` render (reads only)."""
    blocks = {}
    for path in sorted(results.glob("compare-*.json")):  # compare-<experiment>-<budget>
        summary = json.loads(path.read_text())
        if not summary.get("rows"):
            continue
        if summary.get("experiment") == "ablation":
            blocks[f"ablation-{summary['budget']}"] = ablation_table(summary)
        else:
            blocks[path.stem] = compare_table(summary)
            blocks[f"{path.stem}-brief"] = compare_table(summary, brief=True)
            for focus in ("seeking", "inverted"):  # block standings-<focus>-<experiment>-<budget>
                if any(r["variant"] == focus for r in summary["rows"]):
                    blocks[f"standings-{focus}-{path.stem.removeprefix('compare-')}"] = standings_table(summary, focus)
    for path in sorted((results / "v1").glob("compare-*.json")):  # protocol v1, as it ran
        blocks[f"v1-{path.stem.split('-', 1)[1]}"] = v1_table(json.loads(path.read_text()))
    for path in sorted(results.glob("system2-*.json")):  # block system2-<budget>, system2-kinship-<budget>
        if path.stem.startswith("system2-kinship-"):
            from workbench.symbolic.kinship import kinship_table

            blocks[path.stem] = kinship_table(json.loads(path.read_text()))
            blocks[f"{path.stem}-brief"] = kinship_table(json.loads(path.read_text()), brief=True)
        elif path.stem.startswith("system2-metaconcepts-"):
            from workbench.symbolic.metaconcepts import metaconcepts_table

            blocks[path.stem] = metaconcepts_table(json.loads(path.read_text()))
            blocks[f"{path.stem}-brief"] = metaconcepts_table(json.loads(path.read_text()), brief=True)
        else:
            blocks[path.stem] = system2_table(json.loads(path.read_text()))
    units = results / "notebooks" / "02_multistream.json"  # block notebook-multistream
    if units.is_file():
        load = results / "notebooks" / "03_seeking_load.json"
        blocks["notebook-multistream"] = notebook_multistream_table(
            json.loads(units.read_text()), json.loads(load.read_text()) if load.is_file() else None)
    from workbench.bench.tables import long_context_markdown, scaling_markdown

    for path in sorted(results.glob("scaling-*.json")):  # block scaling-<device>, e.g. scaling-cpu-2threads
        blocks[path.stem] = scaling_markdown(json.loads(path.read_text()))
    for path in sorted(results.glob("long-context-*.json")):  # long-context-<device>[-bf16]
        blocks[path.stem] = long_context_markdown(json.loads(path.read_text()))
    from workbench.bench.memory_profile import memory_markdown

    for path in sorted(results.glob("memory-profile-*.json")):  # memory-profile-<device>: peak live MiB by op
        blocks[path.stem] = memory_markdown(json.loads(path.read_text()))
    from workbench.bench.decode_pair import decode_markdown

    for path in sorted(results.glob("decode-side-by-side-*.json")):  # decode-side-by-side-<device>[-n<n>][-batch<b>]
        blocks[path.stem] = decode_markdown(json.loads(path.read_text()))
    from workbench.export.bench import edge_markdown

    for path in sorted(results.glob("edge-*.json")):  # block edge-<device>: exported vs eager, per token
        data = json.loads(path.read_text())
        if data.get("kind") == "edge":
            blocks[path.stem] = edge_markdown(data)
    return blocks


def orphan_markers(path: Path, blocks: dict[str, str]) -> list[str]:
    """Blocks marked in ``path`` that no result renders (a results directory moved or renamed):
    left as they are, so ``workbench report`` names them rather than let stale numbers stand."""
    return [name for name in re.findall(r"<!-- report:(\S+) -->", path.read_text()) if name not in blocks]


def update_markdown(path: Path, blocks: dict[str, str]) -> list[str]:
    """Replace every known block in ``path``; return the names replaced."""
    text = path.read_text()
    replaced = []
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- report:{re.escape(name)} -->\n).*?(<!-- /report:{re.escape(name)} -->)", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
            replaced.append(name)
    path.write_text(text)
    return replaced
