"""Report page: the bundle's model card as pictures (data, splits, metrics with baselines, confusion, per-class F1,
training curves, provenance)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.artifacts import Bundle
from core.figures import bars, confusion_heatmap, curves, heatmap, stacked_counts
from core.report import (
    INTERVAL_LEVEL,
    TaskMetrics,
    collect_curves,
    collect_tasks,
    dataset_of,
    group_counts,
    initialisation_line,
    is_year,
    measure_name,
    provenance_facts,
    split_counts,
)
from ui import common, widgets
from ui import format as fmt

NO_METRICS = (
    "This bundle records no evaluation metrics (manifest.json `metrics` is empty). `python -m training.build` "
    "adds test-split metrics; `python -m training.evaluate --bundle <dir> --data <folder>` prints them."
)


def figure(bundle: Bundle, name: str, build: Callable[[int], go.Figure], height: int) -> None:
    """A report figure at the page's scale, built once per bundle and height (every visit reuses it)."""
    scaled = common.scaled(height)
    shown = common.on_bundle(bundle, f"report:{name}:{scaled}", lambda: build(scaled))
    widgets.show_figure(shown, name, f"report:{name}")


def glance_section(bundle: Bundle) -> None:
    found = common.bundle_headlines(bundle)
    if not found:
        return
    st.header("At a glance")
    st.caption("Each data set's main numbers against what one constant answer scores; the full table is below.")
    widgets.headline_cards(bundle, found)
    common.show_ranges(bundle, found, "report:ranges")


def data_section(bundle: Bundle) -> None:
    st.header("Data")
    splits, groups = st.columns(2)
    with splits:
        counts = split_counts(bundle.images, bundle.provenance)
        figure(bundle, "split sizes", lambda h: stacked_counts(counts, "Images per dataset and split", h), 340)
    with groups:
        table = group_counts(bundle.images, bundle.body_types, bundle.year_bins)
        figure(
            bundle,
            "cars per group",
            lambda h: heatmap(
                table.to_numpy(),
                list(table.columns),
                list(table.index),
                "Collection cars per body type and year bin",
                value_format=".0f",
                x_title="year bin",
                y_title="body type",
                height=h,
            ),
            340,
        )


RANGE_COLUMN = f"range over car models ({fmt.percent(INTERVAL_LEVEL)})"


def metrics_table(tasks: list[TaskMetrics]) -> pd.DataFrame:
    """Every task's numbers (with their range over resamples of the car models where recorded), then its baselines,
    one row each, with readable names (years as years)."""
    rows = [
        {"task": task.name, "measure": measure_name(key), "value": fmt.measure(value, is_year(key)),
         RANGE_COLUMN: fmt.measure_range(task.intervals.get(key) if kind == "model" else None), "kind": kind}
        for task in tasks
        for kind, values in (("model", task.scores), ("baseline", task.baselines))
        for key, value in values.items()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["task", "measure", "value", RANGE_COLUMN, "kind"])


def task_figures(bundle: Bundle, task: TaskMetrics, index: int) -> None:
    """A task's confusion matrix and per-class F1, when recorded (the task is the heading, so titles stay short)."""
    labels = list(task.labels)
    confusion = task.confusion is not None and len(labels) == len(task.confusion)
    f1 = task.per_class_f1 is not None and len(labels) == len(task.per_class_f1)
    if not (confusion or f1):
        return
    st.subheader(task.name)
    matrix, bars_column = st.columns([3, 2])
    if confusion:
        with matrix:
            figure(
                bundle, f"confusion {index}", lambda h: confusion_heatmap(task.confusion, labels, "Confusion", h), 360
            )
    if f1:
        scores = dict(zip(labels, task.per_class_f1, strict=True))
        with bars_column:
            figure(bundle, f"f1 {index}", lambda h: bars(scores, "F1 per class", height=h), 360)


def choose(label: str, options: list[str], key: str) -> str:
    """One of `options` as a row of buttons bound to ?<key>= (the first by default): the page draws the figures of
    one choice at a time, so it appears at once however many data sets and networks the bundle has."""
    choice = st.segmented_control(label, options, default=options[0], key=key, bind="query-params")
    return choice if choice in options else options[0]


def metrics_section(bundle: Bundle) -> None:
    st.header("Metrics")
    tasks = collect_tasks(bundle.metrics)
    if not tasks:
        st.info(NO_METRICS)
        return
    table = common.on_bundle(bundle, "report:metrics", lambda: metrics_table(tasks))
    st.dataframe(table, hide_index=True, width="stretch", height=min(36 * (len(table) + 1), 460))
    with_figures = [(index, task) for index, task in enumerate(tasks) if task.confusion or task.per_class_f1]
    if not with_figures:
        return
    datasets = list(dict.fromkeys(dataset_of(task) for _, task in with_figures))
    shown = choose("Confusion and per-class F1 of", datasets, "report_data")
    for index, task in with_figures:
        if dataset_of(task) == shown:
            task_figures(bundle, task, index)


def training_section(bundle: Bundle) -> None:
    found = collect_curves(bundle.manifest.training)
    if not found:
        return
    st.header("Training curves")
    shown = choose("Network", [curve.name for curve in found], "report_curves")
    for index, curve in enumerate(found):
        if curve.name != shown:
            continue
        losses = [c for c in curve.series if "loss" in c]
        others = [c for c in curve.series if c not in losses and c not in ("seconds", "images_per_s")]
        st.subheader(curve.name)
        if not curve.held_out:
            st.caption(REFIT_CAPTION)
        loss_column, metric_column = st.columns(2)
        for column, names, what in ((loss_column, losses, "loss"), (metric_column, others, "validation")):
            if names:
                with column:
                    figure(
                        bundle,
                        f"curve {index} {what}",
                        lambda h, c=curve, n=names, w=what: curves(c.history, n, w, h),
                        320,
                    )


MIRRORED = ", the scores averaged over the crop and its mirror image"
REFIT_CAPTION = (
    "A release refit: this network was trained on the validation cars too (its recipe and schedule chosen before, "
    "on validation), so its validation curve is not held out. The test metrics above are."
)


def provenance_section(bundle: Bundle) -> None:
    st.header("Provenance")
    manifest = bundle.manifest
    st.markdown(
        f"**Bundle** {manifest.name} · schema {manifest.schema_version} · built {manifest.created or 'unknown'}  \n"
        f"**Backbones** {initialisation_line(manifest.networks, manifest.training)}  \n"
        f"**Input** {manifest.input_size} px{MIRRORED if manifest.flip_average else ''} "
        f"(gate {manifest.gate_transform.size} px) · "
        f"**thresholds** car {fmt.percent(manifest.thresholds.car)}, "
        f"frontal {fmt.percent(manifest.thresholds.frontal)} · **valid views** {manifest.valid_views} · "
        f"**segmenter** {manifest.segmenter} · **morphs** at least {manifest.morph_min_members} training cars"
    )
    facts = provenance_facts(bundle.provenance)
    if facts:
        st.dataframe(
            pd.DataFrame({"entry": list(facts), "value": list(facts.values())}), hide_index=True, width="stretch"
        )


def main() -> None:
    st.title("Model report")
    bundle = common.require_bundle()
    st.caption(f"The model card of **{bundle.name}**, drawn from its manifest and tables.")
    glance_section(bundle)
    data_section(bundle)
    metrics_section(bundle)
    training_section(bundle)
    provenance_section(bundle)


main()
