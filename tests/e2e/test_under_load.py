"""The browser scenarios hold up with every core busy: one CPU-bound process per core runs beside the server while
a bad input, then a car, are uploaded and the map is opened (the pair that failed under load before: after a bad
input the next car's chip showed while the page still said "Waiting for a photo.")."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_app import AppPage, StreamlitServer
from PIL import Image

pytestmark = pytest.mark.e2e


@pytest.fixture
def busy_cores() -> Iterator[list[int]]:
    """One spinning process per core for the length of the test; their pids."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    yield [spinner.pid for spinner in spinners]
    for spinner in spinners:
        spinner.kill()
        spinner.wait(timeout=30)


def test_uploads_and_pages_work_with_every_core_busy(
    busy_cores: list[int],
    open_app: Callable[..., AppPage],
    accept_server: StreamlitServer,
    car_photo_path: Path,
    tmp_path: Path,
) -> None:
    tiny = tmp_path / "tiny.png"
    with Image.open(car_photo_path) as photo:
        photo.convert("RGB").resize((8, 8)).save(tiny)
    app = open_app(accept_server)
    refused = app.upload(tiny)
    app.expect(any("too small" in e for e in refused.errors), f"the 8 x 8 image is refused: {refused.messages}")
    app.expect_scored(app.upload(car_photo_path))
    app.navigate("Explore the map")
    app.expect_text("cars shown")
    app.expect_no_traceback()
    assert all(Path(f"/proc/{pid}").exists() for pid in busy_cores), "the cores stayed busy throughout"
