"""Writing GGUF files tensor by tensor from planned raw bytes, so no model is ever held whole in memory.

A `Planned` tensor knows its GGML type, its shape in numpy order with the bytes of one row last, and how to make
its bytes when their turn comes; `write_gguf` writes beside the destination and renames into place, so the
destination is either complete or untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

VT = gguf.GGUFValueType
KeyValue = tuple[str, Any, VT, VT | None]


@dataclass(frozen=True)
class Planned:
    """One output tensor: its GGML type, its shape in numpy order with bytes last, and how to make the bytes."""

    name: str
    qtype: gguf.GGMLQuantizationType
    byte_shape: tuple[int, ...]
    make: Callable[[], np.ndarray]

    @classmethod
    def ready(cls, name: str, qtype: gguf.GGMLQuantizationType, data: np.ndarray) -> Planned:
        """A tensor whose bytes are already at hand (e.g. memory-mapped from a source GGUF)."""
        return cls(name, qtype, data.shape, lambda: data)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.byte_shape))


def raw_bytes(tensor: gguf.ReaderTensor) -> np.ndarray:
    """A tensor's data exactly as stored: uint8, numpy order, bytes of one row last."""
    return np.asarray(tensor.data).view(np.uint8)


def reader_kvs(reader: gguf.GGUFReader) -> Iterator[KeyValue]:
    """(key, value, type, array item type) of every metadata key of `reader`, as write_gguf takes them; the keys
    GGUFWriter writes itself (GGUF.*, general.architecture) are left out."""
    for key, f in reader.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            yield key, f.contents(), f.types[0], f.types[-1] if f.types[0] == VT.ARRAY else None


def write_gguf(
    out: Path, kvs: list[KeyValue], plan: list[Planned], progress: bool, arch: str = "llama", desc: str = "writing"
) -> None:
    """Write to a temporary file beside `out`, then rename: `out` is either complete or untouched. `progress`: a
    tqdm bar labelled `desc`."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        for key, value, vtype, sub in kvs:
            if key == "general.alignment":
                writer.data_alignment = int(value)
            writer.add_key_value(key, value, vtype, sub_type=sub)
        for p in plan:
            writer.add_tensor_info(p.name, p.byte_shape, np.dtype(np.uint8), p.nbytes, raw_dtype=p.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        bar = _bar(sum(p.nbytes for p in plan), progress, desc)
        for p in plan:
            writer.write_tensor_data(p.make())
            bar.update(p.nbytes)
        bar.close()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _bar(total: int, on: bool, desc: str = "writing") -> Any:
    if not on:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True)
