"""Shared fixtures: tiny models, an engine, a store, `python app.py` servers and a headless chromium.

No test touches the network: the Hub is forced offline for the whole session. Models are generated per test
session with moechat.gguf.tiny (random weights, fixed seeds; the specs are in tests/models.py), never committed.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from moechat.engine.engine import Engine
from moechat.gguf.tiny import write_tiny_gguf
from moechat.store.store import Store
from tests.app_server import ARGS, CHROMIUM, AppServer, StartApp
from tests.models import SHAPES

try:  # browser tests: UI events queue behind each other on slow shared machines, so assertions wait 20 s, not 5
    from playwright.sync_api import Browser, expect

    expect.set_options(timeout=20_000)
except ImportError:
    pass


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny model shape, written once per session: {name: path}."""
    root = tmp_path_factory.mktemp("models")
    return {name: write_tiny_gguf(root / f"{name}.gguf", spec) for name, spec in SHAPES.items()}


@pytest.fixture(scope="session")
def tiny_moe_path(tiny_models: dict[str, Path]) -> Path:
    """The flagship's shape in miniature: 2 experts, top-2, float32."""
    return tiny_models["moe2"]


@pytest.fixture(scope="module")
def engine(tiny_moe_path: Path) -> Iterator[Engine]:
    """The tiny MoE in real llama.cpp, one per test module, with room for long greedy runs."""
    with Engine.load(tiny_moe_path, n_ctx=2048) as eng:
        yield eng


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite chat store in the test's own directory."""
    with Store.open(tmp_path) as s:
        yield s


def _app_servers() -> Iterator[StartApp]:
    started: list[AppServer] = []

    def start(model: Path, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> AppServer:
        server = AppServer(model, data_dir, *extra, env=env)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def app_server() -> Iterator[StartApp]:
    """`app_server(model, data_dir, *app_args, env=…)` starts `python app.py`; stopped after the test."""
    yield from _app_servers()


@pytest.fixture(scope="module")
def module_app_server() -> Iterator[StartApp]:
    """As `app_server`, for module-scoped fixtures: the servers are stopped after the module."""
    yield from _app_servers()


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    """Debian's chromium, headless, one per test module; skips where playwright or chromium is missing."""
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the `browser` fixture is a browser test, whether or not its module says so."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
