"""Process isolation: every (mixer, n) point in a fresh process, supervised.

Each point runs in a process forked from a forkserver that has imported torch once (so a point
costs a fork, not an interpreter start), and is supervised by the parent: a phase that runs past
``time_limit_s`` or whose RSS passes the memory limit is killed and recorded as ``skipped`` with
the reason (and not retried at larger n, ``measure_point``'s ``blocked``); the remaining phases of
that point run in a new process. The child itself also stops early when its warm-up shows the
repeats cannot fit in the limit, and turns out-of-memory exceptions (CPU allocator, CUDA) into
``skipped`` records (``workbench.bench.phases``).

``supervise(target, args, ...)`` runs any picklable ``target(conn, *args)`` that speaks the
protocol: events ``ready``, then ``start``/``result`` per phase (``fatal`` when set-up fails).
"""

from __future__ import annotations

import time
from typing import Any

from workbench.bench.common import rss_bytes
from workbench.bench.phases import child_main

PRELOAD = ["torch", "torch._dynamo", "torch.utils.flop_counter", "torch.utils.module_tracker", "workbench.model",
           "workbench.bench.phases", "workbench.fast"]  # torch._dynamo: FlopCounterMode imports it on first use


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
            rss = rss_bytes(proc.pid) if proc.pid else None
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


def skip_kind(result: dict[str, Any] | None) -> str | None:
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
        run = supervise(child_main, (dict(spec, phases=pending),), spec["time_limit_s"], host_memory_limit_bytes)
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
