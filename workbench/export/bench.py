"""``workbench bench edge`` (``make bench-edge``): the exported model per token, against eager PyTorch.

One run, side by side on one machine, written to ``<out>/edge-<device>.json``:

1. **Exports**: the inverted char-LM checkpoint as ONNX fp32 and int8, the transformer as ONNX fp32
   (its KV cache a growing input), each checked against PyTorch at export.
2. **Quality**: validation bits per character of the PyTorch model (``CharLMTask.evaluate``, the
   parallel form) and of both exported graphs (recurrent, the same windows from the initial state).
3. **Per token, batch 1** (``per_token``): the inverted model's step after a 256-token context, fed
   the validation text (teacher forcing), eager PyTorch vs ONNX fp32 vs ONNX int8 (and ExecuTorch,
   XNNPACK, when the optional ``executorch`` package is installed), at each thread count: median µs
   per token over ``steps`` steps, and memory (see below).
4. **By context** (``by_context``): inverted and transformer, eager and ONNX fp32, one step at a
   context of n tokens for n in ``contexts``; each timed step feeds its state to the next (the
   context grows by one per step, as in generation). The inverted state is the real one, built by
   stepping the validation text n tokens through the fp32 graph; the transformer's KV cache is N(0, 1)
   keys and values of length n (its cost does not depend on the values), its position counter n.
5. **Paired** (``paired``): the two fp32 graphs in one process, stepping in turns (blocks of 25
   timed steps after 3 untimed ones, so each runs warm) from their states at context n, so both see
   the same load: the target "inverted
   faster than the transformer at every context" is read here, where separate processes minutes apart
   on a shared machine differ by more than the two graphs do at n = 256.
6. **Where the time goes** (``profile``): both fp32 graphs at context ``per_token_context``, one
   thread, through onnxruntime's profiler: the nodes run per step (after its graph optimizations)
   and the kernel time per step by operator type. The profiler's own overhead inflates these times,
   so they are shares, not latencies.

Every cell (runtime x threads, or model x runtime x threads for the context sweep) runs in a fresh
process: ONNX cells import numpy and onnxruntime only, never torch (recorded per cell). Memory is
Linux RSS from /proc/self/status: ``peak_rss_bytes`` is the process's high-water mark since it
started (runtime + model + state: the footprint on a device), ``rss_after_import_bytes`` the
process after importing its runtime and before loading the model. For context points the
high-water mark is reset (/proc/self/clear_refs) before the state is loaded, and ``peak_above_start``
is what the point added. The machine is shared: the 1-minute load average is recorded at the start
and the end, and only ratios measured in the same run should be compared.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.export.edge_report import caveats, edge_markdown, targets

__all__ = ["caveats", "edge_markdown", "run_edge", "run_worker", "targets"]

SCHEMA = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIMES = ("eager", "onnx-fp32", "onnx-int8")  # plus "executorch" when the package is installed


# ----------------------------------------------------------------------------- process measurements


def _status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _summary(times: list[float]) -> dict[str, float]:
    us = sorted(t * 1e6 for t in times)
    return {"median_us": statistics.median(us), "mean_us": statistics.fmean(us), "p10_us": us[len(us) // 10],
            "p90_us": us[(9 * len(us)) // 10], "steps": len(us)}


# ----------------------------------------------------------------------------- steppers for one process


class _Onnx:
    def __init__(self, directory: str, threads: int) -> None:
        from workbench.export.runtime import OnnxStepper

        self.stepper = OnnxStepper(directory, threads=threads)
        self.manifest = self.stepper.manifest

    def state(self, arrays: list[np.ndarray]) -> Any:
        return [a.copy() for a in arrays]

    def step(self, token: int, state: Any) -> Any:
        return self.stepper.step(np.array([token], dtype=np.int64), state)[1]


class _Eager:
    def __init__(self, checkpoint: str, directory: str, threads: int) -> None:
        import torch

        from workbench.checkpoint import model_from_checkpoint
        from workbench.export.manifest import read_manifest

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = model_from_checkpoint(checkpoint)[0].eval()
        self.manifest = read_manifest(directory)

    def state(self, arrays: list[np.ndarray]) -> Any:
        from workbench.export.onnx_export import arrays_to_state

        return arrays_to_state([a.copy() for a in arrays], self.manifest)

    def step(self, token: int, state: Any) -> Any:
        with self.torch.inference_mode():
            return self.model.step(self.torch.tensor([token]), state)[1]


class _Executorch(_Onnx):
    def __init__(self, directory: str, threads: int) -> None:
        from workbench.export.executorch_export import ExecutorchStepper

        self.stepper = ExecutorchStepper(directory, threads=threads)
        self.manifest = self.stepper.manifest


def context_state(manifest: dict[str, Any], n: int, work: Path, seed: int = 0) -> list[np.ndarray]:
    """The state at context n: saved by the run (a real one) when there is one; else, for a
    growing state, N(0, 1) tensors of length n along the growing axis and int counters set to n."""
    saved = work / f"state-{manifest['model_config']['mixer']}-{n}.npz"
    entries = [e for e in manifest["state"] if e["kind"] != "none"]
    if saved.is_file():
        with np.load(saved, allow_pickle=False) as data:
            return [data[e["input"]] for e in entries]
    rng = np.random.default_rng(seed)
    with np.load(Path(manifest["_directory"]) / manifest["init_state"]["file"], allow_pickle=False) as data:
        init = [data[e["input"]] for e in entries]
    state = []
    for entry, value in zip(entries, init):
        if entry["growing_axis"] is not None:
            shape = list(value.shape)
            shape[entry["growing_axis"]] = n
            value = rng.standard_normal(shape).astype(entry["dtype"])
        elif entry["kind"] == "int":
            value = np.array(n, dtype=np.int64)
        state.append(value)
    return state


def profile_graph(directory: str, state: list[np.ndarray], tokens: np.ndarray, warmup: int, steps: int,
                  threads: int = 1) -> dict[str, Any]:
    """onnxruntime's profiler over ``steps`` steps from ``state``: nodes per step, kernel µs per operator type."""
    import tempfile

    import onnxruntime as ort

    from workbench.export.runtime import OnnxStepper, session_options

    stepper = OnnxStepper(directory, threads=threads)
    options = session_options(threads)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="workbench-profile-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(stepper.directory / stepper.manifest["graph"]["file"]), options,
                                       providers=["CPUExecutionProvider"])
        names = [e["input"] for e in stepper.entries]
        for i in range(warmup + steps):
            feeds = {"token": np.array([tokens[i]], dtype=np.int64), **dict(zip(names, state))}
            _, *state = session.run(stepper.output_names, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][warmup:]
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    kernels = kernels[len(kernels) * warmup // (warmup + steps):]  # the same number of nodes every run
    per_op: dict[str, dict[str, float]] = {}
    for event in kernels:
        entry = per_op.setdefault(event["args"]["op_name"], {"us_per_step": 0.0, "nodes_per_step": 0.0})
        entry["us_per_step"] += event["dur"] / steps
        entry["nodes_per_step"] += 1 / steps
    return {"steps": steps, "nodes_per_step": len(kernels) / steps, "model_run_median_us": statistics.median(runs),
            "kernel_us_per_step": sum(e["dur"] for e in kernels) / steps,
            "per_op": dict(sorted(per_op.items(), key=lambda kv: -kv[1]["us_per_step"]))}


PAIR_BLOCK, PAIR_REWARM = 25, 3  # steps per turn; steps after each switch left untimed (caches refill)


def paired_points(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Two ONNX exports stepped in turns at each context: blocks of ``PAIR_BLOCK`` steps, the first
    ``PAIR_REWARM`` of each untimed. Both see the same load over time, each runs warm as it would alone
    (alternating every step, each graph evicts the other's weights and both look slower than they are)."""
    names, work, tokens, warmup = spec["models"], Path(spec["work"]), np.load(spec["tokens"]), spec["warmup"]
    runners = []
    for directory in spec["exports"]:
        runner = _Onnx(directory, spec["threads"])
        runner.manifest["_directory"] = directory
        runners.append(runner)
    block = PAIR_BLOCK + PAIR_REWARM
    points = []
    for n in spec["contexts"]:
        states = [r.state(context_state(r.manifest, n, work)) for r in runners]
        times: list[list[float]] = [[] for _ in runners]
        for turn in range(2 * -(-spec["steps"] // PAIR_BLOCK)):
            k = turn % len(runners)
            for i in range(block):
                token = int(tokens[(warmup + turn // 2 * block + i) % len(tokens)])
                started = time.perf_counter()
                states[k] = runners[k].step(token, states[k])
                if i >= PAIR_REWARM:
                    times[k].append(time.perf_counter() - started)
        del states
        median_block = [[statistics.median(t[j:j + PAIR_BLOCK]) for j in range(0, len(t), PAIR_BLOCK)] for t in times]
        first_faster = sum(a < b for a, b in zip(*median_block)) / len(median_block[0])
        points.append({"context": n, **{name: _summary(t) for name, t in zip(names, times)},
                       f"{names[0]}_faster_blocks": first_faster, "blocks": len(median_block[0])})
    return points


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One cell in this (fresh) process: ``per_token``, ``by_context``, ``paired`` or ``profile``."""
    threads = spec["threads"]
    if spec["kind"] == "paired":
        return {"points": paired_points(spec), "torch_imported": "torch" in sys.modules}
    if spec["kind"] == "profile":
        import onnxruntime  # noqa: F401

        from workbench.export.manifest import read_manifest

        manifest = {**read_manifest(spec["export"], "onnx"), "_directory": spec["export"]}
        state = context_state(manifest, spec["context"], Path(spec["work"]))
        result = profile_graph(spec["export"], state, np.load(spec["tokens"]), spec["warmup"], spec["steps"], threads)
        return {**result, "context": spec["context"], "torch_imported": "torch" in sys.modules}
    rss_import_before = _status("VmRSS")
    if spec["runtime"] == "eager":
        import torch  # noqa: F401 - counted in rss_after_import
    elif spec["runtime"] == "executorch":
        import executorch.runtime  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    result: dict[str, Any] = {"rss_at_start_bytes": rss_import_before, "rss_after_import_bytes": _status("VmRSS")}
    if spec["runtime"] == "eager":
        runner: Any = _Eager(spec["checkpoint"], spec["export"], threads)
    elif spec["runtime"] == "executorch":
        runner = _Executorch(spec["export"], threads)
    else:
        runner = _Onnx(spec["export"], threads)
    runner.manifest["_directory"] = spec["export"]
    result["rss_after_load_bytes"] = _status("VmRSS")
    tokens = np.load(spec["tokens"])
    work = Path(spec["work"])
    if spec["kind"] == "per_token":
        state = runner.state(context_state(runner.manifest, spec["context"], work))
        for i in range(spec["warmup"]):
            state = runner.step(int(tokens[i]), state)
        times = []
        for i in range(spec["steps"]):
            token = int(tokens[spec["warmup"] + i])
            started = time.perf_counter()
            state = runner.step(token, state)
            times.append(time.perf_counter() - started)
        result.update(_summary(times))
    else:
        points = []
        for n in spec["contexts"]:
            _reset_peak()
            start_rss = _status("VmRSS")
            arrays = context_state(runner.manifest, n, work)
            state_bytes = int(sum(a.nbytes for a in arrays))
            state = runner.state(arrays)
            del arrays
            for i in range(spec["warmup"]):
                state = runner.step(int(tokens[i]), state)
            times = []
            for i in range(spec["steps"]):
                started = time.perf_counter()
                state = runner.step(int(tokens[spec["warmup"] + i]), state)
                times.append(time.perf_counter() - started)
            peak = _status("VmHWM")
            points.append({"context": n, **_summary(times), "state_bytes": state_bytes, "peak_rss_bytes": peak,
                           "peak_above_start_bytes": None if peak is None or start_rss is None else peak - start_rss})
            del state
        result["points"] = points
    result["peak_rss_bytes"] = None if spec["kind"] == "by_context" else _status("VmHWM")
    result["torch_imported"] = "torch" in sys.modules
    return result


def _spawn(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one cell in a fresh interpreter with ``threads`` OpenMP threads; its JSON back."""
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    try:
        done = subprocess.run([sys.executable, "-m", "workbench.export.bench", "worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "skipped", "reason": f"out of time ({timeout_s:.0f} s)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": f"exit {done.returncode}: {tail[:300]}"}
    return {"status": "ok", **json.loads(lines[-1])}


# ----------------------------------------------------------------------------- the run


def _export(checkpoint: Path, directory: Path, quantize: str | None, progress: bool, fmt: str = "onnx") -> dict[str, Any]:
    """Export unless ``directory`` already holds this checkpoint's export (same sha256) made by this
    code (same commit, not dirty): a changed ``step`` traces to another graph."""
    from workbench.export.manifest import ExportError, file_sha256, read_manifest
    from workbench.export.onnx_export import export_checkpoint
    from workbench.provenance import git_commit

    try:
        manifest = read_manifest(directory, fmt)
        commit = git_commit()
        same_code = manifest.get("workbench_commit") == commit and "dirty" not in commit and commit != "unknown"
        if (same_code and manifest["checkpoint"]["sha256"] == file_sha256(checkpoint)
                and manifest["graph"]["quantize"] == quantize):
            if progress:
                print(f"reusing {directory}")
            return manifest
    except (ExportError, KeyError):
        pass
    if progress:
        print(f"exporting {checkpoint} -> {directory}{' (int8)' if quantize else ''}")
    return export_checkpoint(checkpoint, directory, fmt=fmt, quantize=quantize)


def _build_states(directory: Path, tokens: np.ndarray, contexts: list[int], work: Path) -> float:
    """Step the fp32 graph through the text, saving the state at each context; seconds taken."""
    from workbench.export.runtime import OnnxStepper

    stepper = OnnxStepper(directory, threads=1)
    mixer = stepper.manifest["model_config"]["mixer"]
    started, state, done = time.perf_counter(), stepper.init_state(1), 0
    for n in sorted(contexts):
        for t in range(done, n):
            _, state = stepper.step(tokens[t % len(tokens) : t % len(tokens) + 1], state)
        done = n
        np.savez(work / f"state-{mixer}-{n}.npz", **{e["input"]: a for e, a in zip(stepper.entries, state)})
    return time.perf_counter() - started


def _bpc(checkpoint: Path, exports: dict[str, Path]) -> dict[str, Any]:
    from workbench.checkpoint import model_from_checkpoint
    from workbench.export.runtime import OnnxStepper, bits_per_char

    model, config, task, _ = model_from_checkpoint(checkpoint)
    if config.task.name != "charlm":
        return {"note": f"not a char-LM checkpoint ({config.task.name}): no BPC"}
    windows = task.val_windows()
    out = {"pytorch": task.evaluate(model)["bpc"], "windows": int(windows.inputs.shape[0]),
           "context": int(windows.inputs.shape[1]), "method": "validation split in non-overlapping windows from "
           "the initial state; PyTorch: the parallel form (CharLMTask.evaluate); ONNX: the recurrent graph stepped"}
    for name, directory in exports.items():
        out[name] = bits_per_char(OnnxStepper(directory), windows.inputs.numpy(), windows.targets.numpy())["bpc"]
        out[f"{name}_minus_pytorch"] = out[name] - out["pytorch"]
    return out


def run_edge(inverted: Path, transformer: Path | None, out: Path, device: str = "cpu", threads=(1, 2),
             contexts=(256, 4096, 65536), steps: int = 200, context_steps: int = 100, work: Path | None = None,
             bpc: bool = True, timeout_s: float = 300.0, note: str = "", progress: bool = True,
             executorch: bool = True) -> dict[str, Any]:
    started, load_start = time.perf_counter(), load_average()
    work = Path(work or out / "edge-work")
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("state-*.npz"):
        stale.unlink()
    exports = {"inverted-onnx-fp32": work / "inverted-onnx-fp32", "inverted-onnx-int8": work / "inverted-onnx-int8"}
    if transformer:
        exports["transformer-onnx-fp32"] = work / "transformer-onnx-fp32"
    runtimes = list(RUNTIMES)
    if executorch and importlib.util.find_spec("executorch") is not None:
        exports["inverted-executorch"] = work / "inverted-executorch"
        runtimes.append("executorch")
    manifests = {}
    for name, directory in exports.items():
        ckpt = transformer if name.startswith("transformer") else inverted
        manifests[name] = _export(ckpt, directory, "int8" if name.endswith("int8") else None, progress,
                                  "executorch" if name.endswith("executorch") else "onnx")
    from workbench.checkpoint import model_from_checkpoint
    from workbench.provenance import git_commit

    _, _, task, _ = model_from_checkpoint(inverted)
    text = task.val_data.numpy() if hasattr(task, "val_data") else np.arange(max(contexts) + steps + 64) % 2
    tokens = np.resize(text, max(max(contexts), 256) + steps + context_steps + 64).astype(np.int64)
    np.save(work / "tokens.npy", tokens)
    if progress:
        print(f"building the inverted state at contexts {list(contexts)} (and 256) through the fp32 graph")
    build_s = _build_states(exports["inverted-onnx-fp32"], tokens, sorted(set(contexts) | {256}), work)

    result: dict[str, Any] = {
        "kind": "edge", "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": device,
        "note": note, "unit": "the whole char-LM (embedding, blocks, final norm, head), one recurrent step, batch 1",
        "settings": {"threads": list(threads), "contexts": list(contexts), "steps": steps,
                     "context_steps": context_steps, "per_token_context": 256, "warmup_steps": 5,
                     "inverted_checkpoint": str(inverted), "transformer_checkpoint": str(transformer or "")},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "shared": True, "load_average_1min_start": load_start},
        "methods": __doc__.split("\n\n", 1)[1].strip(),
        "exports": {name: {"graph_bytes": m["graph"]["bytes"], "quantization": m["graph"]["quantization"],
                           "opsets": m["graph"].get("opsets"), "runtime": m["runtime"], "verification": m.get("verification"),
                           "export_s": m.get("export_s"), "state_leaves": len(m["state"]),
                           "model_config": m["model_config"], "train_steps": m.get("train", {}).get("steps"),
                           "data": m.get("data"), "versions": m.get("versions")} for name, m in manifests.items()},
        "state_build_s": build_s,
        "git_commit": git_commit(),
    }
    if bpc:
        if progress:
            print("validation BPC: PyTorch, ONNX fp32, ONNX int8")
        result["bpc"] = _bpc(inverted, {k.removeprefix("inverted-"): v for k, v in exports.items()
                                        if k.startswith("inverted-onnx")})
    common = {"tokens": str(work / "tokens.npy"), "work": str(work), "warmup": 5}
    result["per_token"] = []
    for t in threads:
        for runtime in runtimes:
            directory = exports[f"inverted-{runtime}" if runtime != "eager" else "inverted-onnx-fp32"]
            spec = {**common, "kind": "per_token", "runtime": runtime, "threads": t, "checkpoint": str(inverted),
                    "export": str(directory), "context": 256, "steps": steps}
            cell = {"model": "inverted", "runtime": runtime, "threads": t, **_spawn(spec, timeout_s)}
            result["per_token"].append(cell)
            if progress:
                print(f"per token  inverted    {runtime:<10} {t} thread(s): "
                      + (f"{cell['median_us']:9.1f} µs" if cell["status"] == "ok" else cell["reason"]))
    result["by_context"] = []
    models = [("inverted", inverted)] + ([("transformer", transformer)] if transformer else [])
    for t in threads:
        for model, ckpt in models:
            for runtime in ("eager", "onnx-fp32"):
                spec = {**common, "kind": "by_context", "runtime": runtime, "threads": t, "checkpoint": str(ckpt),
                        "export": str(exports[f"{model}-onnx-fp32"]), "contexts": list(contexts),
                        "steps": context_steps}
                cell = {"model": model, "runtime": runtime, "threads": t, **_spawn(spec, timeout_s)}
                result["by_context"].append(cell)
                if progress:
                    text = ", ".join(f"{p['context']}: {p['median_us']:.0f} µs" for p in cell.get("points", []))
                    print(f"by context {model:<11} {runtime:<10} {t} thread(s): {text or cell.get('reason')}")
    result["paired"] = []
    if transformer:
        for t in threads:
            spec = {**common, "kind": "paired", "threads": t, "models": ["inverted", "transformer"], "steps": steps,
                    "exports": [str(exports["inverted-onnx-fp32"]), str(exports["transformer-onnx-fp32"])],
                    "contexts": list(contexts)}
            cell = {"runtime": "onnx-fp32", "threads": t, **_spawn(spec, timeout_s)}
            result["paired"].append(cell)
            if progress:
                text = ", ".join(f"{p['context']}: {p['inverted']['median_us']:.0f} vs {p['transformer']['median_us']:.0f} µs"
                                 for p in cell.get("points", []))
                print(f"paired     inverted vs transformer onnx-fp32 {t} thread(s): {text or cell.get('reason')}")
    result["profile"] = []
    for model in [m for m, _ in models]:
        spec = {**common, "kind": "profile", "threads": 1, "export": str(exports[f"{model}-onnx-fp32"]), "context": 256,
                "steps": steps}
        cell = {"model": model, "runtime": "onnx-fp32", **_spawn(spec, timeout_s)}
        result["profile"].append(cell)
        if progress and cell["status"] == "ok":
            top = ", ".join(f"{op} {v['us_per_step']:.0f}" for op, v in list(cell["per_op"].items())[:4])
            print(f"profile    {model:<11} {cell['nodes_per_step']:.0f} nodes per step; µs by op: {top}")
    result["machine"]["load_average_1min_end"] = load_average()
    result["caveats"] = caveats(result)
    result["wall_s"] = time.perf_counter() - started
    result["targets"] = targets(result)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"edge-{device}.json"
    path.write_text(json.dumps(result, indent=2))
    if progress:
        print(edge_markdown(result))
        print(f"wrote {path}")
    return result


# ----------------------------------------------------------------------------- command line


def add_edge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inverted", type=Path, default=Path("results/checkpoints/edge-inverted/checkpoint.pt"),
                   help="inverted char-LM checkpoint")
    p.add_argument("--transformer", default="results/checkpoints/edge-transformer/checkpoint.pt",
                   help="transformer char-LM checkpoint (empty string: skip)")
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--device", default="cpu", help="label of the file: results/edge-<device>.json")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--contexts", default="256,4096,65536")
    p.add_argument("--steps", type=int, default=200, help="timed steps per per-token cell")
    p.add_argument("--context-steps", type=int, default=100, help="timed steps per context point")
    p.add_argument("--work", type=Path, default=None, help="exports and states (default <out>/edge-work)")
    p.add_argument("--no-bpc", action="store_true")
    p.add_argument("--no-executorch", action="store_true", help="skip the ExecuTorch cells even when it is installed")
    p.add_argument("--note", default="")
    p.add_argument("--quiet", action="store_true")


def run_edge_cli(args: argparse.Namespace) -> None:
    from workbench.config import ConfigError

    ints = lambda text: [int(x) for x in str(text).split(",") if x]  # noqa: E731
    transformer = Path(args.transformer) if args.transformer else None
    for path in [args.inverted] + ([transformer] if transformer else []):
        if not Path(path).is_file():
            raise ConfigError(f"checkpoint {path} does not exist; train one (make bench-edge does) or pass --inverted/"
                              "--transformer")
    run_edge(args.inverted, transformer, args.out, args.device,
             ints(args.threads), ints(args.contexts), args.steps, args.context_steps, args.work, not args.no_bpc,
             note=args.note, progress=not args.quiet, executorch=not args.no_executorch)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        print(json.dumps(run_worker(json.loads(sys.argv[2]))))
    else:
        raise SystemExit("usage: python -m workbench.export.bench worker SPEC_JSON (see workbench bench edge)")
