"""Every tiny model the tests generate (moechat.gguf.tiny), named in one place. Same spec => same bytes.

SHAPES are written once per session by conftest's `tiny_models` fixture; the others by the tests that need them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from moechat.gguf.tiny import TinySpec, tiny_vocab

TOKEN_A = tiny_vocab()[0].index("a")  # 324: a greedy reply of "aaaa…" never ends early
TOKEN_TH = tiny_vocab()[0].index("th")  # 354: a greedy reply of "thth…", whose first "ht" is at offset 1

SHAPES = {
    "moe2": TinySpec(n_experts=2, n_experts_used=2, seed=1, expert_names=("Xwin", "Pygmalion")),
    "moe4": TinySpec(n_experts=4, n_experts_used=2, seed=2, n_layers=3),
    "moe8": TinySpec(n_experts=8, n_experts_used=2, seed=3),
    "moe2_f16": TinySpec(n_experts=2, n_experts_used=2, seed=4, dtype="f16"),
    "dense": TinySpec(n_experts=0, seed=5),
    "eos": TinySpec(n_experts=2, n_experts_used=2, seed=6, favour=2),
    "thth": TinySpec(n_experts=2, n_experts_used=2, seed=1, favour=TOKEN_TH, expert_names=("Xwin", "Pygmalion")),
}

MOE2 = TinySpec(n_experts=2)  # the defaults: 2 layers, 2 unnamed experts, seed 0
MOE4_NAMED = TinySpec(n_layers=3, n_experts=4, expert_names=tuple("abcd"))
DENSE = TinySpec(n_experts=0)


def dense_source(seed: int, dtype: Literal["f32", "f16"] = "f32") -> TinySpec:
    """A dense source model for the frankenMoE builder (d1, d2, … and their f16 twins h1, h2, …)."""
    return replace(DENSE, seed=seed, dtype=dtype)


WIDE_DENSE = TinySpec(n_experts=0, n_ff=96, seed=4)  # an FFN wider than dense_source(seed)'s: the builder refuses it
BUILDER_MOE = TinySpec(n_experts=2, seed=5)  # an MoE offered to the builder as a source: refused
STEERING_DENSE = TinySpec(n_experts=0, seed=31, name="dense")  # stacked twice into an MoE of identical experts
# the reproducibility tests' quantized model (SHAPES' moe2 and moe2_f16 are the float ones)
Q8_MOE = TinySpec(n_experts=2, seed=1, n_embd=256, n_ff=512, n_heads=4, n_kv_heads=4, quants=("Q8_0",))
# widths that are multiples of 256, as llama.cpp's k-quant blocks need
K_QUANTIZABLE = TinySpec(n_embd=256, n_ff=512, n_heads=4, n_kv_heads=4, n_layers=2, seed=21, name="tiny256")
# the browser tests' model: big enough to see streaming and heatmaps; greedy replies never end early
BROWSER_MOE = TinySpec(
    n_layers=6,
    n_embd=512,
    n_ff=1536,
    n_heads=8,
    n_kv_heads=4,
    n_ctx=4096,
    dtype="f16",
    seed=7,
    favour=TOKEN_A,
    expert_names=("Xwin", "Pygmalion"),
)
# the legacy-layout tests write it in variants: router and expert dtypes, stacked and split experts
UPGRADE_MOE4 = TinySpec(n_layers=2, n_experts=4, n_experts_used=2, seed=21, expert_names=("a", "b", "c", "d"))
SECOND_EXPERTS = ("Alpha", "Beta", "Gamma", "Delta")
BROWSER_SECOND_MOE = TinySpec(n_layers=3, n_experts=4, n_ctx=2048, seed=11, favour=TOKEN_A, expert_names=SECOND_EXPERTS)
