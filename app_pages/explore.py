"""Explore page: the embedding map of every bundle image, coloured and filtered, with selection and details."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.artifacts import Bundle
from core.explore import (
    COLOUR_OPTIONS,
    UNKNOWN,
    MapFilters,
    filter_rows,
    find_row,
    group_title,
    neighbour_table,
    page_count,
    page_rows,
    search_mask,
    selection_csv,
    selection_rows,
    summarise_selection,
    year_span,
)
from core.figures import MapOverlay, map_figure
from ui import common, widgets
from ui import format as fmt

CHART_KEY = "map"
TRACES_KEY = "explore_traces"
SELECTION_KEY = "explore_selection"  # ids of the cars picked on the map (box, lasso, or "show matches")
PAGE_SIZE = 24
NEIGHBOURS = 8


def filters_ui(table: pd.DataFrame) -> MapFilters:
    """Body types, model years and splits to show."""
    body_options = sorted(set(table["body_label"]) - {UNKNOWN}) + (
        [UNKNOWN] if (table["body_label"] == UNKNOWN).any() else []
    )
    split_options = [s for s in ("train", "val", "test") if (table["split"] == s).any()]
    low, high = year_span(table)
    # Pills on a row of their own: every body type stays readable (a multiselect's chips overflowed and hid some).
    bodies = st.pills(
        "Body types", body_options, selection_mode="multi", default=body_options, key="body", bind="query-params"
    )
    years, split = st.columns([3, 2])
    span = years.slider("Model years", low, high, (low, high), key="years", bind="query-params") if high > low else None
    splits = split.pills(
        "Splits", split_options, selection_mode="multi", default=split_options, key="split", bind="query-params"
    )
    return MapFilters(body_types=tuple(bodies), years=span, splits=tuple(splits))


def remember_selection() -> None:
    """on_select callback: turn the chart's selection into car ids; a single clicked point opens its details."""
    bundle, _ = common.bundle_or_error()
    if bundle is None:
        return
    selection = st.session_state[CHART_KEY].selection
    rows = selection_rows(selection.points, st.session_state.get(TRACES_KEY, ()))
    ids = common.bundle_table(bundle)["id"].iloc[rows].tolist()
    if len(ids) == 1 and not selection.box and not selection.lasso:
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


def show_selection(bundle: Bundle, table: pd.DataFrame, ids: list[str]) -> None:
    """Counts, a paged gallery and a CSV download of the selected cars."""
    rows = table.index.to_numpy()[table["id"].isin(ids).to_numpy()]
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


def controls(table: pd.DataFrame) -> tuple[str, str, MapFilters]:
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
    return colour, query, filters_ui(table)


def draw_map(
    bundle: Bundle, table: pd.DataFrame, colour: str, query: str, filters: MapFilters, chosen: int | None
) -> None:
    """The WebGL map of the filtered cars, search matches ringed and the chosen car marked."""
    rows = filter_rows(table, filters)
    matches = np.flatnonzero(search_mask(table, query))
    overlay = MapOverlay(highlight=matches, highlight_name=f"“{query}”", marked=chosen)
    height = common.scaled(620)
    view = (str(bundle.path), colour, filters, query, chosen, height)  # a selection alone keeps the figure
    mapped = common.memo(
        "explore_map",
        view,
        lambda: map_figure(
            table, rows, COLOUR_OPTIONS[colour], year_bins=bundle.year_bins, overlay=overlay, height=height
        ),
    )
    st.session_state[TRACES_KEY] = mapped.trace_rows
    found = f" · {fmt.count(len(matches))} match “{query}”" if query.strip() else ""
    st.caption(
        f"{fmt.count(len(rows))} of {fmt.count(len(table))} cars shown · click a car for its details; to select "
        f"cars, pick box or lasso select in the chart's toolbar and draw{found}"
    )
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
    colour, query, filters = controls(table)
    chosen = find_row(table, common.query_value("id"))
    draw_map(bundle, table, colour, query, filters, chosen)
    if chosen is not None:
        show_details(bundle, table, chosen)
    show_selection(bundle, table, st.session_state.get(SELECTION_KEY, []))


def main() -> None:
    st.title("Explore the embedding map")
    st.caption(
        "Every car of the bundle placed by its features (UMAP of the body-type network's 512-d embedding): "
        "nearby cars look alike to the model."
    )
    explorer(common.require_bundle())


main()
