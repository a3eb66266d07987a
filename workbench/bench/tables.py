"""Tables of the scaling and long-context results: a rich Table for the terminal, markdown for README/notebooks.

``workbench report`` renders ``scaling_markdown`` into the block ``scaling-<device>`` and
``long_context_markdown`` into ``long-context-<device>[-bf16]``.
"""

from __future__ import annotations

from typing import Any

from workbench.bench.supervisor import skip_kind

COLUMNS = ["mixer", "n", "batch", "train ms/step", "train peak MiB", "prefill tok/s", "prefill peak MiB",
           "decode µs/tok", "fused decode µs/tok", "fused batch tok/s", "state KiB", "train % peak",
           "prefill % peak", "fused decode % peak"]
ENERGY_COLUMNS = ["mixer", "n", "train µJ/tok (t×P)", "train µJ/tok (FLOP+byte)", "fused decode µJ/tok (t×P)",
                  "FLOPs/tok train", "FLOPs/tok decode", "FLOP source"]


def _cell(res: dict[str, Any] | None, key: str, scale: float = 1.0, fmt: str = "{:,.3g}") -> str:
    if not res:
        return "-"
    if res.get("status") != "ok":
        if res.get("status") == "skipped":
            kind = skip_kind(res)
            return f"skipped ({kind})" if kind else "skipped"
        return res.get("status", "-")
    value = res.get(key)
    return "-" if value is None else fmt.format(value * scale)


def _pct(point: dict[str, Any], phase: str) -> str:
    value = ((point.get("roofline") or {}).get(phase) or {}).get("fraction_of_peak")
    return "-" if value is None else f"{100 * value:.2g}"


def _sorted_points(result: dict[str, Any]) -> list[dict[str, Any]]:
    order = {m: i for i, m in enumerate(result["settings"]["mixers"])}
    return sorted(result["points"], key=lambda p: (order.get(p["mixer"], 99), p["n"]))


def _rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for p in _sorted_points(result):
        fused = p.get("decode_fused")
        rows.append([
            p["mixer"], f"{p['n']:,}", f"{p['batch']:,}",
            _cell(p.get("train"), "median_s", 1e3),
            _cell(p.get("train"), "peak_mem_bytes", 2**-20, "{:,.0f}"),
            _cell(p.get("prefill"), "tokens_per_s", 1.0, "{:,.0f}"),
            _cell(p.get("prefill"), "peak_mem_bytes", 2**-20, "{:,.0f}"),
            _cell(p.get("decode"), "median_s", 1e6, "{:,.0f}"),
            _cell(fused, "median_s", 1e6, "{:,.0f}"),
            _cell(fused["batched"] if (fused or {}).get("batched") else fused,
                  "tokens_per_s", 1.0, "{:,.0f}"),
            _cell(p.get("decode"), "state_bytes", 2**-10, "{:,.0f}"),
            _pct(p, "train"), _pct(p, "prefill"), _pct(p, "decode_fused"),
        ])
    return rows


def _energy_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for p in _sorted_points(result):
        energy = p.get("energy") or {}
        train, fused = energy.get("train") or {}, energy.get("decode_fused") or {}
        costs = p.get("costs") or {}

        def j(value):
            return "-" if value is None else f"{value * 1e6:.3g}"

        def f(value):
            return "-" if value is None else f"{value:,.3g}"

        rows.append([p["mixer"], f"{p['n']:,}", j(train.get("time_x_power_j_per_token")),
                     j(train.get("analytic_j_per_token")), j(fused.get("time_x_power_j_per_token")),
                     f((costs.get("train") or {}).get("flops_per_token")),
                     f((costs.get("decode") or {}).get("flops_per_token")),
                     "formula" if str((costs.get("train") or {}).get("flops_source", "")).startswith("analytic")
                     else "FlopCounterMode"])
    return rows


def _fmt_cross(cross: dict[str, Any]) -> str:
    if cross.get("n") is not None:
        return f"n ≈ {cross['n']:,.0f}"
    if cross.get("n_extrapolated") is not None:
        return f"n ≈ {cross['n_extrapolated']:,.0f} (EXTRAPOLATED)"
    return cross.get("method", "-")


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    settings = result["settings"]
    for mixer, fits in result.get("slopes", {}).items():
        parts = []
        for name in ("train_s_per_sequence", "train_peak_mem", "prefill_peak_mem", "decode_s_per_token",
                     "decode_fused_s_per_token"):
            slope = fits.get(name, {}).get("slope")
            parts.append(f"{name} {slope:.2f}" if slope is not None else f"{name} -")
        lines.append(f"log-log slopes, {mixer} (n >= {settings['min_fit_n']}): " + ", ".join(parts))
    crossover = result.get("crossover") or {}
    if crossover and all(isinstance(c, dict) and "phase" in c for c in crossover.values()):
        crossover = {"transformer": crossover}  # schema 1: one peer, keyed by phase
    for peer, phases in crossover.items():
        lines.append(f"inverted faster than {peer} from: " + "; ".join(f"{phase} {_fmt_cross(c)}"
                                                                        for phase, c in phases.items()))
    peak = result.get("peak_flops_per_s")
    if peak:
        lines.append(f"peak {peak / 1e9:,.1f} GFLOP/s measured in this run (largest of the float32 matmuls at the "
                     "start and the end); '% peak' = FLOPs executed (workbench.bench.costs) / time / peak")
    return lines


