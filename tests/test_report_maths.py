"""The report's maths (amp_fl.report.maths) against closed-form values."""

import itertools
import math

import numpy as np
import pytest

from amp_fl.report.maths import (
    band,
    bootstrap_speedups,
    common_grid,
    speedup_interval,
    speedups,
    spread,
    step_resample,
    value_at,
)
from amp_fl.run_folder import Hit, smoothed_time_to_target, time_to_target


def test_time_to_target_is_the_first_round_at_or_above_the_target():
    rounds, sim, acc = [0, 1, 2, 3], [0.0, 0.5, 1.25, 2.0], [0.1, 0.69, 0.7, 0.9]
    assert time_to_target(rounds, sim, acc, 0.7) == Hit(round=2, sim_time_s=1.25)
    assert time_to_target(rounds, sim, acc, 0.9) == Hit(round=3, sim_time_s=2.0)
    assert time_to_target(rounds, sim, acc, 0.95) is None
    assert time_to_target(rounds, sim, acc, 0.1) == Hit(round=0, sim_time_s=0.0)  # the initial model counts


def test_time_to_target_skips_nan_and_checks_its_arguments():
    assert time_to_target([0, 1, 2], [0, 1, 2], [math.nan, math.nan, 0.8], 0.5) == Hit(2, 2.0)
    with pytest.raises(ValueError, match="target"):
        time_to_target([0, 1], [0, 1], [0.1, 0.2], 0.0)
    with pytest.raises(ValueError, match="rounds"):
        time_to_target([0, 2, 1], [0, 1, 2], [0.1, 0.2, 0.3], 0.5)
    with pytest.raises(ValueError, match="sim_time_s"):
        time_to_target([0, 1, 2], [0, 2, 1], [0.1, 0.2, 0.3], 0.5)
    with pytest.raises(ValueError, match="accuracy"):
        time_to_target([0, 1, 2], [0, 1, 2], [0.1, 0.2], 0.5)


def test_spread_is_mean_sample_std_min_max():
    s = spread([2.0, 4.0, 9.0])
    assert (s.n, s.mean, s.min, s.max) == (3, 5.0, 2.0, 9.0)
    assert s.std == pytest.approx(math.sqrt(((2 - 5) ** 2 + (4 - 5) ** 2 + (9 - 5) ** 2) / 2))
    one = spread([3.0])
    assert (one.n, one.mean) == (1, 3.0) and math.isnan(one.std)
    assert spread([]).n == 0 and math.isnan(spread([]).mean)
    with pytest.raises(ValueError, match="values"):
        spread([1.0, math.nan])


def test_speedups_pair_seeds_and_bound_one_sided_seeds():
    reference = {0: 6.0, 1: None, 2: 4.0, 3: None, 7: 1.0}
    method = {0: 2.0, 1: 4.0, 2: None, 3: None, 5: 1.0}
    s = speedups(reference, method, reference_end={0: 10.0, 1: 12.0, 2: 8.0, 3: 9.0}, method_end={2: 16.0})
    assert s.exact == {0: 3.0}
    assert s.at_least == {1: 3.0}  # only the method reached it: reference's whole run / method's time
    assert s.at_most == {2: 0.25}  # only the reference reached it: its time / method's whole run
    assert s.stats.n == 1 and s.stats.mean == 3.0
    plain = speedups({0: 3.0, 1: 8.0}, {0: 1.0, 1: 2.0})
    assert plain.exact == {0: 3.0, 1: 4.0}
    assert plain.stats.mean == 3.5 and plain.stats.std == pytest.approx(math.sqrt(0.5))


def test_step_resample_holds_the_last_value_at_or_before_each_grid_point():
    x, y = [0.0, 1.0, 1.0, 3.0], [0.1, 0.2, 0.3, 0.4]
    out = step_resample(x, y, [-1.0, 0.0, 0.5, 1.0, 2.9, 3.0, 10.0])
    assert math.isnan(out[0])
    assert out[1:].tolist() == [0.1, 0.1, 0.3, 0.3, 0.4, 0.4]  # equal x: the last point wins
    assert value_at(x, y, 2.0) == 0.3


