"""Run configuration: read once from Flower's flat run config, validated, frozen.

Every key lives in ``[tool.flwr.app.config]`` of ``pyproject.toml`` with its
default; the rest of the code only sees the dataclasses below. Bad values raise
``ValueError`` naming the key, the value and what is allowed, before any
training starts.

Names of modalities, SSL methods, encoders, partitioners and probe tasks are checked against their
registries (``fedssl.modality.MODALITIES``, ``fedssl.ssl.METHODS``, ``fedssl.models.encoders.ENCODERS``,
``fedssl.data.partition.PARTITIONERS``, and the modality's probe tasks), imported when a config is
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
TRANSPORT_SCOPES = ("backbone", "model")  # what travels: the encoder only (default), or it with its SSL heads
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
AUGMENTATIONS = ("batched", "per-sample")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
    readout: str = "block3"  # smallcnn: "pool" (fc of block 4's global average), "block3" or "block2" (see SmallCNN)


@dataclass(frozen=True)
class SSLConfig:
    method: str = "simclr"
    temperature: float = 0.2
    proj_dim: int = 128
    hidden_dim: int = 512
    momentum: float = 0.99
    queue_size: int = 4096
    barlow_lambda: float = 0.005
    segments: int = 3  # segment-order: a view cut into this many segments along time (or width), shuffled


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
    modality: str = "image"  # fedssl.modality.MODALITIES: data pipeline, augmentation, encoder input, probes
    partition: str = "dirichlet"
    alpha: float = 0.5
    classes_per_client: int = 2
    max_samples: int = 6400  # per round; 0: all of a client's samples


@dataclass(frozen=True)
class AudioConfig:
    """Audio input (``data.modality = "audio"``): clips, the log-mel front end, augmentation ranges.

    The front end is part of the encoder, so these values are saved with every checkpoint and
    the exported model takes the raw waveform (``crop-seconds`` at ``sample-rate``).
    """

    corpus_dir: str = "data/audio-corpus"  # scripts/make_audio_corpus.py: simulated shards and probe tasks
    sample_rate: int = 16000
    clip_seconds: float = 1.0  # files are cut/padded into clips of this length
    crop_seconds: float = 0.75  # the encoder's input: a random crop in training, the centre one in eval
    min_seconds: float = 0.1  # shorter files are skipped as too short
    n_mels: int = 40
    hop_ms: float = 15.0
    win_ms: float = 25.0
    mask_fraction: float = 0.15  # SpecAugment: up to this fraction of frames and of mel bands masked
    noise_snr_db: float = 15.0  # added noise at an SNR drawn from [this, this + 25] dB
    gain_db: float = 6.0  # gain drawn from [-this, +this] dB


@dataclass(frozen=True)
class VideoConfig:
    """Video input (``data.modality = "video"``): clips, the encoder, augmentation ranges.

    Saved with every checkpoint: the exported model takes ``crop-frames`` grey frames of ``size``.
    """

    corpus_dir: str = "data/video-corpus"  # scripts/make_video_corpus.py: simulated shards and probe tasks
    encoder: str = "r3d-tiny"  # fedssl.video.model.VIDEO_ENCODERS: "r3d-tiny" (CPU) or "r3d-18" (FedVSSL, GPU)
    frames: int = 16  # a device's videos are cut into clips of this many frames
    crop_frames: int = 8  # the encoder's input: a random window in training, the centre one in eval
    size: int = 32  # frames are scaled to size x size grey
    crop_min_scale: float = 0.5  # spatial crop (the same on every frame of a clip) of at least this area
    max_clips_per_file: int = 4


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
    # fold each reply into a running aggregate as it arrives (rules with a fold: fedavg, fairavg, loss,
    # fedvssl, ldawa); the robust rules always collect the round's replies
    streaming: bool = True


@dataclass(frozen=True)
class FilterConfig:
    enabled: bool = True
    min_z_std: float = 0.1
    min_rankme_ratio: float = 0.02  # rankme / embedding_dim
    max_norm_ratio: float = 10.0  # update norm / median update norm of the round
    probe_size: int = 256  # server-held probe images each update embeds to verify collapse (0: trust the reports)
    claim_tolerance: float = 4.0  # reported vs server-measured z-std and RankMe, as a factor (0: not compared)
    clip_ratio: float = 3.0  # clip each step's norm to this x the median accepted norm of recent rounds (0: off)
    norm_history: int = 5  # rounds of accepted norms the clip bound is derived from
    min_cosine: float = -1.0  # reject a step whose cosine with the previous global step is below (-1: off)


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
class DeviceConfig:
    """Limits within which each device picks its own batch size, precision and threads (fedssl.local_settings)."""

    precision: str = "auto"  # "auto": bf16 on CUDA with bf16, fp16 on other CUDA, fp32 on CPU; or one of PRECISIONS
    memory_fraction: float = 0.5  # of the device's memory that local training's estimate may fill
    min_batch_size: int = 8  # (or train.batch-size if smaller) a device that cannot fit it refuses to train
    threads: int = 0  # torch threads; 0: the cores this device may use (affinity and cgroup quota)


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
    transport_scope: str = "backbone"  # "model": the SSL heads travel and are averaged too
    client_update: str = "none"
    fedu_threshold: float = 0.5
    fedema_tau: float = 0.7
    metrics_port: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> RunConfig:
        """Build from Flower's ``context.run_config`` (kebab-case, dotted groups)."""
        return _validate(_build(cls, dict(flat), prefix=""))

    def to_flat(self) -> dict[str, Any]:
        """The inverse of :meth:`from_flat`, for ``ConfigRecord``s and checkpoints."""
        return _flatten(self, prefix="")


