"""The Explore page at any collection size: server-side aggregation (core.density), the aggregated map
(core.figures.density_map_figure), selection as a region query and the cached search (core.explore), and the
synthetic bundles the benchmarks and browser tests explore (bench.synthetic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.synthetic import write_synthetic_bundle
from core import density
from core.artifacts import Bundle, load_bundle
from core.atlas import AtlasSpec
from core.explore import (
    COLOUR_OPTIONS,
    MapFilters,
    MapRegion,
    MapSelection,
    filter_options,
    filter_rows,
    inside_polygon,
    map_table,
    region_rows,
    regions_from_event,
    search_index,
    selected_rows,
)
from core.figures import MapOverlay, density_map_figure, explorer_map, sampled_highlight

SIZE = 3_000


@pytest.fixture(scope="module")
def big_bundle(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The tiny bundle's 23 cars resampled to 3,000 rows (a small stand-in for a million)."""
    return load_bundle(write_synthetic_bundle(tiny_bundle.path, tmp_path_factory.mktemp("big") / "bundle", SIZE))


@pytest.fixture(scope="module")
def big_table(big_bundle: Bundle) -> pd.DataFrame:
    return map_table(big_bundle.images, big_bundle.year_bins)


def brute_force_inside(x: np.ndarray, y: np.ndarray, xs: list[float], ys: list[float]) -> np.ndarray:
    """Even-odd rule, one point at a time."""
    inside = np.zeros(len(x), dtype=bool)
    for i, (px, py) in enumerate(zip(x, y, strict=True)):
        for j in range(len(xs)):
            xa, ya, xb, yb = xs[j], ys[j], xs[j - 1], ys[j - 1]
            if (ya > py) != (yb > py) and px < xa + (py - ya) * (xb - xa) / (yb - ya):
                inside[i] = not inside[i]
    return inside


def test_synthetic_bundle_resamples_the_collection(tiny_bundle: Bundle, big_bundle: Bundle) -> None:
    images = big_bundle.images
    assert len(images) == SIZE and big_bundle.embeddings.shape == (SIZE, tiny_bundle.embeddings.shape[1])
    assert images["id"].is_unique
    assert set(images["class_name"]) <= set(tiny_bundle.images["class_name"])
    assert images["atlas_index"].max() < len(tiny_bundle.images), "rows share the source's atlas tiles"
    assert big_bundle.manifest.atlas == AtlasSpec(tile=32, shards=1), "written again in the shards a build writes"
    for row in (0, 22):
        difference = np.abs(np.asarray(big_bundle.thumbnail(row), int) - np.asarray(tiny_bundle.thumbnail(row), int))
        assert difference.mean() < 2, "the source's tile, encoded again"
    source = images["id"].str.split("#").str[0]
    original = tiny_bundle.images.set_index("id")
    assert (images["body_type"].to_numpy() == original.loc[source, "body_type"].to_numpy()).all()


def test_a_lasso_selects_what_the_even_odd_rule_says() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, 2_000), rng.uniform(-1, 1, 2_000)
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    radius = 0.3 + 0.5 * (np.arange(40) % 2)  # a star: concave, many vertices
    xs, ys = list(radius * np.cos(angles)), list(radius * np.sin(angles))
    inside = inside_polygon(x, y, MapRegion(x=tuple(xs), y=tuple(ys)))
    assert inside.tolist() == brute_force_inside(x, y, xs, ys).tolist()
    assert 0 < inside.sum() < len(x)


def test_regions_from_a_plotly_event() -> None:
    boxes = [{"xref": "x", "yref": "y", "x": [2.0, -1.0], "y": [0.0, 1.0]}, {"x": [1.0]}]
    lassos = [{"x": [0, 1, 1], "y": [0, 0, 1]}, {"x": [0, 1], "y": [0, 1]}]
    box, lasso = regions_from_event(boxes, lassos)
    assert box.box and (min(box.x), max(box.x), min(box.y), max(box.y)) == (-1.0, 2.0, 0.0, 1.0)
    assert lasso == MapRegion(x=(0.0, 1.0, 1.0), y=(0.0, 0.0, 1.0))
    x, y = np.array([0.5, 3.0, -0.5]), np.array([0.5, 0.5, 1.5])
    assert inside_polygon(x, y, box).tolist() == [True, False, False]


def test_a_region_query_keeps_the_filters_it_was_drawn_with(big_table: pd.DataFrame) -> None:
    x, y = big_table["umap_x"], big_table["umap_y"]
    cut = float(x.median())
    box = regions_from_event([{"x": [float(x.min()) - 1, cut], "y": [float(y.min()) - 1, float(y.max()) + 1]}], [])
    everything = region_rows(big_table, MapSelection(regions=box))
    assert everything.tolist() == np.flatnonzero(x.to_numpy() <= cut).tolist()
    filters = MapFilters(splits=("train",))
    trained = region_rows(big_table, MapSelection(regions=box, filters=filters))
    assert trained.tolist() == np.intersect1d(everything, filter_rows(big_table, filters)).tolist()
    assert selected_rows(big_table, MapSelection(regions=box)).tolist() == everything.tolist()
    ids = big_table["id"].iloc[[5, 2]].tolist()
    assert selected_rows(big_table, ids).tolist() == [2, 5] and selected_rows(big_table, []).size == 0


