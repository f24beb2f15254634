"""Thread defaults from CPU topology and cgroup quotas: table tests on fake sysfs/cgroup trees, and one on
this machine's real ones."""

import os
from pathlib import Path

import pytest

from moechat.engine.engine import Engine
from moechat.engine.threads import CpuBudget, cgroup_quota, cpu_budget, parse_cpulist, physical_cores, this_machine


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


def smt_topology(cores: int, threads_per_core: int) -> dict[str, str]:
    """Linux's numbering on x86: CPU n and n + cores are siblings of one core."""
    files = {}
    for cpu in range(cores * threads_per_core):
        siblings = ",".join(str(cpu % cores + t * cores) for t in range(threads_per_core))
        files[f"cpu{cpu}/topology/core_cpus_list"] = siblings
    return files


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", {0}), ("0-3", {0, 1, 2, 3}), ("0-1,8,10-11", {0, 1, 8, 10, 11}), ("", set()), ("3,1\n", {1, 3})],
)
def test_cpulist_parsing(text, cpus):
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize(
    ("cores", "smt", "allowed", "physical"),
    [
        (2, 1, range(2), 2),  # a 2-vCPU VM without hyper-threading: both CPUs are cores
        (4, 2, range(8), 4),  # hyper-threads count once
        (4, 2, [0, 4], 1),  # affinity to one core's two threads
        (4, 2, [0, 1, 4], 2),
        (8, 2, [3], 1),
    ],
)
def test_physical_cores_from_sibling_lists(tmp_path, cores, smt, allowed, physical):
    sys_cpu = write(tmp_path, smt_topology(cores, smt))
    assert physical_cores(allowed, sys_cpu) == physical


def test_older_kernels_thread_siblings_list_and_core_ids(tmp_path):
    old = write(
        tmp_path / "old", {"cpu0/topology/thread_siblings_list": "0-1", "cpu1/topology/thread_siblings_list": "0-1"}
    )
    assert physical_cores([0, 1], old) == 1
    ids = {  # two sockets, core 0 in each: the pair (package, core) names a core
        "cpu0/topology/physical_package_id": "0",
        "cpu0/topology/core_id": "0",
        "cpu1/topology/physical_package_id": "1",
        "cpu1/topology/core_id": "0",
    }
    assert physical_cores([0, 1], write(tmp_path / "ids", ids)) == 2


def test_unreadable_topology_is_none_and_threads_fall_back_to_logical_cpus(tmp_path):
    assert physical_cores([0, 1], tmp_path) is None
    budget = cpu_budget([0, 1, 2], sys_cpu=tmp_path, cgroup_root=tmp_path)
    assert (budget.threads, budget.batch_threads) == (3, 3)
    assert "unreadable" in budget.note


V2 = {"cgroup.controllers": "cpu memory"}


@pytest.mark.parametrize(
    ("files", "proc", "quota"),
    [
        ({**V2, "cpu.max": "200000 100000"}, "0::/", 2.0),  # a 2-vCPU container (cgroup namespace)
        ({**V2, "cpu.max": "max 100000"}, "0::/", None),
        ({**V2, "cpu.max": "150000 100000"}, "0::/", 1.5),
        ({**V2, "a/cpu.max": "100000 100000", "a/b/cpu.max": "max 100000"}, "0::/a/b", 1.0),  # an ancestor's limit
        ({**V2, "a/cpu.max": "400000 100000", "a/b/cpu.max": "300000 100000"}, "0::/a/b", 3.0),  # the tightest
        ({**V2, "cpu.max": "200000 100000"}, "0::/docker/abc", 2.0),  # path not visible in the container
        ({**V2}, "0::/", None),  # the root cgroup has no cpu.max
        ({"unified/cgroup.controllers": "", "unified/cpu.max": "100000 100000"}, "0::/", 1.0),  # hybrid mount
        ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, "1:cpu:/\n0::/", 2.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "1:cpu:/\n0::/", None),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, "3:cpu,cpuacct:/", 0.5),
        ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, "2:cpuacct:/", None),  # not cpu
        ({}, "", None),
    ],
)
def test_cgroup_quota(tmp_path, files, proc, quota):
    assert cgroup_quota(proc, write(tmp_path, files)) == quota


@pytest.mark.parametrize(
    ("budget", "threads", "batch", "note"),
    [
        (CpuBudget(2, 2, None), 2, 2, "2 physical cores"),
        (CpuBudget(1, 1, None), 1, 1, "1 physical core"),
        (CpuBudget(16, 8, None), 8, 16, "8 physical cores of 16 logical CPUs"),
        (CpuBudget(64, 32, 2.0), 2, 2, "32 physical cores of 64 logical CPUs, cgroup quota 2 CPUs"),
        (CpuBudget(4, 4, 2.5), 2, 2, "4 physical cores, cgroup quota 2.5 CPUs"),
        (CpuBudget(2, 2, 0.5), 1, 1, "2 physical cores, cgroup quota 0.5 CPUs"),
        (CpuBudget(2, 2, 8.0), 2, 2, "2 physical cores"),  # a quota above the cores changes nothing
    ],
)
def test_threads_and_why(budget, threads, batch, note):
    assert (budget.threads, budget.batch_threads, budget.note) == (threads, batch, note)


def test_a_hosted_container_on_a_big_host(tmp_path):
    """A Space: the host's 16 cores / 32 threads are visible, 2 vCPUs are granted."""
    sys_cpu = write(tmp_path / "sys", smt_topology(16, 2))
    cgroup = write(tmp_path / "cg", {**V2, "cpu.max": "200000 100000"})
    budget = cpu_budget(range(32), sys_cpu=sys_cpu, cgroup_root=cgroup, proc_cgroup="0::/")
    assert (budget.threads, budget.batch_threads) == (2, 2)


def test_this_machine_agrees_with_an_independent_count():
    """Cores counted here as distinct (package, die, core id) of the allowed CPUs, another sysfs view."""
    allowed = os.sched_getaffinity(0)
    budget = this_machine()
    assert budget.logical == len(allowed)
    topo = [Path(f"/sys/devices/system/cpu/cpu{c}/topology") for c in allowed]
    if not all((t / "core_id").exists() for t in topo):
        pytest.skip("no CPU topology in sysfs here")
    ids = {tuple((t / f).read_text().strip() for f in ("physical_package_id", "die_id", "core_id")) for t in topo}
    assert budget.physical == len(ids)
    assert 1 <= budget.threads <= budget.batch_threads <= len(allowed)


def test_engine_load_defaults_to_the_budget_and_keeps_an_explicit_count(tiny_moe_path):
    budget = this_machine()
    with Engine.load(tiny_moe_path, n_ctx=256) as engine:
        assert (engine.report.n_threads, engine.report.threads_note) == (budget.threads, budget.note)
        assert engine.report.n_threads_batch == budget.batch_threads
    with Engine.load(tiny_moe_path, n_ctx=256, n_threads=3) as engine:
        assert (engine.report.n_threads, engine.report.threads_note) == (3, "requested")
        assert engine.report.n_threads_batch == max(budget.batch_threads, 3)
