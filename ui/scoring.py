"""Scoring an image in the UI (Score page and the Tour's live slide): score once per upload, then show the
detection, the gate, modernity, body type, typicality, Grad-CAM, the map position and the timings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core.artifacts import Bundle
from core.explain import GradCam, grad_cam, overlay
from core.explore import COLOUR_OPTIONS, group_members
from core.figures import (
    MapOverlay,
    density_map_figure,
    modernity_gauge,
    probability_bars,
    typicality_histogram,
    with_overlay,
)
from core.pipeline import ScoreResult, score_image
from core.report import year_errors
from core.scoring import group_key
from core.viewpoint import VIEW_CLASSES, VIEW_NAMES, FrontalDecision, describe_views, view_rejection
from ui import common, widgets
from ui import format as fmt

NEIGHBOURS_SHOWN = 8
CROP_WIDTH = 360
PASSED, FAILED, NOT_FRONTAL = (
    ":green[:material/check_circle:]",
    ":red[:material/cancel:]",
    ":orange[:material/do_not_disturb_on:]",
)
REJECTION_ADVICE = {
    "no car": "Try a photo in which one car fills a good part of the frame.",
    "view": "Take the photo again from one of those views.",  # the reason has said which views are accepted
}


@dataclass(frozen=True)
class Scored:
    """A score result and, for accepted cars, the Grad-CAM of the modernity prediction on the crop."""

    result: ScoreResult
    cam: GradCam | None


def _score(bundle: Bundle, data: bytes) -> Scored:
    result = score_image(data, bundle)
    cam = grad_cam(bundle.modernity, result.crop, bundle.transform) if result.accepted and result.crop else None
    return Scored(result, cam)


def score_bytes(bundle: Bundle, data: bytes) -> Scored | None:
    """Score `data` once per session (keyed by its sha256); a failure becomes a message and None."""
    token = (str(bundle.path), hashlib.sha256(data).hexdigest())
    with common.user_errors("scoring the image"), st.spinner("Finding the car and scoring it …"):
        return common.memo("score", token, lambda: _score(bundle, data))
    return None


# ---------------------------------------------------------------------------------------------- detection


def show_detection(result: ScoreResult) -> None:
    """The photo with the found car's box and mask, and which segmenter ran."""
    st.image(widgets.detection_overlay(result.image, result.box, result.mask), width="stretch")
    found = "car found" if result.box is not None else "no car found"
    st.caption(f"Segmenter: **{result.segmenter}** · {found} · car confidence {fmt.percent(result.car_confidence)}")


def _advice(reason: str) -> str:
    return REJECTION_ADVICE["no car"] if reason.lower().startswith("no car") else REJECTION_ADVICE["view"]


def view_check(bundle: Bundle, decision: FrontalDecision) -> str:
    """The estimated view (each view's probability where the gate estimates all four), and the views accepted."""
    ok = view_rejection(decision, bundle.valid_views, bundle.thresholds.view) is None
    accepted = "every view" if bundle.valid_views == "all" else describe_views(bundle.accepted_views)
    if decision.view is None:
        estimate = (f"frontal probability {fmt.percent(decision.probability)} "
                    f"(threshold {fmt.percent(decision.threshold)})")  # fmt: skip
    else:
        shares = ", ".join(
            f"{VIEW_NAMES[view]} {fmt.percent(p)}"
            for view, p in zip(VIEW_CLASSES, decision.view_probabilities, strict=True)
        )
        estimate = f"{VIEW_NAMES[decision.view]} ({shares})"
    return f"{PASSED if ok else NOT_FRONTAL} **View**: {estimate} · accepted: {accepted}"


def show_gate(bundle: Bundle, result: ScoreResult) -> None:
    """Car and view checks with probabilities and thresholds; a plain reason when the image was rejected."""
    thresholds = bundle.thresholds
    car_ok = result.box is not None
    st.markdown(
        f"{PASSED if car_ok else FAILED} **Car**: confidence {fmt.percent(result.car_confidence)} "
        f"(threshold {fmt.percent(thresholds.car)})"
    )
    if result.frontal is not None:
        st.markdown(view_check(bundle, result.frontal))
    if not result.accepted and result.reason:
        st.warning(f"**Not scored.** {result.reason} {_advice(result.reason)}", icon=":material/block:")
    for warning in result.warnings if result.accepted else ():
        st.warning(warning, icon=":material/warning:")


# ------------------------------------------------------------------------------------------------- scores


def show_modernity(bundle: Bundle, result: ScoreResult, key: str, height: int = 260) -> None:
    """Gauge (0-4) with the expected year, and the probability per year bin."""
    modernity = result.modernity
    gauge = modernity_gauge(modernity.score, modernity.expected_year, bundle.year_bins, common.scaled(height))
    widgets.show_figure(gauge, "modernity gauge", f"{key}:gauge")
    labels = [b.label for b in bundle.year_bins]
    title = f"Year bin · most likely {modernity.predicted_label}"
    bars = probability_bars(labels, modernity.probabilities, title, common.scaled(height))
    widgets.show_figure(bars, "year bin probabilities", f"{key}:bins")
    if trust := year_trust(bundle):
        st.caption(trust)


