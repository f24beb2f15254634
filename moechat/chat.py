"""One chat turn as a generator of Updates (no Gradio): prompt built, user message committed before
generation, tokens streamed, the reply and its routing saved as they grow (a kill leaves the partial
reply marked stopped, never torn) and finally marked finished or stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple, TypedDict

import numpy as np

from moechat.cards import macros
from moechat.cards.card import Card, card_from_json
from moechat.cards.world_info import Rule, parse_lore
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling, Token, Waiting
from moechat.errors import StoreError
from moechat.groups import greetings, next_members, prompt_group, speaker_of
from moechat.prompt import formats
from moechat.prompt.assemble import AuthorsNote, Message, Persona, Prompt, Report
from moechat.prompt.group import build_group_turn
from moechat.prompt.st_preset import StPreset
from moechat.prompt.turn import Lore, Turn, TurnPrompt, build_turn, card_lore
from moechat.routing.metrics import Routing
from moechat.store.records import Message as StoredMessage
from moechat.store.records import RoutingRecord, Swipe
from moechat.store.store import Store
from moechat.store.worlds import World

SAVE_EVERY_S = 0.5  # the reply so far is written to the store at most this often (and at the end)
Mode = Literal["reply", "continue", "impersonate"]


@dataclass(frozen=True)
class TurnOptions:
    """Per-turn settings from the UI or API."""

    sampling: Sampling = field(default_factory=Sampling)
    format: str | None = None  # prompt format; None: the chat's, else the model's default
    user_name: str = "You"
    persona: str = ""  # the user's persona description; "" falls back to the chat's
    persona_id: int | None = None  # the stored persona picked in the UI (a lock or the default may apply instead)
    system_prompt: str | None = None  # the global system prompt; None: the format's default
    label: str = ""  # how the reply's swipe is labelled (e.g. "top-1 routing"); "" = the model's name
    preset: StPreset | None = None  # SillyTavern instruct + context presets; None: `format`


@dataclass(frozen=True, eq=False)
class Update:
    """The turn so far. `probs` has one row per entry of `token_texts` (this turn's generated tokens;
    NaN rows where a token has no routing, e.g. with capture off); the prompt_* fields are the routing
    of the user message's own tokens (empty for regenerate/continue)."""

    chat_id: int
    message_id: int
    swipe_index: int
    text: str
    token_texts: tuple[str, ...]
    probs: np.ndarray  # float32 [tokens, layers, experts]
    report: Report
    prompt_message_id: int | None = None
    prompt_token_texts: tuple[str, ...] = ()
    prompt_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    finish: str | None = None  # None while streaming; then "eos", "length", "stop" or "cancelled"
    tokens_per_s: float = 0.0
    waiting: int = 0  # while the turn waits for the model: its place in the queue (1 = next); then 0


def start_chat(
    store: Store,
    character_id: int,
    *,
    user_name: str = "You",
    title: str = "",
    persona_id: int | None = None,
    persona: str = "",
) -> int:
    """A new chat whose first message is the card's greeting, with alternate greetings as its swipes. `{{user}}`
    and `{{persona}}` in them are the persona's name and description: the character's locked persona, else
    `persona_id`, else the default, else `user_name` and `persona`."""
    card = character_card(store, character_id)
    user = _greeted(store, character_id, persona_id, Persona(user_name, persona))
    greetings = tuple(
        macros.substitute(g, char=card.char_name, user=user.name, persona=user.description, seed=character_id)
        for g in card.greetings
        if g
    )
    return store.create_chat(character_id, title=title, greetings=greetings).id


def _greeted(store: Store, character_id: int | None, persona_id: int | None, typed: Persona) -> Persona:
    """Who a new chat's greetings address: the character's locked persona, else the picked one, else the
    default, else the name and persona typed in the UI."""
    chosen = store.chosen_persona(character_id=character_id, picked=persona_id)
    return Persona(chosen.persona.name, chosen.persona.description) if chosen else typed


def turn_persona(store: Store, chat_id: int, options: TurnOptions) -> Persona:
    """The user of a turn: the stored persona `store.personas.choose` picks (chat lock > character lock > the UI's
    pick > default), else the name and persona typed in the UI (the chat's persona text when none was typed)."""
    chosen = store.chosen_persona(chat_id, picked=options.persona_id)
    if chosen is not None:
        return Persona(chosen.persona.name, chosen.persona.description)
    return Persona(options.user_name, options.persona or store.chat(chat_id).persona)


