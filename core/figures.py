"""Plotly figures of the dashboard (no Streamlit): the embedding map, score charts, morph and report charts.

Each builder takes plain data and a height and returns a `go.Figure`, so pages stay thin, figures can be
exported (PNG from Plotly's mode bar, HTML from `figure_html`) and the benchmark can time them without a UI.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import plotly.colors as pc
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from core import density
from core.config import YearBin
from core.explore import UNKNOWN, ColourSpec, category_order
from core.report import INTERVAL_LEVEL, Headline
from core.scoring import whole_year

MISSING_COLOUR = "#b8b8b8"
HIGHLIGHT_COLOUR = "#111111"
STAR_COLOUR = "#ffc400"
MARKED_COLOUR = "#e4002b"
QUALITATIVE = pc.qualitative.Safe
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}
RASTER_WIDTH = 1000  # pixels across the aggregated map (about the chart's width on a laptop screen)
RASTER_ASPECT = 1.8  # its width over its height, near the chart's
SAMPLE_POINTS = 5_000  # points drawn over the aggregated map: hover labels, clicks and the legend
# Up to this many markers a map is drawn as SVG: without a GPU, the browser's WebGL set-up costs about a second,
# far more than SVG spends on a thousand markers.
SVG_POINTS = 1_000
ANNOTATED_CELLS = 100  # a heatmap writes its values in the cells up to this many cells
SAMPLE_OPACITY = 0.5
HIGHLIGHT_POINTS = 5_000  # search matches ringed over the aggregated map (a sample when there are more)


@dataclass(frozen=True)
class MapFigure:
    """The explorer's scatter and, per trace, the map-table rows its points were drawn from (for selections).

    `aggregated`: the points are one server-side picture with a sample drawn over it, so a box or lasso selects
    by its region (core.explore.MapSelection), not by the points the browser reports."""

    figure: go.Figure
    trace_rows: tuple[np.ndarray, ...]
    aggregated: bool = False


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


def _category_codes(
    table: pd.DataFrame, rows: np.ndarray, spec: ColourSpec, year_bins: Sequence[YearBin]
) -> tuple[np.ndarray, list[str]]:
    """Each row's category as its position in the legend order, and that order."""
    codes, categories = pd.factorize(table[spec.column].iloc[rows])
    order = category_order(pd.Series(categories), spec, year_bins)
    position = {category: index for index, category in enumerate(order)}
    remap = np.array([position[str(category)] for category in categories], dtype=np.int64)
    return remap[codes], order


def _categorical_traces(
    table: pd.DataFrame,
    rows: np.ndarray,
    coded: tuple[np.ndarray, list[str]],
    colours: Mapping[str, str],
    size: float,
    drawn: np.ndarray | None = None,
    opacity: float = 0.8,
) -> list[tuple[go.Scattergl, np.ndarray]]:
    """One trace per category (`coded`: `_category_codes` of the rows), named with its count among `rows`; only
    the positions `drawn` of `rows` (all when None) become points."""
    codes, order = coded
    keep = np.zeros(len(rows), dtype=bool)
    keep[slice(None) if drawn is None else drawn] = True
    traces = []
    for index, category in enumerate(order):
        in_category = codes == index
        members = rows[in_category & keep]
        marker = {"size": size, "color": colours[category], "opacity": opacity}
        traces.append((_points(table, members, f"{category} ({int(in_category.sum()):,})", marker), members))
    return traces


def _continuous_traces(
    table: pd.DataFrame, rows: np.ndarray, spec: ColourSpec, size: float, scale: dict | None = None
) -> list[tuple[go.Scattergl, np.ndarray]]:
    """The rows without a value in grey, the others on the spec's colour scale (or on `scale`: marker colour
    settings that pin it, as over an aggregated map)."""
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
    traces.append((_points(table, present, spec.title, marker | (scale or {}), legend=False), present))
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


def _map_layout(figure: go.Figure, height: int) -> None:
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
        coded = _category_codes(table, rows, spec, year_bins)
        traces = _categorical_traces(table, rows, coded, _legend_colours(coded, spec), size)
    else:
        traces = _continuous_traces(table, rows, spec, size)
    traces += _overlay_traces(table, overlay or MapOverlay())
    figure = go.Figure([trace for trace, _ in traces])
    _map_layout(figure, height)
    return MapFigure(figure=vector_if_few(figure), trace_rows=tuple(members for _, members in traces))


def colour_array(colours: Sequence[str]) -> np.ndarray:
    """K x 3 floats in 0..1 from Plotly colour strings ('#88ccee', 'rgb(1, 2, 3)')."""
    return np.array(pc.convert_colors_to_same_type(list(colours), colortype="tuple")[0], dtype=np.float64)


