"""Issue 9: the tuning driver chooses on the validation split, writes its report and resumes."""

from __future__ import annotations

import csv
import json
import math

import pytest

from amp_fl.experiments.selection import PointResult, SeedResult, read_validation
from amp_fl.experiments.tune import grid_points, main, parse_grid, tune


def test_grid_parsing_aliases_and_product_order():
    grid = parse_grid(["learning_rate=0.02,0.05", "strategy.proximal_mu=0,0.1"])
    assert grid == {"train.learning_rate": ["0.02", "0.05"], "strategy.proximal_mu": ["0", "0.1"]}
    points = grid_points(grid)
    assert points[:2] == [
        {"train.learning_rate": "0.02", "strategy.proximal_mu": "0"},
        {"train.learning_rate": "0.02", "strategy.proximal_mu": "0.1"},
    ]
    assert len(points) == 4 and grid_points({}) == [{}]
    for bad in (["learning_rate"], ["learning_rate="], ["a=1", "a=2"]):
        with pytest.raises(ValueError, match="grid"):
            parse_grid(bad)


def _point(lr, times, finals):
    return PointResult(
        {"train.learning_rate": lr},
        [SeedResult(s, "", t, f, f) for s, (t, f) in enumerate(zip(times, finals, strict=True))],
    )


def test_ranking_reaching_on_every_seed_comes_first_then_time_then_final():
    fast_but_missed = _point("0.1", [1.0, None], [0.9, 0.9])
    slow = _point("0.02", [5.0, 7.0], [0.8, 0.8])
    faster = _point("0.05", [4.0, 6.0], [0.7, 0.7])
    ranked = sorted([fast_but_missed, slow, faster], key=lambda p: p.rank_key("val_time_to_target"))
    assert [p.overrides["train.learning_rate"] for p in ranked] == ["0.05", "0.02", "0.1"]
    assert faster.mean_time == 5.0 and fast_but_missed.missed == 1
    by_final = sorted([fast_but_missed, slow, faster], key=lambda p: p.rank_key("val_final"))
    assert by_final[0] is fast_but_missed


def test_read_validation_uses_the_validation_column_only(tmp_path):
    with (tmp_path / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "sim_time_s", "accuracy", "val_accuracy"])
        for k, (acc, val) in enumerate([(0.1, 0.1), (0.9, 0.5), (0.9, 0.75), (0.2, 0.6)]):
            w.writerow([k, 0.25 * k, acc, val])
    reached, final, best = read_validation(tmp_path, 0.7)
    assert (reached, final, best) == (0.5, 0.6, 0.75)  # test accuracy 0.9 at 0.25 s is ignored
    assert read_validation(tmp_path, 0.8)[0] is None


MICRO = ["experiment=quick", "wireless.num_devices=3", "wireless.num_rbs=2"]


def test_micro_tuning_runs_chooses_on_validation_and_resumes(tmp_path, capsys):
    kwargs = dict(
        seeds=(0,),
        rounds=2,
        metric="val_final",
        target=0.5,
        sets=MICRO,
        runs_dir=tmp_path / "runs",
        reports_dir=tmp_path / "reports",
        command="cmd",
    )
    lines: list[str] = []
    payload = tune("amp_fl", {"train.learning_rate": ["0.02", "0.2"]}, log=lines.append, **kwargs)
    assert lines[0] == "[tune] amp_fl: 2 runs, 0 complete, 2 to run"
    report = json.loads((tmp_path / "reports" / "amp_fl" / "tuning.json").read_text())
    assert report == payload and len(report["points"]) == 2
    assert "dataset.validation_fraction=0.1" in report["base_overrides"]
    # Recompute every point's score from its metrics.csv's val_accuracy column.
    finals = {}
    for point in report["points"]:
        (seed,) = point["seeds"]
        _, final, _ = read_validation(tmp_path / "runs" / "amp_fl" / seed["run_dir"].split("/amp_fl/")[1], 0.5)
        assert seed["val_final"] == pytest.approx(final)
        finals[point["overrides"]["train.learning_rate"]] = final
    best = max(finals, key=lambda k: finals[k])
    assert report["chosen"] == {"train.learning_rate": best}
    assert report["chosen_overrides"] == [f"train.learning_rate={best}"]
    summary = json.loads((tmp_path / "runs" / "amp_fl" / "learning_rate_0.02" / "seed0" / "summary.json").read_text())
    assert summary["validation_samples"] == 400 and not math.isnan(summary["final_val_accuracy"])
    md = (tmp_path / "reports" / "amp_fl" / "tuning.md").read_text()
    assert f"**Chosen:** `train.learning_rate={best}`" in md and "the test set plays no part" in md

    lines.clear()
    tune("amp_fl", {"train.learning_rate": ["0.02", "0.2"]}, log=lines.append, **kwargs)
    assert lines[0] == "[tune] amp_fl: 2 runs, 2 complete, 0 to run"

    # The CLI prints the chosen overrides (everything complete: nothing runs).
    argv = ["amp_fl", "--grid", "learning_rate=0.02,0.2", "--rounds", "2", "--metric", "val_final", "--target", "0.5"]
    argv += [a for s in MICRO for a in ("--set", s)]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports")]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"chosen: train.learning_rate={best}"
    # A later stage fixes the choices with --set (make speedup's stage 2).
    assert main(["--chosen-as-sets", str(tmp_path / "reports" / "amp_fl")]) == 0
    assert capsys.readouterr().out.strip() == f"--set=train.learning_rate={best}"
    assert main(["--chosen-as-sets", str(tmp_path / "nowhere")]) == 2
    assert "no finished tuning" in capsys.readouterr().err


