"""Pre-2024 split-expert GGUFs (blk.N.ffn_gate.X.weight): detected, upgraded byte for byte to the stacked layout,
cached, and then indistinguishable from a model written stacked in the first place.

Every model here is a tiny_gguf pair written from one seed: `stacked` as llama.cpp writes today, `split` as it wrote
before April 2024. Broken sets are made by rewriting a split file with the project's own GGUF writer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from moechat.__main__ import main as cli
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.errors import ConfigError, EngineError
from moechat.gguf.info import read_info
from moechat.gguf.tiny import TinySpec, write_tiny_gguf
from moechat.gguf.upgrade import CACHE_FOLDER, cache_path, check_free_space, ensure_stacked, upgrade
from moechat.gguf.write import Planned, raw_bytes, reader_kvs, write_gguf
from moechat.models import hub
from moechat.moe.frankenmoe import build_from_file
from moechat.moe.steering import solo_expert_gguf, top1_engine
from tests.models import UPGRADE_MOE4

QT = gguf.GGMLQuantizationType
VARIANTS = {"f32": {}, "f16_router": {"router_dtype": "f16"}, "q8_0_experts": {"expert_dtype": "q8_0"}}
SPLIT_NAME = re.compile(r"blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight")
PROMPT = "Once upon a time the dragon said hello to you and"


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """{variant: (stacked, split)}, each pair written from the same spec and seed."""
    root = tmp_path_factory.mktemp("legacy")
    out = {}
    for name, options in VARIANTS.items():
        spec = TinySpec(**{**UPGRADE_MOE4.__dict__, **options})
        stacked = write_tiny_gguf(root / f"{name}.stacked.gguf", spec)
        split = write_tiny_gguf(root / f"{name}.split.gguf", TinySpec(**{**spec.__dict__, "expert_layout": "split"}))
        out[name] = (stacked, split)
    return out


def tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def metadata(path: Path) -> dict[str, tuple[list, object]]:
    """Every key but the tensor count: its types and value."""
    fields = gguf.GGUFReader(path).fields
    return {k: (list(f.types), f.contents()) for k, f in fields.items() if k != "GGUF.tensor_count"}


def rewrite(src: Path, dst: Path, change: Callable[[gguf.ReaderTensor], Planned | None]) -> Path:
    """Copy `src` with each tensor replaced by change(tensor) (None drops it; return unchanged to keep it)."""
    reader = gguf.GGUFReader(src)
    plan = [p for p in map(change, reader.tensors) if p is not None]
    write_gguf(dst, list(reader_kvs(reader)), plan, progress=False)
    return dst


def same(t: gguf.ReaderTensor) -> Planned:
    data = raw_bytes(t)
    return Planned(t.name, t.tensor_type, data.shape, lambda: data)


# ---- detection and refusal ------------------------------------------------------------------------------------
def test_layout_is_detected_and_read_info_accepts_split_files(twins: dict, tiny_models: dict[str, Path]) -> None:
    for variant, (stacked, split) in twins.items():
        a, b = read_info(stacked), read_info(split)
        assert (a.expert_layout, b.expert_layout) == ("stacked", "split"), variant
        assert (b.n_experts, b.n_experts_used, b.n_layers, b.expert_names) == (4, 2, 2, ("a", "b", "c", "d"))
    assert read_info(tiny_models["dense"], allow_dense=True).expert_layout == "none"
    assert tensors(twins["f16_router"][1])["blk.0.ffn_gate_inp.weight"].tensor_type == QT.F16
    assert tensors(twins["q8_0_experts"][1])["blk.1.ffn_down.3.weight"].tensor_type == QT.Q8_0


def test_read_info_still_checks_router_rows_against_expert_count(twins: dict, tmp_path: Path) -> None:
    def three_rows(t: gguf.ReaderTensor) -> Planned:
        if t.name != "blk.0.ffn_gate_inp.weight":
            return same(t)
        data = raw_bytes(t)[:3]
        return Planned(t.name, t.tensor_type, data.shape, lambda: data)

    bad = rewrite(twins["f32"][1], tmp_path / "rows.gguf", three_rows)
    with pytest.raises(EngineError, match=r"router blk\.0\.ffn_gate_inp\.weight has 3 rows for 4 experts"):
        read_info(bad)


def test_engine_refuses_a_split_file_before_llama_cpp_sees_it(twins: dict) -> None:
    split = twins["f32"][1]
    with pytest.raises(EngineError, match=r"pre-2024 split-expert layout.*python -m moechat upgrade .*split\.gguf -o"):
        Engine.load(split)


# ---- the upgrade itself ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_upgrade_stacks_experts_byte_for_byte_and_keeps_everything_else(
    twins: dict, tmp_path: Path, variant: str
) -> None:
    stacked, split = twins[variant]
    out = upgrade(split, tmp_path / "up.gguf", progress=False)
    before, after = tensors(split), tensors(out)
    experts: dict[tuple[str, str], dict[int, gguf.ReaderTensor]] = {}
    for name, t in before.items():
        if m := SPLIT_NAME.fullmatch(name):
            experts.setdefault((m[1], m[2]), {})[int(m[3])] = t
        else:
            u = after[name]
            assert (u.tensor_type, list(u.shape)) == (t.tensor_type, list(t.shape)), name
            assert np.array_equal(raw_bytes(u), raw_bytes(t)), name
    assert len(experts) == 2 * 3
    for (layer, kind), by_index in experts.items():
        u = after[f"blk.{layer}.ffn_{kind}_exps.weight"]
        first = by_index[0]
        assert u.tensor_type == first.tensor_type
        assert list(u.shape) == [*map(int, first.shape), 4]  # ggml order: the expert axis is ne[2]
        want = np.stack([raw_bytes(by_index[x]) for x in range(4)])
        assert np.array_equal(raw_bytes(u), want)
    assert set(after) == {n for n in before if not SPLIT_NAME.fullmatch(n)} | {
        f"blk.{layer}.ffn_{kind}_exps.weight" for layer, kind in experts
    }
    assert metadata(out) == metadata(split)
    assert out.read_bytes() == stacked.read_bytes()  # tiny_gguf writes the split tensors where the stack stands


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_upgraded_legacy_model_generates_and_routes_exactly_like_its_stacked_twin(
    twins: dict, tmp_path: Path, variant: str
) -> None:
    stacked, split = twins[variant]
    resolved = hub.resolve_model(str(split), tmp_path)
    runs = []
    for path in (stacked, resolved.path):
        with Engine.load(path, n_ctx=256, n_threads=2, exact=True) as engine:
            runs.append(list(engine.stream(engine.tokenize(PROMPT), Sampling(temperature=0, max_tokens=12))))
    a, b = runs
    assert [t.id for t in a] == [t.id for t in b] and len([t for t in a if not t.prompt]) == 12
    routed = [(t, u) for t, u in zip(a, b, strict=True) if t.routing is not None]
    assert len(routed) >= len(PROMPT.split())
    for t, u in routed:
        assert np.array_equal(t.routing.probs, u.routing.probs) and np.array_equal(t.routing.experts, u.routing.experts)


# ---- incomplete sets ------------------------------------------------------------------------------------------
def drop(name: str) -> Callable[[gguf.ReaderTensor], Planned | None]:
    return lambda t: None if t.name == name else same(t)


def narrower(name: str) -> Callable[[gguf.ReaderTensor], Planned | None]:
    def change(t: gguf.ReaderTensor) -> Planned:
        if t.name != name:
            return same(t)
        data = raw_bytes(t)[:-1]  # one output row fewer
        return Planned(t.name, t.tensor_type, data.shape, lambda: data)

    return change


def as_f16(name: str) -> Callable[[gguf.ReaderTensor], Planned | None]:
    def change(t: gguf.ReaderTensor) -> Planned:
        if t.name != name:
            return same(t)
        data = np.asarray(t.data, dtype=np.float16).view(np.uint8)
        return Planned(t.name, QT.F16, data.shape, lambda: data)

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (drop("blk.1.ffn_down.2.weight"), r"expert tensor blk\.1\.ffn_down\.2\.weight is missing"),
        (drop("blk.0.ffn_up.0.weight"), r"expert tensor blk\.0\.ffn_up\.0\.weight is missing"),
        (narrower("blk.0.ffn_up.3.weight"), r"blk\.0\.ffn_up\.3\.weight has shape \[64, 127\] but .*\[64, 128\]"),
        (
            as_f16("blk.1.ffn_gate.1.weight"),
            r"blk\.1\.ffn_gate\.1\.weight is F16 but blk\.1\.ffn_gate\.0\.weight is F32",
        ),
    ],
    ids=["missing", "missing-first", "shape", "type"],
)
def test_an_incomplete_set_names_the_tensor_and_writes_nothing(
    twins: dict, tmp_path: Path, change: Callable, message: str
) -> None:
    bad = rewrite(twins["f32"][1], tmp_path / "bad.gguf", change)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EngineError, match=message):
        upgrade(bad, out / "up.gguf", progress=False)
    assert list(out.iterdir()) == []


def test_a_layer_without_any_split_tensors_of_a_kind_is_named(twins: dict, tmp_path: Path) -> None:
    kind_gone = rewrite(twins["f32"][1], tmp_path / "bad.gguf", lambda t: None if ".ffn_down." in t.name else same(t))
    with pytest.raises(EngineError, match=r"blk\.0\.ffn_down\.0\.weight is missing"):
        upgrade(kind_gone, tmp_path / "up.gguf", progress=False)


# ---- disk space -----------------------------------------------------------------------------------------------
def test_too_little_disk_is_refused_before_writing(twins: dict, tmp_path: Path) -> None:
    split = twins["f32"][1]
    seen: list[Path] = []

    def free(folder: Path) -> int:
        seen.append(folder)
        return split.stat().st_size // 2

    with pytest.raises(EngineError, match=r"upgrading needs 0\.00 GiB free in .*, but only 0\.00 GiB is free"):
        upgrade(split, tmp_path / "up.gguf", progress=False, free_bytes=free)
    assert seen == [tmp_path] and list(tmp_path.iterdir()) == []
    with pytest.raises(EngineError, match="free some space"):
        ensure_stacked(split, tmp_path / "data", free_bytes=free)
    assert list((tmp_path / "data" / CACHE_FOLDER).iterdir()) == []
    upgrade(split, tmp_path / "up.gguf", progress=False, free_bytes=lambda folder: split.stat().st_size + 2**20)


def test_the_free_space_check_reads_the_real_file_system(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=re.escape(f"free in {tmp_path}")):
        check_free_space(tmp_path, 2**62)  # 4 EiB: more than any disk has
    check_free_space(tmp_path, 1)


# ---- the cache ------------------------------------------------------------------------------------------------
def test_upgrade_is_cached_by_source_identity(twins: dict, tmp_path: Path) -> None:
    src = tmp_path / "old.gguf"
    src.write_bytes(twins["f32"][1].read_bytes())
    data = tmp_path / "data"
    first, note = ensure_stacked(src, data, progress=False)
    assert first.parent == data / CACHE_FOLDER and first.name.startswith("old.stacked-")
    assert (
        note == f"old.gguf uses the pre-2024 split-expert layout; upgraded once to {first} (stacked, no requantization)"
    )
    stat = first.stat()
    again, note2 = ensure_stacked(src, data, progress=False)
    assert again == first and "using its stacked upgrade" in (note2 or "")
    assert (again.stat().st_ino, again.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not rewritten

    changed = TinySpec(**{**UPGRADE_MOE4.__dict__, "seed": 22, "expert_layout": "split"})
    write_tiny_gguf(src, changed)
    os.utime(src, ns=(stat.st_mtime_ns + 10**9, stat.st_mtime_ns + 10**9))
    third, note3 = ensure_stacked(src, data, progress=False)
    assert third != first and "upgraded once" in (note3 or "")
    assert not first.exists()  # the old upgrade of this file is gone
    want = write_tiny_gguf(tmp_path / "twin.gguf", TinySpec(**{**UPGRADE_MOE4.__dict__, "seed": 22}))
    assert third.read_bytes() == want.read_bytes()


def test_a_killed_upgrade_leaves_nothing_that_blocks_the_next(twins: dict, tmp_path: Path) -> None:
    split, data = twins["f32"][1], tmp_path / "data"
    out = cache_path(split, data)
    out.parent.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = out.with_name(f".{out.name}.{int(done.stdout)}.partial")  # that process has exited
    running = out.with_name(f".{out.name}.{os.getppid()}.partial")  # an upgrade still running elsewhere
    for f in (dead, running):
        f.write_bytes(b"half an upgrade")
    assert ensure_stacked(split, data, progress=False)[0] == out
    assert not dead.exists() and running.exists()


def test_stacked_and_unreadable_files_pass_through(twins: dict, tmp_path: Path) -> None:
    stacked = twins["f32"][0]
    assert ensure_stacked(stacked, tmp_path) == (stacked, None)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF")
    assert ensure_stacked(junk, tmp_path) == (junk, None)  # the loader reports it
    assert not (tmp_path / CACHE_FOLDER).exists()


# ---- the ways in: app, CLI, steering, inspect, quantize, compare, build-moe -----------------------------------
def test_resolve_model_upgrades_a_legacy_path_and_says_so(twins: dict, tmp_path: Path) -> None:
    split = twins["f32"][1]
    got = hub.resolve_model(str(split), tmp_path / "data")
    assert got.source == "local" and got.path.parent == tmp_path / "data" / CACHE_FOLDER
    assert len(got.notes) == 1 and "split-expert layout; upgraded once to" in got.notes[0]
    assert hub.resolve_model(str(split), tmp_path / "data", upgrade=False).path == split


def test_upgrade_command(twins: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stacked, split = twins["q8_0_experts"]
    out = tmp_path / "up.gguf"
    assert cli(["upgrade", str(split), "-o", str(out), "--data-dir", str(tmp_path)]) == 0
    assert out.read_bytes() == stacked.read_bytes()
    assert re.search(r"wrote .*up\.gguf \(.* MiB\) in .* s \(.* MiB/s\)", capsys.readouterr().err)
    assert cli(["upgrade", str(stacked), "-o", str(tmp_path / "again.gguf"), "--data-dir", str(tmp_path)]) == 2
    assert "does not use the split-expert layout" in capsys.readouterr().err


def test_steering_top1_and_solo_on_a_legacy_model(twins: dict, tmp_path: Path) -> None:
    split = twins["q8_0_experts"][1]
    path = hub.resolve_model(str(split), tmp_path / "data").path
    with top1_engine(path, n_ctx=128, n_threads=2) as engine:
        tokens = list(engine.stream(engine.tokenize(PROMPT), Sampling(temperature=0, max_tokens=2)))
        assert engine.info.n_experts_used == 1
        assert all(t.routing.experts.shape == (2, 1) for t in tokens if t.routing is not None)
    solo = solo_expert_gguf(path, 2, tmp_path / "steering")
    got, src = tensors(solo), tensors(split)
    for layer in range(2):
        for kind in ("gate", "up", "down"):
            dense, expert = got[f"blk.{layer}.ffn_{kind}.weight"], src[f"blk.{layer}.ffn_{kind}.2.weight"]
            assert dense.tensor_type == QT.Q8_0 and np.array_equal(raw_bytes(dense), raw_bytes(expert))
    with Engine.load(solo, allow_dense=True, n_ctx=128, n_threads=2) as engine:
        assert len(list(engine.stream(engine.tokenize(PROMPT), Sampling(temperature=0, max_tokens=2)))) > 2


def test_inspect_reads_a_legacy_file_without_upgrading(
    twins: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacked, split = twins["f16_router"]
    assert cli(["inspect", str(split), "--json", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "pre-2024 split-expert layout (routers read as stored)" in out.err
    assert cli(["inspect", str(stacked), "--json", "--data-dir", str(tmp_path)]) == 0
    legacy, today = json.loads(out.out), json.loads(capsys.readouterr().out)
    assert legacy["layers"] == today["layers"] and legacy["expert_names"] == ["a", "b", "c", "d"]
    assert not (tmp_path / CACHE_FOLDER).exists()


def test_quantize_and_compare_accept_a_legacy_file(
    twins: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacked, split = twins["f32"]
    data = ["--data-dir", str(tmp_path / "data")]
    report = tmp_path / "same.json"
    assert cli(["compare", str(split), str(stacked), "--json", str(report), *data]) == 0
    numbers = json.loads(report.read_text())
    assert numbers["next_token"] == {"agreement": 1.0, "mean_kl": 0.0, "max_kl": 0.0}
    out = tmp_path / "q8.gguf"
    assert cli(["quantize", str(split), "Q8_0", "-o", str(out), "--no-report", *data]) == 0
    assert "split-expert layout; upgraded once" in capsys.readouterr().err
    info, q = read_info(out), tensors(out)
    assert info.expert_layout == "stacked" and q["blk.0.ffn_up_exps.weight"].tensor_type == QT.Q8_0
    assert q["blk.0.ffn_gate_inp.weight"].tensor_type == QT.F32


def test_quantize_default_output_sits_beside_the_legacy_original(twins: dict, tmp_path: Path) -> None:
    src = tmp_path / "legacy.F32.gguf"
    src.write_bytes(twins["f32"][1].read_bytes())
    assert cli(["quantize", str(src), "Q8_0", "--no-report", "--data-dir", str(tmp_path / "data")]) == 0
    assert read_info(tmp_path / "legacy.Q8_0.gguf").expert_layout == "stacked"


def test_build_moe_refuses_a_legacy_moe_as_a_source_like_any_moe(twins: dict, tmp_path: Path) -> None:
    config = tmp_path / "moe.yml"
    split = twins["f32"][1]
    config.write_text(
        f"base_model: {split}\ngate_mode: random\nexperts_per_token: 1\nexperts:\n  - source_model: {split}\n"
    )
    with pytest.raises(ConfigError, match=r"base_model: f32\.split\.gguf is already a Mixture-of-Experts model"):
        build_from_file(config, tmp_path / "out.gguf")