def test_band_is_pointwise_mean_min_max_over_curves():
    a = (np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.5, 1.0]))
    b = (np.array([0.0, 2.0]), np.array([0.2, 0.6]))
    grid = common_grid([2.0, 2.0], points=3)
    assert grid.tolist() == [0.0, 1.0, 2.0]
    got = band([a, b], grid)
    assert got.mean.tolist() == pytest.approx([0.1, 0.35, 0.8])
    assert got.low.tolist() == [0.0, 0.2, 0.6] and got.high.tolist() == [0.2, 0.5, 1.0]
    assert got.n == 2
    assert common_grid([5.0, 3.0], points=4).tolist() == [0.0, 1.0, 2.0, 3.0]  # the span every curve covers


# ------------------------------------------------------------------ smoothed time to target
def test_the_smoothed_time_waits_for_the_last_second_to_hold_the_target():
    # Evaluations every 0.25 s; one lucky 0.80 at 0.5 s, then the curve climbs and holds.
    t = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25]
    acc = [0.1, 0.5, 0.80, 0.6, 0.7, 0.75, 0.8, 0.8, 0.8, 0.8]
    rounds = list(range(len(t)))
    assert time_to_target(rounds, t, acc, 0.8).sim_time_s == 0.5  # the first crossing: the lucky one
    # Windows (t - 1, t]: at 1.0 -> (0.5+0.8+0.6+0.7)/4 = 0.65; 1.25 -> 0.7125; 1.5 -> 0.7125;
    # 1.75 -> 0.7625; 2.0 -> 0.7875; 2.25 -> 0.8: held from 2.25 s.
    hit = smoothed_time_to_target(rounds, t, acc, 0.8)
    assert hit == Hit(round=9, sim_time_s=2.25)
    assert smoothed_time_to_target(rounds, t, acc, 0.7875 - 1e-12).sim_time_s == 2.0
    assert smoothed_time_to_target(rounds, t, acc, 0.81) is None


def test_the_smoothed_time_needs_a_whole_window_and_skips_unevaluated_rounds():
    t = [0.0, 0.5, 0.6, 1.0, 1.5]
    acc = [0.9, float("nan"), 0.9, 0.9, 0.9]
    hit = smoothed_time_to_target([0, 1, 2, 3, 4], t, acc, 0.9)
    assert hit == Hit(round=3, sim_time_s=1.0)  # not at 0 s or 0.6 s: no whole second behind them yet
    assert smoothed_time_to_target([0, 1, 2, 3, 4], t, acc, 0.9, window_s=0.5).sim_time_s == 0.6
    with pytest.raises(ValueError, match="window_s"):
        smoothed_time_to_target([0, 1], [0.0, 1.0], [0.1, 0.2], 0.5, window_s=0.0)


# ------------------------------------------------------------------ bootstrap interval of a speedup
def test_equal_ratios_in_every_seed_give_that_ratio_and_a_point_interval():
    # Every seed 2x faster (exact in binary floating point): every bootstrap replicate is 2 too.
    method = {0: 1.5, 1: 3.25, 2: 0.75, 3: 6.0}
    reference = {s: 2 * t for s, t in method.items()}
    got = speedup_interval(reference, method)
    assert (got.estimate, got.low, got.high, got.n) == (2.0, 2.0, 2.0, 4)
    assert (got.level, got.resamples) == (0.95, 10_000)


def test_the_estimate_is_the_ratio_of_means_not_the_mean_of_ratios():
    # Seed 0: 10 s against 2 s (5x, a lucky seed); seed 1: 10 s against 10 s (1x).
    got = speedup_interval({0: 10.0, 1: 10.0}, {0: 2.0, 1: 10.0})
    assert got.estimate == pytest.approx(20 / 12)  # the mean of ratios would be 3
    # Seeds only one side has (it alone reached the target) are not paired.
    assert speedup_interval({0: 10.0, 1: 10.0, 5: 1.0}, {0: 2.0, 1: 10.0, 9: 1.0}).estimate == got.estimate