def test_tuning_refuses_to_run_without_a_validation_split(tmp_path):
    with pytest.raises(ValueError, match="dataset.validation_fraction"):
        tune(
            "amp_fl",
            {},
            rounds=1,
            sets=[*MICRO, "dataset.validation_fraction=0"],
            runs_dir=tmp_path / "runs",
            reports_dir=tmp_path / "reports",
        )


def test_reproduction_picks_up_each_methods_tuned_values(tmp_path):
    from amp_fl.experiments.figures import DATASETS, FIGURES, SCALES, expand
    from amp_fl.experiments.reproduce import with_tuned

    (tmp_path / "fedprox").mkdir()
    chosen = ["train.learning_rate=0.1", "strategy.proximal_mu=0.001"]
    (tmp_path / "fedprox" / "tuning.json").write_text(json.dumps({"chosen_overrides": chosen}))
    extra = ("num_rounds=7",)
    specs = expand(FIGURES["fig8"], SCALES["paper"], DATASETS["fashion_mnist"], extra, base_rounds=600)
    tuned = with_tuned(specs, tmp_path, extra)
    assert [s.run_id for s in tuned] == [s.run_id for s in specs]
    for before, after in zip(specs, tuned, strict=True):
        if "method=fedprox" in before.overrides:
            # the tuned values go after the preset's and the seed, before the user's own overrides
            assert after.overrides == (*before.overrides[:-1], *chosen, "num_rounds=7")
        else:
            assert after == before  # no tuning.json for the other methods
    assert any("method=fedprox" in s.overrides for s in specs)
    assert with_tuned(specs, None) == specs
    # APFL's global model is Synchronous FL's: without its own tuning.json it takes Synchronous FL's.
    (tmp_path / "synchronous").mkdir()
    sync_chosen = ["train.learning_rate=0.2", "strategy.server_optimizer=momentum"]
    (tmp_path / "synchronous" / "tuning.json").write_text(json.dumps({"chosen_overrides": sync_chosen}))
    for before, after in zip(specs, with_tuned(specs, tmp_path, extra), strict=True):
        if "method=apfl" in before.overrides or "method=synchronous" in before.overrides:
            assert after.overrides == (*before.overrides[:-1], *sync_chosen, "num_rounds=7")
    (tmp_path / "apfl").mkdir()
    (tmp_path / "apfl" / "tuning.json").write_text(json.dumps({"chosen_overrides": ["train.learning_rate=0.05"]}))
    apfl = next(s for s in with_tuned(specs, tmp_path, extra) if "method=apfl" in s.overrides)
    assert "train.learning_rate=0.05" in apfl.overrides and "train.learning_rate=0.2" not in apfl.overrides
    # Tuning in stages: a second directory's choices follow the first's (the later wins on a shared key).
    stage2 = tmp_path / "stage2"
    (stage2 / "synchronous").mkdir(parents=True)
    (stage2 / "synchronous" / "tuning.json").write_text(json.dumps({"chosen_overrides": ["scheduling.deadline_s=0.3"]}))
    staged = with_tuned(specs, [tmp_path, stage2], extra)
    sync = next(s for s in staged if "method=synchronous" in s.overrides)
    assert sync.overrides[-4:] == (*sync_chosen, "scheduling.deadline_s=0.3", "num_rounds=7")
    fedprox = next(s for s in staged if "method=fedprox" in s.overrides)
    assert fedprox.overrides[-3:] == (*chosen, "num_rounds=7")  # no stage-2 file: stage 1 only
