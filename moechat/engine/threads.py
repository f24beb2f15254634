"""How many CPU threads this process should use: physical cores from the kernel's CPU topology, restricted to
the CPUs the process may run on (affinity) and capped by its cgroup CPU quota.

A hosted container (e.g. a 2-vCPU Space) sees the host's CPUs in /proc and sysfs but is granted only a quota
of CPU time; more threads than the quota only queue behind each other. Generation runs one thread per physical
core (hyper-threads share a core's arithmetic units); prompt evaluation may use every allowed logical CPU.

Pure parsing over a sysfs/cgroup tree given as paths, so tests feed it fake trees; `this_machine()` reads the
real ones once.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SYS_CPU = Path("/sys/devices/system/cpu")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process can use. physical is None when the topology could not be read."""

    logical: int  # CPUs in the affinity mask
    physical: int | None  # distinct cores among them
    quota: float | None  # CPUs' worth of time granted by the cgroup (None: no limit)

    @property
    def threads(self) -> int:
        """Generation threads: one per physical core (logical CPUs when unknown), within the quota."""
        return self._capped(self.physical or self.logical)

    @property
    def batch_threads(self) -> int:
        """Prompt-evaluation threads: every allowed logical CPU, within the quota."""
        return self._capped(self.logical)

    @property
    def note(self) -> str:
        """Why `threads`, in a few words: '2 physical cores', '8 physical cores, cgroup quota 2 CPUs'."""
        if self.physical is None:
            base = f"{_plural(self.logical, 'logical CPU')} (core topology unreadable)"
        else:
            base = _plural(self.physical, "physical core")
            if self.physical != self.logical:
                base += f" of {_plural(self.logical, 'logical CPU')}"
        if self.threads < (self.physical or self.logical):
            base += f", cgroup quota {self.quota:g} CPUs"
        return base

    def _capped(self, n: int) -> int:
        if self.quota is not None:
            n = min(n, math.floor(self.quota))
        return max(n, 1)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def parse_cpulist(text: str) -> frozenset[int]:
    """The kernel's CPU list format, e.g. '0-3,8,10-11' -> {0, 1, 2, 3, 8, 10, 11}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return frozenset(cpus)


def physical_cores(cpus: Iterable[int], sys_cpu: Path = SYS_CPU) -> int | None:
    """Distinct cores among `cpus`: each CPU's set of hardware-thread siblings names its core.
    None when any CPU's topology is missing (no sysfs, e.g. some sandboxes)."""
    cores: set[object] = set()
    for cpu in cpus:
        topo = sys_cpu / f"cpu{cpu}" / "topology"
        siblings = _read(topo / "core_cpus_list") or _read(topo / "thread_siblings_list")
        if siblings:
            cores.add(parse_cpulist(siblings))
            continue
        package, core = _read(topo / "physical_package_id"), _read(topo / "core_id")
        if package is None or core is None:
            return None
        cores.add((package, core))
    return len(cores) or None


def cgroup_quota(proc_cgroup: str, root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time this process's cgroup (or an ancestor) may use, from cgroup v2 `cpu.max`
    ('200000 100000' = 2 CPUs, 'max ...' = no limit) or v1 `cpu.cfs_quota_us / cpu.cfs_period_us` (-1 = no
    limit). `proc_cgroup` is /proc/self/cgroup's text. None when no limit is set or nothing is readable."""
    limits: list[float] = []
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            mount = root if (root / "cgroup.controllers").exists() else root / "unified"
            limits += [q for d in _chain(mount, path) if (q := _v2_quota(d)) is not None]
        elif "cpu" in controllers.split(","):
            for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                limits += [q for d in _chain(root / name, path) if (q := _v1_quota(d)) is not None]
    return min(limits) if limits else None


def _chain(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and its ancestors up to the mount (in a container the path may not exist below
    the mount, whose root is then the container's own cgroup)."""
    parts = [p for p in path.strip().split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(folder: Path) -> float | None:
    text = _read(folder / "cpu.max")
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max":
        return None
    return int(quota) / int(period or 100000)


def _v1_quota(folder: Path) -> float | None:
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    if quota is None or period is None or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def cpu_budget(
    allowed: Iterable[int], sys_cpu: Path = SYS_CPU, cgroup_root: Path = CGROUP_ROOT, proc_cgroup: str = ""
) -> CpuBudget:
    allowed = frozenset(allowed)
    return CpuBudget(len(allowed), physical_cores(sorted(allowed), sys_cpu), cgroup_quota(proc_cgroup, cgroup_root))


@functools.cache
def this_machine() -> CpuBudget:
    """The budget of this process, read once."""
    if hasattr(os, "sched_getaffinity"):
        allowed: Iterable[int] = os.sched_getaffinity(0)
    else:  # macOS, Windows: no affinity mask and no sysfs; every CPU, topology unknown
        allowed = range(os.cpu_count() or 1)
    return cpu_budget(allowed, proc_cgroup=_read(PROC_CGROUP) or "")
