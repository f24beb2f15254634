"""`python -m moechat prompt`: the exact prompt on stdout, the budget report on stderr."""

import json
from pathlib import Path

import pytest

from moechat.commands.prompt import main, read_st_chat
from moechat.errors import PromptError
from moechat.prompt.assemble import Message

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Seraphina",
        "description": "A forest guardian.",
        "personality": "kind",
        "scenario": "",
        "first_mes": "Welcome, {{user}}.",
        "mes_example": "",
        "creator_notes": "never sent",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "tags": [],
        "creator": "",
        "character_version": "",
        "extensions": {},
        "character_book": {
            "extensions": {},
            "entries": [{"keys": ["glade"], "content": "The glade heals.", "extensions": {}, "enabled": True,
                         "insertion_order": 0, "position": "after_char"}],
        },
    },
}  # fmt: skip
CHAT = [
    {"user_name": "Ann", "character_name": "Seraphina", "chat_metadata": {}},
    {"name": "Seraphina", "is_user": False, "is_system": False, "mes": "Welcome, Ann."},
    {"name": "Ann", "is_user": True, "is_system": False, "mes": "Where is the glade?"},
    {"name": "Ann", "is_user": True, "is_system": True, "mes": "hidden"},
]
EXPECTED = (
    "<|system|>Enter RP mode. Pretend to be Seraphina whose persona follows:\nA forest guardian.\n"
    "Seraphina's personality: kind\nThe glade heals.\nYou shall reply to the user while staying in character, "
    "and generate long responses.<|model|>Seraphina: Welcome, Ann.<|user|>Ann: Where is the glade?"
    "<|user|>Ann: Is it far?<|model|>Seraphina:"
)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    card = tmp_path / "sera.json"
    card.write_text(json.dumps(CARD))
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps(line) for line in CHAT) + "\n")
    return card, chat


def test_prints_the_exact_prompt_and_an_estimated_report(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    card, chat = files
    assert main([str(card), "--history", str(chat), "--message", "Is it far?"]) == 0
    out, err = capsys.readouterr()
    assert out == EXPECTED
    assert "format metharme" in err and "estimated" in err and 'stop strings: "<|user|>"' in err
    assert "never sent" not in out


def test_new_chat_starts_with_the_greeting(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    card, _ = files
    assert main([str(card), "--format", "vicuna", "--user", "Bo", "--mode", "impersonate"]) == 0
    out, _ = capsys.readouterr()
    assert out.endswith("ASSISTANT: Welcome, Bo.</s>USER:")


def test_st_jsonl_keeps_visible_messages(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in CHAT))
    chat = read_st_chat(path)
    assert chat.messages == [Message("model", "Welcome, Ann."), Message("user", "Where is the glade?")]
    assert chat.user_name == "Ann"
    path.write_text("\n".join(json.dumps(line) for line in CHAT[1:]))
    assert read_st_chat(path).user_name is None  # group chats have no header


def test_bad_history_and_unknown_format_are_prompt_errors(files: tuple[Path, Path], tmp_path: Path) -> None:
    card, _ = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(PromptError, match="not a readable SillyTavern"):
        main([str(card), "--history", str(bad)])
    with pytest.raises(PromptError, match="known formats: metharme"):
        main([str(card), "--format", "mistral"])


def test_model_tokenizer_counts_and_picks_the_template(
    files: tuple[Path, Path], tiny_moe_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card, chat = files
    assert main([str(card), "--history", str(chat), "--model", str(tiny_moe_path), "--context", "512"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("<|system|>Write Seraphina's next reply") and out.endswith(
        "<|user|>Where is the glade?\n<|assistant|>"
    )
    assert "format jinja" in err and "of 352 tokens (counted with the tokenizer of" in err
