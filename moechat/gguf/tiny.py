"""Write tiny llama-architecture GGUF models with random weights: MoE (stacked experts, or the pre-2024 split
layout) or dense.

They load in real llama.cpp in milliseconds, so tests, benchmarks and users can exercise the whole
engine (routing capture included) without downloading anything. Same spec and seed => same bytes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gguf
import numpy as np

SPACE = "\u2581"  # SentencePiece's visible space
# A few merges, so that common English text does not come out one byte per token.
MERGES = (
    "th he in er an re on en at ou ed nd ha es or is it ng st te ar"
    f" {SPACE}t {SPACE}a {SPACE}s {SPACE}w {SPACE}h {SPACE}o {SPACE}i {SPACE}b {SPACE}m {SPACE}c"
    f" {SPACE}the {SPACE}to {SPACE}and {SPACE}of {SPACE}you {SPACE}is {SPACE}I {SPACE}in"
    " ing the ion ell llo"
).split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny model. n_experts=0 makes a dense model."""

    n_layers: int = 2
    n_embd: int = 64
    n_ff: int = 128
    n_heads: int = 4
    n_kv_heads: int = 2
    n_experts: int = 2
    n_experts_used: int = 2
    n_ctx: int = 512
    dtype: Literal["f32", "f16"] = "f32"
    seed: int = 0
    name: str = "tiny"
    expert_names: tuple[str, ...] = ()
    favour: int | None = None  # make greedy decoding always pick this token id (e.g. 2 = </s>)
    # pre-2024 files: "split" writes one tensor per expert (blk.N.ffn_gate.X.weight), same weights as "stacked"
    expert_layout: Literal["stacked", "split"] = "stacked"
    router_dtype: Literal["f32", "f16"] = "f32"
    expert_dtype: Literal["same", "q8_0"] = "same"  # "same": the model's dtype
    quants: tuple[str, ...] = ()  # layer i's weight matrices in GGML type quants[i % len] ("Q8_0", "Q4_0")
    vocab: Literal["tiny", "llama2"] = "tiny"  # tiny_vocab() (~400 tokens) or llama2_vocab() (32,000)
    rope_freq_base: float | None = None  # written to the metadata when set (llama.cpp's default is 10000)


# PygWin-2x7B's structure at width 64: llama, 2 experts (Xwin, Pygmalion) top-2, 32 layers, full multi-head
# attention, Llama 2's vocabulary size with byte fallback, rope base 10000, context 4096, f16 like the FP16 release.
# n_ff 256 lets K-quants quantize ffn_down for real; the width-64 tensors take llama.cpp's fallback types.
FLAGSHIP = TinySpec(
    n_layers=32,
    n_embd=64,
    n_ff=256,
    n_heads=4,
    n_kv_heads=4,
    n_ctx=4096,
    dtype="f16",
    seed=13,
    name="PygWin-2x7B shape (tiny)",
    expert_names=("Xwin", "Pygmalion"),
    vocab="llama2",
    rope_freq_base=10000.0,
)


def tiny_vocab() -> tuple[list[str], list[float], list[int]]:
    """SentencePiece-style vocabulary: 3 specials, 256 byte-fallback tokens, printable ASCII, merges."""
    tt = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"]
    types = [tt.UNKNOWN, tt.CONTROL, tt.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [tt.BYTE] * 256
    chars = [SPACE] + [chr(c) for c in range(33, 127)]
    tokens += chars + MERGES
    types += [tt.NORMAL] * (len(chars) + len(MERGES))
    # SentencePiece merges the adjacent pair whose merged piece has the highest score.
    scores = [0.0] * (3 + 256) + [-1000.0] * len(chars) + [-float(i) for i in range(len(MERGES))]
    return tokens, scores, [int(t) for t in types]


LLAMA2_VOCAB_SIZE = 32_000
# English letter frequencies (%, a..z): the merged pieces of llama2_vocab() are the likeliest letter strings.
LETTER_FREQ: tuple[float, ...] = (8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.77, 4.0, 2.4, 6.7, 7.5, 1.9)
LETTER_FREQ += (0.095, 6.0, 6.3, 9.1, 2.8, 0.98, 2.4, 0.15, 2.0, 0.074)
P_WORD_START, P_CAPITAL = 0.5, 0.2
MAX_PIECE_LETTERS = 4


@functools.cache
def llama2_vocab() -> tuple[list[str], list[float], list[int]]:
    """A Llama-2-style SentencePiece vocabulary of 32,000, laid out like Llama 2's tokenizer.model: <unk> <s> </s>,
    the 256 byte-fallback tokens <0x00>..<0xFF>, merged pieces best first, then single characters last.

    The merged pieces are synthetic: the likeliest lowercase letter strings (up to 4 letters) under English letter
    frequencies, bare, after '▁' (word start) or after '▁' and a capital. Scores fall with rank, and every piece's
    prefix ranks above it, so SentencePiece's merges reach every piece; digits stay single, as in Llama 2.
    """
    tt = gguf.TokenType
    chars = _llama2_chars()
    merged = _merged_pieces(LLAMA2_VOCAB_SIZE - 3 - 256 - len(chars))
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + merged + chars
    types = [tt.UNKNOWN, tt.CONTROL, tt.CONTROL] + [tt.BYTE] * 256 + [tt.NORMAL] * (len(merged) + len(chars))
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(merged) + len(chars))]
    return tokens, scores, [int(t) for t in types]


