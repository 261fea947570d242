"""Read the image folders into one labelled table with year bins and a grouped 70/20/10 split.

Inputs are folders laid out like ../shared/data (`<dataset>/labels.csv` + `images/`, a `views.csv` beside any
of them, or view labels kept elsewhere: `--views data/views`) and DVM-CAR folders (`resized_DVM` or
`Confirmed_fronts` layout, found by file name, with `Ad_table.csv`). No car model class (make + model + year; DVM:
Genmodel + year), EPFL sequence or DVM advert appears in two splits.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import DVM_YEAR_BINS, SHARED_DATA_DIR, SHARED_YEAR_BINS, YearBin, seed_body_type, year_to_bin

YEAR_BIN_SETS = {"shared": SHARED_YEAR_BINS, "dvm": DVM_YEAR_BINS}
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}
TABLE_COLUMNS = [
    "id", "path", "dataset", "car", "make", "model", "class_name", "group", "year", "year_bin", "body_type",
    "body_type_raw", "view", "frontal", "angle_deg", "advert", "box_x1", "box_y1", "box_x2", "box_y2", "width",
    "height",
]  # fmt: skip


def _normalised_boxes(frame: pd.DataFrame) -> pd.DataFrame:
    sizes = {"x": frame["width"], "y": frame["height"]}
    columns = ("x1", "y1", "x2", "y2")
    return pd.DataFrame({f"box_{c}": (frame[f"bbox_{c}"] / sizes[c[0]]).clip(0.0, 1.0) for c in columns})


def read_stanford(folder: Path, bins: Sequence[YearBin]) -> pd.DataFrame:
    raw = pd.read_csv(folder / "labels.csv")
    table = pd.DataFrame(
        {
            "path": folder.name + "/" + raw["file"],
            "dataset": folder.name,
            "car": 1,
            "make": raw["make"],
            "model": raw["model"],
            "class_name": raw["class_name"],
            "group": "class:" + raw["class_id"].astype(str),
            "year": raw["year"].astype(int),
            "body_type": raw["body_type"].map(seed_body_type),
            "body_type_raw": raw["body_type_raw"].fillna(""),
            "frontal": -1,
            "angle_deg": np.nan,
            "width": raw["width"],
            "height": raw["height"],
        }
    )
    table[["box_x1", "box_y1", "box_x2", "box_y2"]] = _normalised_boxes(raw)
    table["year_bin"] = [_bin_or_missing(y, bins) for y in table["year"]]
    return table


def read_epfl(folder: Path) -> pd.DataFrame:
    raw = pd.read_csv(folder / "labels.csv")
    table = pd.DataFrame(
        {
            "path": folder.name + "/" + raw["file"],
            "dataset": folder.name,
            "car": 1,
            "group": "sequence:" + raw["sequence"].astype(str),
            "frontal": raw["frontal"].astype(int),
            "angle_deg": raw["angle_deg"],
            "width": raw["width"],
            "height": raw["height"],
        }
    )
    table[["box_x1", "box_y1", "box_x2", "box_y2"]] = _normalised_boxes(raw)
    return table


def read_negatives(folder: Path) -> pd.DataFrame:
    raw = pd.read_csv(folder / "labels.csv")
    return pd.DataFrame(
        {
            "path": folder.name + "/" + raw["file"],
            "dataset": folder.name,
            "car": raw["car"].astype(int),
            "group": "negative:" + raw["source"].astype(str) + ":" + raw["file"],
            "body_type_raw": np.where(raw["vehicle"].astype(int) == 1, "vehicle", ""),
            "width": raw["width"],
            "height": raw["height"],
        }
    )


DVM_NAME = re.compile(
    r"^(?P<maker>[^$]+)\$\$(?P<genmodel>[^$]+)\$\$(?P<year>\d{4})\$\$(?P<colour>[^$]*)\$\$(?P<gid>[^$]+)\$\$"
    r"(?P<adv>[^$]*)\$\$"
)
VIEWS_FILE = "views.csv"
VIEW_SYNONYMS = {"frontal": "front", "back": "rear", "profile": "side", "3/4": "three_quarter",
                 "threequarter": "three_quarter", "three_quarters": "three_quarter",
                 "front_three_quarter": "three_quarter", "rear_three_quarter": "three_quarter"}  # fmt: skip
DVM_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# EPFL viewing angle (0 = front, ±180 = rear) to the view classes DVM-CAR names, plus side and rear.
EPFL_VIEW_EDGES = ((30.0, "front"), (75.0, "three_quarter"), (105.0, "side"), (150.0, "three_quarter"), (180.0, "rear"))


def view_from_angle(angle_deg: float) -> str:
    """front (|angle| <= 30), three_quarter (front or rear), side (75-105), rear (> 150); "" when unknown."""
    return next((view for edge, view in EPFL_VIEW_EDGES if abs(angle_deg) <= edge), "")


def view_label(text: str) -> str:
    """A hand-written view label in DVM-CAR's words: any case, spaces or hyphens ("Three-quarter"), and the usual
    other names (back: rear, profile: side, frontal: front, front or rear three-quarter: three_quarter)."""
    view = re.sub(r"[\s\-]+", "_", str(text).strip().lower())
    return VIEW_SYNONYMS.get(view, view)


def read_view_file(path: Path) -> dict[str, str]:
    """A views file (`file`, `view` columns): view label per file path relative to its data set's folder."""
    views = pd.read_csv(path, dtype=str)
    if not {"file", "view"} <= set(views.columns):
        raise SystemExit(f"{path}: a views file has the columns file and view, this one {', '.join(views.columns)}")
    views = views[["file", "view"]].dropna()
    return dict(zip(views["file"], views["view"].map(view_label), strict=True))


