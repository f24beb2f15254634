"""Upgrade a pre-2024 split-expert MoE GGUF to today's stacked layout, without requantizing.

Until April 2024 llama.cpp wrote Mixtral-style experts one tensor per expert: `blk.N.ffn_{gate,up,down}.X.weight`
(ggml [n_embd, n_ff] for gate/up, [n_ff, n_embd] for down). Today it reads one tensor per layer and kind,
`blk.N.ffn_{gate,up,down}_exps.weight`, ggml [.., .., n_expert]: expert X at byte offset nb[2]*X (the expert axis
outermost in numpy order). Its loader used to build exactly that from the old tensors (each one a view at nb[2]*X of
the stacked tensor, all experts of one type); it dropped that path in November 2024 (llama.cpp issue 10244), so old
files now fail with "tensor 'blk.0.ffn_down_exps.weight' not found".

`upgrade` writes the stacked file: each layer's per-expert tensors concatenated byte for byte in expert order (raw
quantized blocks, whatever the type), every other tensor (routers included, F16 or F32) and every metadata key
copied unchanged. It checks free disk space first, writes beside the output under a temporary name and renames it
into place when complete. `ensure_stacked` does that once per source file into a cache under the data dir.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from moechat.errors import EngineError
from moechat.gguf.info import SPLIT_EXPERT, count_field, expert_layout, field, open_reader
from moechat.gguf.write import Planned, raw_bytes, reader_kvs, write_gguf

UPGRADE_VERSION = "1"
CACHE_FOLDER = Path("models") / "upgraded"
FFN_KINDS = ("gate", "up", "down")
_ROUTER = re.compile(r"blk\.(\d+)\.ffn_gate_inp\.weight")
FreeBytes = Callable[[Path], int]


def upgrade(src: str | Path, out: str | Path, *, progress: bool = True, free_bytes: FreeBytes | None = None) -> Path:
    """Write the stacked-layout twin of split-expert GGUF `src` at `out` (see the module docstring); returns `out`.

    `free_bytes(folder)` says how much space the output's folder has (default: shutil.disk_usage)."""
    src, out = Path(src), Path(out)
    reader = open_reader(src)
    if expert_layout(reader) != "split":
        raise EngineError(f"{src.name} does not use the split-expert layout: llama.cpp loads it as it is")
    if reader.endianess != gguf.GGUFEndian.LITTLE:
        raise EngineError(f"{src.name} is a big-endian GGUF; only little-endian files can be upgraded")
    if count_field(reader, src, "split.count", 1) > 1:
        raise EngineError(
            f"{src.name} is one shard of a split GGUF; join the shards first (llama-gguf-split --merge), then upgrade"
        )
    if not out.parent.is_dir():
        raise EngineError(f"output folder {out.parent} does not exist")
    if out.exists() and out.resolve() == src.resolve():
        raise EngineError(f"the output {out} is the input; choose another output path")
    plan = plan_stacked(reader, src.name)
    check_free_space(out.parent, output_size(reader, plan), free_bytes)
    arch = str(field(reader, "general.architecture"))
    write_gguf(out, list(reader_kvs(reader)), plan, progress, arch=arch, desc=f"upgrading {src.name}")
    return out


def plan_stacked(reader: gguf.GGUFReader, name: str) -> list[Planned]:
    """Every tensor of `reader` in its order, each layer's per-expert tensors replaced by their stack (where the first
    of them stood). An incomplete set (an expert missing, shapes or types differing between experts) is an EngineError
    naming the tensor."""
    arch = field(reader, "general.architecture")
    n_experts = count_field(reader, Path(name), f"{arch}.expert_count")
    groups: dict[tuple[int, str], dict[int, gguf.ReaderTensor]] = {}
    for t in reader.tensors:
        if m := SPLIT_EXPERT.fullmatch(t.name):
            groups.setdefault((int(m[1]), m[2]), {})[int(m[3])] = t
    if n_experts <= 0:
        raise EngineError(f"{name} has per-expert tensors but no {arch}.expert_count")
    _check_every_layer(reader, groups, name)
    plan: list[Planned] = []
    for t in reader.tensors:
        m = SPLIT_EXPERT.fullmatch(t.name)
        if m is None:
            plan.append(Planned.ready(t.name, t.tensor_type, raw_bytes(t)))
        elif (key := (int(m[1]), m[2])) in groups:
            plan.append(_stack(*key, groups.pop(key), n_experts, name))
    return plan


def _check_every_layer(reader: gguf.GGUFReader, groups: dict[tuple[int, str], dict], name: str) -> None:
    """Each layer with a router has per-expert tensors of all three kinds."""
    stacked = {t.name for t in reader.tensors if t.name.endswith("_exps.weight")}
    for t in reader.tensors:
        if m := _ROUTER.fullmatch(t.name):
            layer = int(m[1])
            for kind in FFN_KINDS:
                if (layer, kind) not in groups and f"blk.{layer}.ffn_{kind}_exps.weight" not in stacked:
                    raise EngineError(f"{name}: expert tensor blk.{layer}.ffn_{kind}.0.weight is missing")


