"""When a mixer's default moves, pin the old value into the runs made with it.

A finished run counts only if it was made with the config its cell would use today
(``runner.refuse_stale``), so moving a default (say ``seeking.hard_writes`` from false to true)
makes every earlier run of that mixer stale. Deleting them would lose measurements; instead each
keeps what it was, under a label that says so:

* a run whose variant does not name the option, made with the old value, is relabelled with it
  named (``seeking`` -> ``seeking:hard_writes=false``), and its recorded config names it too;
* a run whose variant names the new default explicitly (``seeking:hard_writes=true``) *is* the
  default now: the option leaves its label and config (-> ``seeking``).

Directories are renamed to match, each record gains a ``relabelled`` entry saying from what and
why, and the rows of every ``compare-*.json`` table follow the same mapping, so the tables read
the same numbers under the new labels and a later ``workbench compare`` fills the new default's
missing seeds instead of mixing two configs in one row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.experiments.spec import Variant
from workbench.storage import write_json_atomic


@dataclass(frozen=True)
class Move:
    """One default that moved: ``mixer.option`` from ``old`` to ``new`` (today's default)."""

    mixer: str
    option: str
    old: Any
    new: Any

    @property
    def why(self) -> str:
        return f"{self.mixer}.{self.option} default moved {json.dumps(self.old)} -> {json.dumps(self.new)}"


def relabel(label: str, move: Move) -> str | None:
    """The variant label under the new default, or None where it does not change."""
    head, at, model = label.partition("@")
    mixer, *pairs = head.split(":")
    if mixer != move.mixer:
        return None
    named = [p for p in pairs if p.split("=", 1)[0] == move.option]
    if named:
        value = named[0].split("=", 1)[1] if "=" in named[0] else None
        try:
            value = json.loads(value) if value is not None else None
        except json.JSONDecodeError:
            pass
        if value != move.new:
            return None  # names another value: it stays what it says
        pairs = [p for p in pairs if p not in named]
    else:
        pairs = [*pairs, f"{move.option}={json.dumps(move.old)}"]
    return ":".join([mixer, *pairs]) + (at + model if at else "")


def _names(label: str, option: str) -> bool:
    return any(p.split("=", 1)[0] == option for p in label.partition("@")[0].split(":")[1:])


def _safe(label: str) -> str:
    return Variant(label, "").safe  # the run directory's fragment, as the runner names it


def _resolved(record: dict[str, Any], option: str, added_later: dict[str, Any]) -> Any:
    resolved = record.get("mixer_options_resolved") or {}
    if option in resolved:
        return resolved[option]
    return added_later.get(option, (record.get("config") or {}).get("model", {}).get("mixer_options", {}).get(option))


def plan(results: Path, move: Move) -> tuple[list[tuple[Path, Path, str, str]], list[Path]]:
    """(run moves: old dir, new dir, old label, new label), and the tables whose rows change."""
    from workbench.mixers import MIXERS

    added_later = getattr(MIXERS[move.mixer], "options_added_later", {})
    moves = []
    for record_path in sorted(results.rglob("result.json")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {record_path}: {exc}; fix or move it first") from None
        label = record.get("variant") if isinstance(record, dict) else None
        if not isinstance(label, str) or (record.get("config") or {}).get("model", {}).get("mixer") != move.mixer:
            continue
        new_label = relabel(label, move)
        if new_label is None:
            continue
        named = _names(label, move.option)
        found = _resolved(record, move.option, added_later)
        if not named and found == move.new:
            continue  # made under the new default already: it is what its label says
        expected = move.new if named else move.old
        if found != expected:
            raise ConfigError(f"{record_path}: variant {label!r} ran with {move.option}={json.dumps(found)}, "
                              f"not {json.dumps(expected)}; is --old right?")
        directory = record_path.parent
        old_fragment, new_fragment = f"--{_safe(label)}--", f"--{_safe(new_label)}--"
        if old_fragment not in directory.name:
            raise ConfigError(f"{directory}: the name does not hold its variant {label!r}; move it by hand")
        target = directory.with_name(directory.name.replace(old_fragment, new_fragment, 1))
        moves.append((directory, target, label, new_label))
    for directory in sorted({p.parent for p in results.rglob("running.lock")}):
        if not (directory / "result.json").is_file() and f"--{move.mixer}" in directory.name:
            raise ConfigError(f"{directory} is an unfinished {move.mixer} run: finish it (or remove it) first")
    targets = [t for _, t, _, _ in moves]
    sources = {d for d, _, _, _ in moves}
    clash = [t for t in targets if (t.exists() and t not in sources) or targets.count(t) > 1]
    if clash:
        raise ConfigError(f"{clash[0]} exists already (a run made under both labels?); move one away first")
    tables = [p for p in sorted(results.rglob("compare-*.json")) if _table_changes(p, move)]
    return moves, tables


def _table_changes(path: Path, move: Move) -> bool:
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    rows = table.get("rows") if isinstance(table, dict) else None
    if move.why in (table.get("relabelled") or [] if isinstance(table, dict) else []):
        return False  # this table has had this move
    return isinstance(rows, list) and any(relabel(r.get("variant", ""), move) for r in rows if isinstance(r, dict))


def _relabel_table(path: Path, move: Move) -> None:
    table = json.loads(path.read_text())

    def new(label: Any) -> Any:
        return (relabel(label, move) or label) if isinstance(label, str) else label

    for entry in [*table.get("rows", []), *table.get("incomplete", [])]:
        if isinstance(entry, dict) and "variant" in entry:
            entry["variant"] = new(entry["variant"])
    # ``variants`` is the experiment's own list (its code's labels, which now mean the new default): it stays.
    table.setdefault("relabelled", []).append(move.why)
    write_json_atomic(path, table)


def pin_default(results: Path, move: Move, dry_run: bool = False) -> tuple[int, int]:
    """Apply ``move`` to every run and table under ``results``; returns (runs, tables) changed."""
    moves, tables = plan(results, move)
    if dry_run:
        return len(moves), len(tables)
    staged = []
    for directory, target, label, new_label in moves:  # two steps: a run may move into another's old name
        record_path = directory / "result.json"
        record = json.loads(record_path.read_text())
        options = record["config"]["model"].setdefault("mixer_options", {})
        if move.option in options:
            del options[move.option]
        else:
            options[move.option] = move.old
        record["variant"] = new_label
        record["relabelled"] = {"from": label, "why": move.why}
        write_json_atomic(record_path, record)
        staging = directory.with_name(directory.name + ".pinning")
        directory.rename(staging)
        staged.append((staging, target))
    for staging, target in staged:
        staging.rename(target)
    for path in tables:
        _relabel_table(path, move)
    return len(moves), len(tables)


def parse_move(mixer: str, option: str, old: str) -> Move:
    """Check the move against the code: the option exists and today's default differs from ``old``."""
    from workbench.mixers import MIXERS

    if mixer not in MIXERS:
        raise ConfigError(f"unknown mixer {mixer!r}; choose from {', '.join(sorted(MIXERS))}")
    defaults = MIXERS[mixer].Options()
    if not hasattr(defaults, option):
        raise ConfigError(f"{mixer} has no option {option!r}")
    try:
        old_value = json.loads(old)
    except json.JSONDecodeError:
        old_value = old
    new_value = getattr(defaults, option)
    if old_value == new_value:
        raise ConfigError(f"{mixer}.{option} defaults to {json.dumps(new_value)} today: nothing moved")
    return Move(mixer, option, old_value, new_value)
