"""One stream's request to the scheduler, and the caller's side of it: records in, Token records out.

The scheduler's thread works in tokens and router logits; it puts small records on the job's queue and
never waits for the caller. The caller's generator (`tokens`) turns them into the engine's Token records:
text released through its own TextReleaser (stop strings held back, split characters joined), routing
computed from the logits, and the caller's cancel flag checked before every generated token, so a Stop
between two tokens always ends the stream with the "cancelled" marker, however far the scheduler got.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from moechat.engine.sampler import Picker
from moechat.engine.text_release import TextReleaser
from moechat.engine.types import Logprobs, Sampling, Token, Waiting
from moechat.errors import EngineError
from moechat.routing.metrics import Routing, from_logits

POLL_S = 0.1  # how often a waiting caller looks at its cancel flag
WAIT_REPORT_S = 1.0  # a caller waiting this long hears its place, then at each change and at least this often


@dataclass(frozen=True, slots=True)
class PromptRead:
    """The whole prompt is in the sequence's cache: `reused` tokens were cached before; piece and routing per
    position (the caller never calls into the model: it may be closed once the scheduler is done)."""

    reused: int
    pieces: list[bytes]
    logits: np.ndarray | None  # float32 [prompt tokens, layers, experts]; None without routing


@dataclass(frozen=True, slots=True)
class Produced:
    """A generated token; `logits` its routing when it was read back (None for end-of-generation). An id of
    -1 with finish "stop": no token was allowed any more (e.g. a finished grammar with EOS banned)."""

    pos: int
    id: int
    piece: bytes
    logits: np.ndarray | None  # float32 [layers, experts]
    finish: str | None  # None, "eos", "length" or "stop"
    logprobs: Logprobs | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    """The scheduler stopped the job early: cancelled (error None), or llama.cpp failed."""

    error: EngineError | None = None


Record = PromptRead | Produced | Ended


class Job:
    """A request and its progress. The caller reads records; the scheduler writes them (see scheduler.py)."""

    def __init__(self, prompt: list[int], sampling: Sampling, cancel: threading.Event | None, picker: Picker) -> None:
        self.prompt, self.sampling, self.cancel = prompt, sampling, cancel
        self.picker = picker  # the scheduler picks with it and closes it when the job leaves
        self.records: queue.SimpleQueue[Record] = queue.SimpleQueue()
        self.abandoned = threading.Event()  # the caller left: the scheduler frees the slot at its next step
        self.place: Callable[[], int] = lambda: 0  # set by the scheduler: requests ahead + 1 while waiting

    def stopped(self) -> bool:
        return self.abandoned.is_set() or (self.cancel is not None and self.cancel.is_set())

    def put(self, record: Record) -> None:
        self.records.put(record)

    def get(self, timeout: float) -> Record | None:
        try:
            return self.records.get(timeout=timeout)
        except queue.Empty:
            return None


def tokens(
    job: Job, routing: Callable[[np.ndarray], Routing] | None, report_waiting: bool = False
) -> Iterator[Token | Waiting]:
    """The job's Token records (and Waiting records while it waits, when asked), as Engine.stream promises."""
    text = TextReleaser(job.sampling.stop)
    pos = len(job.prompt)
    shown_place, shown_at = 0, time.monotonic()
    while True:
        record = job.get(POLL_S)
        if record is None:
            if job.cancel is not None and job.cancel.is_set():
                yield Token(pos, -1, text.flush(), b"", None, finish="cancelled")
                return
            place = job.place() if report_waiting else 0
            now = time.monotonic()
            if place and ((shown_place and place != shown_place) or now - shown_at >= WAIT_REPORT_S):
                shown_place, shown_at = place, now
                yield Waiting(place)
            continue
        if isinstance(record, Ended):
            if record.error is not None:
                raise record.error
            yield Token(pos, -1, text.flush(), b"", None, finish="cancelled")
            return
        if isinstance(record, PromptRead):
            yield from _prompt_tokens(job.prompt, record, routing)
            continue
        if job.cancel is not None and job.cancel.is_set():  # checked between tokens, as a lone stream does
            yield Token(record.pos, -1, text.flush(), b"", None, finish="cancelled")
            return
        pos = record.pos + 1
        yield _generated(record, text, routing)
        if record.finish is not None:
            return


def _generated(record: Produced, text: TextReleaser, routing: Callable[[np.ndarray], Routing] | None) -> Token:
    if record.id < 0:
        return Token(record.pos, -1, text.flush(), b"", None, finish=record.finish)
    if record.finish == "eos":
        return Token(record.pos, record.id, text.flush(), record.piece, None, finish="eos", logprobs=record.logprobs)
    released, _ = text.feed(record.piece)  # the scheduler stops at the same stop string (its own releaser)
    if record.finish == "length":
        released += text.flush()
    routed = routing(record.logits) if routing is not None and record.logits is not None else None
    return Token(record.pos, record.id, released, record.piece, routed, finish=record.finish, logprobs=record.logprobs)


def _prompt_tokens(
    prompt: list[int], read: PromptRead, routing: Callable[[np.ndarray], Routing] | None
) -> Iterator[Token]:
    text = TextReleaser(())
    last = len(prompt) - 1
    for pos, (tok, chunk) in enumerate(zip(prompt, read.pieces, strict=True)):
        released = text.feed(chunk)[0] + (text.flush() if pos == last else "")
        routed = routing(read.logits[pos]) if routing is not None and read.logits is not None else None
        yield Token(pos, tok, released, chunk, routed, prompt=True, cached=pos < read.reused)


def router_routing(k: int) -> Callable[[np.ndarray], Routing]:
    """Router logits [layers, experts] -> Routing (top-k of softmax); unobserved layers get experts -1."""

    def routing(logits: np.ndarray) -> Routing:
        probs, experts = from_logits(logits, k)
        experts[np.isnan(probs[:, 0])] = -1
        return Routing(probs, experts)

    return routing
