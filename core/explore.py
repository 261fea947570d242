"""Data behind the dashboard's explorer, morph and tour views: pure pandas/numpy, no Streamlit, no Plotly.

Everything works on the bundle's `images` table (docs/CONTRACTS.md) turned into a *map table* by `map_table`:
the same rows in the same order (row i = images row i = embeddings row i), plus display columns. Rows are
always addressed by position, so a selection, a gallery page and a neighbour list all speak the same language.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.config import YearBin
from core.projection import MapPlacer
from core.scoring import Morphs, group_key, group_label, whole_year

UNKNOWN = "unknown"
CSV_COLUMNS = (
    "id",
    "path",
    "make",
    "model",
    "year",
    "body_type",
    "split",
    "modernity",
    "expected_year",
    "pred_year_bin",
    "pred_body_type",
    "group",
    "typicality",
    "typicality_percentile",
    "umap_x",
    "umap_y",
)


@dataclass(frozen=True)
class ColourSpec:
    """One colour-by choice of the map: the map-table column, whether it is categorical, and for continuous
    colours the scale and the colour bar's title (the short `title` also names the choice in the URL)."""

    key: str
    title: str
    column: str
    categorical: bool
    colorscale: str = "Viridis"
    unit: str = ""


COLOUR_OPTIONS: dict[str, ColourSpec] = {
    spec.key: spec
    for spec in (
        ColourSpec("year_bin", "Year bin", "year_bin_label", True),
        ColourSpec("year", "Model year", "year_value", False, "Viridis", "model year"),
        ColourSpec("body_type", "Body type", "body_label", True),
        ColourSpec("typicality", "Typicality", "typicality", False, "Cividis", "cosine to morph"),
        ColourSpec("modernity", "Modernity", "modernity", False, "Plasma", "score 0-4"),
        ColourSpec("split", "Split", "split", True),
        ColourSpec("error", "Prediction error", "error_years", False, "RdBu", "shown − true year"),
    )
}


@dataclass(frozen=True)
class MapFilters:
    """What the explorer shows: None means "no restriction" for each field; `search` matches make/model."""

    body_types: tuple[str, ...] | None = None
    years: tuple[int, int] | None = None
    splits: tuple[str, ...] | None = None
    search: str = ""


@dataclass(frozen=True)
class FilterOptions:
    """What the explorer's filters offer for a table: body types (unknown last), splits, the known year span."""

    body_types: tuple[str, ...]
    splits: tuple[str, ...]
    years: tuple[int, int]


