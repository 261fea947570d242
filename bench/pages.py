"""What a person waits for: every page of the app in a real browser against `streamlit run`, cold and warm.

    python -m bench.pages [--bundle artifacts/default] [--warm 3] [--idle 60] [--out test-output/bench-pages.json]

One `streamlit run streamlit_app.py` server (the user's .streamlit/config.toml; tests/e2e/e2e_app.py starts it)
and Debian chromium through Playwright. Timed, from `page.goto` (or the upload) to the page's main content being
fully drawn: the script idle, nothing stale, the page's last section on screen, every picture decoded and every
Plotly chart drawn (DRAWN_JS):

- first page: from `streamlit run` to the Score page drawn (server start, torch import, bundle load included), in
  a browser already running (as a user's is: chromium's own start, about 1 s here, is not the app's);
- Score with a scored car: from choosing the file to the whole result drawn (nearest cars, map, Grad-CAM);
- Explore, Morphs, Report, each Tour slide: navigation to the page drawn;
- cold = the first visit after the server started (the bundle already loaded by the first page), warm = the
  median of --warm later visits, each a fresh navigation (a new Streamlit session, the browser cache warm);
- idle CPU: the server's CPU time over --idle seconds after the browser closed, as % of one core (/proc).

With --explore-size N the run is about the Explore page of a large collection instead: a synthetic bundle of N
rows resampled from --bundle (bench.synthetic, written to a temporary folder and deleted afterwards) is served;
timed are the first page (bundle load), Explore cold and warm (map drawn), a box drawn with the mouse over the whole
map until the selection's counts and first gallery page are drawn (cold and warm), and the server's resident memory.
--point-limit sets the app's $CARMORPH_MAP_POINTS (e.g. above N to time WebGL points at that size).

Before the server starts, the bare `core.pipeline.score_image` time of the uploaded photo is measured in this
process (cold and the median of 5 warm calls, with the app's torch threads), so the two can be compared: the
page adds drawing to the score. The photo is the first photo of ../shared/data (else the test fixture) that the
bundle accepts. The load average is recorded beside the figures: on a busy machine every figure is slower.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
for folder in (PROJECT_ROOT, PROJECT_ROOT / "tests" / "e2e"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402
from e2e_app import (  # noqa: E402
    ACTIVITY_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    UPLOAD_INPUT,
    VIEWPORT,
    AppPage,
    StreamlitServer,
    start_streamlit,
)

from bench.synthetic import write_synthetic_bundle  # noqa: E402
from core import config  # noqa: E402
from core.artifacts import Bundle, load_bundle  # noqa: E402
from core.pipeline import score_image  # noqa: E402

FIXTURE_DATA_DIR = PROJECT_ROOT / "tests" / "fixtures" / "data"
DRAW_TIMEOUT_MS = 300_000
WARM_SCORES = 5

# Fully drawn: the run is over, the page shows its title and its last section, no element is still a skeleton (a
# widget whose code has not loaded), every picture in the main area is decoded, every Plotly chart drawn.
DRAWN_JS = """
([title, last]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  const main = document.querySelector('[data-testid="stMain"]');
  if (!app || !main || app.getAttribute("data-test-script-state") !== "notRunning") return false;
  if (document.querySelectorAll('[data-stale="true"]').length) return false;
  if (main.querySelector('[data-testid="stSkeleton"]')) return false;  // a widget whose code is still loading
  const text = main.innerText;
  if (!text.includes(title) || !text.includes(last)) return false;
  if ([...main.querySelectorAll("img")].some((img) => !img.complete || img.naturalWidth === 0)) return false;
  return [...main.querySelectorAll('[data-testid="stPlotlyChart"]')].every((c) => c.querySelector(".main-svg"));
}
"""


@dataclass(frozen=True)
class View:
    """A page to time: its path, its title and the text of its last section (both must be on screen)."""

    name: str
    path: str
    title: str
    last: str


TOUR_TITLES = (
    "How modern is a car's design, and how typical is it for its class?",
    "Older and newer designs",
    "The most typical car of every group",
    "Most typical, average, least typical",
    "The embedding map",
    "How well does it work?",
    "Your car",
)
VIEWS = (
    View("Explore", "explore", "Explore the embedding map", "cars shown"),
    View("Morphs", "morphs", "Morphs", "How far the morphs lie from each other"),
    View("Report", "report", "Model report", "Provenance"),
    *(View(f"Tour slide {i}", f"tour?slide={i}", title, title) for i, title in enumerate(TOUR_TITLES, start=1)),
)
SCORE_PAGE = View("Score page", "score", "How modern, how typical?", "Waiting for a photo.")
SCORED = View("Score with a scored car", "score", "How modern, how typical?", "Nearest cars in the collection")
AFTER_SCORE = "Score: the result drawn after the score"
SCORE_SHOWN_JS = """
() => [...document.querySelectorAll('[data-testid="stMain"] h3')].some((h) => h.innerText === "Checks")
"""


@dataclass
class Figures:
    """Everything measured in one run, in seconds unless the name says otherwise."""

    bundle: str
    torch_threads: int
    load_before: tuple[float, float, float]
    score_image_cold_ms: float = 0.0
    score_image_warm_ms: float = 0.0
    photo: str = ""
    first_page_s: float = 0.0
    cold_s: dict[str, float] = field(default_factory=dict)
    warm_s: dict[str, float] = field(default_factory=dict)
    idle_cpu_percent: float = 0.0
    idle_seconds: float = 0.0
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------- bare score


def accepted_photo(bundle: Bundle) -> Path:
    """The first photo the bundle scores: Stanford Cars, then EPFL frames, from ../shared/data when present (real
    photo sizes), else from the test fixture (downscaled to 128 px)."""
    root = config.SHARED_DATA_DIR if (config.SHARED_DATA_DIR / "stanford_cars").is_dir() else FIXTURE_DATA_DIR
    for dataset in ("stanford_cars", "epfl_multiview"):
        for path in sorted((root / dataset / "images").glob("*.jpg"))[:20]:
            if score_image(path.read_bytes(), bundle).accepted:
                return path
    raise SystemExit(f"{bundle.name} accepts none of the first photos in {root}: nothing to score in the browser")


def time_score(bundle: Bundle, data: bytes) -> tuple[float, float]:
    """Cold (first call on a fresh bundle) and median warm score_image time, in ms."""
    samples = []
    for _ in range(WARM_SCORES + 1):
        start = time.perf_counter()
        score_image(data, bundle)
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples[0], statistics.median(samples[1:])


def bare_score(bundle_dir: Path, figures: Figures) -> Path:
    """Time score_image on the photo the browser will upload (a fresh bundle, so the first call is cold)."""
    photo = accepted_photo(load_bundle(bundle_dir))
    figures.photo = str(photo)
    figures.score_image_cold_ms, figures.score_image_warm_ms = time_score(load_bundle(bundle_dir), photo.read_bytes())
    return photo


# ----------------------------------------------------------------------------------------------- browser


def wait_drawn(page: Any, view: View) -> None:
    page.wait_for_function(DRAWN_JS, arg=[view.title, view.last], timeout=DRAW_TIMEOUT_MS, polling=50)


def visit(page: Any, server: StreamlitServer, view: View) -> float:
    """Seconds from navigating to `view` to its main content drawn."""
    start = time.perf_counter()
    page.goto(f"{server.url}/{view.path}", wait_until="commit")
    wait_drawn(page, view)
    return time.perf_counter() - start


def upload(page: Any, server: StreamlitServer, photo: Path) -> dict[str, float]:
    """Seconds from choosing `photo` on a freshly opened Score page to the whole result drawn, and from the score
    (the result's first heading on screen: the page writes it as soon as scoring returns) to the whole result drawn."""
    visit(page, server, SCORE_PAGE)
    start = time.perf_counter()
    page.locator(UPLOAD_INPUT).first.set_input_files(str(photo))
    page.wait_for_function(SCORE_SHOWN_JS, timeout=DRAW_TIMEOUT_MS, polling=20)
    scored = time.perf_counter()
    wait_drawn(page, SCORED)
    end = time.perf_counter()
    return {SCORED.name: end - start, AFTER_SCORE: end - scored}


@contextmanager
def browser_then_server(
    name: str, bundle: Path, image_root: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[Any, StreamlitServer, float]]:
    """Chromium launched first (a user's browser is already running), then `streamlit run` and the clock started
    with it: yields the browser, the server and that start time; closes both."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        started = time.perf_counter()
        server = start_streamlit(name, bundle, image_root, env or {})
        try:
            yield browser, server, started
        finally:
            server.stop()
            if browser.is_connected():
                browser.close()


def open_first_page(browser: Any, server: StreamlitServer, started: float) -> tuple[Any, Any, float]:
    """A fresh browser context and page on the app's first page, and the seconds from `started` to it drawn."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(ACTIVITY_JS)
    page = context.new_page()
    page.goto(f"{server.url}/", wait_until="commit")
    wait_drawn(page, SCORE_PAGE)
    return context, page, time.perf_counter() - started


def browse(browser: Any, server: StreamlitServer, photo: Path, warm: int, started: float, figures: Figures) -> None:
    context, page, figures.first_page_s = open_first_page(browser, server, started)
    rounds: dict[str, list[float]] = {}
    for round_index in range(warm + 1):
        timed = upload(page, server, photo) | {view.name: visit(page, server, view) for view in VIEWS}
        for name, seconds in timed.items():
            rounds.setdefault(name, []).append(seconds)
        print(f"round {round_index}: " + ", ".join(f"{n} {s:.1f} s" for n, s in timed.items()), flush=True)
    context.close()
    figures.cold_s = {name: values[0] for name, values in rounds.items()}
    figures.warm_s = {name: statistics.median(values[1:]) for name, values in rounds.items() if len(values) > 1}


# ------------------------------------------------------------------------------------ a large collection


@dataclass
class ScaleFigures:
    """The Explore page of a synthetic collection of `rows` cars, in seconds unless the name says otherwise."""

    rows: int
    point_limit: str
    load_before: tuple[float, float, float]
    bundle_write_s: float = 0.0
    first_page_s: float = 0.0
    explore_cold_s: float = 0.0
    explore_warm_s: float = 0.0
    selection_cold_s: float = 0.0
    selection_warm_s: float = 0.0
    server_rss_mib: float = 0.0
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


def select_everything(page: Any, rows: int) -> float:
    """Seconds from releasing a box drawn over the whole map to the selection's counts and first gallery page."""
    release = AppPage(page, "bench-selection").drag_box_over_map()
    start = time.perf_counter()
    release()
    wait_drawn(page, View("selection", "explore", f"Selection · {rows:,} cars", "Selection as CSV"))
    return time.perf_counter() - start


def explore_at_scale(browser: Any, server: StreamlitServer, figures: ScaleFigures, warm: int, started: float) -> None:
    context, page, figures.first_page_s = open_first_page(browser, server, started)
    explore, visits, selections = VIEWS[0], [], []
    for round_index in range(warm + 1):
        visits.append(visit(page, server, explore))
        selections.append(select_everything(page, figures.rows))
        print(f"round {round_index}: Explore {visits[-1]:.1f} s, selection {selections[-1]:.1f} s", flush=True)
    context.close()
    figures.explore_cold_s, figures.selection_cold_s = visits[0], selections[0]
    figures.explore_warm_s = statistics.median(visits[1:]) if warm else visits[0]
    figures.selection_warm_s = statistics.median(selections[1:]) if warm else selections[0]
    figures.server_rss_mib = server.rss_kib() / 1024


def scale_run(args: argparse.Namespace, source: Path) -> None:
    """--explore-size: the Explore page of a synthetic collection (see the module doc)."""
    limit = {"CARMORPH_MAP_POINTS": str(args.point_limit)} if args.point_limit else {}
    figures = ScaleFigures(args.explore_size, limit.get("CARMORPH_MAP_POINTS", "default"), os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="carmorph-bench-") as folder:
        start = time.perf_counter()
        bundle = write_synthetic_bundle(source, Path(folder) / "bundle", args.explore_size)
        figures.bundle_write_s = time.perf_counter() - start
        root = config.image_root(args.image_root) or FIXTURE_DATA_DIR
        with browser_then_server("bench-scale", bundle, root, limit) as (browser, server, started):
            explore_at_scale(browser, server, figures, args.warm, started)
    figures.load_after = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(figures), indent=1))
    print(json.dumps(asdict(figures), indent=1))
    print(f"written to {args.out}")


