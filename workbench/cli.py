"""Command line: ``workbench train | eval | generate | compare | notebooks | bench | report``.

Errors a user can cause (bad config, missing data, corrupt checkpoint, unknown
characters) print one clear line and exit with status 2, never a deep traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.config import ConfigError, RunConfig

SYSTEM2_TASKS = ("hops", "kinship", "temporal", "concepts")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="JSON or YAML run config, or a run's result.json (its config)")
    parser.add_argument("--task", help="task name (copy, mqar, charlm, digits, diabetes)")
    parser.add_argument("--mixer", help="sequence mixer (transformer, inverted)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--data", help="text file for charlm (any UTF-8 text)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override, e.g. --set model.d_model=64 --set model.mixer_options.n_units=32")


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    config = RunConfig.load(args.config) if args.config else RunConfig()
    overrides = list(args.set)
    if args.task:
        overrides.insert(0, f"task.name={json.dumps(args.task)}")
    if args.mixer:
        overrides.insert(0, f"model.mixer={json.dumps(args.mixer)}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.data:
        overrides.append(f"task.options.path={json.dumps(args.data)}")
    from workbench.train import check_config

    return check_config(config.with_overrides(overrides))


def cmd_train(args: argparse.Namespace) -> None:
    from workbench.train import train

    config = _config_from_args(args)
    out = args.out or Path("results/checkpoints") / f"{config.task.name}-{config.model.mixer}-s{config.train.seed}"
    _, result = train(config, out_dir=out, resume=args.resume, progress=not args.quiet)
    print(json.dumps({k: result[k] for k in ("task", "mixer", "parameters", "metrics", "steps", "tokens_per_s")}, indent=2))
    print(f"checkpoint and result.json in {out}")


def cmd_eval(args: argparse.Namespace) -> None:
    from workbench.checkpoint import model_from_checkpoint

    model, config, task, _ = model_from_checkpoint(args.checkpoint)
    print(json.dumps(task.evaluate(model, final=args.final), indent=2))


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from workbench.checkpoint import model_from_checkpoint
    from workbench.tasks.charlm import CharVocab

    model, config, task, payload = model_from_checkpoint(args.checkpoint)
    chars = payload.get("task_state", {}).get("chars")
    if config.task.name != "charlm" or not chars:
        raise ConfigError("generate needs a char-LM checkpoint (trained with --task charlm)")
    if not args.prompt:
        raise ConfigError("the prompt is empty; give at least one character with --prompt")
    vocab = CharVocab(chars)
    prompt = vocab.encode(args.prompt)[None, :]
    generator = torch.Generator().manual_seed(args.seed)
    out = model.generate(prompt, args.n, temperature=args.temperature, top_k=args.top_k, generator=generator,
                         fused=args.fused)
    print(vocab.decode(out[0]))


def cmd_compare(args: argparse.Namespace) -> int:
    """Run an experiment's missing runs (``workbench.experiments``), print its table; non-zero if incomplete.

    System 2 tasks (hops, kinship, temporal, concepts) go to ``run_system2`` instead.
    """
    from rich.console import Console

    from workbench.experiments import get_experiment, parse_variant
    from workbench.experiments.runner import run_experiment
    from workbench.report import format_summary

    tasks = [t for t in (args.tasks or "").split(",") if t]
    system2 = [t for t in tasks if t in SYSTEM2_TASKS]
    if system2:
        if len(system2) != len(tasks):
            raise ConfigError("System 2 tasks (hops, kinship, temporal, concepts) run on their own: "
                              "give them without protocol tasks")
        from workbench.symbolic.experiment import print_summary, run_system2

        summary = run_system2(args.budget, args.seeds or 1, Path(args.results), tasks=tuple(system2),
                              progress=not args.quiet)
        print_summary(summary, Console(width=160))
        print(f"wrote {Path(args.results) / f'system2-{args.budget}.json'}")
        return 0
    experiment = get_experiment(args.experiment, args.budget, args.results)
    variants = [parse_variant(m) for m in args.mixers.split(",") if m] if args.mixers else None
    cells = [c for c in args.cells.split(",") if c] if args.cells else None
    experiment = experiment.filtered(tasks=tasks or None, cells=cells, variants=variants, seeds=args.seeds)
    summary, missing = run_experiment(experiment, args.results, progress=not args.quiet, wait=not args.no_wait,
                                      allow_incomplete=args.allow_incomplete)
    Console(width=160).print(format_summary(summary))
    print(f"wrote {experiment.summary_path(Path(args.results))}")
    if missing:
        shown = "\n  ".join(missing[:10]) + (f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        print(f"workbench: {len(missing)} run(s) still missing (held by a process that is still running, or "
              f"waiting for a learning rate):\n  {shown}", file=sys.stderr)
        return 3
    return 0


def cmd_notebooks(args: argparse.Namespace) -> None:
    from workbench.notebooks import run_notebooks

    for path in run_notebooks(args.names or None, smoke=args.smoke):
        print(f"executed {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from workbench.report import orphan_markers, render_blocks, update_markdown

    blocks = render_blocks(Path(args.results))
    for name, body in blocks.items():
        if args.print:
            print(f"## {name}\n\n{body}\n")
    for target in args.files:
        replaced = update_markdown(Path(target), blocks)
        print(f"{target}: updated {', '.join(replaced) or 'nothing'}")
        orphans = orphan_markers(Path(target), blocks)
        if orphans:
            print(f"{target}: WARNING no results render {', '.join(orphans)}: left as they were (stale?)")


def cmd_bench(args: argparse.Namespace) -> None:
    from workbench.bench.scaling import run_scaling_cli

    run_scaling_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Inverted-attention research workbench")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model")
    _add_config_args(p)
    p.add_argument("--out", type=Path, help="run directory (checkpoint.pt, result.json)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on its task")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--final", action="store_true", help="include length-generalization extras")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("generate", help="sample text from a char-LM checkpoint (recurrent mode)")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--prompt", default="\n")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fused", action="store_true",
                   help="decode with the fused step (workbench.fast: compiled once, then several times faster)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("compare", help="run an experiment (protocol v2 and its companions) and print its table")
    p.add_argument("--experiment", default="v2", help="v2 (default), v2-2layer, v2-noconv, pareto or ablation")
    p.add_argument("--budget", choices=["smoke", "demo", "full"], default="demo")
    p.add_argument("--tasks", help="only cells of these tasks (copy, mqar, charlm) or labels; or System 2 tasks "
                                   "(hops, kinship, temporal, concepts: System 1 alone vs System 1 + System 2)")
    p.add_argument("--cells", help="only these cells, e.g. mqar-256x16,charlm (the table says what ran)")
    p.add_argument("--mixers", default=None,
                   help="replace the experiment's variants: comma list of mixer[:option=value...][@model_field=value],"
                        " e.g. inverted:n_pools=4,transformer@n_layers=2")
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: the experiment's)")
    p.add_argument("--results", default="results")
    p.add_argument("--no-wait", action="store_true", help="do not wait for runs other processes hold")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="aggregate cells that lack seeds too (marked incomplete) instead of leaving them out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="render result tables from results/*.json into markdown files")
    p.add_argument("files", nargs="*", default=["README.md", "papers/inverted-attention.md"])
    p.add_argument("--results", default="results")
    p.add_argument("--print", action="store_true", help="also print the tables")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("notebooks", help="notebook tools")
    nb = p.add_subparsers(dest="notebooks_command", required=True)
    run = nb.add_parser("run", help="execute notebooks with papermill")
    run.add_argument("names", nargs="*", help="notebook names (default: all)")
    run.add_argument("--smoke", action="store_true", help="tiny parameters (what the tests use)")
    run.set_defaults(func=cmd_notebooks)

    from workbench.bench.scaling import add_scaling_arguments

    p = sub.add_parser("bench", help="performance benchmarks")
    bench = p.add_subparsers(dest="bench_command", required=True)
    scaling = bench.add_parser("scaling", help="time, memory and ESTIMATED energy vs sequence length, one block per mixer")
    add_scaling_arguments(scaling)
    scaling.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from workbench.checkpoint import CheckpointError
    from workbench.data import DataError
    from workbench.notebooks import NotebookError

    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (ConfigError, DataError, CheckpointError, NotebookError, ValueError, FileNotFoundError) as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
