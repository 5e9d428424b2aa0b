"""Unstructured global magnitude pruning: iterative (IMP, lottery-ticket style) and one-shot.

Pure NumPy, no Flower. Every conv / linear weight tensor of the model is *prunable*; biases and
BatchNorm arrays stay dense. Pruning is **global**: one ranking of ``|w|`` over the entries of all
prunable tensors that are still unpruned, and the smallest are removed. A removed entry never
comes back (masks only lose ones).

- **IMP** (iterative magnitude pruning as the lottery-ticket literature runs it, Frankle & Carbin
  2019, with rewinding to an early round as Frankle et al. 2020): train ``interval`` rounds, remove
  ``round(rate * remaining)`` of the remaining entries, rewind the survivors to their values after
  round ``rewind_round`` (0, the initial model, when none is given: :func:`rewind_round_of`),
  train again; the steps fall after round ``first_round`` and every ``interval`` rounds after it,
  until the target count ``round(target * N)`` (``N`` prunable entries) is reached; the last step
  removes exactly what is left to reach it, so the achieved sparsity is exactly
  ``round(target * N) / N``.
- **gradual**: IMP's schedule without rewinding (pruning during training, the trained survivors
  keep their values): the schedule of this project's first OTA-IMP study (issue 10).
- **one-shot**: after round ``first_round`` (the trained model, when ``first_round`` is IMP's first
  step), remove ``round(target * N)`` entries at once, and train the survivors on to the same last
  round (no rewinding: the fair rival of IMP for the same round budget).

Round 0 means "before round 1" (pruning the initial model). Counts use Python's ``round`` (ties to
even), exactly as ``torch.nn.utils.prune`` does, and a step's mask equals
``torch.nn.utils.prune.global_unstructured(params, pruning_method=L1Unstructured, amount=a)``
on the same weights and the previous masks, where ``a`` is :attr:`PruningStep.torch_amount`
(``rate`` as a float for a regular IMP step, the integer count for the last step and for
one-shot). Ties in ``|w|`` are broken by position (the lower flat index, in parameter order, is
removed first); torch's ``topk`` leaves ties unspecified, so the equality holds for distinct magnitudes.

Optional rewinding (lottery tickets, "rewinding to an early round"): after each step the
surviving weights are reset to their values at an earlier round (:func:`rewind`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.state import State, StateValue

PruningMethod = Literal["imp", "gradual", "one_shot"]
PRUNING_METHODS: tuple[PruningMethod, ...] = get_args(PruningMethod)


def rewind_round_of(method: PruningMethod, rewind_round: int | None) -> int | None:
    """The round whose model the survivors are rewound to at every step (``None``: no rewinding).

    Only IMP rewinds (to ``rewind_round``; the initial model, round 0, when it is ``None``): gradual
    pruning and one-shot keep their trained survivors, so they read no ``rewind_round`` (as one-shot
    reads no ``rate``).
    """
    check_argument(method in PRUNING_METHODS, "method", f"choose from {PRUNING_METHODS}, got {method!r}")
    check_argument(rewind_round is None or rewind_round >= 0, "rewind_round", f"must be >= 0, got {rewind_round}")
    if method != "imp":
        return None
    return 0 if rewind_round is None else rewind_round


def prune_count(amount: float, size: int) -> int:
    """``round(amount * size)``: entries a fractional ``amount`` removes from ``size`` (torch's rule)."""
    check_argument(0.0 <= amount <= 1.0, "amount", f"must be in [0, 1], got {amount}")
    check_argument(size >= 0, "size", f"must be >= 0, got {size}")
    return round(float(amount) * size)


@dataclass(frozen=True)
class PruningStep:
    """One pruning event: after round ``round``, remove ``count`` more entries.

    ``torch_amount`` is the ``amount`` that makes ``global_unstructured`` remove the same
    entries: the IMP ``rate`` (float) for a regular step, the integer ``count`` otherwise.
    ``sparsity`` is the cumulative fraction of prunable entries removed after the step.
    """

    round: int
    count: int
    torch_amount: float | int
    sparsity: float

    def state_dict(self) -> State:
        return {"round": self.round, "count": self.count, "torch_amount": self.torch_amount, "sparsity": self.sparsity}

    @classmethod
    def from_state(cls, state: State) -> PruningStep:
        values = {k: state.get(k) for k in ("round", "count", "torch_amount", "sparsity")}
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()):
            raise ValueError(f"state: a pruning step needs numbers, got {values}")
        return cls(**values)  # type: ignore[arg-type]  # checked numbers, as saved


