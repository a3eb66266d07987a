"""Training and evaluation harness: one function, ``train(config)``, used by the CLI,
``compare``, the notebooks and the tests.

Resume is exact: the data stream is a pure function of (seed, step), and checkpoints
hold model, optimizer, step, RNG state and history, written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from workbench.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    built_with,
    load_checkpoint,
    load_optimizer,
    load_rng,
    load_weights,
    save_checkpoint,
)
from workbench.config import ConfigError, RunConfig, check_option_values, option_spec_of_dataclass
from workbench.mixers import MIXERS
from workbench.model import Model, mixer_options, parameter_report
from workbench.provenance import device_name, git_commit, load_average
from workbench.storage import remove_stale_temps, write_json_atomic
from workbench.tasks import Task, build_task, check_task, step_generator

# Seconds every rank waits for the others when the process group starts (and at each collective)
# before it gives up with an error instead of hanging: $WORKBENCH_DIST_TIMEOUT_S, default 10 minutes.
DIST_TIMEOUT_VARIABLE = "WORKBENCH_DIST_TIMEOUT_S"
DIST_TIMEOUT_S = 600.0


class TrainedRun(NamedTuple):
    """What ``train`` returns: the trained model (for in-process callers) and the run's record."""

    model: Model
    record: dict[str, Any]


def check_config(config: RunConfig) -> RunConfig:
    """The whole run config checked, the mixer and task against their registries: one ConfigError
    naming the bad value, before anything is built or trained. Returns the config."""
    config.validate()
    if config.model.mixer in MIXERS:  # every option of every mixer: the kind of its default, finite numbers
        spec = option_spec_of_dataclass(MIXERS[config.model.mixer].Options)
        check_option_values("model.mixer_options", config.model.mixer_options, spec)
    mixer_options(config.model)
    check_task(config.task)
    return config


def learning_rate(config: RunConfig, step: int, elapsed_s: float) -> float:
    """Linear warm-up, then cosine to 10% of the peak; follows time under a time budget."""
    train = config.train
    warm = min(1.0, (step + 1) / train.warmup_steps) if train.warmup_steps else 1.0
    progress = step / train.steps
    if train.time_budget_s:
        progress = max(progress, elapsed_s / train.time_budget_s)
    cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return train.lr * warm * cosine


def build_optimizer(model: Model, config: RunConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.train.lr, betas=(0.9, 0.98))


# ----------------------------------------------------------------------------- distributed


class _LossModule(torch.nn.Module):
    """What DDP wraps: forward returns the loss, so gradient sync hooks see every parameter."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs, targets, mask=None):
        return self.model.loss(inputs, targets, mask)


def resolved_mixer_options(config: RunConfig) -> dict[str, Any]:
    """Every mixer option the run used, defaults included (the config records only overrides), so a
    later change of a default is visible against the run's record."""
    return json.loads(json.dumps(dataclasses.asdict(mixer_options(config.model))))


def state_size(model: Model, task: Task, config: RunConfig, context: int = 0) -> dict[str, Any]:
    """The recurrent state of one sequence at the task's training length (the longest batch this process
    trained on, else the first batch's), in numbers (every block)."""
    if not context:
        context = task.train_batch(step_generator(config.train.seed, 0), config.train.batch_size).inputs.shape[1]
    grows = any(block.mixer.growing_state for block in model.blocks)
    return {"context": context, "floats": model.state_floats(context), "grows_with_context": grows}


def mixer_stats(model: Model) -> dict[str, float]:
    """The mixers' scalars from the last training step (e.g. the inverted mixer's write and
    advance fractions), as ``block<i>.<name>``: a gate that drifts shut shows in the history."""
    return {f"block{i}.{name}": value for i, block in enumerate(model.blocks)
            for name, value in getattr(block.mixer, "stats", {}).items()}  # fmt: skip


def dist_timeout_s() -> float:
    """The process group's timeout in seconds (``$WORKBENCH_DIST_TIMEOUT_S``, default 600)."""
    raw = os.environ.get(DIST_TIMEOUT_VARIABLE)
    if raw is None:
        return DIST_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{DIST_TIMEOUT_VARIABLE}={raw!r} must be a positive number of seconds")
    return value


