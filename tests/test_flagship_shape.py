"""The flagship's shape through the app's paths: tiny_gguf.FLAGSHIP (PygWin-2x7B's structure at width 64: 32 layers,
2 experts top-2, a Llama-2-style 32,000-token vocabulary, rope base 10000, context 4096) loaded, chatted with
(routing saved), quantized to Q8_0 and Q4_K_M, compared and played solo. The browser turn is test_flagship_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from moechat import chat
from moechat.chat import TurnOptions
from moechat.engine.engine import Engine
from moechat.engine.quantize import QuantizeResult, quantize
from moechat.engine.types import Sampling
from moechat.gguf.info import field, open_reader, read_info
from moechat.gguf.tiny import FLAGSHIP, SPACE, write_tiny_gguf
from moechat.gguf.write import raw_bytes
from moechat.moe import fidelity
from moechat.moe.steering import solo_expert_gguf
from moechat.store.store import Store

N_LAYERS, N_EXPERTS, N_VOCAB = 32, 2, 32_000
TT = gguf.TokenType
SHORT_TEXTS = (
    "*She smiles and leans closer* Tell me about your adventures, traveller.",
    "The knight drew his sword and the gates of the burning city gave way.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
)
CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {"name": "Mira", "description": "{{char}} keeps a lighthouse.", "first_mes": "Welcome, {{user}}."},
}
GREEDY = Sampling(temperature=0, max_tokens=8)


def more_bits(layer: int, n_layers: int = N_LAYERS) -> bool:
    """llama.cpp's Q4_K_M rule (llama-quant.cpp, use_more_bits): these layers' ffn_down and attn_v get Q6_K."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def types_of(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in open_reader(path).tensors}


def greedy_tokens(engine: Engine, text: str = "Hello there, how are you?") -> list:
    return [t for t in engine.stream(engine.tokenize(text), GREEDY) if not t.prompt]


@pytest.fixture(scope="module")
def flagship(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("flagship") / "pygwin-shape.F16.gguf", FLAGSHIP)


@pytest.fixture(scope="module")
def engine(flagship: Path):
    with Engine.load(flagship, n_ctx=1024) as eng:
        yield eng


@pytest.fixture(scope="module")
def quantized(flagship: Path) -> dict[str, QuantizeResult]:
    return {t: quantize(flagship, flagship.with_name(f"pygwin-shape.{t}.gguf"), t) for t in ("Q8_0", "Q4_K_M")}


@pytest.fixture
def short_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fidelity, "TEXTS", SHORT_TEXTS)


def test_same_spec_and_seed_give_the_same_bytes(flagship: Path, tmp_path: Path) -> None:
    assert sha256(write_tiny_gguf(tmp_path / "again.gguf", FLAGSHIP)) == sha256(flagship)
    assert sha256(write_tiny_gguf(tmp_path / "other.gguf", replace(FLAGSHIP, seed=14))) != sha256(flagship)


def test_vocabulary_is_llama2_style_with_byte_fallback(flagship: Path) -> None:
    reader = open_reader(flagship)
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    scores = field(reader, "tokenizer.ggml.scores")
    assert len(tokens) == len(set(tokens)) == len(types) == len(scores) == N_VOCAB
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and types[:3] == [TT.UNKNOWN, TT.CONTROL, TT.CONTROL]
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)] and set(types[3:259]) == {TT.BYTE}
    normal = tokens[259:]
    assert set(types[259:]) == {TT.NORMAL} and all(np.diff(scores[259:]) < 0)
    assert sum(t.startswith(SPACE) and len(t) > 1 for t in normal) > 10_000  # word-start pieces
    vocab = set(tokens)
    merged = [t for t in normal if len(t) > 1]
    assert all(len(t) == 2 or t[:-1] in vocab for t in merged)  # every piece is its prefix's merge with one more
    assert field(reader, "llama.rope.freq_base") == 10000.0 and field(reader, "llama.context_length") == 4096
    assert math.isclose(field(reader, "llama.attention.layer_norm_rms_epsilon"), 1e-5, rel_tol=1e-6)


def test_load_gives_the_flagship_shape(engine: Engine) -> None:
    info = engine.info
    assert (info.architecture, info.n_layers, info.n_experts, info.n_experts_used) == ("llama", 32, 2, 2)
    assert info.context_length == 4096 and info.file_type == "F16" and info.expert_names == ("Xwin", "Pygmalion")
    loaded = engine._model  # what llama.cpp itself read from the file
    assert loaded.n_vocab() == N_VOCAB and loaded.n_ctx_train() == 4096
    meta = loaded.metadata()
    assert float(meta["llama.rope.freq_base"]) == 10000.0 and meta["llama.expert_count"] == "2"


def test_tokenizer_merges_words_and_falls_back_to_bytes(engine: Engine) -> None:
    text = "the cat sat on the mat and then she went to the sea"
    ids = engine.tokenize(text, add_bos=False)
    assert len(ids) < len(text) / 2.5 and engine.piece(ids[0]) == b" the"
    assert engine.detokenize(ids) == " " + text
    emoji = engine.tokenize("\U0001f642\n", add_bos=False)  # not in the vocabulary: UTF-8 bytes, one token each
    assert [engine.piece(i) for i in emoji[-5:]] == [b"\xf0", b"\x9f", b"\x99", b"\x82", b"\n"]
    assert all(3 <= i < 259 for i in emoji[-5:])  # the <0xNN> tokens
    assert [engine.piece(i) for i in engine.tokenize("2024", add_bos=False)][-4:] == [b"2", b"0", b"2", b"4"]
    assert engine.tokenize("hi")[0] == 1  # <s>


