"""Browser end-to-end support: a Streamlit server per bundle, bundle variants, and a page driver for Playwright.

The server is `streamlit run streamlit_app.py` in its own process group on a free port, with the bundle and the
image root passed through CARMORPH_BUNDLE and CARMORPH_IMAGE_ROOT. `AppPage` wraps a Playwright page: it knows
when a script run has finished (counters of Streamlit's script-state changes and websocket messages, installed
before the page loads), uploads a file and waits for its outcome, reads scores from the Plotly figures, and fails
with the page's visible text so a failure says what the user saw.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIR = PROJECT_ROOT / "test-output" / "e2e"
CHROMIUM = Path(os.environ.get("CARMORPH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
VIEWPORT = {"width": 1400, "height": 1000}
MAX_SHOT_HEIGHT = 9000
# Only where to listen and not to open a browser: everything else comes from .streamlit/config.toml, exactly as a
# user's `streamlit run streamlit_app.py` gets it (tests/test_server_config.py keeps it so).
SERVER_FLAGS = ("--server.headless=true", "--server.address=127.0.0.1")
SERVER_START_S = 120.0
# The first run of a fresh server imports torch and loads the bundle, on 2 shared cores: generous, but bounded.
LOAD_TIMEOUT_MS = 180_000
RUN_TIMEOUT_MS = 180_000
DRAW_TIMEOUT_MS = 60_000
SETTLE_MS = 300
FAST_RUN_GRACE_MS = 2_000

EXCEPTION = '[data-testid="stException"]'
ERROR = '[data-testid="stAlertContentError"]'
WARNING = '[data-testid="stAlertContentWarning"]'
FILE_CHIP = '[data-testid="stFileChipName"]'
UPLOAD_INPUT = '[data-testid="stFileUploader"] input[type="file"]'
PLOT_TEXT = ".js-plotly-plot svg text"
UPLOAD_ENDPOINT = "/_stcore/upload_file/"
GAUGE_VALUE = re.compile(r"^(\d+\.\d+) / \d+$")
GAUGE_TITLE = re.compile(r"Modernity · expected year (\d{4})")
BODY_TITLE = re.compile(r"^Body type · (.+)$")

# Activity of the page, counted from before it loads: ends of script runs (stApp's data-test-script-state leaving
# "running") and messages from the server's websocket, each with the time of the latest.
ACTIVITY_JS = """
window.__carmorph = {runs: 0, messages: 0, lastRun: 0, lastMessage: 0};
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", () => {
      window.__carmorph.messages += 1;
      window.__carmorph.lastMessage = performance.now();
    });
  }
};
new MutationObserver((records) => {
  if (records.some((record) => record.oldValue === "running")) {
    window.__carmorph.runs += 1;
    window.__carmorph.lastRun = performance.now();
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["data-test-script-state"]});
"""
ACTIVITY_STATE_JS = """
() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return {...window.__carmorph, now: performance.now(),
          script: app && app.getAttribute("data-test-script-state"),
          connection: app && app.getAttribute("data-test-connection-state"),
          stale: document.querySelectorAll('[data-stale="true"]').length};
}
"""
# Idle after a run that ended since `before`: the script is not running, nothing is stale, and the server has been
# quiet for `settle` ms (a widget event can chain a second run, e.g. a chart selection). A run too fast to ever show
# "running" in the DOM still sends messages: after `grace` ms of quiet, messages alone count as a finished run.
WAITING_FOR_PHOTO = "Waiting for a photo."  # what the Score page says before a file arrives
IDLE_JS = """
([before, settle, grace]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  const seen = window.__carmorph;
  if (!app || !seen) return false;
  const quiet = performance.now() - Math.max(seen.lastRun, seen.lastMessage);
  const ran = seen.runs > before.runs || (seen.messages > before.messages && quiet >= grace);
  return ran && quiet >= settle
    && app.getAttribute("data-test-script-state") === "notRunning"
    && app.getAttribute("data-test-connection-state") === "CONNECTED"
    && document.querySelectorAll('[data-stale="true"]').length === 0;
}
"""
# The upload's outcome on screen: idle as above after activity since `before` (taken before the file was chosen),
# and the page no longer waiting for a photo (every outcome, a score or a refusal, replaces that line).
PHOTO_TAKEN_JS = """
([before, settle, waiting]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  const main = document.querySelector('[data-testid="stMain"]');
  const seen = window.__carmorph;
  if (!app || !main || !seen) return false;
  const quiet = performance.now() - Math.max(seen.lastRun, seen.lastMessage);
  return (seen.runs > before.runs || seen.messages > before.messages) && quiet >= settle
    && !main.innerText.includes(waiting)
    && app.getAttribute("data-test-script-state") === "notRunning"
    && app.getAttribute("data-test-connection-state") === "CONNECTED"
    && document.querySelectorAll('[data-stale="true"]').length === 0;
}
"""
TEXT_WITHOUT_ICONS_JS = """
(elements) => elements.map((element) => {
  const copy = element.cloneNode(true);
  copy.querySelectorAll('[data-testid="stIconMaterial"], [data-testid="stAlertDynamicIcon"]')
    .forEach((icon) => icon.remove());
  return copy.textContent;
})
"""
SCROLL_HEIGHT_JS = """
() => { const main = document.querySelector('[data-testid="stMain"]');
        return main ? main.scrollHeight : document.body.scrollHeight; }
