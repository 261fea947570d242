"""Streamlit AppTests of every page on the tiny test bundle (tests/conftest.py) and the fixture photos.

The app reads its bundle from $CARMORPH_BUNDLE and its image root from $CARMORPH_IMAGE_ROOT; variants of the
tiny bundle (thresholds forced to accept or to reject, metrics and training curves recorded) are copies with
an edited manifest.json, which is not itself hashed. Uploads go through AppTest's file_uploader support.
"""

from __future__ import annotations

import gc
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from PIL import Image, ImageFilter
from streamlit.testing.v1 import AppTest

from bench.synthetic import write_synthetic_bundle
from core.artifacts import Bundle, load_bundle, sha256_file
from core.config import year_to_bin
from core.explore import (
    COLOUR_OPTIONS,
    MapFilters,
    MapSelection,
    map_table,
    morph_frame,
    region_rows,
    regions_from_event,
)
from core.report import collect_curves, collect_tasks, measure_name
from training.metrics import classification_metrics

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
TIMEOUT = 120
LARGE_ROWS = 3_000  # the "large" bundle: the tiny bundle resampled, explored above a point limit of LARGE_LIMIT
LARGE_LIMIT = 1_000
SMALL_CAR = "The car is small in this photo"[:27]  # the untrained tiny gate's box is a few pixels across
PAGES = (
    "app_pages/score.py",
    "app_pages/explore.py",
    "app_pages/morphs.py",
    "app_pages/report.py",
    "app_pages/tour.py",
)


def bundle_variant(source: Path, target: Path, **changes: Any) -> Path:
    """A copy of a bundle with manifest fields replaced."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.update(changes)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def task_report(true: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Metrics shaped like training.evaluate's output, computed from the bundle's own predictions."""
    metrics = classification_metrics(true, pred, len(labels))
    known = true[true >= 0]
    majority = np.bincount(known, minlength=len(labels)).argmax()
    return {
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "per_class_f1": metrics.per_class_f1,
        "confusion": metrics.confusion,
        "labels": labels,
        "n": len(known),
        "baselines": {"chance_accuracy": 1 / len(labels), "majority_accuracy": float((known == majority).mean())},
    }


