"""A large collection in a real browser: above the point limit the Explore map is one picture aggregated on the
server, drawn offline (no request leaves the machine), and a box drawn with the mouse selects every car inside it
(a region query over the whole table), with its counts and gallery.

The collection is the tiny test bundle resampled to 3,000 rows (bench.synthetic) and the limit lowered to 1,000
points, so CI guards the path a million-row bundle takes. Every wait is on what the page shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_app import ACTIVITY_JS, VIEWPORT, AppPage, StreamlitServer, refuse_other_hosts, running_streamlit

from bench.synthetic import write_synthetic_bundle

pytestmark = pytest.mark.e2e

ROWS = 3_000
POINT_LIMIT = 1_000
MAP_PICTURE = ".js-plotly-plot .imagelayer image"  # Plotly draws layout images as SVG <image> elements
SELECTION_HEADING = re.compile(r"Selection · ([\d,]+) cars")
GALLERY_CAPTION = '[data-testid="stMain"] [data-testid="stImageCaption"]'


@pytest.fixture(scope="module")
def large_server(
    chromium: Path, tiny_bundle_dir: Path, fixture_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamlitServer]:
    bundle = write_synthetic_bundle(tiny_bundle_dir, tmp_path_factory.mktemp("e2e-large") / "bundle", ROWS)
    with running_streamlit("large", bundle, fixture_data_dir, {"CARMORPH_MAP_POINTS": str(POINT_LIMIT)}) as server:
        yield server


def test_a_large_collection_is_aggregated_offline_and_a_box_selects_every_car(
    browser: Any, large_server: StreamlitServer
) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(ACTIVITY_JS)
    refused: list[str] = []
    refuse_other_hosts(context, large_server.url, refused)
    app = AppPage(context.new_page(), "large-map")
    try:
        app.open(f"{large_server.url}/explore")
        app.expect_text("drawn as one picture on the server")
        app.wait_for(MAP_PICTURE, "the aggregated map's picture")
        app.expect_text("Draw a box or lasso on the map to select cars.")
        app.box_select_everything()
        app.expect_text("Selected cars")
        heading = next((m for t in app.texts("h3") if (m := SELECTION_HEADING.search(t))), None)
        app.expect(heading, "no 'Selection · N cars' heading after the drag")
        selected = int(heading.group(1).replace(",", ""))
        app.expect(selected == ROWS, f"a box over the whole map selected {selected} of {ROWS} cars")
        app.wait_for(GALLERY_CAPTION, "the gallery of the selected cars")
        captions = app.texts(GALLERY_CAPTION)
        app.expect(len(captions) == 24, f"the first gallery page shows {len(captions)} pictures")
        app.expect_no_traceback()
        assert not refused, f"requests to other hosts: {refused}"
    finally:
        app.screenshot()
        context.close()
