"""Gate provenance: per-layer router norms, cosines, condition numbers and flags; the inspect command."""

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest

from moechat.__main__ import main as cli
from moechat.commands.inspect import format_provenance
from moechat.gguf.tiny import write_tiny_gguf
from moechat.moe.frankenmoe import build_moe
from moechat.moe.mergekit_config import parse_config
from moechat.moe.provenance import gate_provenance, layer_gates
from tests.models import DENSE, MOE2, MOE4_NAMED

S = math.sqrt(0.5)
# rows, expected (dead, collinear pairs, condition, degenerate)
CASES = [
    ([[1, 0], [0, 1]], ((), (), 1.0, False)),
    ([[3, 0], [0, 1]], ((), (), 3.0, False)),
    ([[1, 0], [0, 0]], ((1,), (), math.inf, True)),
    ([[0, 0], [0, 0]], ((0, 1), (), math.inf, True)),
    ([[1, 0], [0.99, 0.1411]], ((), ((0, 1),), None, True)),
    ([[1, 0], [-0.9, math.sqrt(0.19)]], ((), (), math.sqrt(19), False)),  # cos -0.9: cond sqrt(1.9/0.1)
    ([[1, 0, 0], [S, S, 0], [0, 0, 1]], ((), (), None, False)),
    ([[1, 0, 0], [1, 0, 0], [0, 0, 1]], ((), ((0, 1),), math.inf, True)),
]


@pytest.mark.parametrize(("rows", "expected"), CASES)
def test_layer_gates(rows: list[list[float]], expected: tuple) -> None:
    dead, collinear, condition, degenerate = expected
    g = layer_gates(3, np.array(rows))
    assert (g.layer, g.dead, g.collinear) == (3, dead, collinear)
    if condition is not None:
        assert (
            g.condition == pytest.approx(condition, rel=1e-6) if math.isfinite(condition) else math.isinf(g.condition)
        )
    assert g.degenerate == (degenerate or g.condition > 5)
    np.testing.assert_allclose(g.norms, np.linalg.norm(np.array(rows, dtype=float), axis=1))


def test_cosines_of_a_pair() -> None:
    g = layer_gates(0, np.array([[2.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(g.cosines, [[1, S], [S, 1]])


def zero_router_row(path: Path, layer: int, expert: int) -> None:
    """Overwrite one router row of a GGUF in place with zeros."""
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == f"blk.{layer}.ffn_gate_inp.weight")
    n_embd = int(t.shape[0])
    with path.open("r+b") as fh:
        fh.seek(t.data_offset + expert * n_embd * 4)
        fh.write(bytes(n_embd * 4))


@pytest.fixture
def moe(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "moe.gguf", MOE4_NAMED)


def test_inspect_flags_a_dead_gate(moe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zero_router_row(moe, layer=1, expert=2)
    prov = gate_provenance(moe)
    assert prov.dead_gates == [(1, 2)]
    assert prov.layers[1].dead == (2,) and math.isinf(prov.layers[1].condition)
    assert cli(["inspect", str(moe)]) == 0
    out = capsys.readouterr().out
    assert "DEAD GATE: expert 2 (c) has an all-zero router row in layers 1:" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line[:5].strip().isdigit()}
    assert "DEAD gate 2" in rows["1"] and "DEAD" not in rows["0"] + rows["2"]


def test_healthy_model_report(moe: Path) -> None:
    prov = gate_provenance(moe)
    assert (prov.n_experts, prov.n_used, prov.names, prov.names_from) == (4, 2, tuple("abcd"), "metadata")
    assert prov.dead_gates == [] and len(prov.layers) == 3
    text = format_provenance(prov)
    assert "4 experts, top-2" in text and "expert 3: d" in text


def test_names_from_an_adjacent_mergekit_config(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", MOE2)
    assert gate_provenance(path).names == ("expert 0", "expert 1")
    (tmp_path / "mergekit_moe_config.yml").write_text(
        "base_model: x\nexperts:\n  - source_model: Xwin-LM/Xwin-LM-7B-V0.2\n"
        "  - source_model: PygmalionAI/pygmalion-2-7b\n    name: Pyg\n"
    )
    prov = gate_provenance(path)
    assert (prov.names, prov.names_from) == (("Xwin-LM/Xwin-LM-7B-V0.2", "Pyg"), "mergekit_moe_config.yml")


def test_builder_with_cancelling_prompts_makes_a_dead_gate(tmp_path: Path) -> None:
    """The known mergekit bug's signature: an expert whose positive and negative gates cancel."""
    write_tiny_gguf(tmp_path / "d.gguf", DENSE)
    text = (
        "base_model: d.gguf\ngate_mode: cheap_embed\nexperts:\n"
        "  - source_model: d.gguf\n    positive_prompts: [story]\n"
        "  - source_model: d.gguf\n    positive_prompts: [same]\n    negative_prompts: [same]\n"
    )
    prov = gate_provenance(build_moe(parse_config(text), text, tmp_path / "m.gguf", tmp_path))
    assert prov.dead_gates == [(0, 1), (1, 1)] and prov.gate_mode == "cheap_embed"
    assert prov.names == ("d #1", "d #2")


def test_inspect_json_and_errors(moe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zero_router_row(moe, layer=0, expert=0)
    assert cli(["inspect", str(moe), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dead_gates"] == [[0, 0]] and data["layers"][0]["condition"] is None
    assert data["layers"][1]["cosines"][0][0] == pytest.approx(1.0)
    dense = write_tiny_gguf(tmp_path / "dense.gguf", DENSE)
    assert cli(["inspect", str(dense)]) == 2
    assert "not a Mixture-of-Experts model" in capsys.readouterr().err
