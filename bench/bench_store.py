"""Chat store benchmark: open chats of 50..500 messages (with routing blobs stored) and list 1,000 chats.

Prints one table; ratios are measured side by side in this run. Opening a chat reads messages and
swipes only (no routing blobs), so its time should grow linearly with the message count.
Run from the repo root: python -m bench.bench_store (or PYTHONPATH=. python bench/bench_store.py)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from moechat.store.records import GenStats, RoutingRecord
from moechat.store.store import Store

SIZES = (50, 100, 200, 500)
N_CHATS = 1000
REPEATS = 5


def routing(n_tokens: int) -> RoutingRecord:
    probs = np.full((n_tokens, 24, 8), 0.125, np.float32)
    return RoutingRecord(probs, np.zeros((n_tokens, 24, 2), np.int8), np.arange(n_tokens), np.arange(n_tokens))


def fill_chat(store: Store, character_id: int, n_messages: int) -> int:
    chat = store.create_chat(character_id, title=f"{n_messages} messages")
    for i in range(n_messages // 2):
        store.add_message(chat.id, "user", f"question {i} " * 10, name="You")
        store.add_reply(chat.id, f"answer {i} " * 30, name="Sera", stats=GenStats(model="m"), routing=routing(60))
    return chat.id


def best_of(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp)) as store:
        character = store.add_character("Sera", {"data": {"name": "Sera"}})
        chats = {n: fill_chat(store, character.id, n) for n in SIZES}
        for i in range(N_CHATS - len(SIZES)):
            store.create_chat(character.id, title=f"chat {i}", greetings=["Hello."])
        opened = {n: best_of(lambda n=n: store.messages(chats[n])) for n in SIZES}
        t_base = opened[SIZES[0]]
        print(f"{'operation':<34} {'ms':>9} {'x vs 50 msgs':>13} {'ms/message':>11}")
        for n, t in opened.items():
            print(f"{f'open chat, {n} messages':<34} {t * 1e3:>9.2f} {t / t_base:>13.2f} {t * 1e3 / n:>11.4f}")
        t_list = best_of(store.chats)
        listed = len(store.chats())
        print(f"{f'list {listed} chats':<34} {t_list * 1e3:>9.2f} {'':>13} {'':>11}")
        t_routing = best_of(lambda: [store.routing(m.current.id) for m in store.messages(chats[500])[1::2]], 1)
        print(f"{'load routing of 250 replies':<34} {t_routing * 1e3:>9.2f} {'':>13} {'':>11}")
        print(f"(message ratio 500/50 = {500 / 50:.0f}; time ratio above should be close to it or below)")


if __name__ == "__main__":
    main()
