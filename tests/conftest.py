"""Shared fixtures: tiny models, small task options and a self-made text corpus.

Nothing here depends on tiny-shakespeare or the network: char-LM tests write their
own UTF-8 file under ``tmp_path`` and pass it as the task's ``path`` option.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from workbench.config import RunConfig
from workbench.mixers import MIXERS

# Tiny models: OpenMP thread start-up and spinning cost more than the maths, and the
# test machine is a shared 2-core box. One thread keeps the suite fast and steady.
torch.set_num_threads(1)

# Small options per mixer, chosen so the tests' short sequences exercise every path: the inverted
# ring wraps (8 units), windows are shorter than the sequences, chunks are crossed.
SMALL_MIXER_OPTIONS: dict[str, dict] = {
    "transformer": {"n_heads": 4},
    "inverted": {"n_units": 8, "read_topk": 2, "write_bias": 2.0, "chunk_size": 6},
    "sliding_window": {"n_heads": 4, "window": 5},
    "based": {"feature_dim": 4, "n_heads": 2, "window": 4, "window_heads": 2, "chunk_size": 6},
    # (Gated) DeltaNet: d_k != d_v, and chunks of 8 so the tests' sequences cross chunk boundaries.
    "gated_deltanet": {"n_heads": 2, "d_head": 8, "expand_v": 1.5, "chunk_size": 8},
    "deltanet": {"n_heads": 2, "d_head": 8, "expand_v": 1.5, "chunk_size": 8},
    "mamba": {"d_state": 4, "chunk_size": 8},  # 19-21-token tests cross two chunk boundaries
    "gsa": {"n_heads": 2, "n_slots": 8, "chunk_size": 4},
    "seeking": {"n_heads": 2, "n_units": 6, "chunk_size": 4, "recovery": 4.0},
}


def small_mixer_options(mixer: str) -> dict:
    """Small options for ``mixer`` (its defaults for a mixer added after these tests)."""
    return dict(SMALL_MIXER_OPTIONS.get(mixer, {}))

# Fast evaluation for every task: small held-out sets, no length-generalization extras.
SMALL_TASK_OPTIONS: dict[str, dict] = {
    "copy": {"max_len": 6, "n_eval": 32, "long_lengths": []},
    "mqar": {"seq_len": 32, "kv_pairs": 4, "vocab_size": 64, "n_eval": 32, "long_configs": []},
    "digits": {},
    "diabetes": {},
}


@pytest.fixture(params=sorted(MIXERS))
def mixer_name(request) -> str:
    """Every registered mixer, one test per mixer."""
    return request.param


@pytest.fixture
def small_config():
    """Factory: a validated tiny RunConfig (d_model 32, one layer) for a task and mixer."""

    def make(task: str = "copy", mixer: str = "transformer", task_options: dict | None = None, **train) -> RunConfig:
        train_section = {"steps": 4, "batch_size": 8, "warmup_steps": 2, "eval_every": 2, "checkpoint_every": 2}
        train_section.update(train)
        return RunConfig.from_dict(
            {
                "task": {"name": task, "options": dict(SMALL_TASK_OPTIONS.get(task, {}), **(task_options or {}))},
                "model": {
                    "mixer": mixer,
                    "d_model": 32,
                    "n_layers": 1,
                    "mlp_ratio": 2,
                    "mixer_options": small_mixer_options(mixer),
                },
                "train": train_section,
            }
        )

    return make


def make_text(n_chars: int, seed: int = 0) -> str:
    """Deterministic pseudo-English with some non-ASCII characters, ``n_chars`` long."""
    rng = random.Random(seed)
    words = ["the", "king", "queen", "sword", "crown", "night", "day", "über", "café", "naïve", "love", "war"]
    parts: list[str] = []
    length = 0
    while length < n_chars:
        word = rng.choice(words)
        sep = rng.choice([" ", " ", " ", ",\n", ".\n"])
        parts.append(word + sep)
        length += len(word) + len(sep)
    return "".join(parts)[:n_chars]


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    """A 4,000-character UTF-8 corpus (enough for char-LM contexts up to 199)."""
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(4000), encoding="utf-8")
    return path


def scramble(module: torch.nn.Module, std: float = 0.4, seed: int = 0) -> torch.nn.Module:
    """Large random weights so gates flip, units get evicted and no path is silently zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module


@pytest.fixture
def scrambled():
    """The ``scramble`` helper, as a fixture."""
    return scramble


@pytest.fixture
def mixer_options():
    """The ``small_mixer_options`` helper, as a fixture."""
    return small_mixer_options


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor an op returns (forward and backward): the no-n-by-n check."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.shapes.append((str(func), tuple(tensor.shape)))
        return out


@pytest.fixture
def shape_recorder():
    """The ``ShapeRecorder`` class, as a fixture: ``with shape_recorder() as recorder: ...``."""
    return ShapeRecorder


@pytest.fixture()
def corpus_dir(tmp_path, monkeypatch) -> Path:
    """A small generated corpus standing in for tiny-shakespeare, in WORKBENCH_DATA_DIR (no shared path)."""
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(1500)]
    data = tmp_path / "data"
    data.mkdir()
    (data / "tinyshakespeare.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(data))
    return data
