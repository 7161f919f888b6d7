"""What this device has to train with: usable CPU cores, memory, and its accelerator.

A SuperNode in a Kubernetes pod or a Docker container sees the host's cores and memory in
``os.cpu_count()`` and ``/proc/meminfo``, but may only use what its cgroup grants; a Jetson's GPU
shares the board's 4-8 GB with the CPU. So the profile takes the smallest of what the kernel
reports, and node-config overrides (``device-cpus``, ``device-memory-mb``, ``device-accelerator``)
pin it: that is how an operator states a limit the device cannot see, and how tests simulate one.

The readers take file paths, so tests point them at real cgroup files written to a temporary folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

CGROUP = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
MEMINFO = Path("/proc/meminfo")
ACCELERATORS = ("cpu", "cuda")
MIB = 2**20
# Node-config keys that override what was measured (Flower's node config: `--node-config "device-memory-mb=4096"`).
CPUS_KEY, MEMORY_KEY, ACCELERATOR_KEY = "device-cpus", "device-memory-mb", "device-accelerator"
BF16_KEY, FP16_KEY = "device-bf16", "device-fp16"


@dataclass(frozen=True)
class DeviceProfile:
    """The resources local training may use; ``memory_mb`` is the accelerator's (host RAM on CPU)."""

    cpus: int
    memory_mb: float
    accelerator: str = "cpu"
    bf16: bool = False  # autocast in bfloat16 is supported (CUDA compute capability >= 8.0)
    fp16: bool = False  # autocast in float16 is supported (any CUDA device)


def usable_cpus(cgroup: Path = CGROUP, env: Mapping[str, str] | None = None,
                proc_cgroup: Path = PROC_CGROUP) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota and ``OMP_NUM_THREADS``.

    ``OMP_NUM_THREADS`` counts because the launcher sets it for one-core SuperNodes and Ray sets it to
    a simulated client's ``client-resources-num-cpus``: more threads would only compete for those cores.
    A fractional quota rounds up (1.5 cores run 2 threads; half a core still runs one).
    """
    env = os.environ if env is None else env
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup, proc_cgroup)
    if quota:
        cores = min(cores, math.ceil(quota))
    omp = env.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    return max(1, cores)


def cgroup_cpu_quota(cgroup: Path = CGROUP, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """Cores the CPU quota grants this process (the smallest along its cgroup and their parents); None if none.

    cgroup v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``). cgroup v1 (Docker on
    v1 hosts, ``docker run --cpus 2``): ``cpu/cpu.cfs_quota_us`` over ``cpu/cpu.cfs_period_us``, -1
    when unlimited. Inside a container the mount's root is the container's own cgroup; on a host
    ``/proc/self/cgroup`` names it (a systemd slice with ``CPUQuota=``), so both are read.
    """
    v2, v1 = _own_cgroups(proc_cgroup)
    quotas = [q for d in _with_parents(cgroup, v2) if (q := _v2_quota(d)) is not None]
    quotas += [q for d in _with_parents(cgroup / "cpu", v1) if (q := _v1_quota(d)) is not None]
    return min(quotas) if quotas else None


def _own_cgroups(proc_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup path under the v2 hierarchy and under v1's ``cpu`` controller ("" if unknown)."""
    v2 = v1 = ""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _with_parents(root: Path, own: str) -> list[Path]:
    """``root``, and ``root/own`` with each of its parents below ``root``, deepest first."""
    parts = [p for p in own.strip("/").split("/") if p and p != ".."]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), 0, -1)] + [root]


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def memory_limit_mb(cgroup: Path = CGROUP, meminfo: Path = MEMINFO) -> float:
    """Host memory this process may use: the smallest of ``MemTotal`` and the cgroup (v2 or v1) limit."""
    limits = [_meminfo_total(meminfo)]
    for name in ("memory.max", "memory/memory.limit_in_bytes", "memory.limit_in_bytes"):
        try:
            text = (cgroup / name).read_text().strip()
        except OSError:
            continue
        if text != "max":  # v1 writes a huge number (~2**63) for "no limit": min() ignores it
            limits.append(int(text) / MIB)
    known = [mb for mb in limits if mb is not None]
    if not known:
        raise ValueError(f"cannot read this device's memory from {meminfo} or {cgroup}; "
                         f"set node config '{MEMORY_KEY}'")
    return min(known)


def _meminfo_total(meminfo: Path) -> float | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def measure_device(overrides: Mapping[str, Any] | None = None, *, cgroup: Path = CGROUP,
                   meminfo: Path = MEMINFO) -> DeviceProfile:
    """Measure this device, then apply node-config ``overrides`` (simulated or operator-stated limits).

    Raises:
        ValueError: naming the node-config key of an override that is not a valid value.
    """
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        profile = DeviceProfile(cpus=usable_cpus(cgroup), memory_mb=props.total_memory / MIB, accelerator="cuda",
                                bf16=torch.cuda.is_bf16_supported(), fp16=True)
    else:
        profile = DeviceProfile(cpus=usable_cpus(cgroup), memory_mb=memory_limit_mb(cgroup, meminfo))
    return with_overrides(profile, overrides or {})


def with_overrides(profile: DeviceProfile, overrides: Mapping[str, Any]) -> DeviceProfile:
    """``profile`` with the ``device-*`` node-config keys present in ``overrides`` applied."""
    changes: dict[str, Any] = {}
    if CPUS_KEY in overrides:
        changes["cpus"] = int(_number(CPUS_KEY, overrides[CPUS_KEY], 1))
    if MEMORY_KEY in overrides:
        changes["memory_mb"] = _number(MEMORY_KEY, overrides[MEMORY_KEY], 1)
    if ACCELERATOR_KEY in overrides:
        accelerator = str(overrides[ACCELERATOR_KEY])
        if accelerator not in ACCELERATORS:
            raise ValueError(f"node config '{ACCELERATOR_KEY}' = {accelerator!r} is not one of {list(ACCELERATORS)}")
        changes["accelerator"] = accelerator
        if accelerator == "cpu":  # precision support follows the accelerator unless stated below
            changes.update(bf16=False, fp16=False)
    for key, name in ((BF16_KEY, "bf16"), (FP16_KEY, "fp16")):
        if key in overrides:
            changes[name] = _flag(key, overrides[key])
    return replace(profile, **changes)


def _number(key: str, value: Any, low: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < low:
        raise ValueError(f"node config '{key}' = {value!r} is not a number >= {low:g}")
    return number


def _flag(key: str, value: Any) -> bool:
    text = str(value).lower()
    if text not in ("true", "false", "1", "0"):
        raise ValueError(f"node config '{key}' = {value!r} is not true or false")
    return text in ("true", "1")
