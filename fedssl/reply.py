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
# What the device chose for itself (fedssl.local_settings); 0 when it did not train.
DEVICE_BATCH_SIZE = "device-batch-size"
DEVICE_PRECISION_BITS = "device-precision-bits"  # 32 (fp32) or 16 (bf16/fp16 autocast)
DEVICE_THREADS = "device-threads"
DEVICE_MEMORY_MB = "device-memory-mb"  # the memory the device measured (or was told) it has
DEVICE_KEYS = (DEVICE_BATCH_SIZE, DEVICE_PRECISION_BITS, DEVICE_THREADS, DEVICE_MEMORY_MB)

METRIC_KEYS = (NUM_EXAMPLES, LOSS, Z_STD, RANKME, STEPS, SECONDS, EXAMPLES_PER_S, PEAK_MEM_MB, SKIPPED,
               PARTITION_ID, NUM_PARTITIONS, *DEVICE_KEYS)

LOCAL_STATE = "fedssl-local"  # context.state key of the heads/targets/queues kept on the device
