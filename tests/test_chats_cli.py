"""`python -m moechat chats import|list|export` on a real data dir."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moechat.__main__ import main as moechat_main
from moechat.commands import chats
from moechat.errors import StoreError
from moechat.store.store import Store

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str]:
    code = chats.main(list(argv))
    return code, capsys.readouterr().out


def test_import_list_export_round_trip(tmp_path, capsys):
    d = str(tmp_path / "data")
    code, out = run(
        capsys,
        "--data-dir",
        d,
        "import",
        str(DATA / "st_full.jsonl"),
        str(DATA / "tgw_Aqua" / "20260503-10-00-00.json"),
    )
    assert code == 0 and "chat 1 (5 messages, character 'Seraphina')" in out and "chat 2 (5 messages" in out
    code, out = run(capsys, "--data-dir", d, "list", "--json")
    rows = json.loads(out)
    assert {r["character"] for r in rows} == {"Seraphina", "tgw_Aqua"} and {r["messages"] for r in rows} == {5}
    code, out = run(capsys, "--data-dir", d, "list")
    assert "Seraphina" in out and "st_full" in out
    target = tmp_path / "out.jsonl"
    assert run(capsys, "--data-dir", d, "export", "1", "--format", "st", "-o", str(target))[0] == 0
    original = [json.loads(x) for x in (DATA / "st_full.jsonl").read_text().splitlines()]
    assert [json.loads(x) for x in target.read_text().splitlines()] == original
    md = tmp_path / "out.md"
    assert run(capsys, "--data-dir", d, "export", "2", "--format", "md", "-o", str(md))[0] == 0
    text = md.read_text()
    assert text.startswith("# 20260503") and "**You**: What is <b>2+2</b>?" in text


def test_import_reports_skipped_lines_and_bad_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOECHAT_DATA_DIR", str(tmp_path / "env"))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    code, out = run(capsys, "import", str(DATA / "st_malformed.jsonl"), str(bad))
    assert code == 1
    assert "st_malformed.jsonl:3: skipped: not valid JSON" in out and "st_malformed.jsonl:5: skipped" in out
    assert "bad.json: not imported" in out
    with Store.open(tmp_path / "env") as store:
        assert [c.message_count for c in store.chats()] == [2]


def test_content_sniffing_without_suffix(tmp_path, capsys):
    tgw_copy = tmp_path / "history"
    tgw_copy.write_text((DATA / "tgw_legacy.json").read_text())
    st_copy = tmp_path / "chat"
    st_copy.write_text((DATA / "st_group.jsonl").read_text())
    code, out = run(
        capsys, "--data-dir", str(tmp_path / "d"), "import", "--character", "Old", str(tgw_copy), str(st_copy)
    )
    assert code == 0 and "character 'Old'" in out and "character 'Alice'" in out and ":3: skipped" in out


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("MOECHAT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert chats.default_data_dir() == tmp_path / "moechat"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert chats.default_data_dir() == Path.home() / ".local" / "share" / "moechat"
    monkeypatch.setenv("MOECHAT_DATA_DIR", "/x/y")
    assert chats.default_data_dir() == Path("/x/y")


def test_missing_chat_is_a_store_error_and_a_clean_exit(tmp_path, capsys):
    with pytest.raises(StoreError, match="chat 7 not found"):
        chats.main(["--data-dir", str(tmp_path), "export", "7", "-o", str(tmp_path / "x")])
    assert moechat_main(["chats", "--data-dir", str(tmp_path), "export", "7", "-o", str(tmp_path / "x")]) == 2
    assert "chat 7 not found" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "moechat", "chats", "--data-dir", str(tmp_path), "list", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0 and json.loads(result.stdout) == []
