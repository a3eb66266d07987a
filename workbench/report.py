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
    params, speed = [], []
    for mixer in mixers:
        row = next((r for r in summary["rows"] if r["mixer"] == mixer and r["label"].startswith("charlm")), None)
        row = row or next(r for r in summary["rows"] if r["mixer"] == mixer)
        params.append(f"{row['parameters']['mixer']:,} / {row['parameters']['total']:,}")
        speed.append(f"{row['tokens_per_s']['mean']:,.0f}")
    lines.append("| all | parameters: mixer / total (" + row["label"] + ") | " + " | ".join(params) + " |")
    lines.append(f"| all | train tokens/s ({row['label']}) | " + " | ".join(speed) + " |")
    devices = sorted({r["device"] for r in summary["rows"]})
    lines.append("")
    lines.append(f"Budget `{summary['budget']}`; measured on: {', '.join(devices)}.")
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
    from workbench.bench.scaling import long_context_markdown, scaling_markdown

    for path in sorted(results.glob("scaling-*.json")):  # block scaling-<device>, e.g. scaling-cpu-2threads
        blocks[path.stem] = scaling_markdown(json.loads(path.read_text()))
    for path in sorted(results.glob("long-context-*.json")):  # long-context-<device>[-bf16]
        blocks[path.stem] = long_context_markdown(json.loads(path.read_text()))
    return blocks


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