@dataclass(frozen=True)
class MapRegion:
    """A box or lasso drawn on the map: a closed polygon in map coordinates (a box is its four corners)."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    box: bool = False  # an axis-aligned box: tested by its ranges


@dataclass(frozen=True)
class MapSelection:
    """Selection as a query over the map table, not a list of ids: the cars inside the drawn regions among those
    that the filters showed when they were drawn. Evaluated with `region_rows`, in milliseconds at a million rows."""

    regions: tuple[MapRegion, ...]
    filters: MapFilters = MapFilters()


@dataclass(frozen=True)
class SearchIndex:
    """The map table's searchable text, once per distinct text: `codes[row]` indexes `texts` (lower-cased label,
    make and model), so a search scans thousands of distinct names instead of a million rows."""

    codes: np.ndarray
    texts: np.ndarray

    def mask(self, text: str) -> np.ndarray:
        """Rows whose text contains every word of `text` (case-insensitive); none for ''."""
        words = text.lower().split()
        if not words:
            return np.zeros(len(self.codes), dtype=bool)
        hits = np.ones(len(self.texts), dtype=bool)
        for word in words:
            hits &= np.char.find(self.texts, word) >= 0
        return hits[self.codes]


@dataclass(frozen=True)
class SelectionSummary:
    """Counts and means of a set of rows (a map selection)."""

    count: int
    by_body_type: dict[str, int]
    by_year_bin: dict[str, int]
    by_split: dict[str, int]
    mean_modernity: float
    mean_typicality: float
    mean_abs_error_years: float


@dataclass(frozen=True)
class GroupExamples:
    """The most typical, average and least typical members of one group (rows of the map table)."""

    key: str
    title: str
    most: pd.DataFrame
    average: pd.DataFrame
    least: pd.DataFrame


# ---------------------------------------------------------------------------------------------- map table


def car_labels(images: pd.DataFrame) -> pd.Series:
    """A readable name per row: the class name, else make and model, else the id."""
    names = images["class_name"].fillna("").astype(str)
    make_model = (images["make"].fillna("").astype(str) + " " + images["model"].fillna("").astype(str)).str.strip()
    names = names.where(names != "", make_model)
    return names.where(names != "", images["id"].astype(str))


def year_bin_labels(bins: pd.Series, year_bins: Sequence[YearBin]) -> pd.Series:
    """Bin index to its label ('2008-2009'); unknown (-1 or out of range) becomes 'unknown'."""
    labels = {index: year_bin.label for index, year_bin in enumerate(year_bins)}
    return bins.map(labels).fillna(UNKNOWN).astype(str)


CATEGORY_COLUMNS = ("body_label", "year_bin_label", "split")  # the map table's columns kept as pandas categories


def map_table(images: pd.DataFrame, year_bins: Sequence[YearBin]) -> pd.DataFrame:
    """The images table (positional index) plus display columns: label, year_bin_label, pred_year_bin_label,
    body_label, year_value (nan when unknown), error_years (shown minus true year, nan when unknown), hover."""
    table = images.reset_index(drop=True).copy()
    table["label"] = car_labels(table)
    table["year_bin_label"] = year_bin_labels(table["year_bin"], year_bins)
    table["pred_year_bin_label"] = year_bin_labels(table["pred_year_bin"], year_bins)
    table["body_label"] = table["body_type"].fillna("").astype(str).replace("", UNKNOWN)
    year = table["year"].astype(float)
    table["year_value"] = year.where(year > 0)
    table["error_years"] = whole_year(table["expected_year"]) - table["year_value"]
    table["hover"] = hover_texts(table)
    # A few distinct values each: as categories, the filters and a selection's counts take 9 and 26 ms instead of
    # 23 and 118 ms at a million rows.
    return table.astype(dict.fromkeys(CATEGORY_COLUMNS, "category"))


def hover_texts(table: pd.DataFrame) -> pd.Series:
    """'<label> (<year>, <body type>)<br><id>' per row: the map's hover text (ASCII separators keep the JSON
    sent to the browser small: Plotly escapes '·' and '<', '>')."""
    year = table["year_value"].map(lambda y: "year ?" if math.isnan(y) else str(int(y)))
    return table["label"] + " (" + year + ", " + table["body_label"] + ")<br>" + table["id"].astype(str)


def category_order(values: pd.Series, spec: ColourSpec, year_bins: Sequence[YearBin] = ()) -> list[str]:
    """Legend order for a categorical colour: year bins chronologically, others alphabetically; unknown last."""
    present = {str(value) for value in pd.unique(values)}
    if spec.key == "year_bin":
        ordered = [b.label for b in year_bins if b.label in present]
    elif spec.key == "split":
        ordered = [s for s in ("train", "val", "test") if s in present]
    else:
        ordered = []
    rest = sorted(present - set(ordered) - {UNKNOWN})
    return ordered + rest + ([UNKNOWN] if UNKNOWN in present else [])


# ------------------------------------------------------------------------------------------------ filters


def year_span(table: pd.DataFrame) -> tuple[int, int]:
    """The smallest and largest known model year (a single year twice; (0, 0) when none is known)."""
    years = table["year_value"].dropna()
    return (int(years.min()), int(years.max())) if len(years) else (0, 0)


def search_index(table: pd.DataFrame) -> SearchIndex:
    """The table's label, make and model, lower-cased and factorised (build once per table)."""
    haystack = (table["label"] + " " + table["make"].fillna("") + " " + table["model"].fillna("")).str.lower()
    codes, texts = pd.factorize(haystack)
    return SearchIndex(codes=codes, texts=np.asarray(texts, dtype=str))


def search_mask(table: pd.DataFrame, text: str) -> np.ndarray:
    """Rows whose make, model or class name contains every word of `text` (case-insensitive); none for ''."""
    return search_index(table).mask(text)


def filter_options(table: pd.DataFrame) -> FilterOptions:
    """The body types (alphabetically, unknown last), splits (train, val, test) and year span present."""
    bodies = pd.unique(table["body_label"])
    known = sorted(set(bodies) - {UNKNOWN})
    splits = set(pd.unique(table["split"]))
    return FilterOptions(
        body_types=(*known, *([UNKNOWN] if UNKNOWN in set(bodies) else [])),
        splits=tuple(s for s in ("train", "val", "test") if s in splits),
        years=year_span(table),
    )


