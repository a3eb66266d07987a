"""Small helpers shared by the benchmark's modules: /proc readings, JSON, the machine, blocks and states."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
from pathlib import Path
from typing import Any

SCHEMA = 2  # 2: every registered mixer, fused decode, roofline, one long-context file with every constant-state mixer


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM of a process in bytes (Linux); {} where /proc is missing."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def rss_bytes(pid: int) -> int | None:
    rss = proc_status(pid).get("VmRSS")
    if rss is not None:
        return rss
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:
        return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM), Linux >= 4.0; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(finite(data), indent=2) + "\n")
    tmp.replace(path)


def device_slug(device: str, threads: int, gpu_name: str | None = None) -> str:
    """``cpu-2threads``, ``cuda-h100``: the suffix of the result files."""
    if device.startswith("cuda"):
        name = (gpu_name or "gpu").lower()
        match = re.search(r"\b(h100|h200|b200|a100|a10g?|l40s?|l4|v100|t4)\b", name)
        tag = match.group(1) if match else re.sub(r"[^a-z0-9]+", "-", name).strip("-")
        return f"cuda-{tag}"
    return f"cpu-{threads}thread{'' if threads == 1 else 's'}"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    import torch

    return torch.get_num_threads()


def meminfo_bytes(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_description(threads: int) -> dict[str, Any]:
    import torch

    cpu, flags = "", []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and not cpu:
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "amx"))]
    except OSError:
        pass
    cpu = cpu or platform.processor()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_vector_flags": sorted(set(flags)),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_total_bytes": meminfo_bytes("MemTotal"),
        "memory_available_bytes": meminfo_bytes("MemAvailable"),
        "torch_threads": threads,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_start": load_average(),
    }


def git_commit() -> str:
    from workbench.provenance import git_commit as commit

    return commit()


def mixer_options_used(mixer: str, d_model: int, options: dict[str, Any] | None) -> dict[str, Any]:
    """The mixer's full options (defaults filled in) as a plain dict."""
    from workbench.mixers import MIXERS

    cls = MIXERS[mixer]
    return finite(dataclasses.asdict(cls.options_from(dict(options or {}), d_model)))


def build_block(mixer: str, d_model: int, mlp_ratio: int, options: dict[str, Any] | None):
    """One ``workbench.model.Block`` of ``mixer`` with today's defaults (the shared short-conv front end included)."""
    from workbench.config import ModelConfig
    from workbench.model import Block

    config = ModelConfig(mixer=mixer, d_model=d_model, n_layers=1, mlp_ratio=mlp_ratio,
                         mixer_options=dict(options or {}))
    config.validate()
    return Block(config)


def constant_state(mixer: str) -> bool:
    """True for a mixer whose recurrent state does not grow with the context."""
    from workbench.mixers import MIXERS

    return not getattr(MIXERS[mixer], "growing_state", False)


def state_bytes(state: Any) -> int:
    import torch

    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def flat_state(state: dict[str, Any]) -> dict[str, Any]:
    """A block state's entries by name: the front end's window as ``conv``, the mixer's by their own names."""
    mixer = state["mixer"]
    return {"conv": state["conv"], **{(k if k != "conv" else "mixer.conv"): v for k, v in mixer.items()}}


def state_shapes(state: dict[str, Any]) -> dict[str, list[int] | None]:
    import torch

    return {k: (list(v.shape) if isinstance(v, torch.Tensor) else None) for k, v in state.items()}
