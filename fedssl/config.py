"""Run configuration: read once from Flower's flat run config, validated, frozen.

Every key lives in ``[tool.flwr.app.config]`` of ``pyproject.toml`` with its
default; the rest of the code only sees the dataclasses below. Bad values raise
``ValueError`` naming the key, the value and what is allowed, before any
training starts.

Names of SSL methods, encoders, partitioners and probe tasks are checked against their
registries (``fedssl.ssl.METHODS``, ``fedssl.models.encoders.ENCODERS``,
``fedssl.data.partition.PARTITIONERS``, ``fedssl.probe.PROBE_TASKS``), imported when a config is
validated: those modules import this one for their dataclasses, so a module-level import would
be a cycle. ``aggregation.rule`` is checked by the ServerApp against
``server_app.aggregation.RULES`` when it builds the strategy, before round 1 (``fedssl/`` imports
no server code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedssl.augment import AugmentationParams

CLIENT_UPDATES = ("none", "fedu", "fedema")
TRANSPORT_DTYPES = ("float32", "float16")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
AUGMENTATIONS = ("batched", "per-sample")
READOUTS = ("pool", "block3")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"run config '{key}' = {value!r} is not one of {list(allowed)}")
    return value


def _in_range(key: str, value: float, low: float, high: float | None = None) -> float:
    if value < low or (high is not None and value > high):
        upper = "inf" if high is None else high
        raise ValueError(f"run config '{key}' = {value!r} is out of range [{low}, {upper}]")
    return value


@dataclass(frozen=True)
class ModelConfig:
    """Which encoder to build; also saved in checkpoints so export needs nothing else."""

    encoder: str = "smallcnn"
    embedding_dim: int = 1152
    in_channels: int = 1
    image_size: int = 28
    small_stem: bool = True
    readout: str = "block3"  # smallcnn: "pool" (fc of block 4's global average) or "block3" (see SmallCNN)


@dataclass(frozen=True)
class SSLConfig:
    method: str = "simclr"
    temperature: float = 0.2
    proj_dim: int = 128
    hidden_dim: int = 512
    momentum: float = 0.99
    queue_size: int = 4096
    barlow_lambda: float = 0.005


@dataclass(frozen=True)
class TrainConfig:
    local_epochs: int = 1
    batch_size: int = 128
    lr: float = 0.002
    weight_decay: float = 1e-5
    max_steps: int = 50  # 0: no cap; caps local steps per round on slow devices
    optimizer: str = "adam"
    schedule: str = "cosine"  # "cosine": warmup, then cosine decay over all rounds
    warmup_rounds: float = 1.0
    keep_optimizer_state: bool = True  # the device keeps Adam's moments between rounds
    augmentation: str = "batched"
    crop_min_scale: float = 0.6
    erase_p: float = 0.0
    channels_last: bool = True

    def augmentation_params(self) -> AugmentationParams:
        from fedssl.augment import AugmentationParams

        return AugmentationParams(crop_scale=(self.crop_min_scale, 1.0), erase_p=self.erase_p)


@dataclass(frozen=True)
class DataConfig:
    partition: str = "dirichlet"
    alpha: float = 0.5
    classes_per_client: int = 2
    max_samples: int = 6400  # per round; 0: all of a client's samples


@dataclass(frozen=True)
class EvalConfig:
    tasks: tuple[str, ...] = ("fashion-mnist", "digits")
    knn_k: int = 200
    knn_t: float = 0.1
    gallery_size: int = 10000
    query_size: int = 2000
    report_k: int = 20  # a second kNN figure reported beside knn_k (raw pixels peak near k=20)
    linear_labels: int = 5000  # labelled gallery images the linear probe trains on


@dataclass(frozen=True)
class AggregationConfig:
    rule: str = "fedavg"
    alpha: float = 0.5  # fedvssl: FedAvg vs loss-weighted mix
    beta: float = 0.0  # fedvssl: SWA weight of the previous global model
    trim_fraction: float = 0.2
    krum_byzantine: int = 1


@dataclass(frozen=True)
class FilterConfig:
    enabled: bool = True
    min_z_std: float = 0.1
    min_rankme_ratio: float = 0.02  # rankme / embedding_dim
    max_norm_ratio: float = 10.0  # update norm / median update norm of the round


@dataclass(frozen=True)
class SplitConfig:
    """``mode = "split"`` (MocoSFL): the device trains a stem, the server the trunk and one MoCo queue."""

    cut: int = 1  # encoder blocks that run on the device (fedssl.split.cut.SPLIT_POINTS)
    local_batch: int = 16  # images per device per step; the server concatenates every device's batch
    sync_period: int = 10  # steps between two averagings of the device stems (one cohort per period)
    feature_sharing: bool = True  # one queue of keys shared by all devices; false: one queue per device
    steps: int = 100  # server steps in the run
    queue_size: int = 4096
    eval_every: int = 50  # steps between probes (a multiple of sync-period: the stems are averaged then)
    step_timeout: float = 120.0  # seconds to wait for a step's replies; a vanished device costs at most this


@dataclass(frozen=True)
class RunConfig:
    mode: str = "full"  # fedssl.registry.MODES: "full" (every device trains the whole backbone) or "split"
    num_rounds: int = 12
    fraction_train: float = 0.2
    min_train_nodes: int = 2
    round_timeout: float = 900.0  # seconds to wait for replies; a vanished node costs at most this
    seed: int = 0
    outputs_dir: str = "outputs"
    resume: str = ""
    transport_dtype: str = "float32"
    client_update: str = "none"
    fedu_threshold: float = 0.5
    fedema_tau: float = 0.7
    metrics_port: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> RunConfig:
        """Build from Flower's ``context.run_config`` (kebab-case, dotted groups)."""
        return _validate(_build(cls, dict(flat), prefix=""))

    def to_flat(self) -> dict[str, Any]:
        """The inverse of :meth:`from_flat`, for ``ConfigRecord``s and checkpoints."""
        return _flatten(self, prefix="")