def png_uri(image: np.ndarray) -> str:
    """An RGBA array as a PNG data URI (fast compression: it is sent once per view)."""
    buffer = io.BytesIO()
    Image.fromarray(image, "RGBA").save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _value_range(values: np.ndarray, centred: bool) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if centred:
        reach = max(abs(low), abs(high))
        return -reach, reach
    return low, high


def _legend_colours(coded: tuple[np.ndarray, list[str]], spec: ColourSpec) -> dict[str, str]:
    return category_colours(coded[1], ordinal=spec.key == "year_bin")


def _category_picture(
    table: pd.DataFrame, rows: np.ndarray, grid: density.Grid, coded: tuple[np.ndarray, list[str]], colours: dict
) -> np.ndarray:
    """The rows aggregated per category and shaded with the legend's colours."""
    x, y = (table[axis].to_numpy(dtype=np.float64)[rows] for axis in ("umap_x", "umap_y"))
    codes, order = coded
    counts = density.category_counts(grid, x, y, codes, len(order))
    return density.shade_categories(counts, colour_array([colours[c] for c in order]))


def _value_picture(
    table: pd.DataFrame, rows: np.ndarray, spec: ColourSpec, grid: density.Grid
) -> tuple[np.ndarray, dict]:
    """The rows' mean value per pixel on the spec's colour scale, and the marker settings that pin the sample's
    colour bar to the same scale (plotly.py's scale: plotly.js names some scales the other way round)."""
    x, y, values = (table[c].to_numpy(dtype=np.float64)[rows] for c in ("umap_x", "umap_y", spec.column))
    finite = np.isfinite(values)
    low, high = _value_range(values, centred=spec.key == "error")
    scale = pc.get_colorscale(spec.colorscale)
    lookup = colour_array(pc.sample_colorscale(scale, list(np.linspace(0.0, 1.0, 256))))
    sums, counts = density.value_sums(grid, x[finite], y[finite], values[finite])
    return density.shade_values(sums, counts, lookup, low, high), {"colorscale": scale, "cmin": low, "cmax": high}


def sampled_highlight(overlay: MapOverlay, limit: int = HIGHLIGHT_POINTS) -> MapOverlay:
    """The overlay with at most `limit` search matches ringed (a seeded sample, its legend entry says so)."""
    matches = overlay.highlight
    if matches is None or len(matches) <= limit:
        return overlay
    name = f"{overlay.highlight_name}, a sample of {len(matches):,}"
    return replace(overlay, highlight=density.sample(np.asarray(matches), limit), highlight_name=name)


def density_map_figure(
    table: pd.DataFrame,
    rows: np.ndarray,
    spec: ColourSpec,
    *,
    year_bins: Sequence[YearBin] = (),
    overlay: MapOverlay | None = None,
    height: int = 600,
    sample_points: int = SAMPLE_POINTS,
) -> MapFigure:
    """The map of many points: every row of `rows` aggregated into one picture (core.density) over the whole
    table's extent, with a seeded sample of `sample_points` rows drawn on top (hover labels, clicks, the legend and
    the colour bar) and the overlay above. Box and lasso select by region (MapFigure.aggregated)."""
    rows = np.asarray(rows, dtype=np.int64)
    x_all, y_all = table["umap_x"].to_numpy(dtype=np.float64), table["umap_y"].to_numpy(dtype=np.float64)
    grid = density.grid_over(x_all, y_all, RASTER_WIDTH, round(RASTER_WIDTH / RASTER_ASPECT))
    drawn = density.sample(np.arange(len(rows)), sample_points)
    size = point_size(len(drawn))
    if spec.categorical:
        coded = _category_codes(table, rows, spec, year_bins)
        colours = _legend_colours(coded, spec)
        image = _category_picture(table, rows, grid, coded, colours)
        traces = _categorical_traces(table, rows, coded, colours, size, drawn=drawn, opacity=SAMPLE_OPACITY)
    else:
        image, scale = _value_picture(table, rows, spec, grid)
        traces = _continuous_traces(table, rows[drawn], spec, size, scale | {"opacity": SAMPLE_OPACITY})
    traces += _overlay_traces(table, sampled_highlight(overlay or MapOverlay()))
    figure = go.Figure([trace for trace, _ in traces])
    _map_layout(figure, height)
    figure.update_layout(
        images=[
            {
                "source": png_uri(image),
                "xref": "x",
                "yref": "y",
                "x": grid.x0,
                "y": grid.y1,
                "sizex": grid.x1 - grid.x0,
                "sizey": grid.y1 - grid.y0,
                "sizing": "stretch",
                "layer": "below",
            }
        ],
        xaxis={"range": [grid.x0, grid.x1]},
        yaxis={"range": [grid.y0, grid.y1]},
        legend={"itemclick": False, "itemdoubleclick": False},  # a legend click would hide the sample, not the map
    )
    return MapFigure(figure=vector_if_few(figure), trace_rows=tuple(members for _, members in traces), aggregated=True)


