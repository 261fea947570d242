"""Train the bundle's heads on the frozen teacher's cached features (from `training.teacher`): seconds, not hours.

Three networks share the frozen EfficientNet-Lite0 backbone and differ in what is trained on its pooled
1280-d feature:

- `modernity`: neck (Linear 1280→256 + ReLU) and the year-bin head; class-weighted cross-entropy (balanced over
  all training cars by default; `--balance`, `--class-weight-power`) plus the
  earth mover's distance over the ordered bins; Stanford and DVM-CAR crops; then a per-year head on its frozen neck
  (`training.year_head`) for the expected year.
- `bodytype`: neck and the body-type head (the seed's five types; the raw body types as an auxiliary head); the
  neck's 256-d output is the embedding that morphs and typicality use.
- `gate`: linear heads (no neck, so a class activation map of the car head gives the box) for car presence
  (car crops, EPFL frames and composites vs negatives) and the view (front, three_quarter, side, rear: EPFL
  angles and DVM-CAR's view labels, each source weighted to the same total); the view head is then refitted by
  `training.view_head` (a logistic regression chosen by car-grouped cross-validation).

Each network keeps the epoch with the best validation score; checkpoints have the shape `training.train`
writes, so `training.build` reads both.

  python -m training.heads --table runs/table.parquet --teacher cache/teacher224 --out runs/heads
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.config import SEED_BODY_TYPES, SHARED_YEAR_BINS
from core.models import CarNet
from core.viewpoint import VIEW_CLASSES
from training.features import (
    Split,
    car_splits,
    encode,
    joined,
    source_weights,
    teacher_features,
    training_body_types,
)
from training.metrics import classification_metrics, recall_at_precision
from training.teacher import RESTYLED_VIEWS, BackboneInfo, frozen_backbone, saved_carnet
from training.train import (
    FIT_SPLITS,
    class_weights,
    emd_loss,
    mix_batch,
    refit,
    weighted_cross_entropy,
    within_dataset_weights,
)
from training.view_head import refit_view_head
from training.year_head import add_year_head, year_head_args

NECK = 256


def gate_splits(table: pd.DataFrame, teacher: Path, restyled: Sequence[str] = ()) -> dict[str, Split]:
    """Car crops, whole frames and composites (and the cars in the `restyled` views: DVM-CAR's in front of photos,
    Stanford's on white): car presence for all, the view where a source labels it (not on composites and restyled
    cars)."""
    parts = []
    for view in ("crop", "frame", "composite", *restyled):
        index, features = teacher_features(teacher, view)
        rows = joined(table, index)
        pasted = view in ("composite", *RESTYLED_VIEWS)
        car = np.ones(len(rows), np.int64) if pasted else rows["car"].to_numpy(np.int64)
        views = np.full(len(rows), -1) if pasted else encode(rows["view"], VIEW_CLASSES)
        parts.append((rows["split"].to_numpy(), rows["dataset"].to_numpy(), features, car, views))
    split, dataset, features, car, views = (np.concatenate(column) for column in zip(*parts, strict=True))
    weights = source_weights(dataset, views)
    return {
        name: Split(
            torch.from_numpy(features[split == name]),
            {"car": torch.from_numpy(car[split == name]), "view": torch.from_numpy(views[split == name])},
            torch.from_numpy(weights[split == name]),
            dataset[split == name],
        )
        for name in ("train", "val", "test")
    }


Loss = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


def car_loss(main: str, class_weight: torch.Tensor, aux_weight: float = 0.3) -> Loss:
    """Class-balanced cross-entropy on the main head (+ EMD on year bins) and plain cross-entropy on the raw body
    types, each row counted by its weight (restyled cars can count less than the photos they come from)."""

    def loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        known = targets[main] >= 0
        logits, target, w = outputs[main][known], targets[main][known], weights[known]
        total = weighted_cross_entropy(logits, target, w, class_weight, label_smoothing=0.1)
        if main == "year_bin":
            total = total + emd_loss(logits, target, w)
        if "body_raw" in outputs and (targets["body_raw"] >= 0).any():
            aux = targets["body_raw"] >= 0
            total = total + aux_weight * weighted_cross_entropy(outputs["body_raw"][aux], targets["body_raw"][aux],
                                                                weights[aux])  # fmt: skip
        return total

    return loss


def gate_loss(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: torch.Tensor
) -> torch.Tensor:
    total = F.binary_cross_entropy_with_logits(outputs["car"][:, 0], targets["car"].float())
    known = targets["view"] >= 0
    if known.any():
        per_row = F.cross_entropy(outputs["view"][known], targets["view"][known], reduction="none")
        total = total + (per_row * weights[known]).sum() / weights[known].sum()
    return total


@torch.inference_mode()
def outputs_of(model: CarNet, split: Split) -> dict[str, np.ndarray]:
    model.eval()
    return {k: v.numpy() for k, v in model.forward_from_pooled(split.features).items()}


def per_dataset_macro_f1(split: Split, logits: np.ndarray, head: str) -> dict[str, float]:
    true = split.targets[head].numpy()
    return {
        str(d): classification_metrics(
            true[split.datasets == d], logits[split.datasets == d].argmax(1), logits.shape[1]
        ).macro_f1
        for d in np.unique(split.datasets[true >= 0])
    }


def car_metrics(head: str) -> Callable[[CarNet, Split], dict[str, float]]:
    """Validation metrics of a car network; `score` (what selects the epoch) is the mean over data sets of the
    main head's macro-F1 (modernity) or accuracy (body type), so each data set counts alike."""

    def metrics(model: CarNet, split: Split) -> dict[str, float]:
        logits = outputs_of(model, split)[head]
        true = split.targets[head].numpy()
        overall = classification_metrics(true, logits.argmax(1), logits.shape[1])
        f1 = per_dataset_macro_f1(split, logits, head)
        result = {"accuracy": overall.accuracy, "macro_f1": overall.macro_f1} | {f"f1_{d}": v for d, v in f1.items()}
        if head == "year_bin":
            result["score"] = float(np.mean(list(f1.values())))
        else:
            accuracy = {d: float((logits.argmax(1) == true)[(split.datasets == d) & (true >= 0)].mean()) for d in f1}
            result |= {f"accuracy_{d}": v for d, v in accuracy.items()}
            result["score"] = float(np.mean(list(accuracy.values())))
        return result

    return metrics


