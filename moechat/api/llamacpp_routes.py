"""llama.cpp server's own routes, in its request and response shapes: POST /completion (and /completions),
GET /props, GET /health. SillyTavern's "llama.cpp" text-completion type generates through /completion.

/completion takes a prompt (text, token ids, or both mixed), llama.cpp's sampler fields (dialect
"llamacpp": its defaults, `repeat_last_n` 0 = off and -1 = the whole context) and `n_probs`; it answers
{"content", "stop", "stop_type", "tokens_predicted", ...} or, streaming, one such object per token as
server-sent events and a last one with "stop": true (no [DONE], as llama.cpp). The moechat routing
extension is an OpenAI-route feature only.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from moechat.api import logprobs
from moechat.api.access import Access, json_body, model_id
from moechat.api.run import Choices, EngineStream, Event, Outcome, begin, collect, events, sse, text_ids
from moechat.api.samplers import MAX_LOGPROBS, Settings, settings
from moechat.api.schema import ApiError, Generation, parse
from moechat.engine.engine import Engine
from moechat.engine.types import Token
from moechat.errors import EngineError

STOP_TYPE = {"eos": "eos", "stop": "word", "length": "limit", "cancelled": "none"}


class LlamaCompletion(Generation):
    prompt: str | list[int | str]
    n_probs: int | None = None
    logprobs: int | None = None  # llama.cpp reads it when n_probs is not given
    return_tokens: bool = False

    def top(self) -> int | None:
        n = self.n_probs if self.n_probs is not None else self.logprobs
        if n is not None and not 0 <= n <= MAX_LOGPROBS:
            raise ApiError(400, f"n_probs: between 0 and {MAX_LOGPROBS}, got {n}", param="n_probs")
        return n or None


def routes(access: Access) -> APIRouter:
    api = _LlamaCpp(access)
    router = APIRouter()
    for path in ("/completion", "/completions"):
        router.add_api_route(path, access.guard(api.completion), methods=["POST"])
    router.add_api_route("/props", access.guard(api.props), methods=["GET"])
    router.add_api_route("/health", api.health, methods=["GET"])
    return router


def prompt_ids(engine: Engine, prompt: str | list[int | str], add_bos: bool) -> list[int]:
    """llama.cpp's prompt forms: text (BOS added as the model asks), token ids as given, or both mixed
    (a BOS when the first part is text)."""
    if isinstance(prompt, str):
        return text_ids(engine, prompt, add_bos)
    ids: list[int] = []
    for i, part in enumerate(prompt):
        if isinstance(part, str):
            ids += text_ids(engine, part, add_bos) if i == 0 else engine.tokenize(part, add_bos=False)
        elif 0 <= part < engine.n_vocab:
            ids.append(part)
        else:
            raise ApiError(400, f"prompt: token {part} is not in this model's vocabulary", param="prompt")
    if not ids:
        raise ApiError(400, "prompt: empty", param="prompt")
    return ids


class _LlamaCpp:
    def __init__(self, access: Access) -> None:
        self._access = access

    async def health(self, request: Request) -> Response:
        if self._access.engine_or_none() is None:
            body = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ok"})

    async def props(self, request: Request) -> Response:
        engine = self._access.engine()
        info = engine.info
        defaults = settings(Generation(), "llamacpp", engine.n_ctx).sampling
        params = {"temperature": defaults.temperature, "top_k": defaults.top_k, "top_p": defaults.top_p,
                  "min_p": defaults.min_p, "n_predict": -1, "samplers": list(defaults.order)}  # fmt: skip
        return JSONResponse(
            {
                "default_generation_settings": {"n_ctx": engine.n_ctx, "params": params, "model": model_id(engine)},
                "total_slots": 1,
                "model_alias": model_id(engine),
                "model_path": str(info.path),
                "chat_template": info.chat_template or "",
                "bos_token": engine.token_text(info.bos_id) if info.bos_id is not None else "",
                "eos_token": engine.token_text(engine.eos),
                "modalities": {"vision": False, "audio": False},
                "endpoint_slots": False,
                "build_info": "moechat",
            }
        )

    async def completion(self, request: Request) -> Response:
        req = parse(LlamaCompletion, await json_body(request))
        top = req.top()

        def prepare(engine: Engine) -> tuple[list[int], Settings]:
            st = settings(req, "llamacpp", engine.n_ctx, top_logprobs=top)
            return prompt_ids(engine, req.prompt, st.add_bos), st

        started = time.perf_counter()
        choices, first = await begin(self._access, prepare, param="prompt", client_ctx=req.truncation_length)
        reply = _Reply(choices, req, top, started)
        if req.stream:
            return EngineStream(reply.events(first), choices)
        return await collect(request, choices, first, lambda outcomes: JSONResponse(reply.final(outcomes[0])))


class _Reply:
    """The shapes of one /completion answer."""

    def __init__(self, choices: Choices, req: LlamaCompletion, top: int | None, started: float) -> None:
        self._choices, self._req, self._top, self._started = choices, req, top, started
        self._model = model_id(choices.engine)

    def token(self, index: int, tok: Token) -> dict[str, Any]:
        counted = tok.id >= 0 and tok.finish != "eos"
        body: dict[str, Any] = {"index": index, "content": tok.text, "tokens": [tok.id] if counted else []}
        body |= {"stop": False, "id_slot": 0, "tokens_predicted": len(self._choices.outcomes[index].tokens)}
        body["tokens_evaluated"] = self._choices.prompt_tokens
        if self._top and counted and tok.logprobs is not None:
            body["completion_probabilities"] = [logprobs.llamacpp(tok.id, tok.logprobs, self._piece, self._top)]
        return body

    def final(self, out: Outcome, streamed: bool = False) -> dict[str, Any]:
        ms = (time.perf_counter() - self._started) * 1000
        n = len(out.tokens)
        grammar_end = out.finish == "stop" and out.last is not None and out.last.id < 0  # nothing was allowed
        body: dict[str, Any] = {
            "index": out.index,
            "content": "" if streamed else out.text,
            "tokens": [t.id for t in out.tokens] if self._req.return_tokens or streamed else [],
            "id_slot": 0,
            "stop": True,
            "model": self._model,
            "tokens_predicted": n,
            "tokens_evaluated": self._choices.prompt_tokens,
            "tokens_cached": self._choices.cached_tokens,
            "generation_settings": {"n_ctx": self._choices.engine.n_ctx, "model": self._model},
            "has_new_line": "\n" in out.text,
            "truncated": False,
            "stop_type": "eos" if grammar_end else STOP_TYPE[out.finish],
            "stopping_word": "",
            "timings": {"predicted_n": n, "predicted_ms": ms, "predicted_per_second": n / ms * 1000 if ms else 0.0},
        }
        if self._top and not streamed:
            body["completion_probabilities"] = [
                logprobs.llamacpp(tok, p, self._piece, self._top) for tok, p in out.logprobs()
            ]
        return body

    def _piece(self, token: int) -> bytes:
        return self._choices.engine.piece(token)

    async def events(self, first: Event | None) -> AsyncIterator[str]:
        try:
            async for index, tok in events(self._choices, first):
                if tok.text or (self._top and tok.id >= 0 and tok.finish != "eos"):
                    yield sse(json.dumps(self.token(index, tok)))
                if tok.finish:
                    yield sse(json.dumps(self.final(self._choices.outcomes[index], streamed=True)))
        except EngineError as exc:
            yield sse(json.dumps({"error": {"code": 503, "message": str(exc), "type": "server_error"}}))
