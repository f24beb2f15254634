"""Settings precedence: flags > MOECHAT_* env > defaults; bad values name the flag and the variable."""

from pathlib import Path

import pytest

from moechat.config import Settings, build_parser, load_settings
from moechat.errors import ConfigError

HOME = {"HOME": "/home/u"}


def test_defaults() -> None:
    s = load_settings([], HOME)
    assert s == Settings(data_dir=Path("/home/u/.local/share/moechat"))
    assert s.model is None and s.host == "127.0.0.1" and s.port == 7860 and not s.hosted


@pytest.mark.parametrize(
    ("argv", "env", "field", "expected"),
    [
        ([], {"MOECHAT_PORT": "8080"}, "port", 8080),
        (["--port", "9000"], {"MOECHAT_PORT": "8080"}, "port", 9000),
        ([], {"MOECHAT_DATA_DIR": "/x"}, "data_dir", Path("/x")),
        (["--data-dir", "/y"], {"MOECHAT_DATA_DIR": "/x"}, "data_dir", Path("/y")),
        ([], {"XDG_DATA_HOME": "/xdg"}, "data_dir", Path("/xdg/moechat")),
        (["--model", "m.gguf"], {}, "model", Path("m.gguf")),
        ([], {"MOECHAT_N_GPU_LAYERS": "0"}, "n_gpu_layers", 0),
        (["--n-gpu-layers", "-1"], {}, "n_gpu_layers", -1),
        ([], {"MOECHAT_CAPTURE": "OFF"}, "capture", "off"),
        ([], {"MOECHAT_SHARE": "yes"}, "share", True),
        (["--no-share"], {"MOECHAT_SHARE": "yes"}, "share", False),
        ([], {"SPACE_ID": "me/moechat"}, "hosted", True),
        ([], {"SPACE_ID": "me/moechat"}, "host", "0.0.0.0"),
        (["--no-hosted"], {"SPACE_ID": "me/moechat"}, "hosted", False),
        (["--hosted", "--host", "10.0.0.1"], {}, "host", "10.0.0.1"),
        ([], {"MOECHAT_MAX_UPLOAD_MB": "5"}, "max_upload_mb", 5),
        (["--n-ctx", "2048", "--threads", "3"], {}, "n_ctx", 2048),
        ([], {}, "parallel", 1),
        ([], {"SPACE_ID": "me/moechat"}, "parallel", 4),
        (["--hosted"], {"MOECHAT_PARALLEL": "8"}, "parallel", 8),
        (["--parallel", "2"], {"MOECHAT_PARALLEL": "8"}, "parallel", 2),
    ],
)
def test_precedence(argv: list[str], env: dict[str, str], field: str, expected: object) -> None:
    assert getattr(load_settings(argv, {**HOME, **env}), field) == expected


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MOECHAT_PORT": "eighty"}, "--port / MOECHAT_PORT"),
        ({"MOECHAT_PORT": "70000"}, "between 1 and 65535"),
        ({"MOECHAT_SHARE": "maybe"}, "MOECHAT_SHARE"),
        ({"MOECHAT_CAPTURE": "turbo"}, "auto, fast, python, off"),
        ({"MOECHAT_N_CTX": "10"}, "at least 256"),
        ({"MOECHAT_PARALLEL": "0"}, "--parallel / MOECHAT_PARALLEL must be between 1 and 64"),
        ({"MOECHAT_PARALLEL": "65"}, "between 1 and 64"),
    ],
)
def test_bad_values(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("/", ".")):
        load_settings([], {**HOME, **env})


def test_help_lists_every_option() -> None:
    text = build_parser().format_help()
    for flag in ("--model", "--host", "--port", "--share", "--data-dir", "--n-gpu-layers", "--n-ctx", "--threads"):
        assert flag in text
    assert "--capture" in text and "--hosted" in text and "--max-upload-mb" in text and "--parallel" in text


def test_prompt_routing_flag_and_env():
    assert load_settings([], {}).prompt_routing is True
    assert load_settings(["--no-prompt-routing"], {}).prompt_routing is False
    assert load_settings([], {"MOECHAT_PROMPT_ROUTING": "off"}).prompt_routing is False
    assert load_settings(["--prompt-routing"], {"MOECHAT_PROMPT_ROUTING": "0"}).prompt_routing is True


def test_exact_mode_from_flag_or_environment():
    assert load_settings([], {}).exact is False
    assert load_settings(["--exact"], {}).exact is True
    assert load_settings([], {"MOECHAT_EXACT": "on"}).exact is True
    assert load_settings(["--no-exact"], {"MOECHAT_EXACT": "1"}).exact is False
