"""The whole model in one file: input adapter -> N x [mixer + MLP] -> final norm -> head.

The backbone is task-agnostic; only the input adapter (token ids or real vectors)
and the head (lm / classify / regress) depend on the task, and both are chosen by
the task's ``TaskIO``. The mixer is named in the config (see ``workbench.mixers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError, ModelConfig
from workbench.hooks import HookPoint
from workbench.kernels.short_conv import short_conv, short_conv_step
from workbench.mixers import MIXERS, Mixer

IGNORE = -100  # target value that carries no loss


@dataclass(frozen=True)
class TaskIO:
    """What a task feeds the model and what it asks back."""

    input_kind: str  # "tokens" (ids) or "vectors" (real features / image patches)
    head: str  # "lm", "classify" or "regress"
    vocab_size: int = 0  # for token inputs
    input_dim: int = 0  # for vector inputs
    n_outputs: int = 0  # classes for classify, targets for regress; lm uses vocab_size

    def validate(self) -> None:
        if self.input_kind not in ("tokens", "vectors"):
            raise ConfigError(f"input_kind must be 'tokens' or 'vectors', got {self.input_kind!r}")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose one of {sorted(HEADS)}")
        if self.input_kind == "tokens" and self.vocab_size <= 0:
            raise ConfigError("token inputs need vocab_size > 0")
        if self.input_kind == "vectors" and self.input_dim <= 0:
            raise ConfigError("vector inputs need input_dim > 0")
        if self.head != "lm" and self.n_outputs <= 0:
            raise ConfigError(f"head {self.head!r} needs n_outputs > 0")


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, ratio * d_model)
        self.down = nn.Linear(ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class ShortConv(nn.Module):
    """The front end every mixer shares: a short causal depthwise convolution (``kernels.short_conv``)."""

    def __init__(self, d_model: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.weight = nn.Parameter(torch.randn(d_model, width) * 0.1)
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return short_conv(x, self.weight, self.bias)

    def step(self, x_t: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return short_conv_step(x_t, window, self.weight, self.bias)


class Block(nn.Module):
    """Pre-norm residual block: x + front_end(mixer)(norm(x)), then x + mlp(norm(x)).

    The front end (Zoology/Based recipe, the same for every mixer; ``short_conv`` = 0 turns it
    off): ``local = conv(h)``, the mixer sees ``h + local`` and ``local`` is added to its output,
    so order, the predecessor and the token's own identity reach the stream whatever the mixer.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm_mixer = nn.LayerNorm(config.d_model)
        self.short_conv = ShortConv(config.d_model, config.short_conv) if config.short_conv else None
        self.mixer = build_mixer(config)
        self.norm_mlp = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config.d_model, config.mlp_ratio)
        self.hook_resid_pre = HookPoint()
        self.hook_local = HookPoint()
        self.hook_mixer_out = HookPoint()
        self.hook_mlp_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        h = self.norm_mixer(x)
        if self.short_conv is None:
            y = self.mixer(h)
        else:
            local = self.hook_local(self.short_conv(h))
            y = self.mixer(h + local) + local
        x = x + self.hook_mixer_out(y)
        return x + self.hook_mlp_out(self.mlp(self.norm_mlp(x)))

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, Any]:
        width = self.short_conv.width if self.short_conv is not None else 1
        window = torch.zeros(batch_size, width - 1, self.norm_mixer.normalized_shape[0], device=device, dtype=dtype)
        return {"conv": window, "mixer": self.mixer.init_state(batch_size, device, dtype)}

    def step(self, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        h = self.norm_mixer(x)
        window = state["conv"]
        if self.short_conv is None:
            y, mixer_state = self.mixer.step(h, state["mixer"])
        else:
            local, window = self.short_conv.step(h, window)
            y, mixer_state = self.mixer.step(h + local, state["mixer"])
            y = y + local
        x = x + y
        return x + self.mlp(self.norm_mlp(x)), {"conv": window, "mixer": mixer_state}

    def state_floats(self, context: int) -> int:
        """Numbers in this block's recurrent state after ``context`` tokens (one sequence)."""
        width = self.short_conv.width if self.short_conv is not None else 1
        return (width - 1) * self.norm_mixer.normalized_shape[0] + self.mixer.state_floats(context)


def mixer_options(config: ModelConfig) -> Any:
    """The mixer's options dataclass for this config, checked by the mixer (one ConfigError if wrong)."""
    config.validate()
    if config.mixer not in MIXERS:
        raise ConfigError(f"unknown mixer {config.mixer!r}; choose one of {sorted(MIXERS)}")
    try:
        return MIXERS[config.mixer].options_from(config.mixer_options, config.d_model)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. a string where a number belongs
        raise ConfigError(f"bad model.mixer_options for mixer {config.mixer!r}: {exc}") from None


def build_mixer(config: ModelConfig) -> Mixer:
    """The mixer named in the config, built from its checked options."""
    return MIXERS[config.mixer](config.d_model, mixer_options(config))


# ----------------------------------------------------------------------------- heads


class LMHead(nn.Module):
    """Next-token logits at every position; loss over positions whose target is not IGNORE."""

    def __init__(self, d_model: int, io: TaskIO) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, io.vocab_size, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(h)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=IGNORE)


