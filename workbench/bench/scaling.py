"""Scaling benchmark: time, memory and ESTIMATED energy of one block vs sequence length n.

``run_scaling`` measures, for each mixer at the same d_model and the same tokens per batch
(batch = max(1, tokens_per_batch // n)), one ``workbench.model.Block`` (pre-norm mixer +
MLP) fed random N(0, 1) embeddings - no token adapter, no head:

* ``train``: forward + backward of ``mean(y^2)`` (+ the mixer's aux loss), training mode,
  no optimizer update; median of ``repeats`` after one warm-up, and the peak memory.
* ``prefill``: forward only under ``torch.no_grad()``, eval mode; tokens/s and peak memory.
* ``decode``: one recurrent ``Block.step`` at batch 1 with a context of n tokens; median of
  ``decode_steps`` single steps after a warm-up; every step starts from the same state.
  Inverted: for n <= ``decode_state_max_n`` the state is built honestly by stepping n
  random tokens; above that, ``init_state`` is filled with random tensors of the same
  (constant) shapes, all units occupied and counters set to n - the step's cost does not
  depend on the values (no data-dependent branch). Transformer: a KV cache of n random
  keys and values is constructed directly; ``step`` then concatenates and attends to it.

Every (mixer, n) point runs in a fresh process, forked from a forkserver that has imported
torch once (so a point costs a fork, not an interpreter start), and supervised by the
parent: a phase that runs past ``time_limit_s`` or whose RSS passes the memory limit is
killed and recorded as ``skipped`` with the reason (and not retried at larger n); the
remaining phases of that point run in a new process. The child itself also stops early
when its warm-up shows the repeats cannot fit in the limit, and turns out-of-memory
exceptions (CPU allocator, CUDA) into ``skipped`` records.

Peak memory: CPU - Linux peak RSS (VmHWM) reset per phase through /proc/self/clear_refs,
minus the RSS at the phase start (so: inputs, activations, gradients and workspace above
the resident model). CUDA - ``torch.cuda.max_memory_allocated`` minus the allocation at
the phase start, after ``reset_peak_memory_stats``.

Results go to ``<out>/scaling-<device>.json`` (rewritten after every point, ``complete``
false until the end); ``format_scaling_table`` and ``scaling_markdown`` render them.
``run_long_recurrent`` runs the inverted block's recurrent step over a very long stream.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import resource
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from workbench.bench.energy import LABEL as ENERGY_LABEL
from workbench.bench.energy import counted_costs, device_energy, energy_per_token

PHASES = ("decode", "prefill", "train")  # cheapest first: a slow train step cannot take the others down
SCHEMA = 1
UNIT = (
    "one workbench.model.Block (LayerNorm -> mixer -> residual, LayerNorm -> MLP(ratio r) -> residual) "
    "on random N(0,1) embeddings of width d_model; no token adapter, no head; float32"
)
METHODS = {
    "train": "forward + backward of mean(y^2) + mixer aux loss, training mode (the inverted mixer's "
    "training-only write surrogate included), no optimizer step; median of repeats after 1 warm-up",
    "prefill": "forward only, torch.no_grad(), eval mode (inverted: chunked parallel form); "
    "tokens/s = batch x n / median time; median of repeats after 1 warm-up",
    "decode": "Block.step at batch 1 with a context of n tokens, no_grad, eval mode; every timed step starts "
    "from the same state (the context stays n); median of decode_steps single steps after 5 warm-up steps. "
    "Inverted: state from stepping n random tokens when n <= decode_state_max_n, else init_state filled with "
    "random tensors of the same constant shapes (all units occupied, counters = n). Transformer: KV cache of "
    "n random keys/values constructed directly",
    "memory_cpu": "peak RSS (Linux VmHWM, reset per phase via /proc/self/clear_refs) minus RSS at phase start, "
    "in a fresh process per point; includes inputs, activations, gradients, allocator workspace",
    "memory_cuda": "torch.cuda.max_memory_allocated minus memory_allocated at phase start",
    "isolation": "each (mixer, n) point in its own process (forked from a forkserver that only imported torch); "
    "phases past the time limit or RSS limit are "
    "killed and recorded as skipped, and not retried at larger n",
    "slopes": "numpy.polyfit of log(value) on log(n) over the measured points with n >= min_fit_n; time per "
    "batch at fixed tokens per batch, so per-sequence cost linear in n shows slope ~0 and quadratic ~1 "
    "(see train_s_per_sequence for the per-sequence slope)",
}


# ----------------------------------------------------------------------------- small helpers


def _proc_status(pid: int | str = "self") -> dict[str, int]:
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


def _rss_bytes(pid: int) -> int | None:
    rss = _proc_status(pid).get("VmRSS")
    if rss is not None:
        return rss
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:
        return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM), Linux >= 4.0; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_finite(data), indent=2) + "\n")
    tmp.replace(path)


def device_slug(device: str, threads: int, gpu_name: str | None = None) -> str:
    """``cpu-2threads``, ``cuda-h100``: the suffix of the result files."""
    if device.startswith("cuda"):
        name = (gpu_name or "gpu").lower()
        match = re.search(r"\b(h100|h200|b200|a100|a10g?|l40s?|l4|v100|t4)\b", name)
        tag = match.group(1) if match else re.sub(r"[^a-z0-9]+", "-", name).strip("-")
        return f"cuda-{tag}"
    return f"cpu-{threads}thread{'' if threads == 1 else 's'}"


def default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    import torch

    return torch.get_num_threads()


def _meminfo_bytes(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_description(threads: int) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_total_bytes": _meminfo_bytes("MemTotal"),
        "memory_available_bytes": _meminfo_bytes("MemAvailable"),
        "torch_threads": threads,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def mixer_options_used(mixer: str, d_model: int, options: dict[str, Any] | None) -> dict[str, Any]:
    """The mixer's full options (defaults filled in) as a plain dict."""
    from workbench.mixers import MIXERS

    cls = MIXERS[mixer]
    return _finite(dataclasses.asdict(cls.options_from(dict(options or {}), d_model)))


def _build_block(mixer: str, d_model: int, mlp_ratio: int, options: dict[str, Any] | None):
    from workbench.config import ModelConfig
    from workbench.model import Block

    config = ModelConfig(mixer=mixer, d_model=d_model, n_layers=1, mlp_ratio=mlp_ratio,
                         mixer_options=dict(options or {}))
    config.validate()
    return Block(config)


def _state_bytes(state: Any) -> int:
    import torch

    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def _state_shapes(state: dict[str, Any]) -> dict[str, list[int] | None]:
    import torch

    return {k: (list(v.shape) if isinstance(v, torch.Tensor) else None) for k, v in state.items()}


# ----------------------------------------------------------------------------- the child (one point)


class _OutOfTime(Exception):
    pass


