"""Request schemas of the API (pydantic) and its error type.

Requests accept and ignore fields moechat has no use for (`extra="ignore"` semantics: they are kept aside
and only looked at for samplers moechat must refuse, see api/samplers.py). The moechat extension is the
`moechat` object of a request; see docs/api.md for its shape.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moechat.api.samplers import MAX_LOGPROBS, SamplerFields

_TYPE_TAG = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|.*\(.*\))$")  # union members in locations


class ApiError(Exception):
    """An error the client sees as an error body, {"error": {...}}, with this HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Extension(_Request):
    """`"moechat": {...}` in a request: routing per generated token, and a prompt format for chats."""

    routing: bool = False
    format: str | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class Generation(SamplerFields):
    """What every generating request has besides its samplers. `model` is accepted and ignored: the loaded
    model answers. A negative `seed` (SillyTavern's -1) means a fresh random seed."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    moechat: Extension = Extension()
    truncation_length: int | None = None  # SillyTavern's context size, named in context errors
    num_ctx: int | None = None

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(Generation):
    """OpenAI's /v1/completions with the text-completion servers' sampler fields; `logprobs` is a count."""

    prompt: str | list[str]
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise ApiError(400, "prompt: send one string (batches of prompts are not supported)", param="prompt")
        return self.prompt[0]


class ContentPart(_Request):
    type: str
    text: str | None = None


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(p.type != "text" or p.text is None for p in self.content):
            raise ApiError(400, "messages: only text content parts are supported", param="messages")
        return "".join(p.text or "" for p in self.content)


class ChatRequest(Generation):
    """OpenAI's /v1/chat/completions; `logprobs` is a switch and `top_logprobs` the count."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    def wanted_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


R = TypeVar("R", bound=BaseModel)


def parse(model: type[R], data: object) -> R:
    """Validate a decoded JSON body; the first problem becomes a 400 naming the field."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if not _TYPE_TAG.search(str(p)))
        raise ApiError(400, f"{where or 'body'}: {err['msg']}", param=where or None) from exc
