"""The dense GGUFs a frankenMoE is built from: opened once each and checked against the base model.

Every problem is a ConfigError that names the config field holding the offending file
(`base_model`, `experts[1].source_model`), so the user knows which line of the YAML to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import gguf

from moechat.errors import ConfigError, EngineError
from moechat.gguf.info import field, open_reader
from moechat.moe.mergekit_config import MoEConfig, resolve

FFN_KINDS = ("gate", "up", "down")
_MOE_TENSOR = re.compile(r"\.ffn_(gate_inp|gate_exps|up_exps|down_exps)\.")
SHAPE_KEYS = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.tokens")


@dataclass(frozen=True)
class Source:
    """One model file of the config, opened with the gguf package (memory-mapped)."""

    field: str  # the config field that names it, for error messages
    path: Path
    reader: gguf.GGUFReader
    tensors: dict[str, gguf.ReaderTensor]

    def hparam(self, key: str) -> int:
        return int(field(self.reader, f"llama.{key}", 0) or 0)

    @property
    def n_layers(self) -> int:
        return self.hparam("block_count")

    @property
    def n_embd(self) -> int:
        return self.hparam("embedding_length")

    def ffn(self, layer: int, kind: str) -> gguf.ReaderTensor:
        return self.tensors[f"blk.{layer}.ffn_{kind}.weight"]


def open_sources(config: MoEConfig, base_dir: str | Path) -> tuple[Source, list[Source]]:
    """Open and check the base model and every expert's source model (each distinct file read once)."""
    readers: dict[Path, gguf.GGUFReader] = {}
    sources = []
    for name, path in resolve(config, base_dir).items():
        if path not in readers:
            readers[path] = _open(name, path)
        reader = readers[path]
        sources.append(Source(name, path, reader, {t.name: t for t in reader.tensors}))
    base, experts = sources[0], sources[1:]
    check_dense_llama(base)
    for src in experts:
        check_dense_llama(src)
        check_compatible(src, base)
    return base, experts


def _open(name: str, path: Path) -> gguf.GGUFReader:
    try:
        reader = open_reader(path)
    except EngineError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc}") from None
    if reader.endianess != gguf.GGUFEndian.LITTLE:
        raise ConfigError(f"{name}: {path.name} is a big-endian GGUF; convert it to little-endian first")
    return reader


def check_dense_llama(src: Source) -> None:
    """A dense llama model with an FFN in every layer; MoE or other architectures raise ConfigError."""
    arch = field(src.reader, "general.architecture")
    where = f"{src.field}: {src.path.name}"
    if arch != "llama":
        raise ConfigError(f"{where} is a {arch!r} model; frankenMoEs are built from llama-architecture GGUFs")
    experts = field(src.reader, "llama.expert_count")
    moe = next((name for name in src.tensors if _MOE_TENSOR.search(name)), None)
    if experts or moe:
        raise ConfigError(f"{where} is already a Mixture-of-Experts model ({moe or experts}); sources must be dense")
    if src.n_layers <= 0 or src.n_embd <= 0:
        raise ConfigError(f"{where} lacks llama.block_count or llama.embedding_length")
    for layer in range(src.n_layers):
        for kind in FFN_KINDS:
            if f"blk.{layer}.ffn_{kind}.weight" not in src.tensors:
                raise ConfigError(f"{where} has no tensor blk.{layer}.ffn_{kind}.weight")


def check_compatible(src: Source, base: Source) -> None:
    """Same shapes and tokenizer as the base model: its FFNs must fit the base's attention and vocabulary."""
    if src.reader is base.reader:
        return
    where = f"{src.field}: {src.path.name}"
    for key in SHAPE_KEYS:
        if src.hparam(key) != base.hparam(key):
            raise ConfigError(
                f"{where} has llama.{key}={src.hparam(key)} but base_model {base.path.name} has {base.hparam(key)}"
            )
    for key in TOKENIZER_KEYS:
        if field(src.reader, key) != field(base.reader, key):
            raise ConfigError(f"{where} has a different tokenizer than base_model {base.path.name} ({key} differs)")
    for layer in range(base.n_layers):
        for kind in FFN_KINDS:
            mine, theirs = src.ffn(layer, kind), base.ffn(layer, kind)
            if list(mine.shape) != list(theirs.shape):
                raise ConfigError(
                    f"{where}: blk.{layer}.ffn_{kind}.weight has shape {list(mine.shape)}, "
                    f"base_model has {list(theirs.shape)}"
                )
