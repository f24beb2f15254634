"""Model sources against a hand-made Hugging Face cache (the real layout), offline: no test touches the network.

Layout written here, as huggingface_hub writes it: models--owner--name/refs/main holds a 40-hex commit,
snapshots/<commit>/<file> is a relative symlink into blobs/<sha256>.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from moechat.errors import EngineError
from moechat.models import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"
QUANTS = ["Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "f16"]


def cache_repo(cache: Path, repo: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Write `files` into `cache` the way hf_hub_download does; returns the snapshot folder."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    c = tmp_path / "hub"
    quants = {f"Model-7B.{q}.gguf": q.encode() for q in QUANTS}
    cache_repo(c, "owner/model-GGUF", quants | {"README.md": b"hi", "Model-7B.mmproj-f16.gguf": b"x"})
    return c


def resolve(value: str, cache: Path, tmp_path: Path, **kw: object) -> hub.ResolvedModel:
    return hub.resolve_model(value, tmp_path / "data", cache_dir=cache, **kw)


def test_repo_picks_q4_k_m_first_from_the_cache(cache: Path, tmp_path: Path) -> None:
    got = resolve("owner/model-GGUF", cache, tmp_path)
    assert (got.source, got.repo, got.quant) == ("hub", "owner/model-GGUF", "Q4_K_M")
    assert got.files == ("Model-7B.Q4_K_M.gguf",)
    assert got.path.read_bytes() == b"Q4_K_M"
    assert got.path.is_relative_to(cache / "models--owner--model-GGUF" / "snapshots" / COMMIT)
    assert got.offline and any("offline" in n and str(cache) in n for n in got.notes)


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (QUANTS, "Q4_K_M"),
        (["Q2_K", "Q5_K_M", "Q4_K_S", "Q8_0"], "Q5_K_M"),
        (["Q2_K", "Q4_K_S", "Q6_K", "Q8_0"], "Q4_K_S"),
        (["Q2_K", "Q6_K", "Q8_0", "f16"], "Q6_K"),
        (["Q8_0", "f16", "Q2_K"], "Q8_0"),
        (["f16", "Q2_K"], "Q2_K"),
        (["f16"], "F16"),
    ],
)
def test_quant_preference_order(present: list[str], expected: str) -> None:
    files = [f"m.{q}.gguf" for q in present]
    assert hub.choose("o/r", files).quant == expected


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("PygWin-2x7B.Q4_K_M.gguf", "Q4_K_M"),
        ("PygWin-2x7B.i1-Q4_K_S.gguf", "Q4_K_S"),
        ("pygwin-2x7b-fp16.gguf", "F16"),
        ("model-q8_0-00001-of-00002.gguf", "Q8_0"),
        ("Model.IQ4_XS.gguf", "IQ4_XS"),
        ("model.BF16.gguf", "BF16"),
        ("plain-model.gguf", None),
    ],
)
def test_quant_of_file_names(name: str, quant: str | None) -> None:
    assert hub.quant_of(name) == quant


def test_exact_file_and_quant_argument(cache: Path, tmp_path: Path) -> None:
    exact = resolve("owner/model-GGUF:Model-7B.Q8_0.gguf", cache, tmp_path)
    assert exact.files == ("Model-7B.Q8_0.gguf",) and exact.path.read_bytes() == b"Q8_0"
    by_spec = resolve("owner/model-GGUF:q6_k", cache, tmp_path)
    by_arg = resolve("owner/model-GGUF", cache, tmp_path, quant="Q6_K")
    assert by_spec.path == by_arg.path and by_arg.path.read_bytes() == b"Q6_K"


def test_unknown_file_or_quant_lists_what_there_is(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"no file nope\.gguf.*Available: .*Model-7B\.Q4_K_M\.gguf"):
        resolve("owner/model-GGUF:nope.gguf", cache, tmp_path)
    with pytest.raises(EngineError, match=r"no IQ2_XXS file.*Model-7B\.Q2_K\.gguf"):
        resolve("owner/model-GGUF", cache, tmp_path, quant="iq2_xxs")


def test_alias_resolves_to_the_flagship_repos(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    flagship = {"PygWin-2x7B.Q4_K_M.gguf": b"q4", "PygWin-2x7B.Q8_0.gguf": b"8"}
    cache_repo(cache, "mradermacher/PygWin-2x7B-GGUF", flagship)
    cache_repo(cache, "Kquant03/PygWin-2x7B-FP16-GGUF", {"pygwin-2x7b-fp16.gguf": b"fp16"})
    got = resolve("pygwin", cache, tmp_path)
    assert (got.repo, got.quant, got.path.read_bytes()) == ("mradermacher/PygWin-2x7B-GGUF", "Q4_K_M", b"q4")
    assert resolve("PygWin:Q8_0", cache, tmp_path).path.read_bytes() == b"8"
    fp16 = resolve("pygwin", cache, tmp_path, quant="fp16")
    assert (fp16.repo, fp16.path.read_bytes()) == ("Kquant03/PygWin-2x7B-FP16-GGUF", b"fp16")
    assert resolve("pygwin-fp16", cache, tmp_path).path == fp16.path


def test_offline_and_not_cached_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as info:
        resolve("someone/absent-GGUF", tmp_path / "empty", tmp_path)
    text = str(info.value)
    assert "not in the Hugging Face cache" in text and "HF_HUB_OFFLINE=1" in text
    assert 'hf download someone/absent-GGUF --include "*Q4_K_M*.gguf"' in text


def test_offline_exact_file_missing_from_a_cached_repo(cache: Path, tmp_path: Path) -> None:
    files = [f"Model-7B.{q}.gguf" for q in QUANTS]
    cache_repo(cache, "owner/listed-GGUF", {files[0]: b"x"})  # only Q2_K was downloaded
    command = r"hf download owner/listed-GGUF Model-7B\.Q4_K_M\.gguf"
    with pytest.raises(EngineError, match=rf"Run this once with network access.*{command}"):
        resolve("owner/listed-GGUF:Model-7B.Q4_K_M.gguf", cache, tmp_path)


def test_split_model_downloads_every_shard_and_returns_the_first(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    shards = {f"Q8_0/big.Q8_0-0000{i}-of-00003.gguf": bytes([i]) for i in (1, 2, 3)}
    cache_repo(cache, "owner/big-GGUF", shards | {"big.Q2_K.gguf": b"small"})
    got = resolve("owner/big-GGUF", cache, tmp_path, quant="Q8_0")
    assert got.files == tuple(sorted(shards)) and got.path.read_bytes() == b"\x01"
    assert all((got.path.parent / Path(f).name).is_file() for f in shards)


def test_incomplete_split_and_part_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"split into 3 files but only shards \[1, 3\]"):
        hub.choose("o/r", ["m.Q8_0-00001-of-00003.gguf", "m.Q8_0-00003-of-00003.gguf"])
    with pytest.raises(EngineError, match=r"\.partNofM pieces \(m\.Q8_0\.gguf\).*cat "):
        hub.choose("o/r", ["m.Q8_0.gguf.part1of2", "m.Q8_0.gguf.part2of2"])


def test_unlabelled_files_need_an_exact_name() -> None:
    assert hub.choose("o/r", ["only.gguf"]).files == ("only.gguf",)
    with pytest.raises(EngineError, match=r"name one as o/r:FILE\.gguf"):
        hub.choose("o/r", ["a.gguf", "b.gguf"])


def test_local_path_demo_and_nonsense(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "m.gguf"
    local.write_bytes(b"GGUF")
    assert hub.resolve_model(str(local), tmp_path) == hub.ResolvedModel(local, "local")
    import moechat.models.demo

    monkeypatch.setattr(moechat.models.demo, "demo_model_path", lambda data_dir: Path(data_dir) / "demo.gguf")
    assert hub.resolve_model(None, tmp_path).path == tmp_path / "demo.gguf"
    assert hub.resolve_model("demo", tmp_path).source == "demo"
    with pytest.raises(EngineError, match="not a Hugging Face repo"):
        hub.resolve_model("not a model", tmp_path)
    with pytest.raises(EngineError, match=r"model file not found: models/missing\.gguf"):
        hub.resolve_model("models/missing.gguf", tmp_path)


def test_progress_hook_sees_cached_files_and_bar_updates(cache: Path, tmp_path: Path) -> None:
    seen: list[hub.DownloadProgress] = []
    resolve("owner/model-GGUF", cache, tmp_path, progress=seen.append)
    assert seen == [hub.DownloadProgress("Model-7B.Q4_K_M.gguf", 6, 6)]
    seen.clear()
    bar = hub.progress_bar_class(seen.append)(total=10, desc="f.gguf", disable=True)
    bar.update(4)
    bar.update(6)
    bar.close()
    assert [(p.filename, p.done, p.total) for p in seen] == [("f.gguf", 4, 10), ("f.gguf", 10, 10)]


@pytest.mark.parametrize(
    ("exc", "network"),
    [(ConnectionError("refused"), True), (TimeoutError(), True), (ValueError("bad"), False)],
)
def test_network_errors_are_told_apart(exc: Exception, network: bool) -> None:
    assert hub.is_network_error(exc) is network