def test_the_search_index_finds_every_word(big_table: pd.DataFrame) -> None:
    index = search_index(big_table)
    assert len(index.texts) < len(big_table), "distinct texts are searched, not rows"
    found = index.mask("  AUDI tt ")
    expected = big_table["label"].str.lower().str.contains("audi") & big_table["label"].str.lower().str.contains("tt")
    assert found.tolist() == expected.tolist() and found.any()
    assert not index.mask("").any()


def test_filter_options(big_table: pd.DataFrame) -> None:
    options = filter_options(big_table)
    assert set(options.body_types) == set(big_table["body_label"])
    assert options.splits == tuple(s for s in ("train", "val", "test") if (big_table["split"] == s).any())
    assert options.years == (int(big_table["year_value"].min()), int(big_table["year_value"].max()))


def test_aggregation_counts_every_point_once() -> None:
    x, y = np.array([0.0, 0.0, 1.0, 0.5]), np.array([0.0, 0.0, 1.0, 0.5])
    grid = density.Grid(0.0, 1.0, 0.0, 1.0, width=10, height=10)
    cells = grid.cells(x, y)
    assert cells.tolist() == [90, 90, 9, 55], "row 0 is the top; the far edge is clamped inside"
    counts = density.category_counts(grid, x, y, np.array([0, 1, 1, 0]), 2)
    assert counts.shape == (10, 10, 2)
    assert counts[9, 0].tolist() == [1, 1] and counts[8, 1].tolist() == [1, 1], "spread to the neighbours"
    picture = density.shade_categories(counts, np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    assert picture[9, 0].tolist()[:3] == [128, 0, 128] and picture[9, 0, 3] == 255, "mixed colour, densest opaque"
    assert picture[0, 5, 3] == 0, "an empty pixel is transparent"
    assert 0 < picture[5, 5, 3] < 255
    sums, totals = density.value_sums(grid, x, y, np.array([1.0, 3.0, 5.0, 7.0]))
    assert sums[9, 0] == 4.0 and totals[9, 0] == 2


def test_the_aggregated_map_draws_a_picture_and_a_sample(big_bundle: Bundle, big_table: pd.DataFrame) -> None:
    rows = filter_rows(big_table, MapFilters())
    spec = COLOUR_OPTIONS["body_type"]
    mapped = density_map_figure(big_table, rows, spec, year_bins=big_bundle.year_bins, sample_points=500)
    assert mapped.aggregated
    (image,) = mapped.figure.layout.images
    assert image.source.startswith("data:image/png;base64,")
    assert sum(len(r) for r in mapped.trace_rows) == 500, "only the sample becomes points"
    totals = {
        t.name.rsplit(" (", 1)[0]: int(t.name.rsplit("(", 1)[1].rstrip(")").replace(",", ""))
        for t in mapped.figure.data
    }
    assert totals == big_table["body_label"].value_counts().to_dict(), "the legend counts every car"
    for trace, members in zip(mapped.figure.data, mapped.trace_rows, strict=True):
        assert len(trace.x) == len(members)
        assert list(trace.hovertext) == big_table["hover"].iloc[members].tolist(), "hover names each sampled car"
    continuous = density_map_figure(big_table, rows, COLOUR_OPTIONS["error"], sample_points=500)
    marker = continuous.figure.data[-1].marker
    assert marker.cmin == -marker.cmax, "prediction error is centred on 0, like the picture"


def test_the_renderer_switches_at_the_point_limit(big_bundle: Bundle, big_table: pd.DataFrame) -> None:
    rows = filter_rows(big_table, MapFilters())
    spec = COLOUR_OPTIONS["year_bin"]
    assert not explorer_map(big_table, rows, spec, point_limit=SIZE).aggregated
    assert not explorer_map(big_table, rows, spec, point_limit=SIZE).figure.layout.images
    assert explorer_map(big_table, rows, spec, point_limit=SIZE - 1).aggregated


def test_many_search_matches_are_ringed_as_a_sample() -> None:
    overlay = MapOverlay(highlight=np.arange(10_000), highlight_name="“audi”")
    sampled = sampled_highlight(overlay, limit=100)
    assert len(sampled.highlight) == 100 and np.all(np.diff(sampled.highlight) > 0)
    assert sampled.highlight_name == "“audi”, a sample of 10,000"
    assert sampled_highlight(MapOverlay(highlight=np.arange(5)), limit=100).highlight.tolist() == list(range(5))


def test_a_written_synthetic_bundle_is_a_valid_bundle(big_bundle: Bundle) -> None:
    assert Path(big_bundle.path, "manifest.json").is_file()
    assert big_bundle.name.endswith("resampled to 3,000 rows")
