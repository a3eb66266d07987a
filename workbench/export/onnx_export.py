"""Export a trained model's recurrent form to ONNX: one graph for ``Model.step``, the state explicit.

The graph maps ``(token, *state leaves) -> (logits, *next state leaves)``. Nothing here knows the
state's layout: it is whatever ``Model.init_state`` returns (a list per block of dicts, nested
or not), flattened with ``torch.utils._pytree`` in ``tree_flatten`` order and named after each
leaf's key path (``state.0.mixer.keys``). Which axis is the batch and which axis grows with the
context (a KV cache) is found by probing: ``init_state(1)`` against ``init_state(2)``, and the
state after two steps against the state after three. Leaves that are not tensors are handled
explicitly: ``None`` stays out of the graph, a Python ``int`` (a position counter) or ``float``
travels as a 0-d int64 / float64 tensor and is turned back into a number inside the graph
(``.item()``); anything else is refused with one line. Float64 counters stay float64.

``export_checkpoint`` writes the directory described in :mod:`workbench.export.manifest` and
checks the graph against PyTorch (onnxruntime, a few steps from the initial state) before it
returns; ``quantize="int8"`` applies onnxruntime's dynamic int8 quantization to the linear
layers (weights int8 per output channel, activations quantized per call).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from workbench.export.manifest import (
    FORMAT,
    FORMAT_VERSION,
    INIT_STATE,
    LOGITS_OUTPUT,
    MANIFEST,
    TOKEN_INPUT,
    ExportError,
    checkpoint_vocabulary,
    file_sha256,
)
from workbench.provenance import git_commit

GRAPH_FILE = "model.onnx"
SCALAR_KINDS = {int: ("int", torch.int64), float: ("float", torch.float64)}
VERIFY_STEPS = 12
FP32_TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- the state as leaves


def _key_name(entry: Any) -> str:
    for attr in ("idx", "key", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_names(state: Any) -> tuple[list[str], list[Any], Any]:
    """(dotted names from the key paths, leaves, TreeSpec) of a nested state."""
    with_paths, spec = pytree.tree_flatten_with_path(state)
    names = [re.sub(r"[^A-Za-z0-9_.]", "_", ".".join(_key_name(k) for k in path)) or "leaf" for path, _ in with_paths]
    if len(set(names)) != len(names):
        raise ExportError(f"the state's key paths do not give unique names: {names}")
    return names, [leaf for _, leaf in with_paths], spec


def leaf_kind(leaf: Any, name: str) -> str:
    if isinstance(leaf, torch.Tensor):
        return "tensor"
    if leaf is None:
        return "none"
    if type(leaf) in SCALAR_KINDS:
        return SCALAR_KINDS[type(leaf)][0]
    raise ExportError(f"state leaf {name!r} is a {type(leaf).__name__}; the exporter takes tensors, ints, floats "
                      "and None (convert it to a tensor in the mixer's init_state)")


def _axis_differences(a: Any, b: Any) -> list[int]:
    if not isinstance(a, torch.Tensor):
        return []
    if a.dim() != b.dim():
        raise ExportError(f"a state tensor changes rank across steps ({tuple(a.shape)} -> {tuple(b.shape)})")
    return [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]


@torch.no_grad()
def _run_steps(model: nn.Module, batch: int, steps: int) -> Any:
    state = model.init_state(batch)
    for t in range(steps):
        tokens = (torch.arange(batch) * 7 + 3 * t + 1) % model.io.vocab_size
        _, state = model.step(tokens, state)
    return state


def describe_state(model: nn.Module) -> tuple[list[dict[str, Any]], Any]:
    """One entry per leaf (name, kind, dtype, batch axis, growing axis), and the TreeSpec."""
    names, init1, spec = leaf_names(model.init_state(1))
    _, init2, spec2 = leaf_names(model.init_state(2))
    _, after2, spec_a = leaf_names(_run_steps(model, 1, 2))
    _, after3, spec_b = leaf_names(_run_steps(model, 1, 3))
    for other in (spec2, spec_a, spec_b):
        if other != spec:
            raise ExportError("the model's state changes structure across steps or batch sizes; the exporter needs "
                              f"one fixed structure (init: {spec}, later: {other})")
    entries = []
    for name, l1, l2, la, lb in zip(names, init1, init2, after2, after3):
        kind = leaf_kind(l1, name)
        kinds = {leaf_kind(x, name) for x in (l2, la, lb)}
        if kinds != {kind}:
            raise ExportError(f"state leaf {name!r} changes kind across steps ({sorted(kinds | {kind})})")
        batch_axes, growing = _axis_differences(l1, l2), _axis_differences(la, lb)
        if len(batch_axes) > 1 or len(growing) > 1:
            raise ExportError(f"state leaf {name!r} has several axes that vary with the batch or the context")
        if kind == "tensor" and la.dtype != l1.dtype:
            raise ExportError(f"state leaf {name!r} changes dtype across steps ({l1.dtype} -> {la.dtype})")
        dtype = str(l1.dtype).removeprefix("torch.") if kind == "tensor" else {"int": "int64", "float": "float64",
                                                                                "none": None}[kind]
        entry = {"name": name, "kind": kind, "dtype": dtype, "batch_axis": batch_axes[0] if batch_axes else None,
                 "growing_axis": growing[0] if growing else None}
        if kind != "none":
            shape: list[Any] = list(l1.shape) if kind == "tensor" else []
            if entry["batch_axis"] is not None:
                shape[entry["batch_axis"]] = "batch"
            if entry["growing_axis"] is not None:
                shape[entry["growing_axis"]] = "context"
            entry.update(input=f"state.{name}", output=f"next_state.{name}", shape=shape,
                         init_shape=list(l1.shape) if kind == "tensor" else [])
        entries.append(entry)
    return entries, spec


def state_to_arrays(state: Any, entries: list[dict[str, Any]]) -> list[np.ndarray]:
    """A PyTorch state -> the graph's state inputs (numpy, manifest order; None leaves dropped)."""
    _, leaves, _ = leaf_names(state)
    arrays = []
    for entry, leaf in zip(entries, leaves):
        if entry["kind"] == "none":
            continue
        arrays.append(leaf.detach().cpu().numpy() if entry["kind"] == "tensor" else np.array(leaf, dtype=entry["dtype"]))
    return arrays


