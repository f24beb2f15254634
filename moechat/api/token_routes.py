"""Tokenizing, detokenizing and counting, under the path and in the shape of each server SillyTavern's
"API" tokenizer asks (src/endpoints/tokenizers.js), all with the loaded model's own tokenizer:

  POST /tokenize                {content} llama.cpp -> {tokens}; {prompt} vLLM -> {count, max_model_len, tokens}
  POST /detokenize              {tokens} -> {content} (llama.cpp) and {prompt} (vLLM)
  POST /v1/internal/encode      {text} -> {tokens, length}           text-generation-webui ("Default")
  POST /v1/internal/decode      {tokens} -> {text}
  POST /v1/internal/token-count {text} -> {length}
  POST /v1/token/encode         {text} -> {tokens, length}           TabbyAPI
  POST /v1/token/decode         {tokens} -> {text}
  POST /v1/tokenize             {prompt} -> {count, max_model_len, tokens, value, ids}   Aphrodite
  POST /v1/detokenize           {tokens} -> {prompt}
  POST /api/extra/tokencount    {prompt} -> {value, ids}             KoboldCpp

Whether the start token is counted follows each server's default (llama.cpp's add_special false, vLLM's
add_special_tokens true, text-generation-webui and TabbyAPI true, KoboldCpp false), overridable by the same
fields they take. Special tokens written as text ("<|im_end|>") are parsed as the tokens they name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from moechat.api.access import Access, json_body
from moechat.api.schema import ApiError, parse
from moechat.engine.engine import Engine


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextBody(_Body):
    text: str | None = None  # text-generation-webui, TabbyAPI
    content: str | None = None  # llama.cpp
    prompt: str | None = None  # vLLM, Aphrodite, KoboldCpp
    add_special: bool | None = None  # llama.cpp
    add_special_tokens: bool | None = None  # vLLM, Aphrodite
    add_bos_token: bool | None = None  # TabbyAPI
    parse_special: bool = True
    with_pieces: bool = False

    def given(self) -> str:
        value = next((v for v in (self.content, self.text, self.prompt) if v is not None), None)
        if value is None:
            raise ApiError(400, "send the text to tokenize as 'content', 'text' or 'prompt'", param="content")
        return value

    def bos(self, default: bool) -> bool:
        return next(
            (v for v in (self.add_special, self.add_special_tokens, self.add_bos_token) if v is not None), default
        )


class TokensBody(_Body):
    tokens: list[int]


def routes(access: Access) -> APIRouter:
    router = APIRouter()

    def add(path: str, handler: Callable[[Engine, Request], Awaitable[dict[str, object]]]) -> None:
        async def route(request: Request) -> Response:
            return JSONResponse(await handler(access.engine(), request))

        router.add_api_route(path, access.guard(route), methods=["POST"])

    async def tokenize(engine: Engine, request: Request) -> dict[str, object]:
        body = parse(TextBody, await json_body(request))
        if body.content is None and body.prompt is not None:  # vLLM's shape
            ids = _ids(engine, body, default_bos=True)
            return {"count": len(ids), "max_model_len": engine.n_ctx, "tokens": ids}
        ids = _ids(engine, body, default_bos=False)
        if body.with_pieces:
            return {"tokens": [{"id": t, "piece": _piece(engine, t)} for t in ids]}
        return {"tokens": ids}

    async def detokenize(engine: Engine, request: Request) -> dict[str, object]:
        text = _text(engine, parse(TokensBody, await json_body(request)))
        return {"content": text, "prompt": text}

    async def encode(engine: Engine, request: Request) -> dict[str, object]:
        ids = _ids(engine, parse(TextBody, await json_body(request)), default_bos=True)
        return {"tokens": ids, "length": len(ids)}

    async def decode(engine: Engine, request: Request) -> dict[str, object]:
        return {"text": _text(engine, parse(TokensBody, await json_body(request)))}

    async def count(engine: Engine, request: Request) -> dict[str, object]:
        return {"length": len(_ids(engine, parse(TextBody, await json_body(request)), default_bos=True))}

    async def aphrodite(engine: Engine, request: Request) -> dict[str, object]:
        ids = _ids(engine, parse(TextBody, await json_body(request)), default_bos=True)
        return {"count": len(ids), "max_model_len": engine.n_ctx, "tokens": ids, "value": len(ids), "ids": ids}

    async def aphrodite_text(engine: Engine, request: Request) -> dict[str, object]:
        return {"prompt": _text(engine, parse(TokensBody, await json_body(request)))}

    async def kobold(engine: Engine, request: Request) -> dict[str, object]:
        ids = _ids(engine, parse(TextBody, await json_body(request)), default_bos=False)
        return {"value": len(ids), "ids": ids}

    add("/tokenize", tokenize)
    add("/detokenize", detokenize)
    add("/v1/internal/encode", encode)
    add("/v1/internal/decode", decode)
    add("/v1/internal/token-count", count)
    add("/v1/token/encode", encode)
    add("/v1/token/decode", decode)
    add("/v1/tokenize", aphrodite)
    add("/v1/detokenize", aphrodite_text)
    add("/api/extra/tokencount", kobold)
    return router


def _ids(engine: Engine, body: TextBody, *, default_bos: bool) -> list[int]:
    text = body.given()
    if not text:
        return []
    return engine.tokenize(text, add_bos=body.bos(default_bos), special=body.parse_special)


def _text(engine: Engine, body: TokensBody) -> str:
    bad = next((t for t in body.tokens if not 0 <= t < engine.n_vocab), None)
    if bad is not None:
        raise ApiError(
            400, f"tokens: {bad} is not in this model's vocabulary (0..{engine.n_vocab - 1})", param="tokens"
        )
    return engine.detokenize(body.tokens)


def _piece(engine: Engine, token: int) -> str | list[int]:
    """A token's text, or its bytes when they are not valid UTF-8 on their own (llama.cpp's with_pieces)."""
    raw = engine.piece(token)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)
