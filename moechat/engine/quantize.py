"""Quantize a GGUF through llama.cpp's own quantizer (`llama_model_quantize`), keeping the routers intact.

An adapter module: besides engine.py and capture.py, this is the one place that calls llama_cpp (the quantize
API and, while it runs, llama.cpp's log hook, which is how its per-tensor progress is observed).

Routers: llama.cpp's quantizer never quantizes `*ffn_gate_inp.weight` (llama-quant.cpp excludes it by name), so
a router keeps its input type (float32 in every GGUF converted by current llama.cpp or built by moechat). This
module does not take that on trust: after quantizing it checks that every router's bytes are identical in input
and output, and refuses the result otherwise. The output is written under a temporary name beside its destination
and renamed into place only when complete and checked: a failed run leaves no partial file.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import llama_cpp._logger
import numpy as np

from moechat.errors import EngineError
from moechat.gguf.info import open_reader, read_info, require_stacked
from moechat.gguf.write import raw_bytes

ROUTER = "ffn_gate_inp.weight"
_PROGRESS = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_QUANT_SUFFIX = re.compile(r"[.\-_](I?Q\d\w*|[BF]?F16|F32|FP16|FP32)$", re.IGNORECASE)
Progress = Callable[[int, int, str], None]  # (tensor index from 1, tensor count, tensor name)
_LOG_LOCK = threading.Lock()  # llama.cpp's log hook is process-wide: one quantization at a time


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    type_name: str
    seconds: float
    in_bytes: int
    out_bytes: int
    router_types: tuple[str, ...]  # GGML type of each layer's router in the output (all "F32" for float routers)


def quant_types() -> dict[str, int]:
    """Target types llama.cpp knows, by name ("Q4_K_M" -> its llama_ftype value)."""
    names = {"F32": llama_cpp.LLAMA_FTYPE_ALL_F32}
    for attr in dir(llama_cpp):
        if attr.startswith("LLAMA_FTYPE_MOSTLY_"):
            names[attr.removeprefix("LLAMA_FTYPE_MOSTLY_")] = int(getattr(llama_cpp, attr))
    return dict(sorted(names.items()))


def ftype_of(type_name: str) -> tuple[str, int]:
    """(canonical name, llama_ftype) for a type name in any case; unknown -> EngineError listing the known ones."""
    name = type_name.strip().upper().replace("-", "_")
    known = quant_types()
    if name not in known:
        raise EngineError(f"unknown quantization type {type_name!r}; llama.cpp knows: {', '.join(known)}")
    return name, known[name]


def default_output(in_path: str | Path, type_name: str) -> Path:
    """model.F32.gguf + Q4_K_M -> model.Q4_K_M.gguf, beside the input."""
    p = Path(in_path)
    stem = _QUANT_SUFFIX.sub("", p.name.removesuffix(".gguf"))
    return p.with_name(f"{stem}.{ftype_of(type_name)[0]}.gguf")


def quantize(
    in_path: str | Path,
    out_path: str | Path,
    type_name: str,
    *,
    threads: int | None = None,
    allow_requantize: bool = False,
    progress: Progress | None = None,
) -> QuantizeResult:
    """Quantize `in_path` to `out_path` as `type_name` (e.g. "Q8_0", "Q4_K_M"), routers kept bit for bit."""
    name, ftype = ftype_of(type_name)
    src, out = Path(in_path), Path(out_path)
    require_stacked(read_info(src, allow_dense=True))  # llama.cpp aborts the process on some bad files: check first
    if out.exists() and out.resolve() == src.resolve():
        raise EngineError(f"the output {out} is the input; choose another output path")
    if not out.parent.is_dir():
        raise EngineError(f"output folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    start = time.perf_counter()
    try:
        _run(src, tmp, ftype, threads, allow_requantize, progress)
        routers = check_routers(src, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return QuantizeResult(out, name, time.perf_counter() - start, src.stat().st_size, out.stat().st_size, routers)


def _run(src: Path, tmp: Path, ftype: int, threads: int | None, requantize: bool, progress: Progress | None) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    params.allow_requantize = requantize
    log: list[str] = []

    @llama_cpp.llama_log_callback
    def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        try:
            line = text.decode("utf-8", "replace")
            log.append(line)
            m = _PROGRESS.match(line)
            if m and progress is not None:
                progress(int(m[1]), int(m[2]), m[3])
        except Exception:  # an exception raised in a ctypes callback is printed and lost: never raise here
            pass

    with _LOG_LOCK:
        llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
        try:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        finally:
            llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))
    if rc != 0:
        raise EngineError(f"llama.cpp could not quantize {src.name}: {_reason(log)}")


def _reason(log: list[str]) -> str:
    text = "".join(log)
    m = re.search(r"failed to quantize: (.+)", text)
    reason = m[1].strip() if m else (text.strip().splitlines() or ["no message"])[-1]
    if "requantiz" in reason:
        reason += " (the input is already quantized: pass --allow-requantize, or start from an F16/F32 GGUF)"
    return reason


def check_routers(src: str | Path, out: str | Path) -> tuple[str, ...]:
    """Every router of `src` is in `out` with the same type and bytes; returns their types, by layer."""
    before = {t.name: t for t in open_reader(src).tensors if t.name.endswith(ROUTER)}
    after = {t.name: t for t in open_reader(out).tensors if t.name.endswith(ROUTER)}
    if set(before) != set(after):
        raise EngineError(f"quantization lost routers: {sorted(set(before) ^ set(after))}")
    for name, t in before.items():
        u = after[name]
        same = t.tensor_type == u.tensor_type and np.array_equal(raw_bytes(t), raw_bytes(u))
        if not same:
            raise EngineError(f"quantization changed router {name} ({t.tensor_type.name} -> {u.tensor_type.name})")
    return tuple(after[n].tensor_type.name for n in sorted(after, key=_layer))


def _layer(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m[1]) if m else -1
