"""Neighbourhood masks: causal, exact edge counts, receptive fields, and the inverted ring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.hooks import capture
from workbench.lab.neighbourhoods import (
    Dilated,
    GlobalHubs,
    InvertedUnits,
    Logarithmic,
    RandomSparse,
    Sinks,
    SlidingWindow,
    Vanilla,
    edges,
    is_causal,
    receptive_field,
    receptive_field_growth,
    standard_patterns,
)
from workbench.mixers.inverted import InvertedMixer, InvertedOptions

PATTERNS = {
    **standard_patterns(),
    "inverted-pools": InvertedUnits(n_units=6, n_pools=3, write_rate=0.7, pool_probs=(0.6, 0.3, 0.1), conv_width=3),
    "inverted-no-conv": InvertedUnits(n_units=4, write_rate=0.4, conv_width=0),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("n", [1, 2, 7, 33, 70])
def test_masks_are_causal_and_row_sizes_are_exact(name, n):
    pattern = PATTERNS[name]
    for layer in range(3):
        mask = pattern.mask(n, layer)
        assert mask.shape == (n, n) and mask.dtype == bool
        assert is_causal(mask)
        if getattr(pattern, "conv_width", 1):  # a token always reads itself, except via units alone
            assert mask.diagonal().all()
        assert np.array_equal(mask.sum(1), pattern.row_sizes(n, layer)), (name, n, layer)
        assert pattern.edges(n, layer) == edges(mask)


@pytest.mark.parametrize(
    ("pattern", "n", "expected"),
    [
        (Vanilla(), 5, 15),
        (SlidingWindow(window=3), 5, 1 + 2 + 3 + 3 + 3),
        (Dilated(taps=2, dilation=2, growth=1), 6, 1 + 1 + 2 + 2 + 2 + 2),
        (Logarithmic(base=2), 8, 1 + 2 + 3 + 3 + 4 + 4 + 4 + 4),
        (RandomSparse(r=2), 5, 1 + 2 + 3 + 3 + 3),
        (GlobalHubs(stride=2, window=1), 4, 1 + 2 + 2 + 4),  # hubs at 1 and 3 read everything
        (Sinks(n_sink=1, window=2), 5, 1 + 2 + 3 + 3 + 3),
        (InvertedUnits(n_units=3, write_rate=1.0, conv_width=0), 6, 1 + 2 + 3 + 3 + 3 + 3),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_known_edge_counts(pattern, n, expected):
    assert edges(pattern.mask(n)) == expected
    assert pattern.edges(n) == expected


def test_specific_neighbourhoods():
    assert set(np.flatnonzero(Logarithmic().mask(16)[15])) == {15, 14, 13, 11, 7}
    assert set(np.flatnonzero(Dilated(taps=3, dilation=1, growth=2).mask(20, layer=2)[19])) == {19, 15, 11}
    assert set(np.flatnonzero(Sinks(n_sink=2, window=3).mask(10)[9])) == {0, 1, 7, 8, 9}
    assert set(np.flatnonzero(GlobalHubs(stride=4, window=2).mask(12)[10])) == {3, 7, 9, 10}
    assert GlobalHubs(stride=4, window=2).mask(12)[11].all()  # a hub reads its whole past


def test_inverted_with_every_token_writing_to_one_pool_is_a_sliding_window():
    units = InvertedUnits(n_units=5, write_rate=1.0, conv_width=0)
    assert np.array_equal(units.mask(40), SlidingWindow(window=5).mask(40))


def test_inverted_ring_on_a_hand_example():
    units = InvertedUnits(n_units=2, conv_width=0)
    written = np.array([True, False, True, True, True])
    pool = np.zeros(5, dtype=np.int64)
    assert units.units(written, pool).tolist() == [0, -1, 1, 0, 1]
    assert units.occupants(written, pool).tolist() == [[0, -1], [0, -1], [0, 2], [3, 2], [3, 4]]


def test_inverted_units_match_the_real_mixer():
    """The numpy ring and occupant table equal what InvertedMixer.forward computes."""
    torch.manual_seed(0)
    options = InvertedOptions(n_units=6, n_pools=2, read_topk=2, chunk_size=5, write_bias=0.0)
    mixer = InvertedMixer(16, options).double()
    for p in mixer.parameters():
        torch.nn.init.normal_(p, std=0.4)
    with torch.no_grad(), capture(mixer, ["hook_unit", "hook_occupant"]) as cache:
        mixer(torch.randn(2, 31, 16, dtype=torch.float64))
    pattern = InvertedUnits(n_units=6, n_pools=2)
    for b in range(2):
        unit = cache["hook_unit"][b].numpy()
        written = unit >= 0
        assert 0 < written.sum() < len(written)
        pool = np.where(written, unit // pattern.pool_size, 0)
        assert np.array_equal(pattern.units(written, pool), unit)
        assert np.array_equal(pattern.occupants(written, pool), cache["hook_occupant"][b].numpy())


def test_receptive_field_of_a_chain():
    n, depth = 12, 4
    reach = receptive_field(SlidingWindow(window=2).masks(n, depth))
    t, s = np.arange(n)[:, None], np.arange(n)[None, :]
    assert np.array_equal(reach, (s <= t) & (t - s <= depth))


def test_receptive_field_basics():
    n = 9
    assert np.array_equal(receptive_field([Vanilla().mask(n)]), np.tril(np.ones((n, n), dtype=bool)))
    assert np.array_equal(receptive_field([np.eye(n, dtype=bool)] * 3), np.eye(n, dtype=bool))
    with pytest.raises(ValueError):
        receptive_field([])


def test_receptive_field_growth_known_cases():
    assert receptive_field_growth(Dilated(taps=2, dilation=1, growth=2), 8, 3) == [1, 2, 4, 8]
    assert receptive_field_growth(Logarithmic(), 16, 4) == [1, 5, 11, 15, 16]
    assert receptive_field_growth(SlidingWindow(window=3), 20, 3) == [1, 3, 5, 7]
    assert receptive_field_growth(Vanilla(), 10, 2) == [1, 10, 10]


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_growth_agrees_with_receptive_field(name):
    pattern, n = PATTERNS[name], 40
    growth = receptive_field_growth(pattern, n, 3, position=n - 3)
    for depth in range(1, 4):
        assert growth[depth] == receptive_field(pattern.masks(n, depth))[n - 3].sum()
    assert growth == sorted(growth)  # the residual stream makes reach monotone in depth


def test_bad_arguments():
    for bad in (lambda: SlidingWindow(window=0), lambda: Logarithmic(base=1), lambda: InvertedUnits(n_units=5, n_pools=2)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        InvertedUnits(n_units=4, n_pools=2, pool_probs=(0.5, 0.6))
    with pytest.raises(ValueError):
        Vanilla().mask(0)
    with pytest.raises(ValueError):
        receptive_field_growth(Vanilla(), 5, 2, position=5)
