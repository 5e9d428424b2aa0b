"""The wire protocol between the AMP-FL ServerApp and ClientApp: typed messages, their keys and checks.

Every message is a frozen dataclass with ``to_content()`` (-> Flower ``RecordDict``) and
``from_content()`` (<- ``RecordDict``). ``from_content`` does *all* of the message's validation
(missing record or key, wrong type, value out of range) and raises an error naming the key, so
no other module reads a record by a string key. Keys are kebab-case by Flower convention; the
record and key names are the module constants below and appear nowhere else.

Messages
--------
``query`` (round 0, every node)
    server -> :class:`ProfileQuery` (the seed and the wireless settings for simulated profiles);
    client -> :class:`DeviceProfileReply` (partition-id, cpu-hz, flops-per-cycle, tx-power-w,
    distance-m). A real board reports measured values from its node config
    (:meth:`DeviceProfileReply.from_node_config`) instead of simulated ones.
``train`` (every scheduled node)
    server -> :class:`TrainInstruction`: the sliced sub-model (``arrays``, physically smaller),
    the kept region indices (``kept``, one int32 array per region group) and the ``config``
    (round, device and the run's :class:`TrainSetup`);
    client -> :class:`TrainReply`: ``arrays`` (the cumulative gradient, or ``g - G_k`` in
    memory-friendly mode, shaped like the sub-model) and ``metrics`` (num-examples, train-loss,
    device, fit-seconds). The setup's ``local-objective`` (sgd, fedprox with ``proximal-mu``, apfl
    with ``apfl-alpha``) says what the device minimises (:mod:`amp_fl.client.objectives`).
``evaluate`` (every node, at the personal-evaluation rounds only)
    server -> :class:`EvaluateInstruction`: the full global model and the run's setup;
    client -> :class:`EvaluateReply`: the device's personalised model (APFL's mix, otherwise the
    global model) scored on test samples of its own label distribution
    (:mod:`amp_fl.client.personal`).

Arrays
------
Every array travels in Flower's own ``numpy.ndarray`` encoding (``.npy`` bytes), written and read
by :mod:`amp_fl.protocol.arrays` (:func:`encode_array`, :func:`decode_array`) without the cost of
``np.save``/``np.load``; decoded arrays are read-only views of the message's bytes.

Byte accounting
---------------
Downlink (:attr:`TrainInstruction.downlink_bytes`) = float32 sub-model bytes + 4 bytes per kept
region index (int32). Uplink (:attr:`TrainReply.uplink_bytes`) = float32 gradient bytes only:
the server already knows the kept indices, so the client sends none back.
"""

# One module per message family; this package re-exports them, so callers write ``P.TrainInstruction``.
from typing import TYPE_CHECKING

from amp_fl.lazy import lazy_exports
from amp_fl.protocol.keys import (
    ACCURACY,
    APFL_ALPHA,
    APFL_ALPHA_LR,
    ARRAYS,
    BATCH_SIZE,
    CELL_RADIUS_M,
    COMPUTE_SOURCE,
    CONFIG,
    CPU_FREQS_HZ,
    CPU_HZ,
    DATA_ROOT,
    DATASET,
    DEVICE,
    DISTANCE_M,
    EVAL_BATCH_SIZE,
    FAIL_CORRUPT_PROB,
    FAIL_LATE_DELAY_S,
    FAIL_LATE_PROB,
    FAIL_RAISE_PROB,
    FIT_SECONDS,
    FLOPS_PER_CYCLE,
    FLOPS_PER_SAMPLE,
    INPUT_SHAPE,
    KEPT,
    KEPT_DTYPE,
    KEPT_INDEX_BYTES,
    LEARNING_RATE,
    LOCAL_OBJECTIVE,
    LOCAL_STEPS,
    LOSS,
    MEASURE_COMPUTE,
    MEASURED_FLOPS_PER_S,
    MEMORY_FRIENDLY,
    METRICS,
    MIN_DISTANCE_M,
    MODEL,
    NUM_CLASSES,
    NUM_DEVICES,
    NUM_EXAMPLES,
    NUM_FAILURES,
    NUM_PARTITIONS,
    NUM_UPDATES,
    PARTITION,
    PARTITION_ID,
    PERSONAL_ACCURACY,
    PERSONAL_LOSS,
    PERSONALISED,
    PROFILE_KEYS,
    PROXIMAL_MU,
    RADIO_SOURCE,
    ROUND,
    SEED,
    SHARDS_PER_DEVICE,
    STATE_ALPHA,
    STATE_CACHE,
    STATE_PERSONAL,
    TRAIN_LOSS,
    TX_POWER_DBM,
    TX_POWER_W,
    UPLINK_RATE_BPS,
    VALIDATION_FRACTION,
    WIRE_DTYPE,
)
from amp_fl.protocol.setup import LOCAL_OBJECTIVES, FailureSettings, LocalObjective

