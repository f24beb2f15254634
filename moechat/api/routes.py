"""The HTTP API, mounted beside the Gradio app: every way SillyTavern (and OpenAI's clients) connects.

Families, one module each:
  openai_routes    GET /v1/models, POST /v1/completions, POST /v1/chat/completions (OpenAI, and the Default,
                   vLLM, Aphrodite, TabbyAPI, KoboldCpp and HuggingFace text-completion types)
  llamacpp_routes  llama.cpp server's own: POST /completion, GET /props, GET /health
  token_routes     token counting and (de)tokenizing as each server names it: /tokenize, /detokenize,
                   /v1/internal/encode|decode|token-count, /v1/token/encode|decode, /v1/tokenize,
                   /v1/detokenize, /api/extra/tokencount
  info_routes      what other servers say about their model: /v1/internal/model/info, /v1/model,
                   /v1/model/list, /api/extra/true_max_context_length, /api/extra/abort, /info
  ollama_routes    Ollama's GET /api/tags, /api/version, POST /api/generate (NDJSON)
GET /v1/health needs no key: {"status": "ok" | "no model", "model": id | null}. Any other path under /v1/
or /api/ answers 404 with an error body. Requests are generated together with the UI's turns, as many at
once as the engine has sequences (`--parallel`), each with its own sampler, seed and routing; further ones
wait in the engine's queue. A client that disconnects, streaming or not, stops its own generation only. The
API keeps no state: nothing a request sends is stored or shown to anyone else. Shapes, samplers and limits:
docs/api.md.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from moechat.api import info_routes, llamacpp_routes, ollama_routes, openai_routes, token_routes
from moechat.api.access import Access, GetEngine, Lease, model_id
from moechat.api.schema import ApiError

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def api_key_from_env() -> str | None:
    """MOECHAT_API_KEY, or None (no key needed) when it is unset or empty."""
    return os.environ.get("MOECHAT_API_KEY") or None


def api_router(get_engine: GetEngine, *, api_key: str | None = None, lease: Lease | None = None) -> APIRouter:
    """Every route, serving whatever engine `get_engine()` returns at each request (None: no model).

    `lease` (e.g. ModelSlot.use) holds the engine open from prompt to last token, so a model switch waits
    for answers in flight. Include the router in the FastAPI app before mounting Gradio at "/"."""
    access = Access(get_engine, api_key, lease)
    router = APIRouter()

    async def health(request: Request) -> Response:
        engine = access.engine_or_none()
        return JSONResponse({"status": "ok" if engine else "no model", "model": model_id(engine) if engine else None})

    async def unknown(request: Request) -> Response:
        raise ApiError(404, f"no route {request.method} {request.url.path}", code="unknown_url")

    router.add_api_route("/v1/health", health, methods=["GET"])
    for family in (openai_routes, llamacpp_routes, token_routes, info_routes, ollama_routes):
        router.include_router(family.routes(access))
    router.add_api_route("/v1/{rest:path}", access.guard(unknown), methods=METHODS)
    router.add_api_route("/api/{rest:path}", access.guard(unknown), methods=METHODS)
    return router