def year_trust(bundle: Bundle) -> str | None:
    """How far the year shown was off on the bundle's evaluations, and the make horizon of its training cars."""
    errors = [
        fmt.year_error(dataset, widgets.split_phrase(bundle.metrics.get(dataset)), row)
        for dataset, row in year_errors(common.bundle_headlines(bundle)).items()
    ]
    horizon = common.bundle_make_horizon(bundle)
    parts = ([f"On average it was off by {' and '.join(errors)}."] if errors else []) + (
        [fmt.horizon_caveat(horizon)] if horizon else []
    )
    return f"**How far to trust the year.** {' '.join(parts)}" if parts else None


def show_body_type(result: ScoreResult, key: str, height: int = 260) -> None:
    body = result.body_type
    figure = probability_bars(
        list(body.probabilities), list(body.probabilities.values()), f"Body type · {body.label}", common.scaled(height)
    )
    widgets.show_figure(figure, "body type probabilities", f"{key}:body")


def _morph_row(bundle: Bundle, result: ScoreResult) -> int | None:
    return bundle.morphs.find(result.body_type.index, result.modernity.predicted_bin)


def morph_picture(bundle: Bundle, morph: int, size: int = 160) -> Image.Image:
    return Image.fromarray(bundle.morphs.images[morph]).resize((size, size), Image.Resampling.BICUBIC)


def show_typicality(bundle: Bundle, table: pd.DataFrame, result: ScoreResult, key: str) -> None:
    """Cosine and percentile within the group, next to the group's morph and its most typical member."""
    typical = result.typicality
    morph = _morph_row(bundle, result)
    if not typical.has_morph or morph is None:
        st.info(typical.reason or f"No morph for {typical.group}.")
        return
    numbers, morph_column, member_column = st.columns([2, 1, 1])
    with numbers:
        st.metric(f"Typicality within {typical.group}", fmt.score(typical.cosine), help="cosine to the morph")
        st.markdown(
            f"**{fmt.percentile(typical.percentile)}** among the group's {fmt.count(typical.members)} training cars"
        )
    morph_column.image(morph_picture(bundle, morph), caption=f"Morph of {typical.group}")
    members = group_members(table, group_key(result.body_type.label, result.modernity.predicted_bin))
    if len(members):
        row = int(members.index[0])
        member_column.image(widgets.thumbnail(bundle, table, row), caption=f"Most typical: {members['label'].iat[0]}")
    histogram = typicality_histogram(
        bundle.morphs.typicality_values(morph),
        f"Typicality of {typical.group}'s training cars",
        typical.cosine,
        height=common.scaled(220),
    )
    widgets.show_figure(histogram, "typicality distribution", f"{key}:typicality")


def show_gradcam(scored: Scored) -> None:
    if scored.cam is None or scored.result.crop is None:
        return
    crop = scored.result.crop
    left, right = st.columns(2)
    left.image(crop, caption="The crop the networks saw", width=CROP_WIDTH)
    label = scored.result.modernity.predicted_label
    right.image(
        overlay(crop, scored.cam.heatmap),
        caption=f"Grad-CAM: regions that raised the '{label}' prediction ({fmt.percent(scored.cam.probability)})",
        width=CROP_WIDTH,
    )


def show_collection_map(
    bundle: Bundle, table: pd.DataFrame, key: str, result: ScoreResult | None = None, height: int = 480
) -> None:
    """The collection as one aggregated picture (built once per bundle and height); only a scored car's star and
    its nearest cars are markers (SVG, so the map is drawn at once)."""
    height = common.scaled(height)

    def picture() -> go.Figure:
        spec, rows = COLOUR_OPTIONS["year_bin"], np.arange(len(table))
        return density_map_figure(table, rows, spec, year_bins=bundle.year_bins, height=height, sample_points=0).figure

    collection = common.on_bundle(bundle, f"collection map:{height}", picture)
    if result is None:
        widgets.show_figure(collection, "the collection", f"{key}:map")
        return
    nearest = result.neighbours.indices[:NEIGHBOURS_SHOWN] if result.neighbours else np.empty(0, np.int64)
    overlay = MapOverlay(highlight=nearest, highlight_name="nearest cars", star=result.map_position)
    widgets.show_figure(with_overlay(collection, table, overlay), "map with your car", f"{key}:map")


def show_map_position(bundle: Bundle, table: pd.DataFrame, result: ScoreResult, key: str) -> None:
    """The upload as a star on the map, and its nearest collection cars with distances."""
    if result.map_position is None:
        return
    show_collection_map(bundle, table, key, result)
    if result.neighbours is None:
        return
    indices = result.neighbours.indices[:NEIGHBOURS_SHOWN]
    distances = dict(zip(indices.tolist(), result.neighbours.cosine_distances[:NEIGHBOURS_SHOWN].tolist(), strict=True))
    st.markdown("**Nearest cars in the collection** (cosine distance of the features; 0 = same direction)")
    widgets.gallery(
        bundle,
        table,
        indices,
        lambda row: f"{row['label']} · {row['body_label']} · distance {distances[int(row.name)]:.3f}",
        root=common.image_root(),
    )


def show_timings(result: ScoreResult) -> None:
    with st.expander("Timings per stage"):
        rows = [{"stage": stage, "time": fmt.milliseconds(ms)} for stage, ms in result.timings.items()]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="content")