def _stack(layer: int, kind: str, experts: dict[int, gguf.ReaderTensor], n_experts: int, name: str) -> Planned:
    for x in range(n_experts):
        if x not in experts:
            missing = f"blk.{layer}.ffn_{kind}.{x}.weight"
            raise EngineError(f"{name}: expert tensor {missing} is missing (the file has {n_experts} experts)")
    extra = sorted(set(experts) - set(range(n_experts)))
    if extra:
        raise EngineError(f"{name}: {experts[extra[0]].name} is beyond the file's {n_experts} experts")
    first = experts[0]
    for x in range(1, n_experts):
        t = experts[x]
        if t.tensor_type != first.tensor_type:
            raise EngineError(
                f"{name}: {t.name} is {t.tensor_type.name} but {first.name} is {first.tensor_type.name}; "
                "the experts of one layer must share a type"
            )
        if list(t.shape) != list(first.shape):
            raise EngineError(
                f"{name}: {t.name} has shape {[int(n) for n in t.shape]} but {first.name} has "
                f"{[int(n) for n in first.shape]}; the experts of one layer must share a shape"
            )
    if len(first.shape) != 2:
        raise EngineError(f"{name}: {first.name} has {len(first.shape)} dimensions; an expert's tensor has 2")
    rows, row_bytes = raw_bytes(first).shape
    ordered = [experts[x] for x in range(n_experts)]

    def make() -> np.ndarray:
        return np.stack([raw_bytes(t) for t in ordered])

    return Planned(f"blk.{layer}.ffn_{kind}_exps.weight", first.tensor_type, (n_experts, rows, row_bytes), make)


def output_size(reader: gguf.GGUFReader, plan: list[Planned]) -> int:
    """An upper bound on the upgraded file's size: the tensors, the source's header (the new one is no larger) and
    the most alignment padding each tensor can take."""
    alignment = int(field(reader, "general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
    return sum(p.nbytes for p in plan) + reader.data_offset + alignment * len(plan)


def check_free_space(folder: Path, needed: int, free_bytes: FreeBytes | None = None) -> None:
    """EngineError when `folder`'s file system has less than `needed` bytes free."""
    free = (free_bytes or _disk_free)(folder)
    if free < needed:
        raise EngineError(
            f"upgrading needs {needed / 2**30:.2f} GiB free in {folder}, but only {free / 2**30:.2f} GiB is free; "
            "free some space (or choose another output folder / --data-dir) and try again"
        )


def _disk_free(folder: Path) -> int:
    return shutil.disk_usage(folder).free


# ---- the cache ------------------------------------------------------------------------------------------------
def cache_path(src: Path, data_dir: str | Path) -> Path:
    """Where `src`'s upgrade lives: named for the file, keyed by its identity (resolved path, size, mtime)."""
    st = src.stat()
    resolved = str(src.resolve())
    where = hashlib.sha256(resolved.encode()).hexdigest()[:8]
    version = hashlib.sha256(f"{UPGRADE_VERSION}:{resolved}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return Path(data_dir) / CACHE_FOLDER / f"{src.name.removesuffix('.gguf')}.stacked-{where}-{version}.gguf"


def ensure_stacked(
    path: str | Path, data_dir: str | Path, *, progress: bool = True, free_bytes: FreeBytes | None = None
) -> tuple[Path, str | None]:
    """(file to load, note): `path` itself when llama.cpp can load it, else its stacked upgrade from the cache under
    data_dir (written once, on first use; an older upgrade of the same file is removed). A file that cannot be read
    is returned as it is, for the loader to report."""
    src = Path(path)
    try:
        layout = expert_layout(open_reader(src))
    except EngineError:
        return src, None
    if layout != "split":
        return src, None
    out = cache_path(src, data_dir)
    if out.is_file():
        return out, f"{src.name} uses the pre-2024 split-expert layout; using its stacked upgrade {out}"
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    upgrade(src, out, progress=progress, free_bytes=free_bytes)
    note = f"{src.name} uses the pre-2024 split-expert layout; upgraded once to {out} (stacked, no requantization)"
    return out, note


def remove_stale(out: Path) -> None:
    """Free the cache before an upgrade to `out`: upgrades of an older version of the same source file, and the
    temporary files of upgrades whose process died (write_gguf names them .OUT.PID.partial)."""
    same_source = out.name.rsplit("-", 1)[0] + "-"
    for f in out.parent.iterdir():
        older = f.name.startswith(same_source) and f.suffix == ".gguf" and f != out
        orphan = f.name.startswith("." + same_source) and f.suffix == ".partial" and not _alive(f.name.split(".")[-2])
        if older or orphan:
            f.unlink(missing_ok=True)


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True
