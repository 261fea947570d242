"""Shared pytest fixtures. Each section has an owner; add new fixtures in their own section."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

# =============================================================================================================
# Fixture photos (tests/fixtures/data, made by tests/make_fixture.py): used by the imaging and segment tests.
# Real downscaled photographs: stanford_cars (tight car crops), epfl_multiview (cars on a turntable, with boxes
# and view angles), negatives (no car). Rows are the labels.csv rows plus "path" (absolute image path).
# =============================================================================================================

FIXTURE_DATA_DIR = Path(__file__).resolve().parent / "fixtures" / "data"
FIXTURE_DATASETS = ("stanford_cars", "epfl_multiview", "negatives")


def read_fixture_rows(dataset: str) -> list[dict[str, str]]:
    folder = FIXTURE_DATA_DIR / dataset
    with (folder / "labels.csv").open(newline="") as handle:
        return [{**row, "path": str(folder / row["file"])} for row in csv.DictReader(handle)]


@pytest.fixture(scope="session")
def fixture_data_dir() -> Path:
    """The fixture's data root (same layout as ../shared/data)."""
    return FIXTURE_DATA_DIR


@pytest.fixture(scope="session")
def fixture_rows() -> dict[str, list[dict[str, str]]]:
    """labels.csv rows of each fixture dataset, each with an absolute "path"."""
    return {dataset: read_fixture_rows(dataset) for dataset in FIXTURE_DATASETS}


@pytest.fixture(scope="session")
def fixture_image_bytes(fixture_rows: dict[str, list[dict[str, str]]]) -> Callable[[str, int], bytes]:
    """fixture_image_bytes(dataset, index=0): the encoded JPEG bytes of one fixture photo."""

    def read(dataset: str, index: int = 0) -> bytes:
        return Path(fixture_rows[dataset][index]["path"]).read_bytes()

    return read


@pytest.fixture(scope="session")
def car_photo_path(fixture_rows: dict[str, list[dict[str, str]]]) -> Path:
    """A Stanford Cars photo: a car filling the frame."""
    return Path(fixture_rows["stanford_cars"][0]["path"])


@pytest.fixture
def car_photo(car_photo_path: Path) -> Image.Image:
    """The car photo as a decoded RGB image (a fresh copy per test)."""
    with Image.open(car_photo_path) as image:
        return image.convert("RGB")


@pytest.fixture(scope="session")
def frontal_row(fixture_rows: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    """An EPFL turntable frame showing the car from the front (angle 0), with its box."""
    return next(row for row in fixture_rows["epfl_multiview"] if float(row["angle_deg"]) == 0.0)


@pytest.fixture(scope="session")
def negative_photo_path(fixture_rows: dict[str, list[dict[str, str]]]) -> Path:
    """A photo with no car."""
    return Path(fixture_rows["negatives"][0]["path"])


@pytest.fixture
def resized_dvm_folder(tmp_path: Path) -> Path:
    """`tmp_path/data/dvm_mini`: DVM-CAR's resized_DVM layout (<Maker>/<Genmodel>/<Year>/<Colour>/, DVM's file
    names) of six fixture photos, with its Ad_table.csv (Macan SUV, 911 Coupe, Boxster Convertible) and a
    views.csv labelling one front and one three-quarter view."""
    source = next((FIXTURE_DATA_DIR / "stanford_cars" / "images").glob("*.jpg"))
    folder = tmp_path / "data" / "dvm_mini"
    files = []
    for genmodel, gid, year, adv, n in (("Macan", "71_10", 2016, 1, 1), ("Macan", "71_10", 2016, 1, 2),
                                        ("Macan", "71_10", 2018, 7, 1), ("911", "71_1", 2004, 3, 5),
                                        ("Boxster", "71_6", 2012, 9, 1), ("Boxster", "71_6", 2019, 4, 2)):  # fmt: skip
        relative = (
            f"images/Porsche/{genmodel}/{year}/Grey/Porsche$${genmodel}$${year}$$Grey$${gid}$${adv}$$image_{n}.jpg"
        )
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.open(source).save(folder / relative)
        files.append(relative)
    with open(folder / "Ad_table.csv", "w", newline="") as ads:
        writer = csv.writer(ads)
        writer.writerow(["Maker", "Genmodel", "Genmodel_ID", "Adv_ID", "Bodytype"])
        writer.writerows([["Porsche", "Macan", "71_10", "71_10$$1", "SUV"],
                          ["Porsche", "911", "71_1", "71_1$$3", "Coupe"],
                          ["Porsche", "Boxster", "71_6", "71_6$$9", "Convertible"]])  # fmt: skip
    with open(folder / "views.csv", "w", newline="") as views:
        csv.writer(views).writerows([["file", "view"], [files[0], "front"], [files[3], "three_quarter"]])
    return folder


# ============================================ end of fixture photos ==========================================


# =============================================================================================================
# Tiny artifact bundle: used by the artifacts, projection, explain and pipeline tests.
# Built once per session by core.artifacts.build_untrained_bundle (through build_bundle, the code training.build
# uses) from the fixture's real photos (Stanford Cars as training split, EPFL frames as validation) and freshly
# initialised, seeded networks at 64 px: real embeddings, morphs (min 2 members: SUV and Saloon 2012), a 32 px
# atlas, PCA map coordinates.
# =============================================================================================================


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory):
    """The loaded tiny bundle (session-wide: do not modify it; use dataclasses.replace for variants)."""
    from core.artifacts import build_untrained_bundle

    return build_untrained_bundle(tmp_path_factory.mktemp("bundle") / "tiny", FIXTURE_DATA_DIR, name="tiny-test-bundle")


@pytest.fixture(scope="session")
def tiny_bundle_dir(tiny_bundle) -> Path:
    """Directory of the tiny bundle (read-only: copy it before changing files)."""
    return tiny_bundle.path


# ============================================ end of tiny artifact bundle ====================================
