"""Pydantic schemas of the OpenAI-compatible API (requests and responses), its error type, and what a
request means for the engine: chat messages as prompt text (moechat.formats) and Sampling settings.

Requests accept and ignore OpenAI fields moechat does not use (`extra="ignore"`). The moechat extension
is the `moechat` object of a request and of each choice; see `moechat.api` for its shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moechat.engine.types import Sampling
from moechat.prompt import formats

DEFAULT_MAX_TOKENS = 256
SEED_RANGE = 2**32 - 1  # llama.cpp reads 0xFFFFFFFF as "random"
ROLES: dict[str, formats.Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "model"}
_TYPE_TAG = re.compile(r"^(str|int|float|bool|list\[.*\]|.*\(.*\))$")  # union members in pydantic locations


class ApiError(Exception):
    """An error the client sees as an OpenAI error body with this HTTP status."""

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


# ---- requests ---------------------------------------------------------------------------------------------
class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Extension(_Request):
    """`"moechat": {...}` in a request: routing per generated token, and a prompt format for chats."""

    routing: bool = False
    format: str | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class Generation(_Request):
    """Fields shared by text and chat completions. `model` is accepted and ignored: the loaded model answers.
    A negative `seed` (SillyTavern's -1) means a fresh random seed."""

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=100)] = 1.0
    top_p: Annotated[float, Field(ge=0, le=1)] = 1.0
    top_k: int = 0  # 0 or below: off (vLLM clients send -1)
    min_p: Annotated[float, Field(ge=0, le=1)] = 0.0
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] = Field(1.0, alias="repetition_penalty")
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    moechat: Extension = Extension()

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def stops(self) -> tuple[str, ...]:
        items = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return tuple(dict.fromkeys(s for s in items if s))

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def token_limit(self) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS

    def sampling(self, format_stops: tuple[str, ...] = ()) -> Sampling:
        """The engine's sampling settings: the request's stop strings first, then the prompt format's."""
        seed = None if self.seed is None or self.seed < 0 else self.seed % SEED_RANGE
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=max(self.top_k, 0),
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            seed=seed,
            max_tokens=self.token_limit(),
            stop=tuple(dict.fromkeys(s for s in (*self.stops(), *format_stops) if s)),
        )


class CompletionRequest(Generation):
    prompt: str | list[str]

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
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None

    def token_limit(self) -> int:
        return self.max_completion_tokens or super().token_limit()

    def prompt(self, model_name: str, chat_template: str | None) -> tuple[str, tuple[str, ...]]:
        """The messages as prompt text in the model's usual format (or `moechat.format`) and that format's
        stop strings; a last assistant message is continued rather than answered."""
        fmt = formats.get_format(
            self.moechat.format or formats.default_format(model_name, chat_template), chat_template
        )
        turns = [formats.Turn(ROLES[m.role], m.text(), name=m.name or "") for m in self.messages]
        char = next((m.name for m in reversed(self.messages) if m.role == "assistant" and m.name), "")
        user = next((m.name for m in reversed(self.messages) if m.role == "user" and m.name), "User")
        mode: formats.Mode = "continue" if turns[-1].role == "model" else "reply"
        return formats.render(fmt, turns, mode, char=char, user=user), formats.stop_strings(fmt, char=char, user=user)


R = TypeVar("R", bound=Generation)


def parse(model: type[R], data: object) -> R:
    """Validate a decoded JSON body; the first problem becomes a 400 naming the field."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if not _TYPE_TAG.search(str(p)))
        raise ApiError(400, f"{where or 'body'}: {err['msg']}", param=where or None) from exc
    if request.n != 1:
        raise ApiError(400, f"n: only n=1 is supported, got {request.n}", param="n")
    return request


# ---- responses --------------------------------------------------------------------------------------------
def _absent(value: object) -> bool:
    return value is None


class RoutingToken(BaseModel):
    id: int
    text: str
    probs: list[list[float] | None]
    experts: list[list[int]]


class Routing(BaseModel):
    expert_names: list[str]
    tokens: list[RoutingToken]


class ChoiceExtension(BaseModel):
    routing: Routing


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _Choice(BaseModel):
    index: int = 0
    logprobs: None = None
    finish_reason: str | None = None
    moechat: ChoiceExtension | None = Field(None, exclude_if=_absent)


class TextChoice(_Choice):
    text: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Choice):
    message: AssistantMessage


class Delta(BaseModel):
    role: str | None = Field(None, exclude_if=_absent)
    content: str | None = Field(None, exclude_if=_absent)


class ChunkChoice(_Choice):
    delta: Delta


CompletionKind = Literal["text_completion", "chat.completion", "chat.completion.chunk"]


class Completion(BaseModel):
    """A whole answer or one streamed chunk; `object` says which ("text_completion" is both, as at OpenAI)."""

    id: str
    object: CompletionKind
    created: int
    model: str
    choices: list[TextChoice] | list[ChatChoice] | list[ChunkChoice]
    usage: Usage | None = Field(None, exclude_if=_absent)


# ---- building responses and chunks ------------------------------------------------------------------------
@dataclass(frozen=True)
class Meta:
    """What every response and chunk of one request repeats; `expert_names` None: routing not asked for."""

    id: str
    created: int
    model: str
    chat: bool
    expert_names: tuple[str, ...] | None = None


def routing_token(token_id: int, text: str, probs: np.ndarray, experts: np.ndarray) -> RoutingToken:
    """One token's routing, probabilities rounded to 4 decimals; a layer never observed (NaN) is null."""
    rows = [None if np.isnan(row).any() else row for row in np.round(probs.astype(np.float64), 4).tolist()]
    return RoutingToken(id=token_id, text=text, probs=rows, experts=experts.tolist())


def _extension(meta: Meta, tokens: list[RoutingToken] | None) -> ChoiceExtension | None:
    if meta.expert_names is None or tokens is None:
        return None
    return ChoiceExtension(routing=Routing(expert_names=list(meta.expert_names), tokens=tokens))


def answer(meta: Meta, text: str, finish: str, usage: Usage, tokens: list[RoutingToken]) -> Completion:
    """The whole answer of a request that did not stream."""
    ext = _extension(meta, tokens)
    if meta.chat:
        choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=finish, moechat=ext)
        return _completion(meta, "chat.completion", [choice], usage)
    return _completion(meta, "text_completion", [TextChoice(text=text, finish_reason=finish, moechat=ext)], usage)


def chunk(
    meta: Meta,
    text: str | None,
    finish: str | None = None,
    tokens: list[RoutingToken] | None = None,
    role: bool = False,
) -> Completion:
    """One streamed chunk: text (None: none), the finish reason on the last, routing of the tokens it carries."""
    ext = _extension(meta, tokens)
    if meta.chat:
        delta = Delta(role="assistant" if role else None, content=text)
        return _completion(meta, "chat.completion.chunk", [ChunkChoice(delta=delta, finish_reason=finish, moechat=ext)])
    return _completion(meta, "text_completion", [TextChoice(text=text or "", finish_reason=finish, moechat=ext)])


def usage_chunk(meta: Meta, usage: Usage) -> Completion:
    """The extra last chunk of `stream_options.include_usage`: no choices, the usage."""
    return _completion(meta, "chat.completion.chunk" if meta.chat else "text_completion", [], usage)


def _completion(
    meta: Meta,
    kind: CompletionKind,
    choices: list[TextChoice] | list[ChatChoice] | list[ChunkChoice],
    usage: Usage | None = None,
) -> Completion:
    return Completion(id=meta.id, object=kind, created=meta.created, model=meta.model, choices=choices, usage=usage)
