"""What a ``workbench bench edge`` run means: its caveats, the issue's targets checked, the README block.

Pure functions of the result dictionary (``results/edge-<device>.json``), apart from the run itself
(:mod:`workbench.export.bench`), so that ``workbench report`` renders the block without running anything.
"""

from __future__ import annotations

from typing import Any


def caveats(result: dict[str, Any]) -> list[str]:
    """What a reader must know before reading the numbers of this run."""
    notes = ["The transformer's KV cache is a graph input that the step concatenates and returns (a copy of the "
             "whole cache per token, as the eager step's torch.cat), and its attention transposes the key cache for "
             "q K^T (a second copy); a runtime with a preallocated, pre-transposed cache updated in place would copy "
             "less, but would still read the whole cache per token."]
    m = result["machine"]
    loads = [x for x in (m.get("load_average_1min_start"), m.get("load_average_1min_end")) if x is not None]
    if loads and max(loads) > (m.get("cpu_count") or 1):
        notes.append(f"The machine was shared (1-minute load average up to {max(loads)} on {m.get('cpu_count')} cores): "
                     "multi-threaded eager PyTorch suffers most (OpenMP threads wait for descheduled siblings), so "
                     "its 2-thread cells, and the speed-ups against them, are inflated; the 1-thread cells are the "
                     "reference.")
    return notes


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's 'done when', checked against the run (met / missed with the numbers)."""
    checks: dict[str, Any] = {}
    cells = {(c["runtime"], c["threads"]): c for c in result["per_token"] if c.get("status") == "ok"}
    for threads in result["settings"]["threads"]:
        eager, onnx = cells.get(("eager", threads)), cells.get(("onnx-fp32", threads))
        if eager and onnx:
            ratio = eager["median_us"] / onnx["median_us"]
            checks[f"onnx_fp32_speedup_vs_eager_{threads}thread"] = {"value": ratio, "target": ">= 5", "met": ratio >= 5}
    by = {(c["model"], c["runtime"], c["threads"], p["context"]): p for c in result["by_context"] if c.get("status") == "ok"
          for p in c["points"]}
    paired = {(c["threads"], p["context"]): p for c in result.get("paired", []) if c.get("status") == "ok"
              for p in c["points"]}
    for threads in result["settings"]["threads"]:
        rows = []
        for n in result["settings"]["contexts"]:
            pair = paired.get((threads, n))
            if pair:  # same process, same load: the comparison this target reads
                inv, tr, method = pair["inverted"], pair["transformer"], "paired"
            else:
                inv, tr = by.get(("inverted", "onnx-fp32", threads, n)), by.get(("transformer", "onnx-fp32", threads, n))
                method = "separate processes"
            if n >= 256 and inv and tr:
                rows.append({"context": n, "inverted_us": inv["median_us"], "transformer_us": tr["median_us"],
                             "faster": inv["median_us"] < tr["median_us"], "method": method,
                             "inverted_faster_blocks": pair.get("inverted_faster_blocks") if pair else None})
        if rows:
            checks[f"onnx_inverted_faster_than_onnx_transformer_{threads}thread"] = {
                "points": rows, "target": "faster at every context >= 256" + (", paired" if paired else ""),
                "met": all(r["faster"] for r in rows)}
    bpc = result.get("bpc", {})
    if "onnx-int8_minus_pytorch" in bpc:
        checks["int8_bpc_cost"] = {"value": bpc["onnx-int8_minus_pytorch"], "target": "<= 0.02",
                                   "met": bpc["onnx-int8_minus_pytorch"] <= 0.02}
    return checks