def filter_rows(table: pd.DataFrame, filters: MapFilters) -> np.ndarray:
    """Positions of the rows that pass the body-type, year-range and split filters (search only highlights).

    A year range narrower than the table's span drops cars of unknown year; the full span keeps them.
    """
    mask = np.ones(len(table), dtype=bool)
    if filters.body_types is not None:
        mask &= table["body_label"].isin(filters.body_types).to_numpy()
    if filters.splits is not None:
        mask &= table["split"].isin(filters.splits).to_numpy()
    if filters.years is not None and filters.years != year_span(table):
        low, high = filters.years
        year = table["year_value"].to_numpy()
        mask &= (year >= low) & (year <= high)
    return np.flatnonzero(mask)


# ---------------------------------------------------------------------------------------------- selection


def selection_rows(points: Sequence[Mapping[str, object]], trace_rows: Sequence[np.ndarray]) -> np.ndarray:
    """Map-table rows of the points of a Plotly selection event, in selection order without duplicates.

    Each point names its trace (`curve_number`) and its position in that trace (`point_index`); `trace_rows[c]`
    holds the rows that trace c was drawn from. Points of traces without rows (the upload's star) are ignored.
    """
    rows: list[int] = []
    for point in points:
        curve, index = point.get("curve_number"), point.get("point_index", point.get("point_number"))
        if not isinstance(curve, int) or not isinstance(index, int) or not 0 <= curve < len(trace_rows):
            continue
        if 0 <= index < len(trace_rows[curve]):
            rows.append(int(trace_rows[curve][index]))
    return pd.unique(np.asarray(rows, dtype=np.int64))


def regions_from_event(
    boxes: Sequence[Mapping[str, object]], lassos: Sequence[Mapping[str, object]]
) -> tuple[MapRegion, ...]:
    """The regions of a Plotly selection event: each box ({"x": [x0, x1], "y": [y0, y1]}) and lasso ({"x": [...],
    "y": [...]}) as a polygon; malformed entries are skipped."""
    regions = []
    for box in boxes:
        x, y = box.get("x"), box.get("y")
        if isinstance(x, Sequence) and isinstance(y, Sequence) and len(x) == 2 and len(y) == 2:
            (x0, x1), (y0, y1) = (float(v) for v in x), (float(v) for v in y)
            regions.append(MapRegion(x=(x0, x1, x1, x0), y=(y0, y0, y1, y1), box=True))
    for lasso in lassos:
        x, y = lasso.get("x"), lasso.get("y")
        if isinstance(x, Sequence) and isinstance(y, Sequence) and len(x) == len(y) >= 3:
            regions.append(MapRegion(x=tuple(float(v) for v in x), y=tuple(float(v) for v in y)))
    return tuple(regions)


def inside_polygon(x: np.ndarray, y: np.ndarray, region: MapRegion) -> np.ndarray:
    """Which points lie inside the polygon (even-odd rule). Points are sorted by y once, so each edge only tests the
    points within its own y-band: fast for lassos of hundreds of vertices over millions of points."""
    if region.box:
        return (x >= min(region.x)) & (x <= max(region.x)) & (y >= min(region.y)) & (y <= max(region.y))
    order = np.argsort(y, kind="stable")
    ys, xs = y[order], x[order]
    inside = np.zeros(len(x), dtype=bool)
    corners = list(zip(region.x, region.y, strict=True))
    for (xa, ya), (xb, yb) in zip(corners, corners[1:] + corners[:1], strict=True):
        start, stop = np.searchsorted(ys, [min(ya, yb), max(ya, yb)])
        if start == stop:
            continue
        band = slice(start, stop)
        crossing = xa + (ys[band] - ya) * (xb - xa) / (yb - ya)
        inside[band] ^= xs[band] < crossing
    result = np.empty_like(inside)
    result[order] = inside
    return result


def region_rows(table: pd.DataFrame, selection: MapSelection) -> np.ndarray:
    """Rows (in table order) that pass the selection's filters and lie inside any of its regions."""
    rows = filter_rows(table, selection.filters)
    x = table["umap_x"].to_numpy(dtype=np.float64)[rows]
    y = table["umap_y"].to_numpy(dtype=np.float64)[rows]
    hit = np.zeros(len(rows), dtype=bool)
    for region in selection.regions:
        hit |= inside_polygon(x, y, region)
    return rows[hit]


