"""Scale-out and kill-resume, run for real in subprocesses (CPU, gloo)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

TRAIN = ["train", "--task", "mqar", "--mixer", "inverted", "--quiet",
         "--set", "model.d_model=32", "--set", "model.mixer_options.n_units=16",
         "--set", 'task.options={"seq_len": 32, "kv_pairs": 4, "n_eval": 16, "long_configs": []}',
         "--set", "train.batch_size=8", "--set", "train.eval_every=4"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def test_two_process_ddp_equals_single_process_with_the_same_global_batch(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "ddp"
    args = [*TRAIN, "--steps", "6"]
    subprocess.run([sys.executable, "-m", "workbench.cli", *args, "--out", str(single)],
                   check=True, env=_env(), timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                    f"--master_port={_free_port()}", "-m", "workbench.cli", *args, "--out", str(multi)],
                   check=True, env=_env(), timeout=300)
    a, b = _weights(single), _weights(multi)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=2e-5, rtol=1e-4), (name, (a[name] - b[name]).abs().max())


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    steps = ["--steps", "40", "--set", "train.checkpoint_every=2"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([sys.executable, "-m", "workbench.cli", *TRAIN, *steps, "--out", str(whole)],
                   check=True, env=_env(), timeout=300)
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", *TRAIN, *steps, "--out", str(killed)], env=_env())
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until a mid-run checkpoint exists, then kill -9
        ckpt = killed / "checkpoint.pt"
        if ckpt.is_file() and torch.load(ckpt, weights_only=True)["step"] >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    interrupted_at = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert 10 <= interrupted_at < 40, interrupted_at
    subprocess.run([sys.executable, "-m", "workbench.cli", *TRAIN, *steps, "--out", str(killed), "--resume"],
                   check=True, env=_env(), timeout=300)
    a, b = _weights(whole), _weights(killed)
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit-identical on CPU
