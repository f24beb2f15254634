"""Read named tensors out of llama.cpp's graph while it computes, through the scheduler's eval callback.

Two interchangeable callbacks: a small C one (capture.c, compiled on first use against the headers that
the llama-cpp-python wheel installs, then cached) and a Python one (the fallback when no C compiler is
around). Both keep, per decode, the wanted tensors in graph order; `take()` hands them over and resets.
Together with engine.py this is the only module that touches ctypes and llama.cpp.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np

from moechat.errors import EngineError

SOURCE = Path(__file__).with_name("capture.c")
LIB_DIR = Path(llama_cpp.__file__).parent / "lib"
GGML_TYPE_F32, GGML_TYPE_I32 = 0, 26
GGML_OBJECT_SIZE = 32  # sizeof(struct ggml_object); ggml_tensor_overhead() = object + tensor


@dataclass(frozen=True, slots=True)
class Captured:
    """One observed tensor: [rows, values per row], float32 or int32, from graph node `kind-layer`."""

    kind: str
    layer: int  # -1 for an unnumbered node such as "inp_embd"
    values: np.ndarray


class _GgmlTensor(ctypes.Structure):
    """Mirror of `struct ggml_tensor` (ggml.h of the pinned llama-cpp-python), checked at start-up."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


class _Record(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int32),
        ("layer", ctypes.c_int32),
        ("type", ctypes.c_int32),
        ("ne0", ctypes.c_int32),
        ("rows", ctypes.c_int64),
        ("offset", ctypes.c_int64),
    ]


def _ggml() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(LIB_DIR / "libggml-base.so"))
    lib.ggml_tensor_overhead.restype = ctypes.c_size_t
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    return lib


def _include_dir() -> Path:
    """The folder holding ggml.h as installed by the llama-cpp-python wheel."""
    for f in importlib.metadata.files("llama_cpp_python") or []:
        if f.name == "ggml.h":
            return Path(str(f.locate())).parent
    raise EngineError("llama-cpp-python's headers (include/ggml.h) are not installed; fast capture unavailable")