def distributed_rank() -> int:
    """This process's rank under torchrun (0 otherwise): only rank 0 prints and writes."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _distributed(dev: torch.device) -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun.

    Start-up waits at most ``dist_timeout_s()`` for the other ranks (a rank that never comes, a
    wrong MASTER_ADDR), then fails with one clear error instead of hanging.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of processes") from None
    if world <= 1:
        return 0, 1
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        timeout = dist_timeout_s()
        try:
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout))
        except (RuntimeError, ValueError, OSError) as exc:  # DistStoreError and friends
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200].rstrip(". ")
            raise ConfigError(
                f"the process group of {world} ranks did not start within {timeout:g} s (rank "
                f"{os.environ.get('RANK', '?')}, MASTER_ADDR={os.environ.get('MASTER_ADDR', '?')}, MASTER_PORT="
                f"{os.environ.get('MASTER_PORT', '?')}): {first}; launch every rank with torchrun, or raise "
                f"{DIST_TIMEOUT_VARIABLE}") from None
    return dist.get_rank(), world


def _mean_over_ranks(value: torch.Tensor, world: int) -> float:
    """The mean of a scalar over every rank (the loss each rank saw on its shard of the global batch)."""
    if world == 1:
        return value.item()
    import torch.distributed as dist

    total = value.detach().clone().reshape(1)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.item() / world


def _shard(tensor: torch.Tensor | None, rank: int, world: int) -> torch.Tensor | None:
    if tensor is None or world == 1:
        return tensor
    size = tensor.shape[0] // world
    return tensor[rank * size : (rank + 1) * size]


# ----------------------------------------------------------------------------- training


def _out_of_time(elapsed: float, budget: float, world: int, dev: torch.device) -> bool:
    """Under a wall-clock budget all ranks must stop together: rank 0's clock decides."""
    done = torch.tensor([float(elapsed >= budget)], device=dev)
    if world > 1:
        import torch.distributed as dist

        dist.broadcast(done, src=0)
    return bool(done.item())


def train(
    config: RunConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
    task: Task | None = None,
    extra: dict[str, Any] | None = None,
) -> TrainedRun:
    """Train, evaluate, checkpoint; return the model and the run record (written to out_dir/result.json).

    ``extra`` fields are merged into the record before it is written (once, atomically), so
    a result.json on disk is always complete.

    Under ``torchrun --nproc_per_node=N`` it trains with DistributedDataParallel (gloo on CPU,
    nccl on GPU): ``train.batch_size`` is the global batch, each rank takes 1/N of it, every
    rank evaluates (so early stopping agrees), and only rank 0 writes checkpoints and results.
    """
    check_config(config)
    git_commit()  # fix the provenance now, before a long run: see git_commit
    # Denormal floats (tiny gradients, Adam moments of zero-initialised layers) are ~10x
    # slower on CPUs; flushing them to zero changes nothing measurable in training. It is
    # process-wide processor state, so it is switched back off when training returns.
    torch.set_flush_denormal(True)
    try:
        return _train(config, out_dir, resume, progress, device, task, extra)
    finally:
        torch.set_flush_denormal(False)


