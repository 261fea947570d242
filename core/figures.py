"""Plotly figures of the dashboard (no Streamlit): the embedding map, score charts, morph and report charts.

Each builder takes plain data and a height and returns a `go.Figure`, so pages stay thin, figures can be
exported (PNG from Plotly's mode bar, HTML from `figure_html`) and the benchmark can time them without a UI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.colors as pc
import plotly.graph_objects as go

from core.config import YearBin
from core.explore import UNKNOWN, ColourSpec, category_order

MISSING_COLOUR = "#b8b8b8"
HIGHLIGHT_COLOUR = "#111111"
STAR_COLOUR = "#ffc400"
MARKED_COLOUR = "#e4002b"
QUALITATIVE = pc.qualitative.Safe
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


@dataclass(frozen=True)
class MapFigure:
    """The explorer's scatter and, per trace, the map-table rows its points were drawn from (for selections)."""

    figure: go.Figure
    trace_rows: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class MapOverlay:
    """What is drawn over the points: search matches (rows), one marked car (row) and an upload's star (x, y)."""

    highlight: np.ndarray | None = None
    highlight_name: str = "search"
    marked: int | None = None
    star: tuple[float, float] | None = None
    star_name: str = "your car"


def point_size(count: int) -> float:
    """Marker size that keeps 50k points readable and 50 points visible."""
    return 8.0 if count < 2_000 else 5.0 if count < 20_000 else 3.0


def category_colours(categories: Sequence[str], ordinal: bool) -> dict[str, str]:
    """Colours per category: a viridis ramp for ordinal ones (year bins), a qualitative palette otherwise."""
    known = [c for c in categories if c != UNKNOWN]
    if ordinal and len(known) > 1:
        colours = pc.sample_colorscale("Viridis", [i / (len(known) - 1) for i in range(len(known))])
    else:
        colours = [QUALITATIVE[i % len(QUALITATIVE)] for i in range(len(known))]
    return dict(zip(known, colours, strict=True)) | {UNKNOWN: MISSING_COLOUR}


def _points(table: pd.DataFrame, rows: np.ndarray, name: str, marker: dict, legend: bool = True) -> go.Scattergl:
    return go.Scattergl(
        x=table["umap_x"].to_numpy(dtype=np.float32)[rows],  # float32: half the bytes sent to the browser
        y=table["umap_y"].to_numpy(dtype=np.float32)[rows],
        mode="markers",
        name=name,
        hovertext=table["hover"].to_numpy()[rows].astype(str),  # a fixed-width array copies fast in go.Figure
        hoverinfo="text",
        marker=marker,
        showlegend=legend,
    )


def _categorical_traces(
    table: pd.DataFrame, rows: np.ndarray, spec: ColourSpec, year_bins: Sequence[YearBin], size: float
) -> list[tuple[go.Scattergl, np.ndarray]]:
    codes, categories = pd.factorize(table[spec.column].iloc[rows])
    position = {str(category): code for code, category in enumerate(categories)}
    order = category_order(pd.Series(categories), spec, year_bins)
    colours = category_colours(order, ordinal=spec.key == "year_bin")
    traces = []
    for category in order:
        members = rows[codes == position[category]]
        marker = {"size": size, "color": colours[category], "opacity": 0.8}
        traces.append((_points(table, members, f"{category} ({len(members):,})", marker), members))
    return traces


def _continuous_traces(
    table: pd.DataFrame, rows: np.ndarray, spec: ColourSpec, size: float
) -> list[tuple[go.Scattergl, np.ndarray]]:
    values = table[spec.column].to_numpy(dtype=float)[rows]
    finite = np.isfinite(values)
    traces = []
    if (~finite).any():
        missing = rows[~finite]
        marker = {"size": size, "color": MISSING_COLOUR, "opacity": 0.6}
        traces.append((_points(table, missing, f"no value ({len(missing):,})", marker), missing))
    present = rows[finite]
    marker = {
        "size": size,
        "color": values[finite],
        "colorscale": spec.colorscale,
        "opacity": 0.85,
        "colorbar": {"title": {"text": spec.unit or spec.title}, "thickness": 14},
        "showscale": bool(finite.any()),
    }
    if spec.key == "error":
        marker["cmid"] = 0.0
    traces.append((_points(table, present, spec.title, marker, legend=False), present))
    return traces


