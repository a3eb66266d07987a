"""workbench.lab.analysis: power-law MLE, KS, likelihood ratio, avalanche and load helpers (fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.lab.analysis import (
    binned_avalanches,
    ccdf,
    compare_powerlaw_exponential,
    discrete_powerlaw_cdf,
    entropy_bits,
    fit_discrete_exponential,
    fit_discrete_powerlaw,
    hurwitz_zeta,
    load_entropy,
    max_load_entropy_bits,
    mean_interevent_interval,
    mutual_information_bits,
    overwrite_stats,
    powerlaw_gof_pvalue,
    run_lengths,
    sample_discrete_exponential,
    sample_discrete_powerlaw,
    shuffled_mutual_information_bits,
)


def test_hurwitz_zeta():
    assert hurwitz_zeta(2.0, 1.0) == pytest.approx(math.pi**2 / 6, rel=1e-13)
    assert hurwitz_zeta(4.0, 1.0) == pytest.approx(math.pi**4 / 90, rel=1e-13)
    # zeta(s, q) - zeta(s, q + 1) = q^-s, for fractional and large q alike
    q = np.array([0.5, 1.0, 3.0, 17.0, 1e4])
    for s in (1.05, 1.5, 2.5, 7.0):
        assert np.allclose(hurwitz_zeta(s, q) - hurwitz_zeta(s, q + 1), q**-s, rtol=1e-10, atol=0)
    special = pytest.importorskip("scipy.special")
    for s in (1.001, 1.3, 2.5, 9.0):
        assert np.allclose(hurwitz_zeta(s, q), special.zeta(s, q), rtol=1e-12, atol=0)
    with pytest.raises(ValueError):
        hurwitz_zeta(1.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_powerlaw_mle_recovers_alpha_with_known_xmin(seed):
    x = sample_discrete_powerlaw(2.5, 1, 4000, np.random.default_rng(seed))
    fit = fit_discrete_powerlaw(x, xmin=1)
    assert abs(fit.alpha - 2.5) < 0.15
    assert fit.xmin == 1 and fit.n_tail == fit.n == 4000
    assert fit.ks < 0.03  # the true model: KS distance of order 1/sqrt(n)
    free = fit_discrete_powerlaw(x)  # x_min chosen by KS as well
    assert abs(free.alpha - 2.5) < 0.15 and free.ks < 0.03


def test_powerlaw_fit_chooses_xmin_and_ignores_the_body():
    rng = np.random.default_rng(3)
    tail = sample_discrete_powerlaw(2.5, 5, 3000, rng)
    body = rng.integers(1, 5, size=3000)  # flat below 5: not a power law at all
    fit = fit_discrete_powerlaw(np.concatenate([body, tail]))
    assert 4 <= fit.xmin <= 8
    assert abs(fit.alpha - 2.5) < 0.15
    assert fit.ks < 0.04


def test_sampler_matches_its_cdf():
    x = sample_discrete_powerlaw(2.0, 2, 20000, np.random.default_rng(4))
    assert x.min() >= 2
    for value in (2, 3, 5, 10, 50):
        assert abs((x <= value).mean() - float(discrete_powerlaw_cdf(value, 2.0, 2))) < 0.015


def test_ks_distance_is_small_for_the_true_model_and_large_for_a_wrong_one():
    rng = np.random.default_rng(5)
    power = sample_discrete_powerlaw(2.2, 1, 3000, rng)
    geometric = sample_discrete_exponential(0.15, 1, 3000, rng)
    assert fit_discrete_powerlaw(power, xmin=1).ks < 0.03
    assert fit_discrete_powerlaw(geometric, xmin=1).ks > 0.1


def test_likelihood_ratio_prefers_exponential_on_exponential_data():
    x = sample_discrete_exponential(0.3, 1, 3000, np.random.default_rng(6))
    assert abs(fit_discrete_exponential(x, 1).lam - 0.3) < 0.03
    lr = compare_powerlaw_exponential(x, fit_discrete_powerlaw(x, xmin=1))
    assert lr.ratio < 0 and lr.p_value < 0.01 and lr.preferred == "exponential"
    # With x_min chosen by KS the comparison is made on that tail; it must not favour the power law.
    free = compare_powerlaw_exponential(x, fit_discrete_powerlaw(x))
    assert free.preferred != "power law"


def test_likelihood_ratio_prefers_powerlaw_on_powerlaw_data():
    x = sample_discrete_powerlaw(2.0, 1, 3000, np.random.default_rng(7))
    lr = compare_powerlaw_exponential(x, fit_discrete_powerlaw(x, xmin=1))
    assert lr.ratio > 0 and lr.preferred == "power law"


def test_gof_bootstrap_accepts_true_model_and_rejects_exponential():
    rng = np.random.default_rng(8)
    power = sample_discrete_powerlaw(2.5, 1, 800, rng)
    assert powerlaw_gof_pvalue(power, fit_discrete_powerlaw(power, xmin=1), 30, rng) > 0.1
    geometric = sample_discrete_exponential(0.5, 1, 800, rng)
    assert powerlaw_gof_pvalue(geometric, fit_discrete_powerlaw(geometric, xmin=1), 30, rng) < 0.1


def test_fit_rejects_bad_samples():
    with pytest.raises(ValueError):
        fit_discrete_powerlaw(np.array([0, 1, 2]))
    with pytest.raises(ValueError):
        fit_discrete_powerlaw(np.array([1.5, 2.0]))
    with pytest.raises(ValueError, match="fewer than two distinct"):
        fit_discrete_powerlaw(np.array([3, 3, 3, 3]))


def test_run_lengths_cut_at_row_ends():
    mask = np.array([[1, 1, 0, 1, 1, 1], [1, 0, 0, 0, 0, 1]], dtype=bool)
    assert run_lengths(mask).tolist() == [2, 3, 1, 1]
    assert run_lengths(np.zeros((2, 4), dtype=bool)).tolist() == []


def test_binned_avalanches_and_interevent_interval():
    events = np.array([[1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0]])
    # bins of 2: [1, 2, 0, 0, 2, 2] (last partial bin dropped) -> avalanches of 3 and 4 events
    assert binned_avalanches(events, 2).tolist() == [3, 4]
    assert binned_avalanches(events, 2, threshold=1).tolist() == [2, 4]
    assert binned_avalanches(events, 1).tolist() == run_lengths(events.astype(bool)).tolist()
    assert mean_interevent_interval(events) == pytest.approx(np.diff([0, 2, 3, 8, 9, 10, 11]).mean())


def test_ccdf():
    values, survival = ccdf(np.array([1, 1, 2, 5]))
    assert values.tolist() == [1, 2, 5]
    assert survival.tolist() == [1.0, 0.5, 0.25]


def test_entropy_and_load():
    assert entropy_bits(np.array([1, 1, 1, 1])) == pytest.approx(2.0)
    assert entropy_bits(np.array([0, 0, 5])) == pytest.approx(0.0)
    assert max_load_entropy_bits(np.array([0, 3, 4, 6]), 4).tolist() == pytest.approx(
        [0.0, math.log2(3), 2.0, entropy_bits(np.array([2, 2, 1, 1]))]
    )
    # Round robin over 2 units is as even as can be; always the same unit is not.
    ring = np.array([[0, -1, 1, 0, 1, -1]])
    same = np.array([[0, -1, 0, 0, 0, -1]])
    entropy, ceiling = load_entropy(ring, 2)
    assert entropy == pytest.approx(ceiling)
    entropy, ceiling = load_entropy(same, 2)
    assert entropy[-1] == 0.0 and ceiling[-1] == 1.0


def test_overwrite_stats():
    units = np.array([[0, 1, -1, 0, 0, 1]])
    tokens = np.array([[7, 8, 9, 7, 3, 8]])
    stats = overwrite_stats(units, tokens)
    assert (stats.writes, stats.evictions, stats.same_token_evictions, stats.censored) == (5, 3, 2, 2)
    assert sorted(stats.lifetimes.tolist()) == [1, 3, 4]
    assert stats.eviction_fraction == pytest.approx(0.6)


def test_mutual_information():
    rng = np.random.default_rng(9)
    a = rng.integers(0, 4, size=5000)
    assert mutual_information_bits(a, a) == pytest.approx(2.0, abs=0.01)
    independent = rng.integers(0, 4, size=5000)
    assert mutual_information_bits(a, independent) < 0.01
    assert shuffled_mutual_information_bits(a, a, 5, rng) < 0.01