def _pool(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid positions (mask: True where the input is real)."""
    if mask is None:
        return h.mean(dim=1)
    weights = mask.to(h.dtype)[..., None]
    return (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class PooledHead(nn.Module):
    """Mean over the valid positions, then a linear map: classes (``classify``) or targets (``regress``)."""

    def __init__(self, d_model: int, io: TaskIO) -> None:
        super().__init__()
        self.kind = io.head
        self.proj = nn.Linear(d_model, io.n_outputs)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(_pool(h, mask))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.kind == "classify":
            return F.cross_entropy(outputs.float(), targets)
        return F.mse_loss(outputs.float(), targets.float())


HEADS: dict[str, type[nn.Module]] = {"lm": LMHead, "classify": PooledHead, "regress": PooledHead}


# ----------------------------------------------------------------------------- model


class Model(nn.Module):
    def __init__(self, config: ModelConfig, io: TaskIO) -> None:
        super().__init__()
        config.validate()
        io.validate()
        self.config, self.io = config, io
        if io.input_kind == "tokens":
            self.adapter: nn.Module = nn.Embedding(io.vocab_size, config.d_model)
        else:
            self.adapter = nn.Linear(io.input_dim, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm_final = nn.LayerNorm(config.d_model)
        self.head = HEADS[io.head](config.d_model, io)
        self.hook_embed = HookPoint()
        self.hook_final = HookPoint()

    def _check_inputs(self, inputs: torch.Tensor) -> None:
        if self.io.input_kind == "tokens":
            if inputs.dtype not in (torch.int64, torch.int32) or inputs.dim() != 2:
                raise ValueError(f"expected (batch, time) integer token ids, got {tuple(inputs.shape)} {inputs.dtype}")
            if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= self.io.vocab_size):
                raise ValueError(f"token ids must lie in [0, {self.io.vocab_size}), got [{int(inputs.min())}, {int(inputs.max())}]")
        else:
            if inputs.dim() != 3 or inputs.shape[-1] != self.io.input_dim:
                raise ValueError(f"expected (batch, time, {self.io.input_dim}) vectors, got {tuple(inputs.shape)}")
            if not torch.isfinite(inputs).all():
                raise ValueError("inputs contain NaN or infinite values")
        if inputs.shape[1] == 0:
            raise ValueError("inputs have zero length")

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Backbone only: (batch, time, d_model) after the final norm."""
        self._check_inputs(inputs)
        x = self.hook_embed(self.adapter(inputs))
        for block in self.blocks:
            x = block(x)
        return self.hook_final(self.norm_final(x))

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(inputs), mask)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Task loss plus the mixers' auxiliary losses (generic, never task-specific).

        An lm head scores only the positions that carry a target: with a large vocabulary and few
        labelled positions (MQAR: 8,192 tokens, one answer per query) the head would otherwise
        dominate the step.
        """
        if self.io.head == "lm":
            labelled = targets != IGNORE
            loss = self.head.loss(self.head(self.features(inputs)[labelled]), targets[labelled])
        else:
            loss = self.head.loss(self(inputs, mask), targets)
        for block in self.blocks:
            if block.mixer.aux_loss is not None:
                loss = loss + block.mixer.aux_loss
        return loss

    @torch.no_grad()
    def predict_labelled(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Argmax prediction at every position whose target is not IGNORE (the rest: IGNORE)."""
        labelled = targets != IGNORE
        predictions = torch.full_like(targets, IGNORE)
        predictions[labelled] = self.head(self.features(inputs)[labelled]).argmax(-1)
        return predictions

    # ------------------------------------------------------------ recurrent mode

    def init_state(self, batch_size: int) -> list[dict[str, Any]]:
        param = next(self.parameters())
        return [b.init_state(batch_size, param.device, param.dtype) for b in self.blocks]

    def state_floats(self, context: int) -> int:
        """Numbers in the recurrent state of one sequence after ``context`` tokens (every block)."""
        return sum(b.state_floats(context) for b in self.blocks)

    def step(self, token_or_vector: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """One position at a time: (batch,) ids or (batch, input_dim) -> head output for it."""
        x = self.adapter(token_or_vector)
        new_state = []
        for block, block_state in zip(self.blocks, state):
            x, block_state = block.step(x, block_state)
            new_state.append(block_state)
        h = self.norm_final(x)
        if self.io.head == "lm":  # per position: (B, d) -> (B, V), no length-1 axis (two nodes fewer when exported)
            return self.head(h), new_state
        return self.head(h[:, None, :]), new_state  # pooled heads: (B, n_outputs)

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        n_new: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        fused: bool = False,
    ) -> torch.Tensor:
        """Sample ``n_new`` tokens after ``prompt`` (batch, time) with the recurrent form.

        ``fused``: step with ``workbench.fast.fused_step`` (the whole step compiled once per batch
        size and weights; the same tokens up to float rounding), else the plain ``step``.
        """
        if self.io.head != "lm":
            raise ValueError("generate needs a model with an lm head")
        if prompt.dim() != 2 or prompt.shape[1] == 0:
            raise ValueError("generate needs a non-empty prompt of shape (batch, time)")
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        self._check_inputs(prompt)
        step, state = self.step, self.init_state(prompt.shape[0])
        if fused:
            from workbench.fast import fused_step

            step = fused_step(self, prompt.shape[0], capacity=prompt.shape[1] + n_new + 1)
            state = step.init_state()
        for t in range(prompt.shape[1]):
            logits, state = step(prompt[:, t], state)
        out = [prompt]
        for _ in range(n_new):
            if temperature == 0:
                token = logits.argmax(-1)
            else:
                scaled = logits.float() / temperature
                if top_k is not None:
                    kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                token = torch.multinomial(scaled.softmax(-1), 1, generator=generator)[:, 0]
            out.append(token[:, None])
            logits, state = step(token, state)
        return torch.cat(out, dim=1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_report(model: Model) -> dict[str, int]:
    """Total, backbone-without-embedding, and mixer parameters (what the comparison is about)."""
    mixers = sum(count_parameters(b.mixer) for b in model.blocks)
    return {
        "total": count_parameters(model),
        "blocks": sum(count_parameters(b) for b in model.blocks),
        "mixer": mixers,
    }
