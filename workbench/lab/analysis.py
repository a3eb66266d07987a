"""Statistics for the notebooks: firing runs and avalanches, discrete power-law fits, load spread.

Power laws follow Clauset, Shalizi & Newman (2009), "Power-law distributions in empirical
data", for *discrete* (integer) data:

* ``fit_discrete_powerlaw``: for a given ``x_min`` the exponent is the maximum-likelihood
  estimate under ``p(x) = x^-alpha / zeta(alpha, x_min)`` (x >= x_min, Hurwitz zeta); when
  ``x_min`` is not given, the one that minimises the Kolmogorov-Smirnov distance between the
  tail and its fit is chosen.
* ``fit_discrete_exponential``: the alternative, ``p(x) = (1 - e^-lam) e^(-lam (x - x_min))``
  on the same tail (closed-form MLE).
* ``compare_powerlaw_exponential``: log-likelihood ratio R (> 0 favours the power law) with
  Vuong's normalised test for its sign (a small p means the sign is not noise).
* ``powerlaw_gof_pvalue``: semi-parametric bootstrap goodness of fit (p > 0.1: a power law
  is *plausible*; never proof, and a plausible exponential fit can coexist with it).

A straight line on a log-log plot is not evidence of criticality; these numbers are what
the notebooks report, and they are observations about one model on one text.

Only numpy is needed: the Hurwitz zeta function is computed here (Euler-Maclaurin) and the
one-dimensional likelihood is maximised by golden-section search (it is concave in alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA_BOUNDS = (1.0001, 10.0)

# B_2j / (2j)! for j = 1..7 (Bernoulli numbers over factorials), for Euler-Maclaurin.
_EM_COEFFS = [b / math.factorial(2 * j) for j, b in
              enumerate([1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6], start=1)]
_EM_TERMS = 9  # terms summed directly before the asymptotic tail


def hurwitz_zeta(s: float, q) -> np.ndarray:
    """zeta(s, q) = sum_{k >= 0} (q + k)^-s for s > 1, q > 0 (array q), to ~1e-14 relative.

    Sums the first terms directly, then the Euler-Maclaurin tail from a = q + 9:
    a^(1-s)/(s-1) + a^-s/2 + sum_j B_2j/(2j)! s(s+1)..(s+2j-2) a^(-s-2j+1).
    """
    if not s > 1:
        raise ValueError(f"the Hurwitz zeta series needs s > 1, got {s}")
    if np.ndim(q) == 0:  # scalar fast path (the likelihood maximisation calls this a lot)
        return np.float64(_hurwitz_zeta_scalar(float(s), float(q)))
    q = np.asarray(q, dtype=np.float64)
    if np.any(q <= 0):
        raise ValueError("hurwitz_zeta needs q > 0")
    k = np.arange(_EM_TERMS, dtype=np.float64)
    head = ((q[..., None] + k) ** -s).sum(-1)
    a = q + _EM_TERMS
    tail = a ** (1 - s) / (s - 1) + 0.5 * a**-s
    rising = s  # s (s+1) ... (s + 2j - 2)
    for j, coeff in enumerate(_EM_COEFFS, start=1):
        tail = tail + coeff * rising * a ** (-s - 2 * j + 1)
        rising *= (s + 2 * j - 1) * (s + 2 * j)
    return head + tail


def _hurwitz_zeta_scalar(s: float, q: float) -> float:
    if q <= 0:
        raise ValueError("hurwitz_zeta needs q > 0")
    total = math.fsum((q + k) ** -s for k in range(_EM_TERMS))
    a = q + _EM_TERMS
    total += a ** (1 - s) / (s - 1) + 0.5 * a**-s
    rising = s
    for j, coeff in enumerate(_EM_COEFFS, start=1):
        total += coeff * rising * a ** (-s - 2 * j + 1)
        rising *= (s + 2 * j - 1) * (s + 2 * j)
    return total


def _golden_section_min(f, lo: float, hi: float, tol: float = 1e-7) -> float:
    """argmin of a unimodal f on [lo, hi]."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2

