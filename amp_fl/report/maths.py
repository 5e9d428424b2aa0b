"""The numbers of a comparison, as pure functions on arrays (no files, no plotting).

* :func:`spread`: mean, sample standard deviation, minimum and maximum of one quantity over seeds.
* :func:`speedups`: per-seed speedup of a method over a reference, ``T_reference / T_method``,
  paired by seed; seeds where only one side reached the target give a bound, not a value.
* :func:`speedup_interval`: the speedup over the paired seeds as a ratio of mean times, with its
  paired (by seed) percentile bootstrap interval.
* :func:`step_resample`, :func:`band`: curves of several seeds on one grid (the model available at
  each grid point: the last evaluated round at or before it), their mean and min-max band.
* :func:`value_at`: a quantity as it stood at a given simulated time (e.g. accuracy after 50 s).

The time to a target is :func:`amp_fl.run_folder.time_to_target` (the first crossing; the server's
summary states it too) or :func:`amp_fl.run_folder.smoothed_time_to_target` (held for a window).
Inputs are validated; a bad argument raises ``ValueError`` naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from amp_fl.errors import check_argument


def _curve(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, x_name: str, y_name: str
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    check_argument(xs.ndim == 1 and ys.ndim == 1, x_name, "expected 1-D sequences")
    check_argument(xs.shape == ys.shape, y_name, f"has {ys.size} values but {x_name} has {xs.size}")
    check_argument(bool(np.all(np.isfinite(xs))), x_name, "must be finite")
    check_argument(bool(np.all(np.diff(xs) >= 0)), x_name, "must be non-decreasing")
    return xs, ys


@dataclass(frozen=True)
class Spread:
    """One quantity over seeds: how many, mean, sample standard deviation (n - 1; NaN below 2), min, max."""

    n: int
    mean: float
    std: float
    min: float
    max: float


EMPTY = Spread(0, math.nan, math.nan, math.nan, math.nan)


def spread(values: Sequence[float] | np.ndarray) -> Spread:
    """Mean and spread of ``values`` (NaN entries are rejected: leave out seeds without a value)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return EMPTY
    check_argument(bool(np.all(np.isfinite(v))), "values", "must be finite (leave out seeds without a value)")
    std = float(np.std(v, ddof=1)) if v.size >= 2 else math.nan
    return Spread(int(v.size), float(v.mean()), std, float(v.min()), float(v.max()))


@dataclass(frozen=True)
class Speedup:
    """Speedup ``T_reference / T_method`` per seed, paired by seed.

    ``exact``: seeds where both reached the target. ``at_least``: seeds where only the method
    reached it; the reference's whole run (its last simulated time) over the method's time is a
    lower bound. ``at_most``: seeds where only the reference reached it; the reference's time over
    the method's whole run is an upper bound. Seeds where neither reached it appear in none.
    """

    exact: dict[int, float] = field(default_factory=dict)
    at_least: dict[int, float] = field(default_factory=dict)
    at_most: dict[int, float] = field(default_factory=dict)

    @property
    def stats(self) -> Spread:
        """Mean and spread over the seeds with an exact value."""
        return spread(list(self.exact.values()))


def speedups(
    reference: Mapping[int, float | None],
    method: Mapping[int, float | None],
    reference_end: Mapping[int, float] | None = None,
    method_end: Mapping[int, float] | None = None,
) -> Speedup:
    """Per-seed speedup of ``method`` over ``reference`` from their times to a target (``None``: not reached).

    Only seeds present in both mappings are paired. ``reference_end`` / ``method_end`` (each run's
    last simulated time) turn one-sided seeds into bounds (:class:`Speedup`); without them such
    seeds are left out.
    """
    result = Speedup()
    for seed in sorted(set(reference) & set(method)):
        t_ref, t_m = reference[seed], method[seed]
        for name, value in (("reference", t_ref), ("method", t_m)):
            check_argument(
                value is None or (math.isfinite(value) and value >= 0), name, f"seed {seed}: bad time {value}"
            )
        if t_ref is not None and t_m is not None:
            if t_m > 0:
                result.exact[seed] = t_ref / t_m
            elif t_ref == 0:
                result.exact[seed] = 1.0  # both at the start: no difference
        elif t_m is not None and t_m > 0 and reference_end is not None and seed in reference_end:
            result.at_least[seed] = reference_end[seed] / t_m
        elif t_ref is not None and method_end is not None and method_end.get(seed, 0.0) > 0:
            result.at_most[seed] = t_ref / method_end[seed]
    return result


