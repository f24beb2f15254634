"""What other servers say about their model, where SillyTavern's text-completion types ask on connecting:

GET  /v1/internal/model/info            text-generation-webui ("Default"): {model_name, lora_names}; answering
                                        it tells SillyTavern the server can tokenize (its "API" tokenizer)
GET  /v1/model, GET /v1/model/list      TabbyAPI: the loaded model, with `parameters.max_seq_len`
GET  /api/extra/true_max_context_length KoboldCpp: {value: context length}
POST /api/extra/abort                   KoboldCpp's stop button: generation already stops when SillyTavern
                                        drops the request, so this only says so
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from moechat.api.access import Access, model_id
from moechat.api.openai_routes import model_entry


def routes(access: Access) -> APIRouter:
    router = APIRouter()

    async def ooba_info(request: Request) -> Response:
        engine = access.engine()
        return JSONResponse({"model_name": model_id(engine), "lora_names": [], "context_length": engine.n_ctx})

    async def tabby_model(request: Request) -> Response:
        engine = access.engine()
        entry = model_entry(engine) | {"parameters": {"max_seq_len": engine.n_ctx, "prompt_template": None}}
        return JSONResponse(entry)

    async def tabby_list(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_entry(access.engine())]})

    async def kobold_context(request: Request) -> Response:
        return JSONResponse({"value": access.engine().n_ctx})

    async def kobold_abort(request: Request) -> Response:
        return JSONResponse({"success": True, "done": True})

    async def tgi_info(request: Request) -> Response:
        engine = access.engine()
        limits = {"max_input_tokens": engine.n_ctx - 1, "max_total_tokens": engine.n_ctx}
        return JSONResponse({"model_id": model_id(engine), "model_dtype": "gguf", "router": "moechat"} | limits)

    router.add_api_route("/v1/internal/model/info", access.guard(ooba_info), methods=["GET"])
    router.add_api_route("/info", access.guard(tgi_info), methods=["GET"])
    router.add_api_route("/v1/model", access.guard(tabby_model), methods=["GET"])
    router.add_api_route("/v1/model/list", access.guard(tabby_list), methods=["GET"])
    router.add_api_route("/api/extra/true_max_context_length", access.guard(kobold_context), methods=["GET"])
    router.add_api_route("/api/extra/abort", access.guard(kobold_abort), methods=["POST"])
    return router
