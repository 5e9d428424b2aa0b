"""The round-breakdown benchmarks still run end to end (a renamed hook broke `bench server` once)."""

from __future__ import annotations

import csv
import json

import pytest

from amp_fl.bench import server


def test_server_bench_splits_rounds_into_client_evaluation_and_server(capsys: pytest.CaptureFixture[str]) -> None:
    server.main(
        [
            "--rounds",
            "3",
            "--warmup",
            "1",
            "--dataset",
            "mnist5k",
            "--set",
            "wireless.num_devices=12",
            "--naive-repeats",
            "1",
        ]
    )
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines() if text.startswith("{")]
    assert line["bench"] == "server" and line["rounds_measured"] == 2
    assert line["client_s_mean"] > 0 and line["server_s_mean"] > 0
    parts = ("configure_train", "aggregate_train", "checkpoint", "other")
    assert sum(line[f"server_{p}_s_mean"] for p in parts) == pytest.approx(line["server_s_mean"])
    assert 0 < line["server_share"] < 1
    assert line["naive_s_median"] > 0
    assert line["round_over_naive"] == pytest.approx(
        (line["round_s_mean"] - line["evaluation_s_mean"]) / line["naive_s_median"]
    )


def test_reproduce_estimate_groups_runs_by_what_a_round_computes_and_splits_a_probe_into_rounds_and_fixed_cost(
    tmp_path,
) -> None:
    from amp_fl.bench import reproduce_estimate as est
    from amp_fl.experiments.campaign import Job, compose_values, execute

    base = compose_values(["experiment=quick", "dataset=mnist5k"])
    other_seed = {**base, "seed": 7, "num_rounds": 99, "dataset": {**base["dataset"], "shards_per_device": 3}}
    other_rbs = {**base, "wireless": {**base["wireless"], "num_rbs": 2}}
    assert est.kind_of(base) == est.kind_of(other_seed)  # seed, rounds, shards: the same cost per round
    assert est.kind_of(base) != est.kind_of(other_rbs)  # fewer RBs: fewer devices trained per round
    assert base["dataset"]["shards_per_device"] != 3  # kind_of copied, never edited, its input

    class Spec:
        run_id = "probe"
        overrides: tuple[str, ...] = ()

    (probe,) = est.probe_jobs([Job(Spec(), base, tmp_path / "unused")], 2, tmp_path).values()
    assert probe.values["num_rounds"] == 2 and probe.run_dir == tmp_path / "kind0"
    assert execute([probe], "inprocess", 1, log=lambda line: None) == []
    per_round, fixed, sim_per_round, personal_eval, central_eval = est.probe_costs(probe)
    wall = est.read_timing(probe.run_dir)["wall_s"]
    assert per_round > 0 and fixed > 0 and fixed + 2 * per_round == pytest.approx(wall)
    assert personal_eval == 0.0  # this kind never scores personalised models
    assert central_eval == 0.0  # every round is evaluated: its cost is the round's
    sim = est.read_columns(probe.run_dir / "metrics.csv")["sim_time_s"]
    assert sim_per_round == pytest.approx((sim[-1] - sim[0]) / 2) and sim_per_round > 0
    # A probe on an evaluation grid: its plain rounds priced apart from its evaluated ones.
    graded_dir = tmp_path / "graded"
    graded_dir.mkdir()
    rows = list(csv.DictReader((probe.run_dir / "metrics.csv").read_text().splitlines()))
    for row, wall_s in zip(rows, (10.0, 11.0, 13.0), strict=True):
        row["wall_time_s"] = str(wall_s)
    rows[1]["accuracy"] = rows[1]["loss"] = "nan"  # round 1 not evaluated; round 2 (the last) evaluated
    with (graded_dir / "metrics.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (graded_dir / "campaign_timing.json").write_text(json.dumps({"wall_s": 20.0}))
    graded_costs = est.probe_costs(Job(Spec(), base, graded_dir))
    assert graded_costs.per_round_s == 1.0 and graded_costs.central_eval_s == 1.0 and graded_costs.fixed_s == 17.0
    # A run stops at its simulated-time horizon or its round cap, whichever comes first.
    assert est.rounds_to_run({"num_rounds": 100, "sim_time_limit_s": None}, 0.1) == 100
    assert est.rounds_to_run({"num_rounds": 100, "sim_time_limit_s": 3.0}, 0.25) == 12
    assert est.rounds_to_run({"num_rounds": 100, "sim_time_limit_s": 3.1}, 0.25) == 13  # the round past it runs
    assert est.rounds_to_run({"num_rounds": 10, "sim_time_limit_s": 3.0}, 0.25) == 10
    # APFL's personalised evaluations: every interval rounds and at the cap, not at a horizon's stop.
    apfl = {"num_rounds": 100, "sim_time_limit_s": 3.0, "strategy": {"personal_eval_interval": 5}}
    assert est.personal_evaluations(apfl, 12) == 2  # rounds 5 and 10
    assert est.personal_evaluations({**apfl, "num_rounds": 12}, 12) == 3  # and the last round, the cap
    assert est.personal_evaluations(base, 12) == 0
    costs = est.ProbeCosts(per_round_s=0.5, fixed_s=2.0, sim_per_round_s=0.25, personal_eval_s=3.0)
    assert est.run_seconds(apfl, costs) == (12, 2.0 + 12 * 0.5 + 2 * 3.0)
    # Central evaluations on a grid of the simulated clock: round 0 is the probe's row 0, then the
    # first round at or past each multiple of every_sim_s, the personalised rounds and the last.
    grid = {"num_rounds": 100, "sim_time_limit_s": 3.0, "evaluation": {"every_sim_s": 1.0}}
    assert est.central_evaluations(grid, 12, 0.25) == 3  # rounds 4, 8, 12 (at 1, 2, 3 s)
    assert est.central_evaluations(grid, 13, 0.25) == 4  # and the last, round 13
    apfl_grid = {**grid, "strategy": {"personal_eval_interval": 5}}
    assert est.central_evaluations(apfl_grid, 12, 0.25) == 5  # 4, 5, 8, 10, 12
    assert est.central_evaluations({"num_rounds": 100}, 12, 0.25) == 12  # every_sim_s 0: every round
    assert est.central_evaluations({"num_rounds": 100, "evaluation": {"every_rounds": 5}}, 12, 0.25) == 3  # 5, 10, 12
    graded = est.ProbeCosts(per_round_s=0.5, fixed_s=2.0, sim_per_round_s=0.25, personal_eval_s=0.0, central_eval_s=0.2)
    assert est.run_seconds(grid, graded) == (12, pytest.approx(2.0 + 12 * 0.5 + 3 * 0.2))
    plan = [
        Job(Spec(), base, tmp_path / "plan" / figure / run)
        for figure, run in [("fig2", "a"), ("fig8", "b"), ("fig2", "c")]
    ]
    assert est.seconds_by_figure(plan, [1.0, 2.0, 4.0], tmp_path / "plan") == {"fig2": 5.0, "fig8": 2.0}


def test_startup_round_time_ratio_takes_the_in_process_reference_before_and_after(tmp_path, monkeypatch) -> None:
    """Bench startup (c): each Flower median over the mean of the in-process medians before and after."""
    from amp_fl.bench import startup

    # (client_cpus of a 2-core machine, AMP_FL_ENGINE_WAKEUP) -> round times
    flower = {(2, "1"): [0.8] * 4, (1, "1"): [0.6] * 4, (2, "0"): [0.9] * 4, (1, "0"): [0.7] * 4}
    references = iter([[0.4] * 4, [0.6] * 4])  # before, after: mean 0.5
    monkeypatch.setattr(startup, "run_in_process", lambda cfg, run_dir: run_dir)
    monkeypatch.setattr(startup, "round_times", lambda run_dir, warmup: next(references))
    monkeypatch.setattr(
        startup,
        "flower_round_times",
        lambda cfg, run_dir, warmup, env: (flower[cfg.simulation.client_cpus, env[startup.ENABLE_ENV]], None, 1.0),
    )
    emitted: list[dict] = []
    monkeypatch.setattr(startup, "emit", emitted.append)
    cfg = startup.bench_config(2, 4, 2, 0)
    ratios = startup.round_time_ratios(cfg, tmp_path, 0, 2, {"bench": "startup"}, (True, False))
    assert ratios == {
        (1, True): pytest.approx(1.6),
        (2, True): pytest.approx(1.2),
        (1, False): pytest.approx(1.8),
        (2, False): pytest.approx(1.4),
    }
    assert emitted[-1]["median_round_s_runs"] == [0.4, 0.6]
