"""The frankenMoE builder on generated tiny dense models: stacking, metadata, gate modes, bad configs.

Gate rows are checked against independent computations: cheap_embed from the GGUF's own token_embd
(dequantized whole by the gguf package), hidden modes from layer inputs captured by a separate engine run
(`Engine.hidden_states`, a different code path from the builder's).
"""

import re
from pathlib import Path

import gguf
import numpy as np
import pytest

from moechat.__main__ import main as cli
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.errors import ConfigError
from moechat.gguf.info import EXPERT_NAMES_KEY, field, open_reader, read_info, router_weights
from moechat.gguf.tiny import write_tiny_gguf
from moechat.moe import frankenmoe
from moechat.moe.frankenmoe import CONFIG_KEY, build_moe
from moechat.moe.mergekit_config import parse_config
from tests.models import BUILDER_MOE, WIDE_DENSE, dense_source

QT = gguf.GGMLQuantizationType
POS = ["Once upon a time", "the dragon said hello"]
NEG = ["The answer is 42."]


def copy_gguf(src: Path, dst: Path, ffn_type: QT | None = None, tokens: list[str] | None = None) -> Path:
    """Copy a GGUF, optionally quantizing its FFN tensors or replacing its token list."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, "llama")
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = tokens if key == "tokenizer.ggml.tokens" and tokens else f.contents()
        writer.add_key_value(key, value, f.types[0], sub_type=f.types[-1] if len(f.types) > 1 else None)
    for t in reader.tensors:
        if ffn_type is not None and ".ffn_" in t.name:
            writer.add_tensor(t.name, gguf.quantize(np.asarray(t.data), ffn_type), raw_dtype=ffn_type)
        else:
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dense")
    for seed in (1, 2, 3):
        write_tiny_gguf(d / f"d{seed}.gguf", dense_source(seed))
        write_tiny_gguf(d / f"h{seed}.gguf", dense_source(seed, "f16"))
    for seed in (1, 2):
        copy_gguf(d / f"d{seed}.gguf", d / f"q{seed}.gguf", ffn_type=QT.Q8_0)
    write_tiny_gguf(d / "wide.gguf", WIDE_DENSE)
    write_tiny_gguf(d / "moe.gguf", BUILDER_MOE)
    tokens = list(field(gguf.GGUFReader(d / "d2.gguf"), "tokenizer.ggml.tokens"))
    copy_gguf(d / "d2.gguf", d / "othertok.gguf", tokens=[*tokens[:-1], "zz"])
    w = gguf.GGUFWriter(d / "gpt2.gguf", "gpt2")
    w.add_block_count(2)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    (d / "garbage.gguf").write_bytes(b"not a model at all")
    return d


def config(base: str, experts: list[str], mode: str = "random", **extra: object) -> str:
    lines = [f"base_model: {base}", f"gate_mode: {mode}"] + [f"{k}: {v}" for k, v in extra.items()] + ["experts:"]
    for i, e in enumerate(experts):
        lines += [f"  - source_model: {e}", f"    positive_prompts: {POS if i % 2 == 0 else NEG}"]
        lines += [f"    negative_prompts: {NEG if i % 2 == 0 else POS[:1]}"]
    return "\n".join(lines) + "\n"


def build(models: Path, out_dir: Path, text: str, name: str = "out.gguf") -> Path:
    return build_moe(parse_config(text), text, out_dir / name, models)


def tensor(reader: gguf.GGUFReader, name: str) -> gguf.ReaderTensor:
    return next(t for t in reader.tensors if t.name == name)


@pytest.mark.parametrize("prefix", ["d", "h", "q"])
def test_experts_are_stacked_byte_for_byte(models: Path, tmp_path: Path, prefix: str) -> None:
    names = [f"{prefix}1.gguf", f"{prefix}2.gguf", f"{prefix}1.gguf"]
    out = open_reader(build(models, tmp_path, config(names[0], names, experts_per_token=2)))
    sources = [open_reader(models / n) for n in names]
    for layer in range(2):
        for kind in ("gate", "up", "down"):
            got = tensor(out, f"blk.{layer}.ffn_{kind}_exps.weight")
            src = [tensor(s, f"blk.{layer}.ffn_{kind}.weight") for s in sources]
            assert got.tensor_type == src[0].tensor_type
            assert list(got.shape) == [*src[0].shape, 3]  # ggml [n_in, n_out] -> [n_in, n_out, n_expert]
            for i in range(3):
                assert np.asarray(got.data[i]).tobytes() == np.asarray(src[i].data).tobytes()
        router = tensor(out, f"blk.{layer}.ffn_gate_inp.weight")
        assert router.tensor_type == QT.F32 and list(router.shape) == [64, 3]
    base = sources[0]
    dense = {t.name for t in base.tensors if ".ffn_gate." in t.name or ".ffn_up." in t.name or ".ffn_down." in t.name}
    for t in base.tensors:
        if t.name not in dense:
            assert np.asarray(tensor(out, t.name).data).tobytes() == np.asarray(t.data).tobytes(), t.name
    assert not dense & {t.name for t in out.tensors}


def test_metadata_is_the_base_models_plus_the_moe_keys(models: Path, tmp_path: Path) -> None:
    text = config("d1.gguf", ["d1.gguf", "d2.gguf"], experts_per_token=1, name="tiny mix")
    path = build(models, tmp_path, text)
    out, base = open_reader(path), open_reader(models / "d1.gguf")
    info = read_info(path)
    assert (info.n_experts, info.n_experts_used, info.name) == (2, 1, "tiny mix")
    assert field(out, EXPERT_NAMES_KEY) == ["d1", "d2"]
    assert field(out, CONFIG_KEY) == text
    changed = {"general.name", "llama.expert_count", "llama.expert_used_count"}
    for key, f in base.fields.items():
        if not key.startswith("GGUF.") and key not in changed:
            assert field(out, key) == f.contents(), key


def test_expert_names_from_name_field_or_file_name(models: Path) -> None:
    text = config("q1.gguf", ["q1.gguf", "q1.gguf", "d2.gguf"]).replace(
        "  - source_model: d2.gguf", "  - source_model: d2.gguf\n    name: Poet"
    )
    assert frankenmoe.expert_names(parse_config(text)) == ["q1 #1", "q1 #2", "Poet"]


def test_mixed_types_are_widened_to_expert_0s_type(models: Path, tmp_path: Path) -> None:
    out = open_reader(build(models, tmp_path, config("d1.gguf", ["d1.gguf", "h2.gguf"])))
    got = tensor(out, "blk.1.ffn_up_exps.weight")
    f16 = np.asarray(tensor(open_reader(models / "h2.gguf"), "blk.1.ffn_up.weight").data)
    assert got.tensor_type == QT.F32
    np.testing.assert_array_equal(np.asarray(got.data[1]), f16.astype(np.float32))


def with_options(text: str, options: str) -> str:
    """Add YAML lines to the config's second expert."""
    return text.replace("  - source_model: d2.gguf", "  - source_model: d2.gguf\n" + options)


