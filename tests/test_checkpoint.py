"""Checkpoints (issue 22): self-contained (vocabulary and data hash inside), checked before use,
fuzzed (truncated, random bytes, keys deleted, types swapped, a malicious pickle): always one line,
exit 2, never a traceback, never code execution."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from workbench.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from workbench.cli import main
from workbench.data import DataError
from workbench.train import train


def make_text(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["the", "king", "queen", "sword", "crown", "night", "day", "über", "café", "love", "war"]
    return "".join(rng.choice(words) + rng.choice([" ", " ", ",\n", ".\n"]) for _ in range(n_chars))[:n_chars]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("workbench: error: "), err
    return lines[0]


@pytest.fixture()
def copy_run(small_config, tmp_path) -> Path:
    """A finished tiny copy run: its checkpoint (at the last step) and result.json."""
    out = tmp_path / "copy-run"
    train(small_config("copy", "transformer", steps=2, eval_every=2, checkpoint_every=2), out_dir=out,
          progress=False, device="cpu")
    return out


@pytest.fixture()
def charlm_run(small_config, tmp_path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(3000, seed=1), encoding="utf-8")
    out = tmp_path / "charlm-run"
    config = small_config("charlm", "inverted", task_options={"path": str(corpus), "context": 16,
                                                              "max_eval_windows": 4}, steps=3)
    train(config, out_dir=out, progress=False, device="cpu")
    return out, corpus


def _resume_argv(run: Path) -> list[str]:
    return ["train", "--config", str(run / "result.json"), "--out", str(run), "--resume", "--quiet"]


# ----------------------------------------------------------------------------- self-contained


def test_a_charlm_checkpoint_carries_its_vocabulary_data_hash_and_io(charlm_run):
    run, corpus = charlm_run
    payload = load_checkpoint(run / "checkpoint.pt")
    text = corpus.read_text(encoding="utf-8")
    assert payload["task_state"]["chars"] == "".join(sorted(set(text)))  # the key the ONNX exporter reads
    assert payload["task_state"]["data_sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert payload["io"] == {"input_kind": "tokens", "head": "lm", "vocab_size": len(set(text)), "input_dim": 0,
                             "n_outputs": 0}


def _same_vocabulary_other_text(corpus: Path) -> None:
    text = corpus.read_text(encoding="utf-8")
    changed = text[::-1]
    assert sorted(set(changed)) == sorted(set(text)) and changed != text
    corpus.write_text(changed, encoding="utf-8")


def test_eval_refuses_a_changed_text_with_the_same_vocabulary(charlm_run, capsys):
    """Before: eval rebuilt the vocabulary from the file and reported a wrong BPC with exit 0."""
    run, corpus = charlm_run
    assert main(["eval", str(run / "checkpoint.pt")]) == 0
    capsys.readouterr()
    _same_vocabulary_other_text(corpus)
    assert main(["eval", str(run / "checkpoint.pt")]) == 2
    line = _one_line_error(capsys)
    assert "is not the text" in line and "sha256" in line and "--data" in line
    with pytest.raises(DataError, match="is not the text"):
        model_from_checkpoint(run / "checkpoint.pt")


def test_resume_refuses_a_changed_text(charlm_run, capsys):
    """Before: --resume trained on the remapped vocabulary without a word."""
    run, corpus = charlm_run
    _same_vocabulary_other_text(corpus)
    assert main(_resume_argv(run)) == 2
    assert "is not the text" in _one_line_error(capsys)


def test_generate_needs_no_data_and_eval_takes_the_moved_file(charlm_run, tmp_path, capsys):
    """Before: after the training text moved, eval and generate both failed."""
    run, corpus = charlm_run
    moved = tmp_path / "moved.txt"
    corpus.rename(moved)
    assert main(["generate", str(run / "checkpoint.pt"), "--prompt", "the ", "--n", "12"]) == 0
    assert capsys.readouterr().out.startswith("the ")
    assert main(["eval", str(run / "checkpoint.pt")]) == 2
    line = _one_line_error(capsys)
    assert "does not exist" in line and "--data" in line
    assert main(["eval", str(run / "checkpoint.pt"), "--data", str(moved)]) == 0
    assert "bpc" in capsys.readouterr().out
    other = tmp_path / "other.txt"
    other.write_text(make_text(3000, seed=7), encoding="utf-8")
    assert main(["eval", str(run / "checkpoint.pt"), "--data", str(other)]) == 2
    assert "is not the text" in _one_line_error(capsys)


def test_a_checkpoints_data_path_is_only_a_hint(charlm_run, capsys):
    """A path in a checkpoint pointing at something else (a device, a directory, another file) is
    never used as training text: not a regular file, or not the hashed text, is refused."""
    run, _ = charlm_run
    payload = load_checkpoint(run / "checkpoint.pt")
    for path in ("/dev/zero", str(run), "/etc/hostname"):
        payload["config"]["task"]["options"]["path"] = path
        torch.save(payload, run / "checkpoint.pt")
        assert main(["eval", str(run / "checkpoint.pt")]) == 2
        line = _one_line_error(capsys)
        assert "not a regular file" in line or "is not the text" in line or "does not exist" in line or \
            "characters" in line


def test_generate_rejects_bad_sampling_settings_with_one_line(charlm_run, capsys):
    run, _ = charlm_run
    ckpt = str(run / "checkpoint.pt")
    for flags, message in [(["--top-k", "0"], "--top-k"), (["--top-k", "-3"], "--top-k"),
                           (["--temperature", "nan"], "--temperature"), (["--temperature", "-1"], "--temperature"),
                           (["--temperature", "inf"], "--temperature"), (["--n", "-5"], "--n"),
                           (["--seed", "-1"], "--seed"), (["--seed", str(2**70)], "--seed"),
                           (["--prompt", ""], "empty"), (["--prompt", "\u2603"], "outside the model's vocabulary"),
                           (["--top-k", "x"], "invalid int")]:
        assert main(["generate", ckpt, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (flags, err)
    assert main(["generate", ckpt, "--top-k", "1000", "--temperature", "0", "--n", "0"]) == 0


def test_generate_refuses_a_checkpoint_of_another_task(copy_run, capsys):
    assert main(["generate", str(copy_run / "checkpoint.pt")]) == 2
    assert "char-LM checkpoint" in _one_line_error(capsys)


# ----------------------------------------------------------------------------- the payload checked before use


@pytest.mark.parametrize("key", ["optimizer", "rng", "step", "history", "train_time", "tokens", "model", "config",
                                 "task_state"])
def test_resume_from_a_checkpoint_missing_a_key_is_one_line(copy_run, key, capsys):
    """Before: KeyError."""
    payload = torch.load(copy_run / "checkpoint.pt", weights_only=True)
    del payload[key]
    torch.save(payload, copy_run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=f"lacks {key}"):
        load_checkpoint(copy_run / "checkpoint.pt", resume=True)
    assert main(_resume_argv(copy_run)) == 2
    assert f"lacks {key}" in _one_line_error(capsys)


def _mutate(run: Path, change) -> None:
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    change(payload)
    torch.save(payload, run / "checkpoint.pt")


@pytest.mark.parametrize("what, change, message", [
    ("a bad RNG state", lambda p: p.update(rng=torch.zeros(7, dtype=torch.uint8)), "RNG state"),
    ("an RNG state of floats", lambda p: p.update(rng=torch.zeros(5056)), "RNG state"),
    ("wrong weights", lambda p: p["model"].update({k: torch.zeros(3) for k in list(p["model"])[:1]}),
     "does not match its model config"),
    ("an extra weight", lambda p: p["model"].update(extra=torch.zeros(3)), "does not match its model config"),
    ("NaN weights", lambda p: p["model"].update({k: v * float("nan") for k, v in list(p["model"].items())[:1]}),
     "NaN or infinite"),
    ("optimizer moments of another shape", lambda p: [s.update(exp_avg=torch.zeros(2)) for s in
                                                       p["optimizer"]["state"].values()], "optimizer state"),
    ("an optimizer for other parameters", lambda p: p["optimizer"]["param_groups"][0].update(params=[0]),
     "optimizer state"),
    ("a step that is not a count", lambda p: p.update(step="3"), "step"),
    ("a negative step", lambda p: p.update(step=-1), "step"),
    ("a history of strings", lambda p: p.update(history=["x"]), "history"),
    ("train time NaN", lambda p: p.update(train_time=float("nan")), "train_time"),
    ("an invalid config", lambda p: p["config"]["train"].update(lr=float("nan")), "config is invalid"),
    ("a config of another type", lambda p: p.update(config=[1]), "config is invalid"),
    ("a vocabulary that is not text", lambda p: p["task_state"].update(chars=5), "vocabulary"),
    ("an io record of garbage", lambda p: p.update(io={"head": 3}), "I/O record"),
])
def test_resume_from_a_damaged_checkpoint_is_one_line(copy_run, what, change, message, capsys):
    """Before: TypeError / RuntimeError / KeyError tracebacks (or a crash a few steps later)."""
    _mutate(copy_run, change)
    assert main(_resume_argv(copy_run)) == 2, what
    assert message in _one_line_error(capsys), what


# ----------------------------------------------------------------------------- fuzzing


def _expect_one_line_or_success(argv: list[str], capsys) -> int:
    code = main(argv)
    captured = capsys.readouterr()
    assert code in (0, 2), (argv, code, captured.err)
    assert "Traceback" not in captured.err + captured.out
    if code == 2:
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("workbench: error: "), captured.err
    return code


def test_truncated_at_every_tenth_and_random_bytes(copy_run, capsys):
    ckpt = copy_run / "checkpoint.pt"
    data = ckpt.read_bytes()
    rng = random.Random(0)
    broken = [data[: len(data) * tenth // 10] for tenth in range(10)]  # 0%, 10%, ..., 90%
    broken += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))) for _ in range(5)]
    for case in broken:
        ckpt.write_bytes(case)
        assert _expect_one_line_or_success(["eval", str(ckpt)], capsys) == 2
        assert _expect_one_line_or_success(_resume_argv(copy_run), capsys) == 2
    for _ in range(6):  # bytes flipped here and there: refused, or (inside tensor data) loaded as other weights
        flipped = bytearray(data)
        for _ in range(20):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        ckpt.write_bytes(bytes(flipped))
        _expect_one_line_or_success(["eval", str(ckpt)], capsys)
        _expect_one_line_or_success(_resume_argv(copy_run), capsys)


def test_keys_deleted_one_at_a_time_and_types_swapped(copy_run, capsys):
    ckpt = copy_run / "checkpoint.pt"
    original = torch.load(ckpt, weights_only=True)
    swaps = [None, "x", 3, torch.zeros(3)]
    for key in original:
        variants = [{k: v for k, v in original.items() if k != key}]
        variants += [{**original, key: swap} for swap in swaps]
        for payload in variants:
            torch.save(payload, ckpt)
            eval_code = _expect_one_line_or_success(["eval", str(ckpt)], capsys)
            resume_code = _expect_one_line_or_success(_resume_argv(copy_run), capsys)
            optional = ("io", "mixer_options_resolved")  # older checkpoints lack them
            if key not in optional and (key not in payload or payload[key] is None):
                assert resume_code == 2, key
                if key in ("format", "config", "model", "task_state"):
                    assert eval_code == 2, key


class _Evil:
    """Unpickling this would run ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_stays_inert(copy_run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = copy_run / "checkpoint.pt"
    payload = torch.load(ckpt, weights_only=True)
    for write in (lambda: torch.save({**payload, "config": _Evil(marker)}, ckpt),   # inside a torch zip
                  lambda: torch.save(_Evil(marker), ckpt),
                  lambda: ckpt.write_bytes(pickle.dumps(_Evil(marker)))):         # a bare pickle
        write()
        assert main(["eval", str(ckpt)]) == 2
        assert "corrupt or not a workbench checkpoint" in _one_line_error(capsys)
        assert main(_resume_argv(copy_run)) == 2
        _one_line_error(capsys)
        assert main(["generate", str(ckpt)]) == 2
        _one_line_error(capsys)
        assert not marker.exists(), "the pickle ran code"
