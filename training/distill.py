"""Distil the teacher into the seed's ResNet-18: ImageNet knowledge for the seed's architecture, on the CPU.

The student (a ResNet-18, from scratch or from a checkpoint's backbone) sees augmented car crops and frames
(flip, jittered crop, colour) from the decode-once cache and learns, through a linear projection into the
teacher's 1280-d space, to reproduce the teacher's cached pooled feature of that image (cosine loss) and the
teacher's ImageNet logits (KL divergence at temperature `--temperature`, through the teacher's own frozen
classifier). The student's features are then probed with `training.teacher --backbone` and `training.heads`
like any frozen backbone. Checkpoints every epoch (`--resume`), log.jsonl with the validation cosine.

  python -m training.distill --teacher cache/teacher224 --size 112 --epochs 3 --out runs/distill
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from core.config import SHARED_DATA_DIR
from core.models import POOLED_WIDTH, RESNET18, CarNet, imagenet_classifier, load_state_dict_file
from training.data import Augment, build_cache, resize_batch
from training.features import joined, teacher_features
from training.train import normalise


def distillation_data(table: pd.DataFrame, args: argparse.Namespace) -> dict[str, tuple[np.ndarray, torch.Tensor]]:
    """Per split: uint8 images (car crops, then whole EPFL and negative frames) and their teacher features."""
    out = {}
    for split in ("train", "val"):
        images, targets = [], []
        for view, crop in (("crop", True), ("frame", False)):
            index, features = teacher_features(args.teacher, view)
            rows = joined(table, index)
            keep = (rows["split"] == split).to_numpy()
            images.append(build_cache(rows[keep], args.data, args.cache_size, crop=crop, cache_dir=args.cache_dir))
            targets.append(features[keep])
        out[split] = (np.concatenate(images), torch.from_numpy(np.concatenate(targets)))
    return out


class Student(nn.Module):
    """A ResNet-18 CarNet (no heads) and the projection of its pooled feature into the teacher's space."""

    def __init__(self) -> None:
        super().__init__()
        self.net = CarNet({}, RESNET18)
        self.project = nn.Linear(POOLED_WIDTH[RESNET18], 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.net(x)["features"])


def distillation_loss(
    predicted: torch.Tensor, target: torch.Tensor, classifier: nn.Linear, temperature: float
) -> torch.Tensor:
    cosine = 1 - F.cosine_similarity(predicted, target, dim=1).mean()
    student = F.log_softmax(classifier(predicted) / temperature, dim=1)
    teacher = F.softmax(classifier(target) / temperature, dim=1)
    return cosine + temperature**2 * F.kl_div(student, teacher, reduction="batchmean")


@torch.inference_mode()
def validation_cosine(student: Student, images: np.ndarray, targets: torch.Tensor, size: int) -> float:
    student.eval()
    sims = [
        F.cosine_similarity(student(normalise(resize_batch(torch.from_numpy(images[i : i + 128]), size))),
                            targets[i : i + 128], dim=1)
        for i in range(0, len(images), 128)
    ]  # fmt: skip
    return float(torch.cat(sims).mean())


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--data", type=Path, default=SHARED_DATA_DIR)
    p.add_argument("--teacher", type=Path, default=Path("cache/teacher224"), help="from training.teacher")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--init", type=Path, help="checkpoint or network file whose ResNet-18 backbone starts the student")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--cache-size", type=int, default=128)
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--limit", type=int, help="train on a seeded sample of this many images per epoch (CPU budget)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = distillation_data(pd.read_parquet(args.table), args)
    student = Student()
    if args.init:
        state = load_state_dict_file(args.init)
        state = state.get("model", state)
        student.net.backbone.load_state_dict(
            {k.removeprefix("backbone."): v.float() for k, v in state.items() if k.startswith("backbone.")}
        )
    student = student.to(memory_format=torch.channels_last)
    classifier = imagenet_classifier().requires_grad_(False)
    images, targets = data["train"]
    per_epoch = min(len(images), args.limit or len(images))
    steps = per_epoch // args.batch_size
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=max(1, args.epochs * steps))
    start, history, last = 0, [], args.out / "last.pt"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.resume and last.is_file():
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        student.load_state_dict(checkpoint["student"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start, history = checkpoint["epoch"] + 1, checkpoint["history"]
    augment = Augment(args.size, min_scale=0.75, colour=0.2)
    generator = torch.Generator()
    saved_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"arch": RESNET18}
    for epoch in range(start, args.epochs):
        generator.manual_seed(args.seed * 1000 + epoch)
        student.train()
        tic, order = time.time(), torch.randperm(len(images), generator=generator).numpy()[:per_epoch]
        bar = tqdm(range(steps), desc=f"distil epoch {epoch}", unit="batch")
        for step in bar:
            idx = np.sort(order[step * args.batch_size : (step + 1) * args.batch_size])
            x = normalise(augment(torch.from_numpy(images[idx]), generator)[0]).contiguous(
                memory_format=torch.channels_last
            )
            loss = distillation_loss(student(x), targets[idx], classifier, args.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        record = {"epoch": epoch, "seconds": time.time() - tic, "images_per_s": steps * args.batch_size /
                  (time.time() - tic), "val_cosine": validation_cosine(student, *data["val"], args.size)}  # fmt: skip
        history.append(record)
        print(json.dumps(record), flush=True)
        with open(args.out / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        checkpoint = {"student": student.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history, "args": saved_args,
                      "model": {f"backbone.{k}": v for k, v in student.net.backbone.state_dict().items()}}  # fmt: skip
        torch.save(checkpoint, last)
        if record["val_cosine"] >= max(r["val_cosine"] for r in history):
            torch.save(checkpoint, args.out / "best.pt")


if __name__ == "__main__":
    main()