# ----------------------------------------------------------------------------- events -> sizes


def run_lengths(mask: np.ndarray) -> np.ndarray:
    """Lengths of the maximal runs of True along the last axis; rows are independent.

    A run is cut at the end of its row (a window edge), never joined with the next row.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = mask.reshape(-1, mask.shape[-1]) if mask.ndim else mask.reshape(1, 1)
    padded = np.zeros((rows.shape[0], rows.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = rows
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)
    return (ends[1] - starts[1]).astype(np.int64)  # both are row-major ordered, pairwise


def mean_interevent_interval(events: np.ndarray) -> float:
    """Mean gap (in positions) between consecutive events within each row; inf without pairs."""
    events = np.asarray(events)
    rows = events.reshape(-1, events.shape[-1])
    gaps = [np.diff(np.nonzero(row)[0]) for row in rows]
    gaps = np.concatenate(gaps) if gaps else np.zeros(0)
    return float(gaps.mean()) if len(gaps) else math.inf


def binned_avalanches(events: np.ndarray, bin_width: int, threshold: float = 0.0) -> np.ndarray:
    """Avalanche sizes: sum events into bins of ``bin_width`` positions (per row); an avalanche is
    a maximal run of consecutive bins whose count exceeds ``threshold``; its size is the number
    of events in those bins. ``threshold=0`` with ``bin_width`` = mean inter-event interval is
    the Beggs & Plenz (2003) definition. A trailing partial bin is dropped.
    """
    if bin_width < 1:
        raise ValueError("bin_width must be >= 1")
    events = np.asarray(events, dtype=np.float64)
    rows = events.reshape(-1, events.shape[-1])
    n_bins = rows.shape[1] // bin_width
    if n_bins == 0:
        return np.zeros(0, dtype=np.int64)
    counts = rows[:, : n_bins * bin_width].reshape(rows.shape[0], n_bins, bin_width).sum(-1)
    active = counts > threshold
    sizes = []
    for row_counts, row_active in zip(counts, active):
        padded = np.concatenate([[False], row_active, [False]]).astype(np.int8)
        edges = np.diff(padded)
        for start, end in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]):
            sizes.append(row_counts[start:end].sum())
    return np.rint(np.asarray(sizes, dtype=np.float64)).astype(np.int64)


def ccdf(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Complementary CDF P(X >= x) at each distinct value x (for log-log survival plots)."""
    samples = np.sort(np.asarray(samples))
    values, first = np.unique(samples, return_index=True)
    return values, 1.0 - first / len(samples)


# ----------------------------------------------------------------------------- discrete power law


@dataclass
class PowerLawFit:
    alpha: float
    xmin: int
    n_tail: int  # samples >= xmin (the fitted part)
    n: int  # all samples
    ks: float  # Kolmogorov-Smirnov distance between the tail and the fitted law
    alpha_se: float  # asymptotic standard error (alpha - 1) / sqrt(n_tail), continuous approximation

    def tail(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples)
        return samples[samples >= self.xmin]


def discrete_powerlaw_logpmf(x: np.ndarray, alpha: float, xmin: int) -> np.ndarray:
    """log p(x) for p(x) = x^-alpha / zeta(alpha, xmin), x >= xmin."""
    x = np.asarray(x, dtype=np.float64)
    return -alpha * np.log(x) - np.log(hurwitz_zeta(alpha, xmin))


def discrete_powerlaw_cdf(x: np.ndarray, alpha: float, xmin: int) -> np.ndarray:
    """P(X <= x) for the discrete power law (x >= xmin integers)."""
    x = np.asarray(x, dtype=np.float64)
    return 1.0 - hurwitz_zeta(alpha, x + 1) / hurwitz_zeta(alpha, xmin)