# ------------------------------------------------------------------------------------------------ idle CPU


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children (/proc/<pid>/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def idle_cpu(server: StreamlitServer, seconds: float) -> float:
    """% of one core the server used over `seconds` with no browser connected."""
    before, start = cpu_seconds(server.pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(server.pid) - before) / (time.monotonic() - start)


# -------------------------------------------------------------------------------------------------- report


def table(figures: Figures) -> str:
    """The figures as a Markdown table (seconds), with the targets and the load."""
    lines = [
        f"bundle {figures.bundle} · torch threads {figures.torch_threads} · load average before "
        f"{figures.load_before[0]:.2f}, after {figures.load_after[0]:.2f} (1 min) on {os.cpu_count()} cores",
        "",
        "| page | cold (s) | warm (s) |",
        "|---|---|---|",
        f"| first page after `streamlit run` | {figures.first_page_s:.1f} | |",
    ]
    lines += [
        f"| {name} | {cold:.1f} | {figures.warm_s.get(name, float('nan')):.1f} |"
        for name, cold in figures.cold_s.items()
    ]
    lines += [
        "",
        f"bare score_image of {figures.photo}: cold {figures.score_image_cold_ms:.0f} ms, "
        f"warm {figures.score_image_warm_ms:.0f} ms",
        f"server idle CPU over {figures.idle_seconds:.0f} s after the browser closed: "
        f"{figures.idle_cpu_percent:.1f} % of one core",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: artifacts/default)")
    parser.add_argument("--image-root", type=Path, default=None, help="image root (default: as the app finds it)")
    parser.add_argument("--warm", type=int, default=3, help="warm visits of every page (median reported)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measured after the browser")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "test-output" / "bench-pages.json")
    parser.add_argument("--explore-size", type=int, default=0, help="time Explore on a synthetic bundle of N rows")
    parser.add_argument("--point-limit", type=int, default=0, help="the app's $CARMORPH_MAP_POINTS for --explore-size")
    args = parser.parse_args(argv)
    bundle_dir = config.bundle_dir(args.bundle).resolve()
    if args.explore_size:
        scale_run(args, bundle_dir)
        return
    torch.set_num_threads(config.serving_threads())
    figures = Figures(bundle=str(bundle_dir), torch_threads=torch.get_num_threads(), load_before=os.getloadavg())
    photo = bare_score(bundle_dir, figures)
    image_root = config.image_root(args.image_root) or FIXTURE_DATA_DIR
    with browser_then_server("bench", bundle_dir, image_root) as (browser, server, started):
        browse(browser, server, photo, args.warm, started, figures)
        browser.close()
        figures.idle_seconds = args.idle
        figures.idle_cpu_percent = idle_cpu(server, args.idle)
    figures.load_after = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(figures), indent=1))
    print(table(figures))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
