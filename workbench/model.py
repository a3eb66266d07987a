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
from workbench.mixers import MIXERS

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


class Block(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        mixer_cls = MIXERS[config.mixer]
        self.norm_mixer = nn.LayerNorm(config.d_model)
        self.mixer = mixer_cls(config.d_model, mixer_cls.options_from(config.mixer_options, config.d_model))
        self.norm_mlp = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config.d_model, config.mlp_ratio)
        self.hook_resid_pre = HookPoint()
        self.hook_mixer_out = HookPoint()
        self.hook_mlp_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        x = x + self.hook_mixer_out(self.mixer(self.norm_mixer(x)))
        return x + self.hook_mlp_out(self.mlp(self.norm_mlp(x)))

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        y, state = self.mixer.step(self.norm_mixer(x), state)
        x = x + y
        return x + self.mlp(self.norm_mlp(x)), state


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


class ClassifyHead(nn.Module):
    def __init__(self, d_model: int, io: TaskIO) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, io.n_outputs)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(_pool(h, mask))

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets)


class RegressHead(nn.Module):
    def __init__(self, d_model: int, io: TaskIO) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, io.n_outputs)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(_pool(h, mask))

    @staticmethod
    def loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(preds.float(), targets.float())


HEADS: dict[str, type[nn.Module]] = {"lm": LMHead, "classify": ClassifyHead, "regress": RegressHead}


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
        """Task loss plus the mixers' auxiliary losses (generic, never task-specific)."""
        loss = self.head.loss(self(inputs, mask), targets)
        for block in self.blocks:
            if block.mixer.aux_loss is not None:
                loss = loss + block.mixer.aux_loss
        return loss

    # ------------------------------------------------------------ recurrent mode

    def init_state(self, batch_size: int) -> list[Any]:
        param = next(self.parameters())
        return [b.mixer.init_state(batch_size, param.device, param.dtype) for b in self.blocks]

    def step(self, token_or_vector: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """One position at a time: (batch,) ids or (batch, input_dim) -> head output for it."""
        x = self.adapter(token_or_vector)
        new_state = []
        for block, block_state in zip(self.blocks, state):
            x, block_state = block.step(x, block_state)
            new_state.append(block_state)
        out = self.head(self.norm_final(x)[:, None, :])  # lm: (B, 1, V); pooled heads: (B, n_outputs)
        return (out[:, 0] if self.io.head == "lm" else out), new_state

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        n_new: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``n_new`` tokens after ``prompt`` (batch, time) with the recurrent form."""
        if self.io.head != "lm":
            raise ValueError("generate needs a model with an lm head")
        if prompt.dim() != 2 or prompt.shape[1] == 0:
            raise ValueError("generate needs a non-empty prompt of shape (batch, time)")
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        self._check_inputs(prompt)
        state = self.init_state(prompt.shape[0])
        for t in range(prompt.shape[1]):
            logits, state = self.step(prompt[:, t], state)
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
            logits, state = self.step(token, state)
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
