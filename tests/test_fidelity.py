"""Routing fidelity: a model against itself, against a copy with layer 0's router rows swapped (expected values
derived by hand from the reference run), the pure comparison, the report files and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moechat.errors import EngineError
from moechat.gguf.info import open_reader
from moechat.moe import fidelity
from moechat.moe.fidelity import Run, compare_models, compare_runs, kl_divergence, teacher_forced

TEXTS = ("*She smiles* Tell me about the dragon, traveller.", "The capital of France is Paris.")


def swapped_router_copy(src: Path, dst: Path, layer: int = 0) -> Path:
    """A byte copy of `src` whose layer `layer` router rows 0 and 1 are exchanged (patched in place)."""
    shutil.copyfile(src, dst)
    t = next(t for t in open_reader(src).tensors if t.name == f"blk.{layer}.ffn_gate_inp.weight")
    rows = np.memmap(dst, dtype=np.float32, mode="r+", offset=t.data_offset, shape=(int(t.shape[1]), int(t.shape[0])))
    rows[[0, 1]] = rows[[1, 0]]
    rows.flush()
    del rows
    return dst


def test_model_against_itself_is_perfect(tiny_moe_path: Path) -> None:
    report = compare_models(tiny_moe_path, tiny_moe_path, TEXTS)
    r = report.routing
    assert np.all(r.top1 == 1.0) and np.all(r.kappa == 1.0) and np.all(r.mean_abs_dp == 0.0)
    assert np.allclose(r.margin_corr, 1.0)
    assert report.next_token_agreement == 1.0 and report.mean_kl == 0.0 and report.max_kl == 0.0
    assert report.n_texts == 2 and report.n_tokens == int(r.n_tokens[0]) > 10


def test_swapped_router_rows_score_what_the_reference_predicts(tiny_moe_path: Path, tmp_path: Path) -> None:
    ids, a = teacher_forced(tiny_moe_path, TEXTS, None)
    _, b = teacher_forced(swapped_router_copy(tiny_moe_path, tmp_path / "swapped.gguf"), TEXTS, ids)
    # Layer 0's router reads the same input in both models: its logits are A's, exchanged.
    np.testing.assert_allclose(b.router_logits[:, 0], a.router_logits[:, 0, ::-1], rtol=0, atol=1e-6)
    r = compare_runs(a, b).routing
    p1 = np.exp(a.router_logits[:, 0, 1]) / np.exp(a.router_logits[:, 0]).sum(axis=-1)
    f1 = float((p1 > 0.5).mean())  # A's first-choice share of expert 1 at layer 0
    assert 0.0 < f1 < 1.0
    assert r.top1[0] == 0.0  # every first choice flips
    chance = 2 * f1 * (1 - f1)  # p_e = F_a0 F_b0 + F_a1 F_b1 with F_b = F_a reversed
    assert r.kappa[0] == pytest.approx(-chance / (1 - chance), abs=1e-12)
    assert r.mean_abs_dp[0] == pytest.approx(np.abs(2 * p1 - 1).mean(), abs=1e-6)  # |p_a - p_b| = |p1 - p0|
    assert r.margin_corr[0] == pytest.approx(-1.0, abs=1e-9)  # margin z1 - z0 changes sign
    assert r.top1[1] < 1.0 or r.mean_abs_dp[1] > 0.0  # later layers read a changed residual stream


def run(router: np.ndarray, output: np.ndarray) -> Run:
    return Run(router.astype(np.float32), output.astype(np.float32), (len(router),))


def test_compare_runs_by_hand() -> None:
    router_a = np.array([[[2.0, 0.0]], [[0.0, 1.0]], [[3.0, 0.0]], [[0.0, 2.0]]])  # first choices 0 1 0 1
    router_b = np.array([[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, 3.0]], [[0.0, 2.0]]])  # 0 1 1 1
    out_a = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    out_b = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]]))
    report = compare_runs(run(router_a, out_a), run(router_b, out_b))
    assert report.routing.top1[0] == 0.75
    assert report.routing.kappa[0] == pytest.approx((0.75 - 0.5) / (1 - 0.5))  # p_e = .5*.25 + .5*.75
    kl = 0.2 * np.log(0.2 / 0.6) + 0.8 * np.log(0.8 / 0.4)
    assert report.mean_kl == pytest.approx(kl / 4) and report.max_kl == pytest.approx(kl)
    assert report.next_token_agreement == 0.75  # argmax differs at position 2 only
    with pytest.raises(EngineError, match="differ in shape"):
        compare_runs(run(router_a, out_a), run(router_a[:, :, :1], out_a))


def test_kl_is_zero_for_identical_rows_and_shift_invariant() -> None:
    x = np.random.default_rng(0).standard_normal((5, 300)).astype(np.float32)
    assert np.all(kl_divergence(x, x) == 0.0)
    assert np.allclose(kl_divergence(x, x + 7.0), 0.0, atol=1e-9)


def test_report_files_and_table(tmp_path: Path) -> None:
    router = np.random.default_rng(1).standard_normal((6, 3, 2))
    out = np.random.default_rng(2).standard_normal((6, 10))
    report = compare_runs(run(router, out), run(router + 0.1, out + 0.1), "a.gguf", "b.gguf")
    saved = json.loads(fidelity.write_json(report, tmp_path / "r.json").read_text())
    assert saved["model_a"] == "a.gguf" and saved["n_tokens"] == 6
    assert len(saved["routing"]["per_layer"]["kappa"]) == 3 and set(saved["next_token"]) == {
        "agreement",
        "mean_kl",
        "max_kl",
    }
    html = fidelity.write_html(report, tmp_path / "r.html").read_text()
    assert "top-1 agreement" in html and "b.gguf vs a.gguf" in html
    lines = report.table().splitlines()
    assert lines[0].startswith("routing fidelity of b.gguf against a.gguf") and len(lines) == 2 + 3 + 3


def test_refusals(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(EngineError, match="differ in shape"):
        compare_models(tiny_models["moe2"], tiny_models["moe4"], TEXTS)
    with pytest.raises(EngineError, match="do not share a tokenizer"):
        teacher_forced(tiny_models["moe2"], TEXTS[:1], [[1, 2, 3]])