def start_group_chat(
    store: Store,
    group_id: int,
    *,
    user_name: str = "You",
    title: str = "",
    persona_id: int | None = None,
    persona: str = "",
) -> int:
    """A new chat of a group, opening with each member's greeting in order (alternate greetings as swipes), `{{user}}`
    and `{{persona}}` as in `start_chat` (the picked persona, else the default, else `user_name` and `persona`)."""
    group = store.group(group_id)
    user = _greeted(store, None, persona_id, Persona(user_name, persona))
    return store.create_group_chat(group_id, greetings(store, group, user.name, user.description), title=title).id


def character_card(store: Store, character_id: int) -> Card:
    return card_from_json(store.character(character_id).card())


def send(
    engine: Engine,
    store: Store,
    chat_id: int,
    user_text: str,
    options: TurnOptions = TurnOptions(),
    cancel: threading.Event | None = None,
) -> Iterator[Update]:
    """The user says `user_text` (committed before generation starts); the character replies."""
    if not user_text.strip():
        raise StoreError("nothing to send: the message is empty")
    user = store.add_message(chat_id, "user", user_text, name=turn_persona(store, chat_id, options).name)
    group = store.chat_group(chat_id)
    if group is None:
        yield from _turn(engine, store, chat_id, options, cancel, "reply", prompt_message=user)
        return
    speakers = next_members(store, chat_id, group, user_text, options.sampling.seed)
    for i, speaker in enumerate(speakers):  # one after another, as SillyTavern drafts them; stop ends the round
        if cancel is not None and cancel.is_set():
            return
        yield from _turn(
            engine, store, chat_id, options, cancel, "reply", prompt_message=None if i else user, speaker=speaker
        )


def trigger(
    engine: Engine,
    store: Store,
    chat_id: int,
    character_id: int | None = None,
    options: TurnOptions = TurnOptions(),
    cancel: threading.Event | None = None,
) -> Iterator[Update]:
    """A group member speaks without a user message: `character_id` (SillyTavern's "speak" button, any member,
    muted too), else whoever the group's strategy picks from the last message."""
    group = store.chat_group(chat_id)
    if group is None:
        raise StoreError("only a group chat has members to ask: this chat has one character")
    if character_id is not None:
        group.member(character_id)
        speakers = [character_id]
    else:
        speakers = next_members(store, chat_id, group, "", options.sampling.seed)
    for speaker in speakers:
        if cancel is not None and cancel.is_set():
            return
        yield from _turn(engine, store, chat_id, options, cancel, "reply", speaker=speaker)


def regenerate(
    engine: Engine,
    store: Store,
    chat_id: int,
    options: TurnOptions = TurnOptions(),
    cancel: threading.Event | None = None,
) -> Iterator[Update]:
    """A new swipe for the last reply, generated from the chat before it."""
    last = _last_reply(store, chat_id)
    yield from _turn(engine, store, chat_id, options, cancel, "reply", target=last)


def continue_reply(
    engine: Engine,
    store: Store,
    chat_id: int,
    options: TurnOptions = TurnOptions(),
    cancel: threading.Event | None = None,
) -> Iterator[Update]:
    """More of the last reply: new tokens are appended to its current swipe."""
    last = _last_reply(store, chat_id)
    yield from _turn(engine, store, chat_id, options, cancel, "continue", target=last)


def impersonate(
    engine: Engine,
    store: Store,
    chat_id: int,
    options: TurnOptions = TurnOptions(),
    cancel: threading.Event | None = None,
) -> Iterator[str]:
    """Drafts of the user's next message, written by the model; nothing is stored."""
    p = prompt_for(engine, store, chat_id, options, "impersonate", _visible(store, chat_id))
    sampling = replace(options.sampling, stop=_stops(options.sampling, p))
    text = ""
    for tok in engine.stream(engine.tokenize(p.text), sampling, cancel):
        if not tok.prompt:
            text += tok.text
            yield text.lstrip()


def prompt_for(
    engine: Engine,
    store: Store,
    chat_id: int,
    options: TurnOptions,
    mode: Mode,
    messages: list[StoredMessage],
    speaker: int | None = None,
) -> Prompt:
    """The exact prompt for the next turn of `chat_id` over `messages` (what the model will see)."""
    return turn_for(engine, store, chat_id, options, mode, messages, speaker).prompt