def arrays_to_state(arrays: list[np.ndarray], manifest: dict[str, Any]) -> Any:
    """The graph's state (numpy, manifest order) -> the nested PyTorch state ``Model.step`` takes."""
    values = iter(arrays)
    leaves = []
    for entry in manifest["state"]:
        if entry["kind"] == "none":
            leaves.append(None)
        elif entry["kind"] == "tensor":
            leaves.append(torch.from_numpy(np.ascontiguousarray(next(values))))
        else:
            leaves.append({"int": int, "float": float}[entry["kind"]](next(values)))
    return pytree.tree_unflatten(leaves, pytree.treespec_loads(manifest["state_treespec"]))


# ----------------------------------------------------------------------------- the graph


class StepGraph(nn.Module):
    """``Model.step`` with a flat signature: (token, *state leaves) -> (logits, *next state leaves)."""

    def __init__(self, model: nn.Module, entries: list[dict[str, Any]], spec: Any) -> None:
        super().__init__()
        self.model, self.entries, self.spec = model, entries, spec

    def forward(self, token: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = iter(flat)
        leaves = []
        for entry in self.entries:
            if entry["kind"] == "none":
                leaves.append(None)
            elif entry["kind"] == "tensor":
                leaves.append(next(values))
            else:  # a number carried as a 0-d tensor: a number again for the mixer
                leaves.append(next(values).item())
        logits, new_state = self.model.step(token, pytree.tree_unflatten(leaves, self.spec))
        out = [logits]
        for entry, leaf in zip(self.entries, pytree.tree_leaves(new_state)):
            if entry["kind"] == "tensor":
                out.append(leaf)
            elif entry["kind"] in ("int", "float"):
                out.append(torch.tensor(leaf, dtype=torch.int64 if entry["kind"] == "int" else torch.float64))
        return tuple(out)


def _example_inputs(model: nn.Module, entries: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
    """Batch 2, context 3: no dynamic axis has size 0 or 1 (which export would specialize)."""
    state = _run_steps(model, 2, 3)
    arrays = state_to_arrays(state, entries)
    return (torch.tensor([1, 2]) % model.io.vocab_size, *[torch.from_numpy(a) for a in arrays])


def _dynamic_shapes(entries: list[dict[str, Any]]) -> tuple[Any, tuple[Any, ...]]:
    dynamic = torch.export.Dim.DYNAMIC
    leaves = []
    for entry in entries:
        if entry["kind"] == "none":
            continue
        axes = {entry[k]: dynamic for k in ("batch_axis", "growing_axis") if entry[k] is not None}
        leaves.append(axes or None)
    return {0: dynamic}, tuple(leaves)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if "Exception summary" in line or not line.strip() or line.startswith("#"):
            continue
        return f"{type(exc).__name__}: {line.strip()[:300]}"
    return type(exc).__name__


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Exporter and quantizer chatter (missing torchvision ops, pre-processing advice) off for a while."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def write_graph(model: nn.Module, entries: list[dict[str, Any]], spec: Any, path: Path, log: Path) -> None:
    """Trace ``StepGraph`` with torch.export and write it with the dynamo ONNX exporter."""
    graph = StepGraph(model, entries, spec).eval()
    stateful = [e for e in entries if e["kind"] != "none"]
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet("torch.onnx", "onnxscript"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph, _example_inputs(model, entries), dynamo=True, dynamic_shapes=_dynamic_shapes(entries),
                input_names=[TOKEN_INPUT] + [e["input"] for e in stateful],
                output_names=[LOGITS_OUTPUT] + [e["output"] for e in stateful], verbose=False, report=False,
            )  # fmt: skip
        program.save(str(path))
    except Exception as exc:  # torch.export / onnxscript failures: one line, the full story in the log
        import traceback

        log.write_text("".join(traceback.format_exception(exc)))
        raise ExportError(f"ONNX export of mixer {model.config.mixer!r} failed ({_first_line(exc)}); "
                          f"full error in {log}") from None


def quantize_int8(source: Path, target: Path) -> dict[str, Any]:
    """onnxruntime dynamic quantization: MatMul/Gemm weights int8 per output channel."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ExportError("int8 quantization needs onnxruntime; install the edge extra: pip install -e '.[edge]'") from None
    settings = {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8", "per_channel": True,
                "op_types": ["MatMul", "Gemm"]}
    with _quiet("", "onnxruntime"):  # the root logger carries its pre-processing advice
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=settings["op_types"])
    return settings


# ----------------------------------------------------------------------------- provenance


def data_fingerprint(config: Any) -> dict[str, Any]:
    """Where the training data came from, with its sha256 when it is a file."""
    from workbench.data import DataError, shakespeare_path

    options = dict(config.task.options)
    if config.task.name != "charlm" and "path" not in options:
        return {"task": config.task.name, "source": "generated by the task (no data file)", "options": options}
    try:
        path = Path(options["path"]) if options.get("path") else shakespeare_path(download=False)
        return {"task": config.task.name, "path": str(path), "sha256": file_sha256(path)}
    except (DataError, OSError) as exc:
        return {"task": config.task.name, "path": options.get("path"), "sha256": None, "note": str(exc)[:200]}


def _versions() -> dict[str, str]:
    import onnx

    versions = {"torch": torch.__version__, "onnx": onnx.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import onnxscript

        versions["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    return versions


# ----------------------------------------------------------------------------- export


@torch.no_grad()
def verify(model: nn.Module, directory: Path, steps: int = VERIFY_STEPS, stepper: Any = None) -> dict[str, Any]:
    """Step the export (onnxruntime, or ``stepper``) and ``Model.step`` from the initial state; the largest gaps."""
    from workbench.export.runtime import OnnxStepper

    stepper = stepper or OnnxStepper(directory, threads=1)
    state, arrays = model.init_state(1), stepper.init_state(1)
    worst_logits, worst_state = 0.0, 0.0
    for t in range(steps):
        token = (7 * t + 1) % model.io.vocab_size
        logits, state = model.step(torch.tensor([token]), state)
        onnx_logits, arrays = stepper.step(np.array([token], dtype=np.int64), arrays)
        worst_logits = max(worst_logits, float(np.abs(onnx_logits - logits.numpy()).max()))
        for ours, theirs in zip(arrays, state_to_arrays(state, stepper.manifest["state"])):
            if ours.size:
                worst_state = max(worst_state, float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max()))
    return {"steps": steps, "max_abs_diff_logits": worst_logits, "max_abs_diff_state": worst_state}


def export_model(model: nn.Module, out_dir: str | Path, quantize: str | None = None,
                 extra: dict[str, Any] | None = None, check: bool = True) -> dict[str, Any]:
    """Write ``out_dir`` (graph, initial state, manifest) for ``model``; return the manifest."""
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantization {quantize!r}; choose int8 or none")
    if getattr(model, "io", None) is None or model.io.input_kind != "tokens" or model.io.head != "lm":
        raise ExportError("the exporter takes token-input language models (lm head); this model is "
                          f"{getattr(model.io, 'input_kind', '?')} -> {getattr(model.io, 'head', '?')}")
    started = time.perf_counter()
    model = model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (MANIFEST, GRAPH_FILE, INIT_STATE):  # a half-written export must not pass as the old one
        (out / stale).unlink(missing_ok=True)
    entries, spec = describe_state(model)
    with tempfile.TemporaryDirectory(prefix="workbench-export-") as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx" if quantize else out / GRAPH_FILE
        write_graph(model, entries, spec, fp32, out / "export-error.log")
        quantization = quantize_int8(fp32, out / GRAPH_FILE) if quantize else None
    np.savez(out / INIT_STATE, **{e["input"]: a for e, a in zip([e for e in entries if e["kind"] != "none"],
                                                                   state_to_arrays(model.init_state(1), entries))})
    import onnx

    opsets = {imp.domain or "ai.onnx": imp.version for imp in onnx.load(str(out / GRAPH_FILE), load_external_data=False).opset_import}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "runtime": "onnx",
        "graph": {"file": GRAPH_FILE, "sha256": file_sha256(out / GRAPH_FILE), "opsets": opsets,
                  "quantize": quantize, "quantization": quantization,
                  "bytes": (out / GRAPH_FILE).stat().st_size},
        "init_state": {"file": INIT_STATE, "sha256": file_sha256(out / INIT_STATE), "batch": 1},
        "inputs": {TOKEN_INPUT: {"dtype": "int64", "shape": ["batch"]}},
        "outputs": {LOGITS_OUTPUT: {"dtype": "float32", "shape": ["batch", model.io.vocab_size]}},
        "state": entries,
        "state_treespec": pytree.treespec_dumps(spec),
        "model_config": dataclasses.asdict(model.config),
        "io": dataclasses.asdict(model.io),
        "growing_state": any(e.get("growing_axis") is not None for e in entries),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "workbench_commit": git_commit(),  # the code that traced the graph (a changed step is another graph)
        **(extra or {}),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if check:
        manifest["verification"] = verify(model, out)
        if not quantize and manifest["verification"]["max_abs_diff_logits"] > FP32_TOLERANCE:
            raise ExportError(f"the exported graph disagrees with PyTorch: {manifest['verification']}")
    manifest["export_s"] = round(time.perf_counter() - started, 2)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, fmt: str = "onnx",
                      quantize: str | None = None) -> dict[str, Any]:
    """``workbench export``: rebuild the model from its checkpoint and export it."""
    from workbench.checkpoint import load_checkpoint, model_from_checkpoint

    if fmt == "executorch":
        from workbench.export.executorch_export import export_checkpoint_executorch

        return export_checkpoint_executorch(checkpoint, out_dir, quantize=quantize)
    if fmt != "onnx":
        raise ExportError(f"unknown export format {fmt!r}; choose onnx or executorch")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs {exc.name}; install the edge extra: pip install -e '.[edge]'") from None
    payload = load_checkpoint(checkpoint)
    model, config, _, _ = model_from_checkpoint(checkpoint)
    chars = checkpoint_vocabulary(payload)
    extra = {
        "vocabulary": {"kind": "chars", "chars": chars, "size": len(chars),
                       "sha256": hashlib.sha256(chars.encode()).hexdigest()} if chars else None,
        "task": {"name": config.task.name, "options": config.task.options},
        "train": {"steps": payload.get("step"), "seed": config.train.seed},
        "checkpoint": {"path": str(Path(checkpoint).resolve()), "sha256": file_sha256(Path(checkpoint))},
        "data": data_fingerprint(config),
    }
    return export_model(model, out_dir, quantize=quantize, extra=extra)