# The message modules need flwr: imported on first use, so that the configuration (which reads
# only the keys and the setup's names) stays free of flwr (amp_fl.lazy says why).
_LAZY = {
    "amp_fl.protocol.arrays": (
        "decode_array",
        "encode_array",
    ),
    "amp_fl.protocol.evaluate": (
        "EvaluateInstruction",
        "EvaluateReply",
    ),
    "amp_fl.protocol.fields": (
        "Fields",
        "arrays_of",
        "arrays_to_record",
        "decode_array",
        "encode_array",
        "check_shapes",
        "config_fields",
        "in_order",
        "metrics_fields",
        "metrics_fields",
        "model_arrays",
        "model_record",
        "record_to_arrays",
        "to_array_record",
        "wire_arrays",
    ),
    "amp_fl.protocol.metrics": (
        "EvaluationMetrics",
        "PersonalMetrics",
        "RoundMetrics",
    ),
    "amp_fl.protocol.node_config": (
        "NodeProfileSettings",
        "partition_id",
        "simulation_node_config",
    ),
    "amp_fl.protocol.query": (
        "ComputeBenchmark",
        "DeviceProfileReply",
        "ProfileQuery",
    ),
    "amp_fl.protocol.train": (
        "TrainInstruction",
        "TrainReply",
        "TrainSetup",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
if TYPE_CHECKING:
    from amp_fl.protocol.arrays import decode_array, encode_array
    from amp_fl.protocol.evaluate import EvaluateInstruction, EvaluateReply
    from amp_fl.protocol.fields import (
        Fields,
        arrays_of,
        arrays_to_record,
        check_shapes,
        config_fields,
        in_order,
        metrics_fields,
        model_arrays,
        model_record,
        record_to_arrays,
        to_array_record,
        wire_arrays,
    )
    from amp_fl.protocol.metrics import EvaluationMetrics, PersonalMetrics, RoundMetrics
    from amp_fl.protocol.node_config import NodeProfileSettings, partition_id, simulation_node_config
    from amp_fl.protocol.query import ComputeBenchmark, DeviceProfileReply, ProfileQuery
    from amp_fl.protocol.train import TrainInstruction, TrainReply, TrainSetup

__all__ = [
    "ACCURACY",
    "APFL_ALPHA",
    "APFL_ALPHA_LR",
    "ARRAYS",
    "BATCH_SIZE",
    "CELL_RADIUS_M",
    "COMPUTE_SOURCE",
    "CONFIG",
    "CPU_FREQS_HZ",
    "CPU_HZ",
    "DATASET",
    "DATA_ROOT",
    "DEVICE",
    "DISTANCE_M",
    "EVAL_BATCH_SIZE",
    "FAIL_CORRUPT_PROB",
    "FAIL_LATE_DELAY_S",
    "FAIL_LATE_PROB",
    "FAIL_RAISE_PROB",
    "FIT_SECONDS",
    "FLOPS_PER_CYCLE",
    "FLOPS_PER_SAMPLE",
    "INPUT_SHAPE",
    "KEPT",
    "KEPT_DTYPE",
    "KEPT_INDEX_BYTES",
    "LEARNING_RATE",
    "LOCAL_OBJECTIVE",
    "LOCAL_OBJECTIVES",
    "LOCAL_STEPS",
    "LOSS",
    "MEASURED_FLOPS_PER_S",
    "MEASURE_COMPUTE",
    "MEMORY_FRIENDLY",
    "METRICS",
    "MIN_DISTANCE_M",
    "MODEL",
    "NUM_CLASSES",
    "NUM_DEVICES",
    "NUM_EXAMPLES",
    "NUM_FAILURES",
    "NUM_PARTITIONS",
    "NUM_UPDATES",
    "PARTITION",
    "PARTITION_ID",
    "PERSONALISED",
    "PERSONAL_ACCURACY",
    "PERSONAL_LOSS",
    "PROFILE_KEYS",
    "PROXIMAL_MU",
    "RADIO_SOURCE",
    "ROUND",
    "SEED",
    "SHARDS_PER_DEVICE",
    "STATE_ALPHA",
    "STATE_CACHE",
    "STATE_PERSONAL",
    "TRAIN_LOSS",
    "TX_POWER_DBM",
    "TX_POWER_W",
    "UPLINK_RATE_BPS",
    "VALIDATION_FRACTION",
    "WIRE_DTYPE",
    "ComputeBenchmark",
    "DeviceProfileReply",
    "EvaluateInstruction",
    "EvaluateReply",
    "EvaluationMetrics",
    "FailureSettings",
    "Fields",
    "LocalObjective",
    "NodeProfileSettings",
    "PersonalMetrics",
    "ProfileQuery",
    "RoundMetrics",
    "TrainInstruction",
    "TrainReply",
    "TrainSetup",
    "arrays_of",
    "arrays_to_record",
    "check_shapes",
    "config_fields",
    "decode_array",
    "encode_array",
    "in_order",
    "metrics_fields",
    "model_arrays",
    "model_record",
    "partition_id",
    "record_to_arrays",
    "simulation_node_config",
    "to_array_record",
    "wire_arrays",
]
