"""Issue 10: the sparsity presets compose, validate, and finish pruning before their last round; the sweep's grid."""

from __future__ import annotations

import pytest

from amp_fl.config import load_config
from amp_fl.experiments.campaign import compose_values
from amp_fl.experiments.ota_imp import SWEEPS, expand
from amp_fl.pruning.magnitude import PruningPlan

CNN_PRUNABLE = 150 + 2_400 + 32_768 + 1_280  # conv / linear weights of the paper's CNN


@pytest.mark.parametrize("preset", ["ota_imp_quick", "ota_imp"])
@pytest.mark.parametrize("method", ["imp", "one_shot"])
def test_presets_validate_and_reach_every_target_before_the_end(preset, method):
    for target in SWEEPS["quick"].targets:
        cfg = load_config(
            compose_values([f"experiment={preset}", f"sparse_fedavg.method={method}", f"sparse_fedavg.target={target}"])
        )
        assert (cfg.algorithm, cfg.aggregation, cfg.model.name) == ("sparse_fedavg", "over_the_air", "cnn")
        s = cfg.sparse_fedavg
        last = PruningPlan(s.method, s.target, CNN_PRUNABLE, s.rate, s.interval, s.first_round).last_round
        assert last is None or last < cfg.num_rounds - 5  # at least 5 rounds of training at the final sparsity


def test_amp_fl_over_the_air_method_composes():
    cfg = load_config(compose_values(["experiment=ota_imp_quick", "method=amp_fl_ota"]))  # the method wins
    assert (cfg.algorithm, cfg.aggregation, cfg.strategy.compensation) == ("amp_fl", "over_the_air", "none")


def test_quick_grid():
    specs = expand(SWEEPS["quick"])
    sparse = [s for s in specs if s.kind == "sparse"]
    # 2 participation levels x (1 dense + 4 targets x 2 methods), one seed; then the AMP-FL study.
    assert len(sparse) == 2 * (1 + 4 * 2) and len(specs) == len(sparse) + 5
    assert len({s.run_id for s in specs}) == len(specs)
    assert {(s.participation, s.method, s.target) for s in sparse if s.target == 0.9} == {
        ("full", "imp", 0.9),
        ("full", "one_shot", 0.9),
        ("partial", "imp", 0.9),
        ("partial", "one_shot", 0.9),
    }
