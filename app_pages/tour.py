"""Tour page: the study as slides for a lecture, one slide per URL (?slide=<n>), in big type."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.artifacts import Bundle
from core.explore import (
    cars_per_year_bin,
    group_examples,
    group_title,
    largest_groups,
    most_typical_per_group,
)
from ui import common, scoring, widgets
from ui import format as fmt

SLIDE_KEY = "slide"
PER_BIN = 4
ROW_EXAMPLES = 3


def question(bundle: Bundle) -> None:
    st.title("How modern is a car's design, and how typical is it for its class?")
    st.markdown(common.ABOUT)
    st.caption(
        f"{fmt.count(len(bundle.images))} photos · {len(bundle.body_types)} body types · "
        f"{len(bundle.year_bins)} year bins · {len(bundle.morphs)} morphs"
    )


def cars_by_year(bundle: Bundle) -> None:
    st.title("Older and newer designs")
    st.markdown(f"{PER_BIN} cars per year bin, from the lowest to the highest modernity score within the bin.")
    table = common.bundle_table(bundle)
    chosen = cars_per_year_bin(table, bundle.year_bins, PER_BIN)
    for column, (label, cars) in zip(st.columns(len(chosen) or 1), chosen.items(), strict=False):
        with column:
            st.subheader(label)
            widgets.gallery(
                bundle,
                table,
                cars.index,
                lambda r: f"{r['label']} · modernity {fmt.score(r['modernity'])}",
                root=common.image_root(),
                width="stretch",
            )


def typical_cars(bundle: Bundle) -> None:
    st.title("The most typical car of every group")
    table = common.bundle_table(bundle)
    best = most_typical_per_group(table)
    widgets.gallery(
        bundle,
        table,
        best.index,
        lambda r: f"{group_title(r['group'], bundle.year_bins)}: {r['label']}",
        root=common.image_root(),
        width=200,
    )


def typical_rows(bundle: Bundle) -> None:
    st.title("Most typical, average, least typical")
    table = common.bundle_table(bundle)
    frame = common.bundle_morphs(bundle)
    columns = st.columns([2, 3, 3, 3])
    for column, heading in zip(columns, ("Group", "Most typical", "Average", "Least typical"), strict=True):
        column.subheader(heading)
    for group in largest_groups(frame).itertuples(index=False):
        examples = group_examples(table, group.key, group.title, ROW_EXAMPLES)
        cells = st.columns([2, 3, 3, 3], vertical_alignment="center")
        cells[0].image(scoring.morph_picture(bundle, group.morph, 140), caption=group.title)
        for cell, members in zip(cells[1:], (examples.most, examples.average, examples.least), strict=True):
            with cell:
                widgets.gallery(
                    bundle,
                    table,
                    members.index,
                    lambda r: fmt.score(r["typicality"]),
                    root=common.image_root(),
                    width=110,
                )


def embedding_map(bundle: Bundle) -> None:
    st.title("The embedding map")
    st.markdown(
        "Every car placed by its features: neighbours look alike to the model. Colour: year bin. "
        "(The Explore page has every car to hover, filter and select.)"
    )
    scoring.show_collection_map(bundle, common.bundle_table(bundle), "tour", height=640)


def how_well(bundle: Bundle) -> None:
    st.title("How well does it work?")
    found = common.bundle_headlines(bundle)
    if not found:
        st.info("This bundle records no test metrics (`python -m training.build` adds them).")
        return
    st.markdown(
        "Each number against what one constant answer scores (hover a number for that answer), on the split "
        "named beside its data set: the test split holds car models the networks never saw in training, and the line "
        "under the cards says how far each number moves on other samples of as many car models. The Model report "
        "page has every metric."
    )
    widgets.headline_cards(bundle, found)
    common.show_ranges(bundle, found, "tour:ranges")
    if horizon := common.bundle_make_horizon(bundle):
        st.markdown(f"**What the data cannot say.** {fmt.horizon_caveat(horizon)}")


def live(bundle: Bundle) -> None:
    st.title("Your car")
    upload = st.file_uploader("Drop a photo of a car", key="tour_upload")
    if upload is None:
        st.markdown("Upload a photo to score it live.")
        return
    scored = scoring.score_bytes(bundle, upload.getvalue())
    if scored is None:
        return
    result = scored.result
    photo, scores = st.columns([2, 3])
    with photo:
        scoring.show_detection(result)
    with scores:
        scoring.show_gate(bundle, result)
        if result.accepted:
            scoring.show_modernity(bundle, result, "tour", height=300)
    if result.accepted:
        scoring.show_typicality(bundle, common.bundle_table(bundle), result, "tour")


SLIDES: tuple[Callable[[Bundle], None], ...] = (
    question,
    cars_by_year,
    typical_cars,
    typical_rows,
    embedding_map,
    how_well,
    live,
)


def step(delta: int) -> None:
    """Previous/next: move the bound slide number (and so the URL) by `delta`, staying within the slides."""
    current = int(st.session_state.get(SLIDE_KEY, 1))
    st.session_state[SLIDE_KEY] = min(max(1, current + delta), len(SLIDES))


def unknown_slide() -> str | None:
    """What to say when the URL asks for a slide the tour does not have (?slide=99), read before the bound widget
    replaces it with slide 1."""
    wanted = st.query_params.get(SLIDE_KEY)
    if wanted is None or (wanted.isdigit() and 1 <= int(wanted) <= len(SLIDES)):
        return None
    return f"There is no slide {wanted}: the tour has slides 1 to {len(SLIDES)}. This is slide 1."


def controls() -> int:
    """Previous / slide numbers / next (arrow keys work too); returns the 1-based slide."""
    back, numbers, forward = st.columns([2, 6, 2], vertical_alignment="center")
    back.button("Previous", on_click=step, args=(-1,), shortcut="Left", icon=":material/arrow_back:")
    forward.button("Next", on_click=step, args=(1,), shortcut="Right", icon=":material/arrow_forward:")
    with numbers:
        return st.pagination(len(SLIDES), key=SLIDE_KEY, bind="query-params", max_visible_pages=len(SLIDES))


def main() -> None:
    common.big_type()
    bundle = common.require_bundle()
    missing = unknown_slide()
    slide = controls()
    if missing:
        st.warning(missing, icon=":material/help:")
    SLIDES[slide - 1](bundle)


main()