def test_residual_scale_scales_ffn_down_only(models: Path, tmp_path: Path) -> None:
    out = open_reader(
        build(models, tmp_path, with_options(config("d1.gguf", ["d1.gguf", "d2.gguf"]), "    residual_scale: 0.5"))
    )
    src = open_reader(models / "d2.gguf")
    for kind, factor in (("gate", 1.0), ("up", 1.0), ("down", 0.5)):
        got = np.asarray(tensor(out, f"blk.1.ffn_{kind}_exps.weight").data[1])
        np.testing.assert_array_equal(
            got, np.asarray(tensor(src, f"blk.1.ffn_{kind}.weight").data) * np.float32(factor)
        )


def test_noise_scale_adds_seeded_gaussian_noise(models: Path, tmp_path: Path) -> None:
    text = with_options(config("d1.gguf", ["d1.gguf", "d2.gguf"]), "    noise_scale: 0.01")
    out = open_reader(build(models, tmp_path, text))
    src = open_reader(models / "d2.gguf")
    noise = np.asarray(tensor(out, "blk.0.ffn_up_exps.weight").data[1]) - np.asarray(
        tensor(src, "blk.0.ffn_up.weight").data
    )
    assert 0.009 < noise.std() < 0.011 and abs(noise.mean()) < 0.001
    untouched = np.asarray(tensor(out, "blk.0.ffn_up_exps.weight").data[0])
    assert (
        untouched.tobytes() == np.asarray(tensor(open_reader(models / "d1.gguf"), "blk.0.ffn_up.weight").data).tobytes()
    )
    again = build(models, tmp_path, text, "again.gguf")
    assert again.read_bytes() == (tmp_path / "out.gguf").read_bytes()


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-8)


