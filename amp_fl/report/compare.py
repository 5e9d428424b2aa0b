"""Statistics of a comparison: per method, over its seeds (uses the pure maths of :mod:`.maths`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from amp_fl.errors import check_argument
from amp_fl.report.maths import Speedup, Spread, speedups, spread, value_at
from amp_fl.report.runs import Group, Run
from amp_fl.run_folder import Hit, last_measured, time_to_target


@dataclass(frozen=True)
class TargetStats:
    """Time to one target accuracy over a group's seeds (means over the seeds that reached it)."""

    target: float
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
    speedup: dict[float, Speedup] = field(default_factory=dict)  # over the reference, per target
    accuracy_at_common_time: Spread | None = None  # at the comparison's common simulated time

    @property
    def label(self) -> str:
        return self.group.label


def target_stats(group: Group, target: float) -> TargetStats:
    hits = {run.seed: time_to_target(run.rounds, run.sim_time_s, run.accuracy, target) for run in group.runs}
    reached = [h for h in hits.values() if h is not None]
    return TargetStats(
        target=target,
        hits=hits,
        rounds=spread([h.round for h in reached]),
        sim_time_s=spread([h.sim_time_s for h in reached]),
    )


def group_stats(group: Group, targets: Sequence[float]) -> GroupStats:
    check_argument(len(group.runs) > 0, "group", f"{group.label!r} has no runs")
    runs = group.runs
    return GroupStats(
        group=group,
        final_accuracy=spread([r.final_accuracy for r in runs if math.isfinite(r.final_accuracy)]),
        best_accuracy=spread([r.best_accuracy for r in runs if math.isfinite(r.best_accuracy)]),
        final_sim_time_s=spread([r.final_sim_time_s for r in runs]),
        last_round=spread([float(r.last_round) for r in runs]),
        targets={t: target_stats(group, t) for t in targets},
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
    # The simulated time every run reached (the shortest run's end): methods compared at equal time.
    common_time_s: float = math.nan

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


def compare(groups: Sequence[Group], targets: Sequence[float], reference: str | None = None) -> Comparison:
    """Statistics of every group at every target, and speedups over ``reference`` (a group label; default: the first).

    Speedup of method M over the reference at a target: ``T_reference / T_M`` on the simulated clock,
    per seed the two share (:func:`~amp_fl.report.maths.speedups`); above 1, M is faster.
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
    stats = [group_stats(g, ordered) for g in groups]
    ref = next(s for s in stats if s.label == reference)
    common = min(r.final_sim_time_s for s in stats for r in s.group.runs)
    for i, s in enumerate(stats):
        stats[i] = replace(s, accuracy_at_common_time=accuracy_at(s.group, common))
    ref = next(s for s in stats if s.label == reference)
    ref_end = {r.seed: r.final_sim_time_s for r in ref.group.runs}
    for s in stats:
        end = {r.seed: r.final_sim_time_s for r in s.group.runs}
        for t in ordered:
            s.speedup[t] = speedups(ref.targets[t].times(), s.targets[t].times(), ref_end, end)
    return Comparison(stats, ordered, reference, common)


def to_jsonable(comparison: Comparison) -> dict[str, object]:
    """The comparison as plain JSON values (``comparison.json``)."""

    def sp(x: Spread) -> dict[str, float | int | None]:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {"n": x.n, "mean": num(x.mean), "std": num(x.std), "min": num(x.min), "max": num(x.max)}

    methods = []
    for s in comparison.stats:
        methods.append(
            {
                "label": s.label,
                "datasets_used": s.group.datasets,
                "seeds": s.group.seeds,
                "runs": [str(r.path) for r in s.group.runs],
                "status": {str(r.seed): r.status for r in s.group.runs},
                "final_accuracy": sp(s.final_accuracy),
                "accuracy_at_common_time": sp(s.accuracy_at_common_time) if s.accuracy_at_common_time else None,
                "personal_accuracy": sp(s.personal_accuracy),
                "best_accuracy": sp(s.best_accuracy),
                "final_sim_time_s": sp(s.final_sim_time_s),
                "last_round": sp(s.last_round),
                "targets": {
                    str(t): {
                        "reached": ts.reached,
                        "seeds": ts.seeds,
                        "rounds": sp(ts.rounds),
                        "sim_time_s": sp(ts.sim_time_s),
                        "per_seed": {
                            str(seed): (None if h is None else {"round": h.round, "sim_time_s": h.sim_time_s})
                            for seed, h in ts.hits.items()
                        },
                        "speedup_over_reference": {
                            "stats": sp(s.speedup[t].stats),
                            "exact": {str(k): v for k, v in s.speedup[t].exact.items()},
                            "at_least": {str(k): v for k, v in s.speedup[t].at_least.items()},
                            "at_most": {str(k): v for k, v in s.speedup[t].at_most.items()},
                        },
                    }
                    for t, ts in s.targets.items()
                },
            }
        )
    return {
        "reference": comparison.reference,
        "targets": list(comparison.targets),
        "common_time_s": comparison.common_time_s,
        "methods": methods,
    }
