"""Attention variants as neighbourhoods: which earlier positions a token may read, layer by layer.

A causal sequence mixer at layer ``l`` lets token ``t`` read a set ``N(t, l)`` of positions
``s <= t``. Every efficient-attention variant is (to first order) a choice of that set, so
comparing variants reduces to three computable quantities:

* the **mask** ``A_l[t, s] = s in N(t, l)``, an ``(n, n)`` boolean lower-triangular matrix;
* the **receptive field** after ``L`` layers: input ``s`` can influence output ``t`` iff there is
  a path ``s -> ... -> t`` that takes at most one neighbourhood hop per layer (the residual
  stream supplies the "stay put" hop), i.e. the boolean product ``(A_L | I) ... (A_1 | I)``;
* the **cost**: the number of edges ``sum_t |N(t, l)|`` (score/mix work is edges x d).

Each pattern is a small frozen dataclass with ``mask(n, layer)`` (dense, for pictures and
small n) and ``row_sizes(n, layer)`` (``|N(t, l)|`` for every t in O(n) memory, so costs can be
counted at lengths where an ``n x n`` mask would not fit). ``row_sizes`` is exact: the tests
check it against ``mask(n).sum(1)``.

``InvertedUnits`` is the inverted mixer's neighbourhood (``workbench.mixers.inverted``): the
positions whose messages sit in the M units at time t (the occupant table) plus the local
causal convolution. It depends on content - which tokens post and to which pool they go - so
it takes a write pattern and pool choices (drawn at random here, produced by the gates in the
real mixer); its size is bounded by ``M + conv_width`` whatever ``n`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]
Sizes = npt.NDArray[np.int64]

__all__ = [
    "Dilated",
    "GlobalHubs",
    "InvertedUnits",
    "Logarithmic",
    "Mask",
    "Pattern",
    "RandomSparse",
    "Sinks",
    "SlidingWindow",
    "Vanilla",
    "edges",
    "is_causal",
    "receptive_field",
    "receptive_field_growth",
    "standard_patterns",
]


def _check_length(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"sequence length must be a positive integer, got {n!r}")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _band(n: int, width: int) -> Mask:
    """``mask[t, s] = 0 <= t - s < width`` (the last ``width`` positions, t included)."""
    t = np.arange(n)[:, None]
    s = np.arange(n)[None, :]
    return (s <= t) & (t - s < width)


class Pattern:
    """A causal neighbourhood rule. Subclasses implement ``mask`` and ``row_sizes``."""

    name: str = "pattern"

    def mask(self, n: int, layer: int = 0) -> Mask:
        """``(n, n)`` bool: ``mask[t, s]`` is True iff token t may read position s at ``layer``."""
        raise NotImplementedError

    def row_sizes(self, n: int, layer: int = 0) -> Sizes:
        """``|N(t, layer)|`` for t = 0..n-1, without building the ``n x n`` mask."""
        raise NotImplementedError

    def edges(self, n: int, layer: int = 0) -> int:
        """Edges of one layer: how many (reader, position) pairs are scored and mixed."""
        return int(self.row_sizes(n, layer).sum())

    def masks(self, n: int, n_layers: int) -> list[Mask]:
        """The masks of layers 0..n_layers-1 (patterns may change with depth)."""
        return [self.mask(n, layer) for layer in range(n_layers)]


@dataclass(frozen=True)
class Vanilla(Pattern):
    """Full causal attention: ``N(t) = {0, ..., t}``. Edges n(n+1)/2."""

    name: str = "vanilla"

    def mask(self, n: int, layer: int = 0) -> Mask:
        _check_length(n)
        return np.tril(np.ones((n, n), dtype=bool))

    def row_sizes(self, n: int, layer: int = 0) -> Sizes:
        _check_length(n)
        return np.arange(1, n + 1, dtype=np.int64)


@dataclass(frozen=True)
class SlidingWindow(Pattern):
    """The last ``window`` positions: ``N(t) = {t - window + 1, ..., t}``."""

    window: int = 16
    name: str = "sliding window"

    def __post_init__(self) -> None:
        _positive("window", self.window)

    def mask(self, n: int, layer: int = 0) -> Mask:
        _check_length(n)
        return _band(n, self.window)

    def row_sizes(self, n: int, layer: int = 0) -> Sizes:
        _check_length(n)
        return np.minimum(np.arange(1, n + 1), self.window).astype(np.int64)


@dataclass(frozen=True)
class Dilated(Pattern):
    """``taps`` positions spaced by a dilation: ``N(t) = {t - k * d : k = 0..taps-1, t - k d >= 0}``.

    The dilation at layer l is ``dilation * growth**l``: growth = taps gives the WaveNet-style
    schedule whose receptive field is ``taps**L`` after L layers.
    """

    taps: int = 4
    dilation: int = 1
    growth: int = 4
    name: str = "dilated"

    def __post_init__(self) -> None:
        for field_name in ("taps", "dilation", "growth"):
            _positive(field_name, getattr(self, field_name))

    def layer_dilation(self, layer: int) -> int:
        return self.dilation * self.growth**layer

    def mask(self, n: int, layer: int = 0) -> Mask:
        _check_length(n)
        d = self.layer_dilation(layer)
        t = np.arange(n)[:, None]
        s = np.arange(n)[None, :]
        gap = t - s
        return (gap >= 0) & (gap % d == 0) & (gap // d < self.taps)

    def row_sizes(self, n: int, layer: int = 0) -> Sizes:
        _check_length(n)
        d = self.layer_dilation(layer)
        return np.minimum(np.arange(n) // d + 1, self.taps).astype(np.int64)


@dataclass(frozen=True)
class Logarithmic(Pattern):
    """Itself plus positions at distances 1, b, b^2, ...: ``N(t) = {t} U {t - b^k : k >= 0}``."""

    base: int = 2
    name: str = "logarithmic"

    def __post_init__(self) -> None:
        if not isinstance(self.base, int) or self.base < 2:
            raise ValueError(f"base must be an integer >= 2, got {self.base!r}")

    def offsets(self, n: int) -> npt.NDArray[np.int64]:
        """0 and the powers of the base below n (distinct)."""
        powers = [0]
        step = 1
        while step < n:
            powers.append(step)
            step *= self.base
        return np.array(powers, dtype=np.int64)

    def mask(self, n: int, layer: int = 0) -> Mask:
        _check_length(n)
        t = np.arange(n)[:, None]
        s = np.arange(n)[None, :]
        return (s <= t) & np.isin(t - s, self.offsets(n))

    def row_sizes(self, n: int, layer: int = 0) -> Sizes:
        _check_length(n)
        t = np.arange(n)[:, None]
        return (self.offsets(n)[None, :] <= t).sum(1).astype(np.int64)


@dataclass(frozen=True)
class RandomSparse(Pattern):
    """Itself plus ``r`` distinct earlier positions drawn uniformly (fresh per layer and seed)."""

    r: int = 8
    seed: int = 0
    name: str = "random"

    def __post_init__(self) -> None:
        _positive("r", self.r)

    def mask(self, n: int, layer: int = 0) -> Mask:
        _check_length(n)
        rng = np.random.default_rng([self.seed, layer])
        out = np.eye(n, dtype=bool)
        for t in range(1, n):
            out[t, rng.choice(t, size=min(self.r, t), replace=False)] = True
        return out

    def row_sizes(self, n: int, layer: int = 0) -> Sizes:
        _check_length(n)
        return (1 + np.minimum(np.arange(n), self.r)).astype(np.int64)


@dataclass(frozen=True)
class GlobalHubs(Pattern):
    """Global tokens made causal: hub positions every ``stride`` read everything before them,
    every token reads all earlier hubs plus its last ``window`` positions.

    In a decoder a global token can only gather its past, so hubs fixed at the front would
    only see the prefix (that is ``Sinks``). To act as relays they must be spread along the
    sequence, and then their full rows cost about n^2 / (2 stride) edges: quadratic, with a
    smaller constant. Hubs are the positions t with ``(t + 1) % stride == 0``.
    """

    stride: int = 32
    window: int = 8
    name: str = "global hubs"

    def __post_init__(self) -> None:
        _positive("stride", self.stride)
        _positive("window", self.window)

    def hubs(self, n: int) -> npt.NDArray[np.bool_]:
        return (np.arange(n) + 1) % self.stride == 0

    def mask(self, n: int, layer: int = 0) -> Mask:
        _check_length(n)
        is_hub = self.hubs(n)
        causal = np.tril(np.ones((n, n), dtype=bool))
        out = _band(n, self.window) | (causal & is_hub[None, :])
        out[is_hub] = causal[is_hub]
        return out

    def row_sizes(self, n: int, layer: int = 0) -> Sizes:
        _check_length(n)
        t = np.arange(n)
        local = np.minimum(t + 1, self.window)
        beyond = t - self.window  # hubs at positions <= beyond lie outside the window
        far_hubs = np.where(beyond >= 0, (beyond + 1) // self.stride, 0)
        return np.where(self.hubs(n), t + 1, local + far_hubs).astype(np.int64)


@dataclass(frozen=True)
class Sinks(Pattern):
    """The first ``n_sink`` positions (attention sinks) plus the last ``window`` positions."""

    n_sink: int = 4
    window: int = 16
    name: str = "sinks"

    def __post_init__(self) -> None:
        _positive("n_sink", self.n_sink)
        _positive("window", self.window)

    def mask(self, n: int, layer: int = 0) -> Mask:
        _check_length(n)
        out = _band(n, self.window)
        out[:, : self.n_sink] |= np.tril(np.ones((n, n), dtype=bool))[:, : self.n_sink]
        return out

    def row_sizes(self, n: int, layer: int = 0) -> Sizes:
        _check_length(n)
        t = np.arange(n)
        local = np.minimum(t + 1, self.window)
        sinks_outside = np.clip(np.minimum(self.n_sink, t - self.window + 1), 0, None)
        return (local + sinks_outside).astype(np.int64)


@dataclass(frozen=True)
class InvertedUnits(Pattern):
    """The inverted mixer's candidates: the occupants of its M units at t, plus the local conv.

    Mirrors ``InvertedMixer.forward``: a token posts with probability ``write_rate`` (the
    salience gate), goes to pool p with probability ``pool_probs[p]`` (the router), and within
    the pool takes unit ``p * S + (c_p - 1) mod S`` (the refractory ring, S = n_units / n_pools,
    c_p the pool's write count). Unit m holds the last position written to it; token t may
    read the occupants at t and, through the causal convolution, positions t-w+1..t. With
    every token writing to one pool this is exactly a sliding window of M; with sparse writes
    or uneven pools the window stretches over content-selected positions.

    Writes and pools are drawn per (seed, layer); ``schedule`` exposes them so a real mixer's
    choices can be compared (see ``occupants``).
    """

    n_units: int = 16
    n_pools: int = 1
    write_rate: float = 1.0
    pool_probs: tuple[float, ...] | None = None  # None: uniform over pools
    conv_width: int = 4
    seed: int = 0
    name: str = "inverted"

    def __post_init__(self) -> None:
        _positive("n_units", self.n_units)
        _positive("n_pools", self.n_pools)
        if self.n_units % self.n_pools:
            raise ValueError(f"n_units={self.n_units} must split into n_pools={self.n_pools} equal pools")
        if not 0.0 <= self.write_rate <= 1.0:
            raise ValueError(f"write_rate must lie in [0, 1], got {self.write_rate!r}")
        if self.pool_probs is not None:
            probs = np.asarray(self.pool_probs, dtype=float)
            if probs.shape != (self.n_pools,) or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
                raise ValueError(f"pool_probs must be {self.n_pools} non-negative numbers summing to 1")
        if not isinstance(self.conv_width, int) or self.conv_width < 0:
            raise ValueError(f"conv_width must be an integer >= 0, got {self.conv_width!r}")

    @property
    def pool_size(self) -> int:
        return self.n_units // self.n_pools

    def schedule(self, n: int, layer: int = 0) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """(written (n,), pool (n,)) drawn for this layer; pool is meaningful only where written."""
        _check_length(n)
        rng = np.random.default_rng([self.seed, layer])
        written = rng.random(n) < self.write_rate
        pool = rng.choice(self.n_pools, size=n, p=self.pool_probs)
        return written, pool.astype(np.int64)

    def units(self, written: npt.NDArray[np.bool_], pool: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Unit taken by each position (-1 where it did not write): the refractory ring."""
        onehot = np.zeros((len(written), self.n_pools), dtype=np.int64)
        onehot[np.arange(len(written)), pool] = written
        own_count = np.take_along_axis(onehot.cumsum(0), pool[:, None], axis=1)[:, 0]
        unit = pool * self.pool_size + (own_count - 1) % self.pool_size
        return np.where(written, unit, -1)

    def occupants(self, written: npt.NDArray[np.bool_], pool: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """``(n, M)``: position held by each unit after step t (-1 if empty); the cummax table."""
        n = len(written)
        unit = self.units(written, pool)
        posted = np.where(unit[:, None] == np.arange(self.n_units)[None, :], np.arange(n)[:, None], -1)
        return np.maximum.accumulate(posted, axis=0)

    def mask(self, n: int, layer: int = 0) -> Mask:
        written, pool = self.schedule(n, layer)
        occupant = self.occupants(written, pool)
        out = _band(n, self.conv_width) if self.conv_width else np.zeros((n, n), dtype=bool)
        rows = np.repeat(np.arange(n), self.n_units)
        held = occupant.reshape(-1)
        out[rows[held >= 0], held[held >= 0]] = True
        return out

    def row_sizes(self, n: int, layer: int = 0) -> Sizes:
        written, pool = self.schedule(n, layer)
        onehot = np.zeros((n, self.n_pools), dtype=np.int64)
        onehot[np.arange(n), pool] = written
        counts = onehot.cumsum(0)  # (n, pools): writes to each pool up to t
        held = np.minimum(counts, self.pool_size).sum(1)
        t = np.arange(n)
        extra = np.zeros(n, dtype=np.int64)
        for offset in range(self.conv_width):  # conv positions not already held by a unit
            s = t - offset
            valid = s >= 0
            s_c = np.clip(s, 0, None)
            # s still occupies its unit at t iff its pool took < S further writes in (s, t].
            later = counts[t, pool[s_c]] - counts[s_c, pool[s_c]]
            still_held = written[s_c] & (later < self.pool_size)
            extra += (valid & ~still_held).astype(np.int64)
        return (held + extra).astype(np.int64)


def standard_patterns() -> dict[str, Pattern]:
    """The variants the design notebook compares, at sizes that make their shapes visible."""
    return {
        "vanilla": Vanilla(),
        "sliding window": SlidingWindow(window=16),
        "dilated": Dilated(taps=4, dilation=1, growth=4),
        "logarithmic": Logarithmic(base=2),
        "random": RandomSparse(r=8),
        "global hubs": GlobalHubs(stride=16, window=8),
        "sinks": Sinks(n_sink=4, window=16),
        "inverted": InvertedUnits(n_units=16, n_pools=1, write_rate=0.5, conv_width=8),
    }


def is_causal(mask: Mask) -> bool:
    """True iff the mask never lets t read a later position (an empty row is allowed: the
    inverted mixer with no local channel reads nothing before the first message is posted)."""
    return bool(mask.ndim == 2 and mask.shape[0] == mask.shape[1] and not np.triu(mask, 1).any())


def edges(mask: Mask) -> int:
    """Number of (reader, position) pairs in a dense mask."""
    return int(mask.sum())


def receptive_field(masks: Sequence[Mask]) -> Mask:
    """``reach[t, s]``: can input s influence output t after these layers (first layer first)?

    Each layer composes its neighbourhood with the identity (the residual stream carries a
    token's own state upwards), so reach grows monotonically with depth.
    """
    if not masks:
        raise ValueError("need at least one layer mask")
    n = masks[0].shape[0]
    reach = np.eye(n, dtype=bool)
    eye = np.eye(n, dtype=bool)
    for mask in masks:
        if mask.shape != (n, n):
            raise ValueError(f"all masks must be {(n, n)}, got {mask.shape}")
        step = (mask | eye).astype(np.float32)
        reach = (step @ reach.astype(np.float32)) > 0
    return reach


def receptive_field_growth(pattern: Pattern, n: int, n_layers: int, position: int = -1) -> list[int]:
    """``|receptive field|`` of output ``position`` after 0, 1, ..., n_layers layers."""
    _check_length(n)
    if not -n <= position < n:
        raise ValueError(f"position {position} is outside a sequence of length {n}")
    eye = np.eye(n, dtype=bool)
    layer_masks = [(mask | eye).astype(np.float32) for mask in pattern.masks(n, n_layers)]
    sizes = [1]
    for depth in range(1, n_layers + 1):
        # Row ``position`` of (A_depth | I) ... (A_1 | I): apply the top layer first.
        vec = eye[position].astype(np.float32)
        for step in reversed(layer_masks[:depth]):
            vec = ((vec @ step) > 0).astype(np.float32)
        sizes.append(int(vec.sum()))
    return sizes
