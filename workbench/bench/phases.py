"""The measured phases of one (mixer, n) point, run inside the point's own process (see ``supervisor``).

* ``train``: forward + backward of ``mean(y^2)`` (+ the mixer's aux loss), training mode, no
  optimizer update; median of ``repeats`` after one warm-up, and the peak memory.
* ``prefill``: forward only under ``torch.no_grad()``, eval mode; tokens/s and peak memory.
* ``decode``: one plain recurrent ``Block.step`` at batch 1 with a context of n tokens; median of
  ``decode_steps`` single steps after 5 warm-up steps; every step starts from the same state.
* ``decode_fused``: the same step fused by ``workbench.fast`` (inductor; AOTInductor by default),
  at batch 1 and at batch ``decode_batch`` (serving many sequences at once); compile time,
  per-step time, tokens/s, the largest difference from the plain step's output. A state the fused
  step writes in place (``workbench.fast.InPlaceState``) advances one token per timed step (a
  constant state: the same cost per step); a KV cache's position does not advance.

Context state (``context_state``): a constant-state mixer steps min(n, ``decode_state_max_n``)
random tokens, then its integer positions are set to n (the step's cost does not depend on the
values: no data-dependent branch once the state is full); the transformer's KV cache of n random
keys and values is built directly; any other growing state steps all n tokens.

Peak memory: CPU - Linux peak RSS (VmHWM) reset per phase through /proc/self/clear_refs, minus the
RSS at the phase start (inputs, activations, gradients and workspace above the resident model).
CUDA - ``torch.cuda.max_memory_allocated`` minus the allocation at the phase start.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
import traceback
from typing import Any

from workbench.bench.common import build_block, constant_state, finite, proc_status, reset_peak_rss, state_bytes

PHASES = ("decode", "decode_fused", "prefill", "train")  # cheapest first: a slow train step cannot take the others down
WARMUP_STEPS = 5


class OutOfTime(Exception):
    pass


def emit(conn, event: dict[str, Any]) -> None:
    conn.send(finite(event))


def is_oom(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if isinstance(exc, MemoryError) or (oom_type and isinstance(exc, oom_type)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text


class MemoryProbe:
    """Peak memory of one phase above its start (see the module docstring); ``reset()`` starts over."""

    def __init__(self, device) -> None:
        self.device = device

    def reset(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated - allocated at start"
        else:
            self.exact = reset_peak_rss()
            self.base = proc_status().get("VmRSS", 0)
            self.method = "VmHWM (reset) - VmRSS at start" if self.exact else (
                "ru_maxrss since process start - VmRSS at start (clear_refs unavailable: an upper bound)")

    def __enter__(self) -> MemoryProbe:
        self.peak_bytes: int | None = None
        self.reset()
        return self

    def peak(self) -> int:
        """The peak so far above the start (or the last ``reset``)."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        peak = proc_status().get("VmHWM") if self.exact else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return max(0, peak - self.base)

    def __exit__(self, *exc) -> None:
        self.peak_bytes = self.peak()


def timed(fn, sync, phase_start: float, limit: float, repeats: int, first: float) -> dict[str, Any]:
    """Up to ``repeats`` timed calls that fit in ``limit`` seconds from ``phase_start``.

    ``first`` is the duration of the untimed warm-up call already made (the estimate for the first check).
    """
    times: list[float] = []
    for _ in range(repeats):
        estimate = statistics.median(times) if times else first
        if time.perf_counter() - phase_start + estimate > limit:
            if not times:
                raise OutOfTime(f"out of time (warm-up step took {first:.3g} s; the next one would pass the "
                                f"{limit:g} s limit)")
            break
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times, "repeats": len(times),
            "warmup_s": first}


