"""Explore-page benchmark: build and serialise the map figure, and answer a selection, at 5k and 50k points.

  python -m bench.explorer [--bundle DIR] [--sizes 5000 50000] [--repeat 5]

The bundle's images table is resampled with replacement to each size (seeded) and its map coordinates,
modernity and typicality jittered, so the synthetic collection keeps the real one's labels, groups and shape;
thumbnails come from the bundle's atlas. Timed, as the page does it (median of --repeat runs, this machine):

- table:     core.explore.map_table (once per bundle in the app, cached on the bundle);
- figure:    filter + core.figures.map_figure (Scattergl traces), for a categorical and a continuous colour;
- to_json:   plotly.io.to_json(figure, validate=False), what st.plotly_chart sends to the browser;
- selection: a box selection of ~20 % of the points, from the event's JSON to the ids (core.explore.selection_rows),
             the summary counts and means, and the first gallery page's thumbnails: what a selection costs
             before the page is redrawn;
- csv:       the selection as CSV (built only when the download button is clicked).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio

from core.artifacts import Bundle, load_bundle
from core.config import bundle_dir
from core.explore import (
    COLOUR_OPTIONS,
    MapFilters,
    filter_rows,
    map_table,
    page_rows,
    selection_csv,
    selection_rows,
    summarise_selection,
)
from core.figures import MapFigure, map_figure

PAGE_SIZE = 24
SELECTED_SHARE = 0.2
JITTER = 0.02  # of the map's spread


@dataclass(frozen=True)
class Row:
    points: int
    table_ms: float
    figure_ms: float
    figure_continuous_ms: float
    to_json_ms: float
    json_mb: float
    selected: int
    selection_ms: float
    csv_ms: float


def synthesise(images: pd.DataFrame, size: int, seed: int = 0) -> pd.DataFrame:
    """`size` rows resampled from `images` with jittered map position and scores (ids made unique)."""
    rng = np.random.default_rng(seed)
    picked = images.iloc[rng.integers(0, len(images), size)].reset_index(drop=True)
    spread = picked[["umap_x", "umap_y"]].std().fillna(1.0).to_numpy() + 1e-6
    picked[["umap_x", "umap_y"]] += rng.normal(0.0, JITTER, (size, 2)) * spread
    picked["modernity"] = np.clip(picked["modernity"] + rng.normal(0.0, 0.05, size), 0.0, 4.0)
    picked["typicality"] = picked["typicality"] + rng.normal(0.0, 0.005, size)
    picked["id"] = picked["id"] + "#" + pd.Series(np.arange(size)).astype(str)
    return picked


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


def answer_selection(bundle: Bundle, table: pd.DataFrame, mapped: MapFigure, event: str) -> list[str]:
    """What the page does for a selection: ids from the event, summary, and the first gallery page's pictures."""
    selection = json.loads(event)["selection"]
    rows = selection_rows(selection["points"], mapped.trace_rows)
    ids = table["id"].iloc[rows].tolist()
    chosen = table.index.to_numpy()[table["id"].isin(ids).to_numpy()]
    summarise_selection(table, chosen, bundle.year_bins)
    for row in page_rows(chosen, 1, PAGE_SIZE):
        bundle.thumbnail(int(table["atlas_index"].iat[row]))
    return ids


def measure(bundle: Bundle, size: int, repeat: int) -> Row:
    images = synthesise(bundle.images, size)
    table_ms = median_ms(lambda: map_table(images, bundle.year_bins), repeat)
    table = map_table(images, bundle.year_bins)

    def figure(colour: str) -> MapFigure:
        rows = filter_rows(table, MapFilters())
        return map_figure(table, rows, COLOUR_OPTIONS[colour], year_bins=bundle.year_bins, height=620)

    mapped = figure("year_bin")
    spec = pio.to_json(mapped.figure, validate=False)
    event = box_event(mapped, table)
    ids = answer_selection(bundle, table, mapped, event)
    selected = table.index.to_numpy()[table["id"].isin(ids).to_numpy()]
    return Row(
        points=size,
        table_ms=table_ms,
        figure_ms=median_ms(lambda: figure("year_bin"), repeat),
        figure_continuous_ms=median_ms(lambda: figure("modernity"), repeat),
        to_json_ms=median_ms(lambda: pio.to_json(mapped.figure, validate=False), repeat),
        json_mb=len(spec) / 1e6,
        selected=len(ids),
        selection_ms=median_ms(lambda: answer_selection(bundle, table, mapped, event), repeat),
        csv_ms=median_ms(lambda: selection_csv(table, selected), repeat),
    )


def print_table(rows: Sequence[Row]) -> None:
    header = (
        f"{'points':>8} {'table ms':>9} {'figure ms':>10} {'fig cont ms':>12} {'to_json ms':>11} {'JSON MB':>8} "
        f"{'selected':>9} {'selection ms':>13} {'csv ms':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r.points:>8,} {r.table_ms:>9.1f} {r.figure_ms:>10.1f} {r.figure_continuous_ms:>12.1f} "
            f"{r.to_json_ms:>11.1f} {r.json_mb:>8.2f} {r.selected:>9,} {r.selection_ms:>13.1f} {r.csv_ms:>8.1f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: $CARMORPH_BUNDLE)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 50_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    print(f"bundle {bundle.name} ({len(bundle.images):,} images, {bundle_dir(args.bundle)}), resampled to each size")
    print_table([measure(bundle, size, args.repeat) for size in args.sizes])


if __name__ == "__main__":
    main()
