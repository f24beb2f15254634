"""Expert steering: solo-expert GGUFs sliced from stacked experts (raw bytes), top-1 routing, labels, caching."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.errors import EngineError
from moechat.gguf.info import field, open_reader, read_info
from moechat.gguf.tiny import write_tiny_gguf
from moechat.gguf.write import raw_bytes
from moechat.moe.frankenmoe import build_moe
from moechat.moe.mergekit_config import parse_config
from moechat.moe.steering import SOLO_KEY, solo_expert_gguf, steering_label, top1_engine
from tests.models import STEERING_DENSE

GREEDY = Sampling(temperature=0, max_tokens=12)
PROMPT = "Once upon a time, the knight"


@pytest.fixture(scope="module")
def twin_moe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dense, MoE): the MoE stacks the dense model's FFN twice (identical experts) behind a random router."""
    d = tmp_path_factory.mktemp("twin")
    write_tiny_gguf(d / "dense.gguf", STEERING_DENSE)
    text = (
        "base_model: dense.gguf\ngate_mode: random\nexperts:\n"
        "  - source_model: dense.gguf\n    name: Left\n  - source_model: dense.gguf\n    name: Right\n"
    )
    return d / "dense.gguf", build_moe(parse_config(text), text, d / "twin.gguf", d)


def tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in open_reader(path).tensors}


def greedy(engine: Engine) -> list[int]:
    return [t.id for t in engine.stream(engine.tokenize(PROMPT), GREEDY) if not t.prompt]


def test_solo_expert_of_identical_experts_gives_the_moe_tokens(twin_moe: tuple[Path, Path], tmp_path: Path) -> None:
    dense, moe = twin_moe
    solo = solo_expert_gguf(moe, 1, tmp_path)
    with Engine.load(moe, n_ctx=128) as engine:
        moe_tokens = greedy(engine)
    with top1_engine(moe, n_ctx=128) as engine:
        top1_tokens = greedy(engine)
    with Engine.load(solo, n_ctx=128, allow_dense=True) as engine:
        solo_tokens = greedy(engine)
    assert len(moe_tokens) == GREEDY.max_tokens
    assert solo_tokens == moe_tokens == top1_tokens
    solo_t, dense_t = tensors(solo), tensors(dense)
    assert list(solo_t) == list(dense_t)  # the dense model's tensors, in its order
    assert all(np.array_equal(raw_bytes(solo_t[n]), raw_bytes(dense_t[n])) for n in dense_t)


def test_solo_file_slices_raw_bytes_and_drops_the_router(tiny_moe_path: Path, tmp_path: Path) -> None:
    moe_t = tensors(tiny_moe_path)
    for expert in (0, 1):
        solo = solo_expert_gguf(tiny_moe_path, expert, tmp_path)
        solo_t = tensors(solo)
        assert not any("ffn_gate_inp" in n or "_exps" in n for n in solo_t)
        for layer in range(2):
            for kind in ("gate", "up", "down"):
                stacked = raw_bytes(moe_t[f"blk.{layer}.ffn_{kind}_exps.weight"])[expert]
                assert np.array_equal(raw_bytes(solo_t[f"blk.{layer}.ffn_{kind}.weight"]), stacked)
        reader = open_reader(solo)
        assert field(reader, "llama.expert_count") is None and field(reader, "llama.expert_used_count") is None
        assert field(reader, SOLO_KEY) == expert
        info = read_info(solo, allow_dense=True)
        assert not info.is_moe and info.name == f"tiny (solo expert {expert}: {('Xwin', 'Pygmalion')[expert]})"


def test_solo_file_is_cached_and_keyed_by_input(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    first = solo_expert_gguf(tiny_models["moe2"], 0, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert solo_expert_gguf(tiny_models["moe2"], 0, tmp_path) == first and first.stat().st_mtime_ns == stamp
    others = {
        solo_expert_gguf(tiny_models["moe2"], 1, tmp_path),
        solo_expert_gguf(tiny_models["moe2_f16"], 0, tmp_path),
    }
    assert first not in others and len(others) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_solo_quantized_experts_stay_quantized(twin_moe: tuple[Path, Path], tmp_path: Path) -> None:
    q8 = tmp_path / "twin.Q8_0.gguf"
    from moechat.engine.quantize import quantize

    quantize(twin_moe[1], q8, "Q8_0")
    solo_t = tensors(solo_expert_gguf(q8, 0, tmp_path))
    assert solo_t["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    stacked = raw_bytes(tensors(q8)["blk.0.ffn_up_exps.weight"])
    assert np.array_equal(raw_bytes(solo_t["blk.0.ffn_up.weight"]), stacked[0])


def test_refusals_and_labels(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"experts 0\.\.1; there is no expert 2"):
        solo_expert_gguf(tiny_models["moe2"], 2, tmp_path)
    with pytest.raises(EngineError, match="dense"):
        solo_expert_gguf(tiny_models["dense"], 0, tmp_path)
    with pytest.raises(EngineError, match="no experts to watch"):
        top1_engine(tiny_models["dense"])
    info = read_info(tiny_models["moe2"])
    assert steering_label(info, "top1") == "top-1 routing"
    assert steering_label(info, "solo", 1) == "solo: Pygmalion"
    with pytest.raises(ValueError, match="unknown steering mode"):
        steering_label(info, "solo")