def _train(config, out_dir, resume, progress, device, task, extra) -> TrainedRun:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    rank, world = _distributed(dev)
    if config.train.batch_size % world:
        raise ConfigError(f"train.batch_size={config.train.batch_size} must divide among {world} processes; "
                          f"give a multiple of {world}")
    task = task or build_task(config.task.name, config.task.options)
    torch.manual_seed(config.train.seed)
    model = Model(config.model, task.io).to(dev)
    optimizer = build_optimizer(model, config)
    compute_loss: torch.nn.Module = _LossModule(model)
    if world > 1:  # every rank draws the same global batch and trains on its shard
        compute_loss = torch.nn.parallel.DistributedDataParallel(compute_loss)
    out = Path(out_dir) if out_dir and rank == 0 else None
    ckpt_path = Path(out_dir) / "checkpoint.pt" if out_dir else None
    if out is not None:  # temp files of a writer that was killed (only ours: --out may be any directory)
        for name in ("checkpoint.pt", "result.json"):
            remove_stale_temps(out, name)

    step, history, train_time, tokens, context = 0, [], 0.0, 0, 0
    if resume and ckpt_path and ckpt_path.is_file():
        payload = load_checkpoint(ckpt_path, resume=True)
        if payload["config"] != config.to_dict():
            raise CheckpointError(f"{ckpt_path} was written for another config; refusing to resume it "
                                  f"(resume with the config it holds: --config {Path(out_dir) / 'result.json'} "
                                  f"if the run finished, else the same options; or train afresh with --overwrite)")
        saved, now = built_with(payload, config.model.mixer, ckpt_path), resolved_mixer_options(config)
        if saved is not None and saved != now:
            moved = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise CheckpointError(f"{ckpt_path} was trained with other {config.model.mixer} options "
                                  f"({', '.join(f'{k}={saved.get(k)!r}' for k in moved)}): a default moved since; "
                                  f"name those values in the config to resume it, or train afresh with --overwrite")
        task.check_state(payload["task_state"], source=f"checkpoint {ckpt_path}")
        load_weights(model, payload["model"], ckpt_path)
        load_optimizer(optimizer, payload["optimizer"], ckpt_path)
        load_rng(payload["rng"], ckpt_path)
        step, history = payload["step"], payload["history"]
        train_time, tokens = float(payload["train_time"]), payload["tokens"]

    def checkpoint() -> None:
        if ckpt_path and rank == 0:
            save_checkpoint(
                ckpt_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "config": config.to_dict(),
                    "mixer_options_resolved": resolved_mixer_options(config),  # defaults may move later
                    "task_state": task.state(),
                    "io": dataclasses.asdict(task.io),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": step,
                    "history": history,
                    "train_time": train_time,
                    "tokens": tokens,
                },
            )

    def evaluate(final: bool = False) -> dict[str, float]:
        model.eval()
        metrics = task.evaluate(model, final=final)
        model.train()
        return metrics

    target = config.train.target_metric
    reached = bool(history) and target is not None and history[-1]["metrics"].get(task.metric, -math.inf) >= target
    timed = bool(config.train.time_budget_s)  # a wall-clock budget: the bar counts seconds, not steps
    bar = tqdm(total=config.train.time_budget_s if timed else config.train.steps, initial=round(train_time) if timed else step,
               disable=not progress or rank != 0, desc=f"{task.name}/{config.model.mixer}", leave=False,
               unit="s" if timed else "it", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
               if timed else None)
    model.train()
    while step < config.train.steps and not reached:
        if config.train.time_budget_s and _out_of_time(train_time, config.train.time_budget_s, world, dev):
            break
        started = time.perf_counter()
        batch = task.train_batch(step_generator(config.train.seed, step), config.train.batch_size)
        lr = learning_rate(config, step, train_time)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets, mask = (_shard(t, rank, world) for t in (batch.inputs, batch.targets, batch.mask))
        loss = compute_loss(inputs.to(dev), targets.to(dev), None if mask is None else mask.to(dev))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {float(loss)} at step {step} (training diverged); "
                                     f"try a lower train.lr or a train.grad_clip")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        step += 1
        train_time += time.perf_counter() - started
        tokens += batch.inputs.shape[0] * batch.inputs.shape[1]  # the global batch
        context = max(context, batch.inputs.shape[1])
        bar.update(time.perf_counter() - started if timed else 1)
        if step % config.train.eval_every == 0 or step == config.train.steps:
            logged = _mean_over_ranks(loss, world)  # the global batch's loss, not this rank's shard
            metrics = evaluate()
            history.append({"step": step, "loss": logged, "lr": lr, "time_s": train_time, "metrics": metrics,
                            "mixer_stats": mixer_stats(model), "load_average_1min": load_average()})
            bar.set_postfix(step=step, loss=f"{logged:.3f}", **{task.metric: f"{metrics[task.metric]:.3f}"})
            reached = target is not None and metrics[task.metric] >= target
        if step % config.train.checkpoint_every == 0:
            checkpoint()
    bar.close()
    checkpoint()

    final = evaluate(final=True)
    result = {
        "task": task.name,
        "task_options": config.task.options,
        "mixer": config.model.mixer,
        "config": config.to_dict(),
        "parameters": parameter_report(model),
        "mixer_options_resolved": resolved_mixer_options(config),
        "state_floats": state_size(model, task, config, context),
        "metrics": final,
        "metric": task.metric,
        "steps": step,
        "reached_target": target is not None and final[task.metric] >= target,
        "history": history,
        "train_time_s": train_time,
        "tokens": tokens,
        "tokens_per_s": tokens / train_time if train_time else 0.0,
        "seed": config.train.seed,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "device": device_name(dev),
        "cpu_count": os.cpu_count(),  # with the history's load averages: how busy the machine was
        "world_size": world,
    }
    result.update(extra or {})
    if out:
        write_json_atomic(out / "result.json", result)  # temp file, fsync, rename, fsync the directory
    return TrainedRun(model, result)
