"""Router gates of a frankenMoE from prompts, the way mergekit-moe computes them (mergekit/moe/router.py).

Each prompt is tokenized as start token + prompt. Per expert, a vector per layer is made from its positive
prompts, minus the same from its negative prompts, then L2-normalised per layer (no other scaling): the router
logit of expert i at layer l is a plain dot product of the FFN input with that unit vector.

- hidden:      the residual stream entering each layer at the last token, mean over prompts.
- hidden_avg:  the same averaged over every position of each prompt, then over prompts.
- cheap_embed: the normalised sum of the token embeddings of all the prompts, the same vector for every layer.
- random:      standard normal; uniform_random: U(-1/sqrt(n_embd), 1/sqrt(n_embd)), torch.nn.Linear's init.

Hidden states come from llama.cpp through moechat.engine (imported only when a prompt mode needs it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np

from moechat.errors import ConfigError
from moechat.gguf.info import field
from moechat.moe.mergekit_config import Expert, MoEConfig

if TYPE_CHECKING:
    from moechat.engine.engine import Engine

EPS = 1e-8  # mergekit's clamp on the norm: an all-zero vector stays zero (a "dead gate")
GATE_N_CTX = 1024
# prompt token ids -> per position, per layer input: float64 [n_tokens, n_layers, n_embd]
LayerInputs = Callable[[Sequence[int]], np.ndarray]


def unit(v: np.ndarray) -> np.ndarray:
    """L2-normalise along the last axis; a zero vector stays zero."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, EPS)


def embedding_rows(reader: gguf.GGUFReader, ids: Sequence[int]) -> np.ndarray:
    """Rows `ids` of token_embd as float64 [len(ids), n_embd], dequantizing only the rows needed."""
    tensor = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if tensor is None:
        raise ConfigError("base_model: the GGUF has no token_embd.weight tensor")
    uniq, inverse = np.unique(np.asarray(ids, dtype=np.int64), return_inverse=True)
    rows = gguf.dequantize(np.asarray(tensor.data[uniq]), tensor.tensor_type)
    return rows.reshape(len(uniq), -1).astype(np.float64)[inverse]


def cheap_embedding(reader: gguf.GGUFReader, prompts: list[list[int]], n_layers: int) -> np.ndarray:
    """Normalised sum of all the prompts' token embeddings, repeated per layer: [n_layers, n_embd]."""
    total = embedding_rows(reader, [t for p in prompts for t in p]).sum(axis=0)
    return np.repeat(unit(total)[None], n_layers, axis=0)


def hidden_mean(inputs: LayerInputs, prompts: list[list[int]], average: bool) -> np.ndarray:
    """Mean over prompts of the layer inputs at the last token (or averaged over positions): [n_layers, n_embd]."""
    per_prompt = [inputs(p).mean(axis=0) if average else inputs(p)[-1] for p in prompts]
    return np.mean(per_prompt, axis=0)


def engine_layer_inputs(engine: Engine, reader: gguf.GGUFReader) -> LayerInputs:
    """Layer inputs of a prompt from llama.cpp: token embeddings (layer 0) and each layer's output `l_out-L`."""

    def inputs(tokens: Sequence[int]) -> np.ndarray:
        got = engine.probe(tokens, ["l_out"])["l_out"]
        layers = [embedding_rows(reader, tokens)] + [got[i].astype(np.float64) for i in range(len(got) - 1)]
        return np.stack(layers, axis=1)

    return inputs


def random_gates(config: MoEConfig, n_layers: int, n_embd: int) -> np.ndarray:
    """`random` or `uniform_random` gates: float32 [n_layers, n_experts, n_embd], seeded by config.seed."""
    rng = np.random.default_rng(config.seed)
    shape = (n_layers, len(config.experts), n_embd)
    if config.gate_mode == "random":
        return rng.standard_normal(shape).astype(np.float32)
    bound = 1.0 / np.sqrt(n_embd)
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def expert_gate(expert: Expert, vector: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """mergekit's gate for one expert: unit(v(positive) - v(negative)) per layer, float64 [n_layers, n_embd]."""
    gate = vector(expert.positive_prompts or [])
    if expert.negative_prompts:
        gate = gate - vector(expert.negative_prompts)
    return unit(gate)


def prompt_gates(
    config: MoEConfig,
    tokenize: Callable[[str], list[int]],
    reader: gguf.GGUFReader,
    inputs: LayerInputs | None,
    n_layers: int,
    progress: bool = False,
) -> np.ndarray:
    """Gates of a prompt mode: float32 [n_layers, n_experts, n_embd]. `tokenize` adds the start token."""

    def vector(prompts: list[str]) -> np.ndarray:
        ids = [tokenize(p) for p in prompts]
        if config.gate_mode == "cheap_embed":
            return cheap_embedding(reader, ids, n_layers)
        if inputs is None:
            raise ConfigError(f"gate_mode {config.gate_mode} needs hidden states from llama.cpp")
        return hidden_mean(inputs, ids, average=config.gate_mode == "hidden_avg")

    experts = _progress(config.experts, progress, "gates")
    gates = [expert_gate(e, vector) for e in experts]
    return np.stack(gates, axis=1).astype(np.float32)


def compute_gates(
    config: MoEConfig, base_path: Path, reader: gguf.GGUFReader, n_layers: int, n_embd: int, progress: bool = False
) -> np.ndarray:
    """Router weights for every layer, float32 [n_layers, n_experts, n_embd], from the config's gate mode."""
    if config.gate_mode in ("random", "uniform_random"):
        return random_gates(config, n_layers, n_embd)
    from moechat.engine.engine import Engine  # llama.cpp only where prompts must be tokenized or run

    hidden = config.gate_mode != "cheap_embed"
    bos = _start_token(reader)
    n_ctx = min(GATE_N_CTX, int(field(reader, "llama.context_length", GATE_N_CTX) or GATE_N_CTX))
    engine = Engine.load(base_path, n_ctx=n_ctx, allow_dense=True, capture="auto" if hidden else "off")
    with engine:

        def tokenize(text: str) -> list[int]:
            ids = bos + engine.tokenize(text, add_bos=False)
            if len(ids) > n_ctx:
                raise ConfigError(f"a prompt has {len(ids)} tokens; gate prompts must fit in {n_ctx}: {text!r}")
            return ids

        inputs = engine_layer_inputs(engine, reader) if hidden else None
        return prompt_gates(config, tokenize, reader, inputs, n_layers, progress)


def _start_token(reader: gguf.GGUFReader) -> list[int]:
    """[bos] like mergekit's `tokenizer.bos_token + prompt`; nothing when the model has no start token."""
    bos = field(reader, "tokenizer.ggml.bos_token_id")
    return [] if bos is None else [int(bos)]


def _progress(items: list[Expert], on: bool, desc: str) -> Iterable[Expert]:
    if not on:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="expert")
