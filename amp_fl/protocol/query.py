"""The round-0 profile query and the device's profile reply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from amp_fl.errors import InvalidReplyError
from amp_fl.protocol.fields import config_fields
from amp_fl.protocol.keys import (
    BATCH_SIZE,
    CELL_RADIUS_M,
    COMPUTE_SOURCE,
    CONFIG,
    CPU_FREQS_HZ,
    CPU_HZ,
    DISTANCE_M,
    FLOPS_PER_CYCLE,
    FLOPS_PER_SAMPLE,
    INPUT_SHAPE,
    MEASURED_FLOPS_PER_S,
    MIN_DISTANCE_M,
    MODEL,
    NUM_CLASSES,
    PARTITION_ID,
    PROFILE_KEYS,
    RADIO_SOURCE,
    SEED,
    TX_POWER_DBM,
    TX_POWER_W,
    UPLINK_RATE_BPS,
)
from amp_fl.protocol.node_config import NodeProfileSettings
from amp_fl.protocol.provenance import COMPUTE_SOURCES, RADIO_SOURCES, REPORTED, SIMULATED, ReportedDeviceProfile
from amp_fl.wireless.config import WirelessConfig
from amp_fl.wireless.devices import DeviceProfile


# ------------------------------------------------------------------------------ query
@dataclass(frozen=True)
class ComputeBenchmark:
    """The model a board asked to measure itself (``measure-compute=true``) trains, and its cost unit.

    ``flops_per_sample`` is C of the server's latency model (the paper's constant or the exact
    count), so the board can report its throughput in the units Eq. (6) divides by.
    """

    model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    flops_per_sample: float


@dataclass(frozen=True)
class ProfileQuery:
    """Server -> every node at round 0: who are you, and what can you do?

    Carries the run seed and the wireless settings a node needs to simulate its profile
    (:func:`amp_fl.wireless.devices.simulated_device_profile`).
    """

    MESSAGE_TYPE: ClassVar[str] = MessageType.QUERY

    seed: int
    cell_radius_m: float
    min_distance_m: float
    tx_power_dbm: float
    cpu_freqs_hz: tuple[float, ...]
    flops_per_cycle: float
    benchmark: ComputeBenchmark | None = None  # what a board that measures itself trains

    @classmethod
    def from_wireless(
        cls, seed: int, wireless: WirelessConfig, benchmark: ComputeBenchmark | None = None
    ) -> ProfileQuery:
        return cls(
            seed=int(seed),
            cell_radius_m=float(wireless.cell_radius_m),
            min_distance_m=float(wireless.min_distance_m),
            tx_power_dbm=float(wireless.tx_power_dbm),
            cpu_freqs_hz=tuple(float(f) for f in wireless.cpu_freqs_hz),
            flops_per_cycle=float(wireless.flops_per_cycle),
            benchmark=benchmark,
        )

    def wireless(self) -> WirelessConfig:
        """The wireless settings of the query (defaults for what a profile does not depend on)."""
        return WirelessConfig(
            cell_radius_m=self.cell_radius_m,
            min_distance_m=self.min_distance_m,
            tx_power_dbm=self.tx_power_dbm,
            cpu_freqs_hz=self.cpu_freqs_hz,
            flops_per_cycle=self.flops_per_cycle,
        )

    def to_content(self) -> RecordDict:
        config = ConfigRecord(
            {
                SEED: int(self.seed),
                CELL_RADIUS_M: float(self.cell_radius_m),
                MIN_DISTANCE_M: float(self.min_distance_m),
                TX_POWER_DBM: float(self.tx_power_dbm),
                CPU_FREQS_HZ: [float(f) for f in self.cpu_freqs_hz],
                FLOPS_PER_CYCLE: float(self.flops_per_cycle),
            }
        )
        if self.benchmark is not None:
            b = self.benchmark
            config[MODEL] = b.model
            config[INPUT_SHAPE] = [int(d) for d in b.input_shape]
            config[NUM_CLASSES] = int(b.num_classes)
            config[BATCH_SIZE] = int(b.batch_size)
            config[FLOPS_PER_SAMPLE] = float(b.flops_per_sample)
        return RecordDict({CONFIG: config})

    def to_message(self, dst_node_id: int) -> Message:
        return Message(self.to_content(), dst_node_id=dst_node_id, message_type=self.MESSAGE_TYPE)

    @classmethod
    def from_content(cls, content: RecordDict) -> ProfileQuery:
        """Parse and check a query (``ValueError`` naming the key)."""
        f = config_fields(content, "profile query", ValueError)
        min_distance = f.number(MIN_DISTANCE_M, positive=True)
        radius = f.number(CELL_RADIUS_M, positive=True)
        if radius <= min_distance:
            raise f.fail(CELL_RADIUS_M, f"must exceed {MIN_DISTANCE_M} ({min_distance}), got {radius}")
        benchmark = None
        if MODEL in content.config_records[CONFIG]:
            c, h, w = f.positive_ints(INPUT_SHAPE, 3)
            benchmark = ComputeBenchmark(
                model=f.text(MODEL),
                input_shape=(c, h, w),
                num_classes=f.integer(NUM_CLASSES, minimum=1),
                batch_size=f.integer(BATCH_SIZE, minimum=1),
                flops_per_sample=f.number(FLOPS_PER_SAMPLE, positive=True),
            )
        return cls(
            seed=f.integer(SEED),
            cell_radius_m=radius,
            min_distance_m=min_distance,
            tx_power_dbm=f.number(TX_POWER_DBM),
            cpu_freqs_hz=f.positive_numbers(CPU_FREQS_HZ),
            flops_per_cycle=f.number(FLOPS_PER_CYCLE, positive=True),
            benchmark=benchmark,
        )


@dataclass(frozen=True)
class DeviceProfileReply:
    """Node -> server: its device id (partition-id) and device profile (simulated, reported or measured).

    ``compute_source`` / ``radio_source`` say where the numbers came from
    (:mod:`amp_fl.protocol.provenance`); they do not take part in equality, which compares
    the profile itself. ``uplink_rate_bps``: the board's reported uplink rate, if any;
    ``measured_flops_per_s``: its measured throughput in exact FLOPs, if it measured itself.
    """

    partition_id: int
    cpu_hz: float
    flops_per_cycle: float
    tx_power_w: float
    distance_m: float
    uplink_rate_bps: float | None = None
    compute_source: str = field(default=SIMULATED, compare=False)
    radio_source: str = field(default=SIMULATED, compare=False)
    measured_flops_per_s: float | None = field(default=None, compare=False)

    @classmethod
    def from_profile(cls, partition: int, profile: DeviceProfile) -> DeviceProfileReply:
        reported = profile if isinstance(profile, ReportedDeviceProfile) else None
        return cls(
            partition_id=int(partition),
            cpu_hz=float(profile.cpu_hz),
            flops_per_cycle=float(profile.flops_per_cycle),
            tx_power_w=float(profile.tx_power_w),
            distance_m=float(profile.distance_m),
            uplink_rate_bps=reported.uplink_rate_bps if reported else None,
            compute_source=reported.compute_source if reported else SIMULATED,
            radio_source=reported.radio_source if reported else SIMULATED,
            measured_flops_per_s=reported.measured_flops_per_s if reported else None,
        )

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> DeviceProfileReply | None:
        """The whole profile a board reported in its node config, or ``None`` if it sets none of the keys.

        Setting only some of ``cpu-hz``, ``flops-per-cycle``, ``tx-power-w``, ``distance-m`` is
        an error (``ValueError`` naming the missing keys); a board that reports only part of its
        profile, or measures itself, is answered by
        :func:`amp_fl.client.profile.resolve_profile_reply`, which fills in the rest.
        """
        settings = NodeProfileSettings.from_node_config(node_config)
        if not (settings.compute_reported or settings.radio_reported):
            return None
        present = [key for key in PROFILE_KEYS if key in node_config]
        missing = [key for key in PROFILE_KEYS if key not in node_config]
        if missing:
            raise ValueError(f"node config sets {present} but not {missing}: a reported profile needs all four")
        assert settings.cpu_hz is not None and settings.flops_per_cycle is not None
        assert settings.tx_power_w is not None and settings.distance_m is not None
        return cls(
            partition_id=settings.partition_id,
            cpu_hz=settings.cpu_hz,
            flops_per_cycle=settings.flops_per_cycle,
            tx_power_w=settings.tx_power_w,
            distance_m=settings.distance_m,
            uplink_rate_bps=settings.uplink_rate_bps,
            compute_source=REPORTED,
            radio_source=REPORTED,
        )

    def to_profile(self) -> DeviceProfile:
        """The profile; a :class:`ReportedDeviceProfile` (which keeps the provenance) unless all simulated."""
        if (self.compute_source, self.radio_source, self.uplink_rate_bps, self.measured_flops_per_s) == (
            SIMULATED,
            SIMULATED,
            None,
            None,
        ):
            return DeviceProfile(
                cpu_hz=self.cpu_hz,
                flops_per_cycle=self.flops_per_cycle,
                tx_power_w=self.tx_power_w,
                distance_m=self.distance_m,
            )
        return ReportedDeviceProfile(
            cpu_hz=self.cpu_hz,
            flops_per_cycle=self.flops_per_cycle,
            tx_power_w=self.tx_power_w,
            distance_m=self.distance_m,
            compute_source=self.compute_source,
            radio_source=self.radio_source,
            uplink_rate_bps=self.uplink_rate_bps,
            measured_flops_per_s=self.measured_flops_per_s,
        )

    def to_content(self) -> RecordDict:
        config = ConfigRecord(
            {
                PARTITION_ID: int(self.partition_id),
                CPU_HZ: float(self.cpu_hz),
                FLOPS_PER_CYCLE: float(self.flops_per_cycle),
                TX_POWER_W: float(self.tx_power_w),
                DISTANCE_M: float(self.distance_m),
                COMPUTE_SOURCE: self.compute_source,
                RADIO_SOURCE: self.radio_source,
            }
        )
        if self.uplink_rate_bps is not None:
            config[UPLINK_RATE_BPS] = float(self.uplink_rate_bps)
        if self.measured_flops_per_s is not None:
            config[MEASURED_FLOPS_PER_S] = float(self.measured_flops_per_s)
        return RecordDict({CONFIG: config})

    def to_reply(self, query: Message) -> Message:
        return Message(self.to_content(), reply_to=query)

    @classmethod
    def from_content(cls, content: RecordDict) -> DeviceProfileReply:
        """Parse and check a profile reply (:class:`InvalidReplyError` naming the key)."""
        f = config_fields(content, "device profile reply", InvalidReplyError)
        record = content.config_records[CONFIG]
        sources: dict[str, str] = {}
        for key, allowed in ((COMPUTE_SOURCE, COMPUTE_SOURCES), (RADIO_SOURCE, RADIO_SOURCES)):
            sources[key] = f.text(key) if key in record else SIMULATED
            if sources[key] not in allowed:
                raise f.fail(key, f"must be one of {', '.join(allowed)}, got {sources[key]!r}")
        return cls(
            partition_id=f.integer(PARTITION_ID),
            cpu_hz=f.number(CPU_HZ, positive=True),
            flops_per_cycle=f.number(FLOPS_PER_CYCLE, positive=True),
            tx_power_w=f.number(TX_POWER_W, positive=True),
            distance_m=f.number(DISTANCE_M, positive=True),
            uplink_rate_bps=f.number(UPLINK_RATE_BPS, positive=True) if UPLINK_RATE_BPS in record else None,
            compute_source=sources[COMPUTE_SOURCE],
            radio_source=sources[RADIO_SOURCE],
            measured_flops_per_s=(
                f.number(MEASURED_FLOPS_PER_S, positive=True) if MEASURED_FLOPS_PER_S in record else None
            ),
        )
