"""Server-side screening of client updates: every check a reply's arrays pass before they are aggregated.

Structure first from the arrays' metadata (keys, shapes, exact dtypes, byte sizes: nothing decoded), then
the values (NaN/Inf, integer buffers, the step's norm), the collapse filter (``z_std`` and RankMe floors)
and the norm-outlier check against the round's median. Metrics are checked in ``reply_metrics.py``, the
server's own collapse measurement in ``verification.py``. A rejected update never touches the global
model; its reason (a bounded set, also a Prometheus label) is recorded.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedssl import reply
from fedssl.config import FilterConfig

# Reasons, also used as Prometheus label values (bounded set).
MISSING_KEYS, EXTRA_KEYS, SHAPE, DTYPE, NAN, NORM, METRICS, COLLAPSE = (
    "missing-keys", "extra-keys", "shape", "dtype", "nan", "norm", "metrics", "collapse")
SKIPPED = "skipped"
BOUNDS = "bounds"  # a metric or integer buffer outside what the round's config allows
CLAIMS = "claims"  # reported z-std/RankMe disagree with what the server measured on its probe batch
DIRECTION = "direction"  # the update points against the previous global step
ERROR = "error"  # screening this reply raised: the reply is dropped, the round goes on
REASONS = (MISSING_KEYS, EXTRA_KEYS, SHAPE, DTYPE, NAN, NORM, METRICS, COLLAPSE, SKIPPED, BOUNDS, CLAIMS, DIRECTION,
           ERROR)
NPY_HEADER_MAX = 4096  # bytes a .npy header may add to an array's data (numpy writes 128, more for long shapes)


class RejectedUpdate(Exception):
    """A client update the server refuses to aggregate, with a machine-readable ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ArrayLike(Protocol):
    """What screening reads of a Flower ``Array`` before decoding it: metadata and the raw bytes."""

    dtype: str
    shape: tuple[int, ...]
    stype: str
    data: bytes

    def numpy(self) -> np.ndarray: ...


def check_keys(got: Mapping[str, object], reference: Mapping[str, np.ndarray]) -> None:
    """Exactly the reference's keys; the first problem raises :class:`RejectedUpdate`."""
    missing = sorted(set(reference) - set(got))
    if missing:
        raise RejectedUpdate(MISSING_KEYS, f"{len(missing)} missing, e.g. {missing[:3]}")
    extra = sorted(set(got) - set(reference))
    if extra:
        raise RejectedUpdate(EXTRA_KEYS, f"{len(extra)} unexpected, e.g. {extra[:3]}")


def check_metadata(record: Mapping[str, ArrayLike], reference: Mapping[str, np.ndarray],
                   float_dtype: str = "float32") -> None:
    """Keys, shapes, exact dtypes and byte sizes from the arrays' metadata, before any byte is decoded.

    Floating entries must arrive in exactly ``float_dtype`` (the run's ``transport-dtype``); every other
    entry in the reference's own dtype. A reply whose data is larger than its shape and dtype allow is
    refused unread.
    Raises:
        RejectedUpdate: with the first problem found.
    """
    check_keys(record, reference)
    for key, ref in reference.items():
        array = record[key]
        if tuple(array.shape) != ref.shape:
            raise RejectedUpdate(SHAPE, f"{key}: {tuple(array.shape)} != {ref.shape}")
        expected = np.dtype(float_dtype) if np.issubdtype(ref.dtype, np.floating) else ref.dtype
        if array.dtype != str(expected):
            raise RejectedUpdate(DTYPE, f"{key}: {array.dtype} where {expected} is expected")
        if array.stype != "numpy.ndarray" or len(array.data) > ref.size * expected.itemsize + NPY_HEADER_MAX:
            raise RejectedUpdate(SHAPE, f"{key}: {len(array.data)} bytes of {array.stype!r} for {ref.shape} "
                                        f"{expected}")


class DecodedOnAccess(Mapping[str, np.ndarray]):
    """A reply's arrays, decoded one key at a time when read (float16 widened to float32).

    The server keeps no decoded copy of any update: screening and aggregation read each key when they
    need it, so beyond the replies Flower holds, memory is O(model). A ``.npy`` array is a read-only view
    of the reply's own bytes (:func:`npy_view`), not a copy. ``record`` is anything whose items
    have ``.numpy()`` (a Flower ``ArrayRecord``); where they also carry ``dtype``/``shape`` metadata the
    decoded array must match it (the bytes may lie about both).
    """

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._record = record

    def __getitem__(self, key: str) -> np.ndarray:
        item = self._record[key]
        value = npy_view(item.data) if getattr(item, "stype", None) == "numpy.ndarray" else item.numpy()
        shape, dtype = tuple(getattr(item, "shape", value.shape)), getattr(item, "dtype", str(value.dtype))
        if value.shape != shape or str(value.dtype) != dtype:
            raise RejectedUpdate(SHAPE, f"{key}: decoded {value.shape} {value.dtype}, metadata says {shape} {dtype}")
        return value.astype(np.float32) if value.dtype == np.float16 else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._record)

    def __len__(self) -> int:
        return len(self._record)


NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
NPY_LENGTH_BYTES = {1: 2, 2: 4}  # after magic (6) and version (2): the header's length, 2 bytes in 1.0, 4 in 2.0
HEADER_CACHE_SIZE, HEADER_CACHE_MAX_BYTES = 4096, 1024  # bounded: a hostile stream cannot grow it
_headers: dict[bytes, tuple[tuple[int, ...], bool, np.dtype, int]] = {}


def _npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and data offset of a ``.npy`` byte string.

    Every reply of a round repeats the same headers (same model), and parsing one costs more than
    checking a small array, so parsed headers are remembered by their exact bytes.
    """
    length_bytes = NPY_LENGTH_BYTES.get(data[6]) if len(data) > 9 and data[:6] == b"\x93NUMPY" else None
    key = b""
    if length_bytes is not None and len(data) >= 8 + length_bytes:
        preamble = 8 + length_bytes
        end = preamble + int.from_bytes(data[8:preamble], "little")
        key = bytes(data[:end]) if end <= HEADER_CACHE_MAX_BYTES else b""
        if key in _headers:
            return _headers[key]
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        reader = NPY_HEADER_READERS.get(version)
        if reader is None:
            raise ValueError(f".npy format version {version} is not one the server reads")
        shape, fortran_order, dtype = reader(stream)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise RejectedUpdate(SHAPE, f"not a .npy array: {exc}"[:300]) from exc
    parsed = (shape, fortran_order, dtype, stream.tell())
    if key and stream.tell() == len(key) and len(_headers) < HEADER_CACHE_SIZE:
        _headers[key] = parsed
    return parsed


def npy_view(data: bytes) -> np.ndarray:
    """The array a ``.npy`` byte string holds, as a read-only view of those bytes (``np.load`` copies them).

    The header is parsed by NumPy's own format reader (once per distinct header); no object dtype,
    and the data must be exactly as long as the header's shape and dtype say.
    Raises:
        RejectedUpdate: ``shape``, for a malformed header, an object dtype or a length that disagrees.
    """
    shape, fortran_order, dtype, offset = _npy_header(data)
    count = int(np.prod(shape, dtype=np.int64))
    if dtype.hasobject or len(data) - offset != count * dtype.itemsize:
        raise RejectedUpdate(SHAPE, f"{len(data) - offset} bytes of {dtype} for shape {shape}")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C")


@dataclass
class ClientUpdate:
    node_id: int
    arrays: Mapping[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)
    norm: float = 0.0  # L2 size of the step from the global model (after clipping, if it was clipped)
    clipped: bool = False
    report: dict[str, Any] = field(default_factory=dict)  # its client report in the round record

    @property
    def num_examples(self) -> float:
        return self.metrics.get(reply.NUM_EXAMPLES, 0.0)

    @property
    def loss(self) -> float:
        return self.metrics.get(reply.LOSS, 0.0)


def check_structure(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                    max_int_advance: int = 0) -> float:
    """Same keys, shapes and exact dtypes as the global model (float16 transport already widened); finite
    floats; integer buffers (BatchNorm's ``num_batches_tracked``) non-negative and at most ``max_int_advance``
    above the global's value (0: no upper bound; a FedU/FedEMA device may send its own older counter).

    Returns:
        the update norm, L2 of ``arrays - reference`` over floating entries (float32 per key: precise
        enough for a ratio-to-median test), taken in the same read of each array: reading a reply's
        array decodes it, the costly part of screening.
    Raises:
        RejectedUpdate: with the first problem found.
    """
    check_keys(arrays, reference)
    squared = 0.0
    for key, ref in reference.items():
        value = arrays[key]
        if value.shape != ref.shape:
            raise RejectedUpdate(SHAPE, f"{key}: {value.shape} != {ref.shape}")
        if value.dtype != ref.dtype:
            raise RejectedUpdate(DTYPE, f"{key}: {value.dtype} where {ref.dtype} is expected")
        if np.issubdtype(ref.dtype, np.floating):
            step = _squared_step(value, ref)
            if not np.isfinite(step) and not np.isfinite(value).all():  # a finite but huge step: norm inf
                raise RejectedUpdate(NAN, f"{key} holds NaN or Inf")
            squared += step
        elif value.size and ((value < 0).any() or (max_int_advance and (value > ref + max_int_advance).any())):
            raise RejectedUpdate(BOUNDS, f"{key}: {value.min()}..{value.max()} is negative or more than "
                                         f"{max_int_advance} above the global's {ref.max()}")
    return squared ** 0.5


STEP_BLOCK = 1 << 16  # elements per block: the difference stays in cache instead of making a third array


def _squared_step(value: np.ndarray, ref: np.ndarray) -> float:
    """``||value - ref||^2`` (float32 per block, summed in float64), NaN/Inf if ``value`` holds any."""
    value, ref = value.reshape(-1), ref.reshape(-1)
    if value.size <= STEP_BLOCK:
        diff = np.subtract(value, ref, dtype=np.float32)
        return float(np.vdot(diff, diff))
    diff = np.empty(STEP_BLOCK, dtype=np.float32)
    total = 0.0
    for start in range(0, value.size, STEP_BLOCK):
        part = diff[:min(STEP_BLOCK, value.size - start)]
        np.subtract(value[start:start + STEP_BLOCK], ref[start:start + STEP_BLOCK], out=part, dtype=np.float32)
        total += float(np.vdot(part, part))
    return total


def check_norms(norms: Mapping[int, float], max_ratio: float) -> dict[int, RejectedUpdate]:
    """Reject updates whose norm is more than ``max_ratio`` times the round's median norm."""
    if len(norms) < 3:  # a median of two says nothing about which one is the outlier
        return {}
    median = float(np.median(list(norms.values())))
    limit = max_ratio * max(median, 1e-12)
    return {node: RejectedUpdate(NORM, f"update norm {n:.3g} > {max_ratio:g} x median {median:.3g}")
            for node, n in norms.items() if n > limit}


class NormReference:
    """The norm screen of a streamed round, where the round's median is not known until its last reply.

    Each update is judged against ``max_ratio`` x a median known before it arrives: the median accepted
    step norm of recent rounds (the step guard's history). A round with no history (a run's first) holds
    its first :attr:`WARMUP` candidates (so at most that many updates are held), takes their median,
    judges them, and streams the rest against it. A round that ends with fewer held is judged against
    their own median when there are at least three, as a collected round is, and without a norm screen
    otherwise (a median of two says nothing about which one is the outlier).

    The first replies set that first reference, and a device that does not train can reply first: the
    median of five stays honest with up to two such colluders among the first five (the collected
    round's median of all replies resists more). From the second round on, the reference is the median
    of all accepted norms of earlier rounds.
    """

    WARMUP = 5
    MIN_FOR_MEDIAN = 3

    def __init__(self, max_ratio: float, history_median: float | None) -> None:
        self.max_ratio = max_ratio
        self.median = history_median
        self.warmup_norms: list[float] = []  # the held candidates' norms when there was no history
        self._held: list[Any] = []

    def admit(self, candidate: Any) -> list[Any]:
        """The candidates ready to be judged now: this one, or the held ones once the median is known."""
        if self.median is not None:
            return [candidate]
        self._held.append(candidate)
        return self._release() if len(self._held) >= self.WARMUP else []

    def flush(self) -> list[Any]:
        """What is still held at the end of the round, with its own median when there are three or more."""
        return self._release()

    def _release(self) -> list[Any]:
        ready, self._held = self._held, []
        if ready:
            self.warmup_norms = [c.norm for c in ready]
            if len(ready) >= self.MIN_FOR_MEDIAN:
                self.median = float(np.median(self.warmup_norms))
        return ready

    def check(self, norm: float) -> None:
        """Raises:
            RejectedUpdate: ``norm``, if ``norm`` is above ``max_ratio`` x the reference median.
        """
        if self.median is None:
            return
        limit = self.max_ratio * max(self.median, 1e-12)
        if norm > limit:
            raise RejectedUpdate(NORM, f"update norm {norm:.3g} > {self.max_ratio:g} x reference median "
                                       f"{self.median:.3g}")


def check_collapse(metrics: Mapping[str, float], cfg: FilterConfig, embedding_dim: int) -> None:
    """The collapse filter: reject a reply whose ``z_std`` or ``rankme / dim`` is below the configured floor.

    Healthy embeddings have ``z_std`` near 1 and a RankMe that is a fair share of the dimension; a
    collapsed encoder (every image the same embedding) has both near 0 and 1.
    Raises:
        RejectedUpdate: with reason ``collapse`` and the offending figure.
    """
    if not cfg.enabled:
        return
    if metrics[reply.Z_STD] < cfg.min_z_std:
        raise RejectedUpdate(COLLAPSE, f"z_std {metrics[reply.Z_STD]:.3f} < {cfg.min_z_std}")
    ratio = metrics[reply.RANKME] / embedding_dim
    if ratio < cfg.min_rankme_ratio:
        raise RejectedUpdate(COLLAPSE, f"rankme/dim {ratio:.3f} < {cfg.min_rankme_ratio}")