"""
MAIN_IMAGES_JS = """document.querySelectorAll('[data-testid="stMain"] [data-testid="stImage"] img')"""
IMAGE_SIZES_JS = f"() => Array.from({MAIN_IMAGES_JS}).map((img) => [img.naturalWidth, img.naturalHeight])"
# A scored page may still be fetching its pictures: wait until every one has decoded.
IMAGES_LOADED_JS = f"""
() => {{
  const images = Array.from({MAIN_IMAGES_JS});
  return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
}}
"""


# ---------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class StreamlitServer:
    """A running `streamlit run streamlit_app.py` (its own process group) and where it logs."""

    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident memory of the server process (VmRSS in /proc/<pid>/status), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Terminate the whole process group; kill it when it does not stop within 15 s."""
        if self.process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


def start_streamlit(
    name: str, bundle: Path, image_root: Path, settings: Mapping[str, str] | None = None
) -> StreamlitServer:
    """Start the app headless on a free port with this bundle and image root (and other CARMORPH_* `settings`);
    return once /_stcore/health is ok."""
    port = free_port()
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    log_path = OUTPUT_DIR / f"server-{name}.log"
    env = os.environ | {
        "CARMORPH_BUNDLE": str(bundle),
        "CARMORPH_IMAGE_ROOT": str(image_root),
        "PYTHONUNBUFFERED": "1",
        **(settings or {}),
    }
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "streamlit_app.py",
        *SERVER_FLAGS,
        f"--server.port={port}",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = StreamlitServer(name, f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + SERVER_START_S
    while not server.healthy():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"streamlit ({name}) did not become healthy:\n{server.log_tail()}")
        time.sleep(0.5)
    return server


@contextmanager
def running_streamlit(
    name: str, bundle: Path, image_root: Path, settings: Mapping[str, str] | None = None
) -> Iterator[StreamlitServer]:
    server = start_streamlit(name, bundle, image_root, settings)
    try:
        yield server
    finally:
        server.stop()


def refuse_other_hosts(context: Any, app_url: str, refused: list[str]) -> None:
    """Make a browser context refuse every request to a host other than the app's, recording the refused URLs in
    `refused` (no request may leave the machine)."""
    app_host = urlsplit(app_url).netloc

    def route(request_route: Any) -> None:
        if urlsplit(request_route.request.url).netloc == app_host:
            request_route.continue_()
        else:
            refused.append(request_route.request.url)
            request_route.abort()

    context.route("**/*", route)


# ---------------------------------------------------------------------------------------------------- bundles


def write_manifest(directory: Path, **changes: Any) -> Path:
    """Replace top-level manifest.json fields (manifest.json is not itself hashed). A new mtime makes a running app
    reload the bundle (its cache key is the directory and the manifest's mtime)."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest, indent=1))
    stamp = time.time_ns()
    os.utime(path, ns=(stamp, stamp))
    return directory


def bundle_variant(source: Path, target: Path, **changes: Any) -> Path:
    """A copy of a bundle with manifest fields replaced."""
    shutil.copytree(source, target)
    return write_manifest(target, **changes)


class MutableBundle:
    """A bundle directory a running server points at; each scenario resets it from the pristine copy, then changes
    or breaks it. Broken bundles are never cached by the app, and valid ones are reloaded on a new manifest mtime."""

    def __init__(self, pristine: Path, directory: Path) -> None:
        self.pristine = pristine
        self.directory = directory
        self.reset()

    def reset(self) -> Path:
        """The pristine bundle again, under a manifest mtime of its own (so no earlier state is taken from cache)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        shutil.copytree(self.pristine, self.directory)
        return write_manifest(self.directory)

    def with_manifest(self, **changes: Any) -> Path:
        self.reset()
        return write_manifest(self.directory, **changes)

    def without_file(self, name: str) -> Path:
        self.reset()
        (self.directory / name).unlink()
        return self.directory

    def with_corrupted_file(self, name: str, update_hash: bool) -> Path:
        """Overwrite the start of `name` (a safetensors header) with garbage; optionally record the new sha256, so
        that only parsing the file can tell."""
        self.reset()
        path = self.directory / name
        data = bytearray(path.read_bytes())
        data[:64] = b"\xff" * 64
        path.write_bytes(bytes(data))
        if update_hash:
            from core.artifacts import sha256_file

            files = json.loads((self.directory / "manifest.json").read_text())["files"]
            write_manifest(self.directory, files=files | {name: sha256_file(path)})
        return self.directory