def _emit(conn, event: dict[str, Any]) -> None:
    conn.send(_finite(event))


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if isinstance(exc, MemoryError) or (oom_type and isinstance(exc, oom_type)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text


class _MemoryProbe:
    """Peak memory of one phase above its start (see the module docstring)."""

    def __init__(self, device) -> None:
        self.device = device

    def __enter__(self) -> _MemoryProbe:
        import torch

        self.peak_bytes: int | None = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated - allocated at start"
        else:
            self.exact = _reset_peak_rss()
            self.base = _proc_status().get("VmRSS", 0)
            self.method = "VmHWM (reset) - VmRSS at start" if self.exact else (
                "ru_maxrss since process start - VmRSS at start (clear_refs unavailable: an upper bound)")
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            peak = _proc_status().get("VmHWM") if self.exact else None
            if peak is None:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_bytes = max(0, peak - self.base)


def _timed(fn, sync, phase_start: float, limit: float, repeats: int, first: float) -> dict[str, Any]:
    """Up to ``repeats`` timed calls that fit in ``limit`` seconds from ``phase_start``.

    ``first`` is the duration of the untimed warm-up call already made (the estimate for the first check).
    """
    times: list[float] = []
    for _ in range(repeats):
        estimate = statistics.median(times) if times else first
        if time.perf_counter() - phase_start + estimate > limit:
            if not times:
                raise _OutOfTime(f"out of time (warm-up step took {first:.3g} s; the next one would pass the "
                                 f"{limit:g} s limit)")
            break
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times, "repeats": len(times),
            "warmup_s": first}


def _warm_up(fn, sync, count: bool) -> tuple[float, int | None]:
    """One untimed call (under torch's FlopCounterMode when ``count``): (seconds, counted FLOPs)."""
    t = time.perf_counter()
    flops = None
    if count:
        flops = _count_flops(fn)
    else:
        fn()
    sync()
    return time.perf_counter() - t, flops


def _count_flops(fn) -> int | None:
    """Matmul-class FLOPs of one call as torch's FlopCounterMode sees them (None if unavailable).

    It counts mm/addmm/bmm/convolution and the CUDA fused attention kernels, not element-wise ops,
    and not the CPU flash-attention kernel (so on CPU the transformer's attention is missing).
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover - old torch
        fn()
        return None
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _flat_state(state: dict[str, Any]) -> dict[str, Any]:
    """A block state's tensors by name: the front end's window as ``conv``, the mixer's by their own names."""
    return {"conv": state["conv"], **state["mixer"]}


def _inverted_random_state(mixer, n: int, device, dtype) -> dict[str, Any]:
    """init_state's tensors, filled as after a long context (values do not change the step's cost)."""
    import torch

    state = mixer.init_state(1, device, dtype)
    m = state["keys"].shape[1] if "keys" in state else 1
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        if value.dtype == torch.bool:
            value.fill_(True)
        elif name in ("count", "pointer"):
            value.fill_(float(n - 1 if name == "pointer" else n))
        elif name == "pool_counts":
            value.fill_(float(n) / value.shape[-1])
        elif name == "fired_at":
            value.copy_(torch.randint(max(n - m, 0), n + 1, value.shape, device=device).to(value.dtype))
        elif value.is_floating_point():
            value.normal_()
    return state


