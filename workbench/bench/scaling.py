"""Scaling benchmark: time, memory, roofline and ESTIMATED energy of one block vs sequence length n.

``run_scaling`` measures every registered mixer (``workbench.mixers.MIXERS``, so a new mixer joins
by registering) side by side in one run, at the same d_model and the same tokens per batch
(batch = max(1, tokens_per_batch // n)): one ``workbench.model.Block`` (LayerNorm -> short conv
front end -> mixer -> residual, LayerNorm -> MLP -> residual) fed random N(0, 1) embeddings, no
token adapter, no head. Phases (``workbench.bench.phases``): ``train``, ``prefill``, plain
``decode`` and ``decode_fused`` (``workbench.fast``, batch 1 and a serving batch). Each (mixer, n)
point runs in its own supervised process (``workbench.bench.supervisor``): a phase past the time or
memory limit is recorded as skipped, with the reason, and not retried at larger n.

The same run measures the machine's peak FLOP/s with large matmuls at its start and its end
(``workbench.bench.roofline``) and reports each phase's achieved FLOP/s as a fraction of it, from
the FLOPs of the one cost model (``workbench.bench.costs``). Slopes and crossovers:
``workbench.bench.fits``; tables: ``workbench.bench.tables``; the million-token recurrent run of
every constant-state mixer: ``workbench.bench.long_context``.

Results go to ``<out>/scaling-<device>.json`` (rewritten after every point, ``complete`` false until
the end), with the commit, the threads, the machine and its load average at the start and the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from workbench.bench.common import (
    SCHEMA,
    build_block,
    default_device,
    default_threads,
    device_slug,
    finite,
    git_commit,
    load_average,
    machine_description,
    meminfo_bytes,
    mixer_options_used,
    write_json,
)
from workbench.bench.costs import LABEL as ENERGY_LABEL
from workbench.bench.costs import counted_costs, has_formula
from workbench.bench.energy import device_energy, energy_per_token
from workbench.bench.fits import find_crossover, fit_slopes
from workbench.bench.phases import PHASE_FUNCS, PHASES
from workbench.bench.roofline import measure_peak, roofline_fractions
from workbench.bench.supervisor import measure_point, skip_kind
from workbench.bench.tables import format_scaling_table

UNIT = (
    "one workbench.model.Block (LayerNorm -> short causal conv front end -> mixer -> residual, LayerNorm -> "
    "MLP(ratio r) -> residual) on random N(0,1) embeddings of width d_model; no token adapter, no head; float32"
)
METHODS = {
    "train": "forward + backward of mean(y^2) + mixer aux loss, training mode (the inverted mixer's "
    "training-only write surrogate included), no optimizer step; median of repeats after 1 warm-up",
    "prefill": "forward only, torch.no_grad(), eval mode (the parallel/chunked form); tokens/s = batch x n / median "
    "time; median of repeats after 1 warm-up",
    "decode": "plain Block.step at batch 1 with a context of n tokens, no_grad, eval mode; every timed step starts "
    "from the same state (the context stays n); median of decode_steps single steps after 5 warm-up steps. "
    "Constant-state mixers: stepped min(n, decode_state_max_n) random tokens, integer positions then set to n; "
    "transformer: KV cache of n random keys/values constructed directly",
    "decode_fused": "the same step fused by workbench.fast (torch.export + AOTInductor, or torch.compile; the "
    "transformer's cache pre-allocated to n + a margin, written in place of torch.cat; a mixer with "
    "fused_state_in_place (the inverted) has its whole constant state written in place, so its timed steps "
    "advance the context from n, at the same cost per step), at batch 1 and at batch "
    "decode_batch (every sequence one token per call; not run when that batch's state would pass "
    "decode_batch_max_state_bytes); compile time recorded apart; max |fused - plain| of "
    "the first step recorded",
    "memory_cpu": "peak RSS (Linux VmHWM, reset per phase via /proc/self/clear_refs) minus RSS at phase start, "
    "in a fresh process per point; includes inputs, activations, gradients, allocator workspace (fused decode: "
    "reset after compiling)",
    "memory_cuda": "torch.cuda.max_memory_allocated minus memory_allocated at phase start",
    "isolation": "each (mixer, n) point in its own process (forked from a forkserver that only imported torch); "
    "phases past the time limit or RSS limit are killed and recorded as skipped, and not retried at larger n",
    "roofline": "peak = best float32 torch.mm rate (square 1024-4096) measured in this run at its start and its "
    "end with the same threads; achieved = FLOPs executed per token (workbench.bench.costs; torch FlopCounterMode "
    "where a mixer has no formula) x tokens/s",
    "slopes": "numpy.polyfit of log(value) on log(n) over the measured points with n >= min_fit_n; time per "
    "batch at fixed tokens per batch, so per-sequence cost linear in n shows slope ~0 and quadratic ~1 "
    "(see train_s_per_sequence for the per-sequence slope)",
}


def _validate(lengths, mixers, phases, repeats, tokens_per_batch, decode_steps, time_limit_s) -> None:
    from workbench.mixers import MIXERS

    if not lengths or any(n <= 0 for n in lengths):
        raise ValueError(f"lengths must be positive integers, got {lengths!r}")
    unknown = [m for m in mixers if m not in MIXERS]
    if unknown:
        raise ValueError(f"unknown mixers {unknown}; choose from {sorted(MIXERS)}")
    bad = [p for p in phases if p not in PHASE_FUNCS]
    if bad:
        raise ValueError(f"unknown phases {bad}; choose from {list(PHASES)}")
    if repeats < 1 or tokens_per_batch < 1 or decode_steps < 1 or time_limit_s <= 0:
        raise ValueError("repeats, tokens_per_batch, decode_steps and time_limit_s must be positive")


def run_scaling(
    lengths: tuple[int, ...] = (256, 1024, 4096, 16384, 65536),
    mixers: tuple[str, ...] | None = None,
    d_model: int = 128,
    tokens_per_batch: int = 65536,
    repeats: int = 5,
    time_limit_s: float = 600.0,
    memory_limit_gb: float | None = None,
    device: str | None = None,
    out: Path | str | None = Path("results"),
    *,
    mixer_options: dict[str, dict[str, Any]] | None = None,
    mlp_ratio: int = 4,
    decode_steps: int = 50,
    decode_state_max_n: int = 1024,
    decode_batch: int = 64,
    fused_backend: str = "aoti",
    threads: int | None = None,
    phases: tuple[str, ...] = PHASES,
    min_fit_n: int = 1024,
    count_flops: bool = True,
    measure_peak_flops: bool = True,
    peak_sizes: tuple[int, ...] = (1024, 2048, 4096),
    note: str | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure every (mixer, n); return the result dict and write ``<out>/scaling-<device>.json``.

    ``mixers``: default every registered mixer. ``peak_sizes``: the square matmuls of the peak FLOP/s
    measurement (``measure_peak_flops``), at the run's start and its end. ``time_limit_s`` applies to each phase of each
    point; ``memory_limit_gb`` to the point's host RSS (default: 60 % of the memory available now)
    and, on CUDA, to the device's allocations (default: 90 % of the GPU). ``out=None`` writes nothing.
    """
    import torch

    from workbench.mixers import MIXERS

    lengths = tuple(int(n) for n in lengths)
    mixers = tuple(mixers or MIXERS)
    _validate(lengths, mixers, phases, repeats, tokens_per_batch, decode_steps, time_limit_s)
    device = device or default_device()
    threads = int(threads or default_threads())
    mixer_options = dict(mixer_options or {})
    available = meminfo_bytes("MemAvailable")
    host_limit = int(memory_limit_gb * 2**30) if memory_limit_gb else (int(0.6 * available) if available else None)
    device_limit = int(memory_limit_gb * 2**30) if (memory_limit_gb and device.startswith("cuda")) else None

    mixer_info = {}
    for mixer in mixers:
        block = build_block(mixer, d_model, mlp_ratio, mixer_options.get(mixer))
        mixer_info[mixer] = {
            "options": mixer_options_used(mixer, d_model, mixer_options.get(mixer)),
            "parameters_block": sum(p.numel() for p in block.parameters()),
            "parameters_mixer": sum(p.numel() for p in block.mixer.parameters()),
            "short_conv": block.short_conv.width if block.short_conv is not None else 0,
            "growing_state": bool(getattr(block.mixer, "growing_state", False)),
            "state_floats_at_1024": block.state_floats(1024),
            "flop_formula": has_formula(mixer),
        }
        if hasattr(block.mixer, "impl"):
            mixer_info[mixer]["impl"] = block.mixer.impl
        del block

    result: dict[str, Any] = {
        "kind": "scaling", "schema": SCHEMA, "git_commit": git_commit(), "complete": False,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device_slug(device, threads),
        "device_type": device, "machine": machine_description(threads), "torch": torch.__version__,
        "unit": UNIT, "methods": METHODS, "note": note,
        "settings": {
            "lengths": list(lengths), "mixers": list(mixers), "d_model": d_model, "mlp_ratio": mlp_ratio,
            "tokens_per_batch": tokens_per_batch, "batch_rule": "max(1, tokens_per_batch // n)",
            "repeats": repeats, "time_limit_s_per_phase": time_limit_s, "host_memory_limit_bytes": host_limit,
            "device_memory_limit": device_limit or ("90% of the GPU" if device.startswith("cuda") else None),
            "decode_steps": decode_steps, "decode_state_max_n": decode_state_max_n, "decode_batch": decode_batch,
            "decode_batch_max_state_bytes": 2**30,
            "fused_backend": fused_backend, "threads": threads,
            "threads_rule": "torch.set_num_threads(threads) in every child", "phases": list(phases),
            "min_fit_n": min_fit_n, "dtype": "float32", "seed": seed,
        },
        "mixers": mixer_info, "peak": {}, "points": [], "slopes": {}, "crossover": {},
        "energy": {"label": ENERGY_LABEL},
    }
    if measure_peak_flops:
        result["peak"]["start"] = measure_peak(device, threads, peak_sizes)
    gpu_name = None
    blocked: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in mixers}
    for mixer in mixers:
        for n in sorted(lengths):
            batch = max(1, tokens_per_batch // n)
            spec = {
                "mixer": mixer, "n": n, "batch": batch, "d_model": d_model, "mlp_ratio": mlp_ratio,
                "mixer_options": mixer_options.get(mixer) or {}, "device": device, "threads": threads,
                "phases": list(phases), "repeats": repeats, "time_limit_s": time_limit_s,
                "decode_steps": decode_steps, "decode_state_max_n": decode_state_max_n,
                "decode_batch": decode_batch, "decode_batch_max_state_bytes": 2**30, "fused_backend": fused_backend,
                "seed": seed,
                "device_memory_limit_bytes": device_limit, "count_flops": count_flops,
            }
            t0 = time.monotonic()
            phase_results, ready = measure_point(spec, host_limit, blocked[mixer])
            if ready and ready.get("device_name"):
                gpu_name = ready["device_name"]
                result["machine"]["gpu"] = {"name": gpu_name, "memory_bytes": ready.get("device_memory_bytes"),
                                            "tf32_matmul": ready.get("tf32_matmul")}
                result["device"] = device_slug(device, threads, gpu_name)
            for phase, res in phase_results.items():
                if skip_kind(res) and phase not in blocked[mixer] and "not run at larger n" not in res.get("reason", ""):
                    blocked[mixer][phase] = {"reason": res["reason"], "n": n}
            point = {"mixer": mixer, "n": n, "batch": batch, "tokens": batch * n,
                     "wall_s": time.monotonic() - t0} | {p: phase_results.get(p) for p in phases}
            result["points"].append(point)
            if progress:
                print(f"[scaling] {mixer:>14} n={n:<6} batch={batch:<5} " + _progress(phase_results, phases),
                      file=sys.stderr)
            if out is not None:
                write_json(Path(out) / f"scaling-{result['device']}.json", finish(result, gpu_name))
    if measure_peak_flops:
        result["peak"]["end"] = measure_peak(device, threads, peak_sizes)
    result = finish(result, gpu_name)
    result["complete"] = True
    result["machine"]["load_average_end"] = load_average()
    if out is not None:
        path = Path(out) / f"scaling-{result['device']}.json"
        write_json(path, result)
        result["path"] = str(path)
    return finite(result)


def _progress(phase_results: dict[str, Any], phases) -> str:
    cells = []
    for p in phases:
        r = phase_results.get(p) or {}
        cells.append(f"{p} {r['median_s'] * 1e3:.3g} ms" if r.get("status") == "ok"
                     else f"{p} {r.get('status')}: {r.get('reason', '')[:60]}")
    return " | ".join(cells)


def point_costs(result: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """FLOPs and bytes per token of each phase of a point: the cost model, else torch's FlopCounterMode."""
    settings, info = result["settings"], result["mixers"][point["mixer"]]
    costs = {}
    for phase in ("train", "prefill", "decode"):
        res = point.get(phase) or {}
        if has_formula(point["mixer"]):
            state = res.get("state_bytes") if phase == "decode" else None
            costs[phase] = counted_costs(point["mixer"], phase, point["n"], settings["d_model"], info["options"],
                                         settings["mlp_ratio"], info["parameters_block"],
                                         point["tokens"] if phase != "decode" else 1, info.get("short_conv", 8), state)
            costs[phase].pop("terms")
        elif res.get("torch_flop_counter_per_token"):
            costs[phase] = {"flops_per_token": res["torch_flop_counter_per_token"], "bytes_per_token": None,
                            "flops_source": "torch FlopCounterMode (matmul-class ops only; no formula in "
                            "workbench.bench.costs for this mixer)", "label": ENERGY_LABEL}
    return costs


def finish(result: dict[str, Any], gpu_name: str | None = None) -> dict[str, Any]:
    """Costs, energy, roofline, slopes and crossovers from the points measured so far."""
    settings = result["settings"]
    profile = device_energy(result["device_type"], settings["threads"], gpu_name)
    lengths, mixers = settings["lengths"], settings["mixers"]
    result["energy"] = {"label": ENERGY_LABEL, "device_figures": profile.to_dict(),
                        "flop_conventions": "multiply-add = 2 FLOPs; element-wise op = 1; training = 3 x forward "
                        "(softmax attention terms 4 x: flash-style recompute); see workbench/bench/costs.py",
                        "flop_terms_example": {}}
    for point in result["points"]:
        point["costs"] = point_costs(result, point)
        point["energy"] = {}
        for phase in ("train", "prefill", "decode", "decode_fused"):
            res, costs = point.get(phase), point["costs"].get("decode" if phase == "decode_fused" else phase)
            if res is None or costs is None:
                continue
            seconds = 1.0 / res["tokens_per_s"] if res.get("status") == "ok" else None
            point["energy"][phase] = energy_per_token(costs, seconds, profile)
        if point["n"] in (min(lengths), max(lengths)) and has_formula(point["mixer"]):
            info = result["mixers"][point["mixer"]]
            for phase in ("train", "decode"):
                costs = counted_costs(point["mixer"], phase, point["n"], settings["d_model"], info["options"],
                                      settings["mlp_ratio"], info["parameters_block"], point["tokens"],
                                      info.get("short_conv", 8))
                key = f"{point['mixer']} n={point['n']}"
                result["energy"]["flop_terms_example"].setdefault(key, {})[phase] = costs["terms"] | {
                    "bytes_note": costs["bytes_note"]}
    roofline_fractions(result)
    result["slopes"] = fit_slopes(result["points"], list(mixers), settings["min_fit_n"])
    if "inverted" in mixers:
        phases = [p for p in ("train", "prefill", "decode", "decode_fused") if p in settings["phases"]]
        result["crossover"] = {peer: {phase: find_crossover(result["points"], phase, "inverted", peer,
                                                            slopes=result["slopes"]) for phase in phases}
                               for peer in mixers if peer != "inverted"}
    return result


# ----------------------------------------------------------------------------- command line


def _int_list(text: str) -> list[int]:
    try:
        return [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--lengths must be comma-separated integers, got {text!r}") from None


def add_scaling_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``workbench bench scaling``."""
    parser.add_argument("--lengths", default="256,1024,4096,16384,65536", help="comma list of sequence lengths")
    parser.add_argument("--mixers", default="all", help="comma list, or 'all' (every registered mixer)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--tokens-per-batch", type=int, default=65536)
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="seconds per phase of each point; --long: seconds per mixer's run (it stops early, "
                        "marked so)")
    parser.add_argument("--memory-limit-gb", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS)")
    parser.add_argument("--decode-steps", type=int, default=50)
    parser.add_argument("--decode-batch", type=int, default=64, help="batch of the fused decode's serving case")
    parser.add_argument("--fused-backend", default="aoti", choices=("aoti", "compile"))
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma list of {', '.join(PHASES)}")
    parser.add_argument("--peak-sizes", default="1024,2048,4096",
                        help="square float32 matmuls of the peak FLOP/s measurement (roofline); empty: none")
    parser.add_argument("--long", type=int, default=0, metavar="N",
                        help="also step every constant-state mixer over N tokens (0: skip)")
    parser.add_argument("--long-dtypes", default="float32",
                        help="comma list of dtypes for the --long run: float32, bfloat16 (one result file each)")
    parser.add_argument("--long-plain", action="store_true", help="the --long run with the plain step (not fused)")
    parser.add_argument("--no-scaling", action="store_true", help="only the --long run")
    parser.add_argument("--out", default="results")
    parser.add_argument("--note", default=None, help="free text stored in the JSON")


def run_scaling_cli(args: argparse.Namespace) -> None:
    """What ``workbench bench scaling`` does with the parsed arguments."""
    from rich.console import Console

    from workbench.bench.long_context import run_long_recurrent

    console = Console(width=220)
    mixers = None if args.mixers in ("all", "") else tuple(m for m in args.mixers.split(",") if m)
    if not args.no_scaling:
        result = run_scaling(
            lengths=tuple(_int_list(args.lengths)), mixers=mixers, d_model=args.d_model,
            tokens_per_batch=args.tokens_per_batch, repeats=args.repeats, time_limit_s=args.time_limit,
            memory_limit_gb=args.memory_limit_gb, device=args.device, out=Path(args.out), threads=args.threads,
            decode_steps=args.decode_steps, decode_batch=args.decode_batch, fused_backend=args.fused_backend,
            phases=tuple(p for p in args.phases.split(",") if p), note=args.note,
            peak_sizes=tuple(_int_list(args.peak_sizes)), measure_peak_flops=bool(args.peak_sizes.strip()),
        )
        console.print(format_scaling_table(result))
        print(f"wrote {result['path']}")
    for dtype in (d for d in args.long_dtypes.split(",") if d) if args.long else ():
        from workbench.bench.long_context import long_context_mixers

        constant = [m for m in (mixers or long_context_mixers()) if m in long_context_mixers()]
        long = run_long_recurrent(n_tokens=args.long, d_model=args.d_model, device=args.device, out=Path(args.out),
                                  threads=args.threads, note=args.note, dtype=dtype, mixers=tuple(constant),
                                  fused=not args.long_plain, fused_backend=args.fused_backend,
                                  time_limit_s=args.time_limit)
        for mixer, run in long["runs"].items():
            if run.get("status") != "ok":
                print(f"long context ({dtype}) {mixer}: {run.get('status')} {run.get('reason')}")
                continue
            s = run["summary"]
            print(f"long context ({dtype}) {mixer}: {run['tokens_done']:,} tokens, {run['step']}, state "
                  f"{s['state_bytes']:,} B (constant: {s['state_bytes_constant']}), µs/token first "
                  f"{s['s_per_token_first_window'] * 1e6:.1f} last {s['s_per_token_last_window'] * 1e6:.1f}, "
                  f"outputs finite {s['all_outputs_finite']}, max |y| {s['max_abs_output']:.3g}")
        print(f"wrote {long['path']}")
