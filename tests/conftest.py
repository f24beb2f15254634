"""Shared fixtures. No test touches the network: the Hub is forced offline for the whole session.

Models are generated per test session with moechat.tiny_gguf (random weights, fixed seeds) and never
committed.
"""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from moechat.gguf.tiny import TinySpec, write_tiny_gguf

try:  # browser tests: UI events queue behind each other on slow shared machines, so assertions wait 20 s, not 5
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
except ImportError:
    pass

SHAPES = {
    "moe2": TinySpec(n_experts=2, n_experts_used=2, seed=1, expert_names=("Xwin", "Pygmalion")),
    "moe4": TinySpec(n_experts=4, n_experts_used=2, seed=2, n_layers=3),
    "moe8": TinySpec(n_experts=8, n_experts_used=2, seed=3),
    "moe2_f16": TinySpec(n_experts=2, n_experts_used=2, seed=4, dtype="f16"),
    "dense": TinySpec(n_experts=0, seed=5),
    "eos": TinySpec(n_experts=2, n_experts_used=2, seed=6, favour=2),
}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny model shape, written once per session: {name: path}."""
    root = tmp_path_factory.mktemp("models")
    return {name: write_tiny_gguf(root / f"{name}.gguf", spec) for name, spec in SHAPES.items()}


@pytest.fixture(scope="session")
def tiny_moe_path(tiny_models: dict[str, Path]) -> Path:
    """The flagship's shape in miniature: 2 experts, top-2, float32."""
    return tiny_models["moe2"]