@dataclass(frozen=True)
class PruningPlan:
    """When to prune and how much: IMP or one-shot to ``target`` sparsity over ``num_prunable`` entries.

    Parameters
    ----------
    method : {"imp", "gradual", "one_shot"}
        IMP and gradual share the iterative schedule (they differ in rewinding, which the caller does).
    target : float
        Final fraction of prunable entries removed, in [0, 1).
    num_prunable : int
        N, the number of entries of all prunable tensors.
    rate : float, default 0.2
        IMP: fraction of the *remaining* entries each step removes, in (0, 1].
    interval : int, default 1
        IMP: rounds between steps (>= 1).
    first_round : int, default 0
        The round after which the first (IMP) or only (one-shot) step happens; 0 prunes the
        initial model before round 1.
    """

    method: PruningMethod
    target: float
    num_prunable: int
    rate: float = 0.2
    interval: int = 1
    first_round: int = 0

    def __post_init__(self) -> None:
        check_argument(self.method in PRUNING_METHODS, "method", f"choose from {PRUNING_METHODS}, got {self.method!r}")
        check_argument(0.0 <= self.target < 1.0, "target", f"must be in [0, 1), got {self.target}")
        check_argument(self.num_prunable >= 1, "num_prunable", f"must be >= 1, got {self.num_prunable}")
        check_argument(0.0 < self.rate <= 1.0, "rate", f"must be in (0, 1], got {self.rate}")
        check_argument(self.interval >= 1, "interval", f"must be >= 1, got {self.interval}")
        check_argument(self.first_round >= 0, "first_round", f"must be >= 0, got {self.first_round}")

    @property
    def target_count(self) -> int:
        """Entries removed once the plan is complete: ``round(target * N)``."""
        return prune_count(self.target, self.num_prunable)

    def steps(self) -> tuple[PruningStep, ...]:
        """Every step in order (none when the target removes no entry)."""
        total, goal = self.num_prunable, self.target_count
        if goal == 0:
            return ()
        if self.method == "one_shot":
            return (PruningStep(self.first_round, goal, goal, goal / total),)
        steps: list[PruningStep] = []
        pruned, round_ = 0, self.first_round
        while pruned < goal:
            remaining = total - pruned
            count = round(float(self.rate) * remaining)
            amount: float | int = self.rate
            if count < 1:  # a rate too small to remove anything from what remains still removes one entry
                count, amount = 1, 1
            if pruned + count >= goal:  # the last step: exactly what is left to reach the target
                count, amount = goal - pruned, goal - pruned
            pruned += count
            steps.append(PruningStep(round_, count, amount, pruned / total))
            round_ += self.interval
        return tuple(steps)

    @property
    def last_round(self) -> int | None:
        """The round after which the target is reached (``None`` when nothing is pruned)."""
        steps = self.steps()
        return steps[-1].round if steps else None

    def step_after(self, server_round: int) -> PruningStep | None:
        """The step that happens after round ``server_round``, if any."""
        for step in self.steps():
            if step.round == server_round:
                return step
        return None


def imp_steps_needed(target: float, rate: float) -> int:
    """Number of IMP steps to reach ``target`` at ``rate`` ignoring rounding: ``ceil(log(1-target)/log(1-rate))``.

    (The exact count for a given number of entries is ``len(PruningPlan(...).steps())``; rounding
    can change it by one at boundaries.)
    """
    check_argument(0.0 <= target < 1.0, "target", f"must be in [0, 1), got {target}")
    check_argument(0.0 < rate <= 1.0, "rate", f"must be in (0, 1], got {rate}")
    if target == 0.0:
        return 0
    if rate == 1.0:
        return 1
    return max(1, math.ceil(math.log(1.0 - target) / math.log(1.0 - rate) - 1e-12))


