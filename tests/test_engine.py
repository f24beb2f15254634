"""The engine on real llama.cpp with generated tiny MoE models (CPU only).

Routing is checked against an independent computation: softmax(W x) in numpy, with W read from the
GGUF's own `blk.L.ffn_gate_inp` by the gguf package and x the router input (`ffn_norm-L`) that
llama.cpp computed for the same tokens.
"""

import threading
from pathlib import Path

import gguf
import numpy as np
import pytest

from moechat.engine.engine import Engine
from moechat.engine.types import Sampling, Token
from moechat.errors import EngineError
from moechat.gguf.info import NotMoEError, open_reader, router_weights
from moechat.routing.metrics import from_logits

GREEDY = Sampling(temperature=0, max_tokens=24)
PROMPT = "Once upon a time, the old sailor said: hello there!"


def read_ids(tokens: list[Token]) -> list[int]:
    """Ids of the tokens the model read, in position order (the final sampled one is never read)."""
    return [t.id for t in tokens if t.routing is not None]


def stacked(tokens: list[Token]) -> np.ndarray:
    return np.stack([t.routing.probs for t in tokens if t.routing is not None])


def numpy_router_probs(path: Path, router_inputs: dict[int, np.ndarray]) -> np.ndarray:
    reader = open_reader(path)
    per_layer = []
    for layer, x in sorted(router_inputs.items()):
        logits = x.astype(np.float64) @ router_weights(reader, layer).astype(np.float64).T
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        per_layer.append(e / e.sum(axis=1, keepdims=True))
    return np.stack(per_layer, axis=1)  # [tokens, layers, experts]


@pytest.mark.parametrize("shape", ["moe2", "moe4", "moe8"])
def test_routing_matches_numpy_softmax_of_router_weights(tiny_models, shape):
    # streamed prompt + generated tokens, one at a time, against router inputs recomputed in one batch
    with Engine.load(tiny_models[shape], n_ctx=256, exact=True) as eng:
        tokens = list(eng.stream(eng.tokenize(PROMPT), GREEDY))
        ids = read_ids(tokens)
        assert sum(not t.prompt for t in tokens if t.routing is not None) >= 20  # generated ones too
        probed = eng.probe(ids, ["ffn_norm"])
    expected = numpy_router_probs(tiny_models[shape], probed["ffn_norm"])
    streamed = stacked(tokens)
    assert streamed.shape == expected.shape
    assert np.abs(streamed - expected).max() <= 1e-5
    ours = np.stack([t.routing.experts for t in tokens if t.routing is not None])
    assert np.array_equal(ours, np.argsort(-streamed, axis=-1, kind="stable")[..., :2])


def layers(captured: dict[int, np.ndarray]) -> np.ndarray:
    return np.stack([captured[i] for i in sorted(captured)], axis=1)


@pytest.mark.parametrize("shape", ["moe2", "moe4", "moe8", "moe2_f16"])
def test_router_logits_in_one_pass_match_numpy_and_llama_cpp(tiny_models, shape):
    # default settings (flash attention, f16 cache): every quantity from the same forward pass
    with Engine.load(tiny_models[shape], n_ctx=256) as eng:
        ids = eng.tokenize(PROMPT * 3)
        probed = eng.probe(ids, ["ffn_norm", "ffn_moe_logits", "ffn_moe_probs", "ffn_moe_topk"])
    expected = numpy_router_probs(tiny_models[shape], probed["ffn_norm"])
    ours, ours_topk = from_logits(layers(probed["ffn_moe_logits"]), 2)
    assert np.abs(ours - expected).max() <= 1e-5
    assert np.abs(layers(probed["ffn_moe_probs"]) - expected).max() <= 1e-5
    assert np.array_equal(np.sort(layers(probed["ffn_moe_topk"]), axis=-1), np.sort(ours_topk, axis=-1))


@pytest.mark.parametrize(("shape", "experts"), [("moe2", 2), ("moe4", 4), ("moe8", 8)])
def test_shapes(tiny_models, shape, experts):
    with Engine.load(tiny_models[shape], n_ctx=128) as eng:
        tok = next(t for t in eng.stream(eng.tokenize("hi"), GREEDY) if not t.prompt)
        assert tok.routing.probs.shape == (eng.info.n_layers, experts)
        assert tok.routing.probs.dtype == np.float32
        assert tok.routing.experts.shape == (eng.info.n_layers, 2)
        assert np.allclose(tok.routing.probs.sum(axis=1), 1, atol=1e-6)


