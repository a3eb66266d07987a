"""What an experiment is: cells (a task and its budget) x variants (a mixer and its model) x seeds.

An experiment is data (Zoology's convention): ``Experiment.runs`` lists every run it needs, each a
complete ``RunConfig`` with a directory name, so a protocol is read by reading its list of cells and
variants (``protocol_v2.py``, ``ablation.py``, ``pareto.py``), not an if-chain.

Learning rates. With an ``lr_grid`` every (cell, variant) first trains seed 0 at each rate of the
grid; the rate whose seed-0 run scores best on the task's primary metric is chosen (ties: fewer
steps, then the smaller rate), and seeds 1.. train at that rate only. A cell may instead take the
rate chosen on another cell (``lr_from``: the 600 s char-LM run uses the 3,000-step run's rate).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, ModelConfig, RunConfig, TaskConfig, TrainConfig

BUDGETS = ("smoke", "demo", "full")


@dataclass(frozen=True)
class Cell:
    """One task configuration and its training budget: a row group of the table."""

    label: str  # e.g. "mqar-256x16"
    task: str
    task_options: dict[str, Any]
    train: dict[str, Any]  # TrainConfig fields (steps, batch_size, eval_every, target_metric, ...)
    metrics: tuple[str, ...]  # what the table shows, primary first
    lr_from: str | None = None  # take the learning rate chosen on this other cell


@dataclass(frozen=True)
class Variant:
    """A column: a mixer, its options, and model overrides (depth, width, front end)."""

    label: str
    mixer: str
    options: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields: n_layers, d_model, short_conv

    @property
    def safe(self) -> str:
        """The label as a directory-name fragment."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label)


