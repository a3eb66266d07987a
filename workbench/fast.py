"""Fast decode: the recurrent step of a ``Block`` or a ``Model`` as one fused computation.

The plain ``step`` runs a hundred small PyTorch ops per token, each with its own dispatch
overhead: at d_model 128 that overhead, not arithmetic, is the cost (about 1 ms per token for one
inverted block on CPU, for ~0.3 MFLOP). :func:`fused_step` traces the whole step once - every
block, the front end, the mixer, the MLP and, for a model, the embedding and the head - and
compiles it with inductor (``torch.compile``'s compiler; C++/OpenMP on CPU, Triton on CUDA):

* ``backend="aoti"`` (default): ``torch.export`` + AOTInductor, a shared library called with a flat
  list of tensors (the lowest per-call overhead: no Python guards, no Python wrapper per kernel);
* ``backend="compile"``: ``torch.compile(dynamic=False, fullgraph=True)`` with the C++ wrapper.

On CPU both use ``CPU_OPTIONS`` (C++ GEMM templates chosen by autotuning, frozen weights) unless
``options`` overrides them.

The state travels as a flat list of tensors (inputs and outputs of the compiled function), in a
static layout: integer positions become int64 tensors, and a growing KV cache (the transformer)
becomes a pre-allocated cache of ``capacity`` slots plus a position, written in place of the
concatenation (:class:`StaticKVCache`, a separate fast path of ``SoftmaxAttention.step`` with the
same values). Batches: the step is compiled for one ``batch_size``; every sequence of the batch
advances one token per call (serving many sequences at once; positions are shared).

Use::

    step = fused_step(model, batch_size=8)          # compiled once per (model weights, batch, backend)
    state = step.init_state()                        # or step.from_state(plain_state)
    logits, state = step(tokens, state)              # tokens (8,) -> logits (8, vocab)
    plain = step.to_state(state)                     # back to Model.step's layout

``Model.generate(..., fused=True)`` (CLI: ``workbench generate --fused``) decodes this way. The
compiled step holds a copy of the weights: :func:`fused_step` recompiles when a parameter has been
changed in place since (an optimizer step), and hooks (``HookPoint``) do not fire inside it.
Tests: ``tests/test_fast.py`` checks fused == plain, values and state, for every registered mixer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _pytree as pytree

BACKENDS = ("aoti", "compile")
# Inductor options on CPU: C++ GEMM templates for the batch-1 matrix-vector products (chosen by
# benchmarking against the ATen/MKL call; the template's per-call cost is far smaller) and freezing
# (the weights are constants: their concatenations and layouts are folded at compile time). About
# 1.5x faster per step than inductor's defaults at d_model 128, for ~20 s more compile.
CPU_OPTIONS = {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN", "freezing": True}


# ----------------------------------------------------------------------------- static state adapters


class ConstantState:
    """A constant-size mixer state: kept as it is, integer entries (positions) as int64 tensors."""

    growing = False
    inplace: tuple[str, ...] = ()  # state entries the step writes in place (inputs only, not returned)

    def __init__(self, mixer: nn.Module) -> None:
        self.mixer = mixer
        self.int_keys: set[str] = set()

    def to_static(self, state: dict[str, Any], capacity: int | None, device) -> dict[str, Any]:
        out = {}
        for key, value in state.items():
            if isinstance(value, int) and not isinstance(value, bool):
                self.int_keys.add(key)
                value = torch.tensor(value, dtype=torch.int64, device=device)
            out[key] = value
        return out

    def from_static(self, state: dict[str, Any]) -> dict[str, Any]:
        return {k: (int(v) if k in self.int_keys else v) for k, v in state.items()}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]):
        return type(self.mixer).step(self.mixer, x_t, state)


class StaticKVCache(ConstantState):
    """``SoftmaxAttention.step`` with a pre-allocated cache: the same values as the growing one.

    State ``{"k", "v"}`` of shape (B, H, capacity, d_head) and ``"position"`` (an int64 tensor): the
    new key and value are written in place at slot ``position`` (one row, not a copy of the cache),
    and the query attends to slots ``0..position`` (a mask), so the cost per step is that of
    ``capacity`` keys, the compiled graph one shape. The same rotary, projections and SDPA as the
    plain step.
    """

    growing = True
    inplace = ("k", "v")

    def to_static(self, state: dict[str, Any], capacity: int | None, device) -> dict[str, Any]:
        length = int(state["position"])
        if capacity is None or capacity <= length:
            raise ValueError(f"a static KV cache needs capacity > the context ({length}), got {capacity}")
        k = state["k"]
        shape = (k.shape[0], k.shape[1], capacity, k.shape[3])
        keys = torch.zeros(shape, dtype=k.dtype, device=device)
        values = torch.zeros(shape, dtype=k.dtype, device=device)
        keys[:, :, :length] = k
        values[:, :, :length] = state["v"]
        return {"k": keys, "v": values, "position": torch.tensor(length, dtype=torch.int64, device=device)}

    def from_static(self, state: dict[str, Any]) -> dict[str, Any]:
        length = int(state["position"])
        return {"k": state["k"][:, :, :length], "v": state["v"][:, :, :length], "position": length}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]):
        mixer = self.mixer
        b, d = x_t.shape
        position = state["position"]
        q, k, v = mixer._heads(x_t[:, None, :], position.reshape(1))
        slots = torch.arange(state["k"].shape[2], device=x_t.device)
        keys = state["k"].index_copy_(2, position.reshape(1), k)
        values = state["v"].index_copy_(2, position.reshape(1), v)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=(slots <= position)[None, :])
        return mixer.out(y.reshape(b, d)), {"k": keys, "v": values, "position": position + 1}


class InPlaceState(ConstantState):
    """A constant state written in place: the step's new entries are copied into the state it was given.

    Each compiled call then returns only its output (every tensor in or out of an AOTInductor call
    costs about half a microsecond: 9 state tensors out is ~5 us of a ~35 us step at d_model 128)
    and updates the state buffers where they are (the inverted mixer's 96 KiB of unit keys and values
    are not allocated again per token). ``from_state`` copies the caller's tensors first, so a plain
    state handed in is never changed. For mixers that set ``fused_state_in_place = True``.
    """

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__(mixer)
        plain = mixer.init_state(1)
        self.inplace = tuple(k for k, v in plain.items() if isinstance(v, torch.Tensor))

    def to_static(self, state: dict[str, Any], capacity: int | None, device) -> dict[str, Any]:
        static = super().to_static(state, capacity, device)
        return {k: (v.clone(memory_format=torch.contiguous_format) if k in self.inplace else v)
                for k, v in static.items()}  # fmt: skip

    def step(self, x_t: torch.Tensor, state: dict[str, Any]):
        y, new = type(self.mixer).step(self.mixer, x_t, state)
        for key in self.inplace:
            state[key].copy_(new[key])
        return y, {k: (state[k] if k in self.inplace else v) for k, v in new.items()}


def adapter_for(mixer: nn.Module, state_in_place: bool = True) -> ConstantState:
    """The static-state adapter of a mixer: constant states as they are (or written in place, where the mixer
    asks), the transformer's KV cache pre-allocated."""
    from workbench.mixers.transformer import SoftmaxAttention

    if isinstance(mixer, SoftmaxAttention):
        return StaticKVCache(mixer)
    if state_in_place and getattr(mixer, "fused_state_in_place", False):
        return InPlaceState(mixer)
    if getattr(mixer, "growing_state", False):
        raise NotImplementedError(f"{type(mixer).__name__} has a growing state and no static-state adapter in "
                                  "workbench.fast (add one beside StaticKVCache)")
    return ConstantState(mixer)