_GROUP_KEYS = {"model", "ssl", "train", "data", "audio", "video", "eval", "aggregation", "filter", "split", "device"}


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


def validate_audio(cfg: RunConfig) -> None:
    """Ranges of the ``audio.*`` keys (called by the audio modality)."""
    a = cfg.audio
    _in_range("audio.sample-rate", a.sample_rate, 4000, 96000)
    _in_range("audio.clip-seconds", a.clip_seconds, 0.1, 60.0)
    _in_range("audio.crop-seconds", a.crop_seconds, 0.05, a.clip_seconds)
    _in_range("audio.min-seconds", a.min_seconds, 0.0, a.clip_seconds)
    _in_range("audio.n-mels", a.n_mels, 8, 256)
    _in_range("audio.win-ms", a.win_ms, 1.0, 200.0)
    _in_range("audio.hop-ms", a.hop_ms, 1.0, a.win_ms)
    _in_range("audio.mask-fraction", a.mask_fraction, 0.0, 0.5)
    _in_range("audio.noise-snr-db", a.noise_snr_db, -10.0, 100.0)
    _in_range("audio.gain-db", a.gain_db, 0.0, 40.0)
    if cfg.model.in_channels != 1:
        raise ValueError(f"run config 'model.in-channels' = {cfg.model.in_channels} must be 1 with "
                         "'data.modality' = 'audio' (one log-mel channel)")


VIDEO_METHODS = ("simclr", "byol", "moco", "simsiam", "barlowtwins", "playback-speed", "catch-the-patch")
VIDEO_ONLY_METHODS = ("playback-speed", "catch-the-patch")  # pretext tasks that need frames


def validate_video(cfg: RunConfig) -> None:
    """Ranges of the ``video.*`` keys and what they require of other groups (called by the video modality)."""
    from fedssl.video.model import EMBEDDING_DIMS, VIDEO_ENCODERS

    v = cfg.video
    VIDEO_ENCODERS.check(v.encoder)
    _in_range("video.frames", v.frames, 2, 512)
    _in_range("video.crop-frames", v.crop_frames, 2, v.frames)
    _in_range("video.size", v.size, 16, 512)
    _in_range("video.crop-min-scale", v.crop_min_scale, 0.05, 1.0)
    _in_range("video.max-clips-per-file", v.max_clips_per_file, 1, 1000)
    _choice("ssl.method", cfg.ssl.method, VIDEO_METHODS)
    if cfg.ssl.method == "playback-speed" and v.frames < 2 * v.crop_frames:
        raise ValueError(f"run config 'video.frames' = {v.frames} must be at least twice 'video.crop-frames' = "
                         f"{v.crop_frames} with 'ssl.method' = 'playback-speed' (a 2x window spans twice the frames)")
    expected = EMBEDDING_DIMS[v.encoder]
    if cfg.model.readout != "pool" or cfg.model.embedding_dim != expected:
        raise ValueError(f"run config 'model.readout' = {cfg.model.readout!r}, 'model.embedding-dim' = "
                         f"{cfg.model.embedding_dim} do not fit 'video.encoder' = {v.encoder!r}: its embedding is "
                         f"its pooled last stage; set model.readout='pool' and model.embedding-dim={expected}")
    if cfg.model.in_channels != 1:
        raise ValueError(f"run config 'model.in-channels' = {cfg.model.in_channels} must be 1 with "
                         "'data.modality' = 'video' (grey clips)")
    if cfg.train.channels_last:
        raise ValueError("run config 'train.channels-last' = true does not apply to 3D convolutions; set it to "
                         "false with 'data.modality' = 'video'")