_GROUP_KEYS = {"model", "ssl", "train", "data", "eval", "aggregation", "filter", "split"}


def _key(prefix: str, name: str) -> str:
    return prefix + name.replace("_", "-")


def _build(cls: type, flat: dict[str, Any], prefix: str) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in _GROUP_KEYS and not prefix:
            kwargs[f.name] = _build(type(f.default_factory()), flat, f"{f.name}.")  # type: ignore[misc]
            continue
        key = _key(prefix, f.name)
        if key not in flat:
            continue
        kwargs[f.name] = _convert(key, flat.pop(key), f.default)
    if not prefix:
        unknown = sorted(k for k in flat if not k.startswith("_"))
        if unknown:
            raise ValueError(f"unknown run config key(s) {unknown}; see [tool.flwr.app.config] in pyproject.toml")
    return cls(**kwargs)


def _convert(key: str, value: Any, default: Any) -> Any:
    """Coerce a run-config value to the type of the field's default."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "1")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(item.strip() for item in items if item.strip())
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"run config '{key}' = {value!r} is not a valid {type(default).__name__}") from None


def _flatten(obj: Any, prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in _GROUP_KEYS and not prefix:
            flat.update(_flatten(value, f"{f.name}."))
        else:
            flat[_key(prefix, f.name)] = ",".join(value) if isinstance(value, tuple) else value
    return flat


def _validate(cfg: RunConfig) -> RunConfig:
    from fedssl.data.partition import PARTITIONERS
    from fedssl.models.encoders import ENCODERS
    from fedssl.probe import PROBE_TASKS
    from fedssl.ssl import BYOL_STYLE, METHODS

    _in_range("num-rounds", cfg.num_rounds, 1)
    _in_range("fraction-train", cfg.fraction_train, 0.0, 1.0)
    _in_range("min-train-nodes", cfg.min_train_nodes, 1)
    _in_range("round-timeout", cfg.round_timeout, 1.0)
    _choice("transport-dtype", cfg.transport_dtype, TRANSPORT_DTYPES)
    _choice("client-update", cfg.client_update, CLIENT_UPDATES)
    _in_range("fedu-threshold", cfg.fedu_threshold, 0.0)
    _in_range("fedema-tau", cfg.fedema_tau, 0.0)
    _in_range("metrics-port", cfg.metrics_port, 0, 65535)
    if cfg.metrics_port == 8000:
        raise ValueError("run config 'metrics-port' = 8000 collides with the SuperLink's port; pick another")
    if cfg.client_update != "none" and cfg.ssl.method not in BYOL_STYLE:
        raise ValueError(f"run config 'client-update' = {cfg.client_update!r} needs a BYOL-style 'ssl.method' "
                         f"{list(BYOL_STYLE)}, got {cfg.ssl.method!r}")
    ENCODERS.check(cfg.model.encoder)
    _in_range("model.embedding-dim", cfg.model.embedding_dim, 2, 8192)
    _choice("model.in-channels", str(cfg.model.in_channels), ("1", "3"))
    _in_range("model.image-size", cfg.model.image_size, 8, 1024)
    _choice("model.readout", cfg.model.readout, READOUTS)
    if cfg.model.encoder == "smallcnn" and cfg.model.readout == "block3":
        expected = 128 * (cfg.model.image_size // 8) ** 2
        if cfg.model.embedding_dim != expected:
            raise ValueError(f"run config 'model.embedding-dim' = {cfg.model.embedding_dim} does not match "
                             f"'model.readout' = 'block3' at image size {cfg.model.image_size}: it must be {expected}")
    elif cfg.model.readout != "pool":
        raise ValueError(f"run config 'model.readout' = {cfg.model.readout!r} applies to 'smallcnn' only; "
                         f"with 'model.encoder' = {cfg.model.encoder!r} set model.readout='pool' and "
                         "model.embedding-dim (e.g. 512)")
    METHODS.check(cfg.ssl.method)
    _in_range("ssl.temperature", cfg.ssl.temperature, 1e-3, 10.0)
    _in_range("ssl.proj-dim", cfg.ssl.proj_dim, 2)
    _in_range("ssl.hidden-dim", cfg.ssl.hidden_dim, 2)
    _in_range("ssl.momentum", cfg.ssl.momentum, 0.0, 1.0)
    _in_range("ssl.queue-size", cfg.ssl.queue_size, 1)
    _in_range("ssl.barlow-lambda", cfg.ssl.barlow_lambda, 0.0)
    _in_range("train.local-epochs", cfg.train.local_epochs, 1)
    _in_range("train.batch-size", cfg.train.batch_size, 2)
    _in_range("train.lr", cfg.train.lr, 1e-8, 10.0)
    _in_range("train.weight-decay", cfg.train.weight_decay, 0.0)
    _in_range("train.max-steps", cfg.train.max_steps, 0)
    _choice("train.optimizer", cfg.train.optimizer, OPTIMIZERS)
    _choice("train.schedule", cfg.train.schedule, SCHEDULES)
    _in_range("train.warmup-rounds", cfg.train.warmup_rounds, 0.0, float(cfg.num_rounds))
    _choice("train.augmentation", cfg.train.augmentation, AUGMENTATIONS)
    _in_range("train.crop-min-scale", cfg.train.crop_min_scale, 0.01, 1.0)
    _in_range("train.erase-p", cfg.train.erase_p, 0.0, 1.0)
    PARTITIONERS.check(cfg.data.partition)
    _in_range("data.alpha", cfg.data.alpha, 1e-4)
    _in_range("data.classes-per-client", cfg.data.classes_per_client, 1, 10)
    _in_range("data.max-samples", cfg.data.max_samples, 0)
    if not cfg.eval.tasks:
        raise ValueError(f"run config 'eval.tasks' is empty; allowed tasks: {list(PROBE_TASKS.names())}")
    for task in cfg.eval.tasks:
        PROBE_TASKS.check(task)
    _in_range("eval.knn-k", cfg.eval.knn_k, 1)
    _in_range("eval.knn-t", cfg.eval.knn_t, 1e-4)
    _in_range("eval.gallery-size", cfg.eval.gallery_size, 10)
    _in_range("eval.query-size", cfg.eval.query_size, 10)
    _in_range("eval.report-k", cfg.eval.report_k, 1)
    _in_range("eval.linear-labels", cfg.eval.linear_labels, 10)
    _in_range("aggregation.alpha", cfg.aggregation.alpha, 0.0, 1.0)
    _in_range("aggregation.beta", cfg.aggregation.beta, 0.0, 1.0)
    _in_range("aggregation.trim-fraction", cfg.aggregation.trim_fraction, 0.0, 0.49)
    _in_range("aggregation.krum-byzantine", cfg.aggregation.krum_byzantine, 0)
    _in_range("filter.min-z-std", cfg.filter.min_z_std, 0.0)
    _in_range("filter.min-rankme-ratio", cfg.filter.min_rankme_ratio, 0.0, 1.0)
    _in_range("filter.max-norm-ratio", cfg.filter.max_norm_ratio, 1.0)
    _validate_split(cfg)
    return cfg


def _validate_split(cfg: RunConfig) -> None:
    from fedssl.registry import MODES
    from fedssl.split.cut import SPLIT_POINTS

    MODES.check(cfg.mode)
    s = cfg.split
    _in_range("split.local-batch", s.local_batch, 1)
    _in_range("split.sync-period", s.sync_period, 1)
    _in_range("split.steps", s.steps, 1)
    _in_range("split.queue-size", s.queue_size, 1)
    _in_range("split.eval-every", s.eval_every, 1)
    _in_range("split.step-timeout", s.step_timeout, 1.0)
    if cfg.mode != "split":
        return
    SPLIT_POINTS.get(cfg.model.encoder).check(cfg.model, s.cut)
    if s.eval_every % s.sync_period:
        raise ValueError(f"run config 'split.eval-every' = {s.eval_every} must be a multiple of "
                         f"'split.sync-period' = {s.sync_period} (the whole encoder exists after a sync)")
    if cfg.ssl.method != "moco":
        raise ValueError(f"run config 'mode' = 'split' trains MoCo (MocoSFL); 'ssl.method' = {cfg.ssl.method!r} "
                         "must be 'moco'")
