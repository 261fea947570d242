"""Make the committed test fixture `tests/fixtures/data/` from the shared data (same layout, tiny images).

    python tests/make_fixture.py [--source ../shared/data] [--out tests/fixtures/data]

The choice is deterministic (rules below, ties broken by file name), so re-running gives the same files.
Every image is downscaled to at most 128 px on its longer side and re-encoded as JPEG (quality 80); the
labels keep the shared columns, with width, height and bbox_* rescaled to the stored size. The script also
writes `tests/fixtures/SOURCES.md`, listing the source of every image and the datasets' licence notes.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from core.config import SHARED_DATA_DIR, SHARED_YEAR_BINS, year_to_bin  # noqa: E402

MAX_SIDE = 128
JPEG_QUALITY = 80
MAX_TOTAL_BYTES = 1_000_000
MAX_IMAGES = 30

# Stanford Cars: (body_type, year bin index into SHARED_YEAR_BINS) per image. All five seed body types, all
# five year bins, two groups with two members (SUV and Saloon in 2012) so morph tests have a group to average,
# and one car whose body type is outside the seed's five (blank body_type) for the "no morph" path.
STANFORD_TARGETS: tuple[tuple[str, int], ...] = (
    ("Hatchback", 4),
    ("Hatchback", 0),
    ("Hatchback", 3),
    ("SUV", 4),
    ("SUV", 4),
    ("SUV", 1),
    ("MPV", 4),
    ("MPV", 1),
    ("Saloon", 4),
    ("Saloon", 4),
    ("Saloon", 1),
    ("Convertible", 4),
    ("Convertible", 2),
    ("", 4),
)
# EPFL Multi-View: (sequence, target angle in degrees); the frame nearest each angle (0 = front, 180 = rear).
EPFL_TARGETS: tuple[tuple[int, float], ...] = (
    (1, 0.0),
    (1, 25.0),
    (1, 90.0),
    (1, -90.0),
    (1, 180.0),
    (2, 0.0),
    (2, -20.0),
    (2, 90.0),
    (2, 180.0),
)
# Negatives: the first non-vehicle photo of each source, then hard negatives (vehicles that are not cars).
NEGATIVE_SOURCES: tuple[str, ...] = ("imagenet-sample", "imagen", "bsds500", "urban100")
NEGATIVE_VEHICLE_CATEGORIES: tuple[str, ...] = ("bus", "motorcycle")

LICENCE_NOTES = {
    "stanford_cars": "Stanford Cars (Krause et al., 3D Representation and Recognition workshop, ICCV 2013), "
    "training split; published for non-commercial research and teaching.",
    "epfl_multiview": "EPFL Multi-View Car dataset (Ozuysal, Lepetit and Fua, CVPR 2009); published for "
    "non-commercial research and teaching.",
    "negatives": "ImageNet samples (image copyrights remain with their owners; ImageNet terms: non-commercial "
    "research and education), BSDS500 (Berkeley, research use), Sun-Hays80 and Urban100 super-resolution "
    "benchmark scenes (research use).",
}

Row = dict[str, str]


@dataclass(frozen=True)
class Dataset:
    name: str
    columns: list[str]
    rows: list[Row]


def read_dataset(root: Path, name: str) -> Dataset:
    with (root / name / "labels.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = sorted(reader, key=lambda row: row["file"])
        return Dataset(name, list(reader.fieldnames or []), rows)


def is_typical_frame(row: Row) -> bool:
    """Landscape and not a thin strip (so the downscaled image keeps >= 64 px on its short side)."""
    width, height = int(row["width"]), int(row["height"])
    return height < width <= 2 * height


def choose_stanford(rows: list[Row]) -> list[Row]:
    """One image per target cell, each from a class not used before (preferring a make not used before)."""
    chosen: list[Row] = []
    used_classes: set[str] = set()
    used_makes: set[str] = set()
    for body_type, bin_index in STANFORD_TARGETS:
        cell = [
            row
            for row in rows
            if row["body_type"] == body_type
            and year_to_bin(int(row["year"]), SHARED_YEAR_BINS) == bin_index
            and row["class_id"] not in used_classes
            and is_typical_frame(row)
        ]
        if not cell:
            raise SystemExit(f"No unused Stanford class for body type {body_type!r} in year bin {bin_index}.")
        new_make = [row for row in cell if row["make"] not in used_makes]
        pick = min(new_make or cell, key=lambda row: (int(row["class_id"]), row["file"]))
        chosen.append(pick)
        used_classes.add(pick["class_id"])
        used_makes.add(pick["make"])
    return chosen


def angle_distance(a: float, b: float) -> float:
    difference = abs(a - b) % 360.0
    return min(difference, 360.0 - difference)


def choose_epfl(rows: list[Row]) -> list[Row]:
    chosen: list[Row] = []
    for sequence, angle in EPFL_TARGETS:
        frames = [row for row in rows if int(row["sequence"]) == sequence and row not in chosen]
        chosen.append(min(frames, key=lambda row: (angle_distance(float(row["angle_deg"]), angle), row["file"])))
    return chosen


def choose_negatives(rows: list[Row]) -> list[Row]:
    chosen = [next(r for r in rows if r["source"] == source and r["vehicle"] == "0") for source in NEGATIVE_SOURCES]
    chosen += [next(r for r in rows if r["category"] == category) for category in NEGATIVE_VEHICLE_CATEGORIES]
    return chosen


def downscale(source: Path, target: Path) -> tuple[int, int]:
    """Write a JPEG of at most MAX_SIDE px on its longer side; return its (width, height)."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        scale = min(1.0, MAX_SIDE / max(image.size))
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, "JPEG", quality=JPEG_QUALITY, optimize=True)
        return size