def gate_metrics(model: CarNet, split: Split) -> dict[str, float]:
    """Car accuracy at 0.5 and front-view recall at precision >= 0.95, per view-labelled data set (score: sum)."""
    out = outputs_of(model, split)
    car_prob = 1 / (1 + np.exp(-out["car"][:, 0]))
    car = split.targets["car"].numpy()
    result = {"car_accuracy": float(((car_prob >= 0.5) == (car == 1)).mean())}
    view = split.targets["view"].numpy()
    front = torch.softmax(torch.from_numpy(out["view"]), 1)[:, VIEW_CLASSES.index("front")].numpy()
    recalls = []
    for source in np.unique(split.datasets[view >= 0]):
        rows = (view >= 0) & (split.datasets == source)
        is_front = (view[rows] == VIEW_CLASSES.index("front")).astype(int)
        recall, _ = recall_at_precision(is_front, front[rows], 0.95)
        result[f"front_recall_at_p95_{source}"] = recall
        recalls.append(recall)
    result["score"] = result["car_accuracy"] + float(np.mean(recalls))
    return result


def fit(
    model: CarNet,
    data: dict[str, Split],
    loss_fn: Loss,
    metrics_fn: Callable,
    args: argparse.Namespace,
    mixup: float = 0.0,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """AdamW with cosine decay and input dropout (and, with `mixup` > 0, each row's features blended with another's
    of its batch at a Beta(mixup, mixup) weight, the loss weighted alike); returns the best epoch's state (the last
    epoch's in a release refit, whose validation cars are trained on) and the history."""
    trainable = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    train = data["train"]
    steps_per_epoch = max(1, len(train.features) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed)
    best, best_state, history = -np.inf, {}, []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train.features), generator=generator)
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            x = F.dropout(train.features[idx], p=args.input_dropout, training=True)
            targets, weights = {k: v[idx] for k, v in train.targets.items()}, train.weights[idx]
            if mixup:
                x, partners, share = mix_batch(x, mixup, generator)
            outputs = model.forward_from_pooled(x)
            loss = loss_fn(outputs, targets, weights)
            if mixup:
                partner_targets = {k: v[partners] for k, v in targets.items()}
                loss = share * loss + (1 - share) * loss_fn(outputs, partner_targets, weights[partners])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        record = {"epoch": epoch, "loss": float(loss.detach()), **metrics_fn(model, data["val"])}
        history.append(record)
        if not best_state or record["score"] > best or refit(args):  # the first epoch even if its score is NaN
            best, best_state = record["score"], {k: v.clone() for k, v in model.state_dict().items()}
    return best_state, history