def read_views(folder: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """`views.csv` beside a data set, and `extra` labels (hand labels kept outside a read-only data folder, e.g.
    `data/views/`), which win where both name a file: view label per file path relative to the folder."""
    beside = folder / VIEWS_FILE
    return (read_view_file(beside) if beside.is_file() else {}) | dict(extra or {})


def extra_views(views_dir: Path | None, folder: Path) -> dict[str, str]:
    """The labels `views_dir/<folder name>.csv` gives a data set folder (none without such a file)."""
    path = views_dir / f"{folder.name}.csv" if views_dir else None
    return read_view_file(path) if path and path.is_file() else {}


def frontal_from_view(view: str) -> int:
    """1 for `front`, 0 for another known view, -1 when unknown."""
    return -1 if not view else int(view == "front")


def read_dvm(
    folder: Path,
    ad_table: Path | None = None,
    bins: Sequence[YearBin] = SHARED_YEAR_BINS,
    views: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """DVM-CAR images found by file name (`Maker$$Genmodel$$Year$$Colour$$Genmodel_ID$$Adv_ID$$image_N.jpg`) at any
    depth, so both `resized_DVM` (`<Maker>/<Genmodel>/<Year>/<Colour>/`) and `Confirmed_fronts` layouts read.

    Body type is joined from `Ad_table.csv` (default: inside `folder`; without one, body types are unknown) by
    Genmodel_ID (its most frequent Bodytype); views from `views.csv` beside the images and `views` (every
    `Confirmed_fronts` image is a front view). A car model class (the split's group) is Genmodel + year, as
    Stanford's make + model + year."""
    body_by_model = body_type_by_model(ad_table or folder / "Ad_table.csv")
    views = read_views(folder, views)
    rows = []
    for path, match in sorted(dvm_images(folder), key=lambda image: image[0]):
        relative = path.relative_to(folder).as_posix()
        view = "front" if "Confirmed_fronts" in path.parts else views.get(relative, "")
        raw_body = str(body_by_model.get(match["gid"], ""))
        rows.append(
            {
                "path": str(path.relative_to(folder.parent)),
                "dataset": folder.name,
                "car": 1,
                "make": match["maker"],
                "model": match["genmodel"],
                "class_name": f"{match['maker']} {match['genmodel']} {match['year']}",
                "group": f"dvm:{match['gid']}:{match['year']}",
                "advert": f"{match['gid']}$${match['adv']}",
                "year": int(match["year"]),
                "body_type": seed_body_type(raw_body),
                "body_type_raw": raw_body,
                "view": view,
                "frontal": frontal_from_view(view),
            }
        )
    table = pd.DataFrame(rows)
    table["year_bin"] = [_bin_or_missing(y, bins) for y in table["year"]]
    return table


def body_type_by_model(ad_table: Path) -> pd.Series:
    """Genmodel_ID -> its most frequent Bodytype in an `Ad_table.csv`; empty when there is no such file or it has
    no Genmodel_ID and Bodytype columns (body types are then unknown)."""
    if not ad_table.is_file():
        return pd.Series(dtype=str)
    ads = pd.read_csv(ad_table, encoding="utf-8-sig")
    ads.columns = [c.strip() for c in ads.columns]
    if not {"Genmodel_ID", "Bodytype"} <= set(ads.columns):
        return pd.Series(dtype=str)
    return ads.dropna(subset=["Bodytype"]).groupby("Genmodel_ID")["Bodytype"].agg(lambda s: s.mode().iat[0])


def dvm_images(folder: Path) -> Iterator[tuple[Path, re.Match[str]]]:
    """Every image under `folder` (any depth, .jpg/.jpeg/.png in any case) named the DVM-CAR way, with its name's
    fields, in the order the file system lists them (lazily: the first answers whether there is one)."""
    for path in folder.rglob("*"):
        match = DVM_NAME.match(path.name)
        if match is not None and path.suffix.lower() in DVM_IMAGE_SUFFIXES:
            yield path, match


def has_dvm_images(folder: Path) -> bool:
    """Whether any image under `folder` is named the DVM-CAR way (stops at the first)."""
    return next(dvm_images(folder), None) is not None


def is_dvm_folder(folder: Path) -> bool:
    """A DVM-CAR folder: images named the DVM way at any depth, and an `Ad_table.csv` or no `labels.csv`."""
    has_ads = (folder / "Ad_table.csv").is_file()
    return (has_ads or not (folder / "labels.csv").is_file()) and has_dvm_images(folder)


def _bin_or_missing(year: int, bins: Sequence[YearBin]) -> int:
    index = year_to_bin(int(year), tuple(bins))
    return -1 if index is None else index


def grouped_split(table: pd.DataFrame, seed: int = 0, fractions: dict[str, float] = SPLIT_FRACTIONS) -> pd.Series:
    """Assign whole groups to splits, stratified by dataset and body type of the group.

    Within each stratum, groups are shuffled and each goes to the split furthest below its target share of
    images (relative to the target, so small strata still reach val and test), so every stratum is split close to
    70/20/10 and no group is divided. Finer strata (body type x year bin) hold one or two car models each and
    would push the shares far from 70/20/10; walking each stratum in year order spreads year bins instead.
    DVM-CAR groups (Genmodel + year) are many per model line but body type is per model line, so there the
    strata are year bins, walked in body-type order.
    """
    rng = np.random.default_rng(seed)
    per_group = table.groupby("group").agg(
        size=("path", "size"),
        stratum=("dataset", "first"),
        body=("body_type", "first"),
        year_bin=("year_bin", "first"),
    )
    dvm = per_group.index.str.startswith("dvm:")
    per_group["walk"] = np.where(dvm, per_group["body"].astype(str), per_group["year_bin"].astype(str).str.zfill(3))
    per_group["stratum"] += "|" + np.where(dvm, per_group["year_bin"].astype(str), per_group["body"].astype(str))
    assignment: dict[str, str] = {}
    for _, groups in per_group.groupby("stratum"):
        filled = dict.fromkeys(fractions, 0)
        total = groups["size"].sum()
        shuffled = groups.iloc[rng.permutation(len(groups))]
        for name, size in shuffled.sort_values("walk", kind="stable")["size"].items():
            need = {split: 1 - filled[split] / (fractions[split] * total) for split in fractions}
            chosen = max(need, key=need.__getitem__)
            assignment[name] = chosen
            filled[chosen] += size
    return table["group"].map(assignment)


def read_dataset(
    folder: Path, bins: Sequence[YearBin] = SHARED_YEAR_BINS, views: Mapping[str, str] | None = None
) -> pd.DataFrame | None:
    """One data set folder as table rows (not finalised): a DVM-CAR folder (with Ad_table.csv) or a folder with
    labels.csv read by its columns (EPFL: angles; negatives: a `car` column; else cars with make, model,
    year, body type), with `views.csv` beside it and `views` joined; None when the folder is neither."""
    if is_dvm_folder(folder):
        return read_dvm(folder, bins=bins, views=views)
    if not (folder / "labels.csv").is_file():
        return None
    columns = set(pd.read_csv(folder / "labels.csv", nrows=0).columns)
    if "angle_deg" in columns:
        table = read_epfl(folder)
    elif "car" in columns:
        table = read_negatives(folder)
    else:
        table = read_stanford(folder, bins)
    return with_views(table, folder, views)


def prepare(
    data_root: Path, bins: Sequence[YearBin] = SHARED_YEAR_BINS, seed: int = 0, views_dir: Path | None = None
) -> pd.DataFrame:
    """One table over every dataset folder found under `data_root`, with the view labels of `views_dir` (a
    `<data set folder>.csv` per data set they label) joined."""
    folders = [folder for folder in sorted(data_root.iterdir()) if folder.is_dir()]
    check_views_dir(views_dir, folders)
    parts = [read_dataset(folder, bins, extra_views(views_dir, folder)) for folder in folders]
    parts = [part for part in parts if part is not None]
    if not parts:
        raise SystemExit(
            f"No dataset folders (stanford_cars/, epfl_multiview/, negatives/, a DVM-CAR folder with Ad_table.csv) "
            f"found in {data_root}"
        )
    return finalise(pd.concat(parts, ignore_index=True), seed)


def check_views_dir(views_dir: Path | None, folders: Sequence[Path]) -> None:
    """Refuse a views folder that is missing or holds a file naming none of the data set folders."""
    if views_dir is None:
        return
    if not views_dir.is_dir():
        raise SystemExit(f"--views {views_dir}: no such folder")
    names = {folder.name for folder in folders}
    strays = sorted(path.name for path in views_dir.glob("*.csv") if path.stem not in names)
    if strays:
        raise SystemExit(f"--views {views_dir}: {', '.join(strays)} names no data set folder (one of "
                         f"{', '.join(sorted(names))}): a views file is named after the folder it labels")  # fmt: skip


def with_views(table: pd.DataFrame, folder: Path, extra: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The `view` column: from `views.csv` beside the data set or `extra` where they name the file, else from
    EPFL's angle; `frontal` follows a view label where there is one."""
    views = read_views(folder, extra)
    files = table["path"].str.removeprefix(folder.name + "/")
    from_angle = table["angle_deg"].map(view_from_angle) if "angle_deg" in table else pd.Series("", index=table.index)
    table["view"] = [views.get(file, "") or angle for file, angle in zip(files, from_angle, strict=True)]
    labelled = files.isin(views.keys())
    if labelled.any():
        table.loc[labelled, "frontal"] = table.loc[labelled, "view"].map(frontal_from_view)
    return table


def finalise(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Fill defaults, give stable ids and the grouped split."""
    defaults = {"make": "", "model": "", "class_name": "", "year": -1, "year_bin": -1, "body_type": "",
                "body_type_raw": "", "view": "", "advert": "", "frontal": -1, "angle_deg": np.nan, "box_x1": np.nan,
                "box_y1": np.nan, "box_x2": np.nan, "box_y2": np.nan, "width": -1, "height": -1}  # fmt: skip
    for column, value in defaults.items():
        table[column] = table[column].fillna(value) if column in table else value
    table = table.astype({"car": int, "year": int, "year_bin": int, "frontal": int, "width": int, "height": int})
    table["id"] = table["path"].str.replace(r"\.[A-Za-z]+$", "", regex=True).str.replace("/images/", "/")
    table["split"] = grouped_split(table, seed)
    return table[[*TABLE_COLUMNS, "split"]].reset_index(drop=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="data root with dataset folders")
    parser.add_argument("--dvm", type=Path, help="a DVM-CAR folder alone (resized_DVM or Confirmed_fronts layout)")
    parser.add_argument("--dvm-ads", type=Path, help="DVM-CAR Ad_table.csv (default: inside the --dvm folder)")
    parser.add_argument(
        "--year-bins",
        choices=sorted(YEAR_BIN_SETS),
        default="shared",
        help="shared: 1991-2006 ... 2017-2020 (fits the shared data); dvm: the seed's 2000-03 ... 2015-17",
    )
    parser.add_argument(
        "--views",
        type=Path,
        help="a folder of view labels kept beside the data (e.g. data/views): <data set folder>.csv with views.csv's "
        "columns (file relative to that folder, view), joined over a views.csv beside the data set",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/table.parquet"))
    args = parser.parse_args(argv)
    bins = YEAR_BIN_SETS[args.year_bins]
    if args.dvm:
        ads = args.dvm_ads or args.dvm / "Ad_table.csv"
        if not ads.is_file():
            parser.error(f"no Ad_table.csv at {ads}: pass --dvm-ads")
        if not has_dvm_images(args.dvm):
            parser.error(f"no images named the DVM-CAR way (Maker$$Genmodel$$Year$$Colour$$Genmodel_ID$$Adv_ID$$"
                         f"image_N.jpg) under {args.dvm}")  # fmt: skip
        check_views_dir(args.views, [args.dvm])
        table = finalise(read_dvm(args.dvm, ads, bins, extra_views(args.views, args.dvm)), args.seed)
    else:
        table = prepare(args.data, bins, seed=args.seed, views_dir=args.views)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False)
    print(table.groupby(["dataset", "split"]).size().unstack(fill_value=0).to_string())
    print(f"wrote {len(table)} rows to {args.out}")


if __name__ == "__main__":
    main()