def format_scaling_table(result: dict[str, Any]):
    """A rich Table of the points; slopes, crossovers and the peak in the caption."""
    from rich.table import Table

    settings = result["settings"]
    title = (f"scaling - {result.get('device')} - d_model {settings['d_model']}, "
             f"{settings['tokens_per_batch']:,} tokens/batch, one Block")
    table = Table(title=title, caption="\n".join(summary_lines(result)))
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "mixer" else "right")
    for row in _rows(result):
        table.add_row(*row)
    return table


def _markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(r) + " |" for r in rows]


def scaling_markdown(result: dict[str, Any]) -> str:
    """The table in markdown, with slopes, crossovers, the roofline's peak and where the numbers came from."""
    settings, machine = result["settings"], result.get("machine", {})
    lines = _markdown_table(COLUMNS, _rows(result)) + [""]
    lines += [f"- {line}" for line in summary_lines(result)]
    load = (machine.get("load_average_start") or [None])[0], (machine.get("load_average_end") or [None])[0]
    lines.append(
        f"- device `{result.get('device')}` ({machine.get('cpu')}; torch {result.get('torch')}; commit "
        f"{(result.get('git_commit') or 'not recorded')[:12]}; {settings['threads']} thread(s); load average "
        f"{load[0]} at the start, {load[1]} at the end); {result.get('unit')}; repeats {settings['repeats']}; "
        f"time limit {settings['time_limit_s_per_phase']:g} s per phase; fused decode: "
        f"{settings.get('fused_backend')} at batch 1 and {settings.get('decode_batch')}.")
    lines += ["", "Energy per token, ESTIMATES (measured time x an assumed power; counted FLOPs/bytes x assumed J/FLOP "
              "and J/byte; the assumptions are in the JSON, `energy.device_figures`):", ""]
    lines += _markdown_table(ENERGY_COLUMNS, _energy_rows(result))
    if result.get("note"):
        lines.append(f"\n- Note: {result['note']}")
    return "\n".join(lines)


def long_context_markdown(result: dict[str, Any]) -> str:
    """The long recurrent run, one row per mixer (README, paper)."""
    settings = result["settings"]
    lines = ["| mixer | tokens | dtype | step | µs/token first / last window (min-max) | fitted change over run "
             "| state bytes (constant) | RSS growth first to last window | outputs finite | max abs output |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mixer, run in result.get("runs", {}).items():
        if run.get("status") != "ok":
            lines.append(f"| {mixer} | - | {settings.get('dtype')} | {run.get('status')}: "
                         f"{str(run.get('reason'))[:80]} | | | | | | |")
            continue
        s = run["summary"]
        us = [w["s_per_token"] * 1e6 for w in run["windows"]]
        lines.append(
            f"| {mixer} | {run['tokens_done']:,}{' (stopped early)' if run.get('stopped_early') else ''} "
            f"| {settings.get('dtype', 'float32')} | {'fused' if run['step'].startswith('fused') else 'plain'} "
            f"| {us[0]:,.0f} / {us[-1]:,.0f} ({min(us):,.0f}-{max(us):,.0f}) "
            f"| {100 * (s.get('s_per_token_fitted_change_over_run_relative') or 0):+.0f}% "
            f"| {s['state_bytes']:,} ({s['state_bytes_constant']}) "
            f"| {(s.get('rss_growth_first_to_last_window_bytes') or 0) / 2**20:,.2f} MiB "
            f"| {s.get('all_outputs_finite')} | {s.get('max_abs_output', float('nan')):.3g} |")
    load = (result.get("machine", {}).get("load_average_start") or [None])[0]
    lines += [
        "",
        f"- device `{result.get('device')}`, commit {(result.get('git_commit') or 'not recorded')[:12]}, "
        f"{settings['threads']} thread(s), load average {load} at the start, windows of "
        f"{settings['window_tokens']:,} tokens; {result.get('unit')}.",
    ]
    kv = next((r["summary"]["transformer_kv_cache_bytes_at_same_n_for_contrast"]
               for r in result.get("runs", {}).values() if r.get("status") == "ok"), None)
    if kv:
        lines.append(f"- a transformer's KV cache at the same length would hold {kv:,} bytes; largest state norms: "
                     + "; ".join(f"{m}: " + ", ".join(f"{k} {v:.3g}" for k, v in r["summary"]["max_state_norms"].items())
                                 for m, r in result["runs"].items() if r.get("status") == "ok") + ".")
    if result.get("note"):
        lines.append(f"- Note: {result['note']}")
    return "\n".join(lines)