def with_overlay(figure: go.Figure, table: pd.DataFrame, overlay: MapOverlay) -> go.Figure:
    """A copy of a map figure of `table` with the overlay's markers on top (a map built once, marked per car)."""
    marked = go.Figure(figure)
    marked.add_traces([trace for trace, _ in _overlay_traces(table, sampled_highlight(overlay))])
    return vector_if_few(marked)


def vector_if_few(figure: go.Figure) -> go.Figure:
    """The figure with its WebGL traces as SVG ones when it draws at most SVG_POINTS markers in all."""
    if sum(len(trace.x) for trace in figure.data) > SVG_POINTS:
        return figure
    traces = [go.Scatter({k: v for k, v in trace.to_plotly_json().items() if k != "type"}) for trace in figure.data]
    return go.Figure(traces, layout=figure.layout)


def explorer_map(
    table: pd.DataFrame,
    rows: np.ndarray,
    spec: ColourSpec,
    *,
    point_limit: int,
    year_bins: Sequence[YearBin] = (),
    overlay: MapOverlay | None = None,
    height: int = 600,
) -> MapFigure:
    """Every point as WebGL markers up to `point_limit` rows (exact hover, PNG/HTML export of the points), the
    aggregated map above it."""
    build = map_figure if len(rows) <= point_limit else density_map_figure
    return build(table, rows, spec, year_bins=year_bins, overlay=overlay, height=height)


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
            title={"text": f"Modernity · expected year {int(whole_year(expected_year))}"},
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


# Plotly's axis automargin measures every tick label in the browser and draws the chart again with the margins it
# found: about half of Plotly's time on a page of charts (the Model report: 1.13 s of 8 charts -> 0.63 s without).
# The cartesian charts below set their margins from their labels' lengths instead.
CHAR_PX = 7.5  # a tick-label character at Plotly's 12 px font, generously
LINE_PX = 18  # a line of text: an axis title
NUMBER_CHARS = 6  # numeric ticks ("1,000", "0.75", "-0.25")
ROTATE_ABOVE_PX = 300  # category labels wider than this in all are turned 45 degrees (a half-width chart's room)


def _tick_labels(figure: go.Figure, letter: str) -> list[str]:
    """The category labels on an axis (x or y), from its traces; empty for a numeric axis."""
    labels: dict[str, None] = {}
    for trace in figure.data:
        values = getattr(trace, letter, None)
        if values is not None and len(values) and isinstance(values[0], str):
            labels.update(dict.fromkeys(values))
    return list(labels)


def _has_title(axis: go.layout.XAxis | go.layout.YAxis) -> bool:
    return bool(axis.title and axis.title.text)


def fit_margins(figure: go.Figure) -> go.Figure:
    """Margins wide enough for the axes' labels and titles, with automargin off (see CHAR_PX); in place."""
    y_labels, x_labels = _tick_labels(figure, "y"), _tick_labels(figure, "x")
    y_chars = max(map(len, y_labels), default=NUMBER_CHARS)
    x_chars = max(map(len, x_labels), default=NUMBER_CHARS)
    turned = sum(len(label) * CHAR_PX + 16 for label in x_labels) > ROTATE_ABOVE_PX
    label_height = 0.71 * x_chars * CHAR_PX if turned else LINE_PX
    margin = figure.layout.margin
    figure.update_layout(
        margin={
            "l": round(10 + y_chars * CHAR_PX + LINE_PX * _has_title(figure.layout.yaxis)),
            "b": round(14 + label_height + LINE_PX * _has_title(figure.layout.xaxis)),
            "t": margin.t,
            "r": margin.r,
        }
    )
    # Plotly turns crowded labels by itself, but without automargin it would then overlap the axis title: the
    # angle is chosen here, with the margin.
    figure.update_xaxes(automargin=False, tickangle=-45 if turned else 0)
    figure.update_yaxes(automargin=False)
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
    return fit_margins(figure)


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
    return fit_margins(figure)


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
    """Heatmap (rows = y labels from top to bottom), its values written in the cells up to ANNOTATED_CELLS cells
    (beyond, they are unreadable and slow the browser: the hover gives them)."""
    matrix = np.asarray(matrix, dtype=float)
    text = [[format(v, value_format) if np.isfinite(v) else "" for v in row] for row in matrix]
    written = (
        {"texttemplate": "%{text}"}
        if matrix.size <= ANNOTATED_CELLS
        else {"hovertemplate": "%{y} · %{x}: %{text}<extra></extra>"}
    )
    figure = go.Figure(
        go.Heatmap(
            z=matrix, x=list(x_labels), y=list(y_labels), text=text, colorscale=colorscale, hoverongaps=False, **written
        )
    )
    figure.update_layout(
        title=title,
        height=height,
        margin=MARGIN,
        xaxis={"title": {"text": x_title}, "type": "category"},
        yaxis={"title": {"text": y_title}, "autorange": "reversed", "type": "category"},
    )
    return fit_margins(figure)


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
    return fit_margins(figure)


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
    return fit_margins(figure)


