"""OpenAI-compatible HTTP API with the router's decisions per token, mounted beside the Gradio app.

Routes (all under /v1; every route but health needs `Authorization: Bearer <key>` when a key is set):
  GET  /v1/health              {"status": "ok" | "no model", "model": id | null}
  GET  /v1/models              the loaded model (one entry; `moechat` holds layers, experts, expert names)
  POST /v1/completions         raw text in, text out (the prompt is tokenized with BOS; special tokens parsed)
  POST /v1/chat/completions    messages rendered with moechat.formats: the model's usual format (or
                               `"moechat": {"format": "chatml"}`); a last assistant message is continued;
                               roles system, developer (= system), user, assistant; text content only
Both POST routes stream server-sent events with `"stream": true` (`data: {...}` then `data: [DONE]`) and
honour max_tokens (default 256), temperature, top_p, seed (negative: random), stop (string or list),
stream_options.include_usage, and llama.cpp's top_k, min_p and repeat_penalty (alias repetition_penalty).
`n` must be 1. `model` is accepted and ignored: the loaded model answers and is named in `model`.
Requests queue on the engine's lock (with the UI's turns); a client that disconnects, streaming or not,
stops its generation. The API keeps no state: nothing a request sends is stored or shown to anyone else.

Routing extension: send `"moechat": {"routing": true}` and each choice (each streamed chunk's choice,
for the tokens it carries) has
  "moechat": {"routing": {"expert_names": [E names],
                          "tokens": [{"id": token id, "text": text this token released,
                                      "probs": [L rows of E router probabilities, 4 decimals; null if unseen],
                                      "experts": [L rows of the k chosen experts, most probable first]}]}}
one entry per generated token (the stop-string token included, end-of-sequence excluded), so
len(tokens) == usage.completion_tokens and the texts joined are the reply. A model without a router,
or one loaded without capture, answers a routing request with 400.

Errors are OpenAI error bodies, {"error": {"message", "type", "param", "code"}}: 400 for a bad request
(invalid JSON, wrong types, n != 1, a prompt longer than the context), 401 for a missing or wrong key,
404 for an unknown route, 503 when no model is loaded or the engine fails.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, ExitStack

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from moechat.api.schema import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    Generation,
    Meta,
    RoutingToken,
    Usage,
    answer,
    chunk,
    parse,
    routing_token,
    usage_chunk,
)
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling, Token
from moechat.errors import EngineError, PromptError
from moechat.gguf.info import expert_labels

log = logging.getLogger(__name__)
GetEngine = Callable[[], Engine | None]
Lease = Callable[[], AbstractContextManager[Engine | None]]
Handler = Callable[[Request], Awaitable[Response]]
Prepare = Callable[[Engine], tuple[list[int], tuple[str, ...]]]  # engine -> prompt ids, format stop strings
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}
DISCONNECT_POLL_S = 0.1


def api_key_from_env() -> str | None:
    """MOECHAT_API_KEY, or None (no key needed) when it is unset or empty."""
    return os.environ.get("MOECHAT_API_KEY") or None


def api_router(get_engine: GetEngine, *, api_key: str | None = None, lease: Lease | None = None) -> APIRouter:
    """The /v1 routes serving whatever engine `get_engine()` returns at each request (None: no model).

    `lease` (e.g. ModelSlot.use) holds the engine open from prompt to last token, so a model switch waits
    for answers in flight. Include the router in the FastAPI app before mounting Gradio at "/"."""
    api = _Api(get_engine, api_key, lease)
    router = APIRouter(prefix="/v1")
    router.add_api_route("/health", api.health, methods=["GET"])
    router.add_api_route("/models", api.guard(api.models), methods=["GET"])
    router.add_api_route("/completions", api.guard(api.completions), methods=["POST"])
    router.add_api_route("/chat/completions", api.guard(api.chat), methods=["POST"])
    router.add_api_route("/{rest:path}", api.guard(api.unknown), methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    return router


class _Api:
    def __init__(self, get_engine: GetEngine, api_key: str | None, lease: Lease | None) -> None:
        self._get_engine, self._key, self._lease = get_engine, api_key, lease

    def guard(self, handler: Handler) -> Handler:
        """Check the key, run the handler, and turn errors into OpenAI error bodies."""

        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            try:
                self._authorize(request)
                return await handler(request)
            except ApiError as exc:
                return _error(exc)
            except PromptError as exc:
                return _error(ApiError(400, str(exc)))
            except EngineError as exc:
                return _error(ApiError(503, str(exc), type="server_error", code="engine_error"))
            except Exception as exc:  # a bug: still an OpenAI error body, with the traceback in the log
                log.exception("API request %s %s failed", request.method, request.url.path)
                return _error(ApiError(500, f"internal error: {exc}", type="server_error"))

        return guarded

    def _authorize(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        if not hmac.compare_digest(given.strip().encode(), self._key.encode()):
            raise ApiError(401, "invalid API key", code="invalid_api_key")

    def _engine(self) -> Engine:
        engine = self._get_engine()
        if engine is None:
            raise ApiError(503, "no model is loaded yet; try again shortly", type="server_error", code="no_model")
        return engine

    async def health(self, request: Request) -> Response:
        try:
            engine = self._get_engine()
        except EngineError:
            engine = None
        return JSONResponse({"status": "ok" if engine else "no model", "model": _model_id(engine) if engine else None})

    async def models(self, request: Request) -> Response:
        engine = self._engine()
        info = engine.info
        extra = {
            "n_layers": info.n_layers,
            "n_experts": info.n_experts,
            "n_experts_used": info.n_experts_used,
            "expert_names": list(expert_labels(info)),
        }
        created = int(info.path.stat().st_mtime) if info.path.exists() else 0
        entry = {"id": _model_id(engine), "object": "model", "created": created, "owned_by": "moechat"}
        return JSONResponse({"object": "list", "data": [{**entry, "moechat": extra}]})

    async def completions(self, request: Request) -> Response:
        req = parse(CompletionRequest, await _json(request))
        return await self._respond(request, req, lambda engine: (_text_ids(engine, req.prompt_text()), ()), chat=False)

    async def chat(self, request: Request) -> Response:
        req = parse(ChatRequest, await _json(request))

        def prepare(engine: Engine) -> tuple[list[int], tuple[str, ...]]:
            text, stops = req.prompt(engine.info.name, engine.info.chat_template)
            return engine.tokenize(text), stops

        return await self._respond(request, req, prepare, chat=True)

    async def unknown(self, request: Request) -> Response:
        raise ApiError(404, f"no route {request.method} {request.url.path}", code="unknown_url")

    async def _respond(self, request: Request, req: Generation, prepare: Prepare, *, chat: bool) -> Response:
        """Hold the engine, build the prompt, wait for the engine's lock and answer (streaming or not)."""
        engine, release = self._hold()
        run = None
        try:
            ids, format_stops = prepare(engine)
            _check(engine, req, ids, chat)
            names = tuple(expert_labels(engine.info)) if req.moechat.routing else None
            prefix = "chatcmpl-" if chat else "cmpl-"
            meta = Meta(prefix + uuid.uuid4().hex, int(time.time()), _model_id(engine), chat, names)
            run = _Run(engine, ids, req.sampling(format_stops), req.moechat.routing, release)
            first = await anyio.to_thread.run_sync(run.next)  # waits for the lock and reads the prompt
        except BaseException:
            run.close() if run is not None else release()
            raise
        return await _answer(request, req, run, meta, first)

    def _hold(self) -> tuple[Engine, Callable[[], None]]:
        """The engine for one generation and how to let it go: a lease when the app gave one."""
        if self._lease is None:
            return self._engine(), _nothing
        stack = ExitStack()
        engine = stack.enter_context(self._lease())
        if engine is None:
            stack.close()
            raise ApiError(503, "no model is loaded yet; try again shortly", type="server_error", code="no_model")
        return engine, stack.close


