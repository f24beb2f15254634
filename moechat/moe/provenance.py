"""Gate provenance of a MoE GGUF, from the file alone (the `gguf` package, never llama.cpp).

Per layer: the router rows' norms, their pairwise cosines and the condition number of the router matrix.
Flags: a zero row is a "dead gate" (the signature of mergekit main between 2024-02-24 and 2024-03-18, which
tokenized every prompt as just the start token, so an expert's positive and negative gates cancelled);
two rows pointing the same way (cosine >= 0.95) are near-collinear gates (those experts get nearly the same
logit for every token); a condition number above 5 is mergekit's own "degenerate routing" warning.
Expert names come from the GGUF's metadata, else from a `mergekit_moe_config.yml` beside the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from moechat.errors import EngineError
from moechat.gguf.info import EXPERT_NAMES_KEY, field, open_reader, router_weights
from moechat.moe.mergekit_config import CONFIG_KEY

DEAD_NORM = 1e-6  # relative to the layer's largest row norm (and absolute for an all-zero router)
COLLINEAR_COS = 0.95
MERGEKIT_COND = 5.0
CONFIG_FILE = "mergekit_moe_config.yml"


@dataclass(frozen=True)
class LayerGates:
    """One layer's router, summarised. cosines[i, j] is NaN where a row is zero."""

    layer: int
    norms: np.ndarray  # [E]
    cosines: np.ndarray  # [E, E]
    condition: float  # largest / smallest singular value; inf when rank-deficient
    dead: tuple[int, ...]  # experts whose gate row is zero
    collinear: tuple[tuple[int, int], ...]  # expert pairs with cosine >= COLLINEAR_COS

    @property
    def degenerate(self) -> bool:
        return self.condition > MERGEKIT_COND


@dataclass(frozen=True)
class Provenance:
    path: Path
    model_name: str
    n_experts: int
    n_used: int
    names: tuple[str, ...]
    names_from: str  # "metadata", CONFIG_FILE or "default"
    gate_mode: str | None  # from the mergekit config stored by moechat's builder, when present
    layers: tuple[LayerGates, ...]

    @property
    def dead_gates(self) -> list[tuple[int, int]]:
        """(layer, expert) of every zero gate row."""
        return [(g.layer, e) for g in self.layers for e in g.dead]

    @property
    def collinear_layers(self) -> list[int]:
        return [g.layer for g in self.layers if g.collinear]

    @property
    def degenerate_layers(self) -> list[int]:
        return [g.layer for g in self.layers if g.degenerate]


def layer_gates(layer: int, w: np.ndarray) -> LayerGates:
    """Summarise one router matrix W [n_experts, n_embd] (pure)."""
    w = np.asarray(w, dtype=np.float64)
    norms = np.linalg.norm(w, axis=1)
    dead_below = DEAD_NORM * max(float(norms.max(initial=0.0)), 1.0)
    alive = norms > dead_below
    safe = np.where(alive, norms, 1.0)[:, None]
    cos = (w / safe) @ (w / safe).T
    cos[~alive, :] = np.nan
    cos[:, ~alive] = np.nan
    s = np.linalg.svd(w, compute_uv=False)
    condition = float(s[0] / s[-1]) if s[-1] > dead_below else float("inf")
    n = len(norms)
    pairs = tuple((i, j) for i in range(n) for j in range(i + 1, n) if cos[i, j] >= COLLINEAR_COS)
    return LayerGates(layer, norms, cos, condition, tuple(int(i) for i in np.flatnonzero(~alive)), pairs)


def names_from_config(path: Path, n_experts: int) -> tuple[str, ...] | None:
    """Expert names from a mergekit_moe_config.yml beside the model: each expert's name or source_model."""
    cfg = path.with_name(CONFIG_FILE)
    try:
        experts = yaml.safe_load(cfg.read_text(encoding="utf-8")).get("experts") or []
        names = tuple(str(e.get("name") or e["source_model"]) for e in experts)
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return None
    return names if len(names) == n_experts else None


def gate_provenance(path: str | Path) -> Provenance:
    """Read a MoE GGUF's routers and summarise every layer. Raises EngineError for unreadable or dense files."""
    p = Path(path)
    reader = open_reader(p)  # parsed once: large vocabularies make each parse take seconds
    arch = field(reader, "general.architecture", "llama")
    n_experts = int(field(reader, f"{arch}.expert_count", 0) or 0)
    if n_experts <= 0:
        raise EngineError(f"{p.name} has no {arch}.expert_count: it is not a Mixture-of-Experts model")
    n_layers = int(field(reader, f"{arch}.block_count", 0) or 0)
    layers = tuple(layer_gates(i, router_weights(reader, i)) for i in range(n_layers))
    names, source = _names(p, tuple(field(reader, EXPERT_NAMES_KEY, ())), n_experts)
    return Provenance(
        path=p,
        model_name=str(field(reader, "general.name", p.stem)),
        n_experts=n_experts,
        n_used=int(field(reader, f"{arch}.expert_used_count", 0) or 0),
        names=names,
        names_from=source,
        gate_mode=_stored_gate_mode(field(reader, CONFIG_KEY)),
        layers=layers,
    )


def _names(path: Path, stored: tuple[str, ...], n_experts: int) -> tuple[tuple[str, ...], str]:
    if len(stored) == n_experts:
        return stored, "metadata"
    if (from_cfg := names_from_config(path, n_experts)) is not None:
        return from_cfg, CONFIG_FILE
    return tuple(f"expert {i}" for i in range(n_experts)), "default"


def _stored_gate_mode(config_text: str | None) -> str | None:
    try:
        mode = yaml.safe_load(config_text or "").get("gate_mode", "hidden")
    except (yaml.YAMLError, AttributeError):
        return None
    return str(mode)
