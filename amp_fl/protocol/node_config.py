"""What a node's config says: its partition id and, on a real board, its reported profile."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from amp_fl.protocol.fields import Fields
from amp_fl.protocol.keys import (
    CPU_HZ,
    DISTANCE_M,
    FLOPS_PER_CYCLE,
    MEASURE_COMPUTE,
    NUM_PARTITIONS,
    PARTITION_ID,
    TX_POWER_W,
    UPLINK_RATE_BPS,
)


# ------------------------------------------------------------------------------ node config
def partition_id(node_config: Mapping[str, object]) -> int:
    """The node's device id, its node config's ``partition-id`` (``ValueError`` if absent or invalid)."""
    return Fields(node_config, "node config", ValueError).integer(PARTITION_ID)


def simulation_node_config(partition: int, num_partitions: int) -> dict[str, int]:
    """The node config Flower's simulation gives node ``partition`` of ``num_partitions``."""
    return {PARTITION_ID: int(partition), NUM_PARTITIONS: int(num_partitions)}


@dataclass(frozen=True)
class NodeProfileSettings:
    """What a board's node config says about its profile (every part optional).

    ``cpu-hz`` + ``flops-per-cycle`` (compute) and ``tx-power-w`` + ``distance-m`` (radio) are
    reported in pairs; ``measure-compute=true`` asks the board to time SGD steps of the run's
    model instead of reporting its compute pair; ``uplink-rate-bps`` is its measured uplink rate
    on one RB. A part left out is simulated from the run seed
    (:func:`amp_fl.client.profile.resolve_profile_reply`).
    """

    partition_id: int
    cpu_hz: float | None = None
    flops_per_cycle: float | None = None
    tx_power_w: float | None = None
    distance_m: float | None = None
    measure_compute: bool = False
    uplink_rate_bps: float | None = None

    @property
    def compute_reported(self) -> bool:
        return self.cpu_hz is not None

    @property
    def radio_reported(self) -> bool:
        return self.tx_power_w is not None

    @property
    def reports_anything(self) -> bool:
        return self.compute_reported or self.radio_reported or self.measure_compute or self.uplink_rate_bps is not None

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> NodeProfileSettings:
        """Parse and check (``ValueError`` naming the key: an incomplete pair, a bad value, a conflict)."""
        f = Fields(node_config, "node config", ValueError)
        values: dict[str, float | None] = {}
        for pair in ((CPU_HZ, FLOPS_PER_CYCLE), (TX_POWER_W, DISTANCE_M)):
            present = [key for key in pair if key in node_config]
            if len(present) == 1:
                missing = [key for key in pair if key not in node_config]
                raise ValueError(f"node config sets {present} but not {missing}: {pair[0]} and {pair[1]} go together")
            for key in pair:
                values[key] = f.number(key, positive=True) if present else None
        measure = node_config.get(MEASURE_COMPUTE, False)
        if isinstance(measure, str) and measure.lower() in ("true", "false"):
            measure = measure.lower() == "true"
        if not isinstance(measure, bool):
            raise ValueError(f"node config: key {MEASURE_COMPUTE!r} must be true or false, got {measure!r}")
        if measure and values[CPU_HZ] is not None:
            raise ValueError(
                f"node config sets both {MEASURE_COMPUTE}=true and {CPU_HZ}/{FLOPS_PER_CYCLE}: "
                "report or measure, not both"
            )
        rate = f.number(UPLINK_RATE_BPS, positive=True) if UPLINK_RATE_BPS in node_config else None
        return cls(
            partition_id=partition_id(node_config),
            cpu_hz=values[CPU_HZ],
            flops_per_cycle=values[FLOPS_PER_CYCLE],
            tx_power_w=values[TX_POWER_W],
            distance_m=values[DISTANCE_M],
            measure_compute=measure,
            uplink_rate_bps=rate,
        )