def stacked_counts(counts: pd.DataFrame, title: str, height: int = 320) -> go.Figure:
    """Stacked bars: one bar per index value, one colour per column (e.g. datasets x splits)."""
    figure = go.Figure(
        [go.Bar(name=str(column), x=[str(i) for i in counts.index], y=counts[column]) for column in counts.columns]
    )
    figure.update_layout(title=title, height=height, margin=MARGIN, barmode="stack", xaxis={"type": "category"})
    return fit_margins(figure)


def curves(history: pd.DataFrame, columns: Sequence[str], title: str, height: int = 320) -> go.Figure:
    """Training curves: the chosen columns of a per-epoch history against its `epoch` column."""
    figure = go.Figure([go.Scatter(x=history["epoch"], y=history[c], mode="lines+markers", name=c) for c in columns])
    figure.update_layout(title=title, height=height, margin=MARGIN, xaxis={"title": {"text": "epoch"}})
    return fit_margins(figure)


def figure_html(figure: go.Figure) -> str:
    """A standalone HTML page of the figure (plotly.js from its CDN, so the file stays small)."""
    return figure.to_html(include_plotlyjs="cdn", full_html=True)


RANGE_PANELS = (("", "scores (higher is better)"), ("years", "errors in years (lower is better)"))


def ranges_figure(found: Mapping[str, Sequence[Headline]], height: int = 320) -> go.Figure | None:
    """Each data set's headline numbers that have a range over resamples of their car models: the number as a dot,
    the range as a bar, what one constant answer scores as a hollow mark; scores and errors in years side by side.
    None when no headline has a range."""
    panels = [[(f"{dataset} · {h.label}", h) for dataset, rows in found.items() for h in rows
               if h.interval is not None and h.unit == unit] for unit, _ in RANGE_PANELS]  # fmt: skip
    if not any(panels):
        return None
    figure = make_subplots(rows=1, cols=2, subplot_titles=[title for _, title in RANGE_PANELS], horizontal_spacing=0.3)
    for column, items in enumerate(panels, start=1):
        if not items:
            continue
        names, rows = [name for name, _ in items], [h for _, h in items]
        digits = rows[0].digits  # one panel, one unit
        figure.add_scatter(
            x=[h.value for h in rows], y=names, mode="markers", name="measured", showlegend=column == 1,
            marker={"size": 10, "color": QUALITATIVE[0]}, row=1, col=column,
            error_x={"type": "data", "symmetric": False, "array": [h.interval[1] - h.value for h in rows],
                     "arrayminus": [h.value - h.interval[0] for h in rows]},
            hovertemplate=f"%{{y}}: %{{x:.{digits}f}}<br>{100 * INTERVAL_LEVEL:.0f} % of resamples of the car "
            "models: %{customdata}<extra></extra>",
            customdata=[f"{h.interval[0]:.{digits}f}–{h.interval[1]:.{digits}f}" for h in rows],
        )  # fmt: skip
        constant = [(name, h.baseline) for name, h in items if h.baseline is not None]
        if constant:
            figure.add_scatter(
                x=[value for _, value in constant], y=[name for name, _ in constant], mode="markers",
                name="one constant answer", showlegend=column == 1, row=1, col=column,
                marker={"size": 10, "symbol": "circle-open", "color": MISSING_COLOUR, "line": {"width": 2}},
            )  # fmt: skip
        figure.update_yaxes(autorange="reversed", row=1, col=column)
    figure.update_layout(height=height, margin=MARGIN, legend={"orientation": "h", "y": -0.15})
    return fit_margins(figure)
