"""Train the gate's box head: the car's box regressed from the gate backbone's maps (core.gate.BoxHead).

The activation map of the car head marks where the car evidence is strongest, not where the car ends: its box cut
a photo that is the car already to about half of it and missed cars in scenes (mean IoU 0.47-0.63 on validation,
whatever the threshold), and the scores suffered. The head learns the crop the scoring networks were trained on,
from four sources (five with `--backdrops`) weighted equally:

- Stanford Cars photos: the data set's box (the photo is the box already);
- DVM-CAR adverts: the whole photo (the networks saw DVM's photos whole, white margins included);
- EPFL frames: the labelled box;
- composites: a negative with a Stanford car of the same split pasted in at a random place and size (`--composites`
  plans per negative, each with a new place), the pasted box;
- backdrops: a DVM-CAR car in front of a negative of the same split (`training.teacher`'s `backdrop` view), the
  car's own box (where the advert's white was not): a car in a scene is cropped to the car, not to the frame.

Mirrored maps with mirrored boxes are the augmentation. The best epoch has the highest mean validation IoU over the
sources; the report gives the activation map's IoU at its thresholds beside it. The maps (the frozen gate
backbone's, 1280 x 5 x 5 at 160 px) are computed once into `--cache`, chunk by chunk (an interrupted run resumes).

  python -m training.box_head --table runs/table.parquet --teacher cache/teacher160 --out runs/box_head
  python -m training.build ... --box-head runs/box_head/box_head.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from core.config import SHARED_DATA_DIR
from core.gate import BoxHead, cam_boxes
from core.models import CarNet, ImageTransform
from training.metrics import box_iou
from training.teacher import (
    BackboneInfo,
    advert_background,
    advert_car_box,
    frozen_backbone,
    open_rgb,
    paste,
    plan_backdrops,
    plan_composites,
    save_atomically,
    swap_background,
)

WHOLE = (0.0, 0.0, 1.0, 1.0)
PHOTO_SOURCES = ("stanford_cars", "dvm_porsche", "epfl_multiview")
SOURCES = (*PHOTO_SOURCES, "composite", "backdrop")
CAM_THRESHOLDS = (0.25, 0.35, 0.45, 0.55)
CHUNK = 512


@dataclass(frozen=True)
class BoxItem:
    """One training image: its source, split, how to load it, the target box (normalised x1, y1, x2, y2) and what it
    is made of (its path; a composite's background and car)."""

    source: str
    split: str
    load: Callable[[], Image.Image] | None
    box: tuple[float, float, float, float]
    name: str = ""


def photo_items(table: pd.DataFrame, data_root: Path, per_source: int, seed: int) -> list[BoxItem]:
    """Up to `per_source` car photos per data set and split (train, val): the labelled box, else the whole photo."""
    rng = np.random.default_rng(seed)
    items = []
    for dataset in PHOTO_SOURCES:
        for split in ("train", "val"):
            rows = table[(table["dataset"] == dataset) & (table["split"] == split) & (table["car"] == 1)]
            rows = rows.iloc[rng.permutation(len(rows))[:per_source]]
            for r in rows.itertuples():
                box = WHOLE if np.isnan(r.box_x1) else (r.box_x1, r.box_y1, r.box_x2, r.box_y2)
                items.append(BoxItem(dataset, split, lambda p=r.path: open_rgb(data_root / p), box, r.path))
    return items


def composite_items(table: pd.DataFrame, data_root: Path, plans_per_negative: int) -> list[BoxItem]:
    """Composites of the training negatives (`plans_per_negative` each) and one of each validation negative."""
    split_of = table.set_index("path")["split"]
    items = []
    for seed in range(plans_per_negative):
        for plan in plan_composites(table, seed):
            split = split_of[plan.background]
            if split == "train" or (split == "val" and seed == 0):
                load = lambda p=plan: paste(open_rgb(data_root / p.background), open_rgb(data_root / p.car), p.box)  # noqa: E731
                items.append(BoxItem("composite", split, load, plan.box, f"{plan.background}|{plan.car}"))
    return items


def backdrop_items(table: pd.DataFrame, data_root: Path, per_source: int, seed: int) -> list[BoxItem]:
    """Up to `per_source` DVM-CAR cars per split (train, val) in front of a negative of their split, each boxed where
    its advert photo is not background (read here, so the targets are known before the maps)."""
    plan = plan_backdrops(table, seed).merge(table[["path", "split"]], on="path")
    rng = np.random.default_rng(seed)
    items = []
    for split in ("train", "val"):
        rows = plan[plan["split"] == split]
        for r in rows.iloc[rng.permutation(len(rows))[:per_source]].itertuples():
            car = open_rgb(data_root / r.path)
            x1, y1, x2, y2 = advert_car_box(advert_background(car))
            box = (x1 / car.width, y1 / car.height, x2 / car.width, y2 / car.height)
            load = lambda r=r: swap_background(open_rgb(data_root / r.path), open_rgb(data_root / r.background))  # noqa: E731
            items.append(BoxItem("backdrop", split, load, box, f"{r.path}|{r.background}"))
    return items


@torch.inference_mode()
def gate_maps(
    model: CarNet, items: Sequence[BoxItem], transform: ImageTransform, folder: Path, batch: int
) -> np.ndarray:
    """The backbone's maps (fp16) of every item, chunk by chunk (existing chunks are kept: resume)."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = range(0, len(items), CHUNK)
    for start in tqdm(chunks, desc="gate maps", unit="chunk"):
        path = folder / f"{start // CHUNK:05d}.npy"
        if path.is_file():
            continue
        part = items[start : start + CHUNK]
        maps = [model.feature_maps(transform([item.load() for item in part[i : i + batch]])).numpy()
                for i in range(0, len(part), batch)]  # fmt: skip
        save_atomically(path, np.concatenate(maps).astype(np.float16))
    return np.concatenate([np.load(folder / f"{start // CHUNK:05d}.npy") for start in chunks])


def giou_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean generalised-IoU loss of two batches of normalised boxes (1 - IoU + the empty share of their hull)."""
    inter = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0) * (
        torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])
    ).clamp(min=0)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    hull = (torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])) * (
        torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    )
    return (1 - inter / union.clamp(min=1e-6) + (hull - union) / hull.clamp(min=1e-6)).mean()


