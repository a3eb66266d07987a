"""Where a result came from: the code's commit, the device, and how busy the machine was."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

import torch


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none, e.g. Windows).

    Wall-clock budgets (char-LM at 600 s) depend on what else ran beside a run; recording the
    load at every eval lets a reader check that two runs being compared shared similar machines.
    """
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@functools.cache
def git_commit() -> str:
    """HEAD's hash, with ``+dirty`` when the package's code differs from it (a result then came
    from code that no commit holds); "unknown" outside a git checkout.

    Computed once per process, at its first run (``train`` asks before training): the code a
    process runs is the code it imported, so a commit made while a long run trains must not
    be credited with that run's result.
    """
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        head = out.stdout.strip()
        if not head:
            return "unknown"
        diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "workbench"], cwd=root, capture_output=True,
                              timeout=5)
        return head + ("+dirty" if diff.returncode == 1 else "")
    except Exception:
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