CONFIDENCE_LEVEL = 0.95  # of a speedup's bootstrap interval
BOOTSTRAP_RESAMPLES = 10_000  # enough that the 2.5 % and 97.5 % quantiles move by well under 1 % between seeds


@dataclass(frozen=True)
class SpeedupInterval:
    """A speedup over ``n`` paired seeds: the ratio of mean times and its percentile bootstrap interval.

    ``low`` and ``high`` bound the central ``level`` share of ``resamples`` bootstrap ratios (NaN
    with fewer than 2 paired seeds; ``estimate`` is NaN with none).
    """

    estimate: float
    low: float
    high: float
    n: int
    level: float
    resamples: int


def _ratio(reference: np.ndarray, method: np.ndarray) -> np.ndarray:
    """``reference / method`` elementwise; 0 / 0 is 1 (both at the start: no difference), x / 0 is inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = reference / method
    return np.where((method == 0) & (reference == 0), 1.0, out)


def _paired_times(reference: Mapping[int, float], method: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """The two sides' times over the seeds both have, in seed order (so the result ignores mapping order)."""
    for name, times in (("reference", reference), ("method", method)):
        for seed, value in times.items():
            check_argument(
                isinstance(value, int | float) and math.isfinite(value) and value >= 0,
                name,
                f"seed {seed}: a time to target must be a finite number >= 0, got {value!r} "
                "(leave out seeds that did not reach the target)",
            )
    seeds = sorted(set(reference) & set(method))
    return (
        np.array([reference[s] for s in seeds], dtype=np.float64),
        np.array([method[s] for s in seeds], dtype=np.float64),
    )


