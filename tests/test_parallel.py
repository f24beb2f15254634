"""Several streams in one llama.cpp context (continuous batching), on real llama.cpp with tiny float32 MoEs.

The reference for every sequence is its solo run on an engine with one sequence (today's behaviour). How rows
of the captured router logits map to (sequence, position) is checked against what llama.cpp itself computed
in the same decode calls: its token embeddings (node `embd`, batch order) and its top-k (`ffn_moe_topk`).
The decoding thread is held at chosen points with Engine.watch's on_call, never with sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from moechat.engine.batch_layout import BatchLayout, rows_by_layer
from moechat.engine.capture import Captured
from moechat.engine.engine import Engine
from moechat.engine.types import Occupancy, Sampling, Token, Waiting
from moechat.errors import EngineError
from moechat.gguf.info import open_reader, token_embedding

PROMPTS = {
    "long": "Once upon a time, the old sailor said: hello there!",
    "short": "hi",
    "late": "The lighthouse keeper climbed the stairs, counted the ships and wrote it all down. " * 3,
    "cancelled": "The capital of France is",
}
MAX = {"long": 60, "short": 12, "late": 40, "cancelled": 60}
CANCEL_AFTER = 8


def greedy(n: int) -> Sampling:
    return Sampling(temperature=0, max_tokens=n)


def read(tokens: list[Token]) -> list[Token]:
    """The tokens the model read (they have routing): the prompt and every generated token but an end one."""
    return [t for t in tokens if t.routing is not None]


def probs(tokens: list[Token]) -> np.ndarray:
    return np.stack([t.routing.probs for t in read(tokens)])


def solo_runs(path: Path, runs: dict[str, tuple[str, Sampling]]) -> dict[str, list[Token]]:
    """Each prompt alone on a one-sequence engine, from an empty cache."""
    out = {}
    with Engine.load(path, n_ctx=512, exact=True) as solo:
        for name, (text, sampling) in runs.items():
            solo.clear()
            out[name] = list(solo.stream(solo.tokenize(text), sampling))
    return out


def in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.mark.parametrize("shape", ["moe2", "moe8"])
def test_a_sequence_among_others_matches_its_solo_run(tiny_models: dict[str, Path], shape: str) -> None:
    # four streams: "long" and "short" and "cancelled" start together, "short" ends early, "late" joins
    # while the others generate (its prompt read in chunks between their tokens), "cancelled" is stopped
    # after CANCEL_AFTER tokens. Each must equal its solo run: greedy ids exactly, routing within 1e-5, and
    # the experts reported for every token must be the set llama.cpp's own ffn_moe_topk chose for it.
    path = tiny_models[shape]
    results: dict[str, list[Token]] = {}
    cancel = threading.Event()
    late_may_join = threading.Event()

    def on_call(layout: BatchLayout, captured: list[Captured]) -> None:
        if len(calls) == 1:  # after the first call, until the first three have all arrived
            wait_until(lambda: eng.occupancy().busy + eng.occupancy().waiting == 3, "the first three streams")
        if len(set(layout.seqs)) >= 3 and not late_may_join.is_set():  # the first three run together
            late_may_join.set()
            wait_until(lambda: eng.occupancy().waiting == 1, "the late stream to wait")

    def run(name: str, flag: threading.Event | None = None) -> None:
        results[name] = []
        for tok in eng.stream(eng.tokenize(PROMPTS[name]), greedy(MAX[name]), flag):
            results[name].append(tok)
            if flag is not None and sum(not t.prompt for t in results[name]) == CANCEL_AFTER:
                flag.set()

    def late() -> None:
        late_may_join.wait(30)
        run("late")

    with Engine.load(path, n_ctx=512, exact=True, n_parallel=4) as eng:
        with eng.watch(["ffn_moe_topk"], on_call) as calls:
            threads = [in_thread(lambda: run("long")), in_thread(lambda: run("short"))]
            threads += [in_thread(lambda: run("cancelled", cancel)), in_thread(late)]
            for thread in threads:
                thread.join(60)
        last_layer = eng.info.n_layers - 1
    assert set(results) == set(PROMPTS)

    # they really ran together: three sequences in one call, and the late prompt read beside generated tokens
    assert max(len(set(layout.seqs)) for layout, _ in calls) >= 3
    assert any(
        len(layout) - len(set(layout.seqs)) > 1 and layout.seqs.count(layout.seqs[0]) == 1 for layout, _ in calls
    )

    solo = solo_runs(path, {name: (PROMPTS[name], greedy(MAX[name])) for name in PROMPTS})
    for name in ("long", "short", "late"):
        assert [t.id for t in results[name]] == [t.id for t in solo[name]], name
        assert np.abs(probs(results[name]) - probs(solo[name])).max() <= 1e-5, name
    stopped = results["cancelled"]
    generated = [t for t in stopped if not t.prompt]
    assert len(generated) == CANCEL_AFTER + 1 and generated[-1].finish == "cancelled"
    assert [t.id for t in stopped[:-1]] == [t.id for t in solo["cancelled"][: len(stopped) - 1]]
    assert np.abs(probs(stopped) - probs(solo["cancelled"])[: len(read(stopped))]).max() <= 1e-5

    # llama.cpp's own top-k per (sequence, position), from the same calls, matched to each stream by its tokens
    topk: dict[tuple[int, int], tuple[int, list[np.ndarray | None]]] = {}
    for layout, captured in calls:
        records = [(c.kind, c.layer, c.values) for c in captured]
        by_layer = rows_by_layer(layout, "ffn_moe_topk", records, last_layer)
        assert sorted(by_layer) == list(range(last_layer + 1))
        row_of = [
            dict(zip(index.tolist(), rows, strict=True)) for index, rows in (by_layer[i] for i in sorted(by_layer))
        ]
        for i, (seq, pos, tok) in enumerate(zip(layout.seqs, layout.positions, layout.tokens, strict=True)):
            assert (seq, pos) not in topk or topk[(seq, pos)][0] == tok  # no slot was reused in this test
            topk[(seq, pos)] = (tok, [rows.get(i) for rows in row_of])
    for name, tokens in results.items():
        seq = next(s for s in range(4) if all(topk.get((s, t.pos), (None,))[0] == t.id for t in read(tokens)))
        for t in read(tokens):
            for layer, rows in enumerate(topk[(seq, t.pos)][1]):
                if rows is None:  # the last layer of a prompt token without outputs: no routing either
                    assert (t.routing.experts[layer] == -1).all()
                    continue
                assert sorted(rows) == sorted(t.routing.experts[layer]), (name, t.pos, layer)


def test_rows_come_back_in_batch_order(tiny_moe_path: Path) -> None:
    # what llama.cpp actually did: the token embeddings it looked up (node "embd"), row by row, are those of the
    # batch's tokens in batch order, in one micro-batch per call, while three streams are batched together
    tokens: dict[str, list[Token]] = {}

    def on_call(layout: BatchLayout, captured: list[Captured]) -> None:
        if len(calls) == 1:  # after the first call, until all three have arrived
            wait_until(lambda: eng.occupancy().busy + eng.occupancy().waiting == 3, "the three streams")

    with Engine.load(tiny_moe_path, n_ctx=256, n_parallel=3) as eng, eng.watch(["embd"], on_call) as calls:
        threads = [
            in_thread(lambda n=name: tokens.setdefault(n, list(eng.stream(eng.tokenize(PROMPTS[n]), greedy(16)))))
            for name in ("long", "short", "cancelled")
        ]
        for thread in threads:
            thread.join(60)
    assert len(tokens) == 3
    reader = open_reader(tiny_moe_path)
    table = {tok: token_embedding(reader, tok) for layout, _ in calls for tok in layout.tokens}
    assert max(len(set(layout.seqs)) for layout, _ in calls) == 3
    for layout, captured in calls:
        embd = [c.values for c in captured if c.kind == "embd"]
        assert len(embd) == 1  # one micro-batch
        assert np.array_equal(embd[0], np.stack([table[tok] for tok in layout.tokens]))


def test_rows_by_layer_places_the_last_layers_rows_on_output_tokens() -> None:
    layout = BatchLayout()
    layout.add(2, 7, [11], [True])  # a generating sequence
    layout.add(0, 0, [1, 5, 6], [False, False, True])  # a prompt, logits for its last token only
    rows = np.arange(4, dtype=np.float32)[:, None]
    placed = rows_by_layer(layout, "k", [("k", 0, rows), ("other", 0, rows), ("k", 1, rows[:2])], last_layer=1)
    assert list(placed[0][0]) == [0, 1, 2, 3]
    assert list(placed[1][0]) == [0, 3] and list(placed[1][1][:, 0]) == [0, 1]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([("k", 0, np.zeros((2, 1))), ("k", 0, np.zeros((2, 1)))], "more than once"),  # two micro-batches
        ([("k", 0, np.zeros((3, 1)))], "3 rows for 4 tokens"),
        ([("k", 1, np.zeros((4, 1)))], "4 rows for 1 tokens"),
    ],
)
def test_rows_by_layer_refuses_what_it_cannot_place(records: list, message: str) -> None:
    layout = BatchLayout()
    layout.add(0, 0, [1, 2, 3, 4], [False, False, False, True])
    with pytest.raises(EngineError, match=message):
        rows_by_layer(layout, "k", records, last_layer=1)


@pytest.fixture
def held() -> Iterator[tuple[threading.Event, Callable[[BatchLayout, list[Captured]], None]]]:
    """(release, on_call): decoding stops after its first call until `release` is set."""
    release = threading.Event()

    def on_call(layout: BatchLayout, captured: list[Captured]) -> None:
        assert release.wait(60), "never released"

    yield release, on_call
    release.set()


def test_a_caller_beyond_the_slots_waits_and_hears_its_place(tiny_moe_path: Path, held) -> None:
    release, on_call = held
    first: list[Token] = []
    second: list[Token | Waiting] = []
    with Engine.load(tiny_moe_path, n_ctx=256, n_parallel=1) as eng, eng.watch(on_call=on_call):
        runner = in_thread(lambda: first.extend(eng.stream(eng.tokenize(PROMPTS["long"]), greedy(10))))
        wait_until(lambda: eng.occupancy() == Occupancy(1, 1, 0), "the first stream to run")
        waiter = in_thread(lambda: second.extend(eng.stream_waiting(eng.tokenize(PROMPTS["short"]), greedy(5))))
        wait_until(lambda: eng.occupancy() == Occupancy(1, 1, 1), "the second stream to wait")
        wait_until(lambda: len(second) > 0, "its place")
        assert second[0] == Waiting(1)
        release.set()
        runner.join(30)
        waiter.join(30)
        assert eng.occupancy() == Occupancy(1, 0, 0)
    assert first[-1].finish == "length"
    tokens = [t for t in second if isinstance(t, Token)]
    assert tokens[-1].finish == "length" and sum(not t.prompt for t in tokens) == 5
    assert all(isinstance(t, Waiting) for t in second[: len(second) - len(tokens)])  # places only before tokens


def test_a_waiting_caller_can_stop(tiny_moe_path: Path, held) -> None:
    release, on_call = held
    cancel = threading.Event()
    got: list[Token] = []
    with Engine.load(tiny_moe_path, n_ctx=256, n_parallel=1) as eng, eng.watch(on_call=on_call):
        runner = in_thread(lambda: list(eng.stream(eng.tokenize(PROMPTS["long"]), greedy(10))))
        wait_until(lambda: eng.occupancy().busy == 1, "the first stream to run")
        waiter = in_thread(lambda: got.extend(eng.stream(eng.tokenize(PROMPTS["short"]), greedy(5), cancel)))
        wait_until(lambda: eng.occupancy().waiting == 1, "the second stream to wait")
        cancel.set()
        waiter.join(30)
        assert [(t.id, t.finish) for t in got] == [(-1, "cancelled")]
        assert eng.occupancy().waiting == 0
        release.set()
        runner.join(30)


def test_close_fails_waiting_streams_at_once_and_lets_running_ones_finish(tiny_moe_path: Path, held) -> None:
    release, on_call = held
    first: list[Token] = []
    failed: list[BaseException] = []

    def wait_in_line() -> None:
        try:
            list(eng.stream(eng.tokenize(PROMPTS["short"]), greedy(5)))
        except EngineError as exc:
            failed.append(exc)

    eng = Engine.load(tiny_moe_path, n_ctx=256, n_parallel=1)
    with eng.watch(on_call=on_call):
        runner = in_thread(lambda: first.extend(eng.stream(eng.tokenize(PROMPTS["long"]), greedy(10))))
        wait_until(lambda: eng.occupancy().busy == 1, "the first stream to run")
        waiter = in_thread(wait_in_line)
        wait_until(lambda: eng.occupancy().waiting == 1, "the second stream to wait")
        closer = in_thread(eng.close)
        wait_until(lambda: len(failed) == 1, "the waiting stream to fail")
        assert closer.is_alive() and not first  # the running stream is still held: close waits for it
        with pytest.raises(EngineError, match="closed"):
            list(eng.stream(eng.tokenize("x"), greedy(1)))
        release.set()
        for thread in (closer, runner, waiter):
            thread.join(30)
    assert "closed" in str(failed[0])
    assert first[-1].finish == "length"
    with pytest.raises(EngineError, match="closed"):
        eng.tokenize("x")


def test_each_sequence_reuses_its_own_prefix(tiny_moe_path: Path) -> None:
    # two chats take turns on two sequences: every follow-up reads only its new tokens, whatever ran between
    with Engine.load(tiny_moe_path, n_ctx=512, exact=True, n_parallel=2) as eng:
        history = {name: eng.tokenize(PROMPTS[name]) for name in ("long", "cancelled")}
        for turn in range(3):
            replies: dict[str, list[Token]] = {}
            threads = [
                in_thread(lambda n=name, out=replies: out.setdefault(n, list(eng.stream(history[n], greedy(8)))))
                for name in history
            ]
            for thread in threads:
                thread.join(60)
            for name, tokens in replies.items():
                evaluated = [t for t in tokens if t.prompt and not t.cached]
                assert len(evaluated) == (len(history[name]) if turn == 0 else 4), (name, turn)
                history[name] = [t.id for t in tokens] + eng.tokenize(" and?", add_bos=False)[:4]


def test_seeded_sampling_is_per_sequence(tiny_moe_path: Path) -> None:
    # each stream has its own sampler chain and seed: sampled together, each gives its solo text
    runs = {
        name: (PROMPTS[name], Sampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed, max_tokens=20))
        for name, seed in (("long", 1), ("short", 2), ("cancelled", 3))
    }
    together: dict[str, list[Token]] = {}
    with Engine.load(tiny_moe_path, n_ctx=512, exact=True, n_parallel=3) as eng:
        threads = [
            in_thread(lambda n=name, r=run: together.setdefault(n, list(eng.stream(eng.tokenize(r[0]), r[1]))))
            for name, run in runs.items()
        ]
        for thread in threads:
            thread.join(60)
    solo = solo_runs(tiny_moe_path, runs)
    for name in runs:
        assert [t.id for t in together[name]] == [t.id for t in solo[name]], name


def test_parallel_count_is_checked(tiny_moe_path: Path) -> None:
    with pytest.raises(EngineError, match=r"n_parallel must be 1\.\.64"):
        Engine.load(tiny_moe_path, n_ctx=256, n_parallel=0)


LONG_START = "The harbour master kept a ledger of every ship, every storm and every sailor who came ashore. " * 4


def test_n_choices_read_their_prompt_once_and_each_is_its_seeds_answer(tiny_moe_path: Path) -> None:
    # Engine.streams queues every choice at once: they run side by side, the later ones take the prompt's
    # cache from the first (read once), and each is what its seed gives alone
    samplings = [Sampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7 + i, max_tokens=16) for i in range(3)]
    cancel = threading.Event()
    with Engine.load(tiny_moe_path, n_ctx=512, exact=True, n_parallel=3) as eng:
        ids = eng.tokenize(LONG_START)
        with eng.watch() as calls:
            streams = eng.streams(ids, samplings, cancel)
            together = [list(stream) for stream in streams]
    read = [(seq, pos) for layout, _ in calls for seq, pos in zip(layout.seqs, layout.positions, strict=True)]
    assert sum(pos < len(ids) - 1 for _, pos in read) == len(ids) - 1  # the shared start, read by one stream
    assert sum(pos == len(ids) - 1 for _, pos in read) == 3  # each reads the last prompt token itself
    assert max(len(set(layout.seqs)) for layout, _ in calls) == 3  # they generated side by side
    for tokens in together[1:]:
        assert all(t.cached for t in tokens if t.prompt and t.pos < len(ids) - 1)
    alone = solo_runs(tiny_moe_path, {str(i): (LONG_START, s) for i, s in enumerate(samplings)})
    for i, tokens in enumerate(together):
        assert [t.id for t in tokens] == [t.id for t in alone[str(i)]], i
        assert np.abs(probs(tokens) - probs(alone[str(i)])).max() <= 1e-5
    assert len({tuple(t.id for t in tokens) for tokens in together}) == 3


def test_a_stream_takes_a_start_another_sequence_has_cached(tiny_moe_path: Path) -> None:
    # a visitor with the same character as one still generating: the shared start is not read again
    first_done_reading = threading.Event()

    def on_call(layout: BatchLayout, captured: list[Captured]) -> None:
        if not first_done_reading.is_set() and max(eng.cached_tokens()) >= len(first_ids):
            first_done_reading.set()
            wait_until(lambda: eng.occupancy().waiting == 1, "the second stream to wait")

    second: list[Token] = []
    with Engine.load(tiny_moe_path, n_ctx=512, exact=True, n_parallel=2) as eng:
        first_ids = eng.tokenize(LONG_START + "Who came first?")
        second_ids = eng.tokenize(LONG_START + "And who came last, after the storm?")
        with eng.watch(on_call=on_call):
            runner = in_thread(lambda: list(eng.stream(first_ids, greedy(60))))
            first_done_reading.wait(30)
            second = list(eng.stream(second_ids, greedy(8)))
            runner.join(30)
    shared = next(i for i, (a, b) in enumerate(zip(first_ids, second_ids, strict=False)) if a != b)
    assert [t.pos for t in second if t.prompt and not t.cached] == list(range(shared, len(second_ids)))
    alone = solo_runs(tiny_moe_path, {"second": (LONG_START + "And who came last, after the storm?", greedy(8))})
    assert [t.id for t in second] == [t.id for t in alone["second"]]
    assert np.abs(probs(second) - probs(alone["second"])).max() <= 1e-5
