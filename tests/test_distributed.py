"""Scale-out and kill-resume, run for real in subprocesses (CPU, gloo)."""

from __future__ import annotations

import json
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
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "workbench.cli", *args,
                           "--out", str(multi)], check=True, env=_env(), timeout=300, capture_output=True, text=True)
    a, b = _weights(single), _weights(multi)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=2e-5, rtol=1e-4), (name, (a[name] - b[name]).abs().max())
    # Only rank 0 prints the summary (before: every rank did).
    assert done.stdout.count("checkpoint and result.json in") == 1 and done.stdout.count('"metrics"') == 1
    # The logged loss is the global batch's (the mean over ranks), not rank 0's half of it.
    single_losses = [h["loss"] for h in json.loads((single / "result.json").read_text())["history"]]
    multi_losses = [h["loss"] for h in json.loads((multi / "result.json").read_text())["history"]]
    assert len(single_losses) == len(multi_losses) == 2
    for x, y in zip(single_losses, multi_losses):
        assert abs(x - y) <= 1e-5 * max(1.0, abs(x)), (single_losses, multi_losses)


def test_a_rank_that_never_comes_is_a_clear_error_after_the_timeout(tmp_path):
    """Before: process-group start-up had no timeout of ours (the default: 30 minutes of silence)."""
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "WORKBENCH_DIST_TIMEOUT_S": "2"}
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "workbench.cli", *TRAIN, "--steps", "2", "--out", str(tmp_path / "r")],
                          env=env, timeout=240, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "did not start within 2 s" in done.stderr and "Traceback" not in done.stderr
    assert time.time() - started < 200


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