def turn_for(
    engine: Engine,
    store: Store,
    chat_id: int,
    options: TurnOptions,
    mode: Mode,
    messages: list[StoredMessage],
    speaker: int | None = None,
) -> TurnPrompt:
    """The prompt and the lore that fired, built by `prompt.turn.build_turn` (as the `prompt` CLI does); in a group
    chat for member `speaker` (default: who would swipe the last reply) by `prompt.group.build_group_turn`."""
    chat = store.chat(chat_id)
    group = store.chat_group(chat_id)
    character_id = (
        chat.character_id if group is None else speaker if speaker is not None else speaker_of(store, chat_id, group)
    )
    card = character_card(store, character_id)
    shown = [m for m in messages if m.role != "system"]
    history = [Message("user" if m.role == "user" else "model", m.text) for m in shown]
    persona = turn_persona(store, chat_id, options)
    names = [m.name or (persona.name if m.role == "user" else card.name) for m in shown]
    tokens = engine.template_tokens()
    fmt = options.preset or formats.get_format(
        options.format or chat.format or formats.default_format(engine.info.name, engine.info.chat_template),
        engine.info.chat_template,
        bos=tokens.bos,
        eos=tokens.eos,
        ends=tokens.ends,
    )
    turn = Turn(
        fmt,
        persona=persona,
        note=AuthorsNote(chat.authors_note),
        system_prompt=options.system_prompt,
        context=engine.n_ctx,
        reserve=min(options.sampling.max_tokens, engine.n_ctx // 2),
        mode=mode,
        seed=chat_id,
    )
    lore = stored_lore(store, card, character_id, chat_id)
    if group is not None:
        index = [m.character_id for m in group.members].index(character_id)
        g = prompt_group(store, group)
        return build_group_turn(g, index, history, turn, lore, names=names, count_tokens=engine.count_tokens)
    return build_turn(card, history, turn, lore, names=names, count_tokens=engine.count_tokens)


def stored_lore(store: Store, card: Card, character_id: int, chat_id: int) -> Lore:
    """The chat's lore as SillyTavern gathers it: the character's book (or the stored World Info its
    `extensions.world` names, which replaces it), books attached to the character, to the chat, and globally."""

    def rules(worlds: Sequence[World]) -> list[Rule]:
        return [rule for w in worlds for rule in parse_lore(w.json, w.name).rules]

    linked = card.extensions.get("world")
    named = [w for w in store.worlds() if isinstance(linked, str) and linked and w.name == linked]
    own = rules(named) if named else card_lore(card)
    extra = [w for w in store.attached_worlds("character", character_id) if w not in named]
    return Lore(
        [*own, *rules(extra)], rules(store.attached_worlds("chat", chat_id)), rules(store.attached_worlds("global"))
    )


def _visible(store: Store, chat_id: int) -> list[StoredMessage]:
    return [m for m in store.messages(chat_id) if not m.hidden]


def _last_reply(store: Store, chat_id: int) -> StoredMessage:
    messages = store.messages(chat_id)
    if not messages or messages[-1].role != "assistant":
        raise StoreError("the last message is not the character's: send a message first")
    return messages[-1]


def _stops(sampling: Sampling, p: Prompt) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*sampling.stop, *p.stops)))


def _turn(
    engine: Engine,
    store: Store,
    chat_id: int,
    options: TurnOptions,
    cancel: threading.Event | None,
    mode: Mode,
    *,
    target: StoredMessage | None = None,
    prompt_message: StoredMessage | None = None,
    speaker: int | None = None,
) -> Iterator[Update]:
    visible = _visible(store, chat_id)
    if target is not None and mode == "reply":  # regenerate: the chat as it was before that reply
        visible = [m for m in visible if m.position < target.position]
    group = store.chat_group(chat_id)
    if group is not None and speaker is None:  # swipe, regenerate, continue: the member who said it
        speaker = speaker_of(store, chat_id, group, target)
    p = prompt_for(engine, store, chat_id, options, mode, visible, speaker)
    card = character_card(store, speaker if speaker is not None else store.chat(chat_id).character_id)
    if mode == "continue":
        assert target is not None, "continue extends a reply"
        swipe = target.current
    else:
        swipe = store.begin_reply(
            chat_id, name=card.name, model=options.label or engine.info.name, message_id=target.id if target else None
        )
        if speaker is not None:
            store.set_speaker(swipe.message_id, speaker)
    reply = _Reply(engine, store, chat_id, swipe, p.report)
    sampling = replace(options.sampling, stop=_stops(options.sampling, p))
    tokens = engine.stream_waiting(engine.tokenize(p.text), sampling, cancel)
    try:
        yield from reply.run(tokens, prompt_message)
    finally:
        reply.close()


class _Routed(NamedTuple):
    """A token that has routing, and where its text starts."""

    token: Token
    routing: Routing
    offset: int


class _PromptRouting(TypedDict, total=False):
    """Update's prompt_* fields, once the user message's routing is known."""

    prompt_message_id: int
    prompt_token_texts: tuple[str, ...]
    prompt_probs: np.ndarray