def test_every_token_is_routed_through_32_layers(engine: Engine) -> None:
    tokens = greedy_tokens(engine)
    assert len(tokens) == GREEDY.max_tokens
    for tok in tokens:
        probs, experts = tok.routing.probs, tok.routing.experts
        assert probs.shape == experts.shape == (N_LAYERS, N_EXPERTS)
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()
        assert (np.sort(experts, axis=1) == [0, 1]).all()  # top-2 of 2: both experts at every layer
    first = np.stack([t.routing.probs[:, 0] for t in tokens])
    assert first.std() > 0.05  # the routers discriminate: weights vary by token and layer


def test_chat_turn_saves_routing_of_every_layer(engine: Engine, tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        chat_id = chat.start_chat(store, store.add_character("Mira", CARD).id, user_name="Ann")
        options = TurnOptions(sampling=Sampling(temperature=0, max_tokens=12), format="metharme", user_name="Ann")
        last = list(chat.send(engine, store, chat_id, "Hello there, Mira!", options))[-1]
        reply = store.messages(chat_id)[-1]
        saved = store.routing(reply.current.id)
    assert last.finish == "length" and reply.text == last.text
    assert saved.probs.shape == last.probs.shape == (12, N_LAYERS, N_EXPERTS)
    assert saved.experts.shape == (12, N_LAYERS, N_EXPERTS)
    assert np.allclose(last.probs.sum(axis=2), 1.0, atol=1e-5)
    assert last.prompt_probs.shape[1:] == (N_LAYERS, N_EXPERTS) and last.prompt_probs.shape[0] > 3


def test_quantized_models_keep_f32_routers_and_run(flagship: Path, quantized: dict[str, QuantizeResult]) -> None:
    for name, result in quantized.items():
        assert result.router_types == ("F32",) * N_LAYERS, name
        assert result.out_bytes < result.in_bytes and read_info(result.path).file_type == name
        with Engine.load(result.path, n_ctx=256) as engine:
            tokens = greedy_tokens(engine)
        assert len(tokens) == GREEDY.max_tokens and all(t.routing.probs.shape == (N_LAYERS, 2) for t in tokens)
    q8, q4 = types_of(quantized["Q8_0"].path), types_of(quantized["Q4_K_M"].path)
    assert {t for n, t in q8.items() if not n.endswith("norm.weight") and "ffn_gate_inp" not in n} == {"Q8_0"}
    # Q4_K_M: ffn_down (256 wide) gets real k-quants by llama.cpp's layer rule; the 64-wide tensors fall back
    for i in range(N_LAYERS):
        assert q4[f"blk.{i}.ffn_down_exps.weight"] == ("Q6_K" if more_bits(i) else "Q4_K")
        assert q4[f"blk.{i}.ffn_gate_inp.weight"] == "F32" and q4[f"blk.{i}.ffn_up_exps.weight"] == "Q5_0"
    assert q4["token_embd.weight"] == "Q5_0" and q4["output.weight"] == "Q8_0"


@pytest.mark.usefixtures("short_texts")
def test_fidelity_report_of_both_quantizations(flagship: Path, quantized: dict[str, QuantizeResult]) -> None:
    reports = {name: fidelity.compare_models(flagship, r.path) for name, r in quantized.items()}
    for name, report in reports.items():
        r = report.routing
        assert report.n_texts == 3 and report.n_tokens == int(r.n_tokens[0]) > 40, name
        assert r.top1.shape == r.kappa.shape == (N_LAYERS,) and (r.n_tokens == report.n_tokens).all()
        assert ((r.top1 >= 0) & (r.top1 <= 1)).all() and (r.kappa <= 1).all() and (r.mean_abs_dp >= 0).all()
        assert 0 < report.mean_kl <= report.max_kl < 5 and 0 < report.next_token_agreement <= 1
        assert sum(line.split()[0].isdigit() for line in report.table().splitlines()) == N_LAYERS  # a row each
        assert json.loads(json.dumps(report.to_dict()))["routing"]  # serialisable as the CLI writes it
    q8, q4 = reports["Q8_0"], reports["Q4_K_M"]
    assert q8.routing.means()["top1"] > 0.95 and q8.routing.means()["top1"] >= q4.routing.means()["top1"]
    assert q8.mean_kl < q4.mean_kl  # more bits, closer to the f16 reference


def test_solo_expert_is_dense_and_runs(flagship: Path, quantized: dict[str, QuantizeResult], tmp_path: Path) -> None:
    for source in (flagship, quantized["Q4_K_M"].path):
        solo = solo_expert_gguf(source, 1, tmp_path)
        info = read_info(solo, allow_dense=True)
        assert not info.is_moe and info.n_layers == N_LAYERS and "Pygmalion" in info.name
        solo_t = {t.name: t for t in open_reader(solo).tensors}
        moe_t = {t.name: t for t in open_reader(source).tensors}
        assert not any("ffn_gate_inp" in n or "_exps" in n for n in solo_t)
        for i in range(N_LAYERS):
            for kind in ("gate", "up", "down"):
                stacked = raw_bytes(moe_t[f"blk.{i}.ffn_{kind}_exps.weight"])[1]
                dense = solo_t[f"blk.{i}.ffn_{kind}.weight"]
                assert dense.tensor_type == moe_t[f"blk.{i}.ffn_{kind}_exps.weight"].tensor_type
                assert np.array_equal(raw_bytes(dense), stacked)
        with Engine.load(solo, n_ctx=256, allow_dense=True) as engine:
            tokens = greedy_tokens(engine)
        assert len(tokens) == GREEDY.max_tokens and all(t.routing is None for t in tokens)
