"""Run an experiment's missing runs: resumable, shareable between processes, honest about what is left.

``run_experiment`` trains every run that has no ``result.json`` yet, grid runs first (their
results decide the learning rate of the other seeds). Several processes may share one results
directory (``make bench JOBS=2``): each run is claimed with an OS lock (``flock``) on
``running.lock`` in its directory, so one process trains it; a process that dies releases the lock
and its checkpoint is resumed by whichever process reaches the run next. After its pass a process
waits for runs held by others (and takes over any whose holder died) until nothing it can run is
left, then aggregates. It returns the runs still missing, so the CLI can exit non-zero naming them.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.experiments.aggregate import aggregate, primary_score
from workbench.experiments.spec import Cell, Experiment, Run, Variant
from workbench.storage import write_json_atomic


def finished(run: Run) -> dict[str, Any] | None:
    """The run's record if it has one (trained to the end, or stopped by a diverging loss)."""
    path = run.directory / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); delete it to re-run that run") from None


def chosen_rate(experiment: Experiment, results: Path) -> Any:
    """``chosen(cell, variant)``: the grid's best rate once every grid run of the pair has a record."""

    def chosen(cell: Cell, variant: Variant) -> float | None:
        grid = [experiment.run(cell, variant, 0, lr, "grid", results) for lr in experiment.grid(cell)]
        if len(grid) == 1:  # a one-rate grid chooses before any run: every seed can train at once
            return grid[0].lr
        records = [finished(run) for run in grid]
        if not grid or any(r is None for r in records):
            return None
        scored = [(primary_score(r), -r.get("steps", 0), -run.lr, run.lr) for run, r in zip(grid, records)]
        return max(scored)[-1]

    return chosen


@contextmanager
def claim_run(directory: Path) -> Iterator[str | None]:
    """Hold an exclusive lock on one run while it trains; yields None when it is ours, else who has it."""
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / "running.lock"
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            yield handle.read().strip() or "pid unknown"
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield None
        # Only a finished run's lock goes: a process that opened the old file meanwhile finds the
        # result and skips; after a failure the file stays, so every process locks the same one.
        if (directory / "result.json").is_file():
            lock_path.unlink(missing_ok=True)


def refuse_stale(runs: list[Run]) -> None:
    """A finished run counts only if it was made with the config its cell would use today.

    A default that changed since (a mixer option, say) would otherwise be averaged in silently
    with new seeds; the runs are named with what changed, so the user moves them away.
    """
    from workbench.mixers import MIXERS
    from workbench.train import resolved_mixer_options

    stale = []
    for run in runs:
        record = finished(run)
        if record is None:
            continue
        current = json.loads(json.dumps(run.config.to_dict()))
        changes = _config_changes(record.get("config") or {}, current)
        if "mixer_options_resolved" in record:  # a default that moved is a change too
            mixer_class = MIXERS.get(run.config.model.mixer)
            added = getattr(mixer_class, "options_added_later", {})
            removed = getattr(mixer_class, "options_removed", {})
            changes += _config_changes(record["mixer_options_resolved"], resolved_mixer_options(run.config),
                                       "mixer_options_resolved.", added, removed)
        if changes:
            stale.append(f"{run.directory / 'result.json'}: " + "; ".join(changes[:3]))
    if stale:
        listing = "\n  ".join(stale[:5]) + (f"\n  ... and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise ConfigError(f"{len(stale)} finished run(s) were made with another config than these cells use now "
                          f"(recorded -> now):\n  {listing}\nmove them away (or delete them) to re-run those cells")


def _config_changes(recorded: dict[str, Any], current: dict[str, Any], prefix: str = "",
                    added: dict[str, Any] | None = None, removed: dict[str, Any] | None = None) -> list[str]:
    """What differs; a key ``added`` later (name -> the value that does what the code did before it
    existed) is no change where the record lacks it and the value now is that one, and a key
    ``removed`` since (name -> the value at which it did nothing) is none where the record holds that value."""
    changes = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if added and key not in recorded and key in added and new == added[key]:
            continue
        if removed and key not in current and key in removed and old == removed[key]:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def train_run(run: Run, experiment: Experiment, progress: bool, device: str | None, keep_model: bool = False) -> None:
    """Train one run into its directory; a loss that diverges is a result too (recorded as such).

    ``keep_model``: the final checkpoint stays beside result.json as ``model.pt``, weights and
    config only (what ``workbench eval`` and a notebook need; no optimizer, so about a third of the size).
    """
    from workbench.checkpoint import MODEL_KEYS, load_checkpoint, save_checkpoint
    from workbench.provenance import git_commit
    from workbench.train import train

    extra = {"experiment": experiment.name, "budget": experiment.budget, "label": run.cell.label,
             "variant": run.variant.label, "stage": run.stage, "lr": run.lr}
    try:
        train(run.config, out_dir=run.directory, resume=True, progress=progress, device=device, extra=extra)
    except FloatingPointError as exc:
        write_json_atomic(run.directory / "result.json", {
            **extra, "status": "diverged", "error": str(exc), "config": run.config.to_dict(), "metrics": {},
            "seed": run.seed, "git_commit": git_commit()})
    checkpoint = run.directory / "checkpoint.pt"
    if keep_model and checkpoint.is_file() and (run.directory / "result.json").is_file():
        payload = load_checkpoint(checkpoint)
        save_checkpoint(run.directory / "model.pt", {key: payload[key] for key in MODEL_KEYS if key in payload})
    checkpoint.unlink(missing_ok=True)  # keep results small; result.json stays


