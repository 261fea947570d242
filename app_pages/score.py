"""Score page: a photo of a car in (upload, camera, or a car from the collection), modernity and typicality out."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.artifacts import Bundle
from core.explore import example_rows
from ui import common, scoring

INTRO = (
    "Drop a photo of a car, ideally seen from the front. carmorph finds the car, checks the view, and says "
    "**how modern** its design looks (0 = oldest year bin, 4 = newest) and **how typical** it is for its body type "
    "and era."
)
UPLOAD, CAMERA, COLLECTION = "Upload", "Camera", "Collection"


def pick_source(root: Path | None) -> str:
    """Where the photo comes from (?source=...); the collection needs the image root."""
    options = [UPLOAD, CAMERA] + ([COLLECTION] if root is not None else [])
    choice = st.segmented_control(
        "Photo from", options, default=UPLOAD, required=True, key="source", bind="query-params"
    )
    return choice or UPLOAD


def collection_bytes(bundle: Bundle, root: Path) -> bytes | None:
    """A car of the collection chosen by id (shareable as ?car=<id>), read from the image root."""
    table = common.bundle_table(bundle)
    rows = example_rows(table, year_bins=bundle.year_bins)
    ids = table["id"].iloc[rows].tolist()
    labels = dict(zip(ids, table["label"].iloc[rows], strict=True))
    chosen = st.selectbox(
        "Car",
        ids,
        format_func=lambda i: f"{labels[i]} ({i})",
        index=None,
        placeholder="Choose a car …",
        key="car",
        bind="query-params",
    )
    if chosen is None:
        return None
    path = root / str(table.loc[table["id"] == chosen, "path"].iat[0])
    if not path.is_file():
        st.warning(f"{path} is not under the image root any more; choose another car or fix the image root.")
        return None
    return path.read_bytes()


def photo_bytes(bundle: Bundle, root: Path | None) -> bytes | None:
    """The bytes of the chosen photo, from whichever source is selected."""
    source = pick_source(root)
    if source == CAMERA:
        shot = st.camera_input("Take a photo of a car", key="camera")
        return shot.getvalue() if shot else None
    if source == COLLECTION and root is not None:
        return collection_bytes(bundle, root)
    upload = st.file_uploader("Photo of a car (JPEG, PNG, WebP, BMP, GIF, TIFF)", key="upload")
    return upload.getvalue() if upload else None


def show_result(bundle: Bundle, scored: scoring.Scored) -> None:
    result, table = scored.result, common.bundle_table(bundle)
    photo, gate = st.columns([3, 2])
    with photo:
        scoring.show_detection(result)
    with gate:
        st.subheader("Checks")
        scoring.show_gate(bundle, result)
    if result.accepted:
        st.subheader("How modern")
        gauge_column, body_column = st.columns([3, 2])
        with gauge_column:
            scoring.show_modernity(bundle, result, "score")
        with body_column:
            scoring.show_body_type(result, "score")
        st.subheader("How typical")
        scoring.show_typicality(bundle, table, result, "score")
        st.subheader("What drove the modernity score")
        scoring.show_gradcam(scored)
        st.subheader("Where it sits among the collection")
        scoring.show_map_position(bundle, table, result, "score")
    scoring.show_timings(result)


def main() -> None:
    st.title("How modern, how typical?")
    st.markdown(INTRO)
    bundle, error = common.bundle_or_error()
    if bundle is None:
        common.show_missing_bundle(error)
        return
    data = photo_bytes(bundle, common.image_root())
    if data is None:
        st.info("Waiting for a photo.", icon=":material/photo_camera:")
        st.caption("The collection on its map, coloured by year bin: a scored car lands on it as a star.")
        scoring.show_collection_map(bundle, common.bundle_table(bundle), "waiting")
        return
    scored = scoring.score_bytes(bundle, data)
    if scored is not None:
        show_result(bundle, scored)


main()
