"""Shared Streamlit plumbing: the bundle (loaded once per process), settings, user-facing errors, presentation.

Settings live in widgets of the shared sidebar (streamlit_app.py); pages read them through the functions here.
Shareable views use widgets bound to query parameters (`bind="query-params"`), so a URL restores a view.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pandas as pd
import streamlit as st
import torch
from PIL import Image, ImageDraw

from core import config
from core.artifacts import MANIFEST_FILE, Bundle, load_bundle
from core.errors import CarmorphError
from core.explore import map_table, morph_frame
from core.figures import ranges_figure
from core.report import Headline, MakeHorizon, collect_tasks, headlines, make_horizon, split_counts
from ui import widgets

logger = logging.getLogger("carmorph.ui")
T = TypeVar("T")

IMAGE_ROOT_KEY = "image_root"
PRESENT_KEY = "present"
PRESENTATION_SCALE = 1.4
ICON_COLOUR = (31, 78, 121)
BUILD_COMMAND = (
    "python -m training.prepare --help       # 1. labels table and grouped split of an image folder\n"
    "python -m training.train --task modernity --out runs/modernity      # 2. the networks (and bodytype, gate)\n"
    "python -m training.build --modernity runs/modernity/best.pt --bodytype runs/bodytype/best.pt \\\n"
    "    --gate runs/gate/best.pt --out artifacts/default                # 3. the bundle"
)

ABOUT = """
**Modernity.** A network trained on model years gives the probability that a car's design belongs to each
year bin. The modernity score is the probability-weighted bin index, from 0 (oldest bin) to 4 (newest).

**Morph.** Cars of one body type and one year bin form a group, and its morph is the average of their features
(pictured as the pixel average of their photos). It stands for the group's typical design.

**Typicality.** How close a car's features lie to its group's morph, as cosine similarity (1 = same direction).
The percentile says where that value falls among the group's training cars.
"""

# Presentation: hide the sidebar and the toolbar's actions (navigation moves to the top bar) and enlarge type.
CHROME_CSS = """
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stToolbarActions"],
[data-testid="stDecoration"] { display: none !important; }
[data-testid="stMainBlockContainer"] { max-width: 100%; padding-top: 3.5rem; }
"""
BIG_TYPE_CSS = """
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li { font-size: 1.45rem; }
[data-testid="stCaptionContainer"], [data-testid="stImageCaption"] { font-size: 1.1rem; }
[data-testid="stMetricValue"], [data-testid="stMetricValue"] [data-testid="stMarkdownContainer"] p {
  font-size: 2.6rem;
}
[data-testid="stMetricDelta"] [data-testid="stMarkdownContainer"] p { font-size: 1.1rem; }
h1 { font-size: 3.2rem !important; } h2 { font-size: 2.4rem !important; } h3 { font-size: 1.9rem !important; }
"""


# ------------------------------------------------------------------------------------------------- bundle


@st.cache_resource(show_spinner="Loading the model bundle …", max_entries=4)
def _load_cached(path: str, stamp: float) -> Bundle:
    """One loaded bundle per (directory, manifest time): rebuilding a bundle in place reloads it. The process's
    torch threads are set here, before the first network runs ($CARMORPH_THREADS, default 1)."""
    torch.set_num_threads(config.serving_threads())
    bundle = load_bundle(path)
    # The modules and the bundle live as long as the server: moved out of the collector's sight, a full
    # collection no longer walks their ~0.5 M objects (about 0.3 s each time, measured with the default bundle).
    gc.freeze()
    return bundle


def manifest_stamp(directory: Path) -> float:
    try:
        return (directory / MANIFEST_FILE).stat().st_mtime
    except OSError:
        return 0.0


def bundle_or_error() -> tuple[Bundle | None, str | None]:
    """The configured bundle ($CARMORPH_BUNDLE, else artifacts/default), or None and why it could not load."""
    directory = config.bundle_dir()
    try:
        return _load_cached(str(directory), manifest_stamp(directory)), None
    except CarmorphError as error:
        logger.warning("No usable bundle at %s: %s", directory, error)
        return None, str(error)


def show_missing_bundle(error: str | None) -> None:
    """Say plainly that the bundle is missing or broken, what is wrong, and how to make one."""
    if config.bundle_dir().is_dir():
        st.error(f"The model bundle could not be loaded, so nothing can be scored or explored. {error or ''}")
    else:
        st.error(f"No model bundle is installed yet, so nothing can be scored or explored. {error or ''}")
    st.markdown(
        f"The app looks for a bundle in `{config.bundle_dir()}` (set `CARMORPH_BUNDLE` to use another directory). "
        "Make one from an image folder with the training CLIs:"
    )
    st.code(BUILD_COMMAND, language="bash")


def require_bundle() -> Bundle:
    """The bundle, or the missing-bundle message and the end of this page's run."""
    bundle, error = bundle_or_error()
    if bundle is None:
        show_missing_bundle(error)
        st.stop()
    return bundle


def on_bundle(bundle: Bundle, name: str, build: Callable[[], T]) -> T:
    """A value derived from the bundle, computed once per loaded bundle (kept in `bundle.cache`)."""
    key = f"ui:{name}"
    if key not in bundle.cache:
        bundle.cache[key] = build()
    return bundle.cache[key]


