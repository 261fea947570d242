"""Explore page: the embedding map of every bundle image, coloured and filtered, with selection and details."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import config
from core.artifacts import Bundle
from core.explore import (
    COLOUR_OPTIONS,
    FilterOptions,
    MapFilters,
    MapSelection,
    SearchIndex,
    filter_options,
    filter_rows,
    find_row,
    group_title,
    neighbour_table,
    page_count,
    page_rows,
    regions_from_event,
    search_index,
    selected_rows,
    selection_csv,
    selection_rows,
    summarise_selection,
)
from core.figures import SAMPLE_POINTS, MapFigure, MapOverlay, explorer_map
from ui import common, widgets
from ui import format as fmt

CHART_KEY = "map"
DRAWN_KEY = "explore_drawn"  # the map on screen and the filters it was drawn with (to read its selections)
# What is selected: the ids of the cars picked on a map of single points (box, lasso, or "select the matches"),
# or on an aggregated map a MapSelection (the drawn regions as a query over the table).
SELECTION_KEY = "explore_selection"
PAGE_SIZE = 24
NEIGHBOURS = 8


def filters_ui(options: FilterOptions) -> MapFilters:
    """Body types, model years and splits to show."""
    low, high = options.years
    # Pills on a row of their own: every body type stays readable (a multiselect's chips overflowed and hid some).
    bodies = st.pills(
        "Body types",
        options.body_types,
        selection_mode="multi",
        default=options.body_types,
        key="body",
        bind="query-params",
    )
    years, split = st.columns([3, 2])
    span = years.slider("Model years", low, high, (low, high), key="years", bind="query-params") if high > low else None
    splits = split.pills(
        "Splits", options.splits, selection_mode="multi", default=options.splits, key="split", bind="query-params"
    )
    return MapFilters(body_types=tuple(bodies), years=span, splits=tuple(splits))


def remember_selection() -> None:
    """on_select callback: a box or lasso on an aggregated map becomes a query (its regions); on a map of single
    points, the picked points become car ids; a single clicked point opens its details."""
    bundle, _ = common.bundle_or_error()
    if bundle is None or DRAWN_KEY not in st.session_state:
        return
    selection = st.session_state[CHART_KEY].selection
    mapped, filters = st.session_state[DRAWN_KEY]
    regions = regions_from_event(selection.box, selection.lasso)
    if mapped.aggregated and regions:
        st.session_state[SELECTION_KEY] = MapSelection(regions=regions, filters=filters)
        return
    rows = selection_rows(selection.points, mapped.trace_rows)
    ids = common.bundle_table(bundle)["id"].iloc[rows].tolist()
    if len(ids) == 1 and not regions:
        common.set_query_value("id", ids[0])
    else:
        st.session_state[SELECTION_KEY] = ids


def select_ids(ids: list[str]) -> None:
    st.session_state[SELECTION_KEY] = ids


def show_summary(table: pd.DataFrame, rows: np.ndarray, bundle: Bundle) -> None:
    summary = summarise_selection(table, rows, bundle.year_bins)
    count, modernity, typicality, error = st.columns(4)
    count.metric("Selected cars", fmt.count(summary.count))
    modernity.metric("Mean modernity", fmt.score(summary.mean_modernity))
    typicality.metric("Mean typicality", fmt.score(summary.mean_typicality))
    error.metric("Mean |error|", f"{fmt.score(summary.mean_abs_error_years, 1)} years")
    counts = {"body type": summary.by_body_type, "year bin": summary.by_year_bin, "split": summary.by_split}
    for column, (name, values) in zip(st.columns(3), counts.items(), strict=True):
        column.dataframe(pd.DataFrame({name: list(values), "cars": list(values.values())}), hide_index=True)


def show_selection(bundle: Bundle, table: pd.DataFrame, selection: MapSelection | list[str]) -> None:
    """Counts, a paged gallery and a CSV download of the selected cars."""
    rows = common.memo("explore_selected", (str(bundle.path), selection), lambda: selected_rows(table, selection))
    st.subheader(f"Selection · {fmt.count(len(rows))} cars")
    if not len(rows):
        st.caption("Draw a box or lasso on the map to select cars.")
        return
    show_summary(table, rows, bundle)
    pages = page_count(len(rows), PAGE_SIZE)
    page = st.pagination(pages, key="gallery_page") if pages > 1 else 1
    widgets.gallery(bundle, table, page_rows(rows, page, PAGE_SIZE), root=common.image_root())
    download, clear = st.columns([1, 4])
    download.download_button(
        "Selection as CSV",
        data=lambda: selection_csv(table, rows),
        file_name="carmorph-selection.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
    )
    clear.button("Clear selection", on_click=select_ids, args=([],))


def show_details(bundle: Bundle, table: pd.DataFrame, row: int) -> None:
    """One car: its photo, labels, scores and nearest neighbours in embedding space."""
    car = table.iloc[row]
    st.subheader(str(car["label"]))
    picture, facts = st.columns([1, 2])
    picture.image(widgets.car_picture(bundle, table, row, common.image_root()), width="stretch")
    facts.markdown(
        f"**Id** `{car['id']}` · **split** {car['split']}  \n"
        f"**Year** {fmt.year(car['year_value'])} (bin {car['year_bin_label']}) · **body type** {car['body_label']}  \n"
        f"**Modernity** {fmt.score(car['modernity'])} → expected year {fmt.year(car['expected_year'])} "
        f"(predicted bin {car['pred_year_bin_label']}) · **predicted body type** {car['pred_body_type']}  \n"
        f"**Typicality** {fmt.score(car['typicality'])} ({fmt.percentile(car['typicality_percentile'])} "
        f"in {group_title(car['group'], bundle.year_bins) or 'no group'})"
    )
    facts.button("Close", on_click=common.set_query_value, args=("id", None), key="close_details")
    neighbours = neighbour_table(table, bundle.placer, bundle.embeddings[row], NEIGHBOURS, exclude=row)
    distances = dict(zip(neighbours["row"], neighbours["cosine_distance"], strict=True))
    st.markdown("**Nearest neighbours in embedding space** (cosine distance)")
    widgets.gallery(
        bundle,
        table,
        neighbours["row"],
        lambda r: f"{r['label']} · {r['body_label']} · distance {distances[int(r.name)]:.3f}",
        root=common.image_root(),
    )


def controls(options: FilterOptions) -> tuple[str, str, MapFilters]:
    """Colour-by, search and filters, each bound to a query parameter (colour, q, body, years, split)."""
    colour_column, search_column = st.columns([2, 3])
    colour = colour_column.selectbox(
        "Colour by",
        list(COLOUR_OPTIONS),
        format_func=lambda k: COLOUR_OPTIONS[k].title,
        key="colour",
        bind="query-params",
    )
    query = search_column.text_input("Search make or model", key="q", bind="query-params", placeholder="e.g. Audi")
    return colour, query, filters_ui(options)


def map_caption(mapped: MapFigure, shown: int, total: int) -> str:
    """How many cars the map shows and how to use it (an aggregated map says that hover sees a sample)."""
    drawn = (
        f" · drawn as one picture on the server; hover and clicks reach a sample of "
        f"{fmt.count(min(SAMPLE_POINTS, shown))} cars"
        if mapped.aggregated
        else ""
    )
    return (
        f"{fmt.count(shown)} of {fmt.count(total)} cars shown{drawn} · click a car for its details; to select "
        "cars, pick box or lasso select in the chart's toolbar and draw"
    )


def draw_map(
    bundle: Bundle, table: pd.DataFrame, colour: str, query: str, filters: MapFilters, chosen: int | None
) -> None:
    """The map of the filtered cars (WebGL points, or aggregated above the point limit), search matches ringed and
    the chosen car marked."""
    rows = filter_rows(table, filters)
    search: SearchIndex = common.on_bundle(bundle, "search_index", lambda: search_index(table))
    matches = np.flatnonzero(search.mask(query))
    overlay = MapOverlay(highlight=matches, highlight_name=f"“{query}”", marked=chosen)
    height = common.scaled(620)
    view = (colour, filters, query, chosen, height)  # a selection alone keeps the figure
    mapped = common.on_bundle_recent(
        bundle,
        "explore_map",
        view,
        lambda: explorer_map(
            table,
            rows,
            COLOUR_OPTIONS[colour],
            point_limit=config.map_point_limit(),
            year_bins=bundle.year_bins,
            overlay=overlay,
            height=height,
        ),
    )
    st.session_state[DRAWN_KEY] = (mapped, filters)
    found = f" · {fmt.count(len(matches))} match “{query}”" if query.strip() else ""
    st.caption(map_caption(mapped, len(rows), len(table)) + found)
    st.plotly_chart(
        mapped.figure,
        key=CHART_KEY,
        on_select=remember_selection,
        selection_mode=("points", "box", "lasso"),
        config=widgets.chart_config("embedding map") | {"scrollZoom": True},
        width="stretch",
    )
    widgets.html_download(mapped.figure, "embedding map", CHART_KEY)
    if len(matches):
        ids = table["id"].iloc[matches].tolist()
        st.button(f"Select the {fmt.count(len(matches))} matches", on_click=select_ids, args=(ids,))


@st.fragment
def explorer(bundle: Bundle) -> None:
    """Controls, map, details and selection: reruns alone on every interaction (the sidebar stays put)."""
    table = common.bundle_table(bundle)
    colour, query, filters = controls(common.on_bundle(bundle, "filter_options", lambda: filter_options(table)))
    chosen = find_row(table, common.query_value("id"))
    draw_map(bundle, table, colour, query, filters, chosen)
    if chosen is not None:
        show_details(bundle, table, chosen)
    show_selection(bundle, table, st.session_state.get(SELECTION_KEY, []))


def main() -> None:
    st.title("Explore the embedding map")
    bundle = common.require_bundle()
    st.caption(
        "Every car of the bundle placed by its features (UMAP of the body-type network's "
        f"{bundle.embeddings.shape[1]}-d embedding): nearby cars look alike to the model."
    )
    explorer(bundle)


main()