class _Reply:
    """Folds a token stream into Updates and saves the reply as it grows (into `swipe`, after its text)."""

    def __init__(self, engine: Engine, store: Store, chat_id: int, swipe: Swipe, report: Report) -> None:
        self.store, self.chat_id, self.swipe, self.report = store, chat_id, swipe, report
        self.swipe_id, self.text = swipe.id, swipe.text
        info = engine.info
        self.probs = np.full((0, info.n_layers, max(info.n_experts, 1)), np.nan, np.float32)
        self.texts: list[str] = []
        self.rows: list[_Routed] = []  # tokens with routing, offsets in self.text
        self.saved_text, self.saved_rows, self.last_save = len(self.text), 0, time.monotonic()
        self.prompt_fields: _PromptRouting = {}
        self.t_first: float | None = None
        self.finish: str | None = None
        self.rate = 0.0

    def run(self, tokens: Iterator[Token | Waiting], prompt_message: StoredMessage | None) -> Iterator[Update]:
        prompt: list[Token] = []
        for tok in tokens:
            if isinstance(tok, Waiting):
                yield replace(self._update(), waiting=tok.place)
                continue
            if tok.prompt:
                prompt.append(tok)
                continue
            if self.t_first is None:
                self.t_first = time.monotonic()
                if prompt_message is not None:
                    self._save_prompt_routing(prompt, prompt_message)
            self._add(tok)
            if time.monotonic() - self.last_save >= SAVE_EVERY_S:
                self._save()
            yield self._update()
        self.finish = self.finish or "length"

    def _add(self, tok: Token) -> None:
        if tok.finish:
            self.finish = tok.finish
        if tok.finish == "eos" or tok.id < 0:
            self.text += tok.text  # no token to show: release held text only
            return
        if len(self.probs) == len(self.texts):  # one row per shown token; NaN where it has no routing
            grown = np.full((max(64, 2 * len(self.probs)), *self.probs.shape[1:]), np.nan, np.float32)
            grown[: len(self.probs)] = self.probs
            self.probs = grown
        if tok.routing is not None:
            self.rows.append(_Routed(tok, tok.routing, len(self.text)))
            self.probs[len(self.texts)] = tok.routing.probs
        self.texts.append(tok.text)
        self.text += tok.text

    def _update(self) -> Update:
        if self.t_first is not None and len(self.texts) > 1:
            self.rate = (len(self.texts) - 1) / max(time.monotonic() - self.t_first, 1e-9)
        return Update(
            chat_id=self.chat_id,
            message_id=self.swipe.message_id,
            swipe_index=self.swipe.index,
            report=self.report,
            text=self.text,
            token_texts=tuple(self.texts),
            probs=self.probs[: len(self.texts)],
            finish=self.finish,
            tokens_per_s=self.rate,
            **self.prompt_fields,
        )

    def _save(self) -> None:
        new_rows = self.rows[self.saved_rows :]
        chunk = self.text[self.saved_text :]
        record = _record(new_rows, base=self.saved_text) if new_rows else None
        if chunk or record is not None:
            self.store.append_to_swipe(self.swipe_id, chunk, record)
        self.saved_text, self.saved_rows, self.last_save = len(self.text), len(self.rows), time.monotonic()

    def _save_prompt_routing(self, prompt: list[Token], message: StoredMessage) -> None:
        joined = "".join(t.text for t in prompt)
        start = joined.rfind(message.text)
        if start < 0 or not message.text or prompt[0].routing is None:
            return
        end, pos, picked = start + len(message.text), 0, []
        for tok in prompt:  # all have routing: the engine gives it to every token of a stream or to none
            if pos < end and pos + len(tok.text) > start and tok.routing is not None:
                picked.append(_Routed(tok, tok.routing, max(pos - start, 0)))  # straddling the start: from 0
            pos += len(tok.text)
        self.store.set_prompt_routing(message.id, _record(picked))
        self.prompt_fields = _PromptRouting(
            prompt_message_id=message.id,
            prompt_token_texts=tuple(r.token.text for r in picked),
            prompt_probs=np.stack([r.routing.probs for r in picked]),
        )

    def close(self) -> None:
        """Save what is left and mark the swipe finished, or stopped (cancelled, abandoned, failed)."""
        self._save()
        finished = self.finish in ("eos", "length", "stop")
        self.store.finish_swipe(
            self.swipe_id, stopped=not finished, tokens_per_s=self.rate or None, n_tokens=len(self.texts)
        )


def _record(rows: list[_Routed], base: int = 0) -> RoutingRecord:
    """The rows' routing, offsets counted from `base`."""
    return RoutingRecord(
        probs=np.stack([r.routing.probs for r in rows]),
        experts=np.stack([r.routing.experts for r in rows]),
        token_ids=np.array([r.token.id for r in rows], np.int32),
        offsets=np.array([r.offset - base for r in rows], np.int32),
    )