def parse_variant(spec: str) -> Variant:
    """``mixer[:option=value...][@model_field=value...]``, e.g. ``inverted:n_pools=4@n_layers=2``.

    Values are JSON where they parse (numbers, booleans, lists), strings otherwise; the label is
    the spec itself. Options are checked against the mixer when its runs are built.
    """
    head, _, model_part = spec.partition("@")
    mixer, *pairs = head.split(":")

    def parse_pairs(items: list[str], what: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pair in items:
            if "=" not in pair:
                raise ConfigError(f"variant {spec!r}: expected {what} as key=value, got {pair!r}")
            key, raw = pair.split("=", 1)
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError:
                out[key] = raw
        return out

    if not mixer:
        raise ConfigError(f"variant {spec!r} names no mixer")
    model = parse_pairs([p for p in model_part.split(":") if p], "model fields") if model_part else {}
    unknown = set(model) - {"n_layers", "d_model", "short_conv", "mlp_ratio"}
    if unknown:
        raise ConfigError(f"variant {spec!r}: unknown model fields {sorted(unknown)} (n_layers, d_model, short_conv)")
    return Variant(spec, mixer, parse_pairs(pairs, "mixer options"), model)


@dataclass(frozen=True)
class Run:
    """One training run of an experiment: cell x variant x seed at a learning rate."""

    cell: Cell
    variant: Variant
    seed: int
    lr: float
    config: RunConfig
    directory: Path
    stage: str  # "grid" (seed 0 at one rate of the grid) or "seed" (a seed at the chosen rate)


@dataclass
class Experiment:
    name: str
    budget: str
    cells: list[Cell]
    variants: list[Variant]
    seeds: int
    model: dict[str, Any]  # the base ModelConfig fields (d_model, n_layers, short_conv, ...)
    lr_grid: tuple[float, ...] | None = None  # None: each cell's train["lr"] (or the default)
    # Rate for a (cell, variant) from elsewhere (e.g. the Pareto sweep takes v2's choice); None = unknown yet.
    lr_lookup: Callable[[Cell, Variant], float | None] | None = None
    notes: str = ""

    def results_dir(self, results: Path) -> Path:
        return results / self.name / self.budget

    def summary_path(self, results: Path) -> Path:
        return results / f"compare-{self.name}-{self.budget}.json"

    def config(self, cell: Cell, variant: Variant, seed: int, lr: float) -> RunConfig:
        model = {**self.model, **variant.model}
        return RunConfig(
            task=TaskConfig(cell.task, dict(cell.task_options)),
            model=ModelConfig(mixer=variant.mixer, mixer_options=dict(variant.options), **model),
            train=TrainConfig(**{**cell.train, "seed": seed, "lr": lr}),
        ).validate()

    def run(self, cell: Cell, variant: Variant, seed: int, lr: float, stage: str, results: Path) -> Run:
        name = f"{cell.label}--{variant.safe}--lr{lr:g}--s{seed}"
        return Run(cell, variant, seed, lr, self.config(cell, variant, seed, lr), self.results_dir(results) / name,
                   stage)

    def grid(self, cell: Cell) -> tuple[float, ...]:
        if self.lr_grid and not cell.lr_from and not self.lr_lookup:
            return self.lr_grid
        return ()

    def runs(self, results: Path, chosen: Callable[[Cell, Variant], float | None]) -> tuple[list[Run], list[str]]:
        """Every run this experiment needs, given ``chosen(cell, variant)`` (the rate picked so far, or
        None while the grid is unfinished); and a description of each run that cannot be listed yet."""
        runs, blocked = [], []
        for cell in self.cells:
            for variant in self.variants:
                grid = self.grid(cell)
                for lr in grid:
                    runs.append(self.run(cell, variant, 0, lr, "grid", results))
                lr = self.rate(cell, variant, chosen)
                first = 1 if grid else 0
                if lr is None:
                    if self.seeds > first:
                        blocked.append(f"{cell.label} / {variant.label}: seeds {first}-{self.seeds - 1} wait for "
                                       f"the learning rate of {cell.lr_from or cell.label}")
                    continue
                runs += [self.run(cell, variant, seed, lr, "seed", results) for seed in range(first, self.seeds)]
        return runs, blocked

    def rate(self, cell: Cell, variant: Variant, chosen: Callable[[Cell, Variant], float | None]) -> float | None:
        """The learning rate of the seeded runs of (cell, variant), or None while it is unknown."""
        if self.lr_lookup is not None:
            return self.lr_lookup(cell, variant)
        if cell.lr_from:
            source = next((c for c in self.cells if c.label == cell.lr_from), None)
            if source is None:
                raise ConfigError(f"cell {cell.label} takes its rate from {cell.lr_from}, which is not in {self.name}")
            return chosen(source, variant) if self.grid(source) else source.train.get("lr", TrainConfig.lr)
        if self.grid(cell):
            return chosen(cell, variant)
        return cell.train.get("lr", TrainConfig.lr)

    def filtered(self, tasks: list[str] | None = None, cells: list[str] | None = None,
                 variants: list[Variant] | None = None, seeds: int | None = None,
                 lr_grid: tuple[float, ...] | None = None) -> Experiment:
        """The same experiment restricted to some cells (by task or label), with other variants, seeds or
        learning-rate grid (a run's directory names its rate, so runs on a smaller grid are the full grid's)."""
        chosen = self.cells
        if tasks:
            unknown = set(tasks) - {c.task for c in self.cells} - {c.label for c in self.cells}
            if unknown:
                raise ConfigError(f"experiment {self.name} has no task {sorted(unknown)}; it has "
                                  f"{sorted({c.task for c in self.cells})}")
            chosen = [c for c in chosen if c.task in tasks or c.label in tasks]
        if cells:
            unknown = set(cells) - {c.label for c in self.cells}
            if unknown:
                raise ConfigError(f"experiment {self.name} has no cell {sorted(unknown)}; it has "
                                  f"{[c.label for c in self.cells]}")
            chosen = [c for c in chosen if c.label in cells]
        # A cell that borrows its rate needs its source in the experiment (run or not).
        sources = {c.lr_from for c in chosen if c.lr_from}
        chosen = [c for c in self.cells if c in chosen or c.label in sources]
        return Experiment(self.name, self.budget, chosen, variants or self.variants,
                          self.seeds if seeds is None else seeds, self.model, lr_grid or self.lr_grid, self.lr_lookup,
                          self.notes)
