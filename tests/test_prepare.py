"""training.prepare: one table over the datasets, year bins, grouped split without leakage, DVM-CAR reader."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from core.config import DVM_YEAR_BINS, SHARED_DATA_DIR, SHARED_YEAR_BINS, seed_body_type
from training import prepare as prepare_cli
from training.prepare import finalise, grouped_split, is_dvm_folder, prepare, read_dvm, read_stanford

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data"


def assert_no_leakage(table: pd.DataFrame) -> None:
    splits_per_group = table.groupby("group")["split"].nunique()
    assert (splits_per_group == 1).all(), splits_per_group[splits_per_group > 1].index.tolist()[:5]


def test_fixture_table_has_every_dataset_with_bins_and_boxes():
    table = prepare(FIXTURE_DATA)
    assert set(table["dataset"]) == {"stanford_cars", "epfl_multiview", "negatives"}
    cars = table[table["dataset"] == "stanford_cars"]
    for year, year_bin in zip(cars["year"], cars["year_bin"], strict=True):
        assert SHARED_YEAR_BINS[year_bin].contains(year)
    epfl = table[table["dataset"] == "epfl_multiview"]
    assert ((epfl["box_x1"] < epfl["box_x2"]) & (epfl["box_y1"] < epfl["box_y2"])).all()
    assert set(epfl["frontal"]) == {0, 1}
    assert (table.loc[table["dataset"] == "negatives", "car"] == 0).all()
    assert table["id"].is_unique
    assert_no_leakage(table)


@pytest.mark.data
def test_shared_split_is_grouped_and_close_to_70_20_10():
    if not (SHARED_DATA_DIR / "stanford_cars" / "labels.csv").is_file():
        pytest.skip(f"needs the shared data at {SHARED_DATA_DIR} (not on this machine)")
    table = prepare(SHARED_DATA_DIR)
    assert_no_leakage(table)
    cars = table[table["dataset"] == "stanford_cars"]
    share = cars["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7, abs=0.04)
    assert share["val"] == pytest.approx(0.2, abs=0.03)
    assert share["test"] == pytest.approx(0.1, abs=0.03)
    # stratified: every seed body type and year bin (Stanford's end in 2012, DVM-CAR's 2019) reaches the test split
    test = cars[cars["split"] == "test"]
    assert set(test["year_bin"]) == {0, 1, 2}
    dvm = table[table["dataset"] == "dvm_porsche"]
    assert set(dvm.loc[dvm["split"] == "test", "year_bin"]) == set(range(5))
    assert dvm.groupby("advert")["split"].nunique().max() == 1
    assert {"Hatchback", "SUV", "MPV", "Saloon", "Convertible"} <= set(test["body_type"])
    # no car model class in two splits (the leakage that would inflate test metrics)
    assert cars.groupby("class_name")["split"].nunique().max() == 1


def test_split_keeps_groups_whole_on_a_made_table():
    table = pd.DataFrame(
        {
            "group": [f"g{i // 3}" for i in range(90)],
            "path": [f"p{i}" for i in range(90)],
            "dataset": "d",
            "body_type": "SUV",
            "year_bin": 1,
        }
    )
    table["split"] = grouped_split(table, seed=3)
    assert_no_leakage(table)
    assert table["split"].value_counts()["train"] == pytest.approx(63, abs=3)


def make_dvm_folder(root: Path) -> tuple[Path, Path]:
    """A tiny DVM-CAR layout: Confirmed_fronts/<Maker>/<Year>/ images named the DVM way, and its Ad_table.csv."""
    source = next((FIXTURE_DATA / "stanford_cars" / "images").glob("*.jpg"))
    cars = [("Audi", "A3", 2004, "Black", "7_2", 1), ("Audi", "A3", 2010, "Red", "7_2", 2),
            ("Ford", "Kuga", 2013, "Blue", "29_11", 1), ("Ford", "Kuga", 2016, "White", "29_11", 1),
            ("Mazda", "MX-5", 2001, "Red", "59_3", 1), ("Fiat", "Multipla", 2005, "Silver", "30_8", 1)]  # fmt: skip
    fronts = root / "Confirmed_fronts"
    for maker, model, year, colour, gid, n in cars:
        folder = fronts / maker / str(year)
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(source).save(folder / f"{maker}$${model}$${year}$${colour}$${gid}$$1$$image_{n}.jpg")
    (fronts / "notes.txt").write_text("not an image")
    ads = pd.DataFrame(
        {
            "Maker": ["Audi", "Audi", "Ford", "Mazda", "Fiat"],
            " Genmodel": ["A3", "A3", "Kuga", "MX-5", "Multipla"],
            " Genmodel_ID": ["7_2", "7_2", "29_11", "59_3", "30_8"],
            "Bodytype": ["Hatchback", "Hatchback", "SUV", "Convertible", "MPV"],
        }
    )
    ads.to_csv(root / "Ad_table.csv", index=False)
    return fronts, root / "Ad_table.csv"


def test_dvm_reader_parses_names_joins_body_type_and_uses_seed_bins(tmp_path):
    fronts, ads = make_dvm_folder(tmp_path)
    table = finalise(read_dvm(fronts, ads, DVM_YEAR_BINS), seed=0)
    assert len(table) == 6
    audi = table[table["make"] == "Audi"].sort_values("year")
    assert audi["body_type"].tolist() == ["Hatchback", "Hatchback"]
    assert audi["year_bin"].tolist() == [-1, 2]  # 2004 falls in the seed's gap between 2000-03 and 2006-08
    kuga = table[table["model"] == "Kuga"].sort_values("year")
    assert kuga["year_bin"].tolist() == [3, 4]
    assert DVM_YEAR_BINS[3].contains(2013)
    assert set(table["body_type"]) == {"Hatchback", "SUV", "Convertible", "MPV"}
    assert (table["frontal"] == 1).all() and (table["view"] == "front").all()  # Confirmed_fronts: all front views
    assert_no_leakage(table)  # grouped by Genmodel + year
    assert all((tmp_path / p).is_file() for p in table["path"])


def test_prepare_reads_a_resized_dvm_folder_with_its_views_beside_the_other_data(resized_dvm_folder):
    data = resized_dvm_folder.parent
    for name in ("stanford_cars", "negatives"):
        shutil.copytree(FIXTURE_DATA / name, data / name)
    table = prepare(data)
    dvm = table[table["dataset"] == "dvm_mini"].set_index("year")
    assert len(dvm) == 6 and set(dvm["make"]) == {"Porsche"}
    assert dvm.loc[2004, "body_type"] == "" and dvm.loc[2004, "body_type_raw"] == "Coupe"  # not a seed type
    assert dvm.loc[2018, "year_bin"] == 4 and dvm.loc[2012, "year_bin"] == 2  # the shared bins reach 2019
    assert dvm.loc[2004, "view"] == "three_quarter" and dvm.loc[2004, "frontal"] == 0
    assert sorted(dvm["view"]) == ["", "", "", "", "front", "three_quarter"]
    assert dvm.groupby("advert")["split"].nunique().max() == 1
    assert dvm.groupby("class_name")["split"].nunique().max() == 1
    assert all((data / p).is_file() for p in dvm["path"])


def test_view_labels_read_in_any_case_spelling_and_by_their_usual_names(resized_dvm_folder):
    """A hand-labelled views.csv: "Front" is a front view, "BACK" a rear one, "Three-quarter", "profile" and "rear
    three-quarter" the three-quarter, side and three-quarter views; a label it does not know stays as written and is
    not frontal."""
    files = sorted(read_dvm(resized_dvm_folder)["path"].str.removeprefix("dvm_mini/"))
    written = ["Front", "BACK", "Three-quarter", " profile ", "rear three-quarter", "interior"]
    with open(resized_dvm_folder / "views.csv", "w", newline="") as views:
        csv.writer(views).writerows([["file", "view"], *zip(files, written, strict=True)])
    table = read_dvm(resized_dvm_folder).assign(file=lambda t: t["path"].str.removeprefix("dvm_mini/"))
    read = table.set_index("file").loc[files]
    assert read["view"].tolist() == ["front", "rear", "three_quarter", "side", "three_quarter", "interior"]
    assert read["frontal"].tolist() == [1, 0, 0, 0, 0, 0]


def test_an_ad_table_written_by_a_spreadsheet_or_without_body_types_still_reads(resized_dvm_folder):
    """An Ad_table.csv saved with a byte-order mark reads its body types; one without a Bodytype column leaves them
    unknown instead of failing."""
    ads = resized_dvm_folder / "Ad_table.csv"
    ads.write_text(ads.read_text(), encoding="utf-8-sig")
    assert set(read_dvm(resized_dvm_folder)["body_type"]) == {"SUV", "Convertible", ""}
    ads.write_text("Maker,Genmodel,Genmodel_ID\nPorsche,Macan,71_10\n")
    table = read_dvm(resized_dvm_folder)
    assert len(table) == 6 and set(table["body_type"]) == {""}


def test_a_folder_without_dvm_names_is_refused_and_other_image_suffixes_are_read(resized_dvm_folder, tmp_path):
    """An Ad_table.csv beside images that are not named the DVM way is not a DVM-CAR folder (a clear refusal, not an
    empty table); a DVM-named .JPG or .png is read like a .jpg."""
    misnamed = tmp_path / "misnamed"
    shutil.copytree(resized_dvm_folder, misnamed)
    for path in misnamed.rglob("*.jpg"):
        path.rename(path.with_name(path.name.replace("$$", "_")))
    assert not is_dvm_folder(misnamed)
    with pytest.raises(SystemExit):
        prepare_cli.main(["--dvm", str(misnamed), "--out", str(tmp_path / "table.parquet")])
    first, second = sorted(resized_dvm_folder.rglob("*.jpg"))[:2]
    first.rename(first.with_suffix(".JPG"))
    Image.open(second).save(second.with_suffix(".png"))
    second.unlink()
    assert len(read_dvm(resized_dvm_folder)) == 6


def test_seed_body_type_reads_labels_in_any_case_and_by_their_us_names():
    assert [seed_body_type(x) for x in ("Saloon", " sedan ", "MINIVAN", "suv", "Cabriolet")] == [
        "Saloon",
        "Saloon",
        "MPV",
        "SUV",
        "Convertible",
    ]
    assert [seed_body_type(x) for x in ("Coupe", "Estate", "", float("nan"), None)] == [""] * 5


def test_a_stanford_layout_folder_reads_body_types_in_any_spelling(tmp_path):
    folder = tmp_path / "stanford_cars"
    (folder / "images").mkdir(parents=True)
    labels = pd.read_csv(FIXTURE_DATA / "stanford_cars" / "labels.csv")
    labels["body_type"] = ["sedan", " SUV", "Minivan", "Coupe"] * (len(labels) // 4) + ["sedan"] * (len(labels) % 4)
    labels.to_csv(folder / "labels.csv", index=False)
    read = read_stanford(folder, SHARED_YEAR_BINS)["body_type"].tolist()
    assert read == [seed_body_type(b) for b in labels["body_type"]] and set(read) == {"Saloon", "SUV", "MPV", ""}


def test_view_labels_kept_outside_the_data_join_their_data_set(tmp_path):
    """`--views DIR`: `<data set>.csv` labels that data set's photos (the shared data is read-only, so hand labels
    live in the project); a file without `file` and `view` columns, one naming no data set folder, or a missing
    folder is refused."""
    views = tmp_path / "views"
    views.mkdir()
    stanford = pd.read_csv(FIXTURE_DATA / "stanford_cars" / "labels.csv")["file"].tolist()
    pd.DataFrame({"file": stanford[:3], "view": ["Front", "rear", "three-quarter"]}).to_csv(
        views / "stanford_cars.csv", index=False
    )
    out = tmp_path / "table.parquet"
    prepare_cli.main(["--data", str(FIXTURE_DATA), "--views", str(views), "--out", str(out)])
    table = pd.read_parquet(out).set_index("path")
    labelled = table.loc[[f"stanford_cars/{file}" for file in stanford[:3]]]
    assert labelled["view"].tolist() == ["front", "rear", "three_quarter"]
    assert labelled["frontal"].tolist() == [1, 0, 0]
    others = table[(table["dataset"] == "stanford_cars") & ~table.index.isin(labelled.index)]
    assert (others["view"] == "").all() and (others["frontal"] == -1).all()
    plain = prepare(FIXTURE_DATA)
    assert plain["split"].tolist() == pd.read_parquet(out)["split"].tolist(), "labels do not move the split"
    epfl = table[table["dataset"] == "epfl_multiview"]
    assert (epfl["view"] == plain.set_index("path").loc[epfl.index, "view"]).all(), "other data sets as before"

    (views / "stanford_cars.csv").write_text("photo,angle\nimages/x.jpg,0\n")
    with pytest.raises(SystemExit, match="a views file has the columns file and view, this one photo, angle"):
        prepare_cli.main(["--data", str(FIXTURE_DATA), "--views", str(views), "--out", str(out)])
    (views / "stanford.csv").write_text("file,view\nimages/x.jpg,front\n")
    with pytest.raises(SystemExit, match=r"stanford\.csv names no data set folder"):
        prepare_cli.main(["--data", str(FIXTURE_DATA), "--views", str(views), "--out", str(out)])
    with pytest.raises(SystemExit, match="no such folder"):
        prepare_cli.main(["--data", str(FIXTURE_DATA), "--views", str(tmp_path / "absent"), "--out", str(out)])


HAND_LABELLED_VIEWS = Path(__file__).parents[1] / "data" / "views"


@pytest.mark.parametrize("dataset", ["stanford_cars", "dvm_porsche"])
def test_the_hand_labelled_view_files_name_one_known_view_per_photo(dataset):
    """data/views/<data set>.csv as `training.prepare --views` reads it: one of the four views for each photo, no
    photo twice, the samples data/views/README.md describes, and (with the shared data) every photo there."""
    path = HAND_LABELLED_VIEWS / f"{dataset}.csv"
    rows = pd.read_csv(path)
    views = prepare_cli.read_view_file(path)
    assert len(views) == len(rows) and rows["file"].is_unique
    assert set(views.values()) == {"front", "three_quarter", "side", "rear"}
    assert {"random val", "random train"} <= set(rows["sample"])
    if (SHARED_DATA_DIR / dataset).is_dir():
        assert all((SHARED_DATA_DIR / dataset / file).is_file() for file in rows["file"])