def save_checkpoint(
    path: Path, model: CarNet, neck: int, history: list[dict], args: argparse.Namespace, info: BackboneInfo
) -> None:
    best = kept_epoch(history, args)
    saved_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    saved_args |= {"size": info.size, "arch": info.arch, "neck": neck, "origin": info.origin, "mean": list(info.mean),
                   "std": list(info.std), "frozen_backbone": True, "beside_arch": info.beside_arch,
                   "beside_origin": info.beside_origin}  # fmt: skip
    torch.save({"model": model.state_dict(), "epoch": best["epoch"], "history": history, "args": saved_args,
                "heads": model.head_sizes, "best": best["score"]}, path)  # fmt: skip


def per_view_validation(args: argparse.Namespace, cars: dict[str, Split]) -> dict[str, dict[str, float]]:
    """Modernity macro-F1 and body-type accuracy of the trained networks on the validation cars, per view class
    that the trained gate estimates from the same features: the evidence for a bundle's valid views."""
    networks = {key: torch.load(args.out / f"{key}.pt", map_location="cpu", weights_only=True)
                for key in ("modernity", "bodytype", "gate")}  # fmt: skip
    outputs = {}
    for key, checkpoint in networks.items():
        model = saved_carnet(checkpoint["heads"], checkpoint["args"])
        model.load_state_dict(checkpoint["model"])
        outputs[key] = outputs_of(model, cars["val"])
    view = outputs["gate"]["view"].argmax(1)
    result = {}
    for index, name in enumerate(VIEW_CLASSES):
        rows = view == index
        year = cars["val"].targets["year_bin"].numpy()[rows]
        body = cars["val"].targets["body_type"].numpy()[rows]
        year_pred = outputs["modernity"]["year_bin"][rows].argmax(1)
        body_pred = outputs["bodytype"]["body_type"][rows].argmax(1)
        result[name] = {
            "n": int(rows.sum()),
            "modernity_macro_f1": classification_metrics(year, year_pred, 5).macro_f1,
            "modernity_accuracy": float((year_pred == year)[year >= 0].mean()) if (year >= 0).any() else float("nan"),
            "body_type_accuracy": float((body_pred == body)[body >= 0].mean()) if (body >= 0).any() else float("nan"),
        }
    return result


def calibrate_expected_year(model: CarNet, val: Split, centres: Sequence[float]) -> float:
    """Divide the year-bin head by the temperature with the lowest validation MAE of the expected year (mean of
    per-data-set MAEs). The most likely bin, and so accuracy and macro-F1, do not change; the expected year (the
    modernity score) stops being pulled to the middle bins by soft probabilities."""
    logits = torch.from_numpy(outputs_of(model, val)["year_bin"])
    years = val.years
    known = years > 0

    def mae(t: float) -> float:
        expected = torch.softmax(logits / t, 1).numpy() @ np.asarray(centres)
        return float(np.mean([np.abs(expected - years)[known & (val.datasets == d)].mean()
                              for d in np.unique(val.datasets[known])]))  # fmt: skip

    temperature = min(np.round(np.arange(0.2, 2.01, 0.05), 2), key=mae)
    return divide_year_bin_head(model, float(temperature))


