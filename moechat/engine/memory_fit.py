"""How many replies' KV caches fit beside the model in this machine's memory (`--parallel` on a CPU).

Each sequence of a context gets n_ctx tokens of KV cache, allocated and cleared when the context is made, so
`--parallel 4` with a 4096-token context holds 4 x 4096 tokens: 8 GiB in f16 for a Llama-2-7B (0.5 MiB a token),
as much as the flagship's Q4_K_M weights. On a 16 GB machine (a Hugging Face CPU Space) that is the difference
between serving and being killed for memory. So before a CPU context is made, `fit_parallel` lowers the number of
sequences to what fits (never below one) and says why; the model's file counts as resident, the KV cache as
allocated, and a tenth of what is available stays free for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HEADROOM = 0.9  # share of the available memory the model and the KV cache may take
GIB = 1024**3


@dataclass(frozen=True)
class Fit:
    n_parallel: int
    note: str = ""  # why it is lower than asked ("" when it is not)


def kv_bytes_per_token(n_layers: int, kv_width: int, exact: bool) -> int:
    """KV cache bytes per token of one sequence: K and V of every layer, f16 (f32 in exact mode)."""
    return n_layers * kv_width * (4 if exact else 2)


def fit_parallel(requested: int, n_ctx: int, per_token: int, model_bytes: int, available: int | None) -> Fit:
    """The most sequences (at most `requested`, at least 1) whose KV caches fit beside the model in `available`
    bytes; unknown sizes (None, 0) leave `requested` as it is."""
    per_sequence = n_ctx * per_token
    if available is None or per_sequence <= 0 or requested <= 1:
        return Fit(requested)
    fits = int((available * HEADROOM - model_bytes) // per_sequence)
    if fits >= requested:
        return Fit(requested)
    fits = max(fits, 1)
    asked = requested * per_sequence / GIB
    note = (
        f"--parallel {requested} asks for {requested} x {n_ctx} tokens of KV cache ({asked:.1f} GiB) beside the "
        f"model ({model_bytes / GIB:.1f} GiB), more than this machine's {available / GIB:.1f} GiB available: "
        f"{fits} at once (a smaller --n-ctx leaves room for more)"
    )
    return Fit(fits, note)


def available_memory(root: Path = Path("/")) -> int | None:
    """Bytes this process may still take: MemAvailable, capped by its cgroup's limit less its working set
    (containers, Spaces: MemAvailable there is the host's). The working set leaves out the inactive page cache,
    which the kernel reclaims before it kills (a container that read many files sits near its limit on cache alone).
    None where neither is readable (not Linux)."""
    found: list[int] = []
    meminfo = _fields(root / "proc/meminfo")
    if "MemAvailable" in meminfo:
        found.append(meminfo["MemAvailable"] * 1024)
    cgroup = root / "sys/fs/cgroup"
    v1 = ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat", "total_inactive_file")
    for limit_file, usage_file, stat_file, inactive in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),
        v1,
    ):
        try:
            limit, usage = (cgroup / limit_file).read_text().strip(), int((cgroup / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a v1 "no limit" value: none
            working_set = max(usage - _fields(cgroup / stat_file).get(inactive, 0), 0)
            found.append(max(int(limit) - working_set, 0))
    return min(found) if found else None


def _fields(path: Path) -> dict[str, int]:
    """`name value` lines (/proc/meminfo's `MemAvailable: 123 kB`, cgroup's memory.stat) as numbers."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0]] = int(parts[1])
    return fields