def _llama2_chars() -> list[str]:
    """'▁', printable ASCII, Latin-1, Greek, Cyrillic, typographic punctuation; the rest falls back to bytes."""
    latin1 = [chr(c) for c in range(0xA1, 0x100) if c != 0xAD]  # not the soft hyphen
    greek = [chr(c) for c in (*range(0x391, 0x3AA), *range(0x3B1, 0x3CA)) if c != 0x3A2]
    cyrillic = [chr(c) for c in range(0x410, 0x450)]
    punctuation = list("\u2013\u2014\u2018\u2019\u201c\u201d\u2026\u20ac")
    return [SPACE] + [chr(c) for c in range(33, 127)] + latin1 + greek + cyrillic + punctuation


def _merged_pieces(n: int) -> list[str]:
    """The n likeliest pieces (see llama2_vocab), best first; ties keep a fixed order (length, then alphabet)."""
    logp = _micro_log(np.array(LETTER_FREQ) / sum(LETTER_FREQ))
    starts = {"bare": 0, "word": _micro_log(P_WORD_START), "Word": _micro_log(P_WORD_START * P_CAPITAL)}
    groups = []  # (start, letter indices [N, L]); bare strings have 2 letters or more
    for length in range(1, MAX_PIECE_LETTERS + 1):
        idx = np.indices((26,) * length).reshape(length, -1).T
        groups += [(start, idx) for start in starts if start != "bare" or length > 1]
    scores = np.concatenate([logp[idx].sum(axis=1) + starts[start] for start, idx in groups])
    lengths = np.concatenate([np.full(len(idx), idx.shape[1] + (start != "bare")) for start, idx in groups])
    which = np.concatenate([np.full(len(idx), g) for g, (_, idx) in enumerate(groups)])
    rows = np.concatenate([np.arange(len(idx)) for _, idx in groups])
    order = np.lexsort((np.arange(len(scores)), lengths, -scores))
    if len(order) < n:
        raise ValueError(f"only {len(order)} merged pieces are possible, {n} were asked for")
    pieces = []
    for g, r in zip(which[order[:n]], rows[order[:n]], strict=True):
        start, idx = groups[g]
        letters = "".join(chr(97 + i) for i in idx[r])
        pieces.append({"bare": letters, "word": SPACE + letters, "Word": SPACE + letters.capitalize()}[start])
    return pieces


def _micro_log(p: np.ndarray | float) -> np.ndarray:
    """log(p) in whole micro-nats: integer sums are exact on every machine, so ties are real ties."""
    return np.round(np.log(p) * 1e6).astype(np.int64)


def _tensors(spec: TinySpec, n_vocab: int) -> dict[str, np.ndarray]:
    """Random weights in numpy's [rows=out, cols=in] order (gguf reverses to ggml's [in, out])."""
    rng = np.random.default_rng(spec.seed)
    e, f, kv = spec.n_embd, spec.n_ff, spec.n_embd // spec.n_heads * spec.n_kv_heads

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(e)).astype(np.float32)

    out = {"token_embd.weight": w(n_vocab, e), "output_norm.weight": norm(), "output.weight": w(n_vocab, e)}
    for i in range(spec.n_layers):
        b = f"blk.{i}."
        out |= {b + "attn_norm.weight": norm(), b + "attn_q.weight": w(e, e), b + "attn_k.weight": w(kv, e)}
        out |= {b + "attn_v.weight": w(kv, e), b + "attn_output.weight": w(e, e), b + "ffn_norm.weight": norm()}
        if spec.n_experts:
            x = spec.n_experts
            out[b + "ffn_gate_inp.weight"] = 4 * w(x, e)  # spread the router so probabilities vary
            out |= {b + "ffn_gate_exps.weight": w(x, f, e), b + "ffn_up_exps.weight": w(x, f, e)}
            out[b + "ffn_down_exps.weight"] = w(x, e, f)
        else:
            out |= {b + "ffn_gate.weight": w(f, e), b + "ffn_up.weight": w(f, e), b + "ffn_down.weight": w(e, f)}
    if spec.favour is not None:
        _favour(out, spec.favour)
    return out