def divide_year_bin_head(model: CarNet, temperature: float) -> float:
    """Divide the year-bin head's logits by `temperature` (folded into its weights); returns it."""
    with torch.no_grad():
        model.heads["year_bin"].weight.div_(temperature)
        model.heads["year_bin"].bias.div_(temperature)
    return temperature


def kept_epoch(history: list[dict], args: argparse.Namespace) -> dict:
    """The record of the epoch whose state is kept: the best on validation, or a release refit's last."""
    return history[-1] if refit(args) else max(history, key=lambda r: r["score"])


def temperature_of(model: CarNet, val: Split, args: argparse.Namespace) -> float:
    """The year-bin head's temperature: calibrated on validation, or in a release refit `--temperature` as the
    validated run chose it."""
    if not refit(args):
        return calibrate_expected_year(model, val, args.year_centres)
    return divide_year_bin_head(model, args.temperature)


def train_network(
    key: str, heads: dict[str, int], neck: int, data: dict[str, Split], loss_fn: Loss, metrics_fn: Callable, args
) -> None:
    tic = time.time()
    torch.manual_seed(args.seed)
    info = BackboneInfo.read(args.teacher)
    model = frozen_backbone(info, heads, neck)  # the checkpoint holds the whole network
    mixup = 0.0 if key == "gate" else args.mixup  # the scores' heads only: a blend of car and no car is neither
    state, history = fit(model, data, loss_fn, metrics_fn, args, mixup)
    model.load_state_dict(state)
    if "year_bin" in heads:
        history[-1]["temperature"] = temperature_of(model, data["val"], args)
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / f"{key}.pt", model, neck, history, args, info)
    best = kept_epoch(history, args)
    print(json.dumps({"network": key, "seconds": round(time.time() - tic, 1), "best": best}), flush=True)
    with open(args.out / "log.jsonl", "a") as log:
        log.write(json.dumps({"network": key, "history": history}) + "\n")


