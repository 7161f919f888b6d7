"""What a device measures of itself, read from real (fake-host) cgroup and meminfo files, and node-config overrides."""

import os

import pytest

from fedssl.device_profile import (
    MIB,
    DeviceProfile,
    cgroup_cpu_quota,
    measure_device,
    memory_limit_mb,
    usable_cpus,
    with_overrides,
)

AFFINITY = len(os.sched_getaffinity(0))


def _host(tmp_path, mem_total_kb=8 * 1024 * 1024, **files):
    """A fake /sys/fs/cgroup folder with ``files`` (name -> text) and a fake /proc/meminfo."""
    cgroup = tmp_path / "cgroup"
    for name, text in files.items():
        path = cgroup / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    cgroup.mkdir(exist_ok=True)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {mem_total_kb} kB\nMemFree:         1024 kB\n")
    return cgroup, meminfo


def test_cgroup_v2_memory_limit_below_the_host_total_wins(tmp_path):
    cgroup, meminfo = _host(tmp_path, **{"memory.max": f"{4096 * MIB}\n"})
    assert memory_limit_mb(cgroup, meminfo) == 4096


def test_cgroup_v2_max_means_the_host_total(tmp_path):
    cgroup, meminfo = _host(tmp_path, mem_total_kb=6 * 1024 * 1024, **{"memory.max": "max\n"})
    assert memory_limit_mb(cgroup, meminfo) == 6 * 1024


def test_cgroup_v1_limit_and_its_no_limit_sentinel(tmp_path):
    limited, meminfo = _host(tmp_path / "a", **{"memory__memory.limit_in_bytes": f"{2048 * MIB}\n"})
    assert memory_limit_mb(limited, meminfo) == 2048
    unlimited, meminfo = _host(tmp_path / "b", **{"memory__memory.limit_in_bytes": "9223372036854771712\n"})
    assert memory_limit_mb(unlimited, meminfo) == 8 * 1024  # v1's "no limit" is a huge number: MemTotal wins


def test_no_readable_memory_source_asks_for_the_node_config_key(tmp_path):
    with pytest.raises(ValueError, match="device-memory-mb"):
        memory_limit_mb(tmp_path / "none", tmp_path / "no-meminfo")


def test_cpu_quota_caps_the_affinity_and_max_does_not(tmp_path):
    half, _ = _host(tmp_path / "a", **{"cpu.max": "50000 100000\n"})
    assert cgroup_cpu_quota(half) == 0.5
    assert usable_cpus(half, env={}) == 1  # half a core still runs one thread
    unlimited, _ = _host(tmp_path / "b", **{"cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(unlimited) is None
    assert usable_cpus(unlimited, env={}) == AFFINITY
    many, _ = _host(tmp_path / "c", **{"cpu.max": "6400000 100000\n"})  # 64 cores granted: affinity is the cap
    assert usable_cpus(many, env={}) == AFFINITY


def test_cgroup_v1_cfs_quota_caps_the_cores_and_minus_one_does_not(tmp_path):
    no_proc = tmp_path / "no-proc-cgroup"
    one_and_half, _ = _host(tmp_path / "a", **{"cpu__cpu.cfs_quota_us": "150000\n",
                                               "cpu__cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(one_and_half, no_proc) == 1.5
    assert usable_cpus(one_and_half, env={}, proc_cgroup=no_proc) == min(AFFINITY, 2)
    half, _ = _host(tmp_path / "b", **{"cpu__cpu.cfs_quota_us": "50000\n", "cpu__cpu.cfs_period_us": "100000\n"})
    assert usable_cpus(half, env={}, proc_cgroup=no_proc) == 1  # `docker run --cpus 0.5` on a cgroup v1 host
    unlimited, _ = _host(tmp_path / "c", **{"cpu__cpu.cfs_quota_us": "-1\n", "cpu__cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(unlimited, no_proc) is None
    assert usable_cpus(unlimited, env={}, proc_cgroup=no_proc) == AFFINITY


def test_the_quota_of_this_process_own_cgroup_or_a_parent_counts(tmp_path):
    """On a host, /proc/self/cgroup names the cgroup (a systemd slice with CPUQuota=); the smallest quota wins."""
    cgroup, _ = _host(tmp_path, **{"cpu.max": "max 100000\n",
                                   "fedssl.slice__cpu.max": "300000 100000\n",
                                   "fedssl.slice__node-1.scope__cpu.max": "max 100000\n",
                                   "cpu__fedssl.slice__cpu.cfs_quota_us": "200000\n",
                                   "cpu__fedssl.slice__cpu.cfs_period_us": "100000\n"})
    v2_only = tmp_path / "v2-cgroup"
    v2_only.write_text("0::/fedssl.slice/node-1.scope\n")
    assert cgroup_cpu_quota(cgroup, v2_only) == 3.0  # the slice's quota binds its scope
    both = tmp_path / "v1-cgroup"
    both.write_text("4:memory:/x\n3:cpu,cpuacct:/fedssl.slice\n0::/fedssl.slice/node-1.scope\n")
    assert cgroup_cpu_quota(cgroup, both) == 2.0  # v1's cpu controller grants less
    assert usable_cpus(cgroup, env={}, proc_cgroup=both) == min(AFFINITY, 2)
    assert cgroup_cpu_quota(cgroup, tmp_path / "absent") is None  # only the root's "max" left


def test_omp_num_threads_caps_the_cores(tmp_path):
    cgroup, _ = _host(tmp_path)
    assert usable_cpus(cgroup, env={"OMP_NUM_THREADS": "1"}) == 1
    assert usable_cpus(cgroup, env={"OMP_NUM_THREADS": "junk"}) == AFFINITY


def test_measure_reads_this_host_and_overrides_simulate_a_jetson(tmp_path):
    cgroup, meminfo = _host(tmp_path, **{"memory.max": f"{3000 * MIB}\n"})
    measured = measure_device({}, cgroup=cgroup, meminfo=meminfo)
    assert measured.accelerator in ("cpu", "cuda") and 1 <= measured.cpus <= AFFINITY
    if measured.accelerator == "cpu":  # the cgroup's 3000 MiB, below the fake host's 8 GiB
        assert measured.memory_mb == 3000 and not (measured.bf16 or measured.fp16)
    jetson = measure_device({"device-memory-mb": "4096", "device-cpus": 6, "device-accelerator": "cuda",
                             "device-bf16": "true", "device-fp16": True}, cgroup=cgroup, meminfo=meminfo)
    assert jetson == DeviceProfile(cpus=6, memory_mb=4096.0, accelerator="cuda", bf16=True, fp16=True)


def test_a_cpu_override_drops_half_precision_unless_stated():
    gpu = DeviceProfile(cpus=8, memory_mb=80_000, accelerator="cuda", bf16=True, fp16=True)
    assert with_overrides(gpu, {"device-accelerator": "cpu"}) == DeviceProfile(cpus=8, memory_mb=80_000)
    assert with_overrides(gpu, {"device-accelerator": "cpu", "device-bf16": 1}).bf16


@pytest.mark.parametrize(("key", "value"), [("device-memory-mb", "lots"), ("device-memory-mb", 0),
                                            ("device-cpus", -2), ("device-accelerator", "tpu"),
                                            ("device-bf16", "maybe")])
def test_bad_overrides_name_the_node_config_key(key, value):
    with pytest.raises(ValueError, match=f"'{key}' = {value!r}"):
        with_overrides(DeviceProfile(cpus=2, memory_mb=1000), {key: value})
