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

from amp_fl.pruning.policies.aoi import select_top_aoi
from amp_fl.scheduling.aoi_table import AoITable
from amp_fl.scheduling.schedule import KeptIndices, Schedule, SchedulerBase, assemble_schedule
from amp_fl.wireless.channel import ChannelState
from amp_fl.wireless.latency import layer_keep_counts

# A vertex of P4's polytope is integral; HiGHS returns one (simplex, or IPM with crossover).
# Anything further than this from 0 or 1 means the solver returned an interior point.
_INTEGRALITY_TOL = 1e-6


def solve_p4(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Solve P4 (eq. 20) for a K x R weight matrix; return the n x n solution and its optimum.

    The graph is balanced with zero-weight virtual vertices to n = max(K, R) on both sides, as
    in the paper (virtual RBs when K > R), so (19a) and (19b) are equalities.
    """
    weights = np.asarray(weights, dtype=np.float64)
    num_devices, num_rbs = weights.shape
    n = max(num_devices, num_rbs)
    padded = np.zeros((n, n))
    padded[:num_devices, :num_rbs] = weights
    # theta is flattened row-major: variable k * n + r.
    row_sums = sparse.kron(sparse.eye(n), np.ones((1, n)))  # sum_r theta_{k,r} = 1  (19a)
    col_sums = sparse.kron(np.ones((1, n)), sparse.eye(n))  # sum_k theta_{k,r} = 1  (19b)
    a_eq = sparse.vstack([row_sums, col_sums]).tocsr()
    result = linprog(-padded.ravel(), A_eq=a_eq, b_eq=np.ones(2 * n), bounds=(0.0, 1.0), method="highs")
    if result.status != 0:
        raise RuntimeError(f"P4 did not solve: {result.message}")
    theta = result.x.reshape(n, n)
    return theta, float(-result.fun)


class PaperRouteScheduler(SchedulerBase):
    """Algorithm 2 as the paper states it: K x R runs of Algorithm 1, then the LP P4.

    Parameters
    ----------
    system : SystemModel
    seed : int
        Run seed; tie-breaks of round t come from a generator derived from (seed, t).
    """

    name = "paper_route"

    def schedule(self, round: int, channel_state: ChannelState, aoi_table: AoITable) -> Schedule:
        costs = self.round_costs(round, channel_state, aoi_table)
        rng = self.round_rng(round)
        counts = layer_keep_counts(costs.keep_fraction, aoi_table.layer_sizes)  # (K, R, L)
        layers = aoi_table.layers()
        num_devices, num_rbs = costs.keep_fraction.shape
        weights = np.zeros((num_devices, num_rbs), dtype=np.int64)
        policies: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        for k in range(num_devices):
            for r in range(num_rbs):
                if counts[k, r].min() < 1:
                    continue  # some layer would be empty: infeasible, weight 0 (eq. 18)
                # Algorithm 1 for the pair (k, r): sort every layer by AoI, keep the first c_l.
                kept = tuple(select_top_aoi(ages[k], int(c), rng) for ages, c in zip(layers, counts[k, r], strict=True))
                policies[(k, r)] = kept
                weights[k, r] = sum(
                    int(np.sum((ages[k, idx].astype(np.int64) + 1) ** 2))
                    for ages, idx in zip(layers, kept, strict=True)
                )
        theta, _ = solve_p4(weights)
        real = theta[:num_devices, :num_rbs]
        if np.any(np.minimum(np.abs(real), np.abs(1.0 - real)) > _INTEGRALITY_TOL):
            raise RuntimeError("P4 returned a fractional solution; expected a vertex of the matching polytope")
        devices, rbs = np.nonzero((real > 0.5) & (weights > 0))
        kept_indices: KeptIndices = tuple(policies[(int(k), int(r))] for k, r in zip(devices, rbs, strict=True))
        return assemble_schedule(
            round, costs, aoi_table, devices, rbs, costs.keep_fraction[devices, rbs], counts[devices, rbs], kept_indices
        )
