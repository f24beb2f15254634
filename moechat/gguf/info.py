"""Read a GGUF's metadata and router weights with the `gguf` package (never llama.cpp).

llama.cpp aborts the whole process on some inconsistent MoE metadata, so every file is checked here
before llama.cpp sees it: the checks turn such files into an EngineError that says what was found.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

from moechat.errors import EngineError

GGUF_MAGIC = b"GGUF"
EXPERT_NAMES_KEY = "moechat.expert_names"
# llama.cpp before April 2024 stored one tensor per expert (blk.N.ffn_gate.X.weight); today it stacks them
# along ggml's ne[2] (blk.N.ffn_gate_exps.weight) and no longer loads the old layout.
SPLIT_EXPERT = re.compile(r"blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight")
ExpertLayout = Literal["stacked", "split", "none"]


class NotMoEError(EngineError):
    """The file is a valid dense model: it has no experts to route between."""


@dataclass(frozen=True)
class ModelInfo:
    """What moechat needs to know about a model file before and after loading it."""

    path: Path
    architecture: str
    name: str
    n_layers: int
    n_embd: int
    n_experts: int  # 0 for a dense model
    n_experts_used: int
    context_length: int
    file_type: str
    size_bytes: int
    chat_template: str | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    expert_names: tuple[str, ...] = ()
    expert_layout: ExpertLayout = "stacked"  # "split": the pre-2024 one-tensor-per-expert layout; "none": dense
    kv_width: int = 0  # values per token per layer in the KV cache, K and V together (0: unknown)

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0


def open_reader(path: str | Path) -> gguf.GGUFReader:
    """Open a GGUF for reading; a missing, foreign, truncated or corrupt file raises EngineError.

    Parsing a large vocabulary takes seconds, so readers are kept per (file, size, mtime)."""
    p = Path(path)
    if not p.is_file():
        raise EngineError(f"model file not found: {p}. Check the path, or run without --model for the demo.")
    stat = p.stat()
    return _cached_reader(p.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _cached_reader(p: Path, _size: int, _mtime_ns: int) -> gguf.GGUFReader:
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise EngineError(f"{p.name} is not a GGUF file (it starts with {magic!r}, not b'GGUF').")
    try:
        reader = gguf.GGUFReader(p)
    except Exception as exc:  # the reader raises many kinds on damaged headers; all mean the same here
        raise EngineError(
            f"{p.name} is a damaged or truncated GGUF ({type(exc).__name__}: {exc}). Download it again."
        ) from exc
    _check_complete(reader, p)
    return reader


def _check_complete(reader: gguf.GGUFReader, p: Path) -> None:
    size = os.path.getsize(p)
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=reader.data_offset)
    if end > size:
        raise EngineError(
            f"{p.name} is truncated: its tensors need {end:,} bytes but the file has {size:,}. Download it again."
        )


def field(reader: gguf.GGUFReader, key: str, default: Any = None) -> Any:
    """A metadata value as a Python object (str, int, float, bool or list), or `default`."""
    f = reader.get_field(key)
    if f is None:
        return default
    value = f.contents()
    return default if value is None else value


def count_field(reader: gguf.GGUFReader, p: Path, key: str, default: int = 0) -> int:
    """A whole-number metadata value; any other type (string, list, 1.5) raises EngineError."""
    value = field(reader, key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EngineError(f"{p.name}: {key} must be a whole number, got {type(value).__name__} {value!r:.40}.")
    return value


def _typed(reader: gguf.GGUFReader, key: str, kind: type | tuple[type, ...]) -> Any:
    """An optional metadata value, or None when it is missing or of the wrong type."""
    value = field(reader, key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _names(reader: gguf.GGUFReader) -> tuple[str, ...]:
    value = field(reader, EXPERT_NAMES_KEY, ())
    return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else ()


def read_info(path: str | Path, allow_dense: bool = False) -> ModelInfo:
    """Read and validate a model's metadata. Raises EngineError for files llama.cpp cannot run, and
    NotMoEError for a dense model unless `allow_dense`."""
    reader = open_reader(path)
    p = Path(path)
    arch = field(reader, "general.architecture")
    if not isinstance(arch, str):
        raise EngineError(f"{p.name} has no general.architecture: it is not a model GGUF.")
    n_experts = count_field(reader, p, f"{arch}.expert_count")
    n_used = count_field(reader, p, f"{arch}.expert_used_count")
    _check_experts(reader, p, arch, n_experts, n_used, allow_dense)
    file_type = field(reader, "general.file_type")
    info = ModelInfo(
        path=p,
        architecture=arch,
        name=str(field(reader, "general.name", p.stem)),
        n_layers=count_field(reader, p, f"{arch}.block_count"),
        n_embd=count_field(reader, p, f"{arch}.embedding_length"),
        n_experts=n_experts,
        n_experts_used=n_used,
        context_length=count_field(reader, p, f"{arch}.context_length"),
        file_type=_file_type_name(file_type),
        size_bytes=os.path.getsize(p),
        chat_template=_typed(reader, "tokenizer.chat_template", str),
        bos_id=_typed(reader, "tokenizer.ggml.bos_token_id", int),
        eos_id=_typed(reader, "tokenizer.ggml.eos_token_id", int),
        expert_names=_names(reader),
        expert_layout=expert_layout(reader),
        kv_width=_kv_width(reader, arch),
    )
    if info.n_layers <= 0 or info.n_embd <= 0:
        raise EngineError(f"{p.name} lacks {arch}.block_count or {arch}.embedding_length.")
    return info


def _kv_width(reader: gguf.GGUFReader, arch: str) -> int:
    """K and V widths of one token in one layer: the KV heads times each head's key and value length (llama.cpp's
    n_embd_k_gqa + n_embd_v_gqa); 0 when the header does not say (per-layer head counts, say)."""
    n_embd = _typed(reader, f"{arch}.embedding_length", int)
    n_head = _typed(reader, f"{arch}.attention.head_count", int)
    if not n_embd or not n_head:
        return 0
    n_head_kv = _typed(reader, f"{arch}.attention.head_count_kv", int) or n_head
    key = _typed(reader, f"{arch}.attention.key_length", int) or n_embd // n_head
    value = _typed(reader, f"{arch}.attention.value_length", int) or n_embd // n_head
    return n_head_kv * (key + value)


def _check_experts(reader: gguf.GGUFReader, p: Path, arch: str, n_experts: int, n_used: int, allow_dense: bool) -> None:
    router = next((t for t in reader.tensors if t.name.endswith("ffn_gate_inp.weight")), None)
    if n_experts == 0:
        if router is None and allow_dense:
            return
        if router is None:
            raise NotMoEError(
                f"{p.name} is a dense {arch} model (no {arch}.expert_count, no router tensors): there are no "
                "experts to watch. Load a Mixture-of-Experts GGUF, or build one with `python -m moechat build-moe`."
            )
        raise EngineError(f"{p.name} has router tensors ({router.name}) but no {arch}.expert_count.")
    if not 0 < n_used <= n_experts:
        raise EngineError(
            f"{p.name} says {arch}.expert_used_count={n_used} with {n_experts} experts; it must be 1..{n_experts}."
        )
    if router is None:
        raise EngineError(f"{p.name} claims {n_experts} experts but has no ffn_gate_inp router tensors.")
    if int(router.shape[-1]) != n_experts:
        raise EngineError(f"{p.name}: router {router.name} has {int(router.shape[-1])} rows for {n_experts} experts.")


def expert_layout(reader: gguf.GGUFReader) -> ExpertLayout:
    """How the file stores its experts: "split" (pre-2024, one tensor per expert), "stacked" or "none"."""
    names = [t.name for t in reader.tensors]
    if any(SPLIT_EXPERT.fullmatch(n) for n in names):
        return "split"
    return "stacked" if any(n.endswith("_exps.weight") for n in names) else "none"


def require_stacked(info: ModelInfo) -> None:
    """Raise EngineError for a split-expert file: current llama.cpp cannot load it; say how to upgrade it."""
    if info.expert_layout == "split":
        p = info.path
        raise EngineError(
            f"{p.name} uses the pre-2024 split-expert layout (blk.N.ffn_gate.X.weight), which current llama.cpp "
            f"cannot load. Upgrade it once (no requantization): python -m moechat upgrade {p} -o "
            f"{p.with_name(p.stem + '.stacked.gguf')} -- or pass it as --model, which upgrades it automatically."
        )


def _file_type_name(value: Any) -> str:
    try:
        return gguf.LlamaFileType(int(value)).name.removeprefix("MOSTLY_")
    except (TypeError, ValueError):
        return "unknown"


def router_weights(reader: gguf.GGUFReader, layer: int) -> np.ndarray:
    """Layer `layer`'s router as float32 [n_experts, n_embd]: logits = W @ x."""
    name = f"blk.{layer}.ffn_gate_inp.weight"
    tensor = next((t for t in reader.tensors if t.name == name), None)
    if tensor is None:
        raise EngineError(f"{reader.data.filename}: no tensor {name}")
    if tensor.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return gguf.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    return np.asarray(tensor.data, dtype=np.float32)


def token_embedding(reader: gguf.GGUFReader, token: int) -> np.ndarray:
    """Row `token` of token_embd as float32 [n_embd]: the residual stream entering layer 0."""
    tensor = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if tensor is None:
        raise EngineError(f"{reader.data.filename}: no token_embd.weight tensor")
    row = tensor.data[token]
    if tensor.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return np.asarray(row, dtype=np.float32)
    return gguf.dequantize(np.asarray(row)[None], tensor.tensor_type)[0].astype(np.float32)


def expert_labels(info: ModelInfo) -> tuple[str, ...]:
    """Display names for the experts: from the file's metadata, else 'expert i'."""
    names = info.expert_names
    if len(names) == info.n_experts:
        return names
    return tuple(f"expert {i}" for i in range(info.n_experts))
