"""Issue 23, item 3: the IMP variants (lottery-ticket IMP, gradual, one-shot) by hand.

Schedules are worked out in the comments; the strategy rounds use the scripted masked client of
:mod:`test_sparse_fedavg` (device k adds the constant c_k to every surviving entry, so the global
update is the mean 4 and every weight can be written down).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_sparse_fedavg import VALUES, _round, _strategy, scripted_masked_client

from amp_fl.config import load_config
from amp_fl.experiments.campaign import compose_values
from amp_fl.experiments.ota_imp import SWEEPS, expand
from amp_fl.launch.inprocess import InProcessGrid
from amp_fl.models import build_model
from amp_fl.pruning.magnitude import PruningPlan, rewind_round_of
from amp_fl.pruning.maps import region_map_for


def test_lottery_imp_schedule_of_the_residual_preset_by_hand():
    # N = 1000, 50 % of what remains every 10 rounds from round 10 until 95 % (950 entries):
    # 500 (left 500), 250 (left 250), 125 (left 125), round(62.5) = 62 (ties to even), then the last
    # step removes exactly the 13 still needed: sparsities 0.5, 0.75, 0.875, 0.937, 0.95.
    plan = PruningPlan("imp", 0.95, 1000, rate=0.5, interval=10, first_round=10)
    steps = plan.steps()
    assert [s.round for s in steps] == [10, 20, 30, 40, 50]
    assert [s.count for s in steps] == [500, 250, 125, 62, 13]
    assert [s.sparsity for s in steps] == [0.5, 0.75, 0.875, 0.937, 0.95]
    assert PruningPlan("gradual", 0.95, 1000, rate=0.5, interval=10, first_round=10).steps() == steps
    # One-shot: the trained model after round 10, all 950 at once; 1 - 0.95 of the entries remain.
    (one,) = PruningPlan("one_shot", 0.95, 1000, rate=0.5, interval=10, first_round=10).steps()
    assert (one.round, one.count, one.sparsity) == (10, 950, 0.95)


def test_only_imp_rewinds_by_default():
    assert rewind_round_of("imp", None) == 0  # the original lottery ticket: the initial model
    assert rewind_round_of("imp", 1) == 1  # late rewinding
    assert rewind_round_of("gradual", None) is None
    assert rewind_round_of("gradual", 1) is None  # read by imp only
    assert rewind_round_of("one_shot", 1) is None


def test_residual_preset_reaches_every_target_before_the_last_round():
    regions = region_map_for(build_model("resnet8", num_classes=10), (1, 28, 28))
    prunable = sum(int(np.prod(r.shape)) for r in regions.arrays if r.role == "weight")
    for spec in expand(SWEEPS["residual"]):
        cfg = load_config(compose_values(list(spec.overrides)))
        s = cfg.sparse_fedavg
        assert cfg.model.name == "resnet8" and cfg.aggregation == "over_the_air"
        last = PruningPlan(s.method, s.target, prunable, s.rate, s.interval, s.first_round).last_round
        assert last is None or last + 10 <= cfg.num_rounds  # IMP's last step leaves a full 10-round retraining
        assert s.rewind_to == (1 if s.method == "imp" else None)


def test_the_committed_quick_studies_keep_the_gradual_schedule():
    for name in ("quick", "full"):
        methods = {o for spec in expand(SWEEPS[name]) for o in spec.overrides if o.startswith("sparse_fedavg.method=")}
        assert methods == {"sparse_fedavg.method=gradual", "sparse_fedavg.method=one_shot"}


def _survivors_equal(weights, reference, masks):
    for w, r, m in zip(weights, reference, masks, strict=True):
        np.testing.assert_array_equal(w, r if m is None else np.where(m, r, 0.0))


@pytest.mark.parametrize("method", ["imp", "gradual", "one_shot"])
def test_four_rounds_of_each_variant_by_hand(cnn, method):
    # Steps after rounds 2 and 4 (50 % of what remains, to 75 %); one-shot: 75 % after round 2.
    # Every round adds the mean update 4 to the survivors. IMP rewinds to the model after round 1
    # (w0 + 4) at each step; gradual and one-shot keep the trained survivors (w0 + 16 after round 4).
    _, w0 = cnn
    rewind = 1 if method == "imp" else None
    strategy, _ = _strategy(cnn, method=method, target=0.75, rate=0.5, interval=2, first_round=2, rewind_round=rewind)
    grid = InProcessGrid(scripted_masked_client(VALUES), 4)
    pruned = []
    for server_round in range(1, 5):
        _round(strategy, grid, server_round)
        pruned.append(strategy.pruner.num_pruned)
    n = strategy.pruner.plan.num_prunable  # 36,598 conv/linear weights: half is 18,299, 3/4 round(27,448.5)
    half, three_quarters = round(0.5 * n), round(0.75 * n)
    assert pruned == ([0, half, half, three_quarters] if method != "one_shot" else [0] + [three_quarters] * 3)
    assert [s.round for s in strategy.pruner.history] == ([2, 4] if method != "one_shot" else [2])
    # The rewind restores exactly round 1's weights on the survivors (the global update of round 1 is 4).
    after_round_1 = [(w.astype(np.float64) + 4.0).astype(np.float32) for w in w0]
    if method == "imp":
        _survivors_equal(strategy.weights, after_round_1, strategy.pruner.masks)
    else:
        trained = [(w.astype(np.float64) + 16.0).astype(np.float32) for w in w0]
        masks = strategy.pruner.masks
        expected = [t if m is None else np.where(m, t, 0.0) for t, m in zip(trained, masks, strict=True)]
        for w, e in zip(strategy.weights, expected, strict=True):
            np.testing.assert_allclose(w, e, atol=1e-5)
