"""Where a block's peak memory goes: ``workbench bench memory`` -> ``results/memory-profile-<device>.json``.

The scaling benchmark's peak memory is the process's peak RSS: what the C allocator holds, which
also moves with heap fragmentation (tens of MiB between runs of the same code). This counts the
tensors themselves: torch.profiler's allocation records (``profile_memory``) of one training step
(forward + backward of ``mean(y^2)`` + the mixer's aux loss, as in ``phases.phase_train``) and of one
prefill (``no_grad`` forward, eval mode), each after an unprofiled warm-up, summed in time order.
Reported: the peak of the live bytes above the step's start, and the tensors alive at that peak
grouped by the op that allocated them (during backward: what the forward saved, and the gradients
being made). Deterministic: the same code gives the same bytes whatever the machine's load.

The inverted mixer is measured twice, as it runs and under ``workbench.kernels.recompute.plain_forms()``
(its memory-saving forms off: what it kept before them), side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from workbench.bench.common import build_block, device_slug, git_commit, machine_description, write_json

SCHEMA = 1
# Allocation plumbing: an allocation is named by the first op above these.
_PLUMBING = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resize_", "aten::to",
             "aten::_to_copy", "aten::new_empty", "aten::new_empty_strided", "aten::zeros", "aten::zero_"}
METHOD = ("torch.profiler allocation records (profile_memory=True, CPU) of one step after an unprofiled warm-up: "
          "live bytes summed in time order; peak above the step's start; tensors alive at the peak grouped by "
          "the op that allocated them (an op chain, innermost first)")


def _op_name(node) -> str:
    """``op < caller < caller``: the ops above an allocation, allocator plumbing skipped."""
    names, parent = [], node.parent
    while parent is not None and len(names) < 3:
        name = parent.name.replace("autograd::engine::evaluate_function: ", "")
        if (name not in _PLUMBING or names) and (not names or names[-1] != name):
            names.append(name)
        parent = parent.parent
    return " < ".join(names) or "?"


def live_peak(fn) -> dict[str, Any]:
    """Run ``fn`` once under the profiler: the peak of live tensor bytes above the start, and what was alive then."""
    import torch
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    allocations = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.ptr, node))
        stack.extend(node.children)
    allocations.sort(key=lambda a: a[0])
    live: dict[int, tuple[int, Any]] = {}
    current = peak = 0
    at_peak: dict[int, tuple[int, Any]] = {}
    for _, size, ptr, node in allocations:
        current += size
        if size > 0:
            live[ptr] = (size, node)
        else:
            live.pop(ptr, None)  # a block freed that the step did not allocate lowers the sum: it was held before
        if current > peak:
            peak, at_peak = current, dict(live)
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for size, node in at_peak.values():
        group = groups[_op_name(node)]
        group[0] += size
        group[1] += 1
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])
    del torch
    return {"peak_live_bytes": peak, "peak_live_mib": round(peak / 2**20, 1),
            "at_peak": [{"op": op, "mib": round(size / 2**20, 2), "tensors": count}
                        for op, (size, count) in ranked if size >= 2**18]}  # fmt: skip


def profile_point(mixer: str, n: int, phase: str, *, d_model: int = 128, mlp_ratio: int = 4,
                  tokens_per_batch: int = 65536, plain: bool = False, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """``live_peak`` of one phase (``train`` or ``prefill``) of one block at length n (batch = tokens_per_batch // n)."""
    import torch

    from workbench.kernels.recompute import plain_forms

    torch.manual_seed(seed)
    block = build_block(mixer, d_model, mlp_ratio, {})
    batch = max(1, tokens_per_batch // n)
    x = torch.randn(batch, n, d_model)

    def train() -> None:
        y = block(x)
        loss = y.float().square().mean()
        aux = getattr(block.mixer, "aux_loss", None)
        (loss if aux is None else loss + aux).backward()

    def prefill() -> None:
        with torch.no_grad():
            block(x)

    step = {"train": train, "prefill": prefill}[phase]
    block.train(phase == "train")
    with plain_forms() if plain else contextlib.nullcontext():
        step()  # warm-up: lazy initialisations and the gradients' first allocation are not the step's
        block.zero_grad(set_to_none=True)
        result = live_peak(step)
    block.zero_grad(set_to_none=True)
    return {"mixer": mixer, "variant": "plain_forms" if plain else "default", "n": n, "batch": batch,
            "phase": phase, **result}  # fmt: skip


def time_inverted_forms(n: int, rounds: int, *, d_model: int = 128, mlp_ratio: int = 4,
                        tokens_per_batch: int = 65536) -> dict[str, Any]:  # fmt: skip
    """The price of the memory-saving forms: one inverted block's training step with them and under
    ``plain_forms()``, alternating in one process (``rounds`` each, after a warm-up of both)."""
    import statistics

    import torch

    from workbench.kernels.recompute import plain_forms

    torch.manual_seed(0)
    block = build_block("inverted", d_model, mlp_ratio, {}).train()
    x = torch.randn(max(1, tokens_per_batch // n), n, d_model)

    def step() -> float:
        block.zero_grad(set_to_none=True)
        began = time.perf_counter()
        y = block(x)
        (y.square().mean() + block.mixer.aux_loss).backward()
        return time.perf_counter() - began

    times: dict[str, list[float]] = {"default": [], "plain_forms": []}
    for r in range(rounds + 1):
        for variant in ("default", "plain_forms") if r % 2 else ("plain_forms", "default"):
            with plain_forms() if variant == "plain_forms" else contextlib.nullcontext():
                elapsed = step()
            if r:  # round 0 warms both up
                times[variant].append(elapsed)
    ratios = [a / b for a, b in zip(times["default"], times["plain_forms"])]
    return {"n": n, "rounds": rounds, "median_s": {k: statistics.median(v) for k, v in times.items()},
            "times_s": times, "ratio_default_over_plain": {"median": statistics.median(ratios), "min": min(ratios),
                                                           "max": max(ratios)}}  # fmt: skip


def run_memory_profile(mixers: tuple[str, ...], lengths: tuple[int, ...], phases: tuple[str, ...], *,
                       d_model: int, mlp_ratio: int, tokens_per_batch: int, out: Path,
                       time_rounds: int = 0, note: str | None = None) -> dict[str, Any]:  # fmt: skip
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    jobs = [(m, n, p, plain) for n in lengths for p in phases for m in mixers
            for plain in ((False, True) if m == "inverted" else (False,))]  # fmt: skip
    result: dict[str, Any] = {
        "kind": "memory_profile", "schema": SCHEMA, "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device_slug("cpu", 1),
        "machine": machine_description(1), "method": METHOD,
        "settings": {"mixers": list(mixers), "lengths": list(lengths), "phases": list(phases), "d_model": d_model,
                     "mlp_ratio": mlp_ratio, "tokens_per_batch": tokens_per_batch, "dtype": "float32"},
        "unit": "one workbench.model.Block with today's defaults (as workbench bench scaling), random N(0,1) inputs",
        "note": note, "points": [],
    }  # fmt: skip
    path = out / f"memory-profile-{result['device']}.json"
    for mixer, n, phase, plain in tqdm(jobs, desc="memory profile", unit="point"):
        result["points"].append(profile_point(mixer, n, phase, d_model=d_model, mlp_ratio=mlp_ratio,
                                              tokens_per_batch=tokens_per_batch, plain=plain))  # fmt: skip
    if time_rounds and "inverted" in mixers:
        result["train_time_inverted_forms"] = [
            time_inverted_forms(n, time_rounds, d_model=d_model, mlp_ratio=mlp_ratio, tokens_per_batch=tokens_per_batch)
            for n in tqdm(lengths, desc="timing the forms", unit="n")]  # fmt: skip
    result["complete"] = True
    write_json(path, result)
    result["path"] = str(path)
    return result


def _peaks(result: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """(columns "phase n=N" in order met, {row "mixer[ (variant)]": {column: peak live MiB}})."""
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    columns: list[str] = []
    for p in result["points"]:
        column = f"{p['phase']} n={p['n']}"
        if column not in columns:
            columns.append(column)
        rows[p["mixer"] + ("" if p["variant"] == "default" else f" ({p['variant']})")][column] = p["peak_live_mib"]
    return columns, rows


def format_memory_table(result: dict[str, Any]) -> str:
    """Peak live MiB per (mixer, variant) row and (phase, n) column."""
    columns, rows = _peaks(result)
    width = max(len(r) for r in rows) + 2
    lines = ["peak live tensor MiB above the step's start", "".ljust(width) + "".join(c.rjust(16) for c in columns)]
    for name, values in rows.items():
        lines.append(name.ljust(width) + "".join(f"{values.get(c, float('nan')):16.1f}" for c in columns))
    return "\n".join(lines)


def memory_markdown(result: dict[str, Any]) -> str:
    """Peak live MiB per mixer and (phase, n), with the ratio to the transformer's at the same point (README, paper)."""
    columns, rows = _peaks(result)
    base = rows.get("transformer", {})
    lines = ["| mixer | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, values in rows.items():
        cells = []
        for column in columns:
            value = values.get(column)
            ratio = f" ({value / base[column]:.2f}x)" if value is not None and base.get(column) and name != "transformer" \
                else ""
            cells.append("-" if value is None else f"{value:,.0f}{ratio}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    settings = result["settings"]
    lines += ["", f"Peak live tensor MiB above the step's start (ratio to the transformer's), one block, d_model "
              f"{settings['d_model']}, {settings['tokens_per_batch']:,} tokens per batch, {settings['dtype']}; "
              f"{result.get('method', '')}. Commit {(result.get('git_commit') or 'not recorded')[:12]}, "
              f"{result.get('device')}."]
    if result.get("note"):
        lines.append(f"Note: {result['note']}")
    return "\n".join(lines)


def add_memory_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mixers", default="inverted,seeking,transformer", help="comma list, or 'all'")
    parser.add_argument("--lengths", default="256,1024,4096", help="comma list of sequence lengths")
    parser.add_argument("--phases", default="train,prefill", help="comma list of train, prefill")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--mlp-ratio", type=int, default=4)
    parser.add_argument("--tokens-per-batch", type=int, default=65536)
    parser.add_argument("--time-rounds", type=int, default=0,
                        help="also time the inverted training step with and without its memory-saving forms, "
                        "alternating, this many rounds per n (0: skip)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--note", default=None, help="free text stored in the JSON")


def run_memory_cli(args: argparse.Namespace) -> None:
    from workbench.config import ConfigError
    from workbench.mixers import MIXERS

    mixers = tuple(MIXERS) if args.mixers == "all" else tuple(m for m in args.mixers.split(",") if m)
    unknown = [m for m in mixers if m not in MIXERS]
    if unknown or not mixers:
        raise ConfigError(f"--mixers: unknown mixer(s) {unknown}; choose from {', '.join(sorted(MIXERS))}")
    phases = tuple(p for p in args.phases.split(",") if p)
    if not phases or any(p not in ("train", "prefill") for p in phases):
        raise ConfigError(f"--phases must be a comma list of train, prefill; got {args.phases!r}")
    try:
        lengths = tuple(int(v) for v in args.lengths.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--lengths must be comma-separated integers, got {args.lengths!r}") from None
    if args.time_rounds < 0:
        raise ConfigError(f"--time-rounds must be >= 0, got {args.time_rounds}")
    for name, value in (("lengths", min(lengths, default=0)), ("d-model", args.d_model),
                        ("mlp-ratio", args.mlp_ratio), ("tokens-per-batch", args.tokens_per_batch)):  # fmt: skip
        if value < 1:
            raise ConfigError(f"--{name} must be positive integers, got {value}")
    result = run_memory_profile(mixers, lengths, phases, d_model=args.d_model, mlp_ratio=args.mlp_ratio,
                                tokens_per_batch=args.tokens_per_batch, out=Path(args.out),
                                time_rounds=args.time_rounds, note=args.note)  # fmt: skip
    print(format_memory_table(result))
    for timing in result.get("train_time_inverted_forms", []):
        ratio = timing["ratio_default_over_plain"]
        print(f"inverted train step n={timing['n']}: with the memory-saving forms / plain = {ratio['median']:.3f} "
              f"[{ratio['min']:.3f}, {ratio['max']:.3f}] over {timing['rounds']} alternating rounds")
    print(f"wrote {result['path']}")
