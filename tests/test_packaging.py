"""The Space's requirements.txt and README front matter agree with pyproject.toml."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_requirements_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {d for d in project["dependencies"] if not d.startswith("gradio")}
    wanted |= set(project["optional-dependencies"]["demo"])
    assert requirement_lines() == wanted


def test_space_front_matter_pins_the_same_gradio():
    text = (ROOT / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = next(d for d in project["dependencies"] if d.startswith("gradio=="))
    assert front["sdk"] == "gradio" and pinned == f"gradio=={front['sdk_version']}"
    assert front["app_file"] == "app.py"
    assert front["python_version"] == "3.11"
    assert "mradermacher/PygWin-2x7B-GGUF" in front["models"]


def test_readme_first_screen_has_the_two_commands_and_ci_runs_the_test_one():
    text = (ROOT / "README.md").read_text()
    body = text.split("---", 2)[2]
    blocks = [b.split("```", 1)[0].strip() for b in body.split("```bash")[1:3]]
    assert blocks[0] == 'pip install -e ".[demo]" && python app.py'
    assert blocks[1].endswith('pip install -e ".[test]" && python -m pytest')
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()
