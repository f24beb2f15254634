"""UI streaming benchmark, measured side by side in one run on a generated 2-expert model.

1. tokens/s the UI layer delivers (ChatUI.send: chat.py turn + folding into component values) vs the engine's
   own rate for the same greedy reply (target >= 0.95x). In-process: what Gradio is handed, not browser paint.
2. per-token UI cost (folding one Update into every live view, cadence off) with 10 vs 200 messages in the chat
   (must not grow with the chat's length).

    python bench/bench_ui.py [--tokens 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from moechat import chat, ui_chat
from moechat.engine import Engine, Sampling
from moechat.gguf_info import expert_labels
from moechat.store import Store
from moechat.tiny_gguf import TinySpec, write_tiny_gguf
from moechat.ui_library import import_bundled
from moechat.ui_routing import Model
from moechat.ui_session import Session, StopFlags, Stores

SPEC = TinySpec(
    n_layers=6,
    n_embd=512,
    n_ff=1536,
    n_heads=8,
    n_kv_heads=4,
    n_ctx=4096,
    dtype="f16",
    seed=7,
    favour=324,
    expert_names=("Xwin", "Pygmalion"),
)


def setup(root: Path) -> tuple[ui_chat.ChatUI, Store, Session]:
    engine = Engine.load(write_tiny_gguf(root / "m.gguf", SPEC), n_ctx=4096, n_threads=1)
    store = Store.open(root / "data")
    import_bundled(store, root / "data")
    model = Model(expert_labels(engine.info), engine.info.n_layers, engine.info.n_experts_used)
    ui = ui_chat.ChatUI(engine, Stores(store), model, StopFlags(), root / "data")
    session = Session(character_id=store.characters()[0].id)
    return ui, store, session


def engine_rate(ui: ui_chat.ChatUI, store: Store, chat_id: int, n: int) -> float:
    options = chat.TurnOptions(sampling=Sampling(temperature=0, max_tokens=n))
    p = chat.prompt_for(ui.engine, store, chat_id, options, "reply", store.messages(chat_id))
    first, count = None, 0
    for tok in ui.engine.stream(ui.engine.tokenize(p.text), options.sampling):
        if not tok.prompt:
            first = first or time.perf_counter()
            count += 1
    return (count - 1) / (time.perf_counter() - first)


def ui_rate(ui: ui_chat.ChatUI, session: Session, n: int) -> float:
    first = last = None
    for _values in ui.regenerate(session, "Greedy (repeatable)", n, -1, "auto", "You", ""):
        now = time.perf_counter()
        first, last = first or now, now
    return (n - 1) / (last - first)


def per_token_cost(ui: ui_chat.ChatUI, store: Store, session: Session, n_messages: int, n: int) -> float:
    session.chat_id = chat.start_chat(store, session.character_id)
    for i in range(n_messages - 1):
        store.add_message(session.chat_id, "user" if i % 2 == 0 else "assistant", f"message {i} " * 20)
    updates = list(
        chat.send(
            ui.engine, store, session.chat_id, "hello", chat.TurnOptions(sampling=Sampling(temperature=0, max_tokens=n))
        )
    )
    display = ui.display(session)
    ui_chat.LIVE_EVERY_S, ui_chat.FIGURES_EVERY_S = 0.0, 1e9  # every update, figures only at the end
    start = time.perf_counter()
    for _ in ui._fold(iter(updates), session, display):
        pass
    ui_chat.LIVE_EVERY_S, ui_chat.FIGURES_EVERY_S = 0.15, 3.0
    return (time.perf_counter() - start) / len(updates)


def main() -> None:
    parser = argparse.ArgumentParser(description="UI streaming benchmark")
    parser.add_argument("--tokens", type=int, default=200)
    n = parser.parse_args().tokens
    with tempfile.TemporaryDirectory() as tmp:
        ui, store, session = setup(Path(tmp))
        session.chat_id = chat.start_chat(store, session.character_id)
        list(ui.send(session, "hello there", "Greedy (repeatable)", 8, -1, "auto", "You", ""))  # warm the cache
        e_rate, u_rate = engine_rate(ui, store, session.chat_id, n), ui_rate(ui, session, n)
        cost10 = per_token_cost(ui, store, session, 10, n)
        cost200 = per_token_cost(ui, store, session, 200, n)
    print(f"{'measure':<44}{'value':>14}{'ratio':>10}")
    print(f"{'engine tokens/s (same greedy reply)':<44}{e_rate:>14.1f}{'':>10}")
    print(f"{'UI-delivered tokens/s':<44}{u_rate:>14.1f}{u_rate / e_rate:>10.3f}")
    print(f"{'UI cost per token, 10 messages (ms)':<44}{cost10 * 1e3:>14.3f}{'':>10}")
    print(f"{'UI cost per token, 200 messages (ms)':<44}{cost200 * 1e3:>14.3f}{cost200 / cost10:>10.3f}")


if __name__ == "__main__":
    main()