def mirrored(maps: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows where `flip` is set mirrored left-right, maps and boxes alike."""
    maps = torch.where(flip[:, None, None, None], maps.flip(3), maps)
    flipped = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)
    return maps, torch.where(flip[:, None], flipped, boxes)


def iou_by_source(boxes: np.ndarray, truth: np.ndarray, sources: np.ndarray) -> dict[str, float]:
    iou = box_iou(boxes, truth)
    return {source: round(float(iou[sources == source].mean()), 4) for source in SOURCES if (sources == source).any()}


def train_box_head(
    maps: np.ndarray, items: Sequence[BoxItem], epochs: int, channels: int, seed: int
) -> tuple[BoxHead, dict[str, float], int]:
    """The head at its best epoch, its validation IoU per source and that epoch."""
    torch.manual_seed(seed)
    sources = np.array([item.source for item in items])
    boxes = torch.tensor([item.box for item in items], dtype=torch.float32)
    train = np.array([item.split == "train" for item in items])
    x_train, y_train, x_val = torch.from_numpy(maps[train]), boxes[train], torch.from_numpy(maps[~train]).float()
    counts = pd.Series(sources[train]).value_counts()
    weights = torch.tensor(1.0 / counts[sources[train]].to_numpy(), dtype=torch.float64)
    head = BoxHead(maps.shape[1], channels)
    optimiser = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(seed)
    best: tuple[float, dict, dict[str, float], int] = (-1.0, {}, {}, -1)
    for epoch in tqdm(range(epochs), desc="box head", unit="epoch"):
        head.train()
        order = torch.multinomial(weights, len(weights), replacement=True, generator=generator)
        for start in range(0, len(order), 128):
            rows = order[start : start + 128]
            x, y = mirrored(x_train[rows].float(), y_train[rows], torch.rand(len(rows), generator=generator) < 0.5)
            predicted = head(x)
            loss = nn.functional.l1_loss(predicted, y) + giou_loss(predicted, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        head.eval()
        with torch.inference_mode():
            scores = iou_by_source(head(x_val).numpy(), boxes[~train].numpy(), sources[~train])
        mean = float(np.mean(list(scores.values())))
        if mean > best[0]:
            best = (mean, {k: v.clone() for k, v in head.state_dict().items()}, scores, epoch)
    head.load_state_dict(best[1])
    return head.eval(), best[2], best[3]


def cam_baseline(maps: np.ndarray, items: Sequence[BoxItem], car_weight: torch.Tensor) -> dict[str, dict[str, float]]:
    """The activation map's validation IoU per source at each of CAM_THRESHOLDS (what the head replaces)."""
    val = np.array([item.split == "val" for item in items])
    truth = np.array([item.box for item in items], dtype=np.float32)[val]
    sources = np.array([item.source for item in items])[val]
    x = torch.from_numpy(maps[val]).float()
    return {str(t): iou_by_source(cam_boxes(x, car_weight, t), truth, sources) for t in CAM_THRESHOLDS}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="data root the table's paths are in")
    p.add_argument("--teacher", type=Path, default=Path("cache/teacher160"), help="the gate's feature cache (its "
                   "backbone.json names the frozen backbone the gate runs)")  # fmt: skip
    p.add_argument("--gate", type=Path, help="a training.heads gate checkpoint: its car head gives the baseline")
    p.add_argument("--cache", type=Path, default=Path("cache/box_maps"), help="where the maps are kept")
    p.add_argument("--out", type=Path, default=Path("runs/box_head"))
    p.add_argument("--per-source", type=int, default=3000, help="photos per data set and split")
    p.add_argument("--composites", type=int, default=3, help="composite plans per training negative")
    p.add_argument("--backdrops", action="store_true", help="also DVM-CAR's cars in front of photos, boxed to the car")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tic = time.time()
    table = pd.read_parquet(args.table)
    items = photo_items(table, args.data, args.per_source, args.seed)
    items += composite_items(table, args.data, args.composites)
    if args.backdrops:
        items += backdrop_items(table, args.data, args.per_source, args.seed)
    if not any(item.split == "val" for item in items) or not any(item.split == "train" for item in items):
        raise SystemExit("--table has no car photos in train and val to learn boxes from")
    info = BackboneInfo.read(args.teacher)
    backbone = frozen_backbone(info).eval()
    made_of = json.dumps(asdict(info)) + "".join(f"\n{i.name} {i.box}" for i in items)
    key = f"{info.arch}-{info.size}-{hashlib.sha1(made_of.encode()).hexdigest()[:12]}"  # other images: other maps
    maps = gate_maps(backbone, items, info.transform(), args.cache / key, args.batch_size)
    head, val_iou, epoch = train_box_head(maps, items, args.epochs, args.channels, args.seed)
    report = {"val_iou": val_iou, "mean_val_iou": round(float(np.mean(list(val_iou.values()))), 4), "epoch": epoch,
              "n": pd.Series([f"{i.source}/{i.split}" for i in items]).value_counts().to_dict(),
              "backbone": asdict(info), "seconds": round(time.time() - tic)}  # fmt: skip
    if args.gate:
        car = torch.load(args.gate, map_location="cpu", weights_only=True)["model"]["heads.car.weight"][0].float()
        report["cam_val_iou"] = cam_baseline(maps, items, car)
    args.out.mkdir(parents=True, exist_ok=True)
    layout = {"width": head.width, "channels": head.channels, "grid": head.grid}
    torch.save({"model": head.state_dict(), **layout, "report": report}, args.out / "box_head.pt")
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