# ----------------------------------------------------------------------------- the traced function


def _blocks(module: nn.Module) -> list[nn.Module]:
    return list(module.blocks) if hasattr(module, "blocks") else [module]


@contextlib.contextmanager
def _static_steps(module: nn.Module, adapters: list[ConstantState]):
    """Route each block's ``mixer.step`` through its adapter while the step is traced or run."""
    mixers = [block.mixer for block in _blocks(module)]
    for mixer, adapter in zip(mixers, adapters):
        mixer.step = adapter.step
    try:
        yield
    finally:
        for mixer in mixers:
            del mixer.step


class _FlatStep(nn.Module):
    """``(x, *flat_state) -> (y, *flat_state)``: ``module.step`` with the state flattened to tensors.

    Leaves written in place (indices ``inplace``, e.g. a static KV cache) are not returned: the
    caller keeps passing the same tensors.
    """

    def __init__(self, module: nn.Module, spec: pytree.TreeSpec, inplace: set[int]) -> None:
        super().__init__()
        self.module, self.spec, self.inplace = module, spec, inplace

    def forward(self, x: torch.Tensor, *flat: torch.Tensor):
        state = pytree.tree_unflatten(list(flat), self.spec)
        y, new = self.module.step(x, state)
        leaves, spec = pytree.tree_flatten(new)
        if spec != self.spec:
            raise RuntimeError("the step changed the state's structure; a fused step needs a fixed layout")
        # Contiguous outputs: they come back as the next call's inputs, which the compiled code reads
        # with the example's (contiguous) strides.
        return (y, *(t.contiguous() for i, t in enumerate(leaves) if i not in self.inplace))


