"""Markdown tables from ``results/*.json`` - the only way numbers reach README and papers.

``workbench report`` rewrites the blocks between ``<!-- report:NAME -->`` and
``<!-- /report:NAME -->`` in the given markdown files, so no number is copied by hand.
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


def compare_table(summary: dict[str, Any]) -> str:
    """One row per (task config, metric); one column per mixer; seeds and steps shown."""
    mixers = list(dict.fromkeys(row["mixer"] for row in summary["rows"]))
    by_key = {(row["label"], row["mixer"]): row for row in summary["rows"]}
    labels = list(dict.fromkeys(row["label"] for row in summary["rows"]))
    lines = ["| task | metric | " + " | ".join(mixers) + " |", "|---|---|" + "---|" * len(mixers)]
    for label in labels:
        names = list(dict.fromkeys(n for m in mixers for n in by_key.get((label, m), {}).get("metrics", {})))
        for name in names:
            cells = []
            for mixer in mixers:
                row = by_key.get((label, mixer))
                cells.append(_cell(row["metrics"].get(name)) if row else "-")
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
        steps = []
        for mixer in mixers:
            row = by_key.get((label, mixer))
            steps.append(f"{row['steps']['mean']:.0f} ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})" if row else "-")
        lines.append(f"| {label} | steps (seeds) | " + " | ".join(steps) + " |")
    # Parameters and speed from one task config that every mixer ran (char-LM first), so the
    # columns compare like with like; with none in common each cell names its own config.
    common = [label for label in labels if all((label, m) in by_key for m in mixers)]
    shared = next((label for label in common if label.startswith("charlm")), common[0] if common else None)
    params, speed = [], []
    for mixer in mixers:
        if shared:
            row, note = by_key[(shared, mixer)], ""
        else:
            row = next(r for r in summary["rows"] if r["mixer"] == mixer)
            note = f" ({row['label']})"
        params.append(f"{row['parameters']['mixer']:,} / {row['parameters']['total']:,}{note}")
        speed.append(f"{row['tokens_per_s']['mean']:,.0f}{note}")
    where = f" ({shared})" if shared else ""
    lines.append(f"| all | parameters: mixer / total{where} | " + " | ".join(params) + " |")
    lines.append(f"| all | train tokens/s{where} | " + " | ".join(speed) + " |")
    devices = sorted({r["device"] for r in summary["rows"]})
    lines.append("")
    lines.append(f"Budget `{summary['budget']}`; measured on: {', '.join(devices)}.")
    return "\n".join(lines)


def _against_defaults(results: Path, name: str, shown, base: Path | None = None) -> dict[str, str]:
    """Blocks ``<name>-<budget>``: the rows of ``results/<name>`` (passed through ``shown``) set
    against the default inverted and transformer rows of the same labels: the main table's, or
    those of ``base`` (a former default's directory, for experiments run beside it)."""
    from workbench.compare import aggregate

    blocks = {}
    for budget_dir in sorted((results / name / "runs").glob("*")):
        budget = budget_dir.name
        summary, main = aggregate(results / name, budget), results / f"compare-{budget}.json"
        if not (summary["rows"] and main.is_file()):
            continue
        labels = {row["label"] for row in summary["rows"]}
        rows = json.loads(main.read_text())["rows"]
        if base is not None:  # that default's rows (and its transformer runs, where a pair moved with it)
            own = aggregate(base, budget)["rows"]
            have = {(r["label"], r["mixer"]) for r in own}
            rows = own + [r for r in rows if r["mixer"] == "transformer" and (r["label"], r["mixer"]) not in have]
        defaults = [row for row in rows if row["label"] in labels and row["mixer"] in ("inverted", "transformer")]
        blocks[f"{name.replace('/', '-')}-{budget}"] = ablation_table(
            {**summary, "rows": defaults + shown(summary["rows"])},
            default_name=None if base is None else f"former default: {base.name}")
    return blocks


def former_default_blocks(results: Path) -> dict[str, str]:
    """Each former default of the inverted mixer, ``results/former-defaults/<name>``: its runs
    (moved there unchanged when the default changed; see its README) against today's default,
    block ``former-default-<name>-<budget>``; and the design experiments run beside it
    (``<name>/experiments``), against it, block ``experiments-<name>-<budget>``."""
    blocks = {}
    for epoch in sorted(p for p in (results / "former-defaults").glob("*") if p.is_dir()):
        label = f"former default: {epoch.name}"
        blocks.update({f"former-default-{epoch.name}-{key.rsplit('-', 1)[1]}": body for key, body in _against_defaults(
            results, f"former-defaults/{epoch.name}",
            lambda rows, label=label: [{**row, "mixer": label} for row in rows if row["mixer"] == "inverted"]).items()})
        blocks.update({f"experiments-{epoch.name}-{key.rsplit('-', 1)[1]}": body for key, body in _against_defaults(
            results, f"former-defaults/{epoch.name}/experiments",
            lambda rows: [row for row in rows if row["mixer"] not in ("inverted", "transformer")], base=epoch).items()})
    return blocks


def ablation_table(summary: dict[str, Any], default_name: str | None = None) -> str:
    """One row per variant of the ablation set, one column per (task, metric), change vs the default
    (the rows of mixer ``inverted``, shown as ``default_name`` when that is a former default)."""
    from workbench.compare import ABLATIONS, ALL_TASKS, protocol

    names = {spec: name for name, spec in ABLATIONS.items()}
    if default_name:
        names["inverted"] = default_name
    by_key = {(row["label"], row["mixer"]): row for row in summary["rows"]}
    order = [spec.label for task in ALL_TASKS for spec in protocol(task, summary["budget"])]
    labels = sorted(dict.fromkeys(row["label"] for row in summary["rows"]),
                    key=lambda label: order.index(label) if label in order else len(order))
    columns = [(label, metric) for label in labels
               for metric in next(r for r in summary["rows"] if r["label"] == label)["metrics"] if "@" not in metric]
    mixers = [spec for spec in ABLATIONS.values() if any(m == spec for _, m in by_key)]
    mixers += [m for m in dict.fromkeys(m for _, m in by_key) if m not in mixers]
    lines = ["| variant | mixer params | " + " | ".join(f"{label} {metric}" for label, metric in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for mixer in mixers:
        cells = []
        for label, metric in columns:
            row, base = by_key.get((label, mixer)), by_key.get((label, "inverted"))
            stat = row["metrics"].get(metric) if row else None
            text = _cell(stat)
            if stat and base and mixer != "inverted" and metric in base["metrics"]:
                text += f" ({stat['mean'] - base['metrics'][metric]['mean']:+.3f})"
            cells.append(text)
        any_row = next(r for (_, m), r in by_key.items() if m == mixer)
        lines.append(f"| {names.get(mixer, mixer)} | {any_row['parameters']['mixer']:,} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seeds"] for r in summary["rows"]})
    devices = sorted({r["device"] for r in summary["rows"]})
    lines += ["", f"Budget `{summary['budget']}`, seeds per cell: {', '.join(map(str, seeds))}; in brackets the change "
              f"from the default inverted mixer (for bpc lower is better); measured on: {', '.join(devices)}."]
    return "\n".join(lines)


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


def render_blocks(results: Path) -> dict[str, str]:
    """Re-aggregate every budget's run files, then render one table per budget."""
    from workbench.compare import aggregate

    for budget_dir in sorted((results / "runs").glob("*")):
        if budget_dir.is_dir() and budget_dir.name in ("smoke", "demo", "full"):
            aggregate(results, budget_dir.name)
    blocks = {}
    for path in sorted(results.glob("compare-*.json")):
        summary = json.loads(path.read_text())
        if summary["rows"]:
            blocks[f"compare-{summary['budget']}"] = compare_table(summary)
    for path in sorted(results.glob("system2-*.json")):  # block system2-<budget>
        blocks[path.stem] = system2_table(json.loads(path.read_text()))
    ablation = results / "ablation"
    for budget_dir in sorted((ablation / "runs").glob("*")):  # block ablation-<budget>
        summary = aggregate(ablation, budget_dir.name)
        if summary["rows"]:
            blocks[f"ablation-{budget_dir.name}"] = ablation_table(summary)
    # Design experiments (variants run at a protocol budget, beside the default): block
    # experiments-<budget>, each variant against the default's cells of the same labels.
    blocks.update(_against_defaults(results, "experiments", lambda rows: rows))
    # Defaults that changed: the former defaults' runs and the experiments run beside them.
    blocks.update(former_default_blocks(results))
    from workbench.bench.scaling import long_context_markdown, scaling_markdown

    for path in sorted(results.glob("scaling-*.json")):  # block scaling-<device>, e.g. scaling-cpu-2threads
        blocks[path.stem] = scaling_markdown(json.loads(path.read_text()))
    for path in sorted(results.glob("long-context-*.json")):  # long-context-<device>[-bf16]
        blocks[path.stem] = long_context_markdown(json.loads(path.read_text()))
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
