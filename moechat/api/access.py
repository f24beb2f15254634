"""Who may call the API and which engine answers: the key check, errors turned into error bodies, and the
engine held (leased) for one request.

Every route but the health checks goes through `Access.guard`: a missing or wrong key is a 401, a domain
error the matching status, a bug a 500 with the traceback in the log; the body is always an error object,
{"error": {"message", "type", "param", "code"}}. Keys come as `Authorization: Bearer <key>` (every client)
or `x-api-key` (TabbyAPI's clients).
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, ExitStack

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from moechat.api.samplers import SamplerError
from moechat.api.schema import ApiError
from moechat.engine.engine import Engine
from moechat.errors import EngineError, PromptError, SamplingError

log = logging.getLogger(__name__)
GetEngine = Callable[[], Engine | None]
Lease = Callable[[], AbstractContextManager[Engine | None]]
Handler = Callable[[Request], Awaitable[Response]]
NO_MODEL = "no model is loaded yet; try again shortly"


class Access:
    """The key, the engine and how a request holds it."""

    def __init__(self, get_engine: GetEngine, api_key: str | None, lease: Lease | None) -> None:
        self._get_engine, self._key, self._lease = get_engine, api_key, lease

    def guard(self, handler: Handler) -> Handler:
        """Check the key, run the handler, and turn errors into error bodies."""

        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            try:
                self._authorize(request)
                return await handler(request)
            except ApiError as exc:
                return error_response(exc)
            except SamplerError as exc:
                return error_response(ApiError(400, str(exc), param=exc.param))
            except (PromptError, SamplingError) as exc:
                return error_response(ApiError(400, str(exc)))
            except EngineError as exc:
                return error_response(ApiError(503, str(exc), type="server_error", code="engine_error"))
            except Exception as exc:  # a bug: still an error body, with the traceback in the log
                log.exception("API request %s %s failed", request.method, request.url.path)
                return error_response(ApiError(500, f"internal error: {exc}", type="server_error"))

        return guarded

    def _authorize(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""
        given = given or request.headers.get("x-api-key", "").strip()
        if not given:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        if not hmac.compare_digest(given.encode(), self._key.encode()):
            raise ApiError(401, "invalid API key", code="invalid_api_key")

    def engine(self) -> Engine:
        """The engine serving now (for answers that do not generate); 503 without a model."""
        engine = self._get_engine()
        if engine is None:
            raise ApiError(503, NO_MODEL, type="server_error", code="no_model")
        return engine

    def engine_or_none(self) -> Engine | None:
        try:
            return self._get_engine()
        except EngineError:
            return None

    def hold(self) -> tuple[Engine, Callable[[], None]]:
        """The engine for one generation and how to let it go: a lease when the app gave one."""
        if self._lease is None:
            return self.engine(), _nothing
        stack = ExitStack()
        engine = stack.enter_context(self._lease())
        if engine is None:
            stack.close()
            raise ApiError(503, NO_MODEL, type="server_error", code="no_model")
        return engine, stack.close


async def json_body(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from exc


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def model_id(engine: Engine) -> str:
    return engine.info.path.stem


def _nothing() -> None:
    pass