def _weights_version(module: nn.Module) -> tuple:
    return tuple((id(p), p._version) for p in module.parameters()) + tuple(
        (id(b), b._version) for b in module.buffers())


class FusedStep:
    """The compiled step of one ``Block`` or ``Model`` for one batch size (see the module docstring)."""

    def __init__(
        self,
        module: nn.Module,
        batch_size: int = 1,
        *,
        backend: str = "aoti",
        capacity: int | None = None,
        options: dict[str, Any] | None = None,
        state_in_place: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.module, self.batch_size, self.backend = module.eval(), batch_size, backend
        self.options = dict(options or {})  # inductor options (torch._inductor.config names), over CPU_OPTIONS
        self.is_model = hasattr(module, "blocks")
        param = next(module.parameters())
        self.device, self.dtype = param.device, param.dtype
        if self.device.type == "cpu":
            self.options = {**CPU_OPTIONS, **self.options}
        # state_in_place=False: constant states returned as new tensors even where the mixer asks for
        # InPlaceState (the comparison in ``workbench bench decode``).
        self.adapters = [adapter_for(block.mixer, state_in_place) for block in _blocks(module)]
        self.capacity = capacity
        if any(a.growing for a in self.adapters) and capacity is None:
            raise ValueError("a mixer with a KV cache needs capacity= (the most tokens the fused state will hold)")
        example = self.init_state()
        paths, self._spec = pytree.tree_flatten_with_path(self._static(self._plain_init()))
        self._inplace = self._inplace_leaves([path for path, _ in paths])
        flat_step = _FlatStep(module, self._spec, self._inplace)
        x = self._example_input()
        started = time.perf_counter()
        with torch.no_grad():
            if backend == "aoti":
                with _static_steps(module, self.adapters):
                    self._run = self._build_aoti(flat_step, x, example)
            else:
                compiled = torch.compile(flat_step, dynamic=False, fullgraph=True,
                                         options={"cpp_wrapper": True, **self.options})

                def run(inputs: list[torch.Tensor], compiled=compiled) -> list[torch.Tensor]:
                    with _static_steps(module, self.adapters):
                        return list(compiled(*inputs))

                run([x, *example])  # compile now, not at the first token
                self._run = run
        self.compile_s = time.perf_counter() - started
        self.version = _weights_version(module)

    # ------------------------------------------------------------------ building

    def _inplace_leaves(self, paths: list[tuple]) -> set[int]:
        """Flat indices of the state entries some adapter writes in place."""
        out = set()
        for index, path in enumerate(paths):
            keys = [getattr(p, "key", getattr(p, "idx", None)) for p in path]
            block = keys[0] if self.is_model else 0
            if "mixer" in keys and keys[-1] in self.adapters[block].inplace:
                out.add(index)
        return out

    def _build_aoti(self, flat_step: nn.Module, x: torch.Tensor, example: list[torch.Tensor]) -> Callable:
        exported = torch.export.export(flat_step, (x, *example), strict=False)
        directory = tempfile.mkdtemp(prefix="workbench-fused-")
        path = torch._inductor.aoti_compile_and_package(exported, package_path=os.path.join(directory, "step.pt2"),
                                                        inductor_configs=dict(self.options))
        run = torch._inductor.aoti_load_package(path).loader.run
        shutil.rmtree(directory, ignore_errors=True)  # loaded (extracted elsewhere): the package itself can go
        return run

    def _example_input(self) -> torch.Tensor:
        b = self.batch_size
        if not self.is_model:
            return torch.randn(b, self.module.norm_mixer.normalized_shape[0], device=self.device, dtype=self.dtype)
        io = self.module.io
        if io.input_kind == "tokens":
            return torch.zeros(b, dtype=torch.int64, device=self.device)
        return torch.randn(b, io.input_dim, device=self.device, dtype=self.dtype)

    def _plain_init(self) -> Any:
        if self.is_model:
            return self.module.init_state(self.batch_size)
        return self.module.init_state(self.batch_size, self.device, self.dtype)

    def _static(self, plain: Any, capacity: int | None = None) -> Any:
        capacity = capacity or self.capacity
        states = plain if self.is_model else [plain]
        out = [{**s, "mixer": a.to_static(s["mixer"], capacity, self.device)} for s, a in zip(states, self.adapters)]
        return out if self.is_model else out[0]

    # ------------------------------------------------------------------ the state

    def init_state(self) -> list[torch.Tensor]:
        """A fresh state (no context) in the fused layout: a flat list of tensors."""
        return pytree.tree_flatten(self._static(self._plain_init()))[0]

    def from_state(self, state: Any) -> list[torch.Tensor]:
        """A plain state (``Block.init_state``/``Model.init_state`` layout, after some steps) in the fused layout."""
        flat, spec = pytree.tree_flatten(self._static(state))
        if spec != self._spec:
            raise ValueError("the state does not have this fused step's layout (batch size, mixers, capacity?)")
        return [t.contiguous() for t in flat]

    def to_state(self, flat: list[torch.Tensor]) -> Any:
        """The fused state back in the plain layout (the KV cache cut to its length, positions as ints)."""
        static = pytree.tree_unflatten(list(flat), self._spec)
        states = static if self.is_model else [static]
        out = [{**s, "mixer": a.from_static(s["mixer"])} for s, a in zip(states, self.adapters)]
        return out if self.is_model else out[0]

    # ------------------------------------------------------------------ a step

    def __call__(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One token per sequence: ``x`` (batch,) ids or (batch, d) vectors -> (output, next state).

        A static KV cache in ``state`` is written in place (the next state holds the same tensors).
        """
        out = self._run([x.contiguous(), *state])  # the compiled code reads the example's (contiguous) strides
        if not self._inplace:
            return out[0], list(out[1:])
        returned = iter(out[1:])
        return out[0], [state[i] if i in self._inplace else next(returned) for i in range(len(state))]


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fused_step(
    module: nn.Module,
    batch_size: int = 1,
    *,
    backend: str = "aoti",
    capacity: int | None = None,
    options: dict[str, Any] | None = None,
) -> FusedStep:
    """The fused step of a ``Block`` or ``Model`` (compiled on first use, then reused while the weights stay).

    ``capacity`` matters only for a KV cache: it is rounded up to a power of two (fewer compiles)
    and ignored for constant-state mixers.
    """
    growing = any(adapter_for(block.mixer).growing for block in _blocks(module))
    capacity = (1 << max(int(capacity) - 1, 1).bit_length()) if (growing and capacity) else (capacity if growing else None)
    key = (batch_size, backend, capacity, tuple(sorted((options or {}).items())))
    entries = _CACHE.setdefault(module, {})
    found = entries.get(key)
    if found is None or found.version != _weights_version(module):
        found = entries[key] = FusedStep(module, batch_size, backend=backend, capacity=capacity, options=options)
    return found
