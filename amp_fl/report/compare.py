"""Statistics of a comparison: per method, over its seeds (uses the pure maths of :mod:`.maths`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from amp_fl.errors import check_argument
from amp_fl.report.maths import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE_LEVEL,
    Speedup,
    SpeedupInterval,
    Spread,
    speedup_interval,
    speedups,
    spread,
    value_at,
)
from amp_fl.report.runs import Group, Run
from amp_fl.run_folder import (
    COMPLETED,
    SMOOTHING_WINDOW_S,
    Hit,
    last_measured,
    smoothed_time_to_target,
    time_to_target,
)


@dataclass(frozen=True)
class TimesToTarget:
    """One definition of the time to a target over a group's seeds (means over the seeds that reached it)."""

    hits: dict[int, Hit | None]
    rounds: Spread
    sim_time_s: Spread

    @property
    def reached(self) -> int:
        return sum(h is not None for h in self.hits.values())

    @property
    def seeds(self) -> int:
        return len(self.hits)

    def times(self) -> dict[int, float | None]:
        return {seed: (None if h is None else h.sim_time_s) for seed, h in self.hits.items()}

    def reached_times(self) -> dict[int, float]:
        """The simulated time to the target of each seed that reached it."""
        return {seed: h.sim_time_s for seed, h in self.hits.items() if h is not None}


def times_over_seeds(hits: dict[int, Hit | None]) -> TimesToTarget:
    reached = [h for h in hits.values() if h is not None]
    return TimesToTarget(hits, spread([h.round for h in reached]), spread([h.sim_time_s for h in reached]))


@dataclass(frozen=True)
class TargetStats:
    """Time to one target accuracy over a group's seeds, by both definitions.

    ``first``: the first evaluated round at or above the target (the paper's definition; a noisy
    curve crosses early). ``smoothed``: the first evaluated time at which the mean of the last
    ``window_s`` simulated seconds of evaluations reaches it (the method *holds* the target,
    :func:`~amp_fl.run_folder.smoothed_time_to_target`); the report leads with this one.
    """

    target: float
    first: TimesToTarget
    smoothed: TimesToTarget
    window_s: float = SMOOTHING_WINDOW_S


@dataclass(frozen=True)
class SpeedupStats:
    """The speedup of a method over the reference at one target, by one definition of the time to it.

    ``per_seed``: each shared seed's ``T_reference / T_method`` (and the bounds of one-sided seeds).
    ``interval``: the ratio of mean times over the seeds where both reached the target, with its
    paired bootstrap interval (:func:`~amp_fl.report.maths.speedup_interval`). The seeds both
    methods ran but that the interval leaves out: ``only_method`` (only the method reached the
    target), ``only_reference`` (only the reference did), ``neither``.
    """

    per_seed: Speedup
    interval: SpeedupInterval
    only_method: tuple[int, ...] = ()
    only_reference: tuple[int, ...] = ()
    neither: tuple[int, ...] = ()

    @property
    def excluded(self) -> int:
        return len(self.only_method) + len(self.only_reference) + len(self.neither)


@dataclass(frozen=True)
class TargetSpeedup:
    """The speedup over the reference at one target by both definitions of the time to it (see :class:`TargetStats`)."""

    first: SpeedupStats
    smoothed: SpeedupStats


