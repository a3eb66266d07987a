"""Command line: ``workbench train | eval | generate | export | compare | demo | notebooks | bench | report``.

One error boundary (``main``): a failure a user can cause (bad arguments, config or data, a
damaged checkpoint, a diverging run, no memory, a file that cannot be read or written) prints one
line naming the cause and the fix and exits with status 2; anything else is a bug in workbench:
one line saying so, status 1. ``--debug`` (or ``WORKBENCH_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from pathlib import Path

from workbench.config import MAX_SEED, ConfigError, RunConfig

SYSTEM2_TASKS = ("hops", "kinship", "temporal", "concepts")
EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 2, 1


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (status 2) naming the fix: ``--help``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    from workbench.train import distributed_rank, train

    config = _config_from_args(args)
    out = args.out or Path("results/checkpoints") / f"{config.task.name}-{config.model.mixer}-s{config.train.seed}"
    rank = distributed_rank()  # under torchrun every rank runs this; rank 0 checks, claims, prints
    if rank != 0:
        train(config, out_dir=out, resume=args.resume, progress=False)
        return
    from workbench.experiments.runner import claim_run

    _check_run_directory(out, args.resume, args.overwrite)
    with claim_run(out) as holder:
        if holder is not None:
            raise ConfigError(f"{out} is being trained by another process ({holder}); wait for it, or give "
                              f"another --out")
        _check_run_directory(out, args.resume, args.overwrite)  # again, now that the directory is ours
        if args.overwrite:
            for name in ("checkpoint.pt", "result.json"):
                (out / name).unlink(missing_ok=True)
        elif args.resume and not (out / "checkpoint.pt").is_file():
            print(f"workbench: no checkpoint in {out} to resume; starting from step 0", file=sys.stderr)
        _, result = train(config, out_dir=out, resume=args.resume, progress=not args.quiet)
    print(json.dumps({k: result[k] for k in ("task", "mixer", "parameters", "metrics", "steps", "tokens_per_s")}, indent=2))
    print(f"checkpoint and result.json in {out}")


def _check_run_directory(out: Path, resume: bool, overwrite: bool) -> None:
    """A run directory that holds a run is never overwritten silently."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the directory, --overwrite replaces it: give one of them")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; give a directory for the run")
    checkpoint, result = (out / "checkpoint.pt").is_file(), (out / "result.json").is_file()
    if overwrite:
        return
    if not resume and (checkpoint or result):
        held = "a checkpoint" if checkpoint else "a finished run (result.json)"
        raise ConfigError(f"{out} already holds {held}; pass --resume to continue it, --overwrite to replace it, "
                          f"or --out DIR for a new run")
    if resume and result and not checkpoint:
        raise ConfigError(f"{out} holds a finished run (result.json) and no checkpoint to resume; pass --overwrite "
                          f"to train it again, or --out DIR for a new run")


def cmd_eval(args: argparse.Namespace) -> None:
    from workbench.checkpoint import model_from_checkpoint

    model, config, task, _ = model_from_checkpoint(args.checkpoint, data=args.data)
    print(json.dumps(task.evaluate(model, final=args.final), indent=2))