def balanced(
    cars: dict[str, Split], head: str, classes: int, args: argparse.Namespace
) -> tuple[dict[str, Split], torch.Tensor]:
    """The cars and the main head's class weights as `--balance` and `--class-weight-power` ask. `pooled`: class
    weights over all training cars. `per-dataset`: each data set's classes are weighted within it and each data set
    keeps its share of the rows, carried in the training rows' weights (so one data set's plentiful classes, e.g.
    DVM-CAR's Porsche SUVs, do not make another's classes, e.g. Stanford's saloons, count as rare)."""
    train = cars["train"]
    target = train.targets[head].numpy()
    if args.balance == "pooled":
        return cars, class_weights(target, classes, args.class_weight_power)
    factor = within_dataset_weights(target, train.datasets, classes, args.class_weight_power)
    weights = train.weights * torch.from_numpy(factor).to(train.weights.dtype)
    return cars | {"train": dataclasses.replace(train, weights=weights)}, torch.ones(classes)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--teacher", type=Path, default=Path("cache/teacher224"), help="from training.teacher")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--networks", nargs="+", choices=["modernity", "bodytype", "gate"],
                   default=["modernity", "bodytype", "gate"])  # fmt: skip
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--input-dropout", type=float, default=0.3)
    p.add_argument("--mixup", type=float, default=0.0, help="the modernity and body-type heads blend each training "
                   "car's features with another's at a Beta(a, a) weight, the loss alike (0: off)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class-weight-power", type=float, default=1.0, help="the main head's loss weighs each class "
                   "by its inverse frequency to this power: 1 balances the classes, 0.5 weighs them by the square "
                   "root, 0 counts every car alike")  # fmt: skip
    p.add_argument("--balance", choices=["pooled", "per-dataset"], default="pooled", help="where the main head's "
                   "classes are balanced: over all training cars, or within each data set")  # fmt: skip
    p.add_argument("--fit-splits", nargs="+", choices=FIT_SPLITS, default=["train"], help="the splits the heads "
                   "train on; `train val` refits a recipe validation has chosen on all labelled cars (a release "
                   "refit): the last epoch is kept and the year-bin head takes --temperature")  # fmt: skip
    p.add_argument("--temperature", type=float, help="the year-bin head's temperature in a release refit (the "
                   "validated run's, in its log); otherwise it is calibrated on validation")  # fmt: skip
    p.add_argument("--mirror", type=Path, help="training.teacher --mirror cache of the --teacher backbone: the "
                   "modernity and body-type heads also train on every crop mirrored")  # fmt: skip
    p.add_argument("--restyled", nargs="+", choices=RESTYLED_VIEWS, default=[], help="the networks also train on "
                   "the cars in these views of the --teacher cache (training.teacher --views): backdrop, DVM-CAR's "
                   "cars in front of photos (the whole frame, for the gate); backdrop_crop, the same cropped to the "
                   "car (for the scores, as the app crops them); whiteout, Stanford's cars on white. Modernity and "
                   "body type on the training cars, the gate's car presence on all of them")  # fmt: skip
    p.add_argument("--restyled-weight", type=float, default=1.0, help="what a restyled car counts in the "
                   "modernity and body-type losses, against 1 for a car as photographed")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.class_weight_power <= 1:
        parser.error("--class-weight-power takes a number from 0 (every car alike) to 1 (balanced classes)")
    if refit(args) and "gate" in args.networks:
        parser.error("the gate's thresholds are chosen on validation: a release refit is of modernity and body type")
    if refit(args) and "modernity" in args.networks and not (args.temperature or 0) > 0:
        parser.error("a release refit (--fit-splits train val) of modernity takes --temperature: the validated run's")
    args.year_centres = [b.centre for b in SHARED_YEAR_BINS]
    table = pd.read_parquet(args.table)
    body_raw = training_body_types(table)
    if {"modernity", "bodytype"} & set(args.networks):
        cars = car_splits(table, args.teacher, body_raw, args.mirror, args.restyled, args.restyled_weight,
                          args.fit_splits)  # fmt: skip
    if "modernity" in args.networks:
        weighted, weight = balanced(cars, "year_bin", 5, args)
        train_network("modernity", {"year_bin": 5}, NECK, weighted, car_loss("year_bin", weight),
                      car_metrics("year_bin"), args)  # fmt: skip
        year = add_year_head(args.out / "modernity.pt", cars, year_head_args(args.seed, keep_last=refit(args)))
        print(json.dumps({"per-year head": year}), flush=True)
    if "bodytype" in args.networks:
        weighted, weight = balanced(cars, "body_type", len(SEED_BODY_TYPES), args)
        heads = {"body_type": len(SEED_BODY_TYPES), "body_raw": len(body_raw)}
        train_network("bodytype", heads, NECK, weighted, car_loss("body_type", weight), car_metrics("body_type"),
                      args)  # fmt: skip
    if "gate" in args.networks:
        heads = {"car": 1, "view": len(VIEW_CLASSES)}
        train_network("gate", heads, 0, gate_splits(table, args.teacher, args.restyled), gate_loss, gate_metrics, args)
        view_head = refit_view_head(args.out / "gate.pt", table, args.teacher, args.seed)
        chosen = {k: v for k, v in view_head.items() if k != "candidates"} if view_head else "kept: too few cars"
        print(json.dumps({"view head by car-grouped cross-validation": chosen}), flush=True)
    if all((args.out / f"{key}.pt").is_file() for key in ("modernity", "bodytype", "gate")):
        cars = car_splits(table, args.teacher, body_raw)
        per_view = per_view_validation(args, cars)
        (args.out / "per_view_val.json").write_text(json.dumps(per_view, indent=1) + "\n")
        print(json.dumps({"validation per estimated view": per_view}), flush=True)


if __name__ == "__main__":
    main()
