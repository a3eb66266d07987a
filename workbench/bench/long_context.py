"""The very long recurrent run: every constant-state mixer's block stepped over a million tokens.

For each mixer (every registered one whose state does not grow, by default), in its own supervised
process: one ``Block`` (batch 1, ``torch.no_grad()``, eval mode, random N(0, 1) inputs from a pool
of 4096 reused) stepped ``n_tokens`` times, with the fused step of ``workbench.fast`` when
``fused`` (the plain ``Block.step`` otherwise, or when the mixer cannot be fused). In windows of
``chunk`` tokens it records the time per token, the RSS now and the peak RSS so far (CUDA:
allocated bytes), the state's size and shapes, whether every output of the window was finite, the
largest |output| and the norms of the state's float tensors (numerical safety), and the float64
counters. ``dtype`` ("float32" or "bfloat16") is the block's parameter and activation dtype.

Writes ``<out>/long-context-<device>[-bf16].json``: shared settings, and ``runs`` by mixer.
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from workbench.bench.common import (
    SCHEMA,
    build_block,
    constant_state,
    default_device,
    default_threads,
    device_slug,
    finite,
    flat_state,
    git_commit,
    load_average,
    machine_description,
    mixer_options_used,
    proc_status,
    reset_peak_rss,
    state_bytes,
    state_shapes,
    write_json,
)

DTYPES = ("float32", "bfloat16")
STATS_EVERY = 1024  # outputs are copied into a buffer and checked every this many tokens (one op per token)


def _long_child(conn, spec: dict[str, Any]) -> None:
    """Supervised target: one mixer's long run (``ready``, then phase ``long``)."""
    from workbench.bench.phases import emit

    try:
        emit(conn, {"event": "ready", "rss_bytes": proc_status().get("VmRSS")})
        emit(conn, {"event": "start", "phase": "long"})
        result = _run_one(spec)
        emit(conn, {"event": "result", "phase": "long", "status": "ok"} | result)
    except Exception as exc:
        emit(conn, {"event": "result", "phase": "long", "status": "error",
                    "reason": f"{type(exc).__name__}: {str(exc)[:300]}", "traceback": traceback.format_exc()[-2000:]})
    finally:
        conn.close()


def _run_one(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec["dtype"]]
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(spec["seed"])
    block = build_block(spec["mixer"], spec["d_model"], spec["mlp_ratio"], spec["mixer_options"])
    block = block.to(dev, dtype).eval()
    n_tokens, chunk, d = spec["n_tokens"], spec["chunk"], spec["d_model"]
    pool = torch.randn(min(n_tokens, 4096), 1, d, device=dev).to(dtype)
    step_kind, compile_s, fused = "plain Block.step", None, None
    with torch.no_grad():
        if spec["fused"]:
            from workbench.fast import FusedStep

            try:
                fused = FusedStep(block, 1, backend=spec["fused_backend"])
                compile_s, step_kind = fused.compile_s, f"fused ({spec['fused_backend']}, workbench.fast)"
            except Exception as exc:  # a mixer the fused path cannot take: say so, run plain
                step_kind = f"plain Block.step (fused failed: {type(exc).__name__}: {str(exc)[:160]})"
        if fused is not None:
            step, to_plain, state = fused, fused.to_state, fused.init_state()
            warm = fused.init_state()
        else:
            step, to_plain = block.step, (lambda s: s)
            state, warm = block.init_state(1, dev, dtype), block.init_state(1, dev, dtype)
        for i in range(min(20, n_tokens)):  # warm-up on a throw-away state
            _, warm = step(pool[i % len(pool)], warm)
        del warm
        plain = to_plain(state)
        shapes0, bytes0 = state_shapes(flat_state(plain)), state_bytes(plain)
        exact = reset_peak_rss()
        rss0 = proc_status().get("VmRSS")
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        buffer = torch.zeros(STATS_EVERY, d, device=dev, dtype=dtype)
        windows: list[dict[str, Any]] = []
        start, done, stopped = time.perf_counter(), 0, False
        while done < n_tokens:
            size = min(chunk, n_tokens - done)
            finite_flags, largest = [], []
            sync()
            t0 = time.perf_counter()
            limit = spec.get("time_limit_s")
            for i in range(done, done + size):
                y, state = step(pool[i % len(pool)], state)
                buffer[i % STATS_EVERY].copy_(y[0])
                last = i == done + size - 1
                if limit is not None and (i - done) % 256 == 255 and time.perf_counter() - start > limit:
                    size, last = i + 1 - done, True  # out of time mid-window: this window ends here
                if i % STATS_EVERY == STATS_EVERY - 1 or last:
                    finite_flags.append(torch.isfinite(buffer).all())  # slots not yet rewritten hold earlier outputs
                    largest.append(buffer.abs().max().float())
                if last:
                    break
            sync()
            dt = time.perf_counter() - t0
            done += size
            plain = flat_state(to_plain(state))
            status = proc_status()
            window = {
                "tokens_done": done, "window_tokens": size, "s_per_token": dt / size,
                "rss_bytes": status.get("VmRSS"), "peak_rss_bytes": status.get("VmHWM") if exact else None,
                "state_bytes": state_bytes(plain), "state_shapes_unchanged": state_shapes(plain) == shapes0,
                "occupied_units": int(plain["occupied"].sum()) if "occupied" in plain else None,
                "outputs_finite": bool(torch.stack(finite_flags).all()),
                "max_abs_output": float(torch.stack(largest).max()),
                # Activations must stay bounded; float64 counters (writes, pointers) grow by design.
                "state_norms": {k: float(v.double().norm()) for k, v in plain.items()
                                if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != torch.float64},
                "counters_max": {k: float(v.max()) for k, v in plain.items()
                                 if isinstance(v, torch.Tensor) and v.dtype == torch.float64},
            }
            if dev.type == "cuda":
                window |= {"cuda_allocated_bytes": torch.cuda.memory_allocated(dev),
                           "cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated(dev)}
            windows.append(window)
            if spec["progress"]:
                print(f"[long {spec['mixer']}] {done:>10,} tokens  {dt / size * 1e6:8.1f} µs/token  "
                      f"RSS {(window['rss_bytes'] or 0) / 2**20:8.1f} MiB  state {window['state_bytes']:,} B",
                      file=sys.stderr)
            if limit is not None and time.perf_counter() - start > limit and done < n_tokens:
                stopped = True
                break
    per_token = [w["s_per_token"] for w in windows]
    growth = None
    if len(windows) >= 2:
        slope = np.polyfit([w["tokens_done"] for w in windows], per_token, 1)[0]
        growth = float(slope * done / statistics.median(per_token))  # fitted change over the run / median
    rss = [w["rss_bytes"] for w in windows if w["rss_bytes"] is not None]
    norms = [w["state_norms"] for w in windows]
    return {
        "mixer": spec["mixer"], "step": step_kind, "compile_s": compile_s, "tokens_done": done,
        "stopped_early": stopped, "wall_s": time.perf_counter() - start, "windows": windows,
        "mixer_options": mixer_options_used(spec["mixer"], d, spec["mixer_options"]),
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
            "transformer_kv_cache_bytes_at_same_n_for_contrast": 2 * done * d * 4,
            "all_outputs_finite": all(w["outputs_finite"] for w in windows),
            "max_abs_output": max(w["max_abs_output"] for w in windows),
            "max_state_norms": {k: max(n[k] for n in norms) for k in norms[0]} if norms else {},
            "state_norms_first_window": norms[0] if norms else {},
            "state_norms_last_window": norms[-1] if norms else {},
        },
    }


