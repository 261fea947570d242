"""Give a modernity checkpoint a per-year head: the expected year the app shows, read finer than the bins.

The year-bin head's expected year, Σ p_i·centre_i, cannot leave its bins' centres: a 1993 car is 9.5 years from
the 1991-2006 bin's centre however surely it is put in that bin. The per-year head (one class per year of
`core.config.head_years`, 1991-2020 for the shared bins) reads the trained network's neck, which stays frozen, so
the year bins, the score and the macro-F1 do not change. It is trained on the cached backbone features of the
training cars with Gaussian soft labels (σ = 1 year), and the epoch with the lowest validation MAE of the expected
year Σ p_y·y (mean over data sets) is kept.

  python -m training.year_head --checkpoint runs/heads/modernity.pt --teacher cache/ft160
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.config import SHARED_YEAR_BINS, head_years
from core.models import CarNet
from training.features import Split, car_splits, training_body_types
from training.teacher import saved_carnet

SIGMA = 1.0
YEAR_CLASSES = head_years(SHARED_YEAR_BINS).astype(np.float64)  # a per-year head's classes (here and in a fine-tune)


def soft_years(years: np.ndarray, classes: np.ndarray, sigma: float) -> torch.Tensor:
    """Gaussian soft labels over the year classes, one row per car."""
    distance = (classes[None, :] - years[:, None]) / sigma
    weights = torch.from_numpy(np.exp(-0.5 * distance**2)).float()
    return weights / weights.sum(1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft labels (rows of probabilities), the mean over rows."""
    return -(soft * F.log_softmax(logits, 1)).sum(1).mean()


def expected_years(logits: torch.Tensor, classes: np.ndarray) -> np.ndarray:
    """Σ p_y·y per row of per-year logits."""
    return torch.softmax(logits, 1).numpy() @ classes


def mean_mae(split: Split, expected: np.ndarray) -> dict[str, float]:
    return {
        str(d): float(np.abs(expected - split.years)[split.datasets == d].mean()) for d in np.unique(split.datasets)
    }


def fit_year_head(
    model: CarNet, cars: dict[str, Split], classes: np.ndarray, args: argparse.Namespace
) -> tuple[torch.nn.Linear, dict]:
    """A Linear(neck, years) on the frozen neck; the epoch with the lowest validation MAE (mean over data sets), or
    with `args.keep_last` (a release refit, validation trained on) the last."""
    with torch.no_grad():
        neck = {name: model.neck(split.features) for name, split in cars.items()}
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    head = torch.nn.Linear(neck["train"].shape[1], len(classes))
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    targets = soft_years(cars["train"].years, classes, args.sigma)
    best: dict = {"score": np.inf}
    for epoch in range(args.epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            logits = head(F.dropout(neck["train"][idx], p=args.input_dropout, training=True))
            loss = soft_cross_entropy(logits, targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            expected = expected_years(head(neck["val"]), classes)
        mae = mean_mae(cars["val"], expected)
        if np.mean(list(mae.values())) < best["score"] or args.keep_last:
            best = {"score": float(np.mean(list(mae.values()))), "epoch": epoch, "val_mae_years": mae,
                    "state": {k: v.clone() for k, v in head.state_dict().items()}}  # fmt: skip
    head.load_state_dict(best.pop("state"))
    return head, best


def add_year_head(checkpoint_path: Path, cars: dict[str, Split], args: argparse.Namespace) -> dict:
    """Train the per-year head of a modernity checkpoint (heads of `training.heads` on the cached features that
    `cars` holds) and write it into the checkpoint; returns what was chosen and measured."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    saved = checkpoint["args"]
    heads = {k: v for k, v in checkpoint["heads"].items() if k != "year"}
    model = saved_carnet(heads, saved)
    model.load_state_dict({k: v for k, v in checkpoint["model"].items() if not k.startswith("heads.year.")})
    model.eval()
    head, record = fit_year_head(model, cars, YEAR_CLASSES, args)
    checkpoint["model"]["heads.year.weight"] = head.weight.detach().clone()
    checkpoint["model"]["heads.year.bias"] = head.bias.detach().clone()
    checkpoint["heads"] = heads | {"year": len(YEAR_CLASSES)}
    record |= {"years": [int(YEAR_CLASSES[0]), int(YEAR_CLASSES[-1])], "sigma": args.sigma}
    checkpoint["year_head"] = record
    torch.save(checkpoint, checkpoint_path)
    return record


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="a modernity checkpoint of training.heads")
    p.add_argument("--teacher", type=Path, required=True, help="the training.teacher cache its heads were trained on")
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--input-dropout", type=float, default=0.3)
    p.add_argument("--sigma", type=float, default=SIGMA, help="width of the soft labels (years)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-last", action="store_true", help="keep the last epoch (a release refit, whose cars "
                   "include the validation split)")  # fmt: skip
    return p


def year_head_args(seed: int, keep_last: bool = False) -> argparse.Namespace:
    """The defaults of this command (for `training.heads`, which adds the head to every modernity network)."""
    last = ["--keep-last"] if keep_last else []
    return get_args_parser().parse_args(["--checkpoint", "", "--teacher", "", "--seed", str(seed), *last])


def main(argv: Sequence[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    table = pd.read_parquet(args.table)
    record = add_year_head(args.checkpoint, car_splits(table, args.teacher, training_body_types(table)), args)
    print(json.dumps({"per-year head": record}), flush=True)


if __name__ == "__main__":
    main()
