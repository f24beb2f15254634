"""Faults: SIGKILL mid-import through the CLI, a model file truncated or deleted under a running app, a full disk.

SIGKILL during generation is covered by tests/test_chat_crash.py (real engine through chat.py) and
tests/test_store_crash.py (streaming writer and in-process import); not repeated here. Each test here ends with
`PRAGMA integrity_check` = ok.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from moechat.errors import EngineError, StoreError
from moechat.gguf.info import read_info
from moechat.store.store import DB_NAME, Store
from tests.app_server import StartApp

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parent.parent


def integrity_ok(data_dir: Path) -> None:
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def st_file(path: Path, n_messages: int, name: str = "Sera") -> Path:
    lines = [{"user_name": "You", "character_name": name, "chat_metadata": {}}]
    lines += [{"name": "You", "is_user": i % 2 == 0, "mes": f"message {i} " * 20} for i in range(n_messages)]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


def read_until(proc: subprocess.Popen, marker: str) -> None:
    """Read the child's output up to the first line that starts with `marker` (fails if it ends first)."""
    for line in iter(proc.stdout.readline, ""):
        if line.startswith(marker):
            return
    raise AssertionError(f"the child ended before {marker!r}")


@pytest.mark.parametrize("reported", [0, 1, 3])
def test_sigkill_during_cli_chat_import_leaves_whole_chats(tmp_path: Path, reported: int) -> None:
    """Killed as soon as the database exists (reported=0), or right after the CLI reported that many chats
    imported: the next chat is then mid-import."""
    files = [st_file(tmp_path / f"chat{i}.jsonl", 3000, name=f"Sera{i % 2}") for i in range(6)]
    data_dir = tmp_path / "data"
    cmd = [sys.executable, "-m", "moechat", "chats", "--data-dir", str(data_dir), "import", *map(str, files)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each "<file>: chat <id> (…)" line as soon as it is printed
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 60
    while not (data_dir / DB_NAME).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(reported):
        read_until(proc, f"{files[i]}: chat ")
    assert proc.poll() is None, "the import finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    integrity_ok(data_dir)
    with Store.open(data_dir) as store:
        chats = store.chats()
        assert len(chats) >= reported  # what the CLI reported imported was committed
        assert all(c.message_count == 3000 for c in chats)  # every chat whole, or absent
        for chat in chats:
            assert store.messages(chat.id)[-1].text == "message 2999 " * 20
    # the import can be run again to completion afterwards
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    integrity_ok(data_dir)


SWITCHER = textwrap.dedent(
    """
    import sys, threading
    from moechat import chat
    from moechat.engine.engine import Engine
    from moechat.engine.types import Sampling
    from moechat.models.slot import ModelSlot
    from moechat.store.store import Store

    models, data = sys.argv[1:3], sys.argv[3]
    said = threading.Lock()

    def say(line):
        with said:
            print(line, flush=True)

    store = Store.open(data)
    character = store.add_character("Mira", {"name": "Mira", "first_mes": "Hello."})
    chat_id = chat.start_chat(store, character.id)
    slot = ModelSlot(Engine.load(models[0], n_ctx=1024))
    options = chat.TurnOptions(sampling=Sampling(temperature=0, max_tokens=100000), format="metharme")

    def talk():
        while True:
            with slot.use() as engine:
                waiting = False
                for _ in chat.send(engine, store, chat_id, "Go on.", options):
                    if not waiting and slot.get() is not engine:
                        say("waiting")  # a switch has begun and waits for this reply, which is running
                        waiting = True

    threading.Thread(target=talk, daemon=True).start()
    for i in range(1000):
        slot.switch(Engine.load(models[(i + 1) % 2], n_ctx=1024))  # waits for the running reply
        say("switched")
    """
)


def test_sigkill_during_model_switch(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """A kill while a model switch waits for a running reply: the database is intact, the partial reply is
    kept (marked stopped), and a fresh start loads either model and chats."""
    data_dir = tmp_path / "data"
    args = [str(tiny_models["moe2"]), str(tiny_models["moe4"]), str(data_dir)]
    proc = subprocess.Popen([sys.executable, "-c", SWITCHER, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        read_until(proc, "switched")  # one switch done (it waited for the reply then running)
        read_until(proc, "waiting")  # the next switch waits for a reply that is running now
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    integrity_ok(data_dir)
    with Store.open(data_dir) as store:
        (info,) = store.chats()
        messages = store.messages(info.id)
        assert messages[1].role == "user" and all(m.text == "Go on." for m in messages if m.role == "user")
        replies = [m for m in messages[2:] if m.role == "assistant"]
        assert replies and all(not r.current.stats.stopped for r in replies[:-1])
    done = subprocess.run(
        [sys.executable, "-m", "moechat", "trace", args[1], "--prompt", "hi", "--max-tokens", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_truncated_or_deleted_model_gives_a_clear_message(tmp_path: Path, tiny_moe_path: Path) -> None:
    model = tmp_path / "m.gguf"
    shutil.copy(tiny_moe_path, model)
    with model.open("r+b") as fh:
        fh.truncate(model.stat().st_size // 2)
    with pytest.raises(EngineError, match="truncated"):
        read_info(model)
    model.unlink()
    with pytest.raises(EngineError, match="not found"):
        read_info(model)


def test_app_refuses_a_truncated_model_with_one_line(tmp_path: Path, tiny_moe_path: Path) -> None:
    model = tmp_path / "m.gguf"
    shutil.copy(tiny_moe_path, model)
    with model.open("r+b") as fh:
        fh.truncate(model.stat().st_size - 1000)
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    cmd = [sys.executable, "app.py", "--model", str(model), "--data-dir", str(tmp_path / "data"), "--port", "17861"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0
    assert "truncated" in (done.stderr + done.stdout)
    assert "Traceback" not in done.stderr


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 2 MiB tmpfs; skipped where mounting is not permitted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_a_store_error_and_the_database_stays_intact(tiny_disk: Path) -> None:
    data_dir = tiny_disk / "data"
    written = 0
    with Store.open(data_dir) as store:
        chat = store.create_chat(store.add_character("Sera", "{}").id)
        with pytest.raises(StoreError) as caught:
            for i in range(100_000):
                store.add_message(chat.id, "user", f"{i:06d} " + "x" * 4000, name="You")
                written += 1
        message = str(caught.value)
        assert "full" in message.lower() and str(data_dir) in message, message
        # the store still reads, and still writes once space is freed
        assert len(store.messages(chat.id)) == written
    integrity_ok(data_dir)
    with Store.open(data_dir) as store:
        assert [m.text[:6] for m in store.messages(chat.id)] == [f"{i:06d}" for i in range(written)]
    print(f"\ndisk full after {written} messages of 4 KB on a 2 MiB tmpfs: {message}")


@pytest.mark.browser
def test_app_loads_after_a_cli_chat_import(
    tmp_path: Path, tiny_moe_path: Path, browser: Browser, app_server: StartApp
) -> None:
    from playwright.sync_api import expect

    data_dir = tmp_path / "data"
    cmd = [sys.executable, "-m", "moechat", "chats", "--data-dir", str(data_dir), "import"]
    subprocess.run([*cmd, str(st_file(tmp_path / "c.jsonl", 4))], cwd=ROOT, check=True, timeout=120)
    server = app_server(tiny_moe_path, data_dir)
    page = browser.new_page()
    page.goto(server.url)
    expect(page.locator("#gallery .thumbnail-item", has_text="Sera")).to_be_visible(timeout=20_000)
    page.close()
