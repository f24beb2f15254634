"""UI streaming benchmark, measured side by side in one run on a generated 2-expert model.

1. tokens/s the UI layer delivers (ChatUI.regenerate: chat.py turn + folding into component values, at the real
   refresh cadence) vs the engine's own rate for the same greedy reply (target >= 0.95x). Both are timed from the
   first generated token to the last one (the UI: from the first refresh showing a token to the refresh showing
   the last), alternating engine and UI runs and taking the median. In-process: what Gradio is handed.
2. per-token UI cost (folding one Update into every live view, cadence off: a refresh per token) with 10 vs 200
   messages in the chat (target: no growth, ratio <= 1.10).

    python bench/bench_ui.py [--tokens 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from moechat import chat
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.gguf.tiny import TinySpec, write_tiny_gguf
from moechat.library import import_bundled
from moechat.models.slot import ModelSlot
from moechat.store.store import Store
from moechat.ui import chat as ui_chat
from moechat.ui.session import Session, StopFlags, Stores

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
    ui = ui_chat.ChatUI(ModelSlot(engine), Stores(store), StopFlags(), root / "data")
    session = Session(character_id=store.characters()[0].id)
    return ui, store, session


def engine_rate(ui: ui_chat.ChatUI, store: Store, chat_id: int, n: int) -> float:
    options = chat.TurnOptions(sampling=Sampling(temperature=0, max_tokens=n))
    before_last_reply = store.messages(chat_id)[:-1]  # what regenerate prompts with
    p = chat.prompt_for(ui.engine, store, chat_id, options, "reply", before_last_reply)
    first, count = None, 0
    for tok in ui.engine.stream(ui.engine.tokenize(p.text), options.sampling):
        if not tok.prompt:
            first = first or time.perf_counter()
            count += 1
    return (count - 1) / (time.perf_counter() - first)


def ui_rate(ui: ui_chat.ChatUI, session: Session, n: int) -> float:
    """Tokens per second between the first refresh that shows a token and the refresh showing the last one."""
    seen: list[tuple[float, int]] = []
    fold = ui._fold

    def timed_fold(*args, **kwargs):
        for upd, values in fold(*args, **kwargs):
            yield upd, values
            seen.append((time.perf_counter(), len(upd.token_texts)))  # after Gradio got the values

    ui._fold = timed_fold  # type: ignore[method-assign]
    try:
        for _values in ui.regenerate(session, "Greedy (repeatable)", n, -1, "auto", "You", ""):
            pass
    finally:
        del ui._fold
    (t0, n0), (t1, n1) = seen[0], seen[-1]
    return (n1 - n0) / (t1 - t0)


def chat_rate(ui: ui_chat.ChatUI, session: Session, n: int) -> float:
    """chat.py alone (prompt, store writes, Updates) for the same reply: where the engine-to-UI gap is not the UI's."""
    options = chat.TurnOptions(sampling=Sampling(temperature=0, max_tokens=n))
    seen = [
        (time.perf_counter(), len(u.token_texts))
        for u in chat.regenerate(ui.engine, ui.stores.get(session.owner), session.chat_id, options)
    ]
    (t0, n0), (t1, n1) = seen[0], seen[-1]
    return (n1 - n0) / (t1 - t0)


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
    cadence = ui_chat.LIVE_EVERY_S, ui_chat.FIGURES_EVERY_S
    ui_chat.LIVE_EVERY_S, ui_chat.FIGURES_EVERY_S = 0.0, 1e9  # every update, figures only at the end
    start = time.perf_counter()
    for _ in ui._fold(iter(updates), session, display):
        pass
    ui_chat.LIVE_EVERY_S, ui_chat.FIGURES_EVERY_S = cadence
    return (time.perf_counter() - start) / len(updates)


def main() -> None:
    parser = argparse.ArgumentParser(description="UI streaming benchmark")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    n = args.tokens
    with tempfile.TemporaryDirectory() as tmp:
        ui, store, session = setup(Path(tmp))
        session.chat_id = chat.start_chat(store, session.character_id)
        list(ui.send(session, "hello there", "Greedy (repeatable)", 8, -1, "auto", "You", ""))  # warm the cache
        runs = [
            (engine_rate(ui, store, session.chat_id, n), chat_rate(ui, session, n), ui_rate(ui, session, n))
            for _ in range(args.repeats)
        ]
        costs = [
            (per_token_cost(ui, store, session, 10, n), per_token_cost(ui, store, session, 200, n)) for _ in range(3)
        ]
    pairs = [(e, u) for e, _, u in runs]
    c_rate = statistics.median(c for _, c, _ in runs)
    cost10, cost200 = min(c for c, _ in costs), min(c for _, c in costs)  # least disturbed by other load
    e_rate = statistics.median(e for e, _ in pairs)
    u_rate = statistics.median(u for _, u in pairs)
    speed = statistics.median(u / e for e, u in pairs)
    growth = cost200 / cost10
    print(f"{'measure':<44}{'value':>12}{'ratio':>10}  target")
    print(f"{'engine tokens/s (same greedy reply)':<44}{e_rate:>12.1f}")
    print(f"{'chat.py tokens/s (no UI; prompt, store writes)':<44}{c_rate:>12.1f}{c_rate / e_rate:>10.3f}")
    print(f"{'UI-delivered tokens/s':<44}{u_rate:>12.1f}{speed:>10.3f}  >= 0.95  {_verdict(speed >= 0.95)}")
    print(f"{'UI cost per token, 10 messages (ms)':<44}{cost10 * 1e3:>12.3f}")
    print(f"{'UI cost per token, 200 messages (ms)':<44}{cost200 * 1e3:>12.3f}{growth:>10.3f}  <= 1.10  "
          f"{_verdict(growth <= 1.10)}")  # fmt: skip


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


if __name__ == "__main__":
    main()
