"""The OpenAI-compatible routes: GET /v1/models, POST /v1/completions and POST /v1/chat/completions.

/v1/completions is also what SillyTavern's Default, vLLM, Aphrodite, TabbyAPI and KoboldCpp text-completion
types post to, with their own sampler fields (api/samplers.py, dialect "openai"). Streaming answers are
server-sent events (`data: {...}` then `data: [DONE]`); n > 1 choices stream one after another, each chunk
naming its choice's index. Shapes: api/openai_shapes.py; everything a request may send: docs/api.md.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from moechat.api import openai_shapes as shapes
from moechat.api.access import Access, json_body, model_id
from moechat.api.chat_prompt import chat_prompt, model_format
from moechat.api.logprobs import text
from moechat.api.run import Choices, EngineStream, Event, Prepare, begin, collect, events, sse, text_ids
from moechat.api.samplers import Settings, settings
from moechat.api.schema import ApiError, ChatRequest, CompletionRequest, Generation, parse
from moechat.engine.engine import Engine
from moechat.errors import EngineError
from moechat.gguf.info import expert_labels


def routes(access: Access) -> APIRouter:
    api = _OpenAI(access)
    router = APIRouter(prefix="/v1")
    router.add_api_route("/models", access.guard(api.models), methods=["GET"])
    router.add_api_route("/completions", access.guard(api.completions), methods=["POST"])
    router.add_api_route("/chat/completions", access.guard(api.chat), methods=["POST"])
    return router


def model_entry(engine: Engine) -> dict[str, object]:
    """The loaded model as a /v1/models entry, its context length where each client family looks for it."""
    info = engine.info
    created = int(info.path.stat().st_mtime) if info.path.exists() else 0
    return {
        "id": model_id(engine),
        "object": "model",
        "created": created,
        "owned_by": "moechat",
        "context_length": engine.n_ctx,  # OpenRouter and SillyTavern's model lists
        "max_model_len": engine.n_ctx,  # vLLM, Aphrodite
        "meta": {"n_ctx": engine.n_ctx, "n_ctx_train": info.context_length, "n_vocab": engine.n_vocab},  # llama.cpp
        "moechat": {
            "n_layers": info.n_layers,
            "n_experts": info.n_experts,
            "n_experts_used": info.n_experts_used,
            "expert_names": list(expert_labels(info)),
        },
    }


class _OpenAI:
    def __init__(self, access: Access) -> None:
        self._access = access

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_entry(self._access.engine())]})

    async def completions(self, request: Request) -> Response:
        req = parse(CompletionRequest, await json_body(request))

        def prepare(engine: Engine) -> tuple[list[int], Settings]:
            st = settings(req, "openai", engine.n_ctx, top_logprobs=req.logprobs)
            return text_ids(engine, req.prompt_text(), st.add_bos), st

        return await self._respond(request, req, prepare, chat=False)

    async def chat(self, request: Request) -> Response:
        req = parse(ChatRequest, await json_body(request))

        def prepare(engine: Engine) -> tuple[list[int], Settings]:
            prompt, stops = chat_prompt(req, model_format(engine, req.moechat.format))
            top = req.wanted_logprobs()
            st = settings(
                req, "openai", engine.n_ctx, format_stops=stops, max_tokens=req.max_completion_tokens, top_logprobs=top
            )
            return engine.tokenize(prompt, add_bos=st.add_bos), st

        return await self._respond(request, req, prepare, chat=True)

    async def _respond(self, request: Request, req: Generation, prepare: Prepare, *, chat: bool) -> Response:
        def checked(engine: Engine) -> tuple[list[int], Settings]:
            if req.moechat.routing and (not engine.info.is_moe or engine.report.capture == "off"):
                raise ApiError(400, "routing: this model has no router to report on", param="moechat.routing")
            return prepare(engine)

        param = "messages" if chat else "prompt"
        choices, first = await begin(self._access, checked, param=param, client_ctx=req.truncation_length)
        engine = choices.engine
        names = tuple(expert_labels(engine.info)) if req.moechat.routing else None
        top = req.wanted_logprobs() if isinstance(req, ChatRequest) else getattr(req, "logprobs", None)
        prefix = "chatcmpl-" if chat else "cmpl-"
        meta = shapes.Meta(prefix + uuid.uuid4().hex, int(time.time()), model_id(engine), chat, names, top)
        if req.stream:
            return EngineStream(_events(meta, choices, first, req.include_usage()), choices)

        def whole(outcomes: list) -> Response:
            use = shapes.usage(choices.prompt_tokens, choices.completion_tokens)
            return JSONResponse(shapes.whole(meta, outcomes, use, engine.piece))

        return await collect(request, choices, first, whole)


async def _events(meta: shapes.Meta, choices: Choices, first: Event | None, include_usage: bool) -> AsyncIterator[str]:
    """A role chunk per choice (chat), a chunk per token with text, logprobs or routing, each choice's finish
    chunk, the usage chunk when asked for, [DONE]. An engine failure mid-stream is sent as an error event."""
    offsets: dict[int, int] = {}
    piece = choices.engine.piece
    try:
        async for index, tok in events(choices, first):
            if index not in offsets:
                offsets[index] = 0
                if meta.chat:
                    yield sse(json.dumps(shapes.role_chunk(meta, index)))
            data = shapes.chunk(meta, index, tok, offsets[index], piece)
            offsets[index] += len(text(tok.piece)) if tok.id >= 0 else 0
            if data is not None:
                yield sse(json.dumps(data))
            if tok.finish:
                yield sse(json.dumps(shapes.finish_chunk(meta, index, tok.finish)))
    except EngineError as exc:
        yield sse(json.dumps(ApiError(503, str(exc), type="server_error", code="engine_error").body()))
        yield sse("[DONE]")
        return
    if include_usage:
        yield sse(json.dumps(shapes.usage_chunk(meta, shapes.usage(choices.prompt_tokens, choices.completion_tokens))))
    yield sse("[DONE]")
