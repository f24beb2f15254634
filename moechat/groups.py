"""A group chat as the prompt and the reply-order rules see it, read from the store: the members' cards
(`prompt/group.py`'s `Group`), the members and messages as `prompt/group_order.py` reads them, who speaks next and
who said a message. `chat.py` runs the turns."""

from __future__ import annotations

import random
from collections.abc import Sequence

from moechat.cards.card import Card, card_from_json
from moechat.cards.macros import substitute
from moechat.errors import StoreError
from moechat.prompt.group import GENERATION_MODES, GenerationMode, Group
from moechat.prompt.group_order import STRATEGIES, Member, Said, Strategy, next_speakers, same_speaker, talkativeness
from moechat.store.groups import Greeting, GroupInfo
from moechat.store.records import Message
from moechat.store.store import Store


def member_card(store: Store, character_id: int) -> Card:
    return card_from_json(store.character(character_id).card())


def prompt_group(store: Store, group: GroupInfo) -> Group:
    """The group as its prompts are built: the members' cards in order, muted ones, generation mode."""
    mode: GenerationMode = "swap"
    for known in GENERATION_MODES:
        mode = known if known == group.generation_mode else mode
    return Group(
        name=group.name,
        members=tuple(member_card(store, m.character_id) for m in group.members),
        muted=frozenset(i for i, m in enumerate(group.members) if m.muted),
        mode=mode,
        join_prefix=group.join_prefix,
        join_suffix=group.join_suffix,
    )


def order_members(store: Store, group: GroupInfo) -> list[Member]:
    """The members as the reply-order rules see them (keyed by character id, talkativeness from their cards)."""
    out = []
    for m in group.members:
        card = member_card(store, m.character_id)
        out.append(Member(str(m.character_id), card.name, talkativeness(card.extensions), m.muted))
    return out


def said(messages: Sequence[Message], speakers: dict[int, int]) -> list[Said]:
    """The chat as the reply-order rules see it."""
    return [
        Said(
            m.text,
            is_user=m.role == "user",
            speaker=str(speakers[m.id]) if m.id in speakers else None,
            name=m.name,
            hidden=m.hidden or m.role == "system",
        )
        for m in messages
    ]


def turn_rng(chat_id: int, n_messages: int, seed: int | None) -> random.Random:
    """The randomness of one group turn: repeatable when the sampling seed is set."""
    return random.Random(f"group|{chat_id}|{n_messages}|{seed}") if seed is not None else random.Random()


def next_members(store: Store, chat_id: int, group: GroupInfo, user_input: str, seed: int | None) -> list[int]:
    """The character ids who reply now, in order, by the group's strategy."""
    messages = store.messages(chat_id)
    strategy: Strategy = "natural"
    for known in STRATEGIES:
        strategy = known if known == group.strategy else strategy
    keys = next_speakers(
        strategy,
        order_members(store, group),
        said(messages, store.speakers(chat_id)),
        user_input=user_input,
        allow_self_responses=group.allow_self_responses,
        rng=turn_rng(chat_id, len(messages), seed),
    )
    return [int(k) for k in keys]


def speaker_of(store: Store, chat_id: int, group: GroupInfo, upto: Message | None = None) -> int:
    """Who swipes, regenerates or continues (`upto`: that message; else the chat's end): SillyTavern's
    `activateSwipe` over the messages up to it; the first member when the chat has no one to follow."""
    messages = [m for m in store.messages(chat_id) if upto is None or m.position <= upto.position]
    key = same_speaker(order_members(store, group), said(messages, store.speakers(chat_id)), random.Random(chat_id))
    if key is None and upto is not None and upto.role == "assistant":
        raise StoreError(f"{upto.name or 'that member'} is no longer in the group {group.name!r}: add them back first")
    return int(key) if key is not None else group.members[0].character_id


def greetings(store: Store, group: GroupInfo, user_name: str, persona: str = "") -> list[Greeting]:
    """Each member's greeting (first message and alternate greetings as swipes), macros replaced, in order."""
    out = []
    for m in group.members:
        card = member_card(store, m.character_id)
        texts = (
            substitute(g, char=card.char_name, user=user_name, persona=persona, seed=m.character_id)
            for g in card.greetings
            if g
        )
        out.append(Greeting(m.character_id, card.name, tuple(texts)))
    return out
