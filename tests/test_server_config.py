"""The server a user starts is quiet, and the browser tests start exactly that server.

Streamlit's file watcher on the repository (which holds the multi-GB .venv) overflowed inotify and kept an idle
server busy; the e2e tests used to switch it off on their command line, so they never saw it.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"
sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from e2e_app import SERVER_FLAGS  # noqa: E402


def test_the_server_watches_no_files() -> None:
    server = tomllib.loads(CONFIG.read_text())["server"]
    assert server["fileWatcherType"] == "none"
    assert server["runOnSave"] is False


def test_the_browser_tests_change_nothing_but_where_the_server_listens() -> None:
    names = {flag.removeprefix("--").split("=")[0] for flag in SERVER_FLAGS}
    assert names <= {"server.headless", "server.address"}, f"e2e-only settings: {sorted(names)}"


def test_no_full_garbage_collection_after_every_run() -> None:
    # Streamlit's default gc.collect(2) after each script run cost about 0.4 s per rerun with a million-row
    # collection loaded (measured with py-spy on a map selection); Python's own thresholds still collect.
    assert tomllib.loads(CONFIG.read_text())["runner"]["postScriptGC"] is False