def _phase_train(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    block, spec, sync = ctx["block"], ctx["spec"], ctx["sync"]
    start = time.perf_counter()
    block.train()
    with _MemoryProbe(ctx["device"]) as probe:
        x = torch.randn(spec["batch"], spec["n"], spec["d_model"], device=ctx["device"])

        def step() -> None:
            block.zero_grad(set_to_none=True)
            y = block(x)
            loss = y.float().square().mean()
            aux = getattr(block.mixer, "aux_loss", None)
            if aux is not None:
                loss = loss + aux
            loss.backward()

        first, flops = _warm_up(step, sync, spec.get("count_flops", True))
        timing = _timed(step, sync, start, spec["time_limit_s"], spec["repeats"], first)
    block.zero_grad(set_to_none=True)
    tokens = spec["batch"] * spec["n"]
    return timing | {
        "status": "ok",
        "tokens": tokens,
        "tokens_per_s": tokens / timing["median_s"],
        "peak_mem_bytes": probe.peak_bytes,
        "memory_method": probe.method,
        "torch_flop_counter_per_token": flops / tokens if flops else None,
    }


def _phase_prefill(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    block, spec, sync = ctx["block"], ctx["spec"], ctx["sync"]
    start = time.perf_counter()
    block.eval()
    with torch.no_grad(), _MemoryProbe(ctx["device"]) as probe:
        x = torch.randn(spec["batch"], spec["n"], spec["d_model"], device=ctx["device"])
        first, flops = _warm_up(lambda: block(x), sync, spec.get("count_flops", True))
        timing = _timed(lambda: block(x), sync, start, spec["time_limit_s"], spec["repeats"], first)
    tokens = spec["batch"] * spec["n"]
    return timing | {
        "status": "ok",
        "tokens": tokens,
        "tokens_per_s": tokens / timing["median_s"],
        "peak_mem_bytes": probe.peak_bytes,
        "memory_method": probe.method,
        "torch_flop_counter_per_token": flops / tokens if flops else None,
    }


def _phase_decode(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    block, spec, sync, device = ctx["block"], ctx["spec"], ctx["sync"], ctx["device"]
    n, d, limit = spec["n"], spec["d_model"], spec["time_limit_s"]
    start = time.perf_counter()
    block.eval()
    mixer = block.mixer
    dtype = next(block.parameters()).dtype
    with torch.no_grad(), _MemoryProbe(device) as probe:
        if spec["mixer"] == "inverted" and n <= spec["decode_state_max_n"]:
            state = block.init_state(1, device, dtype)
            prefix = torch.randn(n, d, device=device)
            for t in range(n):
                _, state = block.step(prefix[t : t + 1], state)
                if t % 256 == 0 and time.perf_counter() - start > limit:
                    raise _OutOfTime(f"out of time (building the state by stepping {n} tokens passed {limit:g} s)")
            source = f"stepped {n} random tokens from init_state"
        elif spec["mixer"] == "inverted":
            state = {**block.init_state(1, device, dtype), "mixer": _inverted_random_state(mixer, n, device, dtype)}
            source = "init_state filled with random tensors of the same constant shapes (units occupied, counters = n)"
        elif "k" in (empty := mixer.init_state(1, device, dtype)):
            shape = list(empty["k"].shape)
            shape[2] = n
            state = {**block.init_state(1, device, dtype),
                     "mixer": {"k": torch.randn(shape, device=device, dtype=dtype),
                               "v": torch.randn(shape, device=device, dtype=dtype), "position": n}}
            source = f"KV cache of {n} random keys and values constructed directly"
        else:  # another mixer: step through the context
            state = block.init_state(1, device, dtype)
            for _ in range(n):
                _, state = block.step(torch.randn(1, d, device=device), state)
            source = f"stepped {n} random tokens from init_state"
        state_bytes = _state_bytes(state)
        steps = spec["decode_steps"]
        xs = torch.randn(steps + 5, 1, d, device=device)
        for i in range(5):  # warm-up
            block.step(xs[i], state)
        sync()
        times: list[float] = []
        for i in range(steps):
            if times and time.perf_counter() - start + statistics.median(times) > limit:
                break
            t = time.perf_counter()
            block.step(xs[5 + i], state)
            sync()
            times.append(time.perf_counter() - t)
            if len(times) == 1 and time.perf_counter() - start > limit:
                raise _OutOfTime(f"out of time (one decode step passed the {limit:g} s limit)")
    return {
        "status": "ok",
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "repeats": len(times),
        "tokens_per_s": 1.0 / statistics.median(times),
        "state_bytes": state_bytes,
        "state_source": source,
        "peak_mem_bytes": probe.peak_bytes,
        "memory_method": probe.method,
    }


_PHASE_FUNCS = {"train": _phase_train, "prefill": _phase_prefill, "decode": _phase_decode}


def _touch(block, spec: dict[str, Any], device, sync) -> None:
    """Run every code path once at a tiny size before any measurement.

    A forked child maps the server's code pages lazily: the first call of each kernel faults
    them in and grows RSS by ~10 MB that no phase should be charged for (lazy imports alike).
    """
    import torch

    x = torch.randn(1, min(spec["n"], 8), spec["d_model"], device=device)
    block.train()
    if spec.get("count_flops", True):
        _count_flops(lambda: block(x).square().mean().backward())
    block(x).square().mean().backward()
    block.zero_grad(set_to_none=True)
    block.eval()
    with torch.no_grad():
        block(x)
        state = block.init_state(1, device, x.dtype)
        for t in range(x.shape[1]):
            _, state = block.step(x[:, t], state)
    sync()


def _child_main(conn, spec: dict[str, Any]) -> None:
    """One point's process: sends ``ready``, then ``start`` and ``result`` per phase, over ``conn``."""
    try:
        _child_phases(conn, spec)
    except BaseException as exc:  # set-up failed: say why instead of dying silently
        _emit(conn, {"event": "fatal", "reason": f"{type(exc).__name__}: {str(exc)[:300]}",
                     "traceback": traceback.format_exc()[-2000:]})
        raise SystemExit(3) from None
    finally:
        conn.close()


def _child_phases(conn, spec: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    info: dict[str, Any] = {"event": "ready", "pid": os.getpid(), "torch": torch.__version__,
                            "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"device_name": props.name, "device_memory_bytes": props.total_memory,
                 "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
        limit = spec.get("device_memory_limit_bytes")
        fraction = min(1.0, limit / props.total_memory) if limit else 0.9
        torch.cuda.set_per_process_memory_fraction(fraction, device)
        info["device_memory_fraction"] = fraction
        sync = lambda: torch.cuda.synchronize(device)  # noqa: E731
    else:
        sync = lambda: None  # noqa: E731
    torch.manual_seed(spec.get("seed", 0))
    block = _build_block(spec["mixer"], spec["d_model"], spec["mlp_ratio"], spec["mixer_options"]).to(device)
    _touch(block, spec, device, sync)
    if hasattr(block.mixer, "impl"):
        info["impl"] = block.mixer.impl
    info["rss_bytes"] = _proc_status().get("VmRSS")
    _emit(conn, info)
    ctx = {"block": block, "spec": spec, "device": device, "sync": sync}
    for phase in spec["phases"]:
        _emit(conn, {"event": "start", "phase": phase})
        try:
            result = _PHASE_FUNCS[phase](ctx)
        except _OutOfTime as exc:
            result = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # OOM inside torch is an exception, not a crash
            if _is_oom(exc):
                result = {"status": "skipped", "reason": f"out of memory ({type(exc).__name__}: {str(exc)[:200]})"}
            else:
                result = {"status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:300]}",
                          "traceback": traceback.format_exc()[-2000:]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _emit(conn, {"event": "result", "phase": phase} | result)


def _selftest_sleep(conn, seconds: float) -> None:
    """Supervisor self-test target: starts a phase and hangs in it."""
    conn.send({"event": "ready", "rss_bytes": _proc_status().get("VmRSS")})
    conn.send({"event": "start", "phase": "train"})
    time.sleep(seconds)


def _selftest_allocate(conn, n_bytes: int, seconds: float) -> None:
    """Supervisor self-test target: starts a phase, touches ``n_bytes`` of memory, and holds it."""
    conn.send({"event": "ready", "rss_bytes": _proc_status().get("VmRSS")})
    conn.send({"event": "start", "phase": "train"})
    block = bytearray(n_bytes)
    for i in range(0, n_bytes, 4096):
        block[i] = 1
    time.sleep(seconds)


# ----------------------------------------------------------------------------- the parent (supervisor)

PRELOAD = ["torch", "torch._dynamo", "torch.utils.flop_counter", "torch.utils.module_tracker", "workbench.model",
           "workbench.bench.scaling"]  # torch._dynamo: FlopCounterMode imports it on first use (seconds)


def _mp_context():
    """A forkserver that imports torch once; every point is a fresh process forked from it.

    The server never initializes CUDA or OpenMP, so its forks are clean; where forkserver is
    unavailable, spawn (slower start, same isolation).
    """
    import multiprocessing

    try:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
    except ValueError:  # pragma: no cover - no forkserver on this platform
        context = multiprocessing.get_context("spawn")
    return context


def supervise(
    target,
    args: tuple,
    time_limit_s: float,
    memory_limit_bytes: int | None,
    startup_timeout_s: float = 300.0,
    poll_s: float = 0.05,
) -> dict[str, Any]:
    """Run ``target(conn, *args)`` in a fresh process; stop it past the time or RSS limit.

    The child sends event dicts: ``ready``, then ``start``/``result`` per phase (``fatal`` when
    set-up fails). The time limit applies per phase, from its ``start``, with 10 % + 2 s of
    slack for the child's own check; before the first phase, ``startup_timeout_s``. Returns
    ``ready``, ``results`` (phase -> result), ``stopped`` ({"phase", "reason"} when the child
    was stopped or died) and ``exitcode``.
    """
    context = _mp_context()
    receiver, sender = context.Pipe(duplex=False)
    launched = time.monotonic()
    proc = context.Process(target=target, args=(sender, *args), daemon=True)
    proc.start()
    sender.close()
    ready: dict[str, Any] | None = None
    results: dict[str, dict[str, Any]] = {}
    current: str | None = None
    phase_started = launched
    deadline = launched + startup_timeout_s
    stopped: dict[str, Any] | None = None
    fatal: str | None = None
    while True:
        event = None
        try:
            if receiver.poll(poll_s):
                event = receiver.recv()
        except (EOFError, OSError):  # the child closed its end: it is exiting
            break
        if event is not None:
            kind = event.pop("event", None)
            now = time.monotonic()
            if kind == "ready":
                ready = event | {"startup_s": now - launched}
                deadline = now + startup_timeout_s
            elif kind == "start":
                current, phase_started = event["phase"], now
                deadline = now + time_limit_s * 1.1 + 2.0
            elif kind == "result":
                phase = event.pop("phase")
                results[phase] = event | {"phase_wall_s": now - phase_started}
                current, deadline = None, now + startup_timeout_s
            elif kind == "fatal":
                fatal = event.get("reason", "child failed") + "\n" + event.get("traceback", "")
            continue
        if not proc.is_alive() and not receiver.poll(0):
            break
        now = time.monotonic()
        reason = None
        if now > deadline:
            reason = (f"out of time (> {time_limit_s:g} s)" if current else
                      f"out of time (child did not start a phase within {startup_timeout_s:g} s)")
        elif memory_limit_bytes:
            rss = _rss_bytes(proc.pid) if proc.pid else None
            if rss is not None and rss > memory_limit_bytes:
                reason = f"out of memory (RSS {rss / 2**30:.2f} GiB > {memory_limit_bytes / 2**30:.2f} GiB limit)"
        if reason:
            proc.kill()
            stopped = {"phase": current, "reason": reason}
            break
    proc.join(timeout=30)
    if proc.is_alive():  # pragma: no cover - kill did not take
        proc.kill()
        proc.join()
    receiver.close()
    code = proc.exitcode
    if stopped is None and (code != 0 or fatal):
        if fatal:
            reason = f"crashed: {fatal}"
        elif code == -9:
            reason = "out of memory (killed by SIGKILL, most likely the kernel OOM killer)"
        elif code is not None and code < 0:
            reason = f"crashed (signal {-code})"
        else:
            reason = f"crashed (exit status {code})"
        stopped = {"phase": current, "reason": reason}
    return {"ready": ready, "results": results, "stopped": stopped, "exitcode": code}


def _skip_kind(result: dict[str, Any] | None) -> str | None:
    if not result or result.get("status") != "skipped":
        return None
    reason = result.get("reason", "")
    return "time" if reason.startswith("out of time") else ("memory" if reason.startswith("out of memory") else None)


def measure_point(spec: dict[str, Any], host_memory_limit_bytes: int | None,
                  blocked: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """All phases of one (mixer, n) point; restarts the child after a stopped phase."""
    blocked = blocked or {}
    results: dict[str, dict[str, Any]] = {}
    for phase, why in blocked.items():
        if phase in spec["phases"]:
            results[phase] = {"status": "skipped", "reason": f"{why['reason']} at n={why['n']}; not run at larger n"}
    pending = [p for p in spec["phases"] if p not in results]
    ready = None
    while pending:
        run = supervise(_child_main, (dict(spec, phases=pending),), spec["time_limit_s"], host_memory_limit_bytes)
        ready = ready or run["ready"]
        results.update(run["results"])
        if run["stopped"]:
            phase = run["stopped"]["phase"] or next(p for p in pending if p not in run["results"])
            reason = run["stopped"]["reason"]
            status = "skipped" if reason.startswith(("out of time", "out of memory")) else "error"
            results[phase] = {"status": status, "reason": reason}
        left = [p for p in pending if p not in results]
        if left == pending:  # no progress: give up on this point rather than loop
            for p in left:
                results[p] = {"status": "error", "reason": "child exited without a result"}
            left = []
        pending = left
    return results, ready


# ----------------------------------------------------------------------------- analysis


def fit_loglog(ns: list[float], values: list[float | None], min_n: float = 1024) -> dict[str, Any]:
    """Slope and intercept of log(value) vs log(n) (numpy.polyfit, degree 1) over n >= min_n."""
    import numpy as np

    pairs = [(float(n), float(v)) for n, v in zip(ns, values)
             if n >= min_n and v is not None and math.isfinite(v) and v > 0]
    if len(pairs) < 2:
        return {"slope": None, "intercept": None, "n_points": len(pairs), "ns": [p[0] for p in pairs],
                "reason": f"fewer than 2 measured points with n >= {min_n:g}"}
    x = np.log([p[0] for p in pairs])
    y = np.log([p[1] for p in pairs])
    slope, intercept = np.polyfit(x, y, 1)
    return {"slope": float(slope), "intercept": float(intercept), "n_points": len(pairs),
            "ns": [int(p[0]) for p in pairs]}


def _metric(point: dict[str, Any], phase: str, key: str) -> float | None:
    result = point.get(phase) or {}
    return result.get(key) if result.get("status") == "ok" else None


SLOPE_METRICS = {
    "train_s_per_batch": ("train", "median_s"),
    "train_s_per_sequence": ("train", "median_s"),  # divided by the batch in _metric
    "train_peak_mem": ("train", "peak_mem_bytes"),
    "prefill_s_per_batch": ("prefill", "median_s"),
    "prefill_peak_mem": ("prefill", "peak_mem_bytes"),
    "decode_s_per_token": ("decode", "median_s"),
    "decode_state_bytes": ("decode", "state_bytes"),
}


def fit_slopes(points: list[dict[str, Any]], mixers: list[str], min_n: float = 1024) -> dict[str, Any]:
    slopes: dict[str, Any] = {}
    for mixer in mixers:
        rows = sorted((p for p in points if p["mixer"] == mixer), key=lambda p: p["n"])
        slopes[mixer] = {}
        for name, (phase, key) in SLOPE_METRICS.items():
            values = []
            for p in rows:
                v = _metric(p, phase, key)
                if v is not None and name == "train_s_per_sequence":
                    v = v / p["batch"]
                values.append(v)
            slopes[mixer][name] = fit_loglog([p["n"] for p in rows], values, min_n)
    return slopes


def find_crossover(points: list[dict[str, Any]], phase: str = "train", a: str = "inverted", b: str = "transformer",
                   slopes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Smallest n from which ``a`` stays faster than ``b`` (median time of ``phase``).

    Between two measured lengths the crossover is interpolated on log(time_a / time_b) vs
    log(n). A length where ``b`` was skipped for time or memory and ``a`` was measured counts
    as ``a`` faster (no ratio). Not reached: extrapolated from the log-log fits when possible.
    """
    by = {(p["mixer"], p["n"]): p for p in points}
    known = []  # (n, a_faster, log ratio or None)
    for n in sorted({p["n"] for p in points}):
        pa, pb = by.get((a, n)), by.get((b, n))
        if not pa or not pb:
            continue
        ta, tb = _metric(pa, phase, "median_s"), _metric(pb, phase, "median_s")
        if ta is not None and tb is not None:
            known.append((n, ta < tb, math.log(ta / tb)))
        elif ta is not None and _skip_kind(pb.get(phase)):
            known.append((n, True, None))
        elif tb is not None and _skip_kind(pa.get(phase)):
            known.append((n, False, None))
    out: dict[str, Any] = {"phase": phase, "faster": a, "than": b,
                           "ratios": [{"n": n, "time_ratio": math.exp(lr) if lr is not None else None,
                                       f"{a}_faster": f} for n, f, lr in known]}
    if not known:
        return out | {"n": None, "bracket": None, "method": "no length where both were measured"}
    slower = [i for i, (_, faster, _) in enumerate(known) if not faster]
    if not slower:
        return out | {"n": None, "bracket": [None, known[0][0]],
                      "method": f"{a} faster at every measured n (crossover <= {known[0][0]})"}
    j = slower[-1]
    if j == len(known) - 1:
        extra: dict[str, Any] = {"n": None, "bracket": [known[-1][0], None],
                                 "method": f"not reached up to n={known[-1][0]}"}
        key = f"{phase}_s_per_batch" if phase != "decode" else "decode_s_per_token"
        fa, fb = (slopes or {}).get(a, {}).get(key, {}), (slopes or {}).get(b, {}).get(key, {})
        if fa.get("slope") is not None and fb.get("slope") is not None and fb["slope"] > fa["slope"]:
            n_star = math.exp((fa["intercept"] - fb["intercept"]) / (fb["slope"] - fa["slope"]))
            extra |= {"n_extrapolated": n_star,
                      "method": f"not reached up to n={known[-1][0]}; EXTRAPOLATED from the log-log fits"}
        return out | extra
    (n0, _, r0), (n1, _, r1) = known[j], known[j + 1]
    if r0 is None or r1 is None or r1 == r0:
        return out | {"n": None, "bracket": [n0, n1], "method": f"between n={n0} and n={n1} (no ratio to interpolate)"}
    x0, x1 = math.log(n0), math.log(n1)
    n_star = math.exp(x0 + (0.0 - r0) * (x1 - x0) / (r1 - r0))
    return out | {"n": n_star, "bracket": [n0, n1], "method": "log-log interpolation of the time ratio"}


# ----------------------------------------------------------------------------- run_scaling


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_scaling(
    lengths: tuple[int, ...] = (256, 1024, 4096, 16384, 65536),
    mixers: tuple[str, ...] = ("inverted", "transformer"),
    d_model: int = 128,
    tokens_per_batch: int = 65536,
    repeats: int = 5,
    time_limit_s: float = 600.0,
    memory_limit_gb: float | None = None,
    device: str | None = None,
    out: Path | str | None = Path("results"),
    *,
    mixer_options: dict[str, dict[str, Any]] | None = None,
    mlp_ratio: int = 4,
    decode_steps: int = 50,
    decode_state_max_n: int = 1024,
    threads: int | None = None,
    phases: tuple[str, ...] = PHASES,
    min_fit_n: int = 1024,
    count_flops: bool = True,
    note: str | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure every (mixer, n); return the result dict and write ``<out>/scaling-<device>.json``.

    ``time_limit_s`` applies to each phase of each point; ``memory_limit_gb`` to the point's
    host RSS (default: 60 % of the memory available now) and, on CUDA, to the device's
    allocations (default: 90 % of the GPU). ``out=None`` writes nothing.
    """
    import torch

    from workbench.mixers import MIXERS

    lengths = tuple(int(n) for n in lengths)
    if not lengths or any(n <= 0 for n in lengths):
        raise ValueError(f"lengths must be positive integers, got {lengths!r}")
    unknown = [m for m in mixers if m not in MIXERS]
    if unknown:
        raise ValueError(f"unknown mixers {unknown}; choose from {sorted(MIXERS)}")
    bad_phases = [p for p in phases if p not in _PHASE_FUNCS]
    if bad_phases:
        raise ValueError(f"unknown phases {bad_phases}; choose from {list(PHASES)}")
    if repeats < 1 or tokens_per_batch < 1 or decode_steps < 1 or time_limit_s <= 0:
        raise ValueError("repeats, tokens_per_batch, decode_steps and time_limit_s must be positive")
    device = device or _default_device()
    threads = int(threads or default_threads())
    mixer_options = dict(mixer_options or {})
    available = _meminfo_bytes("MemAvailable")
    host_limit = int(memory_limit_gb * 2**30) if memory_limit_gb else (int(0.6 * available) if available else None)
    # CUDA: the child caps its allocator (torch.cuda.set_per_process_memory_fraction); 90 % of the GPU by default.
    device_limit = int(memory_limit_gb * 2**30) if (memory_limit_gb and device.startswith("cuda")) else None

    mixer_info = {}
    for mixer in mixers:
        block = _build_block(mixer, d_model, mlp_ratio, mixer_options.get(mixer))
        mixer_info[mixer] = {
            "options": mixer_options_used(mixer, d_model, mixer_options.get(mixer)),
            "parameters_block": sum(p.numel() for p in block.parameters()),
            "parameters_mixer": sum(p.numel() for p in block.mixer.parameters()),
        }
        if hasattr(block.mixer, "impl"):
            mixer_info[mixer]["impl"] = block.mixer.impl
        del block

    result: dict[str, Any] = {
        "kind": "scaling",
        "schema": SCHEMA,
        "git_commit": _git_commit(),
        "complete": False,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": None,
        "device_type": device,
        "machine": machine_description(threads),
        "torch": torch.__version__,
        "unit": UNIT,
        "methods": METHODS,
        "note": note,
        "settings": {
            "lengths": list(lengths), "mixers": list(mixers), "d_model": d_model, "mlp_ratio": mlp_ratio,
            "tokens_per_batch": tokens_per_batch, "batch_rule": "max(1, tokens_per_batch // n)",
            "repeats": repeats, "time_limit_s_per_phase": time_limit_s,
            "host_memory_limit_bytes": host_limit,
            "device_memory_limit": device_limit or ("90% of the GPU" if device.startswith("cuda") else None),
            "decode_steps": decode_steps, "decode_state_max_n": decode_state_max_n, "threads": threads,
            "threads_rule": "torch.set_num_threads(threads) in every child", "phases": list(phases),
            "min_fit_n": min_fit_n,
            "dtype": "float32", "seed": seed,
        },
        "mixers": mixer_info,
        "points": [],
        "slopes": {},
        "crossover": {},
        "energy": {"label": ENERGY_LABEL},
    }
    gpu_name = None
    path: Path | None = None
    blocked: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in mixers}
    for mixer in mixers:
        for n in sorted(lengths):
            batch = max(1, tokens_per_batch // n)
            spec = {
                "mixer": mixer, "n": n, "batch": batch, "d_model": d_model, "mlp_ratio": mlp_ratio,
                "mixer_options": mixer_options.get(mixer) or {}, "device": device, "threads": threads,
                "phases": list(phases), "repeats": repeats, "time_limit_s": time_limit_s,
                "decode_steps": decode_steps, "decode_state_max_n": decode_state_max_n, "seed": seed,
                "device_memory_limit_bytes": device_limit, "count_flops": count_flops,
            }
            t0 = time.monotonic()
            phase_results, ready = measure_point(spec, host_limit, blocked[mixer])
            if ready and ready.get("device_name"):
                gpu_name = ready["device_name"]
                result["machine"]["gpu"] = {"name": gpu_name, "memory_bytes": ready.get("device_memory_bytes"),
                                            "tf32_matmul": ready.get("tf32_matmul")}
            for phase, res in phase_results.items():
                kind = _skip_kind(res)
                if kind and phase not in blocked[mixer] and "not run at larger n" not in res.get("reason", ""):
                    blocked[mixer][phase] = {"reason": res["reason"], "n": n}
            point = {"mixer": mixer, "n": n, "batch": batch, "tokens": batch * n,
                     "wall_s": time.monotonic() - t0} | {p: phase_results.get(p) for p in phases}
            result["points"].append(point)
            if progress:
                cells = []
                for p in phases:
                    r = phase_results.get(p) or {}
                    cells.append(f"{p} {r['median_s'] * 1e3:.3g} ms" if r.get("status") == "ok"
                                 else f"{p} {r.get('status')}: {r.get('reason', '')[:60]}")
                print(f"[scaling] {mixer:>11} n={n:<6} batch={batch:<5} " + " | ".join(cells), file=sys.stderr)
            slug = device_slug(device, threads, gpu_name)
            result["device"] = slug
            if out is not None:
                path = Path(out) / f"scaling-{slug}.json"
                _write_json(path, _finish(result, mixers, device, threads, gpu_name, mlp_ratio, d_model, min_fit_n))
    result = _finish(result, mixers, device, threads, gpu_name, mlp_ratio, d_model, min_fit_n)
    result["complete"] = True
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if out is not None:
        path = Path(out) / f"scaling-{result['device']}.json"
        _write_json(path, result)
        result["path"] = str(path)
    return _finite(result)


def _finish(result: dict[str, Any], mixers, device: str, threads: int, gpu_name: str | None, mlp_ratio: int,
            d_model: int, min_fit_n: int) -> dict[str, Any]:
    """Energy per point, slopes and crossovers from the points measured so far."""
    profile = device_energy(device, threads, gpu_name)
    lengths = result["settings"]["lengths"]
    result["energy"] = {"label": ENERGY_LABEL, "device_figures": profile.to_dict(),
                        "flop_conventions": "multiply-add = 2 FLOPs; element-wise op = 1; training = 3 x forward "
                        "(transformer attention terms 4 x: flash-style recompute); see workbench/bench/energy.py",
                        "flop_terms_example": {}}
    for point in result["points"]:
        info = result["mixers"][point["mixer"]]
        point["energy"] = {}
        for phase in ("train", "prefill", "decode"):
            res = point.get(phase)
            if res is None:
                continue
            tokens = point["tokens"] if phase != "decode" else 1
            costs = counted_costs(point["mixer"], phase, point["n"], d_model, info["options"], mlp_ratio,
                                  info["parameters_block"], tokens)
            seconds = res["median_s"] / tokens if res.get("status") == "ok" else None
            point["energy"][phase] = energy_per_token(costs, seconds, profile)
            if point["n"] in (min(lengths), max(lengths)):
                key = f"{point['mixer']} n={point['n']}"
                result["energy"]["flop_terms_example"].setdefault(key, {})[phase] = costs["terms"] | {
                    "bytes_note": costs["bytes_note"]}
    result["slopes"] = fit_slopes(result["points"], list(mixers), min_fit_n)
    if "inverted" in mixers and "transformer" in mixers:
        result["crossover"] = {phase: find_crossover(result["points"], phase, slopes=result["slopes"])
                               for phase in ("train", "prefill", "decode")}
    return result


# ----------------------------------------------------------------------------- tables


def _cell(res: dict[str, Any] | None, key: str, scale: float = 1.0, fmt: str = "{:,.3g}") -> str:
    if not res:
        return "-"
    if res.get("status") != "ok":
        if res.get("status") == "skipped":
            kind = _skip_kind(res)
            return f"skipped ({kind})" if kind else "skipped"
        return res.get("status", "-")
    value = res.get(key)
    return "-" if value is None else fmt.format(value * scale)


def _rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for p in sorted(result["points"], key=lambda p: (p["mixer"], p["n"])):
        energy = (p.get("energy") or {}).get("train") or {}
        e_time, e_model = energy.get("time_x_power_j_per_token"), energy.get("analytic_j_per_token")
        rows.append([
            p["mixer"], f"{p['n']:,}", f"{p['batch']:,}",
            _cell(p.get("train"), "median_s", 1e3),
            _cell(p.get("train"), "tokens_per_s", 1.0, "{:,.0f}"),
            _cell(p.get("train"), "peak_mem_bytes", 2**-20, "{:,.1f}"),
            _cell(p.get("prefill"), "tokens_per_s", 1.0, "{:,.0f}"),
            _cell(p.get("prefill"), "peak_mem_bytes", 2**-20, "{:,.1f}"),
            _cell(p.get("decode"), "median_s", 1e6, "{:,.0f}"),
            _cell(p.get("decode"), "state_bytes", 2**-10, "{:,.0f}"),
            "-" if e_time is None else f"{e_time * 1e6:.3g}",
            "-" if e_model is None else f"{e_model * 1e6:.3g}",
        ])
    return rows


COLUMNS = ["mixer", "n", "batch", "train ms/step", "train tok/s", "train peak MiB", "prefill tok/s",
           "prefill peak MiB", "decode µs/token", "decode state KiB", "train µJ/tok (t×P, EST.)",
           "train µJ/tok (FLOP+byte model, EST.)"]


def _summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for mixer, fits in result.get("slopes", {}).items():
        parts = []
        for name in ("train_s_per_batch", "train_s_per_sequence", "train_peak_mem", "prefill_s_per_batch",
                     "decode_s_per_token"):
            slope = fits.get(name, {}).get("slope")
            parts.append(f"{name} {slope:.2f}" if slope is not None else f"{name} -")
        lines.append(f"log-log slopes, {mixer} (n >= {result['settings']['min_fit_n']}): " + ", ".join(parts))
    for phase, cross in result.get("crossover", {}).items():
        if cross.get("n") is not None:
            text = f"n ≈ {cross['n']:,.0f} ({cross['method']})"
        elif cross.get("n_extrapolated") is not None:
            text = f"n ≈ {cross['n_extrapolated']:,.0f} ({cross['method']})"
        else:
            text = cross.get("method", "-")
        lines.append(f"crossover, {phase} (inverted faster than transformer from): {text}")
    return lines


def format_scaling_table(result: dict[str, Any]):
    """A rich Table of the points; slopes and crossovers in the caption."""
    from rich.table import Table

    settings = result["settings"]
    title = (f"scaling - {result.get('device')} - d_model {settings['d_model']}, "
             f"{settings['tokens_per_batch']:,} tokens/batch, one Block")
    table = Table(title=title, caption="\n".join(_summary_lines(result) + [
        "energy columns are ESTIMATES (see the JSON's energy.device_figures.assumptions)"]))
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "mixer" else "right")
    for row in _rows(result):
        table.add_row(*row)
    return table


def scaling_markdown(result: dict[str, Any]) -> str:
    """The same table in markdown, with slopes, crossovers and the assumptions' pointer."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    lines.append("")
    lines += [f"- {line}" for line in _summary_lines(result)]
    settings = result["settings"]
    machine = result.get("machine", {})
    lines.append(f"- device `{result.get('device')}` ({machine.get('cpu')}; torch {result.get('torch')}; "
                 f"commit {(result.get('git_commit') or 'not recorded')[:12]}; "
                 f"{settings['threads']} thread(s)); {result.get('unit')}; repeats {settings['repeats']}; "
                 f"time limit {settings['time_limit_s_per_phase']:g} s per phase.")
    lines.append("- Energy columns are ESTIMATES: measured time x an assumed power, and counted FLOPs/bytes x "
                 "assumed J/FLOP and J/byte; the assumptions are in the JSON (`energy.device_figures`).")
    if result.get("note"):
        lines.append(f"- Note: {result['note']}")
    return "\n".join(lines)


def _git_commit() -> str:
    from workbench.provenance import git_commit

    return git_commit()


def long_context_markdown(result: dict[str, Any]) -> str:
    """The long recurrent run in a few lines of markdown (README, paper)."""
    s, settings = result["summary"], result["settings"]
    us = [w["s_per_token"] * 1e6 for w in result["windows"]]
    norms = s.get("max_state_norms") or {}
    lines = [
        "| tokens | dtype | µs/token first / last window (min-max) | fitted change over run | state bytes (constant) "
        "| RSS growth first to last window | outputs finite | max abs output |",
        "|---|---|---|---|---|---|---|---|",
        f"| {settings['tokens_done']:,}{' (stopped early)' if result.get('stopped_early') else ''} "
        f"| {settings.get('dtype', 'float32')} "
        f"| {us[0]:,.0f} / {us[-1]:,.0f} ({min(us):,.0f}-{max(us):,.0f}) "
        f"| {100 * (s.get('s_per_token_fitted_change_over_run_relative') or 0):+.0f}% "
        f"| {s['state_bytes']:,} ({s['state_bytes_constant']}) "
        f"| {(s.get('rss_growth_first_to_last_window_bytes') or 0) / 2**20:,.2f} MiB "
        f"| {s.get('all_outputs_finite')} | {s.get('max_abs_output', float('nan')):.3g} |",
        "",
        f"- device `{result.get('device')}`, commit {(result.get('git_commit') or 'not recorded')[:12]}, "
        f"{settings['threads']} thread(s), windows of "
        f"{settings['window_tokens']:,} tokens; {result.get('unit')}.",
        "- largest state norms over the run: " + ", ".join(f"{k} {v:.3g}" for k, v in norms.items())
        + f"; a transformer's KV cache at the same length would hold "
        f"{s['transformer_kv_cache_bytes_at_same_n_for_contrast']:,} bytes.",
    ]
    if result.get("note"):
        lines.append(f"- Note: {result['note']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- very long context


def run_long_recurrent(
    n_tokens: int = 1_000_000,
    d_model: int = 128,
    chunk: int | None = None,
    device: str | None = None,
    out: Path | str | None = Path("results"),
    *,
    mixer_options: dict[str, Any] | None = None,
    mlp_ratio: int = 4,
    threads: int | None = None,
    time_limit_s: float | None = None,
    seed: int = 0,
    progress: bool = True,
    note: str | None = None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """The inverted block's recurrent step over ``n_tokens`` (no_grad, batch 1), in windows.

    ``chunk`` tokens per window (default: a tenth of the run). Each window records the time per
    token, the RSS now and the peak RSS so far (CUDA: allocated bytes), the state's size and
    shapes, whether every output of the window was finite, the largest |output| and the norms
    of the state's tensors (numerical safety). ``dtype`` ("float32" or "bfloat16") is the
    block's parameter and activation dtype (the mixer keeps its counters in float64 either way).
    Writes ``<out>/long-context-<device>[-bf16].json`` unless ``out`` is None; stops early
    (``stopped_early``) once ``time_limit_s`` is spent.
    """
    import numpy as np
    import torch

    if n_tokens < 1:
        raise ValueError("n_tokens must be positive")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
    chunk = int(chunk or max(1, n_tokens // 10))
    device = device or _default_device()
    threads = int(threads or default_threads())
    torch.set_num_threads(threads)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(seed)
    block = _build_block("inverted", d_model, mlp_ratio, mixer_options).to(dev, dtypes[dtype]).eval()
    model_dtype = dtypes[dtype]
    pool = torch.randn(min(n_tokens, 4096), 1, d_model, device=dev).to(model_dtype)
    with torch.no_grad():
        warm = block.init_state(1, dev, model_dtype)
        for i in range(min(20, n_tokens)):  # warm-up on a throw-away state
            _, warm = block.step(pool[i % len(pool)], warm)
        del warm
        state = block.init_state(1, dev, model_dtype)
        shapes0, bytes0 = _state_shapes(_flat_state(state)), _state_bytes(state)
        exact = _reset_peak_rss()
        rss0 = _proc_status().get("VmRSS")
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        windows: list[dict[str, Any]] = []
        start, done, stopped = time.perf_counter(), 0, False
        while done < n_tokens:
            size = min(chunk, n_tokens - done)
            sync()
            t0 = time.perf_counter()
            finite = torch.ones((), dtype=torch.bool, device=dev)
            largest = torch.zeros((), device=dev)
            for i in range(done, done + size):
                y, state = block.step(pool[i % len(pool)], state)
                finite &= torch.isfinite(y).all()
                largest = torch.maximum(largest, y.detach().abs().max().float())
                if (time_limit_s is not None and (i - done) % 256 == 255
                        and time.perf_counter() - start > time_limit_s):
                    size = i + 1 - done  # out of time mid-window: this window ends here
                    break
            sync()
            dt = time.perf_counter() - t0
            done += size
            status = _proc_status()
            window = {
                "tokens_done": done, "window_tokens": size, "s_per_token": dt / size,
                "rss_bytes": status.get("VmRSS"), "peak_rss_bytes": status.get("VmHWM") if exact else None,
                "state_bytes": _state_bytes(state), "state_shapes_unchanged": _state_shapes(_flat_state(state)) == shapes0,
                "occupied_units": int(state["mixer"]["occupied"].sum()) if "occupied" in state["mixer"] else None,
                "outputs_finite": bool(finite), "max_abs_output": float(largest),
                # Activations (keys, values, conv window, EMA) must stay bounded; the float64
                # counters (writes, read pointer, firing times) grow with the tokens by design.
                "state_norms": {k: float(v.double().norm()) for k, v in _flat_state(state).items()
                                if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != torch.float64},
                "counters_max": {k: float(v.max()) for k, v in _flat_state(state).items()
                                 if isinstance(v, torch.Tensor) and v.dtype == torch.float64},
            }
            if dev.type == "cuda":
                window |= {"cuda_allocated_bytes": torch.cuda.memory_allocated(dev),
                           "cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated(dev)}
            windows.append(window)
            if progress:
                print(f"[long] {done:>10,} tokens  {dt / size * 1e6:8.1f} µs/token  "
                      f"RSS {(window['rss_bytes'] or 0) / 2**20:8.1f} MiB  state {window['state_bytes']:,} B",
                      file=sys.stderr)
            if time_limit_s is not None and time.perf_counter() - start > time_limit_s and done < n_tokens:
                stopped = True
                break
    per_token = [w["s_per_token"] for w in windows]
    growth = None
    if len(windows) >= 2:
        slope = np.polyfit([w["tokens_done"] for w in windows], per_token, 1)[0]
        growth = float(slope * done / statistics.median(per_token))  # fitted change over the run / median
    rss = [w["rss_bytes"] for w in windows if w["rss_bytes"] is not None]
    slug = device_slug(device, threads, torch.cuda.get_device_name(dev) if dev.type == "cuda" else None)
    if dtype != "float32":
        slug += "-bf16"
    norms = [w["state_norms"] for w in windows]
    result = {
        "kind": "long-context",
        "schema": SCHEMA,
        "git_commit": _git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": slug,
        "machine": machine_description(threads),
        "torch": torch.__version__,
        "note": note,
        "unit": "one workbench.model.Block with the inverted mixer, recurrent Block.step (the mixer's step + MLP), "
        "batch 1, torch.no_grad(), eval mode, random N(0,1) inputs (a pool of 4096 reused)",
        "settings": {"n_tokens": n_tokens, "tokens_done": done, "window_tokens": chunk, "d_model": d_model,
                     "dtype": dtype,
                     "mlp_ratio": mlp_ratio, "threads": threads, "time_limit_s": time_limit_s,
                     "mixer_options": mixer_options_used("inverted", d_model, mixer_options)},
        "stopped_early": stopped,
        "wall_s": time.perf_counter() - start,
        "windows": windows,
        "summary": {
            "state_bytes": bytes0,
            "state_bytes_constant": all(w["state_bytes"] == bytes0 for w in windows),
            "state_shapes_constant": all(w["state_shapes_unchanged"] for w in windows),
            "state_shapes": shapes0,
            "s_per_token_first_window": per_token[0],
            "s_per_token_last_window": per_token[-1],
            "s_per_token_median": statistics.median(per_token),
            "s_per_token_last_over_first": per_token[-1] / per_token[0],
            "s_per_token_fitted_change_over_run_relative": growth,
            "s_per_token_fit": "linear fit of window s/token vs tokens done; slope x tokens / median (0 = flat)",
            "rss_start_bytes": rss0,
            "rss_growth_first_to_last_window_bytes": (rss[-1] - rss[0]) if rss else None,
            "peak_rss_above_start_bytes": (max(w["peak_rss_bytes"] for w in windows) - rss0)
            if exact and rss0 is not None else None,
            "transformer_kv_cache_bytes_at_same_n_for_contrast": 2 * done * d_model * 4,
            "all_outputs_finite": all(w["outputs_finite"] for w in windows),
            "max_abs_output": max(w["max_abs_output"] for w in windows),
            "max_state_norms": {k: max(n[k] for n in norms) for k in norms[0]} if norms else {},
            "state_norms_first_window": norms[0] if norms else {},
            "state_norms_last_window": norms[-1] if norms else {},
        },
    }
    if out is not None:
        path = Path(out) / f"long-context-{slug}.json"
        _write_json(path, result)
        result["path"] = str(path)
    return _finite(result)


# ----------------------------------------------------------------------------- command line


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--lengths must be comma-separated integers, got {text!r}") from None
    return values


def add_scaling_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``workbench bench scaling``."""
    parser.add_argument("--lengths", default="256,1024,4096,16384,65536", help="comma list of sequence lengths")
    parser.add_argument("--mixers", default="inverted,transformer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--tokens-per-batch", type=int, default=65536)
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="seconds per phase of each point; --long: seconds per run (it stops early, marked so)")
    parser.add_argument("--memory-limit-gb", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS)")
    parser.add_argument("--decode-steps", type=int, default=50)
    parser.add_argument("--long", type=int, default=0, metavar="N",
                        help="also run the inverted recurrent step over N tokens (0: skip)")
    parser.add_argument("--long-dtypes", default="float32",
                        help="comma list of dtypes for the --long run: float32, bfloat16 (one result file each)")
    parser.add_argument("--no-scaling", action="store_true", help="only the --long run")
    parser.add_argument("--out", default="results")
    parser.add_argument("--note", default=None, help="free text stored in the JSON")


def run_scaling_cli(args: argparse.Namespace) -> None:
    """What ``workbench bench scaling`` does with the parsed arguments."""
    from rich.console import Console

    console = Console(width=200)
    if not args.no_scaling:
        result = run_scaling(
            lengths=tuple(_int_list(args.lengths)),
            mixers=tuple(m for m in args.mixers.split(",") if m),
            d_model=args.d_model,
            tokens_per_batch=args.tokens_per_batch,
            repeats=args.repeats,
            time_limit_s=args.time_limit,
            memory_limit_gb=args.memory_limit_gb,
            device=args.device,
            out=Path(args.out),
            threads=args.threads,
            decode_steps=args.decode_steps,
            note=args.note,
        )
        console.print(format_scaling_table(result))
        print(f"wrote {result['path']}")
    for dtype in (d for d in args.long_dtypes.split(",") if d) if args.long else ():
        long = run_long_recurrent(n_tokens=args.long, d_model=args.d_model, device=args.device, out=Path(args.out),
                                  threads=args.threads, note=args.note, dtype=dtype, time_limit_s=args.time_limit)
        s = long["summary"]
        print(f"long context ({dtype}): {long['settings']['tokens_done']:,} tokens, state {s['state_bytes']:,} B "
              f"(constant: {s['state_bytes_constant']}), µs/token first {s['s_per_token_first_window'] * 1e6:.1f} "
              f"last {s['s_per_token_last_window'] * 1e6:.1f}, outputs finite {s['all_outputs_finite']}, "
              f"max |y| {s['max_abs_output']:.3g}; wrote {long['path']}")