def run_experiment(experiment: Experiment, results: str | Path = "results", progress: bool = True,
                   device: str | None = None, wait: bool = True, poll_s: float = 30.0,
                   allow_incomplete: bool = False, train: bool = True,
                   write_summary: bool = True, keep_models: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Train what is missing (waiting for runs other processes hold), then aggregate.

    ``train=False`` only aggregates what has finished (the table of a protocol still running);
    ``write_summary=False`` returns the summary without writing it (the caller merges it);
    ``keep_models`` keeps each trained model as ``model.pt`` in its run directory (see :func:`train_run`).
    Returns the summary and a list of what is still missing (empty when the experiment is complete).
    """
    results = Path(results)
    chosen = chosen_rate(experiment, results)
    all_runs, _ = experiment.runs(results, chosen)
    for run in all_runs:  # every config is checked before hours of training start
        _check(run)
    refuse_stale([r for r in all_runs if finished(r) is not None])
    announced = False
    while train:
        runs, blocked = experiment.runs(results, chosen)
        todo = [r for r in runs if finished(r) is None]
        todo.sort(key=lambda r: _priority(experiment, r))
        if progress and not announced:
            done = len(runs) - len(todo)
            print(f"[{experiment.name}/{experiment.budget}] {done} of {len(runs)} listed runs done, {len(todo)} to run"
                  + (f", {len(blocked)} cell(s) waiting for a learning rate" if blocked else ""), flush=True)
            announced = True
        trained = held = 0
        for index, run in enumerate(todo, 1):
            with claim_run(run.directory) as holder:
                if holder is not None:
                    held += 1
                    continue
                if finished(run) is not None:  # finished by another process since the list was made
                    continue
                if progress:
                    print(f"[{experiment.name}/{experiment.budget}] {index}/{len(todo)}: {run.cell.label} / "
                          f"{run.variant.label} / lr {run.lr:g} / seed {run.seed}", flush=True)
                train_run(run, experiment, progress, device, keep_models)
                trained += 1
        runs, blocked = experiment.runs(results, chosen)
        left = [r for r in runs if finished(r) is None]
        if not left and not blocked:
            break
        if trained:  # new results may have unblocked seeds: list again at once
            continue
        if held and any(not _held(r) for r in left):  # a holder finished or died meanwhile: take over at once
            continue
        if not (wait and (held or any(_held(r) for r in left))):
            break
        if progress:
            print(f"[{experiment.name}/{experiment.budget}] waiting for {held} run(s) held by other processes",
                  flush=True)
        time.sleep(poll_s)
    summary = aggregate(experiment, results, allow_incomplete=allow_incomplete, write=write_summary)
    runs, blocked = experiment.runs(results, chosen)
    missing = [f"{r.cell.label} / {r.variant.label} / lr {r.lr:g} / seed {r.seed}" for r in runs if finished(r) is None]
    return summary, missing + blocked


def _priority(experiment: Experiment, run: Run) -> tuple:
    """Grids first (they unblock the seeds), the grid's middle rate first (so a partial pass of the
    protocol has one comparable rate for every pair), then the experiment's order of cells and variants."""
    grid = experiment.lr_grid or ()
    middle = grid[len(grid) // 2] if grid else None
    rank = 0 if run.lr == middle else 1 + (grid.index(run.lr) if run.lr in grid else 0)
    cell = next(i for i, c in enumerate(experiment.cells) if c.label == run.cell.label)
    variant = next(i for i, v in enumerate(experiment.variants) if v.label == run.variant.label)
    return (run.stage != "grid", rank if run.stage == "grid" else 0, cell, variant, run.seed)


def _held(run: Run) -> bool:
    """True while another process holds the run's lock."""
    lock_path = run.directory / "running.lock"
    if not lock_path.is_file():
        return False
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _check(run: Run) -> None:
    from workbench.train import check_config

    try:
        check_config(run.config)
    except ConfigError as exc:
        raise ConfigError(f"{run.cell.label} / {run.variant.label}: {exc}") from None
