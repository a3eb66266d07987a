"""Fused decode side by side in one process: ``workbench bench decode`` -> ``results/decode-side-by-side-<device>[-n<n>][-batch<b>].json``.

The scaling benchmark times each mixer's fused step in its own process, minutes apart: on a shared
machine the load moves between them, and a few percent is within that noise. Here the fused steps
of several mixers (and the inverted one with its state returned as new tensors, not written in
place: ``FusedStep(state_in_place=False)``) are compiled in one process from the same context
states as the scaling benchmark (``phases.context_state``; capacity n + a margin for a KV cache),
then timed in alternating rounds: each round runs every variant, in a rotated order, for ``steps``
single steps (batch 1, or ``batch`` copies of the context) after 5 warm-up steps, and keeps its median. Reported per variant: the median
of the round medians and their spread; per round, each variant's time over the reference's (the
transformer), so a ratio compares two steps measured seconds apart under the same load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from workbench.bench.common import build_block, device_slug, git_commit, load_average, machine_description, write_json

SCHEMA = 1
WARMUP = 5


def _variants(mixers: tuple[str, ...]) -> list[tuple[str, str, bool]]:
    """(label, mixer, state written in place) for each mixer, plus the inverted one with its state copied."""
    out = [(m, m, True) for m in mixers]
    if "inverted" in mixers:
        out.append(("inverted (state copied)", "inverted", False))
    return out


def run_decode_pair(mixers: tuple[str, ...], n: int, rounds: int, steps: int, *, d_model: int = 128,
                    mlp_ratio: int = 4, backend: str = "aoti", out: Path = Path("results"),
                    reference: str = "transformer", options: dict[str, Any] | None = None,
                    batch: int = 1) -> dict[str, Any]:  # fmt: skip
    """Compile, check against the plain step, time in rounds, write the JSON (module docstring).

    ``options``: inductor options over ``workbench.fast.CPU_OPTIONS`` (the tests' quick compile)."""
    import torch
    from tqdm import tqdm

    from workbench.bench.phases import context_state, repeat_state
    from workbench.fast import FusedStep

    torch.set_num_threads(1)
    device = torch.device("cpu")
    start_load = load_average()
    fused: dict[str, tuple[Any, list]] = {}
    records: dict[str, dict[str, Any]] = {}
    for label, mixer, in_place in tqdm(_variants(mixers), desc="compiling", unit="step"):
        torch.manual_seed(0)
        block = build_block(mixer, d_model, mlp_ratio, {}).eval()
        spec = {"n": n, "d_model": d_model, "time_limit_s": float("inf"), "decode_state_max_n": 1024, "mixer": mixer}
        with torch.no_grad():
            state, source = context_state(block, spec, device, torch.float32, time.perf_counter())
            state = repeat_state(state, batch) if batch > 1 else state  # every sequence from the same context
            began = time.perf_counter()
            step = FusedStep(block, batch, backend=backend, capacity=n + 2 * (steps + WARMUP) + 2, options=options,
                             state_in_place=in_place)
            compile_s = time.perf_counter() - began
            flat = step.from_state(state)
            x = torch.randn(batch, d_model)
            error = float((block.step(x, state)[0] - step(x, flat)[0]).abs().max())
        fused[label] = (step, flat)
        records[label] = {"mixer": mixer, "state_in_place": in_place, "compile_s": compile_s, "state_source": source,
                          "max_abs_diff_vs_plain": error, "round_median_s": []}  # fmt: skip
    xs = torch.randn(steps + WARMUP, batch, d_model)
    labels = list(fused)
    with torch.no_grad():
        for r in tqdm(range(rounds), desc="rounds", unit="round"):
            for label in labels[r % len(labels):] + labels[: r % len(labels)]:  # rotated: no variant always first
                step, flat = fused[label]
                for i in range(WARMUP):
                    step(xs[i], flat)
                times = []
                for i in range(steps):
                    t = time.perf_counter()
                    step(xs[WARMUP + i], flat)
                    times.append(time.perf_counter() - t)
                records[label]["round_median_s"].append(statistics.median(times))
    for label, record in records.items():
        medians = record["round_median_s"]
        record |= {"median_us": statistics.median(medians) * 1e6, "min_round_us": min(medians) * 1e6,
                   "max_round_us": max(medians) * 1e6}  # fmt: skip
        if reference in records and label != reference:
            ratios = [a / b for a, b in zip(medians, records[reference]["round_median_s"])]
            record[f"ratio_vs_{reference}"] = {
                "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                "rounds_at_or_below": sum(v <= 1.0 for v in ratios), "rounds": len(ratios), "per_round": ratios}
    result = {
        "kind": "decode_side_by_side", "schema": SCHEMA, "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device_slug("cpu", 1), "machine": machine_description(1),
        "load_average_start": start_load, "load_average_end": load_average(),
        "settings": {"mixers": list(mixers), "n": n, "rounds": rounds, "steps_per_round": steps, "warmup": WARMUP,
                     "d_model": d_model, "mlp_ratio": mlp_ratio, "backend": backend, "threads": 1, "batch": batch,
                     "reference": reference},
        "method": __doc__.split("\n\n", 1)[1].strip().replace("\n", " "),
        "variants": records,
    }  # fmt: skip
    # n = 256 and batch 1 (make bench-decode's first case) keep the plain name; other cases name themselves.
    suffix = ("" if n == 256 else f"-n{n}") + ("" if batch == 1 else f"-batch{batch}")
    path = out / f"decode-side-by-side-{result['device']}{suffix}.json"
    write_json(path, result)
    result["path"] = str(path)
    return result


def format_decode_table(result: dict[str, Any]) -> str:
    ref = result["settings"]["reference"]
    lines = [f"fused decode, batch {result['settings']['batch']}, n = {result['settings']['n']}: median of {result['settings']['rounds']} round "
             f"medians (us), spread; ratio to {ref} per round (median [min, max], rounds <= 1)"]  # fmt: skip
    for label, r in result["variants"].items():
        ratio = r.get(f"ratio_vs_{ref}")
        text = "" if ratio is None else (f"   ratio {ratio['median']:.3f} [{ratio['min']:.3f}, {ratio['max']:.3f}], "
                                         f"{ratio['rounds_at_or_below']}/{ratio['rounds']} rounds <= 1")  # fmt: skip
        lines.append(f"{label:26s} {r['median_us']:7.1f} us  [{r['min_round_us']:.1f}, {r['max_round_us']:.1f}]{text}")
    return "\n".join(lines)


def decode_markdown(result: dict[str, Any]) -> str:
    """The report block ``decode-side-by-side-<device>[-n<n>][-batch<b>]``: one row per variant, fastest first."""
    settings, ref = result["settings"], result["settings"]["reference"]
    lines = [f"| mixer | us per step (median of {settings['rounds']} rounds) | spread of round medians | "
             f"ratio to {ref} (median [min, max]) | rounds at or below {ref} | max abs(fused - plain) |",
             "|---|---|---|---|---|---|"]
    for label, r in sorted(result["variants"].items(), key=lambda item: item[1]["median_us"]):
        ratio = r.get(f"ratio_vs_{ref}")
        ratio_text = "reference" if label == ref else (
            "-" if ratio is None else f"{ratio['median']:.2f} [{ratio['min']:.2f}, {ratio['max']:.2f}]")
        rounds = "-" if ratio is None else f"{ratio['rounds_at_or_below']}/{ratio['rounds']}"
        lines.append(f"| {label} | {r['median_us']:.1f} | {r['min_round_us']:.1f}-{r['max_round_us']:.1f} | "
                     f"{ratio_text} | {rounds} | {r['max_abs_diff_vs_plain']:.1e} |")
    load = result.get("load_average_start")
    lines.append("")
    lines.append(f"One block (d_model {settings['d_model']}), fused step ({settings['backend']}), batch "
                 f"{settings['batch']}, a context of n = {settings['n']} tokens, {settings['steps_per_round']} steps "
                 f"per round, one thread, on {result['device']} ({result['machine'].get('cpu', '?')}, torch "
                 f"{result['machine'].get('torch', '?')}); rounds alternate between the mixers, so each "
                 f"ratio compares steps measured seconds apart under the same load"
                 + (f" (load average {load[0]:.1f} at the start)." if load else "."))
    return "\n".join(lines)


def add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mixers", default="all",
                        help="comma list with the reference (transformer) among them, or 'all' (every registered mixer)")
    parser.add_argument("--n", type=int, default=256, help="context length of the decoded state")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=64, help="timed steps per round and variant")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step (the same context repeated)")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--backend", default="aoti", choices=("aoti", "compile"))
    parser.add_argument("--out", default="results")


def run_decode_cli(args: argparse.Namespace) -> None:
    from workbench.config import ConfigError
    from workbench.mixers import MIXERS

    mixers = tuple(MIXERS) if args.mixers == "all" else tuple(m for m in args.mixers.split(",") if m)
    unknown = [m for m in mixers if m not in MIXERS]
    if unknown or not mixers:
        raise ConfigError(f"--mixers: unknown mixer(s) {unknown}; choose from {', '.join(sorted(MIXERS))}")
    for name in ("n", "rounds", "steps", "d_model", "batch"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    result = run_decode_pair(mixers, args.n, args.rounds, args.steps, d_model=args.d_model, backend=args.backend,
                             out=Path(args.out), batch=args.batch)  # fmt: skip
    print(format_decode_table(result))
    print(f"wrote {result['path']}")
