"""Quantization through llama.cpp on a generated MoE whose widths are multiples of 256 (k-quant blocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moechat.commands import quantize as quantize_command
from moechat.engine.engine import Engine
from moechat.engine.quantize import check_routers, default_output, ftype_of, quantize
from moechat.engine.types import Sampling
from moechat.errors import EngineError
from moechat.gguf.info import open_reader, read_info
from moechat.gguf.tiny import write_tiny_gguf
from moechat.moe import fidelity
from tests.models import K_QUANTIZABLE

SHORT_TEXTS = ("Once upon a time, the knight said hello.", "def f(x):\n    return x + 1\n")


@pytest.fixture(scope="module")
def f32_moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("quant") / "tiny256.F32.gguf", K_QUANTIZABLE)


@pytest.fixture(autouse=True)
def short_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fidelity, "TEXTS", SHORT_TEXTS)


@pytest.mark.parametrize(("type_name", "weight_types"), [("Q8_0", {"Q8_0"}), ("q4_k_m", {"Q4_K", "Q6_K"})])
def test_quantized_model_loads_routers_stay_f32_and_reports(
    f32_moe: Path, tmp_path: Path, type_name: str, weight_types: set[str]
) -> None:
    steps: list[tuple[int, int, str]] = []
    result = quantize(f32_moe, tmp_path / "out.gguf", type_name, progress=lambda i, n, name: steps.append((i, n, name)))
    assert result.type_name == type_name.upper() and result.router_types == ("F32", "F32")
    assert result.out_bytes < result.in_bytes / 3
    n_tensors = len(open_reader(f32_moe).tensors)
    assert [s[0] for s in steps] == list(range(1, n_tensors + 1)) and {s[1] for s in steps} == {n_tensors}
    types = {t.name: t.tensor_type.name for t in open_reader(result.path).tensors}
    assert {v for k, v in types.items() if "ffn_gate_inp" in k} == {"F32"}
    assert {v for k, v in types.items() if k.endswith("_exps.weight")} <= weight_types
    assert check_routers(f32_moe, result.path) == ("F32", "F32")
    assert read_info(result.path).file_type == type_name.upper()
    with Engine.load(result.path, n_ctx=64) as engine:
        tokens = list(engine.stream(engine.tokenize("Hello"), Sampling(temperature=0, max_tokens=4)))
    assert sum(not t.prompt for t in tokens) >= 1
    report = fidelity.compare_models(f32_moe, result.path)
    means = report.routing.means()
    assert report.n_tokens == report.routing.n_tokens[0] > 20
    assert 0.5 <= means["top1"] <= 1.0 and 0.0 < report.mean_kl < 1.0 and 0.0 < report.next_token_agreement <= 1.0


def test_unknown_type_lists_the_known_ones_and_writes_nothing(f32_moe: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"unknown quantization type 'Q9_X'.*Q4_K_M.*Q8_0"):
        quantize(f32_moe, tmp_path / "out.gguf", "Q9_X")
    assert list(tmp_path.iterdir()) == []


def test_llama_cpp_failure_leaves_no_partial_file(f32_moe: Path, tmp_path: Path) -> None:
    q8 = quantize(f32_moe, tmp_path / "q8.gguf", "Q8_0").path
    with pytest.raises(EngineError, match=r"requantizing from type q8_0 is disabled.*--allow-requantize"):
        quantize(q8, tmp_path / "q4.gguf", "Q4_K_M")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q8.gguf"]
    with pytest.raises(EngineError, match="is the input"):
        quantize(q8, q8, "Q8_0", allow_requantize=True)


def test_names_and_types() -> None:
    assert default_output("/m/model.F32.gguf", "q4_k_m") == Path("/m/model.Q4_K_M.gguf")
    assert default_output("pygwin-2x7b-fp16.gguf", "Q8_0") == Path("pygwin-2x7b.Q8_0.gguf")
    assert default_output("plain.gguf", "Q6_K") == Path("plain.Q6_K.gguf")
    assert ftype_of("f32")[0] == "F32" and ftype_of("Q4_K_M")[0] == "Q4_K_M"


def test_cli_quantizes_and_saves_the_report(f32_moe: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.gguf"
    assert quantize_command.main([str(f32_moe), "Q8_0", "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "routing fidelity of cli.gguf against tiny256.F32.gguf" in printed.out
    assert "next-token agreement" in printed.out and "routers F32 (unchanged)" in printed.err
    saved = json.loads((tmp_path / "cli.fidelity.json").read_text())
    assert saved["model_b"] == "cli.gguf" and len(saved["routing"]["per_layer"]["top1"]) == 2
    assert "plotly" in (tmp_path / "cli.fidelity.html").read_text()[:100_000].lower()
