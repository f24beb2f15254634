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
    "Seraphina's personality: kind\nThe glade heals.\n\nYou shall reply to the user while staying in character, "
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
    assert out.startswith("<|system|>Continue this roleplay as Seraphina") and out.endswith(
        "<|user|>Where is the glade?\n<|assistant|>"
    )
    assert "format jinja" in err and "of 352 tokens (counted with the tokenizer of" in err


def test_sillytavern_presets_and_world_info_files(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card, chat = files
    instruct = tmp_path / "Turn.json"
    instruct.write_text(json.dumps({
        "name": "Turn", "input_sequence": "<|turn|>user", "output_sequence": "<|turn|>model",
        "system_sequence": "<|turn|>system", "stop_sequence": "<|/turn|>", "wrap": True, "macro": True,
        "names_behavior": "force", "system_sequence_prefix": "", "system_sequence_suffix": "",
        "first_output_sequence": "", "last_output_sequence": "", "output_suffix": "<|/turn|>\n",
        "input_suffix": "<|/turn|>\n", "system_suffix": "<|/turn|>\n", "skip_examples": False,
        "user_alignment_message": "", "system_same_as_user": False, "last_system_sequence": "",
    }))  # fmt: skip
    context = tmp_path / "ctx.json"
    context.write_text(
        json.dumps(
            {
                "name": "Plain",
                "story_string": "<|turn|>system\n{{#if wiBefore}}{{wiBefore}}\n{{/if}}{{description}}{{trim}}<|/turn|>",
                "example_separator": "",
                "chat_start": "",
            }
        )
    )
    world = tmp_path / "world.json"
    world.write_text(
        json.dumps({"entries": {"0": {"uid": 0, "key": ["far"], "content": "It is near.", "order": 5, "position": 0}}})
    )
    args = [str(card), "--history", str(chat), "--message", "Is it far?", "--format", str(instruct)]
    assert main([*args, "--context-template", str(context), "--lore", str(world)]) == 0
    out, err = capsys.readouterr()
    assert out == (
        "<|turn|>system\nIt is near.\nA forest guardian.<|/turn|>\n<|turn|>model\nWelcome, Ann."
        "<|/turn|>\n<|turn|>user\nWhere is the glade?<|/turn|>\n<|turn|>user\nIs it far?<|/turn|>\n"
        "<|turn|>model\n"
    )
    assert "lore: world #0 (key 'far')" in err and "lore: Seraphina's Lorebook #0 (key 'glade')" in err
    assert '"\\n<|/turn|>"' in err  # wrap: SillyTavern stops on sequences at a line start
    with pytest.raises(PromptError, match="context-template goes with"):
        main([str(card), "--context-template", str(context)])


@pytest.mark.parametrize("fmt", ["metharme", "preset"])
def test_cli_prints_byte_for_byte_what_the_app_sends(
    files: tuple[Path, Path], tiny_moe_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    from moechat.chat import TurnOptions, prompt_for
    from moechat.chatfiles.sillytavern import to_jsonl
    from moechat.engine.engine import Engine
    from moechat.engine.types import Sampling
    from moechat.prompt.st_preset import load_preset
    from moechat.store.store import Store

    card_path, _ = files
    preset_path = tmp_path / "Brief.json"
    preset_path.write_text(
        json.dumps(
            {
                "name": "Brief",
                "input_sequence": "## Ask:",
                "wrap": True,
                "output_sequence": "## Answer:",
                "output_suffix": "\n\n",
                "input_suffix": "\n\n",
                "names_behavior": "always",
                "macro": True,
            }
        )
    )
    with Store.open(tmp_path / "data") as store, Engine.load(tiny_moe_path, n_ctx=1024, capture="off") as engine:
        char = store.add_character("Seraphina", CARD)
        chat = store.create_chat(char.id, greetings=("Welcome, Ann.",))
        store.add_message(chat.id, "user", "Where is the glade?\r\nI am lost.", name="Ann")
        preset = load_preset(preset_path.read_text()) if fmt == "preset" else None
        options = TurnOptions(Sampling(max_tokens=200), format="metharme", user_name="Ann", preset=preset)
        app = prompt_for(engine, store, chat.id, options, "reply", store.messages(chat.id))
        history = tmp_path / "chat.jsonl"
        history.write_text(to_jsonl(store.chat(chat.id), store.messages(chat.id), {}, "Ann"), encoding="utf-8")
    fmt_args = ["--format", str(preset_path)] if fmt == "preset" else ["--format", "metharme"]
    args = [str(card_path), "--history", str(history), "--model", str(tiny_moe_path), "--context", "1024"]
    assert main([*args, "--reserve", "200", *fmt_args]) == 0
    cli = capsys.readouterr().out
    assert cli == app.text
    assert "\r" not in cli and "The glade heals." in cli and "Where is the glade?\nI am lost." in cli
