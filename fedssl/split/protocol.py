"""The split-mode message contract between ClientApp and ServerApp: message actions, record names, keys.

Per step the server sends ``train.split_forward`` (config; at a device's first step of a sync
period also ``stems``) and receives ``activations``; then it sends ``train.split_backward``
(config and ``gradient``) and receives metrics. At the end of a sync period ``query.split_sync``
asks for the device's ``stems`` and metrics. Nothing else travels: no images, no trunk.
"""

FORWARD = "split_forward"  # message type "train.split_forward"
BACKWARD = "split_backward"  # "train.split_backward"
SYNC = "split_sync"  # "query.split_sync"

CONFIG = "config"
METRICS = "metrics"
STEMS = "stems"  # online.* and momentum.* stem weights (server -> device at a period's start; back at sync)
ACTIVATIONS = "activations"  # {ONLINE_ACTS, MOMENTUM_ACTS}: (2 * b, C, H, W) each, view a first
GRADIENT = "gradient"  # {ONLINE_ACTS}: d loss / d online activations
ONLINE_ACTS = "online"
MOMENTUM_ACTS = "momentum"

STEP = "step"  # the server step (0-based)
SEED = "seed"  # the device's batch and views for this step derive from it
LR = "lr"
GRAD_SCALE = "grad-scale"  # the gradient travels multiplied by this (float16 would flush small values to 0)

# Metric keys of a sync reply (every one present, as in fedssl/reply.py).
NUM_EXAMPLES = "num-examples"  # images this device stepped on since it received the stems
STEPS = "steps"
PEAK_MEM_MB = "peak-mem-mb"
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
SYNC_METRIC_KEYS = (NUM_EXAMPLES, STEPS, PEAK_MEM_MB, PARTITION_ID, NUM_PARTITIONS)

DEVICE_STATE = "fedssl-split-stems"  # context.state: this device's two stems
DEVICE_OPTIMIZER = "fedssl-split-optimizer"  # context.state: the stem optimiser's state (torch bytes)
DEVICE_COUNTERS = "fedssl-split-counters"  # context.state: steps and images since the stems arrived
