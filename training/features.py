"""Cached frozen-backbone features (from `training.teacher`) joined to the prepared table, and label helpers
shared by the trainers that read them (`training.heads`, `training.view_head`, `training.finetune`,
`training.distill`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.config import SEED_BODY_TYPES
from training.teacher import BackboneInfo


def teacher_features(teacher: Path, view: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A view's index and features from a `training.teacher` cache; refuses a cache without that view."""
    if not (teacher / f"{view}_index.parquet").is_file():
        raise SystemExit(f"{teacher} has no {view} view (training.teacher --views {view})")
    return pd.read_parquet(teacher / f"{view}_index.parquet"), np.load(teacher / f"{view}.npy").astype(np.float32)


def joined(table: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Table rows in the order of a teacher view's index (by path)."""
    by_path = table.set_index("path")
    return by_path.loc[index["path"]].reset_index()


def encode(values: pd.Series, labels: Sequence[str]) -> np.ndarray:
    lookup = {label: i for i, label in enumerate(labels)}
    return np.array([lookup.get(v, -1) for v in values], dtype=np.int64)


def source_weights(dataset: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Weights (mean 1 over view-labelled rows) giving every data set with view labels the same total weight."""
    weights = np.ones(len(dataset), np.float32)
    labelled = views >= 0
    sources = np.unique(dataset[labelled])
    for source in sources:
        rows = labelled & (dataset == source)
        weights[rows] = labelled.sum() / (len(sources) * rows.sum())
    return weights


@dataclass
class Split:
    """Cached pooled features (N x 1280 float32) and integer targets (-1 = unknown) with per-row weights."""

    features: torch.Tensor
    targets: dict[str, torch.Tensor]
    weights: torch.Tensor
    datasets: np.ndarray
    years: np.ndarray | None = None


def training_body_types(table: pd.DataFrame) -> list[str]:
    """The raw body types of the training cars: the classes of the auxiliary `body_raw` head."""
    return sorted(table.loc[(table["split"] == "train") & (table["car"] == 1), "body_type_raw"].unique())


def car_splits(
    table: pd.DataFrame,
    teacher: Path,
    body_raw: Sequence[str],
    mirror: Path | None = None,
    restyled: Sequence[str] = (),
    restyled_weight: float = 1.0,
    fit_splits: Sequence[str] = ("train",),
) -> dict[str, Split]:
    """Car crops with a known year (Stanford, DVM-CAR) for the modernity and body-type networks. With `mirror` (a
    `training.teacher --mirror` cache of the same backbone and table) the training split also holds every crop
    mirrored: flip augmentation for heads trained on cached features; with `restyled` views of the cache, the
    training cars in those photo styles too (`backdrop`: DVM-CAR's cars in front of photos, `backdrop_crop`: the same
    cropped to the car; `whiteout`: Stanford's cars on white), each weighing `restyled_weight` in the losses.
    Validation and test stay as they are; `fit_splits` ("train", "val" for a release refit) are the training split's
    rows."""
    index, features = teacher_features(teacher, "crop")
    rows = joined(table, index)
    keep = (rows["year"] > 0).to_numpy()
    rows, features = rows[keep].reset_index(drop=True), features[keep]
    mirrored = mirrored_features(teacher, index, mirror)[keep] if mirror else None
    out = {}
    for split in ("train", "val", "test"):
        mask = rows["split"].isin(fit_splits if split == "train" else [split]).to_numpy()
        part, x = rows[mask], features[mask]
        if split == "train" and mirrored is not None:
            part, x = pd.concat([part, part]), np.concatenate([x, mirrored[mask]])
        weights = np.ones(len(part), np.float32)
        for view in restyled if split == "train" else ():
            extra, extra_x = restyled_training_cars(table, teacher, view, fit_splits)
            part, x = pd.concat([part, extra]), np.concatenate([x, extra_x])
            weights = np.concatenate([weights, np.full(len(extra), restyled_weight, np.float32)])
        out[split] = Split(
            torch.from_numpy(x),
            {
                "year_bin": torch.from_numpy(part["year_bin"].to_numpy(np.int64)),
                "body_type": torch.from_numpy(encode(part["body_type"], SEED_BODY_TYPES)),
                "body_raw": torch.from_numpy(encode(part["body_type_raw"], body_raw)),
            },
            torch.from_numpy(weights),
            part["dataset"].to_numpy(),
            part["year"].to_numpy(float),
        )
    return out


def restyled_training_cars(
    table: pd.DataFrame, teacher: Path, view: str, fit_splits: Sequence[str] = ("train",)
) -> tuple[pd.DataFrame, np.ndarray]:
    """The table rows and features of the training cars (known year) in a restyled view of the cache
    (`training.teacher --views backdrop|backdrop_crop|whiteout`)."""
    index, features = teacher_features(teacher, view)
    rows = joined(table, index)
    keep = (rows["split"].isin(fit_splits) & (rows["year"] > 0)).to_numpy()
    return rows[keep], features[keep]


def mirrored_features(teacher: Path, index: pd.DataFrame, mirror: Path) -> np.ndarray:
    """The crop features of a `--mirror` cache, checked to be of the backbone that made `teacher` and of the same
    images in the same order as its `index`."""
    mirror_index, features = teacher_features(mirror, "crop")
    if BackboneInfo.read(mirror) != BackboneInfo.read(teacher):
        raise SystemExit(f"--mirror {mirror} was made by another backbone than {teacher} (see their backbone.json)")
    if not mirror_index["path"].equals(index["path"]):
        raise SystemExit(f"--mirror {mirror} holds other images than {teacher}")
    return features
