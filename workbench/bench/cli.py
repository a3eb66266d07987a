"""The ``workbench bench`` subcommands: scaling, memory, decode, edge (each benchmark's own module runs it)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from workbench.config import ConfigError


def add_arguments(sub: Any, parents: list | None = None) -> None:
    """Add ``workbench bench ...`` to the top-level subparsers (``parents``: shared flags such as --debug)."""
    from workbench.bench.decode_pair import add_decode_arguments
    from workbench.bench.memory_profile import add_memory_arguments
    from workbench.bench.scaling import add_scaling_arguments
    from workbench.export.bench import add_edge_arguments

    parents = parents or []
    p = sub.add_parser("bench", parents=parents, help="performance benchmarks")
    bench = p.add_subparsers(dest="bench_command", required=True)
    commands = (  # name, help, its arguments, what runs it
        ("scaling", "time, memory and ESTIMATED energy vs sequence length, one block per mixer", add_scaling_arguments,
         cmd_bench),
        ("memory", "where a block's peak memory goes: live tensors at the peak of a training step and a prefill, "
         "by op -> results/memory-profile-<device>.json", add_memory_arguments, cmd_bench_memory),
        ("decode", "fused decode steps side by side in one process, alternating rounds, ratios per round -> "
         "results/decode-side-by-side-<device>[-n<n>][-batch<b>].json", add_decode_arguments, cmd_bench_decode),
        ("edge", "per-token latency and peak memory: exported (ONNX fp32/int8) vs eager, inverted vs transformer by "
         "context -> results/edge-<device>.json", add_edge_arguments, cmd_bench_edge),
    )
    for name, text, add, run in commands:
        command = bench.add_parser(name, parents=parents, help=text)
        add(command)
        command.set_defaults(func=run)


def cmd_bench(args: argparse.Namespace) -> None:
    from workbench.bench.scaling import run_scaling_cli

    _check_bench_args(args)
    run_scaling_cli(args)


def cmd_bench_memory(args: argparse.Namespace) -> None:
    from workbench.bench.memory_profile import run_memory_cli

    run_memory_cli(args)


def cmd_bench_decode(args: argparse.Namespace) -> None:
    from workbench.bench.decode_pair import run_decode_cli

    run_decode_cli(args)


def cmd_bench_edge(args: argparse.Namespace) -> None:
    from workbench.export.bench import run_edge_cli

    run_edge_cli(args)


def _check_bench_args(args: argparse.Namespace) -> None:
    """The benchmark's arguments checked before any child process starts."""
    from workbench.mixers import MIXERS

    for name in ("repeats", "d_model", "tokens_per_batch", "decode_steps", "decode_batch"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
    if args.long < 0:
        raise ConfigError(f"--long must be a number of tokens >= 0 (0: skip), got {args.long}")
    if not math.isfinite(args.time_limit) or args.time_limit <= 0:
        raise ConfigError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    if args.memory_limit_gb is not None and (not math.isfinite(args.memory_limit_gb) or args.memory_limit_gb <= 0):
        raise ConfigError(f"--memory-limit-gb must be a positive number, got {args.memory_limit_gb}")
    try:
        lengths = [int(v.replace("_", "")) for v in args.lengths.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--lengths must be comma-separated integers, got {args.lengths!r}") from None
    if not args.no_scaling and (not lengths or min(lengths) < 1):
        raise ConfigError(f"--lengths must be positive integers, got {args.lengths!r}")
    mixers = list(MIXERS) if args.mixers == "all" else [m for m in args.mixers.split(",") if m]
    unknown = [m for m in mixers if m not in MIXERS]
    if unknown or (not mixers and not args.no_scaling):
        raise ConfigError(f"--mixers: unknown mixer(s) {unknown}; choose from {', '.join(sorted(MIXERS))}")
    dtypes = [d for d in args.long_dtypes.split(",") if d]
    if args.long and (not dtypes or any(d not in ("float32", "bfloat16") for d in dtypes)):
        raise ConfigError(f"--long-dtypes must be a comma list of float32, bfloat16; got {args.long_dtypes!r}")
