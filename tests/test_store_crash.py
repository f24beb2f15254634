"""Crash safety: a writer process killed with SIGKILL mid-reply or mid-import never leaves a torn chat."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from moechat.store.store import DB_NAME, Store

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

STREAMER = """
import sys
import numpy as np
from moechat.store.store import Store
from moechat.store.records import RoutingRecord
store = Store.open(sys.argv[1])
chat = store.create_chat(store.add_character("Sera", "{}").id)
user = store.add_message(chat.id, "user", "hello", name="You")
swipe = store.begin_reply(chat.id, name="Sera", model="m")
print(chat.id, user.id, swipe.id, flush=True)
i = 0
while True:
    probs = np.full((1, 4, 8), 0.125, np.float32)
    record = RoutingRecord(probs, np.zeros((1, 4, 2), np.int8), np.array([i]), np.array([0]))
    store.append_to_swipe(swipe.id, f"t{i:05d} ", record)
    i += 1
    if i == 20:
        print("streaming", flush=True)
"""

IMPORTER = """
import sys
from moechat.chatfiles import sillytavern
from moechat.store.store import Store
store = Store.open(sys.argv[1])
chat, _ = sillytavern.read_file(sys.argv[2])
while True:
    store.import_chat(chat)
    print("imported", flush=True)
"""


def spawn(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=env)


def kill(proc: subprocess.Popen, delay: float) -> None:
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def integrity_ok(data_dir: Path) -> None:
    conn = sqlite3.connect(data_dir / DB_NAME)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_kill_mid_reply_leaves_a_whole_stopped_reply(tmp_path, delay):
    proc = spawn(STREAMER, str(tmp_path))
    chat_id, user_id, swipe_id = map(int, proc.stdout.readline().split())
    assert proc.stdout.readline().strip() == "streaming"
    kill(proc, delay)
    integrity_ok(tmp_path)
    with Store.open(tmp_path) as store:
        messages = store.messages(chat_id)
        assert messages[0].id == user_id and messages[0].text == "hello"
        if len(messages) == 1:
            return  # absent is allowed
        reply = messages[1].current
        assert reply.id == swipe_id and reply.stats.stopped
        n = len(reply.text) // 7
        assert n >= 20 and reply.text == "".join(f"t{i:05d} " for i in range(n))
        record = store.routing(swipe_id)
        assert record.n_tokens == n
        assert record.token_ids.tolist() == list(range(n)) and record.offsets.tolist() == list(range(0, 7 * n, 7))
        assert np.allclose(record.probs, 0.125)


def test_kill_mid_import_leaves_whole_chats_only(tmp_path):
    lines = [{"user_name": "You", "character_name": "Sera", "chat_metadata": {}}]
    lines += [{"name": "You", "is_user": i % 2 == 0, "mes": f"message {i} " * 20, "extra": {}} for i in range(3000)]
    source = tmp_path / "big.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines))
    data_dir = tmp_path / "data"
    proc = spawn(IMPORTER, str(data_dir), str(source))
    assert proc.stdout.readline().strip() == "imported"
    kill(proc, 0.15)
    integrity_ok(data_dir)
    with Store.open(data_dir) as store:
        chats = store.chats()
        assert chats and all(c.message_count == 3000 for c in chats)
        assert store.messages(chats[0].id)[-1].text == "message 2999 " * 20