def test_same_seed_same_tokens_and_routing(tiny_moe_path):
    sampling = Sampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=42, max_tokens=20)

    def run(s: Sampling) -> list[Token]:
        with Engine.load(tiny_moe_path, n_ctx=256) as eng:
            return list(eng.stream(eng.tokenize(PROMPT), s))

    a, b, c = run(sampling), run(sampling), run(Sampling(**{**sampling.__dict__, "seed": 7}))
    assert [t.id for t in a] == [t.id for t in b]
    assert np.array_equal(stacked(a), stacked(b))
    assert [t.id for t in a] != [t.id for t in c]  # the seed matters: a fixed result would fail here


@pytest.mark.parametrize("mode", ["python", "off"])
def test_capture_modes_do_not_change_tokens(tiny_moe_path, mode):
    sampling = Sampling(temperature=0.9, seed=3, max_tokens=20)
    with Engine.load(tiny_moe_path, n_ctx=256, capture="fast") as fast:
        ref = list(fast.stream(fast.tokenize(PROMPT), sampling))
    with Engine.load(tiny_moe_path, n_ctx=256, capture=mode) as other:
        assert other.report.capture == mode
        got = list(other.stream(other.tokenize(PROMPT), sampling))
    assert [t.id for t in got] == [t.id for t in ref]
    if mode == "off":
        assert all(t.routing is None for t in got)
    else:
        assert np.array_equal(stacked(got), stacked(ref))


def test_prefix_reuse_evaluates_only_new_tokens(tiny_moe_path):
    with Engine.load(tiny_moe_path, n_ctx=256, exact=True) as warm:
        first = list(warm.stream(warm.tokenize(PROMPT), GREEDY))
        follow_up = warm.tokenize(" And then?", add_bos=False)
        second_prompt = [t.id for t in first if t.finish != "eos"] + follow_up
        second = list(warm.stream(second_prompt, GREEDY))
    evaluated = [t for t in second if t.prompt and not t.cached]
    assert len(evaluated) == len(follow_up)
    with Engine.load(tiny_moe_path, n_ctx=256, exact=True) as cold:
        fresh = list(cold.stream(second_prompt, GREEDY))
    assert all(not t.cached for t in fresh if t.prompt)
    assert [t.id for t in second] == [t.id for t in fresh]
    assert np.abs(stacked(second) - stacked(fresh)).max() <= 1e-5


def test_prompt_routing_last_layer_needs_all_outputs(tiny_moe_path):
    with Engine.load(tiny_moe_path, n_ctx=128, full_prompt_routing=False) as eng:
        tokens = list(eng.stream(eng.tokenize(PROMPT), Sampling(temperature=0, max_tokens=2)))
    prompt = [t for t in tokens if t.prompt]
    last = eng.info.n_layers - 1
    # the last prompt token is evaluated on its own, so the one before it ends a batch: both have an output
    assert all(np.isnan(t.routing.probs[last]).all() and (t.routing.experts[last] == -1).all() for t in prompt[:-2])
    assert not np.isnan(prompt[-1].routing.probs).any() and not np.isnan(prompt[-2].routing.probs).any()
    assert all(not np.isnan(t.routing.probs[:last]).any() for t in prompt)


def test_max_tokens_and_length_finish(tiny_moe_path):
    with Engine.load(tiny_moe_path, n_ctx=128) as eng:
        out = [t for t in eng.stream(eng.tokenize("a"), Sampling(temperature=0, max_tokens=5)) if not t.prompt]
    assert len(out) == 5
    assert [t.finish for t in out] == [None, None, None, None, "length"]
    assert out[-1].routing is not None  # the last token is read back for its routing


def test_end_of_generation_token(tiny_models):
    with Engine.load(tiny_models["eos"], n_ctx=128) as eng:
        out = [t for t in eng.stream(eng.tokenize("hello"), GREEDY) if not t.prompt]
    assert len(out) == 1
    assert (out[0].id, out[0].finish, out[0].text) == (eng.eos, "eos", "")


