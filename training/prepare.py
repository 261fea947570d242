"""Read the image folders into one labelled table with year bins and a grouped 70/20/10 split.

Inputs are folders laid out like ../shared/data (`<dataset>/labels.csv` + `images/`) or DVM-CAR's
`Confirmed_fronts` folder with its `Ad_table.csv`. No car model (make+model+year class), EPFL sequence
or DVM generation model appears in two splits.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import DVM_YEAR_BINS, SEED_BODY_TYPES, SHARED_DATA_DIR, SHARED_YEAR_BINS, YearBin, year_to_bin

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}
TABLE_COLUMNS = [
    "id", "path", "dataset", "car", "make", "model", "class_name", "group", "year", "year_bin", "body_type",
    "body_type_raw", "frontal", "angle_deg", "box_x1", "box_y1", "box_x2", "box_y2", "width", "height",
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
            "body_type": raw["body_type"].fillna(""),
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
)


def read_dvm(folder: Path, ad_table: Path, bins: Sequence[YearBin] = DVM_YEAR_BINS) -> pd.DataFrame:
    """DVM-CAR `Confirmed_fronts`: names `Maker$$Genmodel$$Year$$Colour$$Genmodel_ID$$...$$image_N.jpg`,
    body type joined from `Ad_table.csv` by Genmodel_ID (its most frequent Bodytype)."""
    ads = pd.read_csv(ad_table)
    ads.columns = [c.strip() for c in ads.columns]
    body_by_model = ads.dropna(subset=["Bodytype"]).groupby("Genmodel_ID")["Bodytype"].agg(lambda s: s.mode().iat[0])
    rows = []
    for path in sorted(folder.rglob("*.jpg")):
        match = DVM_NAME.match(path.name)
        if match is None:
            continue
        raw_body = str(body_by_model.get(match["gid"], ""))
        rows.append(
            {
                "path": str(path.relative_to(folder.parent)),
                "dataset": "dvm_car",
                "car": 1,
                "make": match["maker"],
                "model": match["genmodel"],
                "class_name": f"{match['maker']} {match['genmodel']} {match['year']}",
                "group": "dvm:" + match["gid"],
                "year": int(match["year"]),
                "body_type": raw_body if raw_body in SEED_BODY_TYPES else "",
                "body_type_raw": raw_body,
                "frontal": 1,
            }
        )
    table = pd.DataFrame(rows)
    table["year_bin"] = [_bin_or_missing(y, bins) for y in table["year"]]
    return table


def _bin_or_missing(year: int, bins: Sequence[YearBin]) -> int:
    index = year_to_bin(int(year), tuple(bins))
    return -1 if index is None else index


def grouped_split(table: pd.DataFrame, seed: int = 0, fractions: dict[str, float] = SPLIT_FRACTIONS) -> pd.Series:
    """Assign whole groups to splits, stratified by dataset and body type of the group.

    Within each stratum, groups are shuffled and each goes to the split furthest below its target share of
    images (relative to the target, so small strata still reach val and test), so every stratum is split close to
    70/20/10 and no group is divided. Finer strata (body type x year bin) hold one or two car models each and
    would push the shares far from 70/20/10; walking each stratum in year order spreads year bins instead.
    """
    rng = np.random.default_rng(seed)
    per_group = table.groupby("group").agg(
        size=("path", "size"),
        stratum=("dataset", "first"),
        body=("body_type", "first"),
        year_bin=("year_bin", "first"),
    )
    per_group["stratum"] = per_group["stratum"] + "|" + per_group["body"].astype(str)
    assignment: dict[str, str] = {}
    for _, groups in per_group.groupby("stratum"):
        filled = dict.fromkeys(fractions, 0)
        total = groups["size"].sum()
        shuffled = groups.iloc[rng.permutation(len(groups))]
        for name, size in shuffled.sort_values("year_bin", kind="stable")["size"].items():
            need = {split: 1 - filled[split] / (fractions[split] * total) for split in fractions}
            chosen = max(need, key=need.__getitem__)
            assignment[name] = chosen
            filled[chosen] += size
    return table["group"].map(assignment)


def prepare(data_root: Path, bins: Sequence[YearBin] = SHARED_YEAR_BINS, seed: int = 0) -> pd.DataFrame:
    """One table over every dataset folder found under `data_root`."""
    readers = {
        "stanford_cars": lambda f: read_stanford(f, bins),
        "epfl_multiview": read_epfl,
        "negatives": read_negatives,
    }
    parts = [
        reader(data_root / name) for name, reader in readers.items() if (data_root / name / "labels.csv").is_file()
    ]
    if not parts:
        raise SystemExit(f"No dataset folders (stanford_cars/, epfl_multiview/, negatives/) found in {data_root}")
    return finalise(pd.concat(parts, ignore_index=True), seed)


def finalise(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Fill defaults, give stable ids and the grouped split."""
    defaults = {"make": "", "model": "", "class_name": "", "year": -1, "year_bin": -1, "body_type": "",
                "body_type_raw": "", "frontal": -1, "angle_deg": np.nan, "box_x1": np.nan, "box_y1": np.nan,
                "box_x2": np.nan, "box_y2": np.nan, "width": -1, "height": -1}  # fmt: skip
    for column, value in defaults.items():
        table[column] = table[column].fillna(value) if column in table else value
    table = table.astype({"car": int, "year": int, "year_bin": int, "frontal": int, "width": int, "height": int})
    table["id"] = table["path"].str.replace(r"\.[A-Za-z]+$", "", regex=True).str.replace("/images/", "/")
    table["split"] = grouped_split(table, seed)
    return table[[*TABLE_COLUMNS, "split"]].reset_index(drop=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="data root with dataset folders")
    parser.add_argument("--dvm", type=Path, help="DVM-CAR Confirmed_fronts folder (uses the seed's year bins)")
    parser.add_argument("--dvm-ads", type=Path, help="DVM-CAR Ad_table.csv (with --dvm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/table.parquet"))
    args = parser.parse_args(argv)
    if args.dvm:
        if not args.dvm_ads:
            parser.error("--dvm needs --dvm-ads (DVM-CAR's Ad_table.csv)")
        table = finalise(read_dvm(args.dvm, args.dvm_ads), args.seed)
    else:
        table = prepare(args.data, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False)
    print(table.groupby(["dataset", "split"]).size().unstack(fill_value=0).to_string())
    print(f"wrote {len(table)} rows to {args.out}")


if __name__ == "__main__":
    main()
