"""Metrics shared by training (validation) and evaluation: accuracy, macro-F1, confusion, frontal P/R, and their
ranges over samples of car models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.report import INTERVAL_LEVEL


@dataclass(frozen=True)
class Classification:
    accuracy: float
    macro_f1: float
    per_class_f1: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class


def classification_metrics(true: np.ndarray, pred: np.ndarray, classes: int) -> Classification:
    """Metrics over rows whose true label is known (>= 0); macro-F1 averages classes present in `true`."""
    known = true >= 0
    true, pred = true[known], pred[known]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    tp = np.diag(confusion).astype(float)
    precision = tp / np.maximum(confusion.sum(0), 1)
    recall = tp / np.maximum(confusion.sum(1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    present = confusion.sum(1) > 0
    return Classification(
        accuracy=float((true == pred).mean()) if len(true) else float("nan"),
        macro_f1=float(f1[present].mean()) if present.any() else float("nan"),
        per_class_f1=[float(v) for v in f1],
        confusion=confusion.tolist(),
    )


def frontal_metrics(true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision and recall at `threshold`, and the best recall reachable at precision >= 0.95."""
    pred = prob >= threshold
    tp = float((pred & (true == 1)).sum())
    return {
        "accuracy": float((pred == (true == 1)).mean()) if len(true) else float("nan"),
        "precision": tp / max(1.0, float(pred.sum())),
        "recall": tp / max(1.0, float((true == 1).sum())),
        "recall_at_precision_95": recall_at_precision(true, prob, 0.95)[0],
    }


def recall_at_precision(true: np.ndarray, prob: np.ndarray, min_precision: float) -> tuple[float, float]:
    """(best recall, its threshold) over thresholds whose precision is at least `min_precision`."""
    order = np.argsort(-prob)
    hits = np.cumsum(true[order] == 1)
    precision = hits / np.arange(1, len(order) + 1)
    recall = hits / max(1, int((true == 1).sum()))
    ok = precision >= min_precision
    if not ok.any():
        return 0.0, 1.0
    best = int(np.argmax(np.where(ok, recall, -1)))
    return float(recall[best]), float(prob[order][best])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of normalised x1, y1, x2, y2 boxes."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return w * h / np.maximum(area(a) + area(b) - w * h, 1e-9)


INTERVAL_DRAWS = 1000


def car_model_interval(
    car_models: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    draws: int = INTERVAL_DRAWS,
    level: float = INTERVAL_LEVEL,
    seed: int = 0,
) -> tuple[float, float] | None:
    """The central `level` range of `statistic` (a function of row indices) over `draws` samples of the car models,
    drawn with replacement, as many as there are (a cluster bootstrap): how far the number could move on another
    sample of car models of the same size, since photos of one car model succeed or fail together. None with fewer
    than two car models or no resample where the statistic is defined."""
    names, codes = np.unique(car_models, return_inverse=True)
    if len(names) < 2:
        return None
    rows_of = [np.flatnonzero(codes == code) for code in range(len(names))]
    rng = np.random.default_rng(seed)
    values = [statistic(np.concatenate([rows_of[i] for i in rng.integers(len(names), size=len(names))]))
              for _ in range(draws)]  # fmt: skip
    finite = np.asarray(values)[np.isfinite(values)]  # e.g. no precision where a resample has no frontal prediction
    if not len(finite):
        return None
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