def global_magnitude_prune(weights: Sequence[np.ndarray], masks: Sequence[np.ndarray], count: int) -> list[np.ndarray]:
    """New masks removing ``count`` more entries: the smallest ``|w|`` among the still unpruned ones.

    Parameters
    ----------
    weights : sequence of np.ndarray
        The prunable tensors (any shapes).
    masks : sequence of bool np.ndarray
        Their current masks (``True``: kept), same shapes.
    count : int
        How many kept entries to remove (0 <= count <= number kept).

    Returns
    -------
    list of bool np.ndarray
        New masks (copies). Ties in ``|w|`` go to the lower flat index in parameter order.
    """
    check_argument(len(weights) == len(masks), "masks", f"{len(masks)} masks for {len(weights)} tensors")
    for i, (w, m) in enumerate(zip(weights, masks, strict=True)):
        check_argument(np.shape(w) == np.shape(m), "masks", f"mask {i} has shape {np.shape(m)}, tensor {np.shape(w)}")
    flat_mask = np.concatenate([np.asarray(m, dtype=bool).ravel() for m in masks]) if masks else np.zeros(0, bool)
    kept = np.flatnonzero(flat_mask)
    check_argument(
        0 <= count <= kept.size, "count", f"must be in [0, {kept.size}] (the entries still kept), got {count}"
    )
    if count > 0:
        scores = np.concatenate([np.abs(np.asarray(w, dtype=np.float64)).ravel() for w in weights])[kept]
        check_argument(bool(np.all(np.isfinite(scores))), "weights", "contain NaN or infinite values")
        smallest = kept[np.argsort(scores, kind="stable")[:count]]
        flat_mask = flat_mask.copy()
        flat_mask[smallest] = False
    out, offset = [], 0
    for m in masks:
        size = int(np.size(m))
        out.append(flat_mask[offset : offset + size].reshape(np.shape(m)).copy())
        offset += size
    return out


def apply_masks(weights: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``w * mask`` (pruned entries exactly 0), in each tensor's dtype."""
    return [
        np.where(np.asarray(m, dtype=bool), w, np.zeros((), dtype=np.asarray(w).dtype))
        for w, m in zip(weights, masks, strict=True)
    ]


def rewind(
    weights: Sequence[np.ndarray], snapshot: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]
) -> list[np.ndarray]:
    """Lottery-ticket rewinding: every array reset to ``snapshot``, masked arrays zero where pruned.

    ``masks[i]`` is ``None`` for an array that is not pruned (it is rewound all the same).
    """
    check_argument(len(snapshot) == len(weights), "snapshot", f"{len(snapshot)} arrays for {len(weights)}")
    check_argument(len(masks) == len(weights), "masks", f"{len(masks)} masks for {len(weights)} arrays")
    out = []
    for w, s, m in zip(weights, snapshot, masks, strict=True):
        check_argument(np.shape(s) == np.shape(w), "snapshot", f"shape {np.shape(s)} for an array of {np.shape(w)}")
        r = np.array(s, dtype=np.asarray(w).dtype, copy=True)
        if m is not None:
            r[~np.asarray(m, dtype=bool)] = 0
        out.append(r)
    return out


def sparsity_of(masks: Sequence[np.ndarray]) -> float:
    """Fraction of entries pruned over all ``masks`` (0 when there are none)."""
    total = sum(int(np.size(m)) for m in masks)
    kept = sum(int(np.count_nonzero(m)) for m in masks)
    return 0.0 if total == 0 else (total - kept) / total


