"""The interface every pruning policy implements, and the feasibility rules shared by all.

A policy answers one question per device per round: given how many regions each group may
keep (``keep_counts``, from the keep fraction of Eq. (16) by
:func:`~amp_fl.pruning.counts.keep_counts`), *which* regions? It returns
:data:`~amp_fl.pruning.regions.KeptIndices`: one sorted unique ``int64`` array per group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.pruning.regions import KeptIndices, RegionMap, check_kept


@dataclass(frozen=True)
class SelectionContext:
    """What a policy may look at when choosing a device's regions.

    Attributes
    ----------
    region_map : RegionMap
        The model's region map (group sizes, and which arrays hold each group's weights).
    server_round : int
        Current round (Flower numbers rounds from 1). Non-negative.
    device_id : int
        The device (client / node id). Non-negative; seeds per-device randomness.
    ages : sequence of np.ndarray, or np.ndarray, optional
        The device's AoI per region: one integer array per group, or one flat array of
        length ``region_map.num_regions`` (split at ``region_map.offsets``). Needed by ``aoi``.
    global_arrays : sequence of np.ndarray, optional
        Current global model arrays in ``region_map.param_names`` order. Needed by ``importance``.
    scheduled : KeptIndices, optional
        The regions the round's scheduler chose for this device. Every scheduler chooses them by
        Algorithm 1 with ``aoi``'s tie-break (tests/test_scheduling_policy_agreement.py), so
        ``aoi`` returns them instead of computing them again; other policies ignore them.
    """

    region_map: RegionMap
    server_round: int = 0
    device_id: int = 0
    ages: Sequence[np.ndarray] | np.ndarray | None = None
    global_arrays: Sequence[np.ndarray] | None = None
    scheduled: KeptIndices | None = None

    def __post_init__(self) -> None:
        if int(self.server_round) < 0 or int(self.device_id) < 0:
            raise ValueError(
                f"server_round and device_id must be non-negative, got {self.server_round}, {self.device_id}"
            )

    def group_ages(self) -> list[np.ndarray]:
        """The device's AoI split per group (validated against the group sizes)."""
        if self.ages is None:
            raise ValueError("this policy needs the device's AoI per region (SelectionContext.ages)")
        sizes = self.region_map.layer_sizes
        if isinstance(self.ages, np.ndarray) and self.ages.ndim == 1:
            if self.ages.shape[0] != sum(sizes):
                raise ValueError(f"flat ages must have {sum(sizes)} entries (one per region), got {self.ages.shape[0]}")
            per_group = np.split(self.ages, np.cumsum(sizes)[:-1])
        else:
            per_group = [np.asarray(a) for a in self.ages]
        if len(per_group) != len(sizes):
            raise ValueError(f"expected ages for {len(sizes)} groups, got {len(per_group)}")
        for group, ages in zip(self.region_map.groups, per_group, strict=True):
            if ages.shape != (group.size,):
                raise ValueError(f"ages of group {group.name!r} must have shape ({group.size},), got {ages.shape}")
        return per_group


def infeasible_layers(keep_counts: Sequence[int]) -> list[int]:
    """Indices of layers that keep no region: a sub-model with any of them cannot be trained."""
    return [i for i, count in enumerate(keep_counts) if int(count) <= 0]


def is_feasible(keep_counts: Sequence[int]) -> bool:
    """Whether every layer keeps at least one region."""
    return not infeasible_layers(keep_counts)


def validate_keep_counts(region_map: RegionMap, keep_counts: Sequence[int]) -> list[int]:
    """Check ``keep_counts`` against the groups: one count per group, each in ``[1, I_l]``.

    Raises
    ------
    ValueError
        Naming the group whose count is zero (infeasible) or out of range.
    """
    groups = region_map.groups
    if len(keep_counts) != len(groups):
        raise ValueError(f"expected {len(groups)} keep counts (one per group), got {len(keep_counts)}")
    counts = [int(c) for c in keep_counts]
    for group, count in zip(groups, counts, strict=True):
        if count == 0:
            raise ValueError(f"group {group.name!r} keeps no region: the sub-model is infeasible")
        if not 1 <= count <= group.size:
            raise ValueError(f"keep count of group {group.name!r} must be in [1, {group.size}], got {count}")
    return counts


def device_rng(seed: int, server_round: int, device_id: int) -> np.random.Generator:
    """Generator for one ``(seed, round, device)`` draw.

    Derived from the run seed and the round and device rather than advanced call by call, so a
    device's picks do not depend on the order in which the server asks for devices, nor on how
    many other devices it asked for first, nor on whether a scheduler or a policy asks.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(server_round), int(device_id)]))


class PruningPolicy(ABC):
    """Chooses the regions a device keeps.

    Subclasses implement :meth:`_select`; :meth:`select` validates the counts on the way in and
    the chosen indices on the way out, so every policy returns exactly ``keep_counts[g]`` sorted
    unique in-range indices per group.

    Parameters
    ----------
    seed : int
        Seed of the policy's randomness (tie-breaks, random picks). Deterministic policies
        accept and ignore it, so every policy is built the same way.
    """

    name: ClassVar[str]

    def __init__(self, seed: int = 0) -> None:
        check_argument(int(seed) >= 0, "seed", f"must be non-negative, got {seed}")
        self.seed = int(seed)

    def select(self, keep_counts: Sequence[int], ctx: SelectionContext) -> KeptIndices:
        """Kept indices per group for one device in one round."""
        counts = validate_keep_counts(ctx.region_map, keep_counts)
        kept = check_kept(ctx.region_map, self._select(counts, ctx))
        got = [len(k) for k in kept]
        if got != counts:
            raise RuntimeError(f"policy {self.name!r} kept {got} regions, {counts} were requested")
        return kept

    @abstractmethod
    def _select(self, keep_counts: list[int], ctx: SelectionContext) -> KeptIndices:
        """Kept indices per group; ``keep_counts`` is already validated."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"