def test_stop_string_is_never_emitted(tiny_moe_path):
    with Engine.load(tiny_moe_path, n_ctx=256) as eng:
        prompt = eng.tokenize(PROMPT)
        full = "".join(t.text for t in eng.stream(prompt, GREEDY) if not t.prompt)
        stop = full[8:11]
        assert stop and full.find(stop) >= 8
        cut = [t for t in eng.stream(prompt, Sampling(temperature=0, max_tokens=24, stop=(stop,))) if not t.prompt]
    text = "".join(t.text for t in cut)
    assert text == full[: full.find(stop)]
    assert cut[-1].finish == "stop"


def test_stop_request_between_tokens_leaves_engine_reusable(tiny_moe_path):
    cancel = threading.Event()
    with Engine.load(tiny_moe_path, n_ctx=256) as eng:
        generated = []
        for tok in eng.stream(eng.tokenize(PROMPT), Sampling(temperature=0, max_tokens=50), cancel=cancel):
            if not tok.prompt:
                generated.append(tok)
                if len(generated) == 3:
                    cancel.set()
        assert generated[-1].finish == "cancelled" and generated[-1].id == -1
        assert len(generated) == 4
        again = [t for t in eng.stream(eng.tokenize(PROMPT), GREEDY) if not t.prompt]
        assert len(again) == GREEDY.max_tokens
        assert [t.id for t in again[:3]] == [t.id for t in generated[:3]]


def test_abandoned_stream_releases_the_lock(tiny_moe_path):
    with Engine.load(tiny_moe_path, n_ctx=128) as eng:
        gen = eng.stream(eng.tokenize("hello"), GREEDY)
        next(gen)
        del gen
        result: list[int] = []
        worker = threading.Thread(target=lambda: result.extend(t.id for t in eng.stream(eng.tokenize("x"), GREEDY)))
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive() and result


def test_utf8_pieces_never_show_mojibake(tiny_moe_path):
    text = "héllo wörld ✓ 日本"
    with Engine.load(tiny_moe_path, n_ctx=128) as eng:
        ids = eng.tokenize(text)
        assert len(ids) > len(text)  # split into byte-fallback tokens
        prompt = [t for t in eng.stream(ids, Sampling(temperature=0, max_tokens=1)) if t.prompt]
    assert "".join(t.text for t in prompt) == " " + text  # SentencePiece's leading space
    assert all("\ufffd" not in t.text for t in prompt)
    assert any(t.text == "" for t in prompt[1:])  # a partial character waits for its last byte


def test_closed_engine_refuses_work(tiny_moe_path):
    eng = Engine.load(tiny_moe_path, n_ctx=64)
    eng.close()
    with pytest.raises(EngineError, match="closed"):
        list(eng.stream([1, 2], GREEDY))
    with pytest.raises(EngineError, match="closed"):
        eng.tokenize("after close")


def test_prompt_longer_than_context(tiny_moe_path):
    with Engine.load(tiny_moe_path, n_ctx=256) as eng, pytest.raises(EngineError, match="context holds 256"):
        list(eng.stream([5] * 300, GREEDY))


def test_hidden_states_are_the_residual_stream_entering_each_layer(tiny_models):
    path = tiny_models["dense"]
    with Engine.load(path, n_ctx=64, allow_dense=True) as eng:
        ids = eng.tokenize("the cat sat")
        hidden = eng.hidden_states(ids)
        outs = eng.probe(ids, ["l_out", "attn_norm"])
    assert hidden.shape == (eng.info.n_layers, eng.info.n_embd)
    reader = open_reader(path)
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight").data[ids[-1]]
    assert np.array_equal(hidden[0], embd)
    assert np.array_equal(hidden[1], outs["l_out"][0][-1])
    # attn_norm-1 is RMS-norm(hidden[1]) * weight: an independent check of which tensor we read
    w = next(t for t in reader.tensors if t.name == "blk.1.attn_norm.weight").data
    x = hidden[1].astype(np.float64)
    assert np.allclose(x / np.sqrt((x * x).mean() + 1e-5) * w, outs["attn_norm"][1][-1], atol=1e-4)


# ---- bad files: a clear error, and the process survives ----------------------------------------------


