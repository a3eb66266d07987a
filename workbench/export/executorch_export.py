"""The second target: ExecuTorch (``executorch`` on PyPI, the optional ``executorch`` extra).

The same ``StepGraph`` as the ONNX export (``Model.step`` with the state flattened by
``torch.utils._pytree``), traced with ``torch.export`` at batch 1, lowered with the XNNPACK
partitioner (``to_edge_transform_and_lower``) and written as ``model.pte`` beside the same
``init_state.npz`` and ``manifest.json`` (``runtime: "executorch"``). Limits, refused with one line:
constant-size states only (a growing KV cache would need upper-bounded dynamic shapes) and no int8
here (``--format onnx --quantize int8`` has it). ExecuTorch's Python runtime takes torch tensors,
so unlike the ONNX runtime this path imports torch; on a device the same ``.pte`` runs from C++.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from workbench.export.manifest import INIT_STATE, MANIFEST, ExportError, file_sha256, read_manifest

PROGRAM_FILE = "model.pte"


def _executorch():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as exc:
        raise ExportError(f"ExecuTorch export needs the executorch package ({exc.name} is missing); install it with "
                          "pip install -e '.[executorch]'") from None
    return to_edge_transform_and_lower, XnnpackPartitioner


def export_checkpoint_executorch(checkpoint: str | Path, out_dir: str | Path, quantize: str | None = None) -> dict[str, Any]:
    import torch

    from workbench.checkpoint import load_checkpoint, model_from_checkpoint
    from workbench.export.onnx_export import (
        StepGraph,
        _first_line,
        _versions,
        data_fingerprint,
        describe_state,
        state_to_arrays,
        verify,
    )

    if quantize:
        raise ExportError("int8 quantization is implemented for ONNX only; use --format onnx --quantize int8")
    to_edge, partitioner = _executorch()
    started = time.perf_counter()
    payload = load_checkpoint(checkpoint)
    model, config, _, _ = model_from_checkpoint(checkpoint)
    if model.io.input_kind != "tokens" or model.io.head != "lm":
        raise ExportError("the exporter takes token-input language models (lm head)")
    entries, spec = describe_state(model)
    growing = [e["name"] for e in entries if e.get("growing_axis") is not None]
    if growing:
        raise ExportError(f"the ExecuTorch target takes constant-size states only; mixer {config.model.mixer!r} grows "
                          f"{growing[:3]} with the context (use --format onnx, which exports it with dynamic axes)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (MANIFEST, PROGRAM_FILE, INIT_STATE):
        (out / stale).unlink(missing_ok=True)
    init = state_to_arrays(model.init_state(1), entries)
    args = (torch.tensor([1]), *[torch.from_numpy(a) for a in init])
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = to_edge(torch.export.export(StepGraph(model.eval(), entries, spec), args),
                              partitioner=[partitioner()]).to_executorch()
    except Exception as exc:
        raise ExportError(f"ExecuTorch export of mixer {config.model.mixer!r} failed ({_first_line(exc)})") from None
    (out / PROGRAM_FILE).write_bytes(program.buffer)
    stateful = [e for e in entries if e["kind"] != "none"]
    np.savez(out / INIT_STATE, **{e["input"]: a for e, a in zip(stateful, init)})
    from workbench.export.manifest import checkpoint_vocabulary

    chars = checkpoint_vocabulary(payload)
    versions = _versions()
    try:
        import executorch

        versions["executorch"] = getattr(executorch, "__version__", "unknown")
    except ImportError:
        pass
    from workbench.export.manifest import FORMAT, FORMAT_VERSION

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "runtime": "executorch",
        "graph": {"file": PROGRAM_FILE, "sha256": file_sha256(out / PROGRAM_FILE), "quantize": None,
                  "quantization": None, "bytes": (out / PROGRAM_FILE).stat().st_size, "backend": "XNNPACK + portable",
                  "batch": 1},
        "init_state": {"file": INIT_STATE, "sha256": file_sha256(out / INIT_STATE), "batch": 1},
        "inputs": {"token": {"dtype": "int64", "shape": [1]}},
        "outputs": {"logits": {"dtype": "float32", "shape": [1, model.io.vocab_size]}},
        "state": entries,
        "state_treespec": __import__("torch.utils._pytree", fromlist=["treespec_dumps"]).treespec_dumps(spec),
        "model_config": json.loads(json.dumps(config.model.__dict__)),
        "io": json.loads(json.dumps(model.io.__dict__)),
        "vocabulary": {"kind": "chars", "chars": chars, "size": len(chars)} if chars else None,
        "task": {"name": config.task.name, "options": config.task.options},
        "checkpoint": {"path": str(Path(checkpoint).resolve()), "sha256": file_sha256(Path(checkpoint))},
        "data": data_fingerprint(config),
        "versions": versions,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    manifest["verification"] = verify(model, out, stepper=ExecutorchStepper(out))
    if manifest["verification"]["max_abs_diff_logits"] > 1e-4:
        raise ExportError(f"the ExecuTorch program disagrees with PyTorch: {manifest['verification']}")
    manifest["export_s"] = round(time.perf_counter() - started, 2)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


class ExecutorchStepper:
    """``OnnxStepper``'s interface over an ExecuTorch program (batch 1; torch tensors inside)."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        import torch

        try:
            from executorch.runtime import Runtime
        except ImportError:
            raise ExportError("running an ExecuTorch export needs the executorch package; "
                              "pip install -e '.[executorch]'") from None
        self.torch = torch
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory, "executorch")
        self.entries = [e for e in self.manifest["state"] if e["kind"] != "none"]
        if threads:
            torch.set_num_threads(threads)
            try:  # XNNPACK's thread pool (the pybindings expose a reset in recent versions)
                from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

                _unsafe_reset_threadpool(threads)
            except (ImportError, AttributeError, RuntimeError):
                pass
        try:
            program = Runtime.get().load_program(str(self.directory / self.manifest["graph"]["file"]))
            self.method = program.load_method("forward")
        except Exception as exc:
            raise ExportError(f"ExecuTorch cannot load {self.directory} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); re-export") from None
        with np.load(self.directory / INIT_STATE, allow_pickle=False) as data:
            self._init = [data[e["input"]] for e in self.entries]
        self.vocab_size = int(self.manifest.get("io", {}).get("vocab_size") or 0)

    def init_state(self, batch: int) -> list[np.ndarray]:
        if batch != 1:
            raise ExportError("the ExecuTorch export runs at batch 1")
        return [a.copy() for a in self._init]

    def step(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        if len(tokens) != 1:
            raise ExportError("the ExecuTorch export runs at batch 1")
        inputs = [self.torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))]
        inputs += [self.torch.from_numpy(np.ascontiguousarray(a)) for a in state]
        logits, *state = self.method.execute(inputs)
        return logits.numpy(), [s.numpy() for s in state]