def _favour(out: dict[str, np.ndarray], token: int) -> None:
    """Component 0 of every embedding dominates the residual stream; the output head reads only it,
    and only the favoured token's row is non-zero: its logit is the only positive one."""
    out["token_embd.weight"][:, 0] = 100.0
    out["output_norm.weight"][:] = 0.0
    out["output_norm.weight"][0] = 1.0
    out["output.weight"][:] = 0.0
    out["output.weight"][token, 0] = 1.0


def _keep_f32(name: str) -> bool:
    return name.endswith("norm.weight") or "ffn_gate_inp" in name


def _quant_type(name: str, spec: TinySpec) -> gguf.GGMLQuantizationType | None:
    """The quantized type of a layer's weight matrix when spec.quants asks for one (rows must be whole blocks)."""
    if not spec.quants or not name.startswith("blk.") or _keep_f32(name):
        return None
    return gguf.GGMLQuantizationType[spec.quants[int(name.split(".")[1]) % len(spec.quants)]]


def split_experts(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pre-2024 layout: each stacked blk.N.ffn_K_exps.weight [E, rows, cols] becomes E tensors
    blk.N.ffn_K.X.weight [rows, cols], in place of the stack."""
    out: dict[str, np.ndarray] = {}
    for name, data in tensors.items():
        if name.endswith("_exps.weight"):
            out |= {name.replace("_exps.weight", f".{x}.weight"): data[x] for x in range(len(data))}
        else:
            out[name] = data
    return out


def _add(w: gguf.GGUFWriter, spec: TinySpec, name: str, data: np.ndarray) -> None:
    if (qtype := _quant_type(name, spec)) is not None:
        w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    elif "ffn_gate_inp" in name:
        w.add_tensor(name, data.astype(np.float16) if spec.router_dtype == "f16" else data)
    elif spec.expert_dtype == "q8_0" and re.fullmatch(r"blk\.\d+\.ffn_(gate|up|down)(_exps|\.\d+)\.weight", name):
        q8 = gguf.GGMLQuantizationType.Q8_0
        w.add_tensor(name, gguf.quants.quantize(data, q8), raw_dtype=q8)
    else:
        w.add_tensor(name, data if spec.dtype == "f32" or _keep_f32(name) else data.astype(np.float16))


def write_tiny_gguf(path: str | Path, spec: TinySpec = TinySpec()) -> Path:
    """Write a tiny random llama GGUF to `path` and return the path."""
    if spec.n_experts and not 0 < spec.n_experts_used <= spec.n_experts:
        raise ValueError(f"n_experts_used must be in 1..{spec.n_experts}, got {spec.n_experts_used}")
    path = Path(path)
    w = gguf.GGUFWriter(str(path), "llama")
    tokens = add_metadata(w, spec)
    tensors = _tensors(spec, len(tokens))
    for name, data in (split_experts(tensors) if spec.expert_layout == "split" else tensors).items():
        _add(w, spec, name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def add_metadata(w: gguf.GGUFWriter, spec: TinySpec) -> list[str]:
    """Every metadata key of the model `spec` describes (hyperparameters, tokenizer); returns the token list."""
    tokens, scores, types = llama2_vocab() if spec.vocab == "llama2" else tiny_vocab()
    w.add_name(spec.name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if spec.dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(spec.n_ctx)
    w.add_embedding_length(spec.n_embd)
    w.add_block_count(spec.n_layers)
    w.add_feed_forward_length(spec.n_ff)
    w.add_head_count(spec.n_heads)
    w.add_head_count_kv(spec.n_kv_heads)
    w.add_rope_dimension_count(spec.n_embd // spec.n_heads)
    w.add_layer_norm_rms_eps(1e-5)
    if spec.rope_freq_base is not None:
        w.add_rope_freq_base(spec.rope_freq_base)
    if spec.n_experts:
        w.add_expert_count(spec.n_experts)
        w.add_expert_used_count(spec.n_experts_used)
    if spec.expert_names:
        w.add_array("moechat.expert_names", list(spec.expert_names))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template(CHAT_TEMPLATE)
    return tokens