def rewrite(src: Path, dst: Path, drop: set[str] = frozenset(), set_u32: dict[str, int] | None = None) -> Path:
    """Copy a GGUF with some metadata keys dropped or replaced (tensors copied as they are)."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(str(dst), "llama")
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in drop or key == "general.architecture":
            continue
        value = (set_u32 or {}).pop(key, None)
        if value is not None:
            writer.add_uint32(key, value)
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(
            t.name, np.asarray(t.data), raw_shape=list(reversed(t.shape.tolist())), raw_dtype=t.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def test_missing_file(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        Engine.load(tmp_path / "nope.gguf")


def test_truncated_file(tiny_moe_path, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_moe_path.read_bytes()[: tiny_moe_path.stat().st_size // 2])
    with pytest.raises(EngineError, match="truncated"):
        Engine.load(cut)


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "card.gguf"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(EngineError, match="not a GGUF"):
        Engine.load(bad)


def test_dense_model_is_refused_with_advice(tiny_models):
    with pytest.raises(NotMoEError, match=r"dense llama model.*build-moe"):
        Engine.load(tiny_models["dense"])


@pytest.mark.parametrize(
    ("drop", "set_u32", "message"),
    [
        ({"llama.expert_count"}, None, "no llama.expert_count"),
        ({"llama.expert_used_count"}, None, "expert_used_count=0"),
        (set(), {"llama.expert_used_count": 3}, "expert_used_count=3 with 2 experts"),
        (set(), {"llama.expert_count": 4}, "2 rows for 4 experts"),
    ],
)
def test_inconsistent_moe_metadata_never_reaches_llama_cpp(tiny_moe_path, tmp_path, drop, set_u32, message):
    # each of these aborts the whole process inside llama.cpp when loaded unchecked
    bad = rewrite(tiny_moe_path, tmp_path / "bad.gguf", drop=drop, set_u32=dict(set_u32 or {}))
    with pytest.raises(EngineError, match=message):
        Engine.load(bad)


def test_trace_cli_json_matches_schema(tiny_models, tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "trace.json"
    cmd = [sys.executable, "-m", "moechat", "trace", str(tiny_models["moe4"]), "--prompt", "héllo there"]
    done = subprocess.run([*cmd, "--max-tokens", "6", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert set(doc) == {"model", "n_layers", "n_experts", "k", "expert_names", "tokens"}
    assert (doc["n_layers"], doc["n_experts"], doc["k"]) == (3, 4, 2)
    assert doc["expert_names"] == ["expert 0", "expert 1", "expert 2", "expert 3"]
    tokens = doc["tokens"]
    assert [t["pos"] for t in tokens] == list(range(len(tokens)))
    n_prompt = sum(t["prompt"] for t in tokens)
    assert all(t["prompt"] for t in tokens[:n_prompt]) and len(tokens) - n_prompt == 6
    for t in tokens:
        assert set(t) == {"pos", "id", "text", "prompt", "probs", "experts"}
        assert np.array(t["probs"]).shape == (3, 4) and np.array(t["experts"]).shape == (3, 2)
        assert abs(sum(t["probs"][0]) - 1) < 1e-5
        assert t["probs"][0][t["experts"][0][0]] == max(t["probs"][0])
    # the named MoE's expert names come from its metadata
    named = subprocess.run([*cmd[:4], str(tiny_models["moe2"]), "--prompt", "hi"], capture_output=True, text=True)
    assert json.loads(named.stdout)["expert_names"] == ["Xwin", "Pygmalion"]


def test_trace_cli_bad_file_is_one_line_error(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"nope")
    done = subprocess.run(
        [sys.executable, "-m", "moechat", "trace", str(bad), "--prompt", "x"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not a GGUF" in done.stderr


def test_top1_override_routes_each_token_to_one_expert(tiny_models):
    with Engine.load(tiny_models["moe4"], n_ctx=128, experts_used=1) as eng:
        assert eng.info.n_experts_used == 1
        toks = list(eng.stream(eng.tokenize(PROMPT), GREEDY))
        probed = eng.probe(read_ids(toks), ["ffn_moe_topk"])
    assert all(t.routing.experts.shape == (3, 1) for t in toks if t.routing is not None)
    assert all(v.shape[1] == 1 for v in probed["ffn_moe_topk"].values())  # llama.cpp itself ran top-1
    with Engine.load(tiny_models["moe4"], n_ctx=128) as top2:
        assert [t.id for t in top2.stream(top2.tokenize(PROMPT), GREEDY)] != [t.id for t in toks]
    with pytest.raises(EngineError, match=r"experts_used must be 1\.\.4"):
        Engine.load(tiny_models["moe4"], experts_used=5)
