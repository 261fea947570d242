"""Metrics shared by training (validation) and evaluation: accuracy, macro-F1, confusion, frontal P/R."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