def count_flops(fn) -> int | None:
    """Matmul-class FLOPs of one call as torch's FlopCounterMode sees them (None if unavailable).

    It counts mm/addmm/bmm/convolution and the CUDA fused attention kernels, not element-wise ops,
    and not the CPU flash-attention kernel (so on CPU a softmax attention's scores are missing).
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover - old torch
        fn()
        return None
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def warm_up(fn, sync, count: bool) -> tuple[float, int | None]:
    """One untimed call (under torch's FlopCounterMode when ``count``): (seconds, counted FLOPs)."""
    t = time.perf_counter()
    flops = count_flops(fn) if count else fn()
    sync()
    return time.perf_counter() - t, flops if count else None


# ----------------------------------------------------------------------------- context states


def context_state(block, spec: dict[str, Any], device, dtype, start: float) -> tuple[dict[str, Any], str]:
    """A batch-1 block state after a context of n tokens, and how it was made (module docstring)."""
    import torch

    n, d, limit = spec["n"], spec["d_model"], spec["time_limit_s"]
    empty = block.init_state(1, device, dtype)
    if not constant_state(spec["mixer"]) and {"k", "v", "position"} <= set(empty["mixer"]):
        shape = list(empty["mixer"]["k"].shape)
        shape[2] = n
        state = {**empty, "mixer": {"k": torch.randn(shape, device=device, dtype=dtype),
                                    "v": torch.randn(shape, device=device, dtype=dtype), "position": n}}
        return state, f"KV cache of {n} random keys and values constructed directly"
    steps = n if not constant_state(spec["mixer"]) else min(n, spec["decode_state_max_n"])
    state = empty
    prefix = torch.randn(steps, 1, d, device=device, dtype=dtype)
    for t in range(steps):
        _, state = block.step(prefix[t], state)
        if t % 256 == 0 and time.perf_counter() - start > limit:
            raise OutOfTime(f"out of time (building the state by stepping {n} tokens passed {limit:g} s)")
    if steps == n:
        return state, f"stepped {n} random tokens from init_state"
    ints = [k for k, v in state["mixer"].items() if isinstance(v, int) and not isinstance(v, bool)]
    state = {**state, "mixer": {**state["mixer"], **{k: n for k in ints}}}
    return state, (f"stepped {steps} random tokens from init_state, then integer positions ({', '.join(ints) or 'none'})"
                   f" set to {n}: a constant state's step costs the same whatever the context")


def repeat_state(state: Any, batch: int) -> Any:
    """A batch-1 state repeated to ``batch`` sequences (tensors along dim 0)."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.repeat(batch, *([1] * (state.dim() - 1))) if state.dim() else state.clone()
    if isinstance(state, dict):
        return {k: repeat_state(v, batch) for k, v in state.items()}
    if isinstance(state, list):
        return [repeat_state(v, batch) for v in state]
    return state


# ----------------------------------------------------------------------------- phases


def phase_train(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    block, spec, sync = ctx["block"], ctx["spec"], ctx["sync"]
    start = time.perf_counter()
    block.train()
    with MemoryProbe(ctx["device"]) as probe:
        x = torch.randn(spec["batch"], spec["n"], spec["d_model"], device=ctx["device"])

        def step() -> None:
            block.zero_grad(set_to_none=True)
            y = block(x)
            loss = y.float().square().mean()
            aux = getattr(block.mixer, "aux_loss", None)
            if aux is not None:
                loss = loss + aux
            loss.backward()

        first, flops = warm_up(step, sync, spec.get("count_flops", True))
        timing = timed(step, sync, start, spec["time_limit_s"], spec["repeats"], first)
    block.zero_grad(set_to_none=True)
    tokens = spec["batch"] * spec["n"]
    return timing | {
        "status": "ok", "tokens": tokens, "tokens_per_s": tokens / timing["median_s"],
        "peak_mem_bytes": probe.peak_bytes, "memory_method": probe.method,
        "torch_flop_counter_per_token": flops / tokens if flops else None,
    }


def phase_prefill(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    block, spec, sync = ctx["block"], ctx["spec"], ctx["sync"]
    start = time.perf_counter()
    block.eval()
    with torch.no_grad(), MemoryProbe(ctx["device"]) as probe:
        x = torch.randn(spec["batch"], spec["n"], spec["d_model"], device=ctx["device"])
        first, flops = warm_up(lambda: block(x), sync, spec.get("count_flops", True))
        timing = timed(lambda: block(x), sync, start, spec["time_limit_s"], spec["repeats"], first)
    tokens = spec["batch"] * spec["n"]
    return timing | {
        "status": "ok", "tokens": tokens, "tokens_per_s": tokens / timing["median_s"],
        "peak_mem_bytes": probe.peak_bytes, "memory_method": probe.method,
        "torch_flop_counter_per_token": flops / tokens if flops else None,
    }


def _step_times(step, xs, sync, start: float, limit: float, steps: int) -> list[float]:
    """Warm-up then up to ``steps`` timed calls of ``step(x)``, each from the same state."""
    for i in range(WARMUP_STEPS):
        step(xs[i])
    sync()
    times: list[float] = []
    for i in range(steps):
        if times and time.perf_counter() - start + statistics.median(times) > limit:
            break
        t = time.perf_counter()
        step(xs[WARMUP_STEPS + i])
        sync()
        times.append(time.perf_counter() - t)
        if len(times) == 1 and time.perf_counter() - start > limit:
            raise OutOfTime(f"out of time (one decode step passed the {limit:g} s limit)")
    return times


def _timing(times: list[float], batch: int = 1) -> dict[str, Any]:
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "times_s": times, "repeats": len(times),
            "batch": batch, "tokens_per_s": batch / median}


def phase_decode(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    block, spec, sync, device = ctx["block"], ctx["spec"], ctx["sync"], ctx["device"]
    start = time.perf_counter()
    block.eval()
    dtype = next(block.parameters()).dtype
    with torch.no_grad(), MemoryProbe(device) as probe:
        state, source = context_state(block, spec, device, dtype, start)
        xs = torch.randn(spec["decode_steps"] + WARMUP_STEPS, 1, spec["d_model"], device=device)
        flops = count_flops(lambda: block.step(xs[0], state)) if spec.get("count_flops", True) else None
        times = _step_times(lambda x: block.step(x, state), xs, sync, start, spec["time_limit_s"], spec["decode_steps"])
    ctx["decode_state"] = (state, source)  # the fused phase reuses it
    return {"status": "ok", **_timing(times), "state_bytes": state_bytes(state), "state_source": source,
            "peak_mem_bytes": probe.peak_bytes, "memory_method": probe.method,
            "torch_flop_counter_per_token": flops}


def phase_decode_fused(ctx: dict[str, Any]) -> dict[str, Any]:
    """``workbench.fast.FusedStep`` at batch 1 and at batch ``decode_batch``, from the same context state."""
    import torch

    from workbench.fast import FusedStep

    block, spec, sync, device = ctx["block"], ctx["spec"], ctx["sync"], ctx["device"]
    start, limit, steps = time.perf_counter(), spec["time_limit_s"], spec["decode_steps"]
    block.eval()
    dtype = next(block.parameters()).dtype
    capacity = spec["n"] + 2 * (steps + WARMUP_STEPS) + 2
    out: dict[str, Any] = {"status": "ok", "backend": spec["fused_backend"]}
    with torch.no_grad(), MemoryProbe(device) as probe:
        state, source = ctx.get("decode_state") or context_state(block, spec, device, dtype, start)
        out["state_source"] = source
        xs = torch.randn(steps + WARMUP_STEPS, 1, spec["d_model"], device=device)
        for batch in sorted({1, spec["decode_batch"]}):
            budget = spec.get("decode_batch_max_state_bytes", 2**30)
            if batch > 1 and state_bytes(state) * batch > budget:
                out["batched"] = {"status": "skipped", "batch": batch, "reason": (
                    f"out of memory (by rule: the state of {batch} sequences would hold "
                    f"{state_bytes(state) * batch / 2**30:.1f} GiB > {budget / 2**30:.1f} GiB; not run)")}
                continue
            t = time.perf_counter()
            fused = FusedStep(block, batch, backend=spec["fused_backend"], capacity=capacity)
            compile_s = time.perf_counter() - t
            plain_state = state if batch == 1 else repeat_state(state, batch)
            flat = fused.from_state(plain_state)
            xb = xs.expand(-1, batch, -1).contiguous()
            y_plain, _ = block.step(xb[0], plain_state)
            y_fused, _ = fused(xb[0], flat)
            error = float((y_plain - y_fused).abs().max())
            if batch == 1:
                probe.reset()  # the steady step's memory, not the compiler's
            # The limit applies to the timed steps, not the compile (recorded as compile_s): a compile
            # longer than the limit would otherwise leave the fused step unmeasured at every length.
            times = _step_times(lambda x, f=fused, s=flat: f(x, s), xb, sync, time.perf_counter(), limit, steps)
            record = _timing(times, batch) | {"compile_s": compile_s, "max_abs_diff_vs_plain": error,
                                              "state_bytes": state_bytes(flat)}
            if batch == 1:
                out |= record | {"peak_mem_bytes": probe.peak(), "memory_method": probe.method + " (after compiling)"}
            else:
                out["batched"] = {"status": "ok"} | record
            del fused, flat, plain_state
            if time.perf_counter() - start > 4 * limit:
                raise OutOfTime(f"out of time (compiling and timing the fused step passed {4 * limit:g} s)")
    return out


PHASE_FUNCS = {"train": phase_train, "prefill": phase_prefill, "decode": phase_decode,
               "decode_fused": phase_decode_fused}


def touch(block, spec: dict[str, Any], device, sync) -> None:
    """Run every code path once at a tiny size before any measurement.

    A forked child maps the server's code pages lazily: the first call of each kernel faults
    them in and grows RSS by ~10 MB that no phase should be charged for (lazy imports alike).
    """
    import torch

    x = torch.randn(1, min(spec["n"], 8), spec["d_model"], device=device)
    block.train()
    if spec.get("count_flops", True):
        count_flops(lambda: block(x).square().mean().backward())
    block(x).square().mean().backward()
    block.zero_grad(set_to_none=True)
    block.eval()
    with torch.no_grad():
        block(x)
        state = block.init_state(1, device, x.dtype)
        for t in range(x.shape[1]):
            _, state = block.step(x[:, t], state)
    sync()


def child_main(conn, spec: dict[str, Any]) -> None:
    """One point's process: sends ``ready``, then ``start`` and ``result`` per phase, over ``conn``."""
    try:
        _child_phases(conn, spec)
    except BaseException as exc:  # set-up failed: say why instead of dying silently
        emit(conn, {"event": "fatal", "reason": f"{type(exc).__name__}: {str(exc)[:300]}",
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
    block = build_block(spec["mixer"], spec["d_model"], spec["mlp_ratio"], spec["mixer_options"]).to(device)
    touch(block, spec, device, sync)
    if hasattr(block.mixer, "impl"):
        info["impl"] = block.mixer.impl
    info["rss_bytes"] = proc_status().get("VmRSS")
    emit(conn, info)
    ctx = {"block": block, "spec": spec, "device": device, "sync": sync}
    for phase in spec["phases"]:
        emit(conn, {"event": "start", "phase": phase})
        try:
            result = PHASE_FUNCS[phase](ctx)
        except OutOfTime as exc:
            result = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # OOM inside torch is an exception, not a crash
            if is_oom(exc):
                result = {"status": "skipped", "reason": f"out of memory ({type(exc).__name__}: {str(exc)[:200]})"}
            else:
                result = {"status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:300]}",
                          "traceback": traceback.format_exc()[-2000:]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        emit(conn, {"event": "result", "phase": phase} | result)
