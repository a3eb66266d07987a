"""Run an exported model with numpy and onnxruntime only: no torch is imported here.

``OnnxStepper(directory)`` checks the directory (:func:`workbench.export.manifest.read_manifest`),
opens the graph, and checks that its inputs and outputs are the ones the manifest names. Then
``init_state(batch)`` and ``step(tokens, state) -> (logits, state)``, where a state is the list of
numpy arrays of the manifest's state leaves (``None`` leaves excluded), in manifest order.

``generate`` follows ``Model.generate``: the prompt is stepped through, then each new token is
the argmax (temperature 0) or a sample from ``softmax(logits / temperature)`` restricted to the
``top_k`` largest logits. Greedy text is the PyTorch path's text; sampled text uses numpy's
generator (seeded), so it differs from torch's for the same seed. ``bits_per_char`` scores the
char-LM validation windows the way ``CharLMTask.evaluate`` does, with the recurrent graph.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from workbench.export.manifest import IGNORE, INIT_STATE, LOGITS_OUTPUT, TOKEN_INPUT, ExportError, read_manifest

ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
             "tensor(bool)": "bool", "tensor(int32)": "int32", "tensor(float16)": "float16"}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("running an ONNX export needs onnxruntime; install the edge extra: "
                          "pip install -e '.[edge]'") from None
    return onnxruntime


def session_options(threads: int | None):
    """One graph at a time, ``threads`` intra-op threads (None: $OMP_NUM_THREADS, else onnxruntime's default)."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


class OnnxStepper:
    """The exported recurrent step, driven from numpy."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        ort = _onnxruntime()
        self.directory = Path(directory)
        self.manifest = manifest = read_manifest(self.directory, "onnx")
        self.entries = [e for e in manifest["state"] if e["kind"] != "none"]
        graph = self.directory / manifest["graph"]["file"]
        try:
            self.session = ort.InferenceSession(str(graph), session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:
            line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"onnxruntime cannot load {graph} ({line}); re-export the checkpoint") from None
        self._check_signature()
        self.output_names = [LOGITS_OUTPUT] + [e["output"] for e in self.entries]
        try:
            with np.load(self.directory / INIT_STATE, allow_pickle=False) as data:
                self._init = [data[e["input"]] for e in self.entries]
        except (KeyError, ValueError, OSError) as exc:
            raise ExportError(f"{self.directory / INIT_STATE} does not hold the manifest's state ({exc}); "
                              "re-export the checkpoint") from None
        self.vocab_size = int(manifest.get("io", {}).get("vocab_size") or 0)

    def _check_signature(self) -> None:
        """The graph's inputs/outputs must be exactly the manifest's (names and element types)."""
        graph_in = {i.name: ORT_TYPES.get(i.type, i.type) for i in self.session.get_inputs()}
        graph_out = {o.name: ORT_TYPES.get(o.type, o.type) for o in self.session.get_outputs()}
        want_in = {TOKEN_INPUT: "int64", **{e["input"]: e["dtype"] for e in self.entries}}
        want_out = {LOGITS_OUTPUT: "float32", **{e["output"]: e["dtype"] for e in self.entries}}
        for what, have, want in (("inputs", graph_in, want_in), ("outputs", graph_out, want_out)):
            if have != want:
                missing = sorted(set(want) - set(have))
                extra = sorted(set(have) - set(want))
                wrong = sorted(k for k in set(have) & set(want) if have[k] != want[k])
                raise ExportError(f"{self.directory}: the graph's {what} do not match the manifest (missing {missing}, "
                                  f"unexpected {extra}, other dtype {wrong}): graph and manifest come from different "
                                  "exports; re-export the checkpoint")

    # ------------------------------------------------------------------ the recurrent form

    def init_state(self, batch: int) -> list[np.ndarray]:
        state = []
        for entry, value in zip(self.entries, self._init):
            axis = entry["batch_axis"]
            state.append(value.copy() if axis is None else np.repeat(value, batch, axis=axis))
        return state

    def step(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {TOKEN_INPUT: np.ascontiguousarray(tokens, dtype=np.int64)}
        feeds.update((e["input"], value) for e, value in zip(self.entries, state))
        logits, *state = self.session.run(self.output_names, feeds)
        return logits, state

    def state_bytes(self, state: list[np.ndarray]) -> int:
        return int(sum(a.nbytes for a in state))


# ----------------------------------------------------------------------------- generation and scoring


def next_tokens(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Argmax at temperature 0; else a sample of softmax(logits / T) over the top_k largest."""
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.astype(np.float32) / np.float32(temperature)
    if top_k is not None:
        k = min(top_k, scaled.shape[-1])
        kth = -np.sort(-scaled, axis=-1)[:, k - 1 : k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    probs = np.exp(scaled.astype(np.float64) - scaled.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.array([rng.choice(probs.shape[-1], p=row) for row in probs], dtype=np.int64)


def generate(stepper: OnnxStepper, prompt: np.ndarray, n_new: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0) -> np.ndarray:
    """``Model.generate`` on the exported graph: prompt (batch, time) ids -> (batch, time + n_new)."""
    prompt = np.asarray(prompt, dtype=np.int64)
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError("generate needs a non-empty prompt of shape (batch, time)")
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    if stepper.vocab_size and (prompt.min() < 0 or prompt.max() >= stepper.vocab_size):
        raise ValueError(f"token ids must lie in [0, {stepper.vocab_size})")
    rng = np.random.default_rng(seed)
    state = stepper.init_state(prompt.shape[0])
    for t in range(prompt.shape[1]):
        logits, state = stepper.step(prompt[:, t], state)
    out = [prompt]
    for _ in range(n_new):
        token = next_tokens(logits, temperature, top_k, rng)
        out.append(token[:, None])
        logits, state = stepper.step(token, state)
    return np.concatenate(out, axis=1)


def bits_per_char(stepper: OnnxStepper, inputs: np.ndarray, targets: np.ndarray, batch: int = 512) -> dict[str, float]:
    """Bits per character over (windows, context) inputs and targets (IGNORE = no loss), each
    window from the initial state: what ``CharLMTask.evaluate`` measures, run step by step."""
    total_nats, total_chars = 0.0, 0
    for start in range(0, len(inputs), batch):
        x, y = inputs[start : start + batch], targets[start : start + batch]
        state = stepper.init_state(len(x))
        for t in range(x.shape[1]):
            logits, state = stepper.step(x[:, t], state)
            keep = y[:, t] != IGNORE
            if keep.any():
                z = logits[keep].astype(np.float64)
                peak = z.max(-1, keepdims=True)
                log_norm = np.log(np.exp(z - peak).sum(-1)) + peak[:, 0]
                total_nats += float((log_norm - z[np.arange(len(z)), y[keep, t]]).sum())
                total_chars += int(keep.sum())
    bpc = total_nats / max(total_chars, 1) / math.log(2)
    return {"bpc": bpc, "val_chars": float(total_chars)}


def load_vocab(manifest: dict[str, Any]):
    """(encode, decode) over the export's characters, numpy only."""
    from workbench.export.manifest import manifest_vocabulary

    chars = manifest_vocabulary(manifest)
    index = {c: i for i, c in enumerate(chars)}

    def encode(text: str) -> np.ndarray:
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise ValueError(f"text has {len(unknown)} character(s) outside the model's vocabulary: {shown}")
        return np.array([index[c] for c in text], dtype=np.int64)

    def decode(ids) -> str:
        return "".join(chars[int(i)] for i in ids)

    return encode, decode