def _overlay_traces(table: pd.DataFrame, overlay: MapOverlay) -> list[tuple[go.Scattergl, np.ndarray]]:
    traces = []
    if overlay.highlight is not None and len(overlay.highlight):
        marker = {"size": 11, "symbol": "circle-open", "color": HIGHLIGHT_COLOUR, "line": {"width": 2}}
        name = f"{overlay.highlight_name} ({len(overlay.highlight):,})"
        traces.append((_points(table, overlay.highlight, name, marker), overlay.highlight))
    if overlay.marked is not None:
        marked = np.array([overlay.marked])
        marker = {"size": 16, "symbol": "x", "color": MARKED_COLOUR, "line": {"width": 1, "color": "white"}}
        traces.append((_points(table, marked, "chosen car", marker), marked))
    if overlay.star is not None:
        star = go.Scattergl(
            x=[overlay.star[0]],
            y=[overlay.star[1]],
            mode="markers",
            name=overlay.star_name,
            hovertext=[overlay.star_name],
            hoverinfo="text",
            marker={"size": 24, "symbol": "star", "color": STAR_COLOUR, "line": {"width": 1.5, "color": "black"}},
        )
        traces.append((star, np.empty(0, dtype=np.int64)))
    return traces


def map_figure(
    table: pd.DataFrame,
    rows: np.ndarray,
    spec: ColourSpec,
    *,
    year_bins: Sequence[YearBin] = (),
    overlay: MapOverlay | None = None,
    height: int = 600,
) -> MapFigure:
    """WebGL scatter of the map table's `rows` at (umap_x, umap_y), coloured by `spec`, with the overlay on top."""
    rows = np.asarray(rows, dtype=np.int64)
    size = point_size(len(rows))
    if spec.categorical:
        traces = _categorical_traces(table, rows, spec, year_bins, size)
    else:
        traces = _continuous_traces(table, rows, spec, size)
    traces += _overlay_traces(table, overlay or MapOverlay())
    figure = go.Figure([trace for trace, _ in traces])
    figure.update_layout(
        height=height,
        margin=MARGIN,
        dragmode="pan",  # clicks pick a car only in pan/zoom mode; box and lasso are in the mode bar
        uirevision="map",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0.0, "itemsizing": "constant"},
        xaxis={"visible": False},
        yaxis={"visible": False},
        plot_bgcolor="white",
    )
    return MapFigure(figure=figure, trace_rows=tuple(members for _, members in traces))


# -------------------------------------------------------------------------------------------------- scores


def modernity_gauge(score: float, expected_year: float, year_bins: Sequence[YearBin], height: int = 260) -> go.Figure:
    """Gauge 0..K-1 with one band per year bin and the expected year under the number."""
    last = len(year_bins) - 1
    colours = category_colours([b.label for b in year_bins], ordinal=True)
    steps = [
        {"range": [max(0.0, i - 0.5), min(float(last), i + 0.5)], "color": colours[b.label]}
        for i, b in enumerate(year_bins)
    ]
    figure = go.Figure(
        go.Indicator(
            mode="gauge+number",
            value=score,
            number={"valueformat": ".2f", "suffix": f" / {last}"},
            title={"text": f"Modernity · expected year {expected_year:.0f}"},
            gauge={
                "axis": {
                    "range": [0, last],
                    "tickvals": list(range(last + 1)),
                    "ticktext": [b.label for b in year_bins],
                },
                "bar": {"color": "rgba(0,0,0,0.75)", "thickness": 0.25},
                "steps": steps,
            },
        )
    )
    figure.update_layout(height=height, margin={"l": 30, "r": 30, "t": 60, "b": 10})
    return figure


def probability_bars(
    labels: Sequence[str], probabilities: Sequence[float], title: str, height: int = 260, horizontal: bool = False
) -> go.Figure:
    """Probabilities (shown in %) per class; the most probable class is drawn darker."""
    values = np.asarray(probabilities, dtype=float) * 100
    best = int(values.argmax()) if len(values) else -1
    colours = ["#1f4e79" if i == best else "#8fb3d9" for i in range(len(values))]
    text = [f"{v:.0f} %" for v in values]
    bar = (
        go.Bar(y=list(labels), x=values, orientation="h", marker_color=colours, text=text)
        if horizontal
        else go.Bar(x=list(labels), y=values, marker_color=colours, text=text)
    )
    figure = go.Figure(bar)
    axis = {"range": [0, 100], "title": {"text": "probability (%)"}}
    # Labels such as "2007" or "2012" would otherwise turn the label axis numeric and hide "1991-2006"-like bins.
    labels_axis = {"type": "category"}
    figure.update_layout(
        title=title,
        height=height,
        margin=MARGIN,
        **({"xaxis": axis, "yaxis": labels_axis} if horizontal else {"xaxis": labels_axis, "yaxis": axis}),
    )
    return figure


