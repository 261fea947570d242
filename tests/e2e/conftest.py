"""Fixtures of the browser end-to-end tests: Debian chromium through Playwright, Streamlit servers on the tiny
test bundle (tests/conftest.py) and its variants, and one page per browser context (its own Streamlit session).

Every page a test opens is photographed into test-output/e2e/ when the test ends (pass or fail), and a failing
test's report carries each page's visible text. Without /usr/bin/chromium (or $CARMORPH_CHROMIUM) the tests skip;
CI installs it in .ci/run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_app import (
    ACTIVITY_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    AppPage,
    MutableBundle,
    StreamlitServer,
    bundle_variant,
    running_streamlit,
    slug,
)

OPEN_PAGES = pytest.StashKey[list[AppPage]]()
ACCEPT_ALL = {"car": 0.0, "frontal": 0.0}  # every image passes the gate: the untrained networks always score


@pytest.fixture(scope="session")
def chromium() -> Path:
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -r requirements-dev.txt)"
    )
    if not CHROMIUM.is_file():
        reason = f"Debian chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does this)"
        if os.environ.get("CARMORPH_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=list(CHROMIUM_ARGS))
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def accept_bundle_dir(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with both gate thresholds at 0, so every photo is scored."""
    return bundle_variant(tiny_bundle_dir, tmp_path_factory.mktemp("e2e") / "accept", thresholds=ACCEPT_ALL)


@pytest.fixture(scope="session")
def accept_bundle(accept_bundle_dir: Path):
    """The accept bundle loaded in the test process: the scores the page should show, computed directly."""
    from core.artifacts import load_bundle

    return load_bundle(accept_bundle_dir)


@pytest.fixture(scope="session")
def accept_server(chromium: Path, accept_bundle_dir: Path, fixture_data_dir: Path) -> Iterator[StreamlitServer]:
    """One app server on the accept bundle for the scenarios and bad inputs (sessions are independent)."""
    with running_streamlit("accept", accept_bundle_dir, fixture_data_dir) as server:
        yield server


@pytest.fixture
def open_app(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., AppPage]]:
    """open_app(server, path="", label=""): a new browser context (a new Streamlit session) on `path`, loaded."""
    contexts: list[Any] = []
    pages: list[AppPage] = []
    request.node.stash[OPEN_PAGES] = pages

    def open_page(server: StreamlitServer, path: str = "", label: str = "") -> AppPage:
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(ACTIVITY_JS)
        contexts.append(context)
        name = slug(request.node.name) + (f"-{label}" if label else "")
        app = AppPage(context.new_page(), name)
        pages.append(app)
        return app.open(f"{server.url}/{path.lstrip('/')}")

    yield open_page
    for app in pages:
        try:
            app.screenshot()
        except Exception as error:  # a screenshot must not hide the test's own result
            print(f"screenshot of {app.name} failed: {error}")
    for context in contexts:
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """On failure, add what each open page shows to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when == "call":
        for app in item.stash.get(OPEN_PAGES, []):
            report.sections.append((f"page text: {app.name} ({app.page.url})", app.visible_text()))


@pytest.fixture(scope="session")
def mutable_bundle(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> MutableBundle:
    """A copy of the tiny bundle that scenarios change (thresholds) or break (files, schema) before loading a page."""
    return MutableBundle(tiny_bundle_dir, tmp_path_factory.mktemp("e2e-mutable") / "bundle")


@pytest.fixture(scope="session")
def mutable_server(chromium: Path, mutable_bundle: MutableBundle, fixture_data_dir: Path) -> Iterator[StreamlitServer]:
    """One app server on the mutable bundle: rejection thresholds and broken bundles without a restart each."""
    with running_streamlit("mutable", mutable_bundle.directory, fixture_data_dir) as server:
        yield server
