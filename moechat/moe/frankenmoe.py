"""Build a llama-architecture Mixture-of-Experts GGUF from dense GGUFs, driven by a mergekit-moe config.

Expert i's FFN (`blk.N.ffn_{gate,up,down}.weight` of experts[i].source_model) becomes slice i of the stacked
`blk.N.ffn_{gate,up,down}_exps.weight`: ggml shape [n_embd, n_ff] per source -> [n_embd, n_ff, n_expert], the
expert axis outermost, so when the sources share a type their raw (quantized) blocks are concatenated without
requantizing. Everything else (attention, norms, embeddings, output head, all metadata) comes from base_model;
the router `blk.N.ffn_gate_inp.weight` is float32 [n_expert, n_embd] from the gate mode (moechat.gates).
The config text and the expert names are stored in the metadata. Same inputs => byte-identical output; the
file is written beside its destination under a temporary name and renamed into place only when complete.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from moechat.errors import ConfigError
from moechat.gguf.info import EXPERT_NAMES_KEY, field
from moechat.gguf.write import Planned, raw_bytes, write_gguf
from moechat.moe.gates import compute_gates
from moechat.moe.mergekit_config import CONFIG_KEY, MoEConfig, load_config
from moechat.moe.sources import FFN_KINDS, Source, open_sources

BUILDER_VERSION = "1"
BUILDER_KEY = "moechat.builder_version"
VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType
# types the gguf package can write back after dequantizing (noise, residual_scale or mixed expert types)
ENCODABLE = frozenset({QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0})
_FFN_NAME = re.compile(r"blk\.(\d+)\.ffn_(gate|up|down)\.weight")
_QUANT_SUFFIX = re.compile(r"[.\-_](I?Q\d[\w]*|[Ff]16|[Ff]32|[Bb][Ff]16)$")


def expert_names(config: MoEConfig) -> list[str]:
    """Display names: each expert's `name`, else its source file's name without the quantization suffix."""
    names = [e.name or _QUANT_SUFFIX.sub("", Path(e.source_model).stem) for e in config.experts]
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(f"{n} #{seen[n]}" if counts[n] > 1 else n)
    return out


def _target_type(experts: list[Source], config: MoEConfig, layer: int, kind: str) -> gguf.GGMLQuantizationType:
    """The stacked tensor's type: the experts' own type; on a mix, expert 0's if writable, else F16."""
    types = {src.ffn(layer, kind).tensor_type for src in experts}
    first = experts[0].ffn(layer, kind).tensor_type
    if len(types) == 1 and not any(e.changes_weights for e in config.experts):
        return first
    return first if first in ENCODABLE else QT.F16


def _expert_slice(src: Source, config: MoEConfig, index: int, layer: int, kind: str, target: QT) -> np.ndarray:
    """Expert `index`'s FFN tensor as bytes of type `target`: raw when possible, else re-encoded."""
    tensor, expert = src.ffn(layer, kind), config.experts[index]
    scale = expert.residual_scale if kind == "down" else None
    if tensor.tensor_type == target and not expert.noise_scale and scale in (None, 1.0):
        return raw_bytes(tensor)
    w = gguf.dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float32)
    if expert.noise_scale:
        rng = np.random.default_rng([config.seed, index, layer, FFN_KINDS.index(kind)])
        w = w + (expert.noise_scale * rng.standard_normal(w.shape)).astype(np.float32)
    if scale not in (None, 1.0):
        w = w * np.float32(scale)
    return np.ascontiguousarray(gguf.quantize(w, target)).view(np.uint8)


def _stacked(experts: list[Source], config: MoEConfig, layer: int, kind: str) -> Planned:
    target = _target_type(experts, config, layer, kind)
    first = experts[0].ffn(layer, kind)
    rows, n_elem = int(first.shape[1]), int(first.shape[0])  # ggml [n_in, n_out] -> numpy [n_out, n_in]
    block, type_size = gguf.GGML_QUANT_SIZES[target]
    byte_shape = (len(experts), rows, n_elem // block * type_size)

    def make() -> np.ndarray:
        return np.stack([_expert_slice(s, config, i, layer, kind, target) for i, s in enumerate(experts)])

    return Planned(f"blk.{layer}.ffn_{kind}_exps.weight", target, byte_shape, make)


def _router(gates: np.ndarray, layer: int) -> Planned:
    w = np.ascontiguousarray(gates[layer], dtype=np.float32)  # [n_expert, n_embd]: logits = W @ x
    return Planned(f"blk.{layer}.ffn_gate_inp.weight", QT.F32, (w.shape[0], w.shape[1] * 4), lambda: w.view(np.uint8))


def plan_tensors(base: Source, experts: list[Source], config: MoEConfig, gates: np.ndarray) -> list[Planned]:
    """Output tensors in base_model's order; each layer's dense FFN is replaced by router + stacked experts."""
    plan: list[Planned] = []
    routed: set[int] = set()
    for tensor in base.reader.tensors:
        m = _FFN_NAME.fullmatch(tensor.name)
        if m is None:
            data = raw_bytes(tensor)
            plan.append(Planned.ready(tensor.name, tensor.tensor_type, data))
            continue
        layer = int(m.group(1))
        if layer not in routed:
            routed.add(layer)
            plan.append(_router(gates, layer))
        plan.append(_stacked(experts, config, layer, m.group(2)))
    return plan


def metadata(base: Source, config: MoEConfig, config_text: str) -> Iterator[tuple[str, Any, VT, VT | None]]:
    """(key, value, type, array item type): base_model's metadata with the MoE's keys set or added."""
    n = len(config.experts)
    name = config.name or f"{field(base.reader, 'general.name', base.path.stem)} {n}x frankenMoE"
    new: dict[str, tuple[Any, VT, VT | None]] = {
        "general.name": (name, VT.STRING, None),
        "llama.expert_count": (n, VT.UINT32, None),
        "llama.expert_used_count": (config.experts_per_token, VT.UINT32, None),
        EXPERT_NAMES_KEY: (expert_names(config), VT.ARRAY, VT.STRING),
        CONFIG_KEY: (config_text, VT.STRING, None),
        BUILDER_KEY: (BUILDER_VERSION, VT.STRING, None),
    }
    for key, f in base.reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # written by GGUFWriter itself
        if key in new:
            yield key, *new.pop(key)
        else:
            yield key, f.contents(), f.types[0], f.types[-1] if f.types[0] == VT.ARRAY else None
    for key, value in new.items():
        yield key, *value


def build_moe(
    config: MoEConfig, config_text: str, out: str | Path, base_dir: str | Path = ".", progress: bool = False
) -> Path:
    """Build the MoE GGUF described by `config` (paths relative to `base_dir`) at `out`; returns `out`."""
    out = Path(out).resolve()
    if not out.parent.is_dir():
        raise ConfigError(f"output: the folder {out.parent} does not exist")
    base, experts = open_sources(config, base_dir)
    clash = next((s for s in [base, *experts] if s.path == out), None)
    if clash is not None:
        raise ConfigError(f"output: {out.name} is {clash.field}; choose another output path")
    gates = compute_gates(config, base.path, base.reader, base.n_layers, base.n_embd, progress)
    write_gguf(out, list(metadata(base, config, config_text)), plan_tensors(base, experts, config, gates), progress)
    return out


def build_from_file(config_path: str | Path, out: str | Path, progress: bool = False) -> Path:
    """Build from a YAML file; model paths in it are relative to the file's folder."""
    config, text = load_config(config_path)
    return build_moe(config, text, out, Path(config_path).resolve().parent, progress)