def on_bundle_recent(bundle: Bundle, name: str, token: Hashable, build: Callable[[], T], keep: int = 4) -> T:
    """build() once per loaded bundle and token, shared by every session; the `keep` latest tokens are kept (a
    figure that depends on widgets: a new visit with the same settings draws at once)."""
    held: OrderedDict[Hashable, T] = on_bundle(bundle, f"recent:{name}", OrderedDict)
    lock: threading.Lock = on_bundle(bundle, f"recent lock:{name}", threading.Lock)  # sessions are threads
    with lock:
        if token in held:
            held.move_to_end(token)
            return held[token]
    value = build()
    with lock:
        held[token] = value
        while len(held) > keep:
            held.popitem(last=False)
    return value


def bundle_table(bundle: Bundle) -> pd.DataFrame:
    """The bundle's images as a map table (core.explore.map_table), built once per bundle."""
    return on_bundle(bundle, "map_table", lambda: map_table(bundle.images, bundle.year_bins))


def bundle_morphs(bundle: Bundle) -> pd.DataFrame:
    """One row per morph of the bundle (core.explore.morph_frame), built once per bundle."""
    return on_bundle(bundle, "morph_frame", lambda: morph_frame(bundle.morphs))


def bundle_headlines(bundle: Bundle) -> dict[str, list[Headline]]:
    """The main numbers of each of the bundle's data sets that records them (core.report.headlines), found once
    per bundle."""

    def find() -> dict[str, list[Headline]]:
        return headlines(collect_tasks(bundle.metrics), list(split_counts(bundle.images, bundle.provenance).index))

    return on_bundle(bundle, "headlines", find)


def bundle_make_horizon(bundle: Bundle) -> MakeHorizon | None:
    """The make horizon of the bundle's training cars (core.report.make_horizon), found once per bundle."""
    return on_bundle(bundle, "make_horizon", lambda: make_horizon(bundle.images))


# ----------------------------------------------------------------------------------------------- settings


def default_image_root() -> str:
    root = config.image_root()
    return str(root) if root else ""


def image_root() -> Path | None:
    """The image root from the sidebar setting (or its default) when that folder exists, else None."""
    value = st.session_state.get(IMAGE_ROOT_KEY, default_image_root())
    path = Path(value).expanduser() if value else None
    return path if path is not None and path.is_dir() else None


def presenting() -> bool:
    """Presentation mode: the sidebar toggle, or before it is drawn (first run of a shared link) the URL."""
    if PRESENT_KEY in st.session_state:
        return bool(st.session_state[PRESENT_KEY])
    return st.query_params.get(PRESENT_KEY, "").lower() == "true"


def show_ranges(bundle: Bundle, found: dict[str, list[Headline]], key: str, height: int = 300) -> None:
    """The headlines' ranges over resamples of their car models as one chart, built once per bundle and height;
    nothing when no headline has a range."""
    size = scaled(height)
    figure = on_bundle(bundle, f"ranges:{size}", lambda: ranges_figure(found, size))
    if figure is not None:
        widgets.show_figure(figure, "ranges over car models", key)


def scaled(height: int) -> int:
    """A figure height, enlarged in presentation mode."""
    return round(height * PRESENTATION_SCALE) if presenting() else height


def stop_presenting() -> None:
    st.session_state[PRESENT_KEY] = False


def apply_presentation() -> None:
    """In presentation mode: hide the sidebar chrome, enlarge type, offer a way back."""
    if not presenting():
        return
    st.html(f"<style>{CHROME_CSS}{BIG_TYPE_CSS}</style>")
    st.button("Exit presentation", on_click=stop_presenting, key="exit_presentation", icon=":material/close:")


def big_type() -> None:
    """Large type for slides (the Tour), whether or not presentation mode is on."""
    st.html(f"<style>{BIG_TYPE_CSS}</style>")


@functools.cache
def app_icon() -> Image.Image:
    """The tab icon, drawn here: a named Material icon or an emoji would be fetched from a CDN, which fails
    offline (and no request may leave the machine)."""
    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((2, 2, 62, 62), radius=14, fill=ICON_COLOUR)
    draw.polygon([(12, 38), (18, 24), (46, 24), (52, 38)], fill="white")
    draw.rectangle((8, 36, 56, 46), fill="white")
    for x in (18, 46):
        draw.ellipse((x - 6, 41, x + 6, 53), fill=(30, 30, 30))
    return icon


# ------------------------------------------------------------------------------------------ errors, state


@contextmanager
def user_errors(doing: str) -> Iterator[None]:
    """Turn failures inside the block into messages: a CarmorphError's own text (it says what to do), and a
    short notice for anything unexpected (details go to the server log). Never a traceback."""
    try:
        yield
    except CarmorphError as error:
        logger.info("%s: %s", doing, error)
        st.error(str(error), icon=":material/error:")
    except Exception:
        logger.exception("Unexpected failure while %s", doing)
        st.error(f"Something went wrong while {doing}. The details are in the server log; please report them.")


def memo(name: str, token: object, compute: Callable[[], T]) -> T:
    """compute() once per session for the same token (e.g. an upload's hash); one value is kept per name."""
    key = f"memo:{name}"
    held = st.session_state.get(key)
    if held is None or held[0] != token:
        held = (token, compute())
        st.session_state[key] = held
    return held[1]


def query_value(name: str) -> str | None:
    """A plain (unbound) query parameter, or None."""
    value = st.query_params.get(name)
    return value or None


def set_query_value(name: str, value: str | None) -> None:
    if value:
        st.query_params[name] = value
    else:
        st.query_params.pop(name, None)