def long_context_mixers() -> list[str]:
    """Every registered mixer whose recurrent state does not grow with the context."""
    from workbench.mixers import MIXERS

    return [m for m in MIXERS if constant_state(m)]


def run_long_recurrent(
    n_tokens: int = 1_000_000,
    d_model: int = 128,
    chunk: int | None = None,
    device: str | None = None,
    out: Path | str | None = Path("results"),
    *,
    mixers: tuple[str, ...] | None = None,
    mixer_options: dict[str, dict[str, Any]] | None = None,
    mlp_ratio: int = 4,
    threads: int | None = None,
    time_limit_s: float | None = None,
    seed: int = 0,
    progress: bool = True,
    note: str | None = None,
    dtype: str = "float32",
    fused: bool = False,
    fused_backend: str = "aoti",
) -> dict[str, Any]:
    """Each constant-state mixer's block stepped over ``n_tokens`` (module docstring); the combined result.

    ``chunk`` tokens per window (default: a tenth of the run); ``time_limit_s`` per mixer (stops
    early, ``stopped_early``). Writes ``<out>/long-context-<device>[-bf16].json`` unless ``out`` is None.
    """
    import torch

    from workbench.bench.supervisor import supervise

    if n_tokens < 1:
        raise ValueError("n_tokens must be positive")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    mixers = tuple(mixers or long_context_mixers())
    growing = [m for m in mixers if not constant_state(m)]
    if growing:
        raise ValueError(f"the long run is for constant-state mixers; {growing} grow a cache")
    chunk = int(chunk or max(1, n_tokens // 10))
    device = device or default_device()
    threads = int(threads or default_threads())
    slug = device_slug(device, threads, torch.cuda.get_device_name(device) if device.startswith("cuda") else None)
    if dtype != "float32":
        slug += "-bf16"
    result: dict[str, Any] = {
        "kind": "long-context", "schema": SCHEMA, "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": slug, "machine": machine_description(threads),
        "torch": torch.__version__, "note": note,
        "unit": "one workbench.model.Block per mixer, recurrent step (front end + mixer + MLP), batch 1, "
        "torch.no_grad(), eval mode, random N(0,1) inputs (a pool of 4096 reused); each mixer in its own process",
        "settings": {"n_tokens": n_tokens, "window_tokens": chunk, "d_model": d_model, "dtype": dtype,
                     "mlp_ratio": mlp_ratio, "threads": threads, "time_limit_s_per_mixer": time_limit_s,
                     "fused": fused, "fused_backend": fused_backend if fused else None, "mixers": list(mixers)},
        "runs": {},
    }
    for mixer in mixers:
        spec = {"mixer": mixer, "n_tokens": n_tokens, "chunk": chunk, "d_model": d_model, "dtype": dtype,
                "mlp_ratio": mlp_ratio, "threads": threads, "device": device, "seed": seed, "progress": progress,
                "time_limit_s": time_limit_s, "fused": fused, "fused_backend": fused_backend,
                "mixer_options": (mixer_options or {}).get(mixer) or {}}
        limit = (time_limit_s or 10 * 24 * 3600) * 1.5 + 900  # the child stops itself; this is the backstop
        run = supervise(_long_child, (spec,), time_limit_s=limit, memory_limit_bytes=None)
        res = run["results"].get("long") or {"status": "error", "reason": (run["stopped"] or {}).get("reason")}
        result["runs"][mixer] = res
        if progress and res.get("status") != "ok":
            print(f"[long {mixer}] {res.get('status')}: {res.get('reason')}", file=sys.stderr)
    result["machine"]["load_average_end"] = load_average()
    if out is not None:
        path = Path(out) / f"long-context-{slug}.json"
        write_json(path, result)
        result["path"] = str(path)
    return finite(result)