def gate_rows(path: Path) -> np.ndarray:
    reader = open_reader(path)
    return np.stack([router_weights(reader, layer) for layer in range(2)])  # [layers, experts, n_embd]


@pytest.fixture(scope="module")
def d1_engine(models: Path) -> Engine:
    with Engine.load(models / "d1.gguf", n_ctx=256, allow_dense=True) as eng:
        yield eng


def ids(engine: Engine, prompt: str) -> list[int]:
    return [1, *engine.tokenize(prompt, add_bos=False)]  # the start token + prompt, like mergekit


def test_cheap_embed_rows_are_normalised_embedding_sums(models: Path, tmp_path: Path, d1_engine: Engine) -> None:
    rows = gate_rows(build(models, tmp_path, config("d1.gguf", ["d1.gguf", "d2.gguf"], "cheap_embed")))
    t = tensor(open_reader(models / "d1.gguf"), "token_embd.weight")
    table = gguf.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64)

    def summed(prompts: list[str]) -> np.ndarray:
        return unit(sum(table[ids(d1_engine, p)].sum(axis=0) for p in prompts))

    expected = [unit(summed(POS) - summed(NEG)), unit(summed(NEG) - summed(POS[:1]))]
    for layer in range(2):  # the same vector in every layer
        np.testing.assert_allclose(rows[layer], np.stack(expected), rtol=0, atol=2e-7)