def recorded_metrics(bundle: Bundle) -> dict[str, Any]:
    images = bundle.images
    body_names = list(bundle.body_types)
    body_true = np.array([body_names.index(b) if b in body_names else -1 for b in images["body_type"]])
    body_pred = np.array([body_names.index(b) for b in images["pred_body_type"]])
    bins = [b.label for b in bundle.year_bins]
    year_true = np.array([-1 if (b := year_to_bin(int(y), bundle.year_bins)) is None else b for y in images["year"]])
    return {
        "stanford_cars": {
            "split": "all",
            "modernity": task_report(year_true, images["pred_year_bin"].to_numpy(), bins)
            | {
                "mae_years": 2.5,
                "baselines": {"constant_year": 2012, "constant_mae_years": 2.9},
                "car_models": 3,
                "interval_90": {"mae_years": [1.75, 3.25]},
            },
            "body_type": task_report(body_true, body_pred, body_names),
        },
        "dvm_porsche": {"body_type": task_report(body_true, body_pred[::-1].copy(), body_names)},
        "epfl_multiview": {"frontal": {"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "threshold": 0.5}},
    }


def newest_cars_of_one_make(bundle_dir: Path) -> Path:
    """The bundle with its two first training cars made Porsches of 2016: after 2012 every training car is one."""
    images = pd.read_parquet(bundle_dir / "images.parquet")
    rows = images.index[images["split"] == "train"][:2]
    images.loc[rows, ["make", "year"]] = ["Porsche", 2016]
    images.to_parquet(bundle_dir / "images.parquet")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"]["images.parquet"] = sha256_file(bundle_dir / "images.parquet")
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    return bundle_dir


def recorded_training() -> dict[str, Any]:
    history = [
        {"epoch": e, "loss": 1.0 / (e + 1), "year_bin_macro_f1": 0.2 + 0.1 * e, "seconds": 3.0} for e in range(3)
    ]
    refit = {"fit_splits": ["train", "val"]}  # a release refit: its validation curve is not held out
    return {"modernity": {"epoch": 2, "history": history}, "bodytype": {"epoch": 1, "history": history[:2],
            "args": refit}, "frontal_threshold": {"threshold": 0.5}}  # fmt: skip


@pytest.fixture(scope="module")
def bundles(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny bundle and its variants: accept (every image passes the gate), reject (no image does), report."""
    root = tmp_path_factory.mktemp("app_bundles")
    source = tiny_bundle.path
    return {
        "tiny": source,
        "accept": bundle_variant(source, root / "accept", thresholds={"car": 0.0, "frontal": 0.0}),
        "accept_measured": bundle_variant(
            source,
            root / "accept_measured",
            thresholds={"car": 0.0, "frontal": 0.0},
            metrics=recorded_metrics(tiny_bundle),
        ),
        "reject": bundle_variant(source, root / "reject", thresholds={"car": 1.0, "frontal": 1.0}),
        "front_only": bundle_variant(
            source, root / "front_only", thresholds={"car": 0.0, "frontal": 1.0}, valid_views="frontal"
        ),
        "report": bundle_variant(
            source,
            root / "report",
            metrics=recorded_metrics(tiny_bundle),
            training=recorded_training(),
            flip_average=True,
        ),
        "large": write_synthetic_bundle(source, root / "large", LARGE_ROWS),
        "horizon": newest_cars_of_one_make(
            bundle_variant(source, root / "horizon", metrics=recorded_metrics(tiny_bundle))
        ),
    }


@pytest.fixture
def app(bundles: dict[str, Path], fixture_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., AppTest]:
    """app(bundle="tiny", page=None, params=None, image_root=fixture data): a run AppTest on that page."""

    def start(bundle: str = "tiny", page: str | None = None, params: dict | None = None, image_root=None) -> AppTest:
        monkeypatch.setenv("CARMORPH_BUNDLE", str(bundles.get(bundle, bundle)))
        monkeypatch.setenv("CARMORPH_IMAGE_ROOT", str(image_root or fixture_data_dir))
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        at.query_params.update(params or {})
        at.run()
        if page:
            at.switch_page(page).run()
        return at

    return start


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at: AppTest) -> str:
    """All visible text of a run, for "is this shown" checks."""
    parts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption") for e in getattr(at, kind)]
    parts += [e.value for kind in ("error", "warning", "info") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def captions(at: AppTest) -> list[str]:
    """Captions of every picture shown (a gallery is one st.image call with many pictures)."""
    return [caption for image in at.image for caption in image.captions]


def click(at: AppTest, label: str) -> AppTest:
    return next(button for button in at.button if button.label == label).click().run()


# --------------------------------------------------------------------------------------------------- frame


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app: Callable[..., AppTest], page: str) -> None:
    at = app(page=page)
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert at.title, "every page has a title"
    assert "tiny-test-bundle" in at.sidebar.markdown[0].value, "the shared sidebar names the bundle"


def test_about_explains_the_three_scores(app: Callable[..., AppTest]) -> None:
    about = app().sidebar.expander[0].markdown[0].value
    for term in ("Modernity", "Morph", "Typicality"):
        assert f"**{term}.**" in about


@pytest.mark.parametrize("page", PAGES)
def test_without_a_bundle_pages_say_how_to_make_one(app: Callable[..., AppTest], tmp_path: Path, page: str) -> None:
    at = app(bundle=str(tmp_path / "nothing-here"), page=page)
    assert_clean(at)
    assert "No model bundle" in at.error[0].value
    assert any("training.build" in code.value for code in at.code)


def test_score_page_explains_itself_without_a_bundle(app: Callable[..., AppTest], tmp_path: Path) -> None:
    at = app(bundle=str(tmp_path / "nothing-here"))
    assert "how modern" in at.markdown[0].value


def test_presentation_mode_from_the_url(app: Callable[..., AppTest]) -> None:
    at = app(params={"present": "true"})
    assert_clean(at)
    assert at.toggle(key="present").value is True
    at.button(key="exit_presentation").click().run()
    assert at.toggle(key="present").value is False
    assert "exit_presentation" not in [button.key for button in at.button]


def test_page_parameter_opens_that_page_with_its_view(app: Callable[..., AppTest]) -> None:
    at = app(params={"page": "explore", "colour": "Split", "body": "SUV"})
    assert_clean(at)
    assert at.title[0].value == "Explore the embedding map"
    assert at.selectbox(key="colour").value == "split"
    assert at.button_group(key="body").value == ["SUV"]


# --------------------------------------------------------------------------------------------------- score


def upload(at: AppTest, name: str, data: bytes, mime: str) -> AppTest:
    at.file_uploader(key="upload").set_value((name, data, mime))
    return at.run()


def test_score_warns_about_a_blurred_photo_and_still_scores_it(
    app: Callable[..., AppTest], fixture_image_bytes
) -> None:
    photo = Image.open(io.BytesIO(fixture_image_bytes("stanford_cars", 8))).convert("RGB")
    out_of_focus = io.BytesIO()
    photo.filter(ImageFilter.GaussianBlur(0.01 * max(photo.size))).save(out_of_focus, "PNG")
    at = upload(app(bundle="accept"), "blurred.png", out_of_focus.getvalue(), "image/png")
    assert_clean(at)
    assert [w.value[:27] for w in at.warning] == ["This photo looks blurred (s", SMALL_CAR]
    assert "How modern" in texts(at), "a warning, not a rejection: the scores are shown"


def test_score_accepts_a_car_photo(app: Callable[..., AppTest], fixture_image_bytes) -> None:
    at = upload(app(bundle="accept"), "car.jpg", fixture_image_bytes("stanford_cars", 8), "image/jpeg")
    assert_clean(at)
    assert not at.error and [w.value[:27] for w in at.warning] == [SMALL_CAR]
    shown = texts(at)
    for heading in ("How modern", "How typical", "What drove the modernity score", "Where it sits"):
        assert heading in shown
    assert "Segmenter: **gate**" in shown
    assert "How far to trust the year" not in shown, "a bundle without year errors or a make horizon says nothing"
    assert at.metric[0].label.startswith("Typicality within")
    assert len(charts(at)) >= 5, "gauge, year bins, body type, typicality distribution, map"
    assert "Timings per stage" in [e.label for e in at.expander]
    # the map: the collection as one picture, the car as a star among its nearest cars (SVG markers, no WebGL)
    figure = json.loads(charts(at)[-1].proto.spec)
    assert figure["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    markers = [trace for trace in figure["data"] if trace.get("x")]
    assert [trace["name"] for trace in markers] == ["nearest cars (8)", "your car"]
    assert {trace["type"] for trace in figure["data"]} == {"scatter"}


def test_score_says_how_far_to_trust_the_year(app: Callable[..., AppTest], fixture_image_bytes) -> None:
    at = upload(app(bundle="accept_measured"), "car.jpg", fixture_image_bytes("stanford_cars", 8), "image/jpeg")
    assert_clean(at)
    assert (
        "**How far to trust the year.** On average it was off by 2.50 years on stanford_cars (every split; "
        "1.75–3.25 over resamples of its car models)." in [caption.value for caption in at.caption]
    )


def test_score_waits_with_the_collection_map(app: Callable[..., AppTest]) -> None:
    """Before a photo: the collection's map (one picture, no markers), where the scored car will land."""
    at = app(page="app_pages/score.py")
    assert_clean(at)
    assert "Waiting for a photo." in texts(at)
    (chart,) = charts(at)
    figure = json.loads(chart.proto.spec)
    assert figure["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    assert sum(len(trace.get("x") or ()) for trace in figure["data"]) == 0, "no star before a car is scored"


def test_the_loaded_bundle_is_kept_out_of_full_garbage_collections(app: Callable[..., AppTest]) -> None:
    """A full collection walked every object of torch, plotly and the bundle (0.3 s with the default bundle)."""
    gc.unfreeze()
    st.cache_resource.clear()
    assert_clean(app(page="app_pages/score.py"))
    assert gc.get_freeze_count() > 100_000


def test_score_rejects_a_photo_without_a_car(app: Callable[..., AppTest], fixture_image_bytes) -> None:
    at = upload(app(bundle="reject"), "scene.jpg", fixture_image_bytes("negatives", 2), "image/jpeg")
    assert_clean(at)
    reason = at.warning[0].value
    assert "No car found" in reason and "car confidence" in reason
    assert "How modern" not in [s.value for s in at.subheader]


def test_a_refused_view_says_why_once(app: Callable[..., AppTest], fixture_image_bytes) -> None:
    at = upload(app(bundle="front_only"), "car.jpg", fixture_image_bytes("stanford_cars", 0), "image/jpeg")
    assert_clean(at)
    reason = at.warning[0].value
    assert reason.startswith("**Not scored.**") and reason.lower().count("validated") == 1, reason


def test_score_survives_a_text_file(app: Callable[..., AppTest]) -> None:
    at = upload(app(bundle="accept"), "notes.txt", b"four wheels and a steering wheel\n", "text/plain")
    assert_clean(at)
    assert "not an image" in at.error[0].value
    assert "Traceback" not in texts(at)


def test_score_a_car_from_the_collection_via_the_url(app: Callable[..., AppTest], tiny_bundle: Bundle) -> None:
    car_id = tiny_bundle.images["id"].iat[0]
    label = f"{tiny_bundle.images['class_name'].iat[0]} ({car_id})"  # the selectbox binds its label
    at = app(bundle="accept", params={"source": "Collection", "car": label})
    assert_clean(at)
    assert at.selectbox(key="car").value == car_id
    assert "How typical" in texts(at)


def test_collection_source_needs_an_image_root(app: Callable[..., AppTest], tmp_path: Path) -> None:
    at = app(image_root=tmp_path / "missing")
    assert at.segmented_control(key="source").options == ["Upload", "Camera"]
    assert any("Image root not found" in caption.value for caption in at.sidebar.caption)


# ------------------------------------------------------------------------------------------------- explore


def test_explore_every_colour(app: Callable[..., AppTest]) -> None:
    at = app(page="app_pages/explore.py")
    for key in COLOUR_OPTIONS:
        at.selectbox(key="colour").set_value(key).run()
        assert_clean(at)
        assert charts(at), key


def test_explore_reacts_to_a_selection(app: Callable[..., AppTest], tiny_bundle: Bundle) -> None:
    """The chart's on_select callback stores the selected ids in session state; a test sets them directly."""
    ids = tiny_bundle.images["id"].iloc[[0, 3, 8]].tolist()
    at = app(page="app_pages/explore.py")
    at.session_state["explore_selection"] = ids
    at.run()
    assert_clean(at)
    assert "Selection · 3 cars" in [s.value for s in at.subheader]
    assert at.metric[0].value == "3"
    assert [c.split(" · ")[0] for c in captions(at)] == tiny_bundle.images["class_name"].iloc[[0, 3, 8]].tolist()
    assert any(button.label == "Selection as CSV" for button in at.get("download_button"))


def test_explore_view_restored_from_the_url(app: Callable[..., AppTest], tiny_bundle: Bundle) -> None:
    chosen = tiny_bundle.images.iloc[3]
    # A selectbox with format_func binds its label ("Body type"); pills and text inputs their values.
    params = {"colour": "Body type", "body": ["SUV", "Saloon"], "split": "train", "q": "audi", "id": chosen["id"]}
    at = app(page="app_pages/explore.py", params=params)
    assert_clean(at)
    assert at.selectbox(key="colour").value == "body_type"
    assert at.button_group(key="body").value == ["SUV", "Saloon"]
    assert at.button_group(key="split").value == ["train"]
    assert at.text_input(key="q").value == "audi"
    shown = texts(at)
    assert chosen["class_name"] in [s.value for s in at.subheader], "the car's details are open"
    assert "Nearest neighbours" in shown
    shown_count = int(
        ((tiny_bundle.images["body_type"].isin(["SUV", "Saloon"])) & (tiny_bundle.images["split"] == "train")).sum()
    )
    assert f"{shown_count} of {len(tiny_bundle.images)} cars shown" in shown
    audi = int(tiny_bundle.images["make"].str.lower().eq("audi").sum())
    assert f"{audi} match “audi”" in shown


def test_explore_a_large_collection_as_an_aggregated_map(
    app: Callable[..., AppTest], bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the point limit the map is one server-side picture with a sample drawn over it, and a region drawn on
    it is a query: its counts, gallery and pages come from every car inside, not from the sample."""
    monkeypatch.setenv("CARMORPH_MAP_POINTS", str(LARGE_LIMIT))
    at = app(bundle="large", page="app_pages/explore.py")
    assert_clean(at)
    figure = json.loads(charts(at)[0].proto.spec)
    assert figure["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    assert sum(len(trace["x"]) for trace in figure["data"]) <= LARGE_ROWS
    shown = texts(at)
    assert f"{LARGE_ROWS:,} of {LARGE_ROWS:,} cars shown · drawn as one picture on the server" in shown
    table = map_table(load_bundle(bundles["large"]).images, load_bundle(bundles["large"]).year_bins)
    x, y = table["umap_x"], table["umap_y"]
    box = {"x": [float(x.min()) - 1, float(x.median())], "y": [float(y.min()) - 1, float(y.max()) + 1]}
    selection = MapSelection(regions=regions_from_event([box], []), filters=MapFilters(splits=("train",)))
    expected = region_rows(table, selection)
    assert 24 < len(expected) < LARGE_ROWS
    at.session_state["explore_selection"] = selection
    at.run()
    assert_clean(at)
    assert f"Selection · {len(expected):,} cars" in [s.value for s in at.subheader]
    assert at.metric[0].value == f"{len(expected):,}"
    assert [c.split(" · ")[0] for c in captions(at)] == table["label"].iloc[expected[:24]].tolist()


@pytest.mark.parametrize("bundle", ["tiny", "large"])
def test_the_tour_map_is_one_picture_of_the_collection(app: Callable[..., AppTest], bundle: str) -> None:
    """A slide draws at once: the collection aggregated on the server (as Score's map), no points to draw."""
    at = app(bundle=bundle, page="app_pages/tour.py", params={"slide": "5"})
    assert_clean(at)
    assert at.title[0].value == "The embedding map"
    figure = json.loads(charts(at)[0].proto.spec)
    assert figure["layout"]["images"], "the map is one picture"
    assert sum(len(trace.get("x") or ()) for trace in figure["data"]) == 0, "and no points"


# -------------------------------------------------------------------------------------------------- morphs


def test_morphs_show_every_group(app: Callable[..., AppTest], tiny_bundle: Bundle) -> None:
    frame = morph_frame(tiny_bundle.morphs)
    at = app(page="app_pages/morphs.py")
    assert_clean(at)
    members = [m for m in at.metric if m.label == "members"]
    assert sorted(int(m.value) for m in members) == sorted(frame["count"].tolist())
    assert at.selectbox(key="group").options == frame["title"].tolist()
    table = map_table(tiny_bundle.images, tiny_bundle.year_bins)
    for key in frame["key"]:
        at.selectbox(key="group").set_value(key).run()
        assert_clean(at)
        shown = " ".join(captions(at))
        members = table[table["group"] == key].sort_values("typicality")
        if members.empty:  # a morph (true labels) that no car is predicted into: the rows say so
            assert "No car of the collection is predicted into" in at.info[0].value
            continue
        for label in (members["label"].iat[0], members["label"].iat[-1]):
            assert label in shown, f"{label}: the least and the most typical car of {key} are shown"
    assert len(charts(at)) == 2, "typicality histogram and the morph similarity heatmap"


def test_morph_group_restored_from_the_url(app: Callable[..., AppTest], tiny_bundle: Bundle) -> None:
    last = morph_frame(tiny_bundle.morphs).iloc[-1]
    at = app(page="app_pages/morphs.py", params={"group": last["title"]})
    assert at.selectbox(key="group").value == last["key"]


# -------------------------------------------------------------------------------------------------- report


def test_report_shows_every_metric_and_one_data_set_of_figures_at_a_time(
    app: Callable[..., AppTest], bundles: dict[str, Path]
) -> None:
    manifest = json.loads((bundles["report"] / "manifest.json").read_text())
    tasks = collect_tasks(manifest["metrics"])
    curves = collect_curves(manifest["training"])
    assert [c.name for c in curves] == ["modernity", "bodytype"]
    at = app(bundle="report", page="app_pages/report.py")
    assert_clean(at)
    table = at.dataframe[0].value  # one table of every task's numbers, of every data set
    for task in tasks:
        shown = table[table["task"] == task.name]
        assert [measure_name(k) for k in (*task.scores, *task.baselines)] == shown["measure"].tolist()
    assert not table["measure"].str.contains("_").any(), "metric names are words, not raw keys"
    constant = table[table["measure"] == "constant year"]["value"].tolist()
    assert constant == ["2012"], f"a year reads as a year: {constant}"
    assert "Training curves" in [h.value for h in at.header]
    cards = {(m.label, m.value, m.delta) for m in at.metric}  # at a glance: each data set's main numbers
    assert ("Year MAE (years)", "2.50", "-14 % vs constant") in cards
    assert ("Frontal recall", "1.000", "") in cards  # no constant answer to compare with
    assert "Answering 2012 for every car scores 2.90 years." in [m.help for m in at.metric]
    assert "90 % of resamples of the car models measured fall within: Year MAE (years) 1.75–3.25" in texts(at)
    mae = table[(table["task"] == "stanford_cars · modernity") & (table["measure"] == "mean absolute error (years)")]
    assert mae["range over car models (90 %)"].tolist() == ["1.750–3.250"]
    ranges = json.loads(charts(at)[0].proto.spec)["data"][0]  # at a glance, under the cards
    assert ranges["y"] == ["stanford_cars · Year MAE (years)"] and ranges["error_x"]["arrayminus"] == [0.75]
    assert "**stanford_cars** · every split" in texts(at)
    assert "the scores averaged over the crop and its mirror image" in texts(at)

    def figures_of(dataset: str) -> list[str]:
        return [t.name for t in tasks if t.confusion is not None and t.name.startswith(dataset)]

    # by default the first data set's matrices and the first network's curves: the ranges, 2 data charts, 2 per
    # task, 2 curves
    assert [s.value for s in at.subheader] == [*figures_of("stanford_cars"), "modernity"]
    assert len(charts(at)) == 1 + 2 + 2 * len(figures_of("stanford_cars")) + 2
    assert "A release refit" not in texts(at)
    at.segmented_control(key="report_data").set_value("dvm_porsche").run()
    at.segmented_control(key="report_curves").set_value("bodytype").run()
    assert_clean(at)
    assert [s.value for s in at.subheader] == [*figures_of("dvm_porsche"), "bodytype"]
    assert len(charts(at)) == 1 + 2 + 2 * len(figures_of("dvm_porsche")) + 2
    assert "A release refit: this network was trained on the validation cars too" in texts(at)


def test_a_report_link_opens_the_data_set_it_names(app: Callable[..., AppTest]) -> None:
    at = app(bundle="report", page="app_pages/report.py", params={"report_data": "dvm_porsche"})
    assert_clean(at)
    assert at.subheader[0].value == "dvm_porsche · body_type"


def test_report_without_metrics_says_so(app: Callable[..., AppTest]) -> None:
    at = app(page="app_pages/report.py")
    assert_clean(at)
    assert "records no evaluation metrics" in at.info[0].value
    assert "Provenance" in texts(at) and "mirror image" not in texts(at)


# ---------------------------------------------------------------------------------------------------- tour


def test_tour_every_slide(app: Callable[..., AppTest]) -> None:
    at = app(page="app_pages/tour.py")
    titles = []
    for _ in range(7):
        assert_clean(at)
        titles.append(at.title[0].value)
        click(at, "Next")
    assert len(set(titles)) == 7


def test_tour_slide_restored_from_the_url(app: Callable[..., AppTest]) -> None:
    at = app(page="app_pages/tour.py", params={"slide": "5"})
    assert_clean(at)
    assert at.title[0].value == "The embedding map"


@pytest.mark.parametrize("asked", ["99", "0", "two"])
def test_an_unknown_slide_is_said_plainly(app: Callable[..., AppTest], asked: str) -> None:
    at = app(page="app_pages/tour.py", params={"slide": asked})
    assert_clean(at)
    assert [w.value for w in at.warning] == [f"There is no slide {asked}: the tour has slides 1 to 7. This is slide 1."]
    assert at.title[0].value.startswith("How modern is a car's design")


def test_a_known_slide_has_no_warning(app: Callable[..., AppTest]) -> None:
    assert not app(page="app_pages/tour.py", params={"slide": "7"}).warning


def test_the_results_slide_shows_the_main_test_numbers_or_says_there_are_none(app: Callable[..., AppTest]) -> None:
    at = app(bundle="report", page="app_pages/tour.py", params={"slide": "6"})
    assert_clean(at)
    assert at.title[0].value == "How well does it work?"
    assert ("Year MAE (years)", "2.50", "-14 % vs constant") in {(m.label, m.value, m.delta) for m in at.metric}
    assert "What the data cannot say" not in texts(at), "every year of the report bundle has cars of several makes"
    at = app(page="app_pages/tour.py", params={"slide": "6"})
    assert_clean(at)
    assert not at.metric and "records no test metrics" in at.info[0].value


def test_the_results_slide_says_what_the_data_cannot(app: Callable[..., AppTest]) -> None:
    at = app(bundle="horizon", page="app_pages/tour.py", params={"slide": "6"})
    assert_clean(at)
    assert (
        "**What the data cannot say.** Every car it trained on after 2012 is a Porsche: a newer car of another make "
        "is likely to read as 2012 or earlier." in texts(at)
    )


def test_tour_live_scoring(app: Callable[..., AppTest], fixture_image_bytes) -> None:
    at = app(bundle="accept", page="app_pages/tour.py", params={"slide": "7"})
    at.file_uploader(key="tour_upload").set_value(("car.jpg", fixture_image_bytes("stanford_cars", 3), "image/jpeg"))
    at.run()
    assert_clean(at)
    assert at.metric[0].label.startswith("Typicality within")
