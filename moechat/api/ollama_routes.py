"""Ollama's routes as SillyTavern's "Ollama" text-completion type uses them: GET /api/tags lists the model
(pick it in SillyTavern's Ollama model list), POST /api/generate generates.

/api/generate takes `prompt`, `stream` (default true, as Ollama), `raw` (SillyTavern sends true: the prompt
as it is; false: the prompt as one user message in the model's format, after `system`), `format` ("json"
or a JSON schema) and the sampler `options` (dialect "ollama": `num_predict`, `repeat_last_n` 0 = off).
It answers one JSON object, or newline-delimited JSON objects while streaming: {"response", "done": false}
per token, then {"done": true, "done_reason", "prompt_eval_count", "eval_count", ...}. SillyTavern 1.12
sends no API key to Ollama: use this type only where moechat needs none.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from moechat.api.access import Access, json_body, model_id
from moechat.api.chat_prompt import chat_prompt, model_format
from moechat.api.run import Choices, EngineStream, Event, Outcome, begin, collect, events, text_ids
from moechat.api.samplers import SamplerFields, Settings, settings
from moechat.api.schema import ApiError, ChatMessage, ChatRequest, parse
from moechat.engine.engine import Engine
from moechat.errors import EngineError

DONE = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


class Options(SamplerFields):
    num_ctx: int | None = None


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str = ""
    system: str | None = None
    stream: bool = True
    raw: bool = False
    format: str | dict[str, Any] | None = None
    images: list[str] | None = None
    options: Options = Options()


def routes(access: Access) -> APIRouter:
    api = _Ollama(access)
    router = APIRouter(prefix="/api")
    router.add_api_route("/tags", access.guard(api.tags), methods=["GET"])
    router.add_api_route("/generate", access.guard(api.generate), methods=["POST"])
    return router


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Ollama:
    def __init__(self, access: Access) -> None:
        self._access = access

    async def tags(self, request: Request) -> Response:
        engine = self._access.engine()
        path = engine.info.path
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat() if path.exists() else _now()
        size = path.stat().st_size if path.exists() else 0
        details = {"format": "gguf", "family": engine.info.architecture, "parameter_size": "", "quantization_level": ""}
        entry = {"name": model_id(engine), "model": model_id(engine), "modified_at": modified, "size": size}
        return JSONResponse({"models": [entry | {"digest": "", "details": details}]})

    async def generate(self, request: Request) -> Response:
        req = parse(GenerateRequest, await json_body(request))
        if req.images:
            raise ApiError(400, "images: this model reads text only", param="images")
        options = req.options.model_copy(update={"response_format": _format(req.format), "n": 1})

        def prepare(engine: Engine) -> tuple[list[int], Settings]:
            if req.raw:
                st = settings(options, "ollama", engine.n_ctx)
                return text_ids(engine, req.prompt, st.add_bos), st
            messages = [ChatMessage(role="system", content=req.system)] if req.system else []
            chat = ChatRequest(messages=[*messages, ChatMessage(role="user", content=req.prompt)])
            prompt, stops = chat_prompt(chat, model_format(engine))
            st = settings(options, "ollama", engine.n_ctx, format_stops=stops)
            return engine.tokenize(prompt, add_bos=st.add_bos), st

        started = time.perf_counter_ns()
        choices, first = await begin(self._access, prepare, param="prompt", client_ctx=req.options.num_ctx)
        model = model_id(choices.engine)
        if req.stream:
            return EngineStream(_lines(model, choices, first, started), choices, media_type="application/x-ndjson")
        return await collect(
            request, choices, first, lambda outs: JSONResponse(_final(model, choices, outs[0], started, outs[0].text))
        )


def _format(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"schema": value}}
    raise ApiError(400, f"format: 'json' or a JSON schema, got {value!r}", param="format")


def _final(model: str, choices: Choices, out: Outcome, started: int, response: str) -> dict[str, Any]:
    total = time.perf_counter_ns() - started
    return {
        "model": model,
        "created_at": _now(),
        "response": response,
        "done": True,
        "done_reason": DONE[out.finish],
        "context": [],
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": choices.prompt_tokens,
        "eval_count": len(out.tokens),
        "eval_duration": total,
    }


async def _lines(model: str, choices: Choices, first: Event | None, started: int) -> AsyncIterator[str]:
    try:
        async for index, tok in events(choices, first):
            if tok.text:
                yield json.dumps({"model": model, "created_at": _now(), "response": tok.text, "done": False}) + "\n"
            if tok.finish:
                yield json.dumps(_final(model, choices, choices.outcomes[index], started, "")) + "\n"
    except EngineError as exc:
        yield json.dumps({"error": str(exc)}) + "\n"