def _alpha_mle(n: int, sum_log: float, xmin: int) -> float:
    """argmax_alpha  -n log zeta(alpha, xmin) - alpha * sum(log x) (one-dimensional, bounded)."""

    def negative_loglik(alpha: float) -> float:
        return n * math.log(float(hurwitz_zeta(alpha, xmin))) + alpha * sum_log

    return _golden_section_min(negative_loglik, *ALPHA_BOUNDS)


def _ks_distance(tail: np.ndarray, alpha: float, xmin: int) -> float:
    """sup_x |F_empirical(x) - F_fit(x)| over integers x >= xmin.

    Both CDFs are step functions on the integers; between consecutive data values a < b
    the empirical one is flat and the fitted one rises, so the supremum is reached at a data
    value or one below a data value.
    """
    tail = np.sort(tail)
    values = np.unique(np.concatenate([tail, tail[tail > xmin] - 1]))
    empirical = np.searchsorted(tail, values, side="right") / len(tail)
    return float(np.max(np.abs(empirical - discrete_powerlaw_cdf(values, alpha, xmin))))


def fit_discrete_powerlaw(samples: np.ndarray, xmin: int | None = None, min_tail: int = 20) -> PowerLawFit:
    """Fit a discrete power law to positive integer ``samples``.

    With ``xmin`` given, only alpha is estimated (maximum likelihood on samples >= xmin).
    Otherwise every distinct value that leaves at least ``min_tail`` samples (and more than one
    distinct value) in the tail is tried, and the x_min with the smallest KS distance wins.
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        x = x.ravel()
    if len(x) == 0:
        raise ValueError("no samples to fit")
    if np.any(x < 1) or np.any(x != np.floor(x)):
        raise ValueError("a discrete power law needs positive integer samples")
    x = x.astype(np.int64)
    if xmin is not None:
        candidates = [int(xmin)]
    else:
        candidates = [int(v) for v in np.unique(x) if (x >= v).sum() >= min(min_tail, len(x))]
    best: PowerLawFit | None = None
    for candidate in candidates:
        tail = x[x >= candidate]
        if len(tail) == 0:
            raise ValueError(f"no samples at or above xmin={candidate}")
        if xmin is None and len(np.unique(tail)) < 2:
            continue  # a single value: alpha -> infinity, nothing to fit
        alpha = _alpha_mle(len(tail), float(np.log(tail).sum()), candidate)
        fit = PowerLawFit(
            alpha=alpha,
            xmin=candidate,
            n_tail=len(tail),
            n=len(x),
            ks=_ks_distance(tail, alpha, candidate),
            alpha_se=(alpha - 1) / math.sqrt(len(tail)),
        )
        if best is None or fit.ks < best.ks:
            best = fit
    if best is None:
        raise ValueError("the samples take fewer than two distinct values in every candidate tail; nothing to fit")
    return best


def sample_discrete_powerlaw(alpha: float, xmin: int, n: int, rng: np.random.Generator, table: int = 10_000) -> np.ndarray:
    """Exact inverse-CDF samples of the discrete power law for x < xmin + table; beyond that
    (a tail mass of order table^(1 - alpha)) the continuous approximation of Clauset et al.
    (their eq. D.6) is used."""
    if alpha <= 1:
        raise ValueError("alpha must be > 1")
    support = np.arange(xmin, xmin + table, dtype=np.float64)
    cdf = np.cumsum(np.exp(discrete_powerlaw_logpmf(support, alpha, xmin)))
    u = rng.random(n)
    index = np.searchsorted(cdf, u, side="left")
    out = np.empty(n, dtype=np.int64)
    inside = index < table
    out[inside] = support[index[inside]].astype(np.int64)
    beyond = ~inside
    if beyond.any():
        r = (u[beyond] - cdf[-1]) / max(1 - cdf[-1], 1e-300)  # uniform within the remaining tail
        start = xmin + table
        approx = np.floor((start - 0.5) * (1 - r) ** (-1 / (alpha - 1)) + 0.5)
        out[beyond] = np.maximum(approx, start).astype(np.int64)
    return out


# ----------------------------------------------------------------------------- discrete exponential


@dataclass
class ExponentialFit:
    lam: float  # decay rate per unit of x
    xmin: int


def fit_discrete_exponential(samples: np.ndarray, xmin: int) -> ExponentialFit:
    """MLE of p(x) = (1 - e^-lam) e^(-lam (x - xmin)) on samples >= xmin (a shifted geometric)."""
    x = np.asarray(samples, dtype=np.float64)
    tail = x[x >= xmin]
    if len(tail) == 0:
        raise ValueError(f"no samples at or above xmin={xmin}")
    excess = float(tail.mean() - xmin)
    lam = math.log1p(1.0 / excess) if excess > 0 else math.inf
    return ExponentialFit(lam=lam, xmin=int(xmin))


def discrete_exponential_logpmf(x: np.ndarray, lam: float, xmin: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if math.isinf(lam):
        return np.where(x == xmin, 0.0, -np.inf)
    return math.log(-math.expm1(-lam)) - lam * (x - xmin)


def sample_discrete_exponential(lam: float, xmin: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.geometric(-math.expm1(-lam), size=n).astype(np.int64) - 1 + xmin


# ----------------------------------------------------------------------------- model comparison


@dataclass
class LikelihoodRatio:
    ratio: float  # R = sum log p_powerlaw - sum log p_exponential over the tail; > 0 favours power law
    normalized: float  # R / (sigma sqrt(n)): Vuong's statistic, ~ N(0, 1) if both fit equally well
    p_value: float  # two-sided: small means the sign of R is significant
    n_tail: int

    @property
    def preferred(self) -> str:
        """'power law', 'exponential', or 'neither' (sign of R not significant at p < 0.1)."""
        if self.p_value >= 0.1:
            return "neither"
        return "power law" if self.ratio > 0 else "exponential"


def compare_powerlaw_exponential(samples: np.ndarray, fit: PowerLawFit) -> LikelihoodRatio:
    """Log-likelihood ratio of the power-law fit against an exponential fitted on the same tail."""
    tail = fit.tail(samples).astype(np.float64)
    exponential = fit_discrete_exponential(tail, fit.xmin)
    pointwise = discrete_powerlaw_logpmf(tail, fit.alpha, fit.xmin) - discrete_exponential_logpmf(
        tail, exponential.lam, fit.xmin
    )
    ratio = float(pointwise.sum())
    n = len(tail)
    sigma = float(pointwise.std())
    if not math.isfinite(ratio):
        return LikelihoodRatio(ratio, math.copysign(math.inf, ratio), 0.0, n)
    if sigma == 0.0:
        return LikelihoodRatio(ratio, 0.0, 1.0, n)
    normalized = ratio / (sigma * math.sqrt(n))
    return LikelihoodRatio(ratio, normalized, math.erfc(abs(normalized) / math.sqrt(2)), n)


def powerlaw_gof_pvalue(samples: np.ndarray, fit: PowerLawFit, n_boot: int, rng: np.random.Generator) -> float:
    """Clauset et al.'s semi-parametric bootstrap: the fraction of synthetic data sets (body
    resampled from the data below x_min, tail drawn from the fitted law) whose own refitted
    KS distance exceeds the data's. ``n_boot`` = 100 gives p to about +-0.05. x_min is
    re-estimated for each synthetic set only when the fit chose it (always, here)."""
    x = np.asarray(samples).astype(np.int64)
    body = x[x < fit.xmin]
    n, worse = len(x), 0
    for _ in range(n_boot):
        from_tail = rng.random(n) < fit.n_tail / n
        synthetic = np.empty(n, dtype=np.int64)
        synthetic[from_tail] = sample_discrete_powerlaw(fit.alpha, fit.xmin, int(from_tail.sum()), rng)
        if len(body):
            synthetic[~from_tail] = rng.choice(body, size=int((~from_tail).sum()))
        else:
            synthetic[~from_tail] = sample_discrete_powerlaw(fit.alpha, fit.xmin, int((~from_tail).sum()), rng)
        try:
            worse += fit_discrete_powerlaw(synthetic).ks >= fit.ks
        except ValueError:
            continue
    return worse / n_boot if n_boot else math.nan


# ----------------------------------------------------------------------------- load and information


def entropy_bits(counts: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (bits) of the distribution proportional to ``counts`` along ``axis``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=axis, keepdims=True)
    p = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=axis)


def max_load_entropy_bits(n_writes: np.ndarray, n_units: int) -> np.ndarray:
    """Highest entropy (bits) that n writes spread over n_units can have: as even as possible."""
    n = np.asarray(n_writes, dtype=np.float64)
    q, r = np.floor(n / n_units), np.mod(n, n_units)
    out = np.zeros_like(n)
    ok = n > 0
    for count, units in ((q + 1, r), (q, n_units - r)):
        p = np.divide(count, n, out=np.zeros_like(n), where=ok)
        out += np.where(ok & (p > 0), -units * p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return out


def cumulative_load(units: np.ndarray, n_units: int) -> np.ndarray:
    """(B, T) unit written at each position (-1: none) -> (B, T, M) writes to each unit so far."""
    units = np.asarray(units)
    onehot = units[..., None] == np.arange(n_units)
    return onehot.cumsum(axis=-2)


def load_entropy(units: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Per position t: (mean over rows of the entropy of the cumulative load, mean of its maximum)."""
    load = cumulative_load(units, n_units)
    entropy = entropy_bits(load, axis=-1)
    ceiling = max_load_entropy_bits(load.sum(-1), n_units)
    return entropy.mean(0), ceiling.mean(0)