def test_two_seeds_the_bootstrap_matches_the_four_resamples_enumerated():
    # Resamples (seed, seed) of 2 seeds, each with probability 1/4: (0, 0) -> 10/2 = 5, (1, 1) -> 1,
    # (0, 1) and (1, 0) -> 20/12 = 5/3. So P(1) = 1/4, P(5/3) = 1/2, P(5) = 1/4.
    reference, method = {0: 10.0, 1: 10.0}, {0: 2.0, 1: 10.0}
    reps = bootstrap_speedups(reference, method)
    assert reps.shape == (10_000,)
    assert np.mean(reps == 1.0) == pytest.approx(0.25, abs=0.02)
    assert np.mean(np.isclose(reps, 5 / 3)) == pytest.approx(0.5, abs=0.02)
    assert np.mean(reps == 5.0) == pytest.approx(0.25, abs=0.02)
    # 95 %: the 2.5 % and 97.5 % quantiles are the extremes; 40 % (30 % and 70 %): both 5/3;
    # 60 % (20 % and 80 %): the extremes again.
    wide = speedup_interval(reference, method)
    assert (wide.low, wide.high) == (1.0, 5.0)
    middle = speedup_interval(reference, method, level=0.4)
    assert (middle.low, middle.high) == (pytest.approx(5 / 3), pytest.approx(5 / 3))
    sixty = speedup_interval(reference, method, level=0.6)
    assert (sixty.low, sixty.high) == (1.0, 5.0)


def _exact_quantile(reference, method, q):
    """Brute force: every one of the n^n equally likely resamples, the inverted-CDF quantile of their ratios."""
    seeds = sorted(reference)
    ratios = sorted(
        sum(reference[seeds[i]] for i in draw) / sum(method[seeds[i]] for i in draw)
        for draw in itertools.product(range(len(seeds)), repeat=len(seeds))
    )
    cdf = np.arange(1, len(ratios) + 1) / len(ratios)
    # q must sit clearly between two steps of the CDF, else 10 000 resamples could land either side.
    assert np.min(np.abs(cdf - q)) > 0.01
    return ratios[int(np.searchsorted(cdf, q))]


def test_three_seeds_the_interval_is_the_quantiles_of_the_27_resamples_enumerated():
    reference, method = {0: 12.0, 1: 10.0, 2: 6.0}, {0: 4.0, 1: 8.0, 2: 5.0}
    for level in (0.95, 0.8):
        got = speedup_interval(reference, method, level=level)
        assert got.low == pytest.approx(_exact_quantile(reference, method, (1 - level) / 2))
        assert got.high == pytest.approx(_exact_quantile(reference, method, (1 + level) / 2))
    assert speedup_interval(reference, method).estimate == pytest.approx(28 / 17)
    # At 80 %: the 10 % quantile is seeds (1, 2, 2): 22 / 18; the 90 % one is seeds (0, 0, 2): 30 / 13.
    assert (got.low, got.high) == (pytest.approx(22 / 18), pytest.approx(30 / 13))


def test_the_interval_is_deterministic_in_its_seed_and_ignores_mapping_order():
    reference, method = {0: 12.0, 1: 10.0, 2: 6.0}, {0: 4.0, 1: 8.0, 2: 5.0}
    a = bootstrap_speedups(reference, method, seed=3)
    assert np.array_equal(a, bootstrap_speedups(reference, method, seed=3))
    assert np.array_equal(a, bootstrap_speedups(dict(reversed(reference.items())), method, seed=3))
    assert not np.array_equal(a, bootstrap_speedups(reference, method, seed=4))
    assert speedup_interval(reference, method, seed=3) == speedup_interval(reference, method, seed=3)


def test_below_two_paired_seeds_the_interval_is_nan():
    one = speedup_interval({0: 6.0, 1: 5.0}, {0: 2.0})
    assert (one.estimate, one.n) == (3.0, 1) and math.isnan(one.low) and math.isnan(one.high)
    none = speedup_interval({0: 6.0}, {1: 2.0})
    assert none.n == 0 and all(math.isnan(x) for x in (none.estimate, none.low, none.high))
    assert bootstrap_speedups({0: 6.0}, {1: 2.0}).size == 0
    # Both at the start (the initial model already at the target): no difference, not 0 / 0.
    assert speedup_interval({0: 0.0, 1: 0.0}, {0: 0.0, 1: 0.0}).estimate == 1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"reference": {0: -1.0, 1: 2.0}}, "reference"),
        ({"method": {0: math.nan, 1: 2.0}}, "method"),
        ({"method": {0: None, 1: 2.0}}, "method"),
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"resamples": 0}, "resamples"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments_of_the_interval_name_the_parameter(kwargs, name):
    args = {"reference": {0: 4.0, 1: 2.0}, "method": {0: 2.0, 1: 2.0}, **kwargs}
    with pytest.raises(ValueError, match=f"^{name}: "):
        speedup_interval(**args)