# ---- requests to prompts ----------------------------------------------------------------------------------
async def _json(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from exc


def _model_id(engine: Engine) -> str:
    return engine.info.path.stem


def _text_ids(engine: Engine, prompt: str) -> list[int]:
    """The prompt's tokens with one BOS (a prompt that starts with the BOS text does not get two)."""
    ids = engine.tokenize(prompt, add_bos=True, special=True)
    bos = engine.info.bos_id
    return ids[1:] if bos is not None and len(ids) > 1 and ids[0] == ids[1] == bos else ids


def _check(engine: Engine, req: Generation, ids: list[int], chat: bool) -> None:
    if len(ids) + 1 > engine.n_ctx:
        where = "messages" if chat else "prompt"
        message = f"the prompt has {len(ids)} tokens but the model's context holds {engine.n_ctx}; shorten it"
        raise ApiError(400, message, param=where, code="context_length_exceeded")
    if req.moechat.routing and (not engine.info.is_moe or engine.report.capture == "off"):
        raise ApiError(400, "routing: this model has no router to report on", param="moechat.routing")


# ---- running the engine -----------------------------------------------------------------------------------
class _Run:
    """One generation: pulls generated tokens from the engine's stream and counts them."""

    def __init__(
        self, engine: Engine, ids: list[int], sampling: Sampling, routing: bool, release: Callable[[], None]
    ) -> None:
        self.cancel, self._release = threading.Event(), release
        self._stream = engine.stream(ids, sampling, self.cancel)
        self._routing = routing
        self.prompt_tokens, self.completion_tokens, self.finish = len(ids), 0, "stop"

    def next(self) -> Token | None:
        """The next generated token (prompt tokens skipped), or None after the last."""
        for tok in self._stream:
            if tok.prompt:
                continue
            if tok.finish:
                self.finish = FINISH[tok.finish]
            if tok.id >= 0 and tok.finish != "eos":
                self.completion_tokens += 1
            return tok
        return None

    def routed(self, tok: Token) -> list[RoutingToken] | None:
        """The token's routing entry as a one-item list; None when not asked for or not a counted token."""
        if not self._routing or tok.routing is None or tok.id < 0 or tok.finish == "eos":
            return None
        return [routing_token(tok.id, tok.text, tok.routing.probs, tok.routing.experts)]

    def usage(self) -> Usage:
        total = self.prompt_tokens + self.completion_tokens
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, total_tokens=total)

    def close(self) -> None:
        """Stop generating, release the engine's lock (the stream is abandoned), then the engine itself."""
        self.cancel.set()
        try:
            self._stream.close()
        finally:
            release, self._release = self._release, _nothing
            release()