def _fmt_n(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def edge_markdown(result: dict[str, Any]) -> str:
    """The README block ``edge-<device>``: per-token table, context table, BPC, targets."""
    lines = ["| runtime | threads | µs / token (median) | vs eager | peak RSS MiB (process) | torch imported |",
             "|---|---|---|---|---|---|"]
    eager = {c["threads"]: c for c in result["per_token"] if c["runtime"] == "eager" and c.get("status") == "ok"}
    for cell in result["per_token"]:
        if cell.get("status") != "ok":
            lines.append(f"| {cell['runtime']} | {cell['threads']} | {cell.get('reason', '-')} | - | - | - |")
            continue
        base = eager.get(cell["threads"])
        ratio = f"{base['median_us'] / cell['median_us']:.1f}x" if base else "-"
        lines.append(f"| {cell['runtime']} | {cell['threads']} | {cell['median_us']:,.0f} | {ratio} | "
                     f"{_mib(cell.get('peak_rss_bytes'))} | {'yes' if cell.get('torch_imported') else 'no'} |")
    contexts = result["settings"]["contexts"]
    lines += ["", "| model | runtime | threads | " + " | ".join(f"n={_fmt_n(n)}" for n in contexts) + " | state at "
              f"n={_fmt_n(contexts[-1])} |", "|---|---|---|" + "---|" * (len(contexts) + 1)]
    for cell in result["by_context"]:
        points = {p["context"]: p for p in cell.get("points", [])}
        cells = [f"{points[n]['median_us']:,.0f} µs" if n in points else "-" for n in contexts]
        last = points.get(contexts[-1])
        size = f"{last['state_bytes'] / 2**20:.2f} MiB" if last else cell.get("reason", "-")
        lines.append(f"| {cell['model']} | {cell['runtime']} | {cell['threads']} | " + " | ".join(cells) + f" | {size} |")
    pairs = [c for c in result.get("paired", []) if c.get("status") == "ok"]
    if pairs:
        lines += ["", "Paired (both fp32 graphs in one process, stepping in turns; median µs per token, inverted vs "
                  "transformer, and the share of 25-step blocks in which the inverted one was faster): " + "; ".join(
                      f"{c['threads']} thread{'s' if c['threads'] > 1 else ''}: " + ", ".join(
                          f"n={_fmt_n(p['context'])} {p['inverted']['median_us']:,.0f} vs {p['transformer']['median_us']:,.0f} "
                          f"({100 * p['inverted_faster_blocks']:.0f}%)" for p in c["points"]) for c in pairs) + "."]
    bpc = result.get("bpc") or {}
    if "pytorch" in bpc:
        lines += ["", f"Validation BPC ({bpc['windows']} windows of {bpc['context']}): PyTorch {bpc['pytorch']:.4f}, "
                  f"ONNX fp32 {bpc['onnx-fp32']:.4f} ({bpc['onnx-fp32_minus_pytorch']:+.1e}), ONNX int8 "
                  f"{bpc['onnx-int8']:.4f} ({bpc['onnx-int8_minus_pytorch']:+.4f})."]
    profiles = [c for c in result.get("profile", []) if c.get("status") == "ok"]
    if profiles:
        parts = []
        for cell in profiles:
            total = sum(v["us_per_step"] for v in cell["per_op"].values()) or 1.0
            top = ", ".join(f"{op} {100 * v['us_per_step'] / total:.0f}%" for op, v in list(cell["per_op"].items())[:4])
            parts.append(f"{cell['model']} {cell['nodes_per_step']:.0f} nodes ({top})")
        lines += ["", f"Graph profile (onnxruntime profiler, fp32, 1 thread, n={_fmt_n(profiles[0]['context'])}; nodes per "
                  "step after onnxruntime's optimizations, share of kernel time by operator): " + "; ".join(parts) + "."]
    verdicts = []
    for name, check in result.get("targets", {}).items():
        value = f"{check['value']:.3g}" if "value" in check else ", ".join(
            f"{_fmt_n(p['context'])}: {p['inverted_us']:,.0f} vs {p['transformer_us']:,.0f} µs" for p in check["points"])
        verdicts.append(f"{name} ({check['target']}): {value} -> {'MET' if check['met'] else 'MISSED'}")
    if verdicts:
        lines += ["", "Targets: " + "; ".join(verdicts) + "."]
    for note in result.get("caveats", []):
        lines += ["", f"Note: {note}"]
    m = result["machine"]
    lines += ["", f"Measured on {result['device']} ({m['processor']}, {m['cpu_count']} cores, shared: load average "
              f"{m.get('load_average_1min_start')} at the start, {m.get('load_average_1min_end')} at the end), "
              f"{result['created']}, commit {result.get('git_commit', '?')[:12]}; `make bench-edge`. Ratios within one run only."]
    return "\n".join(lines)