def cmd_recall_anatomy(args: argparse.Namespace) -> None:
    from workbench.checkpoint import model_from_checkpoint
    from workbench.lab.recall import parse_cells, recall_anatomy
    from workbench.storage import write_json_atomic

    if args.n < 1 or (args.seed is not None and not 0 <= args.seed <= MAX_SEED):
        raise ConfigError(f"--n must be >= 1 and --seed in [0, {MAX_SEED}], got --n {args.n} --seed {args.seed}")
    model, config, _, _ = model_from_checkpoint(args.checkpoint, need_task=False)
    if config.task.name == "multistream":
        if args.cells is not None:
            raise ConfigError("--cells sets MQAR lengths; a multistream model is traced on its own task's examples")
        _multistream_anatomy(args, model, config)
        return
    if config.task.name != "mqar":
        raise ConfigError(f"recall anatomy runs MQAR or multistream; {args.checkpoint} is a {config.task.name!r} checkpoint")
    cells = parse_cells(args.cells or "256x16,1024x64,4096x64")
    args.seed = 0 if args.seed is None else args.seed
    vocab = model.io.vocab_size
    if any(pairs >= vocab // 2 for _, pairs in cells):
        raise ConfigError(f"--cells: this model's vocabulary ({vocab}) has fewer than {max(p for _, p in cells)} keys")
    rows = [recall_anatomy(model, seq_len, pairs, vocab, n=args.n, seed=args.seed) for seq_len, pairs in cells]
    for row in rows:
        mass = row["write_mass_per_token"]
        print(f"({row['seq_len']}, {row['kv_pairs']}): accuracy {row['accuracy']:.3f} = kept {row['share_kept']:.3f} "
              f"x {_fmt(row['accuracy_when_kept'])} + lost {1 - row['share_kept']:.3f} x {_fmt(row['accuracy_when_lost'])};"
              f" read weight on the holder {_fmt(row['read_weight_on_holder_when_kept'])}; write mass per token: "
              + ", ".join(f"{k} {_fmt(v)}" for k, v in mass.items()))
    if args.out:
        write_json_atomic(args.out, {"kind": "recall-anatomy", "checkpoint": str(args.checkpoint),
                                     "mixer": config.model.mixer, "mixer_options": config.model.mixer_options,
                                     "rows": rows})
        print(f"wrote {args.out}")


def _multistream_anatomy(args: argparse.Namespace, model, config) -> None:
    from workbench.lab.recall import multistream_anatomy
    from workbench.storage import write_json_atomic
    from workbench.tasks.multistream import MultiStreamTask

    task = MultiStreamTask(**config.task.options)
    seed = task.eval_seed if args.seed is None else args.seed
    row = multistream_anatomy(model, task.options, task.seq_len, n=args.n, seed=seed)
    for name, part in {"all": row["all"], **row["streams"]}.items():
        evicted = ", ".join(f"{k} {v:.2f}" for k, v in part["evicted_by"].items())
        print(f"{name}: accuracy {part['accuracy']:.3f} = kept {part['share_kept']:.3f} x {_fmt(part['accuracy_when_kept'])}"
              f" + lost {1 - part['share_kept']:.3f} x {_fmt(part['accuracy_when_lost'])}; lost messages evicted by: "
              f"{evicted or '-'}")
    print("write mass per token: " + ", ".join(f"{k} {_fmt(v)}" for k, v in row["write_mass_per_token"].items()))
    if args.out:
        write_json_atomic(args.out, {"kind": "recall-anatomy-multistream", "checkpoint": str(args.checkpoint),
                                     "mixer": config.model.mixer, "mixer_options": config.model.mixer_options,
                                     "task_options": config.task.options, **row})
        print(f"wrote {args.out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _check_generate_args(args: argparse.Namespace) -> None:
    """Sampling settings checked before the checkpoint is read: one line each, never a crash."""
    if args.n < 0:
        raise ConfigError(f"--n must be >= 0 characters to generate, got {args.n}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise ConfigError(f"--temperature must be a finite number >= 0 (0: greedy), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be a positive number of candidates (leave it out for all), got {args.top_k}")
    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer in [0, {MAX_SEED}], got {args.seed}")
    if not args.prompt:
        raise ConfigError("the prompt is empty; give at least one character with --prompt")


def cmd_generate(args: argparse.Namespace) -> None:
    _check_generate_args(args)
    if args.runtime != "torch":  # onnx: numpy + onnxruntime only, torch is not imported on this path
        from workbench.export.runtime import OnnxStepper, generate, load_vocab

        if args.runtime == "executorch":
            from workbench.export.executorch_export import ExecutorchStepper as OnnxStepper  # same interface
        stepper = OnnxStepper(args.checkpoint)
        encode, decode = load_vocab(stepper.manifest)
        out = generate(stepper, encode(args.prompt)[None, :], args.n, temperature=args.temperature, top_k=args.top_k,
                       seed=args.seed)
        print(decode(out[0]))
        return
    import torch

    from workbench.checkpoint import model_from_checkpoint
    from workbench.tasks.charlm import CharVocab

    # The vocabulary is the checkpoint's own (task_state.chars): no data file is read.
    model, config, _, payload = model_from_checkpoint(args.checkpoint, need_task=False)
    chars = payload["task_state"].get("chars")
    if config.task.name != "charlm" or not chars:
        raise ConfigError(f"generate needs a char-LM checkpoint (trained with --task charlm); {args.checkpoint} "
                          f"is a {config.task.name!r} checkpoint")
    vocab = CharVocab(chars)
    try:
        prompt = vocab.encode(args.prompt)[None, :]
    except ValueError as exc:
        raise ConfigError(f"{exc}; use only characters of the training text in --prompt") from None
    generator = torch.Generator().manual_seed(args.seed)
    out = model.generate(prompt, args.n, temperature=args.temperature, top_k=args.top_k, generator=generator,
                         fused=args.fused)
    print(vocab.decode(out[0]))


def cmd_export(args: argparse.Namespace) -> None:
    from workbench.export.onnx_export import export_checkpoint

    manifest = export_checkpoint(args.checkpoint, args.out, fmt=args.format, quantize=args.quantize)
    check = manifest.get("verification") or {}
    print(f"exported {args.checkpoint} ({manifest['model_config']['mixer']}, {args.format}"
          f"{', ' + args.quantize if args.quantize else ''}) to {args.out}: {manifest['graph']['file']} "
          f"({manifest['graph']['bytes']:,} bytes), {len(manifest['state'])} state leaves; "
          f"max |logits - PyTorch| over {check.get('steps', 0)} steps: {check.get('max_abs_diff_logits', float('nan')):.2e}")


def run_system2_kinship(budget: str, seeds: int, results: Path, quiet: bool = False, jobs: int = 1) -> None:
    from workbench.symbolic.kinship import kinship_table, run_kinship

    summary = run_kinship(budget, seeds, results, progress=not quiet, jobs=jobs)
    print(kinship_table(summary))
    print(f"wrote {results / f'system2-kinship-{budget}.json'}")


def cmd_system2(args: argparse.Namespace) -> int:
    """System 2 on CLUTRR-style kinship (learned rules and proof search over facts read from System 1)."""
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    seeds = args.seeds or (3 if args.budget == "full" else 1)
    if args.part in ("kinship", "all"):
        run_system2_kinship(args.budget, seeds, Path(args.results), quiet=args.quiet, jobs=args.jobs)
    if args.part in ("metaconcepts", "all"):
        from workbench.symbolic.metaconcepts import metaconcepts_table, run_metaconcepts

        summary = run_metaconcepts(args.budget, seeds, Path(args.results), progress=not args.quiet)
        print(metaconcepts_table(summary))
        print(f"wrote {Path(args.results) / f'system2-metaconcepts-{args.budget}.json'}")
    return 0


def _learning_rates(text: str | None) -> tuple[float, ...] | None:
    """``--lrs 0.001,0.003`` -> (0.001, 0.003); None when not given."""
    if text is None:
        return None
    try:
        rates = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--lrs must be a comma list of learning rates, got {text!r}") from None
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise ConfigError(f"--lrs must list positive finite learning rates, got {text!r}")
    return rates


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
        if "kinship" in system2:  # round 2: CLUTRR-style kinship has its own experiment
            run_system2_kinship(args.budget, args.seeds or 1, Path(args.results), quiet=args.quiet)
            system2.remove("kinship")
        if system2:
            from workbench.symbolic.experiment import print_summary, run_system2

            summary = run_system2(args.budget, args.seeds or 1, Path(args.results), tasks=tuple(system2),
                                  progress=not args.quiet)
            print_summary(summary, Console(width=160))
            print(f"wrote {Path(args.results) / f'system2-{args.budget}.json'}")
        return 0
    experiment = get_experiment(args.experiment, args.budget, args.results)
    variants = [parse_variant(m) for m in args.mixers.split(",") if m] if args.mixers else None
    cells = [c for c in args.cells.split(",") if c] if args.cells else None
    experiment = experiment.filtered(tasks=tasks or None, cells=cells, variants=variants, seeds=args.seeds,
                                     lr_grid=_learning_rates(args.lrs))
    path = experiment.summary_path(Path(args.results))
    narrowed = any((tasks, cells, variants, args.seeds, args.lrs))
    summary, missing = run_experiment(experiment, args.results, progress=not args.quiet, wait=not args.no_wait,
                                      allow_incomplete=args.allow_incomplete or args.aggregate_only,
                                      train=not args.aggregate_only, write_summary=False,
                                      keep_models=args.keep_models)
    Console(width=160).print(format_summary(summary))
    # Always merged, so that the design candidates run beside the experiment (variants it does not
    # list) keep their rows when the whole experiment is tabled again.
    from workbench.experiments.aggregate import merge_into_table

    whole = get_experiment(args.experiment, args.budget, args.results)
    merged = merge_into_table(summary, experiment, whole, Path(args.results))
    kept = len(merged["rows"]) - len(summary["rows"])
    print(f"wrote {path}: this run's rows above, merged into the table's {len(merged['rows'])}" if narrowed
          else f"wrote {path}" + (f" ({kept} row(s) of design candidates run beside it kept)" if kept else ""))
    if missing:
        shown = "\n  ".join(missing[:10]) + (f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        print(f"workbench: {len(missing)} run(s) still missing (held by a process that is still running, or "
              f"waiting for a learning rate):\n  {shown}", file=sys.stderr)
        return 0 if args.aggregate_only else 3
    return 0


def cmd_demo(args: argparse.Namespace) -> None:
    from workbench.experiments.demo import run_demo

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be a positive number of processes, got {args.jobs}")
    _, table = run_demo(args.out, [m for m in args.mixers.split(",") if m] if args.mixers else None, jobs=args.jobs,
                        progress=not args.quiet)
    print(table)


def cmd_report(args: argparse.Namespace) -> None:
    from workbench.report import orphan_markers, render_blocks, update_markdown

    results = Path(args.results)
    if not results.is_dir():
        raise ConfigError(f"results directory {results} does not exist; give --results DIR")
    missing = [target for target in args.files if not Path(target).is_file()]
    if missing:
        raise ConfigError(f"no such markdown file: {', '.join(missing)}; give files that hold report markers")
    try:
        blocks = render_blocks(results)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a hand-edited or truncated result file
        raise ConfigError(f"cannot render the results in {results} ({type(exc).__name__}: {exc}); fix or move "
                          f"the broken compare-*.json (--debug shows where)") from None
    for name, body in blocks.items():
        if args.print:
            print(f"## {name}\n\n{body}\n")
    for target in args.files:
        replaced = update_markdown(Path(target), blocks)
        print(f"{target}: updated {', '.join(replaced) or 'nothing'}")
        orphans = orphan_markers(Path(target), blocks)
        if orphans:
            print(f"{target}: WARNING no results render {', '.join(orphans)}: left as they were (stale?)")


def cmd_pin_default(args: argparse.Namespace) -> None:
    from workbench.experiments.pin import parse_move, pin_default

    results = Path(args.results)
    if not results.is_dir():
        raise ConfigError(f"results directory {results} does not exist; give --results DIR")
    move = parse_move(args.mixer, args.option, args.old)
    runs, tables = pin_default(results, move, dry_run=args.dry_run)
    verb = "would relabel" if args.dry_run else "relabelled"
    print(f"{move.why}: {verb} {runs} run(s) and the rows of {tables} table(s) under {results}")
    if not args.dry_run and runs:
        print("re-render the markdown tables with `workbench report`; `workbench compare` now fills the new "
              "default's rows")


def build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before or after the subcommand (SUPPRESS: a subcommand's default never hides it).
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, also print the traceback (or set WORKBENCH_DEBUG=1)")
    parser = _Parser(prog="workbench", description="Inverted-attention research workbench", parents=[debug])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", parents=[debug], help="train one model")
    _add_config_args(p)
    p.add_argument("--out", type=Path, help="run directory (checkpoint.pt, result.json)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run the directory holds")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", parents=[debug], help="evaluate a checkpoint on its task")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--final", action="store_true", help="include length-generalization extras")
    p.add_argument("--data", type=Path, default=None,
                   help="char-LM: the training text, where it is now (it must be the same text, by sha256)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("recall-anatomy", parents=[debug],
                       help="MQAR at given lengths, or multi-stream recall by stream: is recall lost at the write "
                            "(evicted, and by what) or at the read?")
    p.add_argument("checkpoint", type=Path, help="an MQAR or multistream checkpoint.pt or model.pt (compare --keep-models)")
    p.add_argument("--cells", default=None, help="MQAR: SEQ_LENxPAIRS list (default 256x16,1024x64,4096x64)")
    p.add_argument("--n", type=int, default=32, help="examples per cell")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the examples (default: MQAR 0, multistream the task's held-out set)")
    p.add_argument("--out", type=Path, default=None, help="write the rows to this JSON")
    p.set_defaults(func=cmd_recall_anatomy)

    p = sub.add_parser("generate", parents=[debug], help="sample text from a char-LM checkpoint (recurrent mode)")
    p.add_argument("checkpoint", type=Path, help="checkpoint.pt, or with --runtime onnx an export directory")
    p.add_argument("--runtime", choices=["torch", "onnx", "executorch"], default="torch",
                   help="onnx: run an export directory (workbench export) with numpy + onnxruntime, no torch; "
                        "executorch: a --format executorch export (batch 1)")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest characters (k >= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fused", action="store_true",
                   help="decode with the fused step (workbench.fast: compiled once, then several times faster)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", parents=[debug], help="export a checkpoint's recurrent step as one graph for on-device runtimes")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--format", choices=["onnx", "executorch"], default="onnx")
    p.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 quantization of the linear layers")
    p.add_argument("--out", type=Path, required=True, help="export directory (graph, initial state, manifest.json)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compare", parents=[debug],
                       help="run an experiment (protocol v2 and its companions) and print its table")
    p.add_argument("--experiment", default="v2", help="v2 (default), v2-2layer, v2-noconv, pareto, ablation, multistream or seeking-widths")
    p.add_argument("--budget", choices=["smoke", "demo", "full"], default="demo")
    p.add_argument("--tasks", help="only cells of these tasks (copy, mqar, charlm) or labels; or System 2 tasks "
                                   "(hops, kinship, temporal, concepts: System 1 alone vs System 1 + System 2)")
    p.add_argument("--cells", help="only these cells, e.g. mqar-256x16,charlm (the table says what ran)")
    p.add_argument("--mixers", default=None,
                   help="replace the experiment's variants: comma list of mixer[:option=value...][@model_field=value],"
                        " e.g. inverted:n_pools=4,transformer@n_layers=2")
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: the experiment's)")
    p.add_argument("--lrs", default=None,
                   help="replace the learning-rate grid, e.g. 0.003 (one rate: every seed trains at it at once; "
                        "the table says which grid chose the rate)")
    p.add_argument("--results", default="results")
    p.add_argument("--no-wait", action="store_true", help="do not wait for runs other processes hold")
    p.add_argument("--keep-models", action="store_true",
                   help="keep each run's trained model as model.pt in its run directory (weights and config, "
                        "for `workbench eval --checkpoint` and notebooks; not committed)")
    p.add_argument("--aggregate-only", action="store_true",
                   help="train nothing: aggregate the runs that have finished (implies --allow-incomplete)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="aggregate cells that lack seeds too (marked incomplete) instead of leaving them out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("system2", parents=[debug], help="System 2: CLUTRR-style kinship and metaconcepts, learned "
                       "rules and proof search over facts read from System 1; writes results/system2-<part>-<budget>.json")
    p.add_argument("--budget", choices=["smoke", "demo", "full"], default="demo")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default: 3 for full, else 1)")
    p.add_argument("--part", choices=["kinship", "metaconcepts", "all"], default="all",
                   help="CLUTRR-style kinship, metaconcepts (held-out concepts, is-a depth 1-6), or both")
    p.add_argument("--jobs", type=int, default=1, help="kinship: seeds run in this many processes, one thread each")
    p.add_argument("--results", default="results")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_system2)

    p = sub.add_parser("demo", parents=[debug], help="the main comparison at a small budget, trained fresh, beside the reference")
    p.add_argument("--out", type=Path, help="results directory for the fresh runs (default runs/demo-<time>)")
    p.add_argument("--mixers", help="comma list (default transformer,gated_deltanet,inverted,seeking)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes, one thread each (default 2)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", parents=[debug], help="render result tables from results/*.json into markdown files")
    p.add_argument("files", nargs="*", default=["README.md", "papers/inverted-attention.md", "docs/edge.md"])
    p.add_argument("--results", default="results")
    p.add_argument("--print", action="store_true", help="also print the tables")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("pin-default", parents=[debug],
                       help="after a mixer default moved: pin the old value into the labels of the runs made with it")
    p.add_argument("--mixer", required=True)
    p.add_argument("--option", required=True, help="the option whose default moved, e.g. hard_writes")
    p.add_argument("--old", required=True, help="its old default, as JSON (false, 0.0, 64) or a string")
    p.add_argument("--results", default="results")
    p.add_argument("--dry-run", action="store_true", help="only count what would change")
    p.set_defaults(func=cmd_pin_default)

    from workbench.notebooks import add_arguments as add_notebook_arguments

    add_notebook_arguments(sub, parents=[debug])  # run, render, check

    from workbench.bench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(sub, parents=[debug])  # scaling, memory, decode, edge
    return parser


def _user_error(exc: BaseException) -> str | None:
    """The one-line message of an error a user can cause and fix; None for a bug in workbench."""
    from workbench.data import DataError
    from workbench.notebooks import NotebookError

    # CheckpointError and torch's errors live beside torch: a command that never imported them (generate
    # --runtime onnx runs without torch) cannot have raised them, so they are looked up, never imported.
    checkpoint = sys.modules.get("workbench.checkpoint")
    known = (ConfigError, DataError, NotebookError) + ((checkpoint.CheckpointError,) if checkpoint else ())
    if isinstance(exc, known):
        return str(exc)
    if isinstance(exc, FloatingPointError):  # a diverging run: its message names the step and the fix
        return str(exc)
    if _out_of_memory(exc):
        return ("out of memory; use a smaller model (model.d_model, model.n_layers), batch (train.batch_size) "
                "or task (sequence length, n_eval)")
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot access{where}: {exc.strerror or exc}; check the path, its permissions and free disk space"
    return None


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text)


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr: exit 2 (user error) or 1 (internal error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2; argparse printed its line)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USER_ERROR)
    debug = getattr(args, "debug", False) or os.environ.get("WORKBENCH_DEBUG", "") not in ("", "0")
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("workbench: interrupted; `train --resume` continues a run from its last checkpoint", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush stays quiet
        except OSError:
            pass
        return 0
    except Exception as exc:
        if debug:
            traceback.print_exc()
        message = _user_error(exc)
        if message is not None:
            print(f"workbench: error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR
        first = (str(exc).splitlines() or [""])[0][:300]
        print(f"workbench: internal error: {type(exc).__name__}: {first} (a bug in workbench, not in your input: "
              f"rerun with --debug and report the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
