"""The reply contract between ClientApp and ServerApp: record names and metric keys.

Flower rejects a round whose replies carry different metric keys, so every
reply (trained, skipped or misbehaving) sends exactly ``METRIC_KEYS``.
"""

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

NUM_EXAMPLES = "num-examples"
LOSS = "loss"
Z_STD = "z-std"
RANKME = "rankme"
STEPS = "steps"
SECONDS = "seconds"
EXAMPLES_PER_S = "examples-per-s"
PEAK_MEM_MB = "peak-mem-mb"
SKIPPED = "skipped"  # 1.0 when the client had too little data to train
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"  # of a simulated shard; 0 for a device with its own data

METRIC_KEYS = (NUM_EXAMPLES, LOSS, Z_STD, RANKME, STEPS, SECONDS, EXAMPLES_PER_S, PEAK_MEM_MB, SKIPPED,
               PARTITION_ID, NUM_PARTITIONS)

LOCAL_STATE = "fedssl-local"  # context.state key of the heads/targets/queues kept on the device