def _validate(cfg: RunConfig) -> RunConfig:
    from fedssl.data.partition import PARTITIONERS
    from fedssl.modality import MODALITIES
    from fedssl.models.encoders import ENCODERS, MAP_READOUTS, SMALLCNN_READOUTS, map_readout_dim
    from fedssl.ssl import BYOL_STYLE, METHODS

    modality = MODALITIES.get(cfg.data.modality)
    modality.validate(cfg)  # its own keys first: the checks below read its input size

    _in_range("num-rounds", cfg.num_rounds, 1)
    _in_range("fraction-train", cfg.fraction_train, 0.0, 1.0)
    _in_range("min-train-nodes", cfg.min_train_nodes, 1)
    _in_range("round-timeout", cfg.round_timeout, 1.0)
    _choice("transport-dtype", cfg.transport_dtype, TRANSPORT_DTYPES)
    _choice("transport-scope", cfg.transport_scope, TRANSPORT_SCOPES)
    if cfg.transport_scope == "model" and (cfg.mode != "full" or cfg.client_update != "none"):
        raise ValueError("run config 'transport-scope' = 'model' needs mode = 'full' and client-update = 'none' "
                         f"(got mode = {cfg.mode!r}, client-update = {cfg.client_update!r}): split mode and "
                         "FedU/FedEMA exchange the backbone only")
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
    _choice("model.readout", cfg.model.readout, SMALLCNN_READOUTS)
    if cfg.model.encoder == "smallcnn" and cfg.model.readout in MAP_READOUTS:
        height, width = modality.input_hw(cfg)
        expected = map_readout_dim(cfg.model.readout, height, width)
        if cfg.model.embedding_dim != expected:
            raise ValueError(f"run config 'model.embedding-dim' = {cfg.model.embedding_dim} does not match "
                             f"'model.readout' = {cfg.model.readout!r} at {cfg.data.modality} input "
                             f"{height}x{width}: it must be {expected}")
    elif cfg.model.readout != "pool":
        raise ValueError(f"run config 'model.readout' = {cfg.model.readout!r} applies to 'smallcnn' only; "
                         f"with 'model.encoder' = {cfg.model.encoder!r} set model.readout='pool' and "
                         "model.embedding-dim (e.g. 512)")
    METHODS.check(cfg.ssl.method)
    if cfg.ssl.method in VIDEO_ONLY_METHODS and cfg.data.modality != "video":
        raise ValueError(f"run config 'ssl.method' = {cfg.ssl.method!r} needs 'data.modality' = 'video', "
                         f"got {cfg.data.modality!r}")
    _in_range("ssl.temperature", cfg.ssl.temperature, 1e-3, 10.0)
    _in_range("ssl.proj-dim", cfg.ssl.proj_dim, 2)
    _in_range("ssl.hidden-dim", cfg.ssl.hidden_dim, 2)
    _in_range("ssl.momentum", cfg.ssl.momentum, 0.0, 1.0)
    _in_range("ssl.queue-size", cfg.ssl.queue_size, 1)
    _in_range("ssl.barlow-lambda", cfg.ssl.barlow_lambda, 0.0)
    _in_range("ssl.segments", cfg.ssl.segments, 2, 5)
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
        raise ValueError(f"run config 'eval.tasks' is empty; allowed tasks: {list(modality.tasks.names())}")
    for task in cfg.eval.tasks:
        modality.tasks.check(task)  # each modality has its own tasks; the error lists them
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
    _in_range("filter.probe-size", cfg.filter.probe_size, 0, 65536)
    if cfg.filter.probe_size == 1:
        raise ValueError("run config 'filter.probe-size' = 1: collapse needs at least 2 images (0 switches it off)")
    if cfg.filter.claim_tolerance and cfg.filter.claim_tolerance < 1.0:
        raise ValueError(f"run config 'filter.claim-tolerance' = {cfg.filter.claim_tolerance!r} must be 0 (off) "
                         "or at least 1 (a factor)")
    _in_range("filter.claim-tolerance", cfg.filter.claim_tolerance, 0.0)
    if cfg.filter.clip_ratio and cfg.filter.clip_ratio < 1.0:
        raise ValueError(f"run config 'filter.clip-ratio' = {cfg.filter.clip_ratio!r} must be 0 (off) or at least 1")
    _in_range("filter.clip-ratio", cfg.filter.clip_ratio, 0.0)
    _in_range("filter.norm-history", cfg.filter.norm_history, 1, 1000)
    _in_range("filter.min-cosine", cfg.filter.min_cosine, -1.0, 1.0)
    _validate_split(cfg)
    _choice("device.precision", cfg.device.precision, PRECISIONS)
    _in_range("device.memory-fraction", cfg.device.memory_fraction, 0.01, 1.0)
    _in_range("device.min-batch-size", cfg.device.min_batch_size, 2)
    _in_range("device.threads", cfg.device.threads, 0, 1024)
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
    if cfg.data.modality != "image":
        raise ValueError(f"run config 'mode' = 'split' cuts image encoders; 'data.modality' = "
                         f"{cfg.data.modality!r} must be 'image'")