def selected_rows(table: pd.DataFrame, selection: MapSelection | Sequence[str]) -> np.ndarray:
    """Rows (in table order) of a selection: a query (MapSelection) or the ids of the cars picked."""
    if isinstance(selection, MapSelection):
        return region_rows(table, selection)
    if not len(selection):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(table["id"].isin(selection).to_numpy())


def _counts(values: pd.Series, order: Sequence[str] = ()) -> dict[str, int]:
    counts = values.value_counts()
    counts = counts[counts > 0]  # a category column counts its absent categories too
    counts.index = counts.index.astype(str)
    ordered = [key for key in order if key in counts.index] + sorted(set(counts.index) - set(order))
    return {key: int(counts[key]) for key in ordered}


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else math.nan


def summarise_selection(table: pd.DataFrame, rows: np.ndarray, year_bins: Sequence[YearBin] = ()) -> SelectionSummary:
    """Counts per body type, year bin and split, and the mean scores of the selected rows."""
    columns = ["body_label", "year_bin_label", "split", "modernity", "typicality", "error_years"]
    selected = table.iloc[rows, [table.columns.get_loc(c) for c in columns]]  # not all columns: fast at 1M rows
    return SelectionSummary(
        count=len(selected),
        by_body_type=_counts(selected["body_label"]),
        by_year_bin=_counts(selected["year_bin_label"], [b.label for b in year_bins]),
        by_split=_counts(selected["split"], ("train", "val", "test")),
        mean_modernity=_mean(selected["modernity"]),
        mean_typicality=_mean(selected["typicality"]),
        mean_abs_error_years=_mean(selected["error_years"].abs()),
    )


def page_count(total: int, page_size: int) -> int:
    """Number of gallery pages (at least 1, so an empty gallery still has a page)."""
    return max(1, math.ceil(total / page_size))


def page_rows(rows: np.ndarray, page: int, page_size: int) -> np.ndarray:
    """Rows of 1-based gallery page `page` (clamped to the valid pages)."""
    page = min(max(1, page), page_count(len(rows), page_size))
    return rows[(page - 1) * page_size : page * page_size]


def selection_csv(table: pd.DataFrame, rows: np.ndarray) -> bytes:
    """The selected rows' labels, scores and map position as UTF-8 CSV."""
    columns = [c for c in CSV_COLUMNS if c in table.columns]
    return table.iloc[rows][columns].to_csv(index=False).encode("utf-8")


def neighbour_table(
    table: pd.DataFrame, placer: MapPlacer, embedding: np.ndarray, k: int, exclude: int | None = None
) -> pd.DataFrame:
    """The k nearest collection cars of `embedding` (cosine on the bundle embeddings) with their labels.

    `exclude` drops one row (the car itself when it is from the collection). Columns: rank, row, id, label,
    year, body_label, modernity, cosine_distance.
    """
    extra = 1 if exclude is not None else 0
    found = placer.neighbours(np.asarray(embedding, dtype=np.float32), k=k + extra)
    keep = found.indices != exclude if exclude is not None else np.ones(len(found.indices), dtype=bool)
    rows, distances = found.indices[keep][:k], found.cosine_distances[keep][:k]
    neighbours = table.iloc[rows][["id", "label", "year", "body_label", "modernity"]].copy()
    neighbours.insert(0, "row", rows)
    neighbours.insert(0, "rank", np.arange(1, len(rows) + 1))
    neighbours["cosine_distance"] = distances.astype(float)
    return neighbours.reset_index(drop=True)


def example_rows(table: pd.DataFrame, limit: int = 200, year_bins: Sequence[YearBin] = ()) -> np.ndarray:
    """Cars to offer for "try a car": every row of a small collection; otherwise the most typical car of every
    group followed by cars spread over each year bin's modernity range, ordered by label."""
    if len(table) <= limit:
        rows = np.arange(len(table))
    else:
        picks = [most_typical_per_group(table).index.to_numpy()]
        picks += [frame.index.to_numpy() for frame in cars_per_year_bin(table, year_bins, n=8).values()]
        rows = pd.unique(np.concatenate(picks))[:limit]
    return rows[np.argsort(table["label"].to_numpy()[rows], kind="stable")]


