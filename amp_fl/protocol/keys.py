"""Record and key names of the wire protocol, and its dtypes: the vocabulary every message uses."""

from __future__ import annotations

import numpy as np

# ------------------------------------------------------------------------------ record names
ARRAYS = "arrays"
KEPT = "kept"
CONFIG = "config"
METRICS = "metrics"
STATE_CACHE = "amp-fl-gradient-cache"  # the client's context.state record for memory-friendly AMP-FL
STATE_ALPHA = "amp-fl-apfl-alpha"  # the client's context.state record of APFL's adaptive alpha_k
STATE_PERSONAL = "amp-fl-apfl-personal-model"  # the client's context.state record of APFL's personal model v_k

# ------------------------------------------------------------------------------ keys
# Node config (Flower's simulation sets both; a deployed SuperNode gets them from --node-config).
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
# Device profile (reply to the query; also the node-config keys of a board's measured values).
CPU_HZ = "cpu-hz"
FLOPS_PER_CYCLE = "flops-per-cycle"
TX_POWER_W = "tx-power-w"
DISTANCE_M = "distance-m"
PROFILE_KEYS = (CPU_HZ, FLOPS_PER_CYCLE, TX_POWER_W, DISTANCE_M)
# Optional node-config keys of a board (:class:`NodeProfileSettings`).
MEASURE_COMPUTE = "measure-compute"  # true: time SGD steps of the run's model when queried
UPLINK_RATE_BPS = "uplink-rate-bps"  # the board's uplink rate on one RB, bit/s (also in the reply)
# Profile reply: where the numbers came from (amp_fl.protocol.provenance).
COMPUTE_SOURCE = "compute-source"
RADIO_SOURCE = "radio-source"
MEASURED_FLOPS_PER_S = "measured-flops-per-s"
# Profile query: the model a board asked to measure itself trains (with MODEL, INPUT_SHAPE, NUM_CLASSES, BATCH_SIZE).
FLOPS_PER_SAMPLE = "flops-per-sample"
# Profile query.
SEED = "seed"
CELL_RADIUS_M = "cell-radius-m"
MIN_DISTANCE_M = "min-distance-m"
TX_POWER_DBM = "tx-power-dbm"
CPU_FREQS_HZ = "cpu-freqs-hz"
# Train instruction config.
ROUND = "round"
DEVICE = "device"
DATASET = "dataset"
DATA_ROOT = "data-root"
NUM_DEVICES = "num-devices"
PARTITION = "partition"
SHARDS_PER_DEVICE = "shards-per-device"
MODEL = "model"
INPUT_SHAPE = "input-shape"
NUM_CLASSES = "num-classes"
LEARNING_RATE = "learning-rate"
LOCAL_STEPS = "local-steps"
BATCH_SIZE = "batch-size"
MEMORY_FRIENDLY = "memory-friendly"
LOCAL_OBJECTIVE = "local-objective"
PROXIMAL_MU = "proximal-mu"
APFL_ALPHA = "apfl-alpha"
APFL_ALPHA_LR = "apfl-alpha-lr"  # > 0: APFL adapts alpha with this step size (Deng et al.); 0: alpha fixed
TRAIN_DEVICE = "train-device"  # train.device as configured (auto | cpu | cuda | mps); the client resolves it
# The failure injector's settings (amp_fl.client.failures; all 0 in a normal run).
FAIL_RAISE_PROB = "fail-raise-prob"
FAIL_LATE_PROB = "fail-late-prob"
FAIL_CORRUPT_PROB = "fail-corrupt-prob"
FAIL_LATE_DELAY_S = "fail-late-delay-s"
VALIDATION_FRACTION = "validation-fraction"
# Evaluate instruction config.
EVAL_BATCH_SIZE = "eval-batch-size"
# Train reply metrics.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
FIT_SECONDS = "fit-seconds"
# Evaluate reply metrics.
PERSONAL_ACCURACY = "personal-accuracy"
PERSONAL_LOSS = "personal-loss"
PERSONALISED = "personalised"  # 1: the device scored its own personalised model; 0: the global model
# Metrics the ServerApp hands back to Flower (aggregate_train, aggregate_evaluate, evaluate_fn).
NUM_UPDATES = "num-updates"
NUM_FAILURES = "num-failures"
ACCURACY = "accuracy"
LOSS = "loss"

WIRE_DTYPE = np.dtype(np.float32)
KEPT_DTYPE = np.dtype(np.int32)
KEPT_INDEX_BYTES = KEPT_DTYPE.itemsize  # 4 bytes per kept region index on the downlink