# ------------------------------------------------------------------------------------------------------ pages


@dataclass(frozen=True)
class Outcome:
    """What the Score page showed after one upload."""

    errors: list[str]
    warnings: list[str]
    exceptions: list[str]
    scored: bool
    modernity: float | None = None
    expected_year: int | None = None
    body_type: str | None = None

    @property
    def messages(self) -> list[str]:
        return self.errors + self.warnings


class AppPage:
    """One browser tab on the app (its own context, so its own Streamlit session)."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name
        self._upload_started_from: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ waiting
    def activity(self) -> dict[str, float]:
        """Runs and messages seen so far (and the script's state): the mark to wait from."""
        return self.page.evaluate(ACTIVITY_STATE_JS)

    def wait_for_run(self, before: dict[str, float], timeout_ms: int = RUN_TIMEOUT_MS) -> None:
        """Wait until a script run that ended after the mark `before` leaves the app idle (see IDLE_JS)."""
        try:
            self.page.wait_for_function(
                IDLE_JS, arg=[before, SETTLE_MS, FAST_RUN_GRACE_MS], timeout=timeout_ms, polling=100
            )
        except Exception as error:  # Playwright's TimeoutError: say what the page shows instead
            state = self.activity()
            self.fail(f"no finished script run within {timeout_ms / 1000:.0f} s ({type(error).__name__}; {state})")

    def wait_for(self, selector: str, what: str, timeout_ms: int = DRAW_TIMEOUT_MS) -> None:
        try:
            self.page.locator(selector).first.wait_for(state="visible", timeout=timeout_ms)
        except Exception:
            self.fail(f"expected {what} ({selector})")

    def open(self, url: str, timeout_ms: int = LOAD_TIMEOUT_MS) -> AppPage:
        self.page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
        self.wait_for_run({"runs": 0, "messages": 0}, timeout_ms)
        return self

    def act(self, action: Any, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
        """Do something that reruns the script (click, fill, drag) and wait for that run to finish."""
        before = self.activity()
        action()
        self.wait_for_run(before, timeout_ms)

    # ---------------------------------------------------------------------------------------- reading
    def visible_text(self) -> str:
        try:
            return self.page.locator("body").inner_text(timeout=10_000)
        except Exception as error:
            return f"(page text unavailable: {error})"

    def texts(self, selector: str) -> list[str]:
        """The text of each element matching `selector`, without the names of Material icons (e.g. "error")."""
        return [text.strip() for text in self.page.locator(selector).evaluate_all(TEXT_WITHOUT_ICONS_JS)]

    def plot_texts(self) -> list[str]:
        return [text.strip() for text in self.page.locator(PLOT_TEXT).all_text_contents()]

    def uploaded_names(self) -> list[str]:
        """Full names of the files in the uploader (the chip shortens long ones; its title holds the name)."""
        return self.page.locator(FILE_CHIP).evaluate_all("chips => chips.map((chip) => chip.title)")

    def has_heading(self, name: str) -> bool:
        return self.page.get_by_role("heading", name=name, exact=True).count() > 0

    def image_sizes(self, timeout_ms: int = DRAW_TIMEOUT_MS) -> list[tuple[int, int]]:
        """Natural (width, height) of the pictures in the main area, top to bottom, once they have all loaded."""
        try:
            self.page.wait_for_function(IMAGES_LOADED_JS, timeout=timeout_ms, polling=100)
        except Exception:
            self.fail(f"the pictures in the main area did not all finish loading within {timeout_ms / 1000:.0f} s")
        return [tuple(size) for size in self.page.evaluate(IMAGE_SIZES_JS)]

    # ------------------------------------------------------------------------------------------ checks
    def fail(self, what: str) -> NoReturn:
        raise AssertionError(f"{what}\n----- what the page at {self.page.url} shows -----\n{self.visible_text()}")

    def expect(self, condition: object, what: str) -> None:
        if not condition:
            self.fail(what)

    def expect_text(self, text: str, timeout_ms: int = DRAW_TIMEOUT_MS) -> None:
        try:
            self.page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=timeout_ms)
        except Exception:
            self.fail(f"expected the page to show {text!r}")

    def expect_no_traceback(self) -> None:
        exceptions = self.texts(EXCEPTION)
        self.expect(not exceptions, f"the page shows {len(exceptions)} exception(s): {exceptions}")

    # ----------------------------------------------------------------------------------------- actions
    def navigate(self, label: str) -> None:
        """Click a page in the sidebar navigation."""
        link = self.page.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first
        self.act(link.click)

    def box_select_everything(self) -> None:
        """Pick Plotly's box-select tool in the mode bar and drag a box over the whole plot area with the mouse."""
        self.act(self.drag_box_over_map())

    def drag_box_over_map(self) -> Callable[[], None]:
        """Pick the box-select tool, press the mouse at the plot area's top left and drag to its bottom right;
        returns the release of the button (which sends the selection)."""
        page = self.page
        chart = page.locator(".js-plotly-plot").first
        chart.scroll_into_view_if_needed()
        chart.hover()
        page.locator('.modebar-btn[data-val="select"]').first.click()
        area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
        self.expect(area, "the map has no drag area")
        left, top = area["x"] + 4, area["y"] + 4
        right, bottom = area["x"] + area["width"] - 4, area["y"] + area["height"] - 4
        page.mouse.move(left, top)
        page.mouse.down()
        page.mouse.move((left + right) / 2, (top + bottom) / 2, steps=8)
        page.mouse.move(right, bottom, steps=8)
        return page.mouse.up

    def choose(self, combobox: str, option: str) -> None:
        """Pick an option of a selectbox by its label."""
        self.page.get_by_role("combobox", name=combobox).click()
        self.act(self.page.get_by_role("option", name=option, exact=True).click)

    def upload(self, path: Path, timeout_ms: int = RUN_TIMEOUT_MS) -> Outcome:
        """Upload `path` on the Score page's file uploader and read what the page says about it."""
        self.start_upload(path)
        return self.finish_upload(timeout_ms)

    def start_upload(self, path: Path) -> None:
        """Set the file and wait until it has reached the server; finish_upload() waits for its outcome.

        The mark to wait from is taken before the file is chosen: a fast run could end before the upload's answer
        reached this (busy) process, and a mark taken then waited for a run that had already happened."""
        self._upload_started_from = self.activity()
        try:
            with self.page.expect_response(lambda r: UPLOAD_ENDPOINT in r.url, timeout=RUN_TIMEOUT_MS):
                self.page.locator(UPLOAD_INPUT).first.set_input_files(str(path))
        except Exception as error:
            self.fail(f"{path.name} never reached the server ({type(error).__name__})")

    def finish_upload(self, timeout_ms: int = RUN_TIMEOUT_MS) -> Outcome:
        """Wait for what the page shows about the upload: idle, and no longer waiting for a photo (the messages of
        the upload's URLs, or a run that began before the server had the file, are not the outcome)."""
        try:
            self.page.wait_for_function(
                PHOTO_TAKEN_JS, arg=[self._upload_started_from, SETTLE_MS, WAITING_FOR_PHOTO],
                timeout=timeout_ms, polling=100,
            )  # fmt: skip
        except Exception as error:  # Playwright's TimeoutError: say what the page shows instead
            state = self.activity()
            self.fail(f"no outcome of the upload within {timeout_ms / 1000:.0f} s ({type(error).__name__}; {state})")
        scored = self.has_heading("How modern")
        if scored:
            self.expect_text("Modernity · expected year")
        return self.outcome(scored)

    def outcome(self, scored: bool) -> Outcome:
        plots = self.plot_texts() if scored else []
        value = next((m.group(1) for t in plots if (m := GAUGE_VALUE.match(t))), None)
        year = next((m.group(1) for t in plots if (m := GAUGE_TITLE.search(t))), None)
        body = next((m.group(1) for t in plots if (m := BODY_TITLE.match(t))), None)
        return Outcome(
            errors=self.texts(ERROR),
            warnings=self.texts(WARNING),
            exceptions=self.texts(EXCEPTION),
            scored=scored,
            modernity=float(value) if value else None,
            expected_year=int(year) if year else None,
            body_type=body,
        )

    def expect_scored(self, outcome: Outcome) -> None:
        self.expect(not outcome.exceptions, f"traceback on the page: {outcome.exceptions}")
        self.expect(outcome.scored and outcome.modernity is not None, f"expected scores, got {outcome}")
        self.expect(not outcome.errors, f"expected no error next to the scores: {outcome.errors}")

    # -------------------------------------------------------------------------------------------- shots
    def screenshot(self, label: str = "") -> Path:
        """The whole page (the viewport is stretched to the main area's height for the shot) as a PNG."""
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        path = OUTPUT_DIR / f"{self.name}{'-' + slug(label) if label else ''}.png"
        size = self.page.viewport_size or VIEWPORT
        height = min(max(int(self.page.evaluate(SCROLL_HEIGHT_JS)), size["height"]), MAX_SHOT_HEIGHT)
        self.page.set_viewport_size({"width": size["width"], "height": height})
        self.page.wait_for_timeout(250)  # let Plotly re-lay out its figures
        self.page.screenshot(path=str(path))
        self.page.set_viewport_size(size)
        return path


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
