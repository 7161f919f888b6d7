"""Split a labelled data set into non-IID client shards; labels are used only here and in evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np

from fedssl.registry import Registry

log = logging.getLogger(__name__)


def partition_iid(num_samples: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    """A random, equal-sized split."""
    perm = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(p) for p in np.array_split(perm, num_partitions)]


def partition_dirichlet(labels: np.ndarray, num_partitions: int, alpha: float, seed: int,
                        min_size: int = 10, max_tries: int = 100) -> list[np.ndarray]:
    """Per class, share samples among clients in proportions drawn from Dir(alpha).

    Small alpha gives few classes per client. Redraws until every client has
    ``min_size`` samples (when the data allow it).
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    min_size = min(min_size, len(labels) // num_partitions)
    for _ in range(max_tries):
        shards: list[list[int]] = [[] for _ in range(num_partitions)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_partitions, alpha))) * len(idx)).astype(int)[:-1]
            for shard, part in zip(shards, np.split(idx, cuts)):
                shard.extend(part.tolist())
        if min(len(s) for s in shards) >= min_size:
            break
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


def partition_classes(labels: np.ndarray, num_partitions: int, classes_per_client: int,
                      seed: int) -> list[np.ndarray]:
    """Each client sees ``k`` classes; a class's samples are split among the clients that hold it.

    Classes are dealt round-robin so all are covered when ``num_partitions * k >= classes``;
    otherwise the unassigned classes' samples are left out (with a warning).
    """
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    k = min(classes_per_client, len(classes))
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(num_partitions):
        for j in range(k):
            owners[int(classes[(client * k + j) % len(classes)])].append(client)
    shards: list[list[int]] = [[] for _ in range(num_partitions)]
    for c, clients in owners.items():
        if not clients:
            log.warning("class %s is held by no client (%d clients x %d classes)", c, num_partitions, k)
            continue
        idx = rng.permutation(np.flatnonzero(labels == c))
        for client, part in zip(clients, np.array_split(idx, len(clients))):
            shards[client].extend(part.tolist())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


# partitioner(labels, num_partitions, alpha=, classes_per_client=, seed=) -> one index array per client
Partitioner = Callable[..., list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("data.partition")
PARTITIONERS.add("iid", lambda labels, n, *, alpha, classes_per_client, seed: partition_iid(len(labels), n, seed))
PARTITIONERS.add("dirichlet", lambda labels, n, *, alpha, classes_per_client, seed:
                 partition_dirichlet(labels, n, alpha, seed))
PARTITIONERS.add("classes-per-client", lambda labels, n, *, alpha, classes_per_client, seed:
                 partition_classes(labels, n, classes_per_client, seed))


def partition(labels: np.ndarray, num_partitions: int, scheme: str, *, alpha: float = 0.5,
              classes_per_client: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Split with the partitioner registered as ``scheme`` (``PARTITIONERS``).

    Raises:
        ValueError: for an unknown scheme or fewer than one partition.
    """
    partitioner = PARTITIONERS.get(scheme)
    if num_partitions < 1:
        raise ValueError(f"num-partitions = {num_partitions} must be >= 1")
    return partitioner(labels, num_partitions, alpha=alpha, classes_per_client=classes_per_client, seed=seed)


def node_partition(node_config: Mapping[str, object], folder: str, shard: str) -> tuple[int, int]:
    """``(partition-id, num-partitions)`` of a simulated node, for nodes without a ``data-dir``.

    ``folder`` and ``shard`` name, for the error message, what ``data-dir`` and a partition would hold.

    Raises:
        ValueError: if either key is missing or the id is out of range.
    """
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        raise ValueError(f"node config needs 'data-dir' ({folder}) or "
                         f"'partition-id' and 'num-partitions' ({shard})")
    pid, n = int(node_config["partition-id"]), int(node_config["num-partitions"])
    if not 0 <= pid < n:
        raise ValueError(f"node config 'partition-id' = {pid} is out of range [0, {n - 1}]")
    return pid, n
