"""AoI table: Eq. (9) on a hand-built case, views, and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from amp_fl.scheduling import AoITable


def test_update_follows_eq_9_by_hand() -> None:
    # 3 devices, layers of 2 and 3 regions. Start (tau_{t-1}):
    start = np.array(
        [
            [4, 0, 1, 2, 3],
            [0, 0, 0, 0, 0],
            [7, 7, 7, 7, 7],
        ]
    )
    table = AoITable.from_array(start, [2, 3])
    # Device 0 scheduled, kept region 0 of layer 0 and regions 1, 2 of layer 1 (columns 0, 3, 4).
    # Device 2 scheduled, kept nothing in layer 0 and region 0 of layer 1 (column 2).
    # Device 1 unscheduled: every age + 1.
    table.update([0, 2], [(np.array([0]), np.array([1, 2])), (np.array([], dtype=int), np.array([0]))])
    expected = np.array(
        [
            [0, 1, 2, 0, 0],
            [1, 1, 1, 1, 1],
            [8, 8, 0, 8, 8],
        ]
    )
    np.testing.assert_array_equal(table.ages, expected)
    table.update([], [])
    np.testing.assert_array_equal(table.ages, expected + 1)


def test_layer_views_and_mean() -> None:
    table = AoITable.from_array(np.arange(10).reshape(2, 5), [2, 3])
    np.testing.assert_array_equal(table.layer(0), [[0, 1], [5, 6]])
    np.testing.assert_array_equal(table.layer(1), [[2, 3, 4], [7, 8, 9]])
    assert [v.shape for v in table.layers()] == [(2, 2), (2, 3)]
    assert table.offsets == (0, 2, 5) and table.num_regions == 5 and table.num_layers == 2
    assert table.mean_age() == pytest.approx(4.5)
    with pytest.raises(ValueError):
        table.layer(0)[0, 0] = 3  # read-only: change ages through update()
    copy = AoITable.from_array(table.ages, table.layer_sizes)  # a copy: its updates leave the original alone
    copy.update([0], [(np.array([0, 1]), np.array([0, 1, 2]))])
    assert table.ages[0, 0] == 0 and copy.ages[0, 0] == 0 and copy.ages[1, 0] == 6 and table.ages[1, 0] == 5


def test_initial_age_and_shape() -> None:
    table = AoITable(4, [6, 16, 128], initial_age=3)
    assert table.ages.shape == (4, 150) and np.all(table.ages == 3)


@pytest.mark.parametrize(
    ("devices", "kept"),
    [
        ([0, 0], [(np.array([0]), np.array([0])), (np.array([0]), np.array([0]))]),  # duplicate device
        ([5], [(np.array([0]), np.array([0]))]),  # device out of range
        ([0], [(np.array([2]), np.array([0]))]),  # region out of layer 0
        ([0], [(np.array([0]),)]),  # missing a layer
        ([0, 1], [(np.array([0]), np.array([0]))]),  # lists do not match devices
    ],
)
def test_update_rejects_bad_input_without_changing_table(
    devices: list[int], kept: list[tuple[np.ndarray, ...]]
) -> None:
    table = AoITable(2, [2, 3])
    with pytest.raises(ValueError):
        table.update(devices, kept)
    assert np.all(table.ages == 0)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="^num_devices: must be >= 1"):
        AoITable(0, [2])
    with pytest.raises(ValueError, match="^layer_sizes: need >= 1 layer"):
        AoITable(2, [2, 0])
    with pytest.raises(ValueError, match="^initial_age: must be in"):
        AoITable(2, [2], initial_age=-1)
    with pytest.raises(ValueError):
        AoITable.from_array(np.zeros((2, 4), dtype=int), [2, 3])
    with pytest.raises(ValueError):
        AoITable.from_array(-np.ones((2, 5), dtype=int), [2, 3])
