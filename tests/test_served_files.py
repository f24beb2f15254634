"""What `python app.py` serves from its data dir: the avatars (the chat shows them by URL), nothing else. The
database holds every visitor's chats and the browser secret signs who they are: neither may be fetched by path
(Gradio's file route serves anything under `allowed_paths`)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from moechat.cards.png import default_avatar
from moechat.library import avatar_path
from moechat.store.records import LOCAL_OWNER
from moechat.store.store import DB_NAME
from tests.app_server import AppServer, StartApp


@pytest.fixture(scope="module")
def server(tiny_moe_path: Path, tmp_path_factory: pytest.TempPathFactory, module_app_server: StartApp) -> AppServer:
    return module_app_server(tiny_moe_path, tmp_path_factory.mktemp("served") / "data")


def status(server: AppServer, path: Path) -> int:
    try:
        with urllib.request.urlopen(f"{server.url}gradio_api/file={path.resolve()}", timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_database_and_the_secret_are_not_served(server: AppServer) -> None:
    for name in (DB_NAME, f"{DB_NAME}-wal", "browser_secret"):
        assert (server.data_dir / name).is_file(), name  # they exist: the refusal is not a missing file
        assert status(server, server.data_dir / name) == 403, name


def test_avatars_are_served(server: AppServer) -> None:
    path = avatar_path(server.data_dir, LOCAL_OWNER, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(default_avatar("Someone"))
    assert status(server, path) == 200
