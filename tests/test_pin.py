"""`workbench pin-default`: a moved default is pinned into the runs made with the old one."""

import json
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.config import ConfigError
from workbench.experiments.pin import Move, pin_default, relabel

MOVE = Move("seeking", "hard_writes", False, True)


@pytest.mark.parametrize("label, expected", [
    ("seeking", "seeking:hard_writes=false"),
    ("seeking:n_units=32", "seeking:n_units=32:hard_writes=false"),
    ("seeking@n_layers=2", "seeking:hard_writes=false@n_layers=2"),
    ("seeking:hard_writes=true", "seeking"),
    ("seeking:n_units=32:hard_writes=true@n_layers=2", "seeking:n_units=32@n_layers=2"),
    ("seeking:hard_writes=false", None),  # names the old value already
    ("transformer", None),
    ("seekingx", None),
])
def test_relabel(label, expected):
    assert relabel(label, MOVE) == expected


def _run(results: Path, label: str, hard: bool, named: bool, seed: int = 0) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    directory = results / "v2" / "full" / f"mqar-64x4--{safe}--lr0.003--s{seed}"
    directory.mkdir(parents=True)
    options = {"hard_writes": hard} if named else {}
    record = {"variant": label, "label": "mqar-64x4", "seed": seed, "metrics": {"accuracy": 0.5 + hard / 4},
              "config": {"model": {"mixer": "seeking", "mixer_options": options}},
              "mixer_options_resolved": {"n_units": 64, "hard_writes": hard}}
    (directory / "result.json").write_text(json.dumps(record))
    return directory


def test_pin_default_relabels_runs_and_tables(tmp_path):
    _run(tmp_path, "seeking", hard=False, named=False)
    _run(tmp_path, "seeking:hard_writes=true", hard=True, named=True)
    _run(tmp_path, "transformer", hard=False, named=False, seed=1)  # another mixer is never touched...
    other = tmp_path / "v2" / "full" / "mqar-64x4--transformer--lr0.003--s1"
    record = json.loads((other / "result.json").read_text())
    record["config"]["model"]["mixer"] = "transformer"
    (other / "result.json").write_text(json.dumps(record))
    table = {"rows": [{"label": "mqar-64x4", "variant": "seeking"}, {"label": "mqar-64x4", "variant": "seeking:hard_writes=true"},
                      {"label": "mqar-64x4", "variant": "transformer"}],
             "incomplete": [{"label": "mqar-64x4", "variant": "seeking"}], "variants": ["transformer", "seeking"]}
    (tmp_path / "compare-v2-full.json").write_text(json.dumps(table))

    assert pin_default(tmp_path, MOVE, dry_run=True) == (2, 1)
    assert (tmp_path / "v2/full/mqar-64x4--seeking--lr0.003--s0").is_dir()  # a dry run changes nothing
    assert pin_default(tmp_path, MOVE) == (2, 1)

    runs = tmp_path / "v2" / "full"
    old = json.loads((runs / "mqar-64x4--seeking_hard_writes_false--lr0.003--s0" / "result.json").read_text())
    assert old["variant"] == "seeking:hard_writes=false"
    assert old["config"]["model"]["mixer_options"] == {"hard_writes": False}
    assert old["relabelled"]["from"] == "seeking"
    new = json.loads((runs / "mqar-64x4--seeking--lr0.003--s0" / "result.json").read_text())
    assert new["variant"] == "seeking" and new["config"]["model"]["mixer_options"] == {}
    assert new["metrics"]["accuracy"] == 0.75  # the numbers travel with their run
    assert (runs / "mqar-64x4--transformer--lr0.003--s1").is_dir()
    table = json.loads((tmp_path / "compare-v2-full.json").read_text())
    assert [r["variant"] for r in table["rows"]] == ["seeking:hard_writes=false", "seeking", "transformer"]
    assert table["incomplete"][0]["variant"] == "seeking:hard_writes=false"
    assert table["variants"] == ["transformer", "seeking"]  # the experiment's list: its labels mean the new default
    assert pin_default(tmp_path, MOVE) == (0, 0)  # twice is once


def test_pin_default_refuses_a_run_that_contradicts_the_move(tmp_path):
    _run(tmp_path, "seeking:hard_writes=true", hard=False, named=True)  # its label and its record disagree
    with pytest.raises(ConfigError, match="is --old right"):
        pin_default(tmp_path, MOVE)


def test_pin_default_refuses_an_unfinished_run(tmp_path):
    directory = tmp_path / "v2" / "full" / "mqar-64x4--seeking--lr0.003--s2"
    directory.mkdir(parents=True)
    (directory / "running.lock").write_text("pid 1")
    with pytest.raises(ConfigError, match="unfinished"):
        pin_default(tmp_path, MOVE)


@pytest.mark.parametrize("argv, message", [
    (["--mixer", "nope", "--option", "x", "--old", "1"], "unknown mixer"),
    (["--mixer", "seeking", "--option", "nope", "--old", "1"], "no option"),
    (["--mixer", "seeking", "--option", "n_units", "--old", "64"], "nothing moved"),
])
def test_pin_default_cli_rejects_bad_input(tmp_path, capsys, argv, message):
    assert main(["pin-default", "--results", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
