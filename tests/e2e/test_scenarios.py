"""The product as a user meets it in a browser: score a car, see why a photo is refused, walk through every page,
select cars on the map with the mouse, and share a view by URL.

The tiny test bundle has untrained networks, so the gate decides nothing by itself: the accept server's bundle lets
every photo through (thresholds 0) and the rejection scenarios force one gate to refuse (threshold 1). The scores
the page shows are checked against `score_image` run on the same bundle in the test process.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_app import AppPage, MutableBundle, StreamlitServer

from core.pipeline import score_image

pytestmark = pytest.mark.e2e

# Navigation label -> the page's title.
PAGES = {
    "Explore the map": "Explore the embedding map",
    "Morphs": "Morphs",
    "Model report": "Model report",
    "Tour": "How modern is a car's design, and how typical is it for its class?",
    "Score a car": "How modern, how typical?",
}
PERCENT_LABEL = re.compile(r"^\d+ %$")
SELECTION_HEADING = re.compile(r"Selection · (\d+) cars")
GALLERY_CAPTION = '[data-testid="stMain"] [data-testid="stImageCaption"]'


def rear_view(rows: dict[str, list[dict[str, str]]]) -> Path:
    """An EPFL turntable frame showing the car from behind (angle ±180°)."""
    return Path(next(row for row in rows["epfl_multiview"] if abs(float(row["angle_deg"])) > 170)["path"])


def shared_path(app: AppPage, server: StreamlitServer) -> str:
    return app.page.url.removeprefix(server.url)


# ------------------------------------------------------------------------------------------------------ score


def test_a_frontal_car_photo_gets_its_scores_and_expected_year(
    open_app: Callable[..., AppPage], accept_server: StreamlitServer, accept_bundle, frontal_row: dict[str, str]
) -> None:
    photo = Path(frontal_row["path"])
    expected = score_image(photo.read_bytes(), accept_bundle)
    app = open_app(accept_server)
    shown = app.upload(photo)
    app.expect_scored(shown)
    app.expect(
        abs(shown.modernity - expected.modernity.score) <= 0.011,
        f"modernity {shown.modernity} on the page, {expected.modernity.score:.3f} computed",
    )
    year = int(f"{expected.modernity.expected_year:.0f}")
    app.expect(shown.expected_year == year, f"expected year {shown.expected_year} on the page, {year} computed")
    app.expect(shown.body_type == expected.body_type.label, f"body type {shown.body_type} vs {expected.body_type}")
    bars = [text for text in app.plot_texts() if PERCENT_LABEL.match(text)]
    wanted = len(accept_bundle.year_bins) + len(accept_bundle.body_types)
    app.expect(len(bars) >= wanted, f"every year bin and body type has a probability bar: {bars}")
    for text in ("Typicality within", "Where it sits among the collection", "Nearest cars in the collection"):
        app.expect_text(text)


@pytest.mark.parametrize(
    ("gate", "photo_of", "reason"),
    [
        ("car", "a non-car photo", "No car found"),
        ("frontal", "a rear view", "Not a frontal view"),
    ],
    ids=["non-car", "rear-view"],
)
def test_a_refused_photo_shows_the_reason(
    open_app: Callable[..., AppPage],
    mutable_server: StreamlitServer,
    mutable_bundle: MutableBundle,
    fixture_rows: dict[str, list[dict[str, str]]],
    negative_photo_path: Path,
    gate: str,
    photo_of: str,
    reason: str,
) -> None:
    thresholds = {"car": 0.0, "frontal": 0.0} | {gate: 1.0}
    mutable_bundle.with_manifest(thresholds=thresholds, valid_views="frontal")
    photo = negative_photo_path if gate == "car" else rear_view(fixture_rows)
    app = open_app(mutable_server)
    shown = app.upload(photo)
    app.expect(not shown.exceptions, f"traceback for {photo_of}: {shown.exceptions}")
    app.expect(not shown.scored, f"{photo_of} was scored although the {gate} gate refuses everything")
    app.expect(
        any(text.startswith("Not scored.") and reason in text for text in shown.warnings),
        f"expected the rejection reason {reason!r} for {photo_of}, got {shown.messages}",
    )
    app.expect_text("threshold 100 %")  # the gate line states the threshold it was refused under


# ------------------------------------------------------------------------------------------------------ pages


def test_every_page_opens_from_the_navigation(open_app: Callable[..., AppPage], accept_server: StreamlitServer) -> None:
    app = open_app(accept_server)
    for label, title in PAGES.items():
        app.navigate(label)
        app.expect(app.has_heading(title), f"{label}: no title {title!r}")
        app.expect_no_traceback()
        app.expect(not app.texts('[data-testid="stAlertContentError"]'), f"{label} shows an error")
        app.screenshot(label)


def test_a_box_drawn_on_the_map_fills_the_gallery(
    open_app: Callable[..., AppPage], accept_server: StreamlitServer, accept_bundle
) -> None:
    app = open_app(accept_server, "explore")
    app.expect_text("Draw a box or lasso on the map to select cars.")
    app.box_select_everything()
    app.expect_text("Selected cars")
    heading = next((m for t in app.texts("h3") if (m := SELECTION_HEADING.search(t))), None)
    app.expect(heading, "no 'Selection · N cars' heading after the drag")
    selected = int(heading.group(1))
    app.expect(selected == len(accept_bundle.images), f"a box over the whole map selected {selected} cars")
    app.wait_for(GALLERY_CAPTION, "the gallery of the selected cars")
    captions = app.texts(GALLERY_CAPTION)
    app.expect(len(captions) >= min(selected, 24), f"the gallery shows {len(captions)} pictures for {selected}")
    app.expect(any("modernity" in caption for caption in captions), f"gallery captions: {captions[:3]}")
    app.expect_no_traceback()


def test_a_shared_explore_url_restores_the_view(
    open_app: Callable[..., AppPage], accept_server: StreamlitServer
) -> None:
    app = open_app(accept_server, "explore")
    app.choose("Colour by", "Body type")
    search = app.page.get_by_role("textbox", name="Search make or model")
    search.fill("Audi")
    app.act(lambda: search.press("Enter"))
    app.expect_text("1 match “Audi”")
    shared = shared_path(app, accept_server)
    app.expect("colour=" in shared and "q=Audi" in shared, f"the URL does not hold the view: {shared}")

    friend = open_app(accept_server, shared, label="shared")
    colour = friend.page.get_by_role("combobox", name="Colour by").input_value()
    friend.expect(colour == "Body type", f"colour-by is {colour!r} on the shared URL {shared}")
    query = friend.page.get_by_role("textbox", name="Search make or model").input_value()
    friend.expect(query == "Audi", f"search is {query!r} on the shared URL {shared}")
    friend.expect_text("1 match “Audi”")
    friend.expect_no_traceback()


def test_a_shared_tour_url_opens_the_same_slide(
    open_app: Callable[..., AppPage], accept_server: StreamlitServer
) -> None:
    app = open_app(accept_server, "tour")
    next_button = app.page.locator('[data-testid="stButton"] button').filter(has_text="Next")
    for _ in range(2):
        app.act(next_button.click)
    title = "The most typical car of every group"
    app.expect(app.has_heading(title), "two clicks on Next reach slide 3")
    shared = shared_path(app, accept_server)
    app.expect("slide=3" in shared, f"the URL does not hold the slide: {shared}")
    friend = open_app(accept_server, shared, label="shared")
    friend.expect(friend.has_heading(title), f"{shared} is not slide 3")
    friend.expect_no_traceback()
