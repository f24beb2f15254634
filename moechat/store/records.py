"""Records the chat store reads and writes (pure: no sqlite3), and the neutral form chat importers produce.

Times are Unix seconds (float). Routing arrays: probs [tokens, layers, experts] (float16 once stored),
experts [tokens, layers, k] (int8 when experts < 128, else int16), token_ids [tokens] int32 and
offsets [tokens] int32: where each token's text starts in its swipe's text (-1: not in the text, e.g.
prompt-template tokens of a user message's prompt routing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moechat.errors import StoreError

LOCAL_OWNER = "local"
ROLES = ("user", "assistant", "system")


@dataclass(frozen=True, slots=True)
class Character:
    id: int
    owner: str
    name: str
    card_json: str  # the card exactly as given (lossless)
    created: float
    updated: float

    def card(self) -> dict[str, Any]:
        return json.loads(self.card_json)


@dataclass(frozen=True, slots=True)
class ChatInfo:
    id: int
    owner: str
    character_id: int
    character_name: str
    title: str
    created: float
    updated: float
    format: str  # prompt format name ("" = the app default)
    persona: str
    authors_note: str
    parent_chat_id: int | None  # set on branches
    branch_message_id: int | None  # message of the parent the branch was cut at
    message_count: int
    header: dict[str, Any] = field(default_factory=dict)  # imported ST header, kept losslessly


@dataclass(frozen=True, slots=True)
class GenStats:
    """How one swipe was generated."""

    model: str = ""
    tokens_per_s: float | None = None
    n_tokens: int | None = None
    stopped: bool = False  # True: cut short (stop button, crash); False: finished
    gen_started: float | None = None
    gen_finished: float | None = None


@dataclass(frozen=True, slots=True)
class Swipe:
    id: int
    message_id: int
    index: int
    text: str
    created: float
    stats: GenStats
    routing_stale: bool  # the text was edited after its routing was captured
    has_routing: bool
    info: dict[str, Any] = field(default_factory=dict)  # imported ST swipe_info entry, kept losslessly


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    chat_id: int
    position: int
    role: str  # "user" | "assistant" | "system"
    name: str  # speaker name
    created: float
    hidden: bool  # kept in the chat, left out of the prompt (ST is_system)
    swipe_index: int  # the current swipe
    swipes: tuple[Swipe, ...]
    source: dict[str, Any] = field(default_factory=dict)  # imported ST line, kept losslessly

    @property
    def current(self) -> Swipe:
        return self.swipes[self.swipe_index]

    @property
    def text(self) -> str:
        return self.current.text


@dataclass(frozen=True, slots=True, eq=False)
class RoutingRecord:
    """Routing of a run of tokens; see the module docstring for shapes."""

    probs: np.ndarray
    experts: np.ndarray
    token_ids: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        p, e, t, o = self.probs, self.experts, self.token_ids, self.offsets
        if p.ndim != 3 or e.ndim != 3 or t.ndim != 1 or o.ndim != 1:
            raise StoreError("routing needs probs [T,L,E], experts [T,L,k], token_ids [T], offsets [T]")
        n = p.shape[0]
        if e.shape[:2] != p.shape[:2] or t.shape[0] != n or o.shape[0] != n:
            raise StoreError(f"routing shapes disagree: probs {p.shape}, experts {e.shape}, ids {t.shape}")

    @property
    def n_tokens(self) -> int:
        return int(self.probs.shape[0])

    def summary(self) -> dict[str, Any]:
        """Compact summary for exports: shape and each expert's share of top-k selections."""
        n_tok, n_layers, n_experts = (int(x) for x in self.probs.shape)
        counts = np.bincount(self.experts.reshape(-1).astype(np.int64), minlength=n_experts)
        total = max(int(counts.sum()), 1)
        return {
            "tokens": n_tok,
            "layers": n_layers,
            "experts": n_experts,
            "k": int(self.experts.shape[2]),
            "expert_share": [round(float(c) / total, 4) for c in counts],
        }


@dataclass(frozen=True, slots=True)
class ImportedSwipe:
    text: str
    stats: GenStats = GenStats()
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImportedMessage:
    role: str
    name: str
    created: float | None
    swipes: tuple[ImportedSwipe, ...]
    swipe_index: int = 0
    hidden: bool = False
    source: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImportedChat:
    """A chat read from another app's file, ready for Store.import_chat."""

    character_name: str
    title: str
    messages: tuple[ImportedMessage, ...]
    created: float | None = None
    persona: str = ""  # a persona description kept with the chat (moechat's own, not SillyTavern's)
    authors_note: str = ""
    header: dict[str, Any] = field(default_factory=dict)
    locked_persona: str = ""  # the avatar id of the persona locked to the chat (SillyTavern's chat_metadata.persona)


@dataclass(frozen=True, slots=True)
class SkippedLine:
    """A line (JSONL) or row (JSON) an importer could not use; line numbers start at 1."""

    line: int
    reason: str
