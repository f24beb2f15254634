"""Routing fidelity: how far model B (e.g. a quantization) routes and predicts like model A, teacher-forced.

Both models read the same token ids (TEXTS tokenized by A; B must tokenize them identically and share A's shape),
each text from an empty cache, with float32 KV cache and attention (Engine.load(exact=True)). llama.cpp's graph
gives, per position, the router logits of every layer (`ffn_moe_logits-L`) and the output logits
(`result_output`). From them, per layer: top-1 agreement, Cohen's kappa, mean |Δp| and logit-margin correlation
(moechat.agreement.compare, A as reference); over the vocabulary: next-token agreement (same argmax) and the mean
KL divergence KL(P_A || P_B) of the next-token distributions, in nats. The models are loaded one after the other,
never both at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moechat.errors import EngineError
from moechat.gguf.info import read_info
from moechat.routing.agreement import Agreement, compare
from moechat.routing.metrics import softmax

if TYPE_CHECKING:
    from moechat.engine.engine import Engine

ROUTER_KIND, OUTPUT_KIND = "ffn_moe_logits", "result_output"
# A fixed, varied set: role-play, dialogue, narration, instructions, code, arithmetic, facts, lists, other scripts.
TEXTS: tuple[str, ...] = (
    "*She smiles and leans closer* Tell me about your adventures, traveller. Did you really see the dragon?",
    'The knight drew his sword. "For the queen!" he shouted, and the gates of the burning city gave way.',
    "User: Can you explain how photosynthesis works?\nAssistant: Plants capture light with chlorophyll and turn "
    "carbon dioxide and water into sugar, releasing oxygen.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "To convert Celsius to Fahrenheit, multiply by 9/5 and add 32: 100 C is 212 F, and 37 C is 98.6 F.",
    "Shopping list:\n- 2 loaves of bread\n- 1 kg apples\n- milk, eggs, butter\n- coffee (the strong one)",
    "The French Revolution began in 1789 with the storming of the Bastille, and it changed Europe forever.",
    "Il était une fois, dans un royaume au-delà des montagnes, une jeune sorcière et son chat qui parlait.",
    "I'm so sorry for your loss. If you want to talk about it, I'm here, and there's no rush at all.",
    "BREAKING: Local cat elected mayor after landslide victory; promises naps for all and fish on Fridays.",
)
MAX_TOKENS_PER_TEXT = 256


@dataclass(frozen=True, eq=False)
class Run:
    """One model teacher-forced on token sequences, all positions concatenated."""

    router_logits: np.ndarray  # float32 [T, L, E]
    output_logits: np.ndarray  # float32 [T, V]
    lengths: tuple[int, ...]  # tokens per text


@dataclass(frozen=True, eq=False)
class FidelityReport:
    model_a: str
    model_b: str
    n_texts: int
    n_tokens: int
    routing: Agreement
    next_token_agreement: float  # fraction of positions where both models' most likely next token is the same
    mean_kl: float  # mean over positions of KL(P_a || P_b), nats
    max_kl: float

    def to_dict(self) -> dict[str, object]:
        return {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "n_texts": self.n_texts,
            "n_tokens": self.n_tokens,
            "routing": self.routing.to_dict(),
            "next_token": {"agreement": self.next_token_agreement, "mean_kl": self.mean_kl, "max_kl": self.max_kl},
        }

    def table(self) -> str:
        """The report as aligned text: one line per layer, then the layer means and the next-token figures."""
        r = self.routing
        size = f"{self.n_texts} texts, {self.n_tokens} tokens"
        lines = [f"routing fidelity of {self.model_b} against {self.model_a} ({size})"]
        lines.append(f"{'layer':>5}  {'top-1':>7}  {'kappa':>7}  {'mean|Δp|':>9}  {'margin r':>8}")
        rows = zip(r.top1, r.kappa, r.mean_abs_dp, r.margin_corr, strict=True)
        for layer, (a, k, d, c) in enumerate(rows):
            lines.append(f"{layer:>5}  {_fmt(a):>7}  {_fmt(k):>7}  {_fmt(d, 5):>9}  {_fmt(c):>8}")
        m = r.means()
        lines.append(
            f"{'mean':>5}  {_fmt(m['top1']):>7}  {_fmt(m['kappa']):>7}  {_fmt(m['mean_abs_dp'], 5):>9}  "
            f"{_fmt(m['margin_corr']):>8}"
        )
        lines.append(f"next-token agreement {_fmt(self.next_token_agreement)}")
        lines.append(f"KL(A || B) mean {self.mean_kl:.3g} nats, max {self.max_kl:.3g}")
        return "\n".join(lines)


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def compare_runs(a: Run, b: Run, model_a: str = "A", model_b: str = "B") -> FidelityReport:
    """The report from two runs on the same tokens (pure numpy)."""
    if a.router_logits.shape != b.router_logits.shape or a.output_logits.shape != b.output_logits.shape:
        raise EngineError(
            f"{model_a} and {model_b} differ in shape: routers {a.router_logits.shape} vs {b.router_logits.shape}, "
            f"outputs {a.output_logits.shape} vs {b.output_logits.shape}"
        )
    probs_a, probs_b = softmax(a.router_logits), softmax(b.router_logits)
    agreement = compare(probs_a, probs_b, logits_a=a.router_logits, logits_b=b.router_logits)
    kl = kl_divergence(a.output_logits, b.output_logits)
    same = np.argmax(a.output_logits, axis=-1) == np.argmax(b.output_logits, axis=-1)
    return FidelityReport(
        model_a, model_b, len(a.lengths), len(kl), agreement, float(same.mean()), float(kl.mean()), float(kl.max())
    )


def kl_divergence(logits_a: np.ndarray, logits_b: np.ndarray) -> np.ndarray:
    """KL(softmax(a) || softmax(b)) per row, in nats, computed in float64 (identical rows give exactly 0)."""
    la, lb = _log_softmax(logits_a), _log_softmax(logits_b)
    return np.maximum((np.exp(la) * (la - lb)).sum(axis=-1), 0.0)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ---- running the models ----------------------------------------------------------------------------------------
def compare_models(
    path_a: str | Path, path_b: str | Path, texts: Sequence[str] | None = None, *, n_threads: int | None = None
) -> FidelityReport:
    """Teacher-force `texts` (default TEXTS) through A then B (one loaded at a time) and compare B to A."""
    texts = TEXTS if texts is None else texts
    info_a, info_b = read_info(path_a), read_info(path_b)
    shape_a = (info_a.architecture, info_a.n_layers, info_a.n_embd, info_a.n_experts)
    shape_b = (info_b.architecture, info_b.n_layers, info_b.n_embd, info_b.n_experts)
    if shape_a != shape_b:
        raise EngineError(
            f"{Path(path_a).name} and {Path(path_b).name} differ in shape (architecture, layers, width, experts): "
            f"{shape_a} vs {shape_b}; compare models of one shape, e.g. a model and its quantization."
        )
    ids, run_a = teacher_forced(path_a, texts, None, n_threads)
    _, run_b = teacher_forced(path_b, texts, ids, n_threads)
    return compare_runs(run_a, run_b, Path(path_a).name, Path(path_b).name)


def teacher_forced(
    path: str | Path, texts: Sequence[str], expected: list[list[int]] | None, n_threads: int | None = None
) -> tuple[list[list[int]], Run]:
    """Tokenize `texts` with this model (checked against `expected` when given) and probe every text."""
    from moechat.engine.engine import Engine  # llama.cpp is loaded only when models are actually run

    with Engine.load(path, n_ctx=MAX_TOKENS_PER_TEXT + 16, n_threads=n_threads, exact=True) as engine:
        ids = [engine.tokenize(t)[:MAX_TOKENS_PER_TEXT] for t in texts]
        if expected is not None and ids != expected:
            bad = next(i for i, (x, y) in enumerate(zip(ids, expected, strict=True)) if x != y)
            raise EngineError(
                f"{Path(path).name} tokenizes text {bad} differently from the reference model: the two models do not "
                "share a tokenizer, so their routing cannot be compared token by token."
            )
        runs = [_probe(engine, seq) for seq in ids]
    routers, outputs = zip(*runs, strict=True)
    return ids, Run(np.concatenate(routers), np.concatenate(outputs), tuple(len(s) for s in ids))


def _probe(engine: Engine, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    got = engine.probe(ids, [ROUTER_KIND, OUTPUT_KIND])
    n_layers = engine.info.n_layers
    layers = got.get(ROUTER_KIND, {})
    if sorted(layers) != list(range(n_layers)) or any(len(v) != len(ids) for v in layers.values()):
        raise EngineError(f"router logits were not captured for every layer and token ({sorted(layers)})")
    output = got.get(OUTPUT_KIND, {}).get(-1)
    if output is None or len(output) != len(ids):
        raise EngineError("output logits were not captured for every token")
    return np.stack([layers[i] for i in range(n_layers)], axis=1).astype(np.float32), output.astype(np.float32)


# ---- output ---------------------------------------------------------------------------------------------------
def write_json(report: FidelityReport, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def write_html(report: FidelityReport, path: str | Path) -> Path:
    """The per-layer figure (moechat.plots.fidelity_figure) as a self-contained HTML file."""
    from moechat.plots import fidelity_figure

    r = report.routing
    title = (
        f"{report.model_b} vs {report.model_a}: next-token agreement {report.next_token_agreement:.3f}, "
        f"mean KL {report.mean_kl:.3g} nats"
    )
    path = Path(path)
    fidelity_figure(r.top1, r.kappa, r.mean_abs_dp, title=title).write_html(path, include_plotlyjs=True)
    return path