def cache_dir() -> Path:
    root = os.environ.get("MOECHAT_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(root) / "moechat"


def build_library() -> Path:
    """Compile capture.c once per (source, llama-cpp-python version); later calls return the cached .so."""
    include = _include_dir()
    key = hashlib.sha256(SOURCE.read_bytes() + llama_cpp.__version__.encode() + str(include).encode())
    out = cache_dir() / f"capture-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise EngineError("no C compiler (cc) found to build the fast capture callback")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cc, "-O2", "-shared", "-fPIC", "-std=c11", "-I", str(include), str(SOURCE), "-o", str(tmp)]
    cmd += ["-L", str(LIB_DIR), "-lggml-base", f"-Wl,-rpath,{LIB_DIR}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise EngineError(f"building the fast capture callback failed: {done.stderr.strip()[-500:]}")
    os.replace(tmp, out)  # atomic: concurrent builders never see a half-written library
    return out


def _check_layout(tensor_size: int) -> None:
    overhead = _ggml().ggml_tensor_overhead()
    if overhead != tensor_size + GGML_OBJECT_SIZE:
        raise EngineError(
            f"ggml_tensor layout mismatch (overhead {overhead}, expected {tensor_size} + {GGML_OBJECT_SIZE}): "
            f"this moechat needs llama-cpp-python {llama_cpp.__version__}'s ggml"
        )


class FastCapture:
    """The compiled callback. Asking costs nanoseconds per graph node."""

    mode = "fast"

    def __init__(self) -> None:
        lib = ctypes.CDLL(str(build_library()))
        lib.mc_new.restype = ctypes.c_void_p
        lib.mc_tensor_size.restype = ctypes.c_size_t
        for name in ("mc_free", "mc_reset", "mc_n_records", "mc_records", "mc_data", "mc_n_skipped", "mc_set_kinds"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.mc_set_kinds.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        lib.mc_n_records.restype = ctypes.c_int64
        lib.mc_records.restype = ctypes.c_void_p
        lib.mc_data.restype = ctypes.c_void_p
        _check_layout(lib.mc_tensor_size())
        self._lib = lib
        self._state: ctypes.c_void_p | None = ctypes.c_void_p(lib.mc_new())  # None once closed
        self.user_data = self._state
        address = ctypes.cast(lib.mc_callback, ctypes.c_void_p).value
        if address is None:
            raise EngineError("the fast capture library has no mc_callback")
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(address)
        self.kinds: tuple[str, ...] = ()

    def set_kinds(self, kinds: Sequence[str]) -> None:
        names = (ctypes.c_char_p * len(kinds))(*(k.encode() for k in kinds))
        if self._lib.mc_set_kinds(self._state, len(kinds), names) != 0:
            raise EngineError(f"cannot capture {list(kinds)}: at most 8 names of under 48 characters")
        self.kinds = tuple(kinds)

    def take(self) -> list[Captured]:
        lib, state = self._lib, self._state
        n = lib.mc_n_records(state)
        out: list[Captured] = []
        if n:
            records = (_Record * n).from_address(lib.mc_records(state))
            end = max(r.offset + r.rows * r.ne0 for r in records)
            data = np.ctypeslib.as_array(ctypes.cast(lib.mc_data(state), ctypes.POINTER(ctypes.c_uint32)), (end,))
            for r in records:
                raw = data[r.offset : r.offset + r.rows * r.ne0]
                dtype = np.float32 if r.type == GGML_TYPE_F32 else np.int32
                out.append(Captured(self.kinds[r.kind], r.layer, raw.view(dtype).reshape(r.rows, r.ne0).copy()))
        lib.mc_reset(state)
        return out

    def close(self) -> None:
        if self._state:
            self._lib.mc_free(self._state)
            self._state = None


class PythonCapture:
    """The same callback in Python: ~1 µs per graph node asked, so decoding is noticeably slower."""

    mode = "python"

    def __init__(self) -> None:
        _check_layout(ctypes.sizeof(_GgmlTensor))
        self._ggml = _ggml()
        self._records: list[Captured] = []
        self.errors: list[str] = []
        self._pattern = re.compile(r"(?!)")
        self.kinds: tuple[str, ...] = ()
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)  # keep a reference
        self.user_data = ctypes.c_void_p(0)

    def set_kinds(self, kinds: Sequence[str]) -> None:
        self.kinds = tuple(kinds)
        alternatives = "|".join(re.escape(k) for k in kinds) or "(?!)"
        self._pattern = re.compile(rf"({alternatives})(?:-(\d+))?")

    def _on_node(self, tensor: int, ask: bool, _user_data: int) -> bool:
        try:
            t = _GgmlTensor.from_address(tensor)
            hit = self._pattern.fullmatch(t.name.decode("utf-8", "replace"))
            if ask or hit is None:
                return hit is not None
            self._read(tensor, t, hit.group(1), int(hit.group(2) or -1))
        except Exception as exc:  # an exception inside a ctypes callback would be printed and lost
            self.errors.append(repr(exc))
        return True  # after reading, always true: false makes the scheduler skip the rest of the graph

    def _read(self, address: int, t: _GgmlTensor, kind: str, layer: int) -> None:
        if t.type not in (GGML_TYPE_F32, GGML_TYPE_I32) or t.nb[0] != 4:
            self.errors.append(f"{t.name!r}: unsupported type {t.type}")
            return
        ne0, rows = t.ne[0], t.ne[1] * t.ne[2] * t.ne[3]
        out = np.empty((rows, ne0), np.float32 if t.type == GGML_TYPE_F32 else np.int32)
        row = 4 * ne0
        if t.nb[1] == row and t.nb[2] == row * t.ne[1] and t.nb[3] == t.nb[2] * t.ne[2]:  # contiguous
            self._ggml.ggml_backend_tensor_get(address, out.ctypes.data, 0, out.nbytes)
            self._records.append(Captured(kind, layer, out))
            return
        for i, (i1, i2, i3) in enumerate(np.ndindex(t.ne[1], t.ne[2], t.ne[3])):
            offset = i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3]
            self._ggml.ggml_backend_tensor_get(address, out.ctypes.data + i * row, offset, row)
        self._records.append(Captured(kind, layer, out))

    def take(self) -> list[Captured]:
        out, self._records = self._records, []
        return out

    def close(self) -> None:
        self._records = []


def make_capture(mode: str) -> FastCapture | PythonCapture | None:
    """'fast', 'python', 'off', or 'auto' (fast when it builds, else python)."""
    if mode == "off":
        return None
    if mode == "python":
        return PythonCapture()
    if mode == "fast":
        return FastCapture()
    if mode != "auto":
        raise EngineError(f"unknown capture mode {mode!r}: use auto, fast, python or off")
    try:
        return FastCapture()
    except (EngineError, OSError, subprocess.SubprocessError):
        return PythonCapture()