def rescaled_row(row: Row, old_size: tuple[int, int], new_size: tuple[int, int]) -> Row:
    """The label row with width/height and bbox_* moved to the downscaled image's pixels."""
    sx, sy = new_size[0] / old_size[0], new_size[1] / old_size[1]
    out = dict(row)
    out["width"], out["height"] = str(new_size[0]), str(new_size[1])
    for key, factor in (("bbox_x1", sx), ("bbox_x2", sx), ("bbox_y1", sy), ("bbox_y2", sy)):
        if key in out and out[key] != "":
            out[key] = f"{float(out[key]) * factor:.1f}"
    return out


def write_dataset(source_root: Path, out_root: Path, dataset: Dataset, rows: Iterable[Row]) -> list[Row]:
    written: list[Row] = []
    for row in rows:
        old_size = (int(row["width"]), int(row["height"]))
        new_size = downscale(source_root / dataset.name / row["file"], out_root / dataset.name / row["file"])
        written.append(rescaled_row(row, old_size, new_size))
    with (out_root / dataset.name / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=dataset.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(written)
    return written


def describe(dataset: str, row: Row) -> str:
    if dataset == "stanford_cars":
        return f"{row['class_name']} (class {row['class_id']}, body type {row['body_type'] or '-'})"
    if dataset == "epfl_multiview":
        return f"sequence {row['sequence']}, frame {row['frame']}, angle {row['angle_deg']} deg"
    return f"{row['source']}: {row['category']}{' (vehicle)' if row['vehicle'] == '1' else ''}"


def write_sources(path: Path, written: dict[str, list[Row]]) -> None:
    lines = [
        "# Test fixture sources",
        "",
        "Generated by `tests/make_fixture.py` from the shared data (`../shared/data`, see its README): each image",
        f"downscaled to at most {MAX_SIDE} px on its longer side and re-encoded as JPEG (quality {JPEG_QUALITY}).",
        "The labels are the shared rows with width, height and bbox_* rescaled to the stored size.",
        "These photographs come from datasets published for non-commercial research and teaching; they are here",
        "only so the test suite runs on a fresh clone. Do not use them for anything else.",
        "",
    ]
    for dataset, rows in written.items():
        lines += [f"## {dataset}", "", f"Licence note: {LICENCE_NOTES[dataset]}", ""]
        lines += ["| fixture file | source file (in ../shared/data) | what |", "|---|---|---|"]
        lines += [f"| {dataset}/{r['file']} | {dataset}/{r['file']} | {describe(dataset, r)} |" for r in rows]
        lines.append("")
    path.write_text("\n".join(lines))


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED_DATA_DIR, help="shared data root")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "tests" / "fixtures" / "data")
    args = parser.parse_args(argv)
    if not (args.source / "stanford_cars" / "labels.csv").is_file():
        raise SystemExit(f"Shared data not found at {args.source} (expected stanford_cars/labels.csv there).")
    if args.out.exists():
        shutil.rmtree(args.out)
    choosers = {"stanford_cars": choose_stanford, "epfl_multiview": choose_epfl, "negatives": choose_negatives}
    written: dict[str, list[Row]] = {}
    for name, choose in choosers.items():
        dataset = read_dataset(args.source, name)
        written[name] = write_dataset(args.source, args.out, dataset, choose(dataset.rows))
    write_sources(args.out.parent / "SOURCES.md", written)
    count = sum(len(rows) for rows in written.values())
    total = folder_bytes(args.out)
    print(f"Wrote {count} images, {total / 1000:.0f} kB in {args.out}")
    if count > MAX_IMAGES or total > MAX_TOTAL_BYTES:
        raise SystemExit(f"Fixture too big: {count} images / {total} bytes (limits {MAX_IMAGES} / {MAX_TOTAL_BYTES}).")


if __name__ == "__main__":
    main()
