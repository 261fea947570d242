"""Explore-page benchmark: build and serialise the map figure, and answer a selection, at 5k to 1M points.

  python -m bench.explorer [--bundle DIR] [--sizes 5000 50000 1000000] [--repeat 5]

The bundle's images table is resampled with replacement to each size (bench.synthetic: seeded, map coordinates,
modernity and typicality jittered), so the synthetic collection keeps the real one's labels, groups and shape;
thumbnails come from the bundle's atlas. The map is what the page draws (core.figures.explorer_map): WebGL points
up to the point limit ($CARMORPH_MAP_POINTS, 50,000), above it one picture aggregated on the server with a sample
of points over it. Timed, as the page does it (median of --repeat runs, this machine):

- table:     core.explore.map_table (once per bundle in the app, cached on the bundle);
- figure:    filter + the map figure, for a categorical and a continuous colour;
- to_json:   plotly.io.to_json(figure, validate=False), what st.plotly_chart sends to the browser;
- selection: a box selection of ~20 % of the cars, from the event's JSON to the selected rows (the points the
             event lists on a map of points; the box as a region query over the whole table on an aggregated
             map), their ids, the summary counts and means, and the first gallery page's thumbnails: what a
             selection costs before the page is redrawn;
- csv:       the selection as CSV (built only when the download button is clicked).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio

from bench.synthetic import resample, synthesise
from core.artifacts import Bundle, load_bundle
from core.config import bundle_dir, map_point_limit
from core.explore import (
    COLOUR_OPTIONS,
    MapFilters,
    MapSelection,
    filter_options,
    filter_rows,
    map_table,
    page_rows,
    regions_from_event,
    selected_rows,
    selection_csv,
    selection_rows,
    summarise_selection,
)
from core.figures import MapFigure, explorer_map

PAGE_SIZE = 24
SELECTED_SHARE = 0.2


@dataclass(frozen=True)
class Row:
    points: int
    renderer: str
    table_ms: float
    figure_ms: float
    figure_continuous_ms: float
    to_json_ms: float
    json_mb: float
    selected: int
    selection_ms: float
    csv_ms: float


def median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def box_event(mapped: MapFigure, table: pd.DataFrame) -> str:
    """The JSON Streamlit receives for a box over the left part of the map holding ~20 % of the points."""
    cut = float(np.quantile(table["umap_x"], SELECTED_SHARE))
    points = []
    for curve, rows in enumerate(mapped.trace_rows):
        for index in np.flatnonzero(table["umap_x"].to_numpy()[rows] <= cut):
            row = rows[index]
            x, y = float(table["umap_x"].iat[row]), float(table["umap_y"].iat[row])
            points.append(
                {"curve_number": curve, "point_number": int(index), "point_index": int(index), "x": x, "y": y}
            )
    box = [{"xref": "x", "yref": "y", "x": [-1e9, cut], "y": [-1e9, 1e9]}]
    return json.dumps(
        {"selection": {"points": points, "point_indices": [p["point_index"] for p in points], "box": box, "lasso": []}}
    )


def page_filters(table: pd.DataFrame) -> MapFilters:
    """The filters of a freshly opened page: every body type, split and year ticked."""
    options = filter_options(table)
    return MapFilters(body_types=options.body_types, years=options.years, splits=options.splits)


def answer_selection(bundle: Bundle, table: pd.DataFrame, mapped: MapFigure, event: str) -> np.ndarray:
    """What the page does for a selection: the selected rows (a region query on an aggregated map, the listed
    points otherwise), their ids, the summary and the first gallery page's pictures."""
    selection = json.loads(event)["selection"]
    if mapped.aggregated:
        regions = regions_from_event(selection["box"], selection["lasso"])
        rows = selected_rows(table, MapSelection(regions=regions, filters=page_filters(table)))
    else:
        picked = selection_rows(selection["points"], mapped.trace_rows)
        rows = selected_rows(table, table["id"].iloc[picked].tolist())
    table["id"].to_numpy()[rows].tolist()
    summarise_selection(table, rows, bundle.year_bins)
    for row in page_rows(rows, 1, PAGE_SIZE):
        bundle.thumbnail(int(table["atlas_index"].iat[row]))
    return rows


def measure(bundle: Bundle, size: int, repeat: int, point_limit: int) -> Row:
    images = synthesise(bundle.images, resample(len(bundle.images), size))
    table_ms = median_ms(lambda: map_table(images, bundle.year_bins), repeat)
    table = map_table(images, bundle.year_bins)

    def figure(colour: str) -> MapFigure:
        rows = filter_rows(table, page_filters(table))
        spec = COLOUR_OPTIONS[colour]
        return explorer_map(table, rows, spec, point_limit=point_limit, year_bins=bundle.year_bins, height=620)

    mapped = figure("year_bin")
    spec = pio.to_json(mapped.figure, validate=False)
    event = box_event(mapped, table)
    selected = answer_selection(bundle, table, mapped, event)
    return Row(
        points=size,
        renderer="aggregated" if mapped.aggregated else "WebGL points",
        table_ms=table_ms,
        figure_ms=median_ms(lambda: figure("year_bin"), repeat),
        figure_continuous_ms=median_ms(lambda: figure("modernity"), repeat),
        to_json_ms=median_ms(lambda: pio.to_json(mapped.figure, validate=False), repeat),
        json_mb=len(spec) / 1e6,
        selected=len(selected),
        selection_ms=median_ms(lambda: answer_selection(bundle, table, mapped, event), repeat),
        csv_ms=median_ms(lambda: selection_csv(table, selected), repeat),
    )


def print_table(rows: Sequence[Row]) -> None:
    header = (
        f"{'points':>9} {'renderer':>12} {'table ms':>9} {'figure ms':>10} {'fig cont ms':>12} {'to_json ms':>11} "
        f"{'JSON MB':>8} {'selected':>9} {'selection ms':>13} {'csv ms':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r.points:>9,} {r.renderer:>12} {r.table_ms:>9.1f} {r.figure_ms:>10.1f} {r.figure_continuous_ms:>12.1f} "
            f"{r.to_json_ms:>11.1f} {r.json_mb:>8.2f} {r.selected:>9,} {r.selection_ms:>13.1f} {r.csv_ms:>8.1f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: $CARMORPH_BUNDLE)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 50_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--point-limit", type=int, default=None, help="default: $CARMORPH_MAP_POINTS or 50,000")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    limit = map_point_limit(args.point_limit)
    print(f"bundle {bundle.name} ({len(bundle.images):,} images, {bundle_dir(args.bundle)}), resampled to each size")
    print(f"point limit {limit:,}; load average {os.getloadavg()[0]:.2f} (1 min) before")
    print_table([measure(bundle, size, args.repeat, limit) for size in args.sizes])
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after")


if __name__ == "__main__":
    main()