@dataclass
class OverwriteStats:
    writes: int
    evictions: int  # writes that replaced a message still held by the unit
    same_token_evictions: int  # ... where the evicted message came from the same token id
    lifetimes: np.ndarray  # positions each evicted message was held (censored ones excluded)
    censored: int  # messages still held at the end of their row

    @property
    def eviction_fraction(self) -> float:
        return self.evictions / self.writes if self.writes else math.nan

    @property
    def same_token_fraction(self) -> float:
        return self.same_token_evictions / self.evictions if self.evictions else math.nan


def overwrite_stats(units: np.ndarray, tokens: np.ndarray | None = None) -> OverwriteStats:
    """Evictions, their token sameness and message lifetimes from (B, T) units (-1: no write)."""
    units = np.asarray(units)
    writes = evictions = same = censored = 0
    lifetimes: list[int] = []
    for b, row in enumerate(units):
        holder: dict[int, int] = {}
        for t, unit in enumerate(row.tolist()):
            if unit < 0:
                continue
            writes += 1
            if unit in holder:
                evictions += 1
                lifetimes.append(t - holder[unit])
                if tokens is not None and tokens[b, holder[unit]] == tokens[b, t]:
                    same += 1
            holder[unit] = t
        censored += len(holder)
    return OverwriteStats(writes, evictions, same, np.asarray(lifetimes, dtype=np.int64), censored)


def mutual_information_bits(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (bits) between two discrete label arrays of equal length."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if len(a) != len(b):
        raise ValueError("label arrays differ in length")
    if len(a) == 0:
        return 0.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1.0)
    return float(entropy_bits(joint.sum(1)) + entropy_bits(joint.sum(0)) - entropy_bits(joint.ravel()))


def shuffled_mutual_information_bits(a: np.ndarray, b: np.ndarray, n_shuffles: int, rng: np.random.Generator) -> float:
    """Mean MI after permuting ``a``: what finite samples give with no dependence at all."""
    a = np.asarray(a).ravel()
    if n_shuffles <= 0:
        return math.nan
    return float(np.mean([mutual_information_bits(rng.permutation(a), b) for _ in range(n_shuffles)]))
