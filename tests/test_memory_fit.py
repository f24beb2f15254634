"""--parallel on a CPU: the replies' KV caches must fit beside the model in this machine's memory, or fewer run.

The machine's memory is simulated (a fake /proc and cgroup tree, or the reader swapped for a number): the real
one is rarely small enough to show the limit, which is what a 16 GB Space meets with the flagship.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moechat.engine import engine as engine_module
from moechat.engine.engine import Engine
from moechat.engine.memory_fit import GIB, available_memory, fit_parallel, kv_bytes_per_token
from moechat.gguf.info import read_info
from moechat.ui.html import model_markdown

MIB = 1024**2


def test_a_llama2_7b_token_takes_half_a_mebibyte_of_f16_cache() -> None:
    # Llama-2-7B: 32 layers, 32 KV heads of 128 values, K and V
    assert kv_bytes_per_token(32, 32 * (128 + 128), exact=False) == 512 * 1024
    assert kv_bytes_per_token(32, 32 * (128 + 128), exact=True) == 1024 * 1024


def test_the_kv_width_is_read_from_the_header(tiny_models: dict[str, Path]) -> None:
    info = read_info(tiny_models["moe2"])  # width 64, 4 heads, 2 KV heads: 2 x 16 for K and again for V
    assert info.kv_width == 2 * (16 + 16)


@pytest.mark.parametrize(
    ("requested", "available_gib", "expected"),
    [
        (4, 64, 4),  # plenty: as asked
        (4, 16, 3),  # a 16 GB Space with the flagship's Q4_K_M: 0.9 x 16 - 7.8 = 6.6 GiB, room for three 2 GiB caches
        (4, 10, 1),  # not even one fits: one, which llama.cpp will try
        (1, 4, 1),  # one asked: nothing to lower
    ],
)
def test_replies_are_lowered_to_what_fits(requested: int, available_gib: float, expected: int) -> None:
    fit = fit_parallel(requested, 4096, 512 * 1024, int(7.8 * GIB), int(available_gib * GIB))
    assert fit.n_parallel == expected
    if expected < requested:
        assert f"--parallel {requested}" in fit.note and f"{expected} at once" in fit.note and "--n-ctx" in fit.note
    else:
        assert fit.note == ""


def test_unknown_sizes_leave_the_request() -> None:
    assert fit_parallel(4, 4096, 512 * 1024, GIB, None).n_parallel == 4  # not Linux
    assert fit_parallel(4, 4096, 0, GIB, GIB).n_parallel == 4  # no KV width in the header


def _machine(root: Path, meminfo_kib: int | None, cgroup: dict[str, str]) -> Path:
    if meminfo_kib is not None:
        (root / "proc").mkdir(parents=True)
        (root / "proc/meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {meminfo_kib} kB\nCached: 1 kB\n")
    for name, text in cgroup.items():
        (root / "sys/fs/cgroup" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "sys/fs/cgroup" / name).write_text(text + "\n")
    return root


def test_available_memory_is_the_smaller_of_the_host_and_the_container(tmp_path: Path) -> None:
    v2 = _machine(tmp_path / "v2", 64 * 1024 * 1024, {"memory.max": str(16 * GIB), "memory.current": str(4 * GIB)})
    assert available_memory(v2) == 12 * GIB  # the container's limit less its use, not the host's 64 GiB
    v1 = _machine(
        tmp_path / "v1",
        8 * 1024 * 1024,
        {"memory/memory.limit_in_bytes": str(16 * GIB), "memory/memory.usage_in_bytes": str(GIB)},
    )
    assert available_memory(v1) == 8 * GIB  # the host has less than the container may take
    unlimited = _machine(tmp_path / "max", 2 * 1024 * 1024, {"memory.max": "max", "memory.current": str(GIB)})
    assert available_memory(unlimited) == 2 * GIB
    v1_unlimited = _machine(
        tmp_path / "v1max",
        1024 * 1024,
        {"memory/memory.limit_in_bytes": str(2**63 - 4096), "memory/memory.usage_in_bytes": "0"},
    )
    assert available_memory(v1_unlimited) == GIB
    assert available_memory(_machine(tmp_path / "none", None, {})) is None


def test_a_containers_inactive_page_cache_counts_as_free(tmp_path: Path) -> None:
    # a container at its limit, mostly on file cache the kernel would drop first (after a pip install, say)
    cached = {
        "memory.max": str(8 * GIB),
        "memory.current": str(8 * GIB),
        "memory.stat": f"anon {2 * GIB}\nfile {6 * GIB}\ninactive_file {5 * GIB}\nactive_file {GIB}",
    }
    assert available_memory(_machine(tmp_path / "v2", 64 * 1024 * 1024, cached)) == 5 * GIB
    v1 = {
        "memory/memory.limit_in_bytes": str(8 * GIB),
        "memory/memory.usage_in_bytes": str(7 * GIB),
        "memory/memory.stat": f"cache {5 * GIB}\ntotal_inactive_file {4 * GIB}",
    }
    assert available_memory(_machine(tmp_path / "v1", 64 * 1024 * 1024, v1)) == 5 * GIB


def test_a_context_gets_the_sequences_that_fit(tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny_models["moe2"]
    info = read_info(path)
    n_ctx = 1024
    per_sequence = n_ctx * kv_bytes_per_token(info.n_layers, info.kv_width, exact=False)
    machine = int((info.size_bytes + 2.5 * per_sequence) / 0.9)  # room for two and a half caches beside the model
    monkeypatch.setattr(engine_module, "available_memory", lambda: machine)
    with Engine.load(path, n_ctx=n_ctx, n_parallel=4, n_gpu_layers=0) as eng:
        assert eng.report.n_parallel == 2 and eng.occupancy().slots == 2
        assert "--parallel 4" in eng.report.parallel_note
        assert "replies at once | 2 (--parallel 4 asks" in model_markdown(eng.info, eng.report)
    monkeypatch.setattr(engine_module, "available_memory", lambda: 64 * GIB)
    with Engine.load(path, n_ctx=n_ctx, n_parallel=4, n_gpu_layers=0) as eng:
        assert eng.report.n_parallel == 4 and eng.report.parallel_note == ""
