"""The paper's own route to the same schedule, kept for comparison (Sec. IV-B, IV-C, Algorithm 2).

Algorithm 1 runs once per device/RB pair (a separate sort of every layer for each of the K x R
pairs), and the RB allocation is the LP relaxation P4 of the balanced bipartite matching,
solved with ``scipy.optimize.linprog(method="highs")``. It reaches the same objective as
:class:`~amp_fl.scheduling.amp.AmpScheduler` (total unimodularity) at a much higher cost; the
benchmark measures how much.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from amp_fl.pruning.counts import keep_counts
from amp_fl.pruning.policies.aoi import tie_break_jitter, top_aoi_indices
from amp_fl.pruning.regions import KeptIndices
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.schedule import Schedule, Scheduler, assemble_schedule, kept_weights
from amp_fl.wireless.channel import ChannelState

# A vertex of P4's polytope is integral; HiGHS returns one (simplex, or IPM with crossover).
# Anything further than this from 0 or 1 means the solver returned an interior point.
_INTEGRALITY_TOL = 1e-6


def solve_p4(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Solve P4 (Eq. (20)) for a K x R weight matrix; return the n x n solution and its optimum.

    The graph is balanced with zero-weight virtual vertices to n = max(K, R) on both sides, as
    in the paper (virtual RBs when K > R), so Eqs. (19a) and (19b) are equalities.
    """
    weights = np.asarray(weights, dtype=np.float64)
    num_devices, num_rbs = weights.shape
    n = max(num_devices, num_rbs)
    padded = np.zeros((n, n))
    padded[:num_devices, :num_rbs] = weights
    # theta is flattened row-major: variable k * n + r.
    row_sums = sparse.kron(sparse.eye(n), np.ones((1, n)))  # sum_r theta_{k,r} = 1, Eq. (19a)
    col_sums = sparse.kron(np.ones((1, n)), sparse.eye(n))  # sum_k theta_{k,r} = 1, Eq. (19b)
    a_eq = sparse.vstack([row_sums, col_sums]).tocsr()
    result = linprog(-padded.ravel(), A_eq=a_eq, b_eq=np.ones(2 * n), bounds=(0.0, 1.0), method="highs")
    if result.status != 0:
        raise RuntimeError(f"P4 did not solve: {result.message}")
    theta = result.x.reshape(n, n)
    return theta, float(-result.fun)


class PaperRouteScheduler(Scheduler):
    """Algorithm 2 as the paper states it: K x R runs of Algorithm 1, then the LP P4.

    Parameters
    ----------
    system : SystemModel
    seed : int
        Run seed; the tie-breaks of device k in round t come from (seed, t, k), as in every
        scheduler, so the kept regions equal :class:`~amp_fl.scheduling.amp.AmpScheduler`'s.
    """

    name = "paper_route"

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        counts = keep_counts(costs.keep_fraction, aoi_table.layer_sizes)  # (K, R, L)
        layers = aoi_table.layers()
        num_devices, num_rbs = costs.keep_fraction.shape
        weights = np.zeros((num_devices, num_rbs), dtype=np.int64)
        policies: dict[tuple[int, int], KeptIndices] = {}
        for k in range(num_devices):
            feasible = np.flatnonzero(counts[k].min(axis=-1) >= 1)  # an empty layer: weight 0 (Eq. (18))
            if feasible.size == 0:
                continue
            # Algorithm 1 for each pair (k, r), r feasible: every layer sorted by AoI once per pair
            # (one row per RB in a batch), the first c_l kept.
            rows = np.full(feasible.size, k, dtype=np.int64)
            jitter = np.repeat(tie_break_jitter(self.seed, round, [k], aoi_table.num_regions), rows.size, axis=0)
            kept_per_rb = top_aoi_indices([layer[rows] for layer in layers], counts[k, feasible], jitter)
            for r, kept, weight in zip(feasible, kept_per_rb, kept_weights(aoi_table, rows, kept_per_rb), strict=True):
                policies[(k, int(r))] = kept
                weights[k, r] = weight
        theta, _ = solve_p4(weights)
        real = theta[:num_devices, :num_rbs]
        if np.any(np.minimum(np.abs(real), np.abs(1.0 - real)) > _INTEGRALITY_TOL):
            raise RuntimeError("P4 returned a fractional solution; expected a vertex of the matching polytope")
        devices, rbs = np.nonzero((real > 0.5) & (weights > 0))
        kept_indices = tuple(policies[(int(k), int(r))] for k, r in zip(devices, rbs, strict=True))
        return assemble_schedule(
            round, costs, aoi_table, devices, rbs, costs.keep_fraction[devices, rbs], counts[devices, rbs], kept_indices
        )
