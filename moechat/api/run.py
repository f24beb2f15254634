"""Running the engine for one request: its n choices, streamed or collected, cancelled when the client leaves.

`Choices` runs the n > 1 choices of a request, seeded seed, seed+1, ...: all are queued at once, so an engine
with free sequences (`--parallel`) runs them side by side, the later ones sharing the prompt's cache with the
first (one sequence: one after another, each exactly what a request with that seed and n = 1 gives; side by
side: that up to the rounding of shared steps). `next()` still hands them over choice by choice. Each family
of routes renders the (choice, Token) pairs in its own shape: a whole answer (`collect`) or a stream (`events`
rendered into an `EngineStream`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field, replace

import anyio
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from moechat.api.access import Access
from moechat.api.samplers import Settings, choice_seeds
from moechat.api.schema import ApiError
from moechat.engine.engine import Engine
from moechat.engine.types import Logprobs, Token

DISCONNECT_POLL_S = 0.1
Event = tuple[int, Token]  # (choice index, token)
Prepare = Callable[[Engine], tuple[list[int], Settings]]  # the prompt's token ids and what to generate


@dataclass
class Outcome:
    """One choice as it ends: its text, the engine's finish, the generated tokens that count, and the
    last record (an id of -1: an end marker, no token)."""

    index: int
    text: str = ""
    finish: str = "stop"
    tokens: list[Token] = field(default_factory=list)
    last: Token | None = None

    def logprobs(self) -> list[tuple[int, Logprobs]]:
        return [(t.id, t.logprobs) for t in self.tokens if t.logprobs is not None]


def counted(tok: Token) -> bool:
    """A generated token the client is told about (the end-of-sequence token and end markers are not)."""
    return tok.id >= 0 and tok.finish != "eos"


class Choices:
    """The n choices of one prompt, pulled token by token (blocking: call from a worker thread)."""

    def __init__(self, engine: Engine, ids: list[int], settings: Settings, draw: int, release: Callable[[], None]):
        seeds = choice_seeds(settings.sampling.seed, settings.n, draw)
        self.cancel, self._release = threading.Event(), release
        self.engine, self._ids = engine, ids
        self._samplings = [replace(settings.sampling, seed=seed) for seed in seeds]
        self._streams: Iterator[Generator[Token, None, None]] = iter(
            engine.streams(ids, self._samplings, self.cancel)
            if len(self._samplings) > 1
            else [engine.stream(ids, self._samplings[0], self.cancel)]
        )
        self._stream: Generator[Token, None, None] | None = None
        self.index = -1
        self.prompt_tokens, self.cached_tokens = len(ids), 0
        self.outcomes = [Outcome(i) for i in range(settings.n)]

    @property
    def completion_tokens(self) -> int:
        return sum(len(o.tokens) for o in self.outcomes)

    def next(self) -> Event | None:
        """The next generated token of the current choice (prompt tokens skipped), or None after the last."""
        while True:
            if self._stream is None:
                if self.index + 1 >= len(self._samplings) or self.cancel.is_set():
                    return None
                self._stream, self.index = next(self._streams), self.index + 1
            for tok in self._stream:
                if tok.prompt:
                    if tok.cached and self.index == 0:
                        self.cached_tokens += 1
                    continue
                out = self.outcomes[self.index]
                out.text += tok.text
                if counted(tok):
                    out.tokens.append(tok)
                if tok.finish:
                    out.finish, out.last = tok.finish, tok
                    self._end_stream()
                return self.index, tok
            self._end_stream()

    def _end_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()  # frees its sequence of the engine at once
            self._stream = None

    def close(self) -> None:
        """Stop generating, free the stream's sequence (the stream is abandoned), then the engine itself."""
        self.cancel.set()
        try:
            self._end_stream()
        finally:
            release, self._release = self._release, _nothing
            release()

    def drain(self, first: Event | None) -> list[Outcome]:
        """Every choice to its end (blocking), for a whole answer."""
        event = first
        while event is not None:
            event = self.next()
        return self.outcomes


async def begin(
    access: Access, prepare: Prepare, *, param: str, client_ctx: int | None = None
) -> tuple[Choices, Event | None]:
    """Hold the engine, build the prompt, check it fits, wait for a free sequence and read the prompt up to
    the first generated token: every error surfaces before an answer starts."""
    engine, release = access.hold()
    try:
        ids, settings = prepare(engine)
        check_context(engine, len(ids), param, client_ctx)
        choices = Choices(engine, ids, settings, random.getrandbits(31), release)
    except BaseException:
        release()
        raise
    try:
        return choices, await anyio.to_thread.run_sync(choices.next)
    except BaseException:
        choices.close()
        raise


def check_context(engine: Engine, n_prompt: int, param: str, client_ctx: int | None) -> None:
    """400 when the prompt leaves no room to generate, saying which SillyTavern setting to lower."""
    if n_prompt + 1 <= engine.n_ctx:
        return
    sent = f" (it sent {client_ctx})" if client_ctx and client_ctx > engine.n_ctx else ""
    raise ApiError(
        400,
        f"the prompt has {n_prompt} tokens but the model's context holds {engine.n_ctx} (prompt and reply together); "
        f"shorten it: in SillyTavern set 'Context (tokens)' (Text Completion) or 'Context Size (tokens)' "
        f"(Chat Completion) to {engine.n_ctx} or less{sent}",
        param=param,
        code="context_length_exceeded",
    )


async def collect(
    request: Request, choices: Choices, first: Event | None, render: Callable[[list[Outcome]], Response]
) -> Response:
    """A whole answer, generation stopped if the client leaves first."""
    try:
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(_cancel_on_disconnect, request, choices.cancel)
            outcomes = await anyio.to_thread.run_sync(choices.drain, first)
            watchers.cancel_scope.cancel()
        return render(outcomes)
    finally:
        choices.close()


async def events(choices: Choices, first: Event | None) -> AsyncIterator[Event]:
    """The (choice, token) pairs as they come; an engine failure propagates to the renderer."""
    event = first
    while event is not None:
        yield event
        event = await anyio.to_thread.run_sync(choices.next)


class EngineStream(StreamingResponse):
    """A stream of events that always releases the engine when it ends, also when the client leaves."""

    def __init__(self, body: AsyncIterator[str], choices: Choices, media_type: str = "text/event-stream") -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(body, media_type=media_type, headers=headers)
        self._choices = choices

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._choices.close)


def text_ids(engine: Engine, prompt: str, add_bos: bool = True) -> list[int]:
    """A text prompt's tokens (special tokens parsed) with one BOS: a prompt that starts with the BOS text
    does not get two; `add_bos` False (SillyTavern's "Add BOS token" off) gives none but the prompt's own."""
    ids = engine.tokenize(prompt, add_bos=add_bos, special=True)
    bos = engine.info.bos_id
    return ids[1:] if bos is not None and len(ids) > 1 and ids[0] == ids[1] == bos else ids


def sse(data: str) -> str:
    return f"data: {data}\n\n"


async def _cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    """Stop generating an answer nobody waits for (a client that gave up or pressed stop)."""
    while not await request.is_disconnected():
        await anyio.sleep(DISCONNECT_POLL_S)
    cancel.set()


def _nothing() -> None:
    pass