def typicality_histogram(
    values: np.ndarray, title: str, marker: float | None = None, marker_name: str = "this car", height: int = 220
) -> go.Figure:
    """Distribution of a group's typicality (cosine to its morph), optionally with one car's value marked."""
    figure = go.Figure(go.Histogram(x=np.asarray(values, dtype=float), nbinsx=20, marker_color="#8fb3d9"))
    if marker is not None:
        figure.add_vline(x=marker, line_color=MARKED_COLOUR, line_width=3, annotation_text=marker_name)
    figure.update_layout(
        title=title,
        height=height,
        margin=MARGIN,
        xaxis={"title": {"text": "typicality (cosine to the morph)"}},
        yaxis={"title": {"text": "cars"}},
        bargap=0.05,
    )
    return figure


# ---------------------------------------------------------------------------------------- morphs and report


def heatmap(
    matrix: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    title: str,
    *,
    value_format: str = ".2f",
    colorscale: str = "Blues",
    x_title: str = "",
    y_title: str = "",
    height: int = 420,
) -> go.Figure:
    """Annotated heatmap (rows = y labels from top to bottom)."""
    matrix = np.asarray(matrix, dtype=float)
    text = [[format(v, value_format) if np.isfinite(v) else "" for v in row] for row in matrix]
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(x_labels),
            y=list(y_labels),
            text=text,
            texttemplate="%{text}",
            colorscale=colorscale,
            hoverongaps=False,
        )
    )
    figure.update_layout(
        title=title,
        height=height,
        margin=MARGIN,
        xaxis={"title": {"text": x_title}, "type": "category"},
        yaxis={"title": {"text": y_title}, "autorange": "reversed", "type": "category"},
    )
    return figure


def confusion_heatmap(confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str, height: int = 420):
    """Confusion matrix (rows true, columns predicted), coloured by row share, annotated with counts."""
    counts = np.asarray(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = heatmap(shares, labels, labels, title, x_title="predicted", y_title="true", height=height)
    figure.update_traces(text=counts.astype(int).astype(str), hovertemplate="true %{y}<br>predicted %{x}<br>%{text}")
    figure.update_traces(colorbar={"title": {"text": "row share"}})
    return figure


def bars(values: Mapping[str, float], title: str, *, value_format: str = ".2f", height: int = 300) -> go.Figure:
    """Simple labelled bars (per-class F1, counts ...)."""
    labels, numbers = list(values), [float(v) for v in values.values()]
    figure = go.Figure(go.Bar(x=labels, y=numbers, text=[format(v, value_format) for v in numbers]))
    figure.update_layout(title=title, height=height, margin=MARGIN, xaxis={"type": "category"})
    return figure


def model_vs_baselines(scores: Mapping[str, float], baselines: Mapping[str, float], title: str, height: int = 300):
    """Grouped bars: each metric of the model next to the baselines for the same metric name."""
    figure = go.Figure()
    figure.add_bar(name="model", x=list(scores), y=list(scores.values()), text=[f"{v:.2f}" for v in scores.values()])
    if baselines:
        figure.add_bar(
            name="baseline",
            x=list(baselines),
            y=list(baselines.values()),
            text=[f"{v:.2f}" for v in baselines.values()],
            marker_color=MISSING_COLOUR,
        )
    figure.update_layout(title=title, height=height, margin=MARGIN, barmode="group", xaxis={"type": "category"})
    return figure


def stacked_counts(counts: pd.DataFrame, title: str, height: int = 320) -> go.Figure:
    """Stacked bars: one bar per index value, one colour per column (e.g. datasets x splits)."""
    figure = go.Figure(
        [go.Bar(name=str(column), x=[str(i) for i in counts.index], y=counts[column]) for column in counts.columns]
    )
    figure.update_layout(title=title, height=height, margin=MARGIN, barmode="stack", xaxis={"type": "category"})
    return figure


def curves(history: pd.DataFrame, columns: Sequence[str], title: str, height: int = 320) -> go.Figure:
    """Training curves: the chosen columns of a per-epoch history against its `epoch` column."""
    figure = go.Figure([go.Scatter(x=history["epoch"], y=history[c], mode="lines+markers", name=c) for c in columns])
    figure.update_layout(title=title, height=height, margin=MARGIN, xaxis={"title": {"text": "epoch"}})
    return figure


def figure_html(figure: go.Figure) -> str:
    """A standalone HTML page of the figure (plotly.js from its CDN, so the file stays small)."""
    return figure.to_html(include_plotlyjs="cdn", full_html=True)
