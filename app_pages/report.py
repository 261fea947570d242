"""Report page: the bundle's model card as pictures (data, splits, metrics with baselines, confusion, per-class F1,
training curves, provenance)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.artifacts import Bundle
from core.figures import bars, confusion_heatmap, curves, heatmap, stacked_counts
from core.report import (
    TaskMetrics,
    collect_curves,
    collect_tasks,
    group_counts,
    initialisation_line,
    provenance_facts,
    split_counts,
)
from ui import common, widgets
from ui import format as fmt

NO_METRICS = (
    "This bundle records no evaluation metrics (manifest.json `metrics` is empty). `python -m training.build` "
    "adds test-split metrics; `python -m training.evaluate --bundle <dir> --data <folder>` prints them."
)


def data_section(bundle: Bundle) -> None:
    st.header("Data")
    splits, groups = st.columns(2)
    with splits:
        counts = split_counts(bundle.images, bundle.provenance)
        widgets.show_figure(
            stacked_counts(counts, "Images per dataset and split", common.scaled(340)), "split sizes", "report:splits"
        )
    with groups:
        table = group_counts(bundle.images, bundle.body_types, bundle.year_bins)
        figure = heatmap(
            table.to_numpy(),
            list(table.columns),
            list(table.index),
            "Collection cars per body type and year bin",
            value_format=".0f",
            x_title="year bin",
            y_title="body type",
            height=common.scaled(340),
        )
        widgets.show_figure(figure, "cars per group", "report:groups")


def score_table(task: TaskMetrics) -> pd.DataFrame:
    """The task's numbers, then its baselines, as text (counts without decimals)."""
    rows = [{"measure": name, "value": fmt.measure(value), "kind": "model"} for name, value in task.scores.items()]
    rows += [{"measure": n, "value": fmt.measure(v), "kind": "baseline"} for n, v in task.baselines.items()]
    return pd.DataFrame(rows, columns=["measure", "value", "kind"])


def task_section(task: TaskMetrics, index: int) -> None:
    """A task's numbers against its baselines, its confusion matrix and per-class F1 when recorded."""
    st.subheader(task.name)
    numbers, matrix, f1 = st.columns([2, 3, 2])
    numbers.dataframe(score_table(task), hide_index=True, width="stretch")
    labels = list(task.labels)
    if task.confusion is not None and len(labels) == len(task.confusion):
        with matrix:
            figure = confusion_heatmap(task.confusion, labels, f"Confusion · {task.name}", common.scaled(360))
            widgets.show_figure(figure, f"confusion {task.name}", f"report:confusion:{index}")
    if task.per_class_f1 is not None and len(labels) == len(task.per_class_f1):
        with f1:
            figure = bars(
                dict(zip(labels, task.per_class_f1, strict=True)),
                f"F1 per class · {task.name}",
                height=common.scaled(360),
            )
            widgets.show_figure(figure, f"f1 {task.name}", f"report:f1:{index}")


def metrics_section(bundle: Bundle) -> None:
    st.header("Metrics")
    tasks = collect_tasks(bundle.metrics)
    if not tasks:
        st.info(NO_METRICS)
    for index, task in enumerate(tasks):
        task_section(task, index)


def training_section(bundle: Bundle) -> None:
    found = collect_curves(bundle.manifest.training)
    if not found:
        return
    st.header("Training curves")
    for index, curve in enumerate(found):
        losses = [c for c in curve.series if "loss" in c]
        others = [c for c in curve.series if c not in losses and c not in ("seconds", "images_per_s")]
        loss_column, metric_column = st.columns(2)
        for column, names, what in ((loss_column, losses, "loss"), (metric_column, others, "validation")):
            if names:
                with column:
                    figure = curves(curve.history, names, f"{curve.name} · {what}", common.scaled(320))
                    widgets.show_figure(figure, f"{curve.name} {what}", f"report:curve:{index}:{what}")


def provenance_section(bundle: Bundle) -> None:
    st.header("Provenance")
    manifest = bundle.manifest
    st.markdown(
        f"**Bundle** {manifest.name} · schema {manifest.schema_version} · built {manifest.created or 'unknown'}  \n"
        f"**Backbones** {initialisation_line(manifest.networks)}  \n"
        f"**Input** {manifest.input_size} px · **thresholds** car {fmt.percent(manifest.thresholds.car)}, "
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
    data_section(bundle)
    metrics_section(bundle)
    training_section(bundle)
    provenance_section(bundle)


main()
