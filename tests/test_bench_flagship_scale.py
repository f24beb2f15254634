"""bench/bench_flagship_scale.py's writer at a small width (multiples of 256): its directly written Q4_K_M file has the
tensor types llama.cpp's own Q4_K_M quantizer picks for the same model, its blocks dequantize to zero-mean weights of
standard deviation 1/sqrt(fan-in), llama.cpp runs it with routing, and it refuses a machine that is short of disk."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gguf.quants import dequantize

from bench.bench_flagship_scale import FULL, refusal, write_model
from moechat.engine.engine import Engine
from moechat.engine.quantize import quantize
from moechat.engine.types import Sampling
from moechat.gguf.info import open_reader, read_info
from moechat.gguf.tiny import write_tiny_gguf

SMALL = replace(FULL, n_embd=256, n_ff=512, n_heads=4, n_kv_heads=4, n_layers=8)  # 8 layers: both Q4_K_M layer kinds


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("scale") / "direct.Q4_K_M.gguf", SMALL)


def layout(path: Path) -> dict[str, tuple[str, int]]:
    return {t.name: (t.tensor_type.name, int(t.n_bytes)) for t in open_reader(path).tensors}


def test_types_and_sizes_are_llama_cpps_q4_k_m(direct: Path, tmp_path: Path) -> None:
    f16 = write_tiny_gguf(tmp_path / "small.F16.gguf", SMALL)
    reference = quantize(f16, tmp_path / "small.Q4_K_M.gguf", "Q4_K_M").path
    assert layout(direct) == layout(reference)
    assert {t for t, _ in layout(direct).values()} == {"Q4_K", "Q6_K", "F32"}
    assert read_info(direct).file_type == "Q4_K_M" and read_info(direct).n_layers == 8


def test_blocks_are_valid_weights_and_llama_cpp_runs_them(direct: Path, tmp_path: Path) -> None:
    for t in open_reader(direct).tensors:
        if t.tensor_type.name in ("Q4_K", "Q6_K"):
            w = dequantize(t.data, t.tensor_type)
            fan_in = w.shape[-1]
            assert np.isfinite(w).all() and abs(w.std() * np.sqrt(fan_in) - 1) < 0.05, t.name
            assert abs(w.mean()) * np.sqrt(fan_in) < 0.05, t.name
    with Engine.load(direct, n_ctx=128) as engine:
        tokens = [
            t for t in engine.stream(engine.tokenize("Hello"), Sampling(temperature=0, max_tokens=4)) if not t.prompt
        ]
    assert len(tokens) == 4 and all(t.routing.probs.shape == (8, 2) for t in tokens)
    again = write_model(tmp_path / "again.gguf", SMALL)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(direct.read_bytes()).digest()


def test_refuses_when_the_disk_is_short(tmp_path: Path) -> None:
    reason = refusal(tmp_path, 1 << 60, offloaded=False)
    assert reason is not None and reason.startswith("refusing:") and "GiB free" in reason and str(tmp_path) in reason
    assert refusal(tmp_path, 1 << 20, offloaded=True) is None