@pytest.mark.parametrize("mode", ["hidden", "hidden_avg"])
def test_hidden_rows_are_normalised_mean_layer_inputs(
    models: Path, tmp_path: Path, d1_engine: Engine, mode: str
) -> None:
    rows = gate_rows(build(models, tmp_path, config("d1.gguf", ["d1.gguf", "d2.gguf"], mode)))

    def state(prompt: str) -> np.ndarray:  # [layers, n_embd]: last token, or mean over positions (causal prefixes)
        toks = ids(d1_engine, prompt)
        if mode == "hidden":
            return d1_engine.hidden_states(toks).astype(np.float64)
        return np.mean([d1_engine.hidden_states(toks[:k]) for k in range(1, len(toks) + 1)], axis=0)

    def mean(prompts: list[str]) -> np.ndarray:
        return np.mean([state(p) for p in prompts], axis=0)

    for i, (pos, neg) in enumerate([(POS, NEG), (NEG, POS[:1])]):
        diff = mean(pos) - mean(neg)
        expected = diff / np.linalg.norm(diff, axis=1, keepdims=True)
        np.testing.assert_allclose(rows[:, i], expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("mode", ["random", "uniform_random"])
def test_random_gates_are_seeded(models: Path, tmp_path: Path, mode: str) -> None:
    experts = ["d1.gguf", "d2.gguf", "d3.gguf"]
    a = gate_rows(build(models, tmp_path, config("d1.gguf", experts, mode), "a.gguf"))
    b = gate_rows(build(models, tmp_path, config("d1.gguf", experts, mode), "b.gguf"))
    c = gate_rows(build(models, tmp_path, config("d1.gguf", experts, mode, seed=7), "c.gguf"))
    assert a.shape == (2, 3, 64) and np.array_equal(a, b) and not np.array_equal(a, c)
    if mode == "uniform_random":
        assert np.abs(a).max() <= 1 / 8  # U(-1/sqrt(n_embd), 1/sqrt(n_embd)), n_embd = 64
    else:
        assert 0.9 < a.std() < 1.1


def test_same_inputs_give_the_same_bytes(models: Path, tmp_path: Path) -> None:
    text = config("q1.gguf", ["q1.gguf", "q2.gguf"], "cheap_embed")
    assert build(models, tmp_path, text, "a.gguf").read_bytes() == build(models, tmp_path, text, "b.gguf").read_bytes()


def test_identical_experts_generate_like_the_dense_model(models: Path, tmp_path: Path) -> None:
    moe = build(models, tmp_path, config("d1.gguf", ["d1.gguf", "d1.gguf"], "cheap_embed"))
    greedy = Sampling(temperature=0, max_tokens=16)
    outputs = []
    for path, dense in ((models / "d1.gguf", True), (moe, False)):
        with Engine.load(path, n_ctx=128, allow_dense=dense) as eng:
            tokens = list(eng.stream(eng.tokenize("Once upon a time the"), greedy))
        outputs.append([t.id for t in tokens if not t.prompt])
        assert dense or all(t.routing is not None for t in tokens if t.prompt)
    assert outputs[0] == outputs[1]


BAD = [
    ("experts_per_token: 3", "d1.gguf", ["d1.gguf", "d2.gguf"], "experts_per_token"),
    ("", "d1.gguf", ["d1.gguf", "wide.gguf"], "experts[1].source_model: wide.gguf has llama.feed_forward_length"),
    ("", "d1.gguf", ["d1.gguf", "othertok.gguf"], "experts[1].source_model: othertok.gguf has a different tokenizer"),
    ("", "gpt2.gguf", ["d1.gguf", "d2.gguf"], "base_model: gpt2.gguf is a 'gpt2' model"),
    ("", "d1.gguf", ["garbage.gguf", "d2.gguf"], "experts[0].source_model: garbage.gguf is not a GGUF"),
    ("", "d1.gguf", ["d1.gguf", "missing.gguf"], "experts[1].source_model: model file not found"),
    ("", "d1.gguf", ["moe.gguf", "d2.gguf"], "experts[0].source_model: moe.gguf is already a Mixture-of-Experts"),
    ("shared_experts: [{source_model: d1.gguf}]", "d1.gguf", ["d1.gguf", "d2.gguf"], "shared_experts"),
    ("gate_mode: hidden\nbogus: 1", "d1.gguf", ["d1.gguf"], "bogus: unknown field"),
]


@pytest.mark.parametrize(("extra", "base", "experts", "message"), BAD)
def test_bad_configs_name_the_field_and_leave_no_file(
    models: Path, tmp_path: Path, extra: str, base: str, experts: list[str], message: str
) -> None:
    text = config(base, experts, "cheap_embed").replace("gate_mode: cheap_embed\n", extra + "\n" if extra else "")
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(models, tmp_path, text)
    assert list(tmp_path.iterdir()) == []


def test_missing_prompts_are_named() -> None:
    text = "base_model: a.gguf\ngate_mode: hidden\nexperts:\n  - source_model: a.gguf\n    positive_prompts: [x]\n"
    with pytest.raises(ConfigError, match=r"experts\[1\]\.positive_prompts"):
        parse_config(text + "  - source_model: b.gguf\n    negative_prompts: [y]\n")
    parse_config(text.replace("hidden", "random") + "  - source_model: b.gguf\n")  # random gates need none


def test_a_failure_while_writing_leaves_the_old_file_untouched(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.gguf"
    out.write_bytes(b"previous build")

    def boom(*args: object) -> np.ndarray:
        raise OSError("disk full")

    monkeypatch.setattr(frankenmoe, "_expert_slice", boom)
    with pytest.raises(OSError, match="disk full"):
        build(models, tmp_path, config("d1.gguf", ["d1.gguf", "d2.gguf"]))
    assert out.read_bytes() == b"previous build" and sorted(tmp_path.iterdir()) == [out]


def test_output_may_not_overwrite_a_source(models: Path) -> None:
    text = config("d1.gguf", ["d1.gguf", "d2.gguf"])
    with pytest.raises(ConfigError, match=re.escape("output: d2.gguf is experts[1].source_model")):
        build_moe(parse_config(text), text, models / "d2.gguf", models)


def test_cli_builds_and_reports_errors(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "moe.yml"
    cfg.write_text(config(str(models / "d1.gguf"), [str(models / "d1.gguf"), str(models / "d2.gguf")]))
    assert cli(["build-moe", str(cfg), "-o", str(tmp_path / "moe.gguf"), "--quiet"]) == 0
    assert read_info(tmp_path / "moe.gguf").n_experts == 2
    cfg.write_text(cfg.read_text() + "experts_per_token: 5\n")
    assert cli(["build-moe", str(cfg), "-o", str(tmp_path / "bad.gguf"), "-q"]) == 2
    assert "experts_per_token: 5 is more than the 2 experts" in capsys.readouterr().err
    assert not (tmp_path / "bad.gguf").exists()