def _replicates(ref: np.ndarray, met: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    check_argument(
        isinstance(resamples, int | np.integer) and resamples >= 1,
        "resamples",
        f"must be an integer >= 1, got {resamples!r}",
    )
    check_argument(isinstance(seed, int | np.integer), "seed", f"must be an integer, got {seed!r}")
    if ref.size == 0:
        return np.empty(0)
    draws = np.random.default_rng(seed).integers(0, ref.size, size=(resamples, ref.size))
    return _ratio(ref[draws].mean(axis=1), met[draws].mean(axis=1))


def bootstrap_speedups(
    reference: Mapping[int, float],
    method: Mapping[int, float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> np.ndarray:
    """``resamples`` bootstrap replicates of ``mean T_reference / mean T_method`` over the paired seeds.

    Each replicate draws as many seeds as are paired, with replacement, and keeps each drawn seed's
    two times together (a paired bootstrap: a seed fixes the data split, the devices and the channel
    draws of both methods alike, and resampling pairs keeps that). The draws come from a generator
    of their own seeded by ``seed``, so a report is reproducible. Empty without a paired seed.
    """
    ref, met = _paired_times(reference, method)
    return _replicates(ref, met, resamples, seed)


def speedup_interval(
    reference: Mapping[int, float],
    method: Mapping[int, float],
    *,
    level: float = CONFIDENCE_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> SpeedupInterval:
    """The speedup of ``method`` over ``reference`` from their times to a target, with a paired bootstrap interval.

    ``reference`` and ``method`` map a seed to its time to the target; give only the seeds where
    that side reached it (the caller counts the seeds it leaves out). Seeds in both are paired.

    The estimate is the ratio of means, ``mean T_reference / mean T_method`` over the paired seeds,
    not the mean of per-seed ratios: one seed where a method happens to be very fast (a ratio of 5
    among ratios near 1) moves a mean of ratios a long way, the ratio of means only by that seed's
    share of the total time; and it is what "the method needs x times less time on average" means.
    The interval is the percentile bootstrap of :func:`bootstrap_speedups`: the ``(1 - level) / 2``
    and ``(1 + level) / 2`` quantiles of the replicates, each an actual replicate (the inverted
    empirical CDF, no interpolation). With fewer than 2 paired seeds the interval is NaN.
    """
    check_argument(isinstance(level, int | float) and 0.0 < level < 1.0, "level", f"must be in (0, 1), got {level!r}")
    ref, met = _paired_times(reference, method)
    replicates = _replicates(ref, met, resamples, seed)
    n = int(ref.size)
    if n == 0:
        return SpeedupInterval(math.nan, math.nan, math.nan, 0, float(level), resamples)
    estimate = float(_ratio(np.array(ref.mean()), np.array(met.mean())))
    if n < 2:
        return SpeedupInterval(estimate, math.nan, math.nan, n, float(level), resamples)
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return SpeedupInterval(estimate, float(low), float(high), n, float(level), resamples)


def step_resample(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, grid: Sequence[float] | np.ndarray
) -> np.ndarray:
    """``y`` as a step function of ``x`` on ``grid``: the value of the last point with ``x <= g`` (NaN before any).

    For accuracy against simulated time this is the model the server held at time ``g``. Points
    sharing an ``x`` (e.g. rounds of zero latency) resolve to the last of them.
    """
    xs, ys = _curve(x, y, "x", "y")
    g = np.asarray(grid, dtype=np.float64)
    index = np.searchsorted(xs, g, side="right") - 1
    out = np.full(g.shape, np.nan)
    valid = index >= 0
    out[valid] = ys[index[valid]]
    return out


def value_at(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, at: float) -> float:
    """The value of the last point with ``x <= at`` (NaN if none): e.g. accuracy after 50 simulated seconds."""
    return float(step_resample(x, y, [at])[0])


@dataclass(frozen=True)
class Band:
    """Curves of several seeds on one grid: mean, pointwise min and max (NaN where no seed has a value)."""

    grid: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


def band(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: Sequence[float] | np.ndarray) -> Band:
    """Mean line and min-max band of step-resampled ``(x, y)`` curves over ``grid``.

    Choose a grid every curve covers (:func:`common_grid`) so that each point averages all seeds.
    """
    check_argument(len(curves) > 0, "curves", "need at least one curve")
    g = np.asarray(grid, dtype=np.float64)
    stacked = np.vstack([step_resample(x, y, g) for x, y in curves])
    with np.errstate(all="ignore"):
        valid = ~np.all(np.isnan(stacked), axis=0)
        mean = np.full(g.shape, np.nan)
        low = np.full(g.shape, np.nan)
        high = np.full(g.shape, np.nan)
        mean[valid] = np.nanmean(stacked[:, valid], axis=0)
        low[valid] = np.nanmin(stacked[:, valid], axis=0)
        high[valid] = np.nanmax(stacked[:, valid], axis=0)
    return Band(g, mean, low, high, len(curves))


def common_grid(ends: Sequence[float], points: int = 400, start: float = 0.0) -> np.ndarray:
    """``points`` evenly spaced values from ``start`` to the smallest of ``ends`` (the span every curve covers)."""
    check_argument(len(ends) > 0, "ends", "need at least one curve end")
    check_argument(points >= 2, "points", f"must be >= 2, got {points}")
    stop = float(min(ends))
    check_argument(math.isfinite(stop) and stop >= start, "ends", f"must be finite and >= {start}, got {stop}")
    return np.linspace(start, stop, points)