def speedup_stats(
    reference: TimesToTarget,
    method: TimesToTarget,
    reference_end: Mapping[int, float],
    method_end: Mapping[int, float],
    *,
    level: float = CONFIDENCE_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> SpeedupStats:
    """Speedup of ``method`` over ``reference`` (their times to one target by one definition), paired by seed.

    ``reference_end`` / ``method_end``: each seed's last simulated time (bounds for one-sided seeds,
    :func:`~amp_fl.report.maths.speedups`). ``level``, ``resamples``, ``seed``: the bootstrap's.
    """
    shared = sorted(set(reference.hits) & set(method.hits))
    ref_hit = {s: reference.hits[s] is not None for s in shared}
    met_hit = {s: method.hits[s] is not None for s in shared}
    return SpeedupStats(
        per_seed=speedups(reference.times(), method.times(), reference_end, method_end),
        interval=speedup_interval(
            reference.reached_times(), method.reached_times(), level=level, resamples=resamples, seed=seed
        ),
        only_method=tuple(s for s in shared if met_hit[s] and not ref_hit[s]),
        only_reference=tuple(s for s in shared if ref_hit[s] and not met_hit[s]),
        neither=tuple(s for s in shared if not (ref_hit[s] or met_hit[s])),
    )


@dataclass(frozen=True)
class GroupStats:
    """Everything the report says about one method."""

    group: Group
    final_accuracy: Spread
    best_accuracy: Spread
    final_sim_time_s: Spread
    last_round: Spread
    targets: dict[float, TargetStats]
    personal_accuracy: Spread  # APFL: the last measured mean personalised accuracy (n = 0 when never measured)
    speedup: dict[float, TargetSpeedup] = field(default_factory=dict)  # over the reference, per target
    accuracy_at_common_time: Spread | None = None  # at the comparison's common simulated time

    @property
    def label(self) -> str:
        return self.group.label


def target_stats(group: Group, target: float, window_s: float = SMOOTHING_WINDOW_S) -> TargetStats:
    """Each seed's first crossing of ``target`` and the first time it held it for ``window_s`` simulated seconds."""
    runs = group.runs
    first = {r.seed: time_to_target(r.rounds, r.sim_time_s, r.accuracy, target) for r in runs}
    held = {r.seed: smoothed_time_to_target(r.rounds, r.sim_time_s, r.accuracy, target, window_s) for r in runs}
    return TargetStats(target, times_over_seeds(first), times_over_seeds(held), window_s)


def group_stats(group: Group, targets: Sequence[float], window_s: float = SMOOTHING_WINDOW_S) -> GroupStats:
    check_argument(len(group.runs) > 0, "group", f"{group.label!r} has no runs")
    runs = group.runs
    return GroupStats(
        group=group,
        final_accuracy=spread([r.final_accuracy for r in runs if math.isfinite(r.final_accuracy)]),
        best_accuracy=spread([r.best_accuracy for r in runs if math.isfinite(r.best_accuracy)]),
        final_sim_time_s=spread([r.final_sim_time_s for r in runs]),
        last_round=spread([float(r.last_round) for r in runs]),
        targets={t: target_stats(group, t, window_s) for t in targets},
        personal_accuracy=spread([v for v in map(last_personal_accuracy, runs) if math.isfinite(v)]),
    )


def last_personal_accuracy(run: Run) -> float:
    """The run's last measured mean personalised accuracy (NaN when it has none)."""
    values = run.columns.get("personal_accuracy")
    found = None if values is None else last_measured(run.rounds, values)
    return math.nan if found is None else found[0]


def accuracy_at(group: Group, time_s: float) -> Spread:
    """Test accuracy of the model each seed held at simulated time ``time_s`` (mean and spread over seeds)."""
    return spread([v for v in (value_at(r.sim_time_s, r.accuracy, time_s) for r in group.runs) if math.isfinite(v)])


@dataclass(frozen=True)
class Comparison:
    """Per-method statistics, the targets and the reference method of the speedups."""

    stats: list[GroupStats]
    targets: tuple[float, ...]
    reference: str | None
    # The simulated time every run reached (common_time_s): methods compared at equal time.
    common_time_s: float = math.nan
    window_s: float = SMOOTHING_WINDOW_S  # of the smoothed time to a target
    level: float = CONFIDENCE_LEVEL  # of the speedups' bootstrap intervals
    resamples: int = BOOTSTRAP_RESAMPLES

    @property
    def ends_differ(self) -> bool:
        """Whether the runs ended at clearly different simulated times (then equal rounds != equal time)."""
        ends = [r.final_sim_time_s for s in self.stats for r in s.group.runs]
        return bool(ends) and max(ends) > 1.01 * min(ends)

    def by_label(self, label: str) -> GroupStats:
        for s in self.stats:
            if s.label == label:
                return s
        raise KeyError(label)


def common_time_s(runs: Sequence[Run]) -> float:
    """The simulated time every run reached: the earliest end of the runs that ran to their end (a run
    stopped early because its model diverged would otherwise set the time for all); of all if none did."""
    ended = [r.final_sim_time_s for r in runs if r.status == COMPLETED]
    return min(ended or [r.final_sim_time_s for r in runs])


def compare(
    groups: Sequence[Group],
    targets: Sequence[float],
    reference: str | None = None,
    *,
    window_s: float = SMOOTHING_WINDOW_S,
    level: float = CONFIDENCE_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Statistics of every group at every target, and speedups over ``reference`` (a group label; default: the first).

    Speedup of method M over the reference at a target: ``T_reference / T_M`` on the simulated clock,
    per seed the two share (:func:`~amp_fl.report.maths.speedups`), and as the ratio of mean times
    over the seeds where both reached it with a paired bootstrap interval (``level``, ``resamples``,
    ``seed``: :func:`~amp_fl.report.maths.speedup_interval`); above 1, M is faster. Both for the
    first crossing and for the time the target was held for ``window_s`` simulated seconds.
    """
    check_argument(len(groups) > 0, "groups", "nothing to compare")
    for t in targets:
        check_argument(0.0 < t <= 1.0, "targets", f"an accuracy target must be in (0, 1], got {t}")
    labels = [g.label for g in groups]
    check_argument(len(set(labels)) == len(labels), "groups", f"duplicate labels in {labels}")
    if reference is None:
        reference = labels[0]
    check_argument(reference in labels, "reference", f"{reference!r} is not one of {labels}")
    ordered = tuple(sorted(set(float(t) for t in targets)))
    stats = [group_stats(g, ordered, window_s) for g in groups]
    common = common_time_s([r for s in stats for r in s.group.runs])
    for i, s in enumerate(stats):
        stats[i] = replace(s, accuracy_at_common_time=accuracy_at(s.group, common))
    ref = next(s for s in stats if s.label == reference)
    ref_end = {r.seed: r.final_sim_time_s for r in ref.group.runs}
    for s in stats:
        end = {r.seed: r.final_sim_time_s for r in s.group.runs}

        def over_reference(r: TimesToTarget, m: TimesToTarget, end: dict[int, float] = end) -> SpeedupStats:
            return speedup_stats(r, m, ref_end, end, level=level, resamples=resamples, seed=seed)

        for t in ordered:
            r, m = ref.targets[t], s.targets[t]
            s.speedup[t] = TargetSpeedup(over_reference(r.first, m.first), over_reference(r.smoothed, m.smoothed))
    return Comparison(stats, ordered, reference, common, window_s, level, resamples)


def _num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _spread_json(x: Spread) -> dict[str, float | int | None]:
    return {"n": x.n, "mean": _num(x.mean), "std": _num(x.std), "min": _num(x.min), "max": _num(x.max)}


def _times_json(tt: TimesToTarget) -> dict[str, object]:
    return {
        "reached": tt.reached,
        "seeds": tt.seeds,
        "rounds": _spread_json(tt.rounds),
        "sim_time_s": _spread_json(tt.sim_time_s),
        "per_seed": {
            str(seed): (None if h is None else {"round": h.round, "sim_time_s": h.sim_time_s})
            for seed, h in tt.hits.items()
        },
    }


def _speedup_json(sp: SpeedupStats) -> dict[str, object]:
    iv = sp.interval
    return {
        "stats": _spread_json(sp.per_seed.stats),
        "exact": {str(k): v for k, v in sp.per_seed.exact.items()},
        "at_least": {str(k): v for k, v in sp.per_seed.at_least.items()},
        "at_most": {str(k): v for k, v in sp.per_seed.at_most.items()},
        "ratio_of_means": {
            "estimate": _num(iv.estimate),
            "low": _num(iv.low),
            "high": _num(iv.high),
            "n": iv.n,
            "level": iv.level,
            "resamples": iv.resamples,
        },
        "excluded_seeds": {
            "only_method_reached": list(sp.only_method),
            "only_reference_reached": list(sp.only_reference),
            "neither_reached": list(sp.neither),
        },
    }


def to_jsonable(comparison: Comparison) -> dict[str, object]:
    """The comparison as plain JSON values (``comparison.json``).

    Per target, the top-level times and ``speedup_over_reference`` are the first crossing (as
    before); ``smoothed`` holds the same for the time the target was held for ``window_s``.
    """
    methods = []
    for s in comparison.stats:
        targets = {}
        for t, ts in s.targets.items():
            sp = s.speedup[t]
            smoothed = {"window_s": ts.window_s, **_times_json(ts.smoothed)}
            smoothed["speedup_over_reference"] = _speedup_json(sp.smoothed)
            targets[str(t)] = {
                **_times_json(ts.first),
                "speedup_over_reference": _speedup_json(sp.first),
                "smoothed": smoothed,
            }
        methods.append(
            {
                "label": s.label,
                "datasets_used": s.group.datasets,
                "seeds": s.group.seeds,
                "runs": [str(r.path) for r in s.group.runs],
                "status": {str(r.seed): r.status for r in s.group.runs},
                "final_accuracy": _spread_json(s.final_accuracy),
                "accuracy_at_common_time": (
                    _spread_json(s.accuracy_at_common_time) if s.accuracy_at_common_time else None
                ),
                "personal_accuracy": _spread_json(s.personal_accuracy),
                "best_accuracy": _spread_json(s.best_accuracy),
                "final_sim_time_s": _spread_json(s.final_sim_time_s),
                "last_round": _spread_json(s.last_round),
                "targets": targets,
            }
        )
    return {
        "reference": comparison.reference,
        "targets": list(comparison.targets),
        "common_time_s": comparison.common_time_s,
        "smoothing_window_s": comparison.window_s,
        "interval": {"level": comparison.level, "resamples": comparison.resamples},
        "methods": methods,
    }
