"""Morphs page: the average car of every body type x year bin, its members from most to least typical, and how
far the morphs lie from each other."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.artifacts import Bundle
from core.explore import group_examples, morph_similarity
from core.figures import heatmap, typicality_histogram
from ui import common, scoring, widgets
from ui import format as fmt

EXAMPLES = 5
NO_MEMBERS = (
    "No car of the collection is predicted into {title}: cars join a group by their predicted body type and year "
    "bin, while the morph was made from the training cars labelled so."
)


def morph_cell(bundle: Bundle, cell: pd.Series) -> None:
    morph = int(cell["morph"])
    st.image(scoring.morph_picture(bundle, morph, 128), width="stretch")
    st.metric("members", fmt.count(int(cell["count"])), help="Training cars in the group.")
    st.caption(f"median typicality {fmt.score(cell['median_typicality'])}")


def grid(bundle: Bundle, morphs: pd.DataFrame) -> None:
    """Year bins across, one row per body type under its name (a full-width heading, so a long name never wraps
    mid-word); an empty cell is a group with too few training cars."""
    for column, year_bin in zip(st.columns(len(bundle.year_bins)), bundle.year_bins, strict=True):
        column.markdown(f"**{year_bin.label}**")
    cells = {(row.body_type, row.year_bin): row for row in morphs.itertuples(index=False)}
    for body in bundle.body_types:
        st.markdown(f"#### {body}")
        for index, column in enumerate(st.columns(len(bundle.year_bins))):
            cell = cells.get((body, index))
            with column:
                if cell is None:
                    st.caption(f"fewer than {bundle.manifest.morph_min_members} cars")
                else:
                    morph_cell(bundle, pd.Series(cell._asdict()))


def choose_group(morphs: pd.DataFrame) -> pd.Series:
    """Group picker bound to ?group=<Body|bin>; the largest group by default."""
    keys = morphs["key"].tolist()
    titles = dict(zip(keys, morphs["title"], strict=True))
    largest = int(morphs["count"].to_numpy().argmax())
    key = st.selectbox("Group", keys, index=largest, format_func=titles.get, key="group", bind="query-params")
    return morphs.loc[morphs["key"] == key].iloc[0]


def example_caption(row: pd.Series) -> str:
    return (
        f"{row['label']} · typicality {fmt.score(row['typicality'])} ({fmt.percentile(row['typicality_percentile'])})"
        f" · modernity {fmt.score(row['modernity'])}"
    )


def group_rows(bundle: Bundle, group: pd.Series) -> None:
    """Most typical, average and least typical members side by side (the seed's three rows)."""
    table = common.bundle_table(bundle)
    examples = group_examples(table, group["key"], group["title"], EXAMPLES)
    morph_column, rows_column = st.columns([1, 4])
    morph_column.image(scoring.morph_picture(bundle, int(group["morph"]), 200), caption=f"Morph of {group['title']}")
    with rows_column:
        if examples.most.empty:
            st.info(NO_MEMBERS.format(title=group["title"]))
        for title, members in (
            ("Most typical", examples.most),
            ("Average", examples.average),
            ("Least typical", examples.least),
        ):
            if len(members):
                st.markdown(f"**{title}**")
                widgets.gallery(bundle, table, members.index, example_caption, root=common.image_root(), width=150)
    values = bundle.morphs.typicality_values(int(group["morph"]))
    histogram = typicality_histogram(
        values, f"Typicality of {group['title']}'s training cars", height=common.scaled(260)
    )
    widgets.show_figure(histogram, f"typicality {group['title']}", "morphs:histogram")


def distances(bundle: Bundle, morphs: pd.DataFrame) -> None:
    similarity = morph_similarity(bundle.morphs)
    titles = morphs["title"].tolist()
    figure = heatmap(
        similarity,
        titles,
        titles,
        "Cosine similarity between morphs (1 = same direction)",
        colorscale="Viridis",
        height=common.scaled(max(360, 34 * len(titles) + 160)),
    )
    widgets.show_figure(figure, "morph similarity", "morphs:similarity")


def main() -> None:
    st.title("Morphs")
    st.caption(
        "A morph is the average car of one body type and one year bin: the mean of its members' features (pictured "
        "as the pixel average of their photos, each mirrored to face the same way). Typicality is a car's cosine "
        "similarity to its group's morph."
    )
    bundle = common.require_bundle()
    morphs = common.bundle_morphs(bundle)
    if morphs.empty:
        st.info(f"This bundle has no morphs: no group reached {bundle.manifest.morph_min_members} training cars.")
        return
    grid(bundle, morphs)
    st.divider()
    st.header("One group, from most to least typical")
    group_rows(bundle, choose_group(morphs))
    st.divider()
    st.header("How far the morphs lie from each other")
    distances(bundle, morphs)


main()