async def _answer(request: Request, req: Generation, run: _Run, meta: Meta, first: Token | None) -> Response:
    if req.stream:
        return _EngineStream(_events(run, meta, first, req.include_usage()), run.close)
    try:
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(_cancel_on_disconnect, request, run.cancel)
            response = await anyio.to_thread.run_sync(_collect, run, meta, first)
            watchers.cancel_scope.cancel()
        return response
    finally:
        run.close()


async def _cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    """Stop generating an answer nobody waits for (a client that gave up or pressed stop)."""
    while not await request.is_disconnected():
        await anyio.sleep(DISCONNECT_POLL_S)
    cancel.set()


def _collect(run: _Run, meta: Meta, tok: Token | None) -> Response:
    text, tokens = [], []
    while tok is not None:
        text.append(tok.text)
        tokens.extend(run.routed(tok) or [])
        tok = None if tok.finish else run.next()
    body = answer(meta, "".join(text), run.finish, run.usage(), tokens)
    return Response(body.model_dump_json(), media_type="application/json")


async def _events(run: _Run, meta: Meta, tok: Token | None, usage: bool) -> AsyncIterator[str]:
    """Server-sent events: a role chunk (chat), a chunk per token with text or routing, the finish chunk,
    the usage chunk when asked for, [DONE]. An engine failure mid-stream is sent as an error event."""
    if meta.chat:
        yield _sse(chunk(meta, "", role=True).model_dump_json())
    while tok is not None:
        routed = run.routed(tok)
        if tok.text or routed:
            yield _sse(chunk(meta, tok.text, tokens=routed).model_dump_json())
        if tok.finish:
            break
        try:
            tok = await anyio.to_thread.run_sync(run.next)
        except EngineError as exc:
            yield _sse(json.dumps(ApiError(503, str(exc), type="server_error", code="engine_error").body()))
            yield _sse("[DONE]")
            return
    yield _sse(chunk(meta, None, run.finish).model_dump_json())
    if usage:
        yield _sse(usage_chunk(meta, run.usage()).model_dump_json())
    yield _sse("[DONE]")


class _EngineStream(StreamingResponse):
    """A stream of events that always releases the engine when it ends, also when the client leaves."""

    def __init__(self, events: AsyncIterator[str], release: Callable[[], None]) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._release)


def _nothing() -> None:
    pass


def _sse(data: str) -> str:
    return f"data: {data}\n\n"


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)