def find_row(table: pd.DataFrame, image_id: str | None) -> int | None:
    """Position of the row with this id, or None (also for None or an unknown id)."""
    if not image_id:
        return None
    hits = np.flatnonzero(table["id"].to_numpy() == image_id)
    return int(hits[0]) if len(hits) else None


# -------------------------------------------------------------------------------------------------- morphs


def morph_frame(morphs: Morphs) -> pd.DataFrame:
    """One row per morph: morph (row in morphs), body_type, year_bin (index), year_bin_label, key, title, count,
    and the median training typicality."""
    records = []
    for row in range(len(morphs)):
        body, year_bin = morphs.body_types[morphs.body_type[row]], int(morphs.year_bin[row])
        values = morphs.typicality_values(row)
        records.append(
            {
                "morph": row,
                "body_type": body,
                "year_bin": year_bin,
                "year_bin_label": morphs.year_bins[year_bin].label,
                "key": group_key(body, year_bin),
                "title": morphs.group_label(int(morphs.body_type[row]), year_bin),
                "count": int(morphs.count[row]),
                "median_typicality": float(np.median(values)) if len(values) else math.nan,
            }
        )
    columns = ["morph", "body_type", "year_bin", "year_bin_label", "key", "title", "count", "median_typicality"]
    return pd.DataFrame.from_records(records, columns=columns)


def morph_similarity(morphs: Morphs) -> np.ndarray:
    """G x G cosine similarity between the morphs' mean features."""
    features = morphs.features.astype(np.float64)
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def group_title(key: str, year_bins: Sequence[YearBin]) -> str:
    """A group key of the images table as its label: 'Saloon|4' -> 'Saloon · 2012'; '' (no group) stays ''."""
    if not key:
        return ""
    body, _, index = key.rpartition("|")
    return group_label(body, year_bins[int(index)])


def group_members(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """Rows assigned to the group `key` ('Body|bin', predicted body type and year bin), most typical first."""
    members = table[(table["group"] == key) & table["typicality"].notna()]
    return members.sort_values("typicality", ascending=False, kind="stable")


def group_examples(table: pd.DataFrame, key: str, title: str, n: int = 4) -> GroupExamples:
    """The n most typical, the n closest to the median typicality, and the n least typical members of a group."""
    members = group_members(table, key)
    median = members["typicality"].median()
    closest = (members["typicality"] - median).abs().sort_values(kind="stable").index[:n]
    return GroupExamples(
        key=key,
        title=title,
        most=members.head(n),
        average=members.loc[closest].sort_values("typicality", ascending=False, kind="stable"),
        least=members.tail(n).iloc[::-1],
    )


def most_typical_per_group(table: pd.DataFrame) -> pd.DataFrame:
    """For every group in the table, its most typical member (one row per group, ordered by group key)."""
    grouped = table[(table["group"] != "") & table["typicality"].notna()]
    rows = grouped.groupby("group", sort=True)["typicality"].idxmax()
    return table.loc[rows.to_numpy()]


def largest_groups(morphs_frame: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """Up to n groups for side-by-side rows: the largest group of each body type first, then the next largest."""
    ranked = morphs_frame.sort_values("count", ascending=False, kind="stable")
    first = ranked.drop_duplicates("body_type")
    rest = ranked.drop(first.index)
    return pd.concat([first, rest]).head(n)


def cars_per_year_bin(table: pd.DataFrame, year_bins: Sequence[YearBin], n: int = 4) -> dict[str, pd.DataFrame]:
    """Per true year bin, n cars spread over that bin's modernity range (evenly spaced quantiles), oldest bin first;
    held-out (test, then val) cars are preferred so the scores shown were not fitted."""
    split_rank = table["split"].map({"test": 0, "val": 1}).fillna(2)
    chosen: dict[str, pd.DataFrame] = {}
    for index, year_bin in enumerate(year_bins):
        in_bin = table["year_bin"] == index
        if not in_bin.any():  # a bin the collection has no car of (checked first: assign on an empty frame adds rows)
            continue
        members = table[in_bin].assign(_rank=split_rank[in_bin])
        pool = members[members["_rank"] == members["_rank"].min()].sort_values("modernity", kind="stable")
        picks = np.unique(np.round(np.linspace(0, len(pool) - 1, min(n, len(pool)))).astype(int))
        chosen[year_bin.label] = pool.iloc[picks].drop(columns="_rank")
    return chosen