class MagnitudePruner:
    """The server's masks over the prunable arrays of a model, advanced by a :class:`PruningPlan`.

    Parameters
    ----------
    shapes : sequence of tuple
        Shapes of all the model's arrays (in parameter order).
    prunable : sequence of bool
        Which arrays are pruned (conv / linear weights).
    method, target, rate, interval, first_round
        The :class:`PruningPlan`'s settings (``num_prunable`` is counted from ``shapes``).
    """

    def __init__(
        self,
        shapes: Sequence[tuple[int, ...]],
        prunable: Sequence[bool],
        *,
        method: PruningMethod,
        target: float,
        rate: float = 0.2,
        interval: int = 1,
        first_round: int = 0,
    ) -> None:
        check_argument(len(shapes) == len(prunable), "prunable", f"{len(prunable)} flags for {len(shapes)} arrays")
        check_argument(any(prunable), "prunable", "no array is prunable")
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.prunable = [bool(p) for p in prunable]
        num = sum(math.prod(s) for s, p in zip(self.shapes, self.prunable, strict=True) if p)
        self.plan = PruningPlan(method, target, num, rate, interval, first_round)
        self._masks: list[np.ndarray | None] = [
            np.ones(s, dtype=bool) if p else None for s, p in zip(self.shapes, self.prunable, strict=True)
        ]
        self.history: list[PruningStep] = []

    @property
    def masks(self) -> list[np.ndarray | None]:
        """One bool mask per array (``None`` for the arrays that are never pruned)."""
        return list(self._masks)

    @property
    def prunable_masks(self) -> list[np.ndarray]:
        return [m for m in self._masks if m is not None]

    @property
    def num_pruned(self) -> int:
        return sum(int(m.size - np.count_nonzero(m)) for m in self.prunable_masks)

    @property
    def sparsity(self) -> float:
        """Fraction of prunable entries removed so far."""
        return sparsity_of(self.prunable_masks)

    def prune_after(self, server_round: int, weights: Sequence[np.ndarray]) -> PruningStep | None:
        """Apply the plan's step after ``server_round`` (if any) to ``weights``; return it.

        The masks change; the caller zeroes the pruned weights (:meth:`apply`).
        """
        check_argument(
            len(weights) == len(self.shapes), "weights", f"{len(weights)} arrays, expected {len(self.shapes)}"
        )
        step = self.plan.step_after(server_round)
        if step is None:
            return None
        index = [i for i, p in enumerate(self.prunable) if p]
        new = global_magnitude_prune([weights[i] for i in index], self.prunable_masks, step.count)
        for i, m in zip(index, new, strict=True):
            self._masks[i] = m
        self.history.append(step)
        return step

    def state_dict(self) -> State:
        """The masks (``None`` for arrays never pruned) and the steps taken so far; the plan is configuration."""
        masks: list[StateValue] = list(self._masks)
        steps: list[StateValue] = [s.state_dict() for s in self.history]
        return {"masks": masks, "history": steps}

    def load_state_dict(self, state: State) -> None:
        masks = state.get("masks")
        steps = state.get("history")
        if not isinstance(masks, list) or len(masks) != len(self.shapes) or not isinstance(steps, list):
            raise ValueError(f"state: 'masks' must list {len(self.shapes)} arrays and 'history' the steps")
        restored: list[np.ndarray | None] = []
        for mask, shape, prunable in zip(masks, self.shapes, self.prunable, strict=True):
            if (mask is None) == prunable or (mask is not None and _not_a_mask(mask, shape)):
                raise ValueError(f"state: a mask does not fit the array of shape {shape} (prunable: {prunable})")
            restored.append(None if mask is None else np.array(mask, dtype=bool))
        if not all(isinstance(step, dict) for step in steps):
            raise ValueError("state: every pruning step must be a dict")
        history = [PruningStep.from_state(step) for step in steps if isinstance(step, dict)]
        self._masks = restored
        self.history = history

    def apply(self, weights: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``weights`` with every pruned entry exactly 0 (copies)."""
        check_argument(
            len(weights) == len(self.shapes), "weights", f"{len(weights)} arrays, expected {len(self.shapes)}"
        )
        out = []
        for w, m in zip(weights, self._masks, strict=True):
            a = np.array(w, copy=True)
            if m is not None:
                a[~m] = 0
            out.append(a)
        return out


def _not_a_mask(value: object, shape: tuple[int, ...]) -> bool:
    return not isinstance(value, np.ndarray) or value.dtype != np.bool_ or value.shape != shape
