"""Fine-tune the teacher's last stage on the car tasks, from maps cached by `training.teacher --tail-maps`.

EfficientNet-Lite0's last stage (one inverted-residual block, 192 -> 320 channels at 7 x 7, and the 320 -> 1280
head convolution: 1.0 M of its 3.4 M weights, about a tenth of its compute) is trained together with a year-bin
and a body-type head (the raw body types as an auxiliary head) on the cached maps of the Stanford and DVM-CAR
crops; everything before it stays ImageNet's. Maps are flipped left-right at random (the maps of a flipped photo,
nearly), and the epoch with the best validation score (mean over data sets of year-bin macro-F1 and body-type
accuracy) is kept.

The result is a new frozen backbone for the rest of the recipe: `OUT/backbone.pt` and a feature cache in OUT with
the teacher cache's layout (every view's pooled feature recomputed through the fine-tuned stage from the cached
maps), so `training.heads --teacher OUT` and `training.build --features OUT` run on it unchanged.

  python -m training.finetune --table runs/table.parquet --teacher cache/teacher224 --out cache/finetuned224
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.config import SEED_BODY_TYPES
from core.models import CarNet
from training.features import Split, encode, joined, training_body_types
from training.heads import car_loss, car_metrics
from training.teacher import VIEWS, BackboneInfo, frozen_backbone, lite_tail
from training.train import class_weights

TASKS = ("year_bin", "body_type")


def tail_maps(teacher: Path, view: str) -> np.ndarray:
    """A view's cached last-stage input maps (N x 192 x 7 x 7, fp16), memory-mapped chunk by chunk."""
    folder = teacher / f"{view}_maps"
    chunks = sorted(folder.glob("[0-9]*.npy"))
    if not chunks:
        raise SystemExit(f"{folder} has no maps: run training.teacher with --tail-maps")
    return np.concatenate([np.load(chunk, mmap_mode="r") for chunk in chunks])


def car_maps(table: pd.DataFrame, teacher: Path, body_raw: Sequence[str]) -> dict[str, tuple[np.ndarray, Split]]:
    """Per split, the maps of the car crops with a known year and their targets (features filled in later)."""
    index = pd.read_parquet(teacher / "crop_index.parquet")
    maps = tail_maps(teacher, "crop")
    rows = joined(table, index)
    out = {}
    for split in ("train", "val", "test"):
        mask = ((rows["year"] > 0) & (rows["split"] == split)).to_numpy()
        part = rows[mask]
        targets = {
            "year_bin": torch.from_numpy(part["year_bin"].to_numpy(np.int64)),
            "body_type": torch.from_numpy(encode(part["body_type"], SEED_BODY_TYPES)),
            "body_raw": torch.from_numpy(encode(part["body_type_raw"], body_raw)),
        }
        split_rows = Split(torch.empty(0), targets, torch.ones(int(mask.sum())), part["dataset"].to_numpy(),
                           part["year"].to_numpy(float))  # fmt: skip
        out[split] = (maps[mask], split_rows)
    return out


def tail_parameters(model: CarNet) -> list[torch.nn.Parameter]:
    b = model.backbone
    return [*b.blocks[-1].parameters(), *b.conv_head.parameters(), *b.bn2.parameters()]


@torch.inference_mode()
def pooled(model: CarNet, maps: np.ndarray, batch: int = 512) -> torch.Tensor:
    """Pooled features of cached maps through the (fine-tuned) last stage."""
    model.eval()
    return torch.cat([lite_tail(model, torch.from_numpy(np.asarray(maps[i : i + batch], np.float32)))
                      for i in range(0, len(maps), batch)])  # fmt: skip


def validation_scores(model: CarNet, maps: np.ndarray, split: Split) -> dict[str, float]:
    with_features = replace(split, features=pooled(model, maps))
    result = {}
    for task in TASKS:
        result |= {f"{task}.{k}": v for k, v in car_metrics(task)(model, with_features).items()}
    result["score"] = float(np.mean([result[f"{task}.score"] for task in TASKS]))
    return result


def fit(model: CarNet, data: dict[str, tuple[np.ndarray, Split]], args: argparse.Namespace) -> list[dict]:
    """AdamW (the stage at `lr`, the heads at 10 x `lr`) with cosine decay; keeps the best validation epoch."""
    maps, train = data["train"]
    losses = {task: car_loss(task, class_weights(train.targets[task].numpy(), 5)) for task in TASKS}
    optimizer = torch.optim.AdamW(
        [{"params": tail_parameters(model), "lr": args.lr}, {"params": model.heads.parameters(), "lr": 10 * args.lr}],
        weight_decay=args.weight_decay,
    )
    steps = max(1, len(maps) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * steps)
    generator = torch.Generator().manual_seed(args.seed)
    best, history = -np.inf, []
    for epoch in range(args.epochs):
        tic = time.time()
        model.train()
        order = torch.randperm(len(maps), generator=generator).numpy()
        for step in range(steps):
            idx = np.sort(order[step * args.batch_size : (step + 1) * args.batch_size])
            x = torch.from_numpy(np.asarray(maps[idx], np.float32))
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x[flip] = x[flip].flip(-1)
            features = F.dropout(lite_tail(model, x), p=args.feature_dropout, training=True)
            outputs = model.forward_from_pooled(features)
            targets = {k: v[idx] for k, v in train.targets.items()}
            loss = sum(losses[task](outputs, targets, train.weights[idx]) for task in TASKS)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        record = {"epoch": epoch, "loss": float(loss.detach()), "seconds": round(time.time() - tic, 1),
                  **validation_scores(model, *data["val"])}  # fmt: skip
        history.append(record)
        print(json.dumps(record), flush=True)
        if record["score"] > best:
            best = record["score"]
            torch.save({"model": model.state_dict(), "epoch": epoch, "history": history}, args.out / "backbone.pt")
    return history


def write_feature_cache(model: CarNet, teacher: Path, out: Path, info: BackboneInfo) -> None:
    """Every view's pooled features through the fine-tuned stage, in the teacher cache's layout."""
    for view in VIEWS:
        if not (teacher / f"{view}_index.parquet").is_file():
            continue
        np.save(out / f"{view}.npy", pooled(model, tail_maps(teacher, view)).numpy().astype(np.float16))
        shutil.copy(teacher / f"{view}_index.parquet", out / f"{view}_index.parquet")
    (out / "backbone.json").write_text(json.dumps(asdict(info), indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--teacher", type=Path, default=Path("cache/teacher224"), help="training.teacher --tail-maps")
    p.add_argument("--out", type=Path, default=Path("cache/finetuned224"))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4, help="the last stage's learning rate (heads: 10 x)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--feature-dropout", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    teacher_info = BackboneInfo.read(args.teacher)
    table = pd.read_parquet(args.table)
    body_raw = training_body_types(table)
    model = frozen_backbone(teacher_info, {"year_bin": 5, "body_type": len(SEED_BODY_TYPES),
                                           "body_raw": len(body_raw)})  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    history = fit(model, car_maps(table, args.teacher, body_raw), args)
    model.load_state_dict(torch.load(args.out / "backbone.pt", weights_only=True)["model"])
    info = replace(teacher_info, origin=f"{teacher_info.origin}+finetuned-last-stage",
                   checkpoint=str(args.out / "backbone.pt"))  # fmt: skip
    write_feature_cache(model, args.teacher, args.out, info)
    (args.out / "finetune.json").write_text(json.dumps({"history": history}, indent=1) + "\n")


if __name__ == "__main__":
    main()
