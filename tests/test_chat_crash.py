"""A kill in the middle of a reply (real engine, real store, SIGKILL): nothing is torn or lost."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

from moechat.store.store import Store

CHILD = textwrap.dedent(
    """
    import sys
    from moechat import chat
    from moechat.engine.engine import Engine
    from moechat.engine.types import Sampling
    from moechat.store.store import Store

    model, data = sys.argv[1], sys.argv[2]
    store = Store.open(data)
    committed = Store.open(data)  # a second connection: it sees only what was committed
    character = store.add_character("Mira", {"name": "Mira", "first_mes": "Hello."})
    chat_id = chat.start_chat(store, character.id)
    options = chat.TurnOptions(sampling=Sampling(temperature=0, max_tokens=100000, ignore_eos=True), format="metharme")
    with Engine.load(model, n_ctx=8192) as engine:
        said = False
        for i, update in enumerate(chat.send(engine, store, chat_id, "Tell me everything.", options)):
            if i > 20 and not said:
                routing = committed.routing(committed.messages(chat_id)[-1].current.id)
                if routing is not None and routing.n_tokens > 20:  # a periodic save of the reply has committed
                    print("saved", flush=True)
                    said = True
    """
)


def test_sigkill_mid_reply_leaves_an_intact_database(tiny_moe_path, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tiny_moe_path), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert proc.stdout.readline().strip() == "saved"  # still streaming
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    db = tmp_path / "moechat.sqlite3"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    with Store.open(tmp_path) as store:
        (info,) = store.chats()
        messages = store.messages(info.id)
        assert [m.role for m in messages[:2]] == ["assistant", "user"]
        assert messages[1].text == "Tell me everything."
        assert len(messages) == 3  # the partial reply was kept...
        reply = messages[2]
        assert reply.current.stats.stopped and reply.text  # ...marked stopped, with the text saved so far
        routing = store.routing(reply.current.id)
        assert routing is not None and routing.n_tokens > 20
        # never torn: every stored token offset points inside the saved text, in order
        assert (routing.offsets >= 0).all() and (routing.offsets <= len(reply.text)).all()
        assert (routing.offsets[1:] >= routing.offsets[:-1]).all()
