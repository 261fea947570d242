"""Build an artifact bundle from trained checkpoints: embed every image, morphs, typicality, UMAP map, atlas,
test-split metrics, one directory.

  python -m training.build --modernity runs/modernity/best.pt --bodytype runs/bodytype/best.pt \\
      --gate runs/gate/best.pt --out artifacts/default
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from core.artifacts import (
    MANIFEST_FILE,
    AtlasSpec,
    Manifest,
    Thresholds,
    build_bundle,
    gate_probabilities,
    standard_networks,
)
from core.config import SEED_BODY_TYPES, SHARED_DATA_DIR, SHARED_YEAR_BINS
from core.imaging import load_image
from core.models import CarNet, ImageTransform
from core.projection import MapPlacer, pca_coordinates
from training.evaluate import clean, evaluate_folder
from training.metrics import recall_at_precision


def serving_network(checkpoint_path: Path, head: str) -> tuple[CarNet, dict[str, Any]]:
    """The checkpoint's backbone with only the serving head `head` (auxiliary heads dropped), and its record."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    heads = {"car": 1, "box": 4, "frontal": 1} if head == "gate" else {head: checkpoint["heads"][head]}
    model = CarNet(heads)
    state = {k: v for k, v in checkpoint["model"].items() if k.startswith("backbone.") or k.split(".")[1] in heads}
    model.load_state_dict(state)
    record = {"checkpoint": str(checkpoint_path), "epoch": checkpoint["epoch"], "history": checkpoint["history"],
              "args": checkpoint["args"]}  # fmt: skip
    return model.eval(), record


def collection_labels(table: pd.DataFrame) -> pd.DataFrame:
    """The Stanford rows of the prepared table as bundle label columns with car boxes in pixels."""
    cars = table[table["dataset"] == "stanford_cars"].reset_index(drop=True)
    labels = cars[
        ["id", "path", "dataset", "split", "make", "model", "class_name", "year", "year_bin", "body_type"]
    ].copy()
    for c in ("x1", "y1", "x2", "y2"):
        labels[f"bbox_{c}"] = cars[f"box_{c}"] * cars["width" if c[0] == "x" else "height"]
    return labels


def map_reducer(seed: int) -> Any:
    """The 2-D UMAP of the bundle's map (cosine, 15 neighbours, fixed seed); umap is imported at build time only."""
    import umap

    return umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=seed)


def umap_coordinates(seed: int) -> Any:
    """A function fitting the map's UMAP on embeddings and returning their 2-D coordinates."""
    return lambda embeddings: map_reducer(seed).fit_transform(embeddings)


def placement_error(embeddings: np.ndarray, split: np.ndarray, seed: int) -> dict[str, float]:
    """How far the kNN placement of held-out images lies from umap.transform, on a UMAP fitted without them."""
    train, held = split == "train", split != "train"
    reducer = map_reducer(seed).fit(embeddings[train])
    reference = reducer.transform(embeddings[held])
    placed = MapPlacer(k=10).fit(embeddings[train], reducer.embedding_).transform(embeddings[held])
    distance = np.linalg.norm(placed - reference, axis=1)
    spread = float(np.linalg.norm(reducer.embedding_.std(axis=0)))
    return {"n_held_out": int(held.sum()), "median_distance": float(np.median(distance)),
            "mean_distance": float(distance.mean()), "map_spread": spread,
            "median_distance_over_spread": float(np.median(distance) / spread)}  # fmt: skip


@dataclass(frozen=True)
class GateThresholds:
    """Thresholds chosen on the validation split, and what they reached there."""

    car: float
    car_val_accuracy: float
    frontal: float
    frontal_val_recall: float
    frontal_target_precision: float


def gate_thresholds(table: pd.DataFrame, data_root: Path, gate: CarNet, size: int, precision: float) -> GateThresholds:
    """Car threshold with the best balanced accuracy on validation cars vs non-cars; frontal threshold with the
    best recall at precision >= `precision` on the validation EPFL frames."""
    val = table[table["split"] == "val"].reset_index(drop=True)
    car_prob, frontal_prob = validation_gate_probabilities(val, data_root, gate, size)
    is_car = val["car"].to_numpy(int) == 1
    candidates = np.linspace(0.05, 0.95, 91)
    balanced = [((car_prob[is_car] >= t).mean() + (car_prob[~is_car] < t).mean()) / 2 for t in candidates]
    car = float(candidates[int(np.argmax(balanced))])
    epfl = (val["dataset"] == "epfl_multiview").to_numpy()
    recall, frontal = recall_at_precision(val.loc[epfl, "frontal"].to_numpy(int), frontal_prob[epfl], precision)
    return GateThresholds(car, float(max(balanced)), frontal, recall, precision)


def validation_gate_probabilities(
    rows: pd.DataFrame, data_root: Path, gate: CarNet, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Car and frontal probabilities of the gate on the rows' whole frames, with a progress bar."""
    transform = ImageTransform(size)
    batches = [
        gate_probabilities(gate, [load_image(data_root / p) for p in rows["path"].iloc[start : start + 64]], transform)
        for start in tqdm(range(0, len(rows), 64), desc="gate on val", unit="batch")
    ]
    return np.concatenate([car for car, _ in batches]), np.concatenate([frontal for _, frontal in batches])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="data root (image root of the bundle)")
    p.add_argument("--modernity", type=Path, required=True, help="checkpoint with a year_bin head")
    p.add_argument("--bodytype", type=Path, required=True, help="checkpoint with a body_type head")
    p.add_argument("--gate", type=Path, required=True, help="checkpoint of the gate (car, box, frontal)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="carmorph-default")
    p.add_argument(
        "--valid-views", choices=["frontal", "all"], default="frontal", help="views the scores are valid for"
    )
    p.add_argument("--frontal-precision", type=float, default=0.95, help="frontal threshold: precision on val")
    p.add_argument("--morph-min-members", type=int, default=10)
    p.add_argument("--map", choices=["umap", "pca"], default="umap", help="map method (pca: quick builds, tests)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    table = pd.read_parquet(args.table)
    networks, records = {}, {}
    for key, path, head in (
        ("modernity", args.modernity, "year_bin"),
        ("bodytype", args.bodytype, "body_type"),
        ("gate", args.gate, "gate"),
    ):
        networks[key], records[key] = serving_network(path, head)
    size = int(records["modernity"]["args"]["size"])
    thresholds = gate_thresholds(table, args.data, networks["gate"], size, args.frontal_precision)
    inits = {key: record["args"].get("origin", "scratch") for key, record in records.items()}
    splits = {  # the bundle's split of the datasets outside its collection, for `evaluate --split`
        dataset: dict(zip(rows["path"], rows["split"], strict=True))
        for dataset, rows in table.groupby("dataset")
        if dataset != "stanford_cars"
    }
    counts = table.groupby(["dataset", "split"]).size().unstack(fill_value=0)
    manifest = Manifest(
        name=args.name,
        input_size=size,
        year_bins=SHARED_YEAR_BINS,
        body_types=SEED_BODY_TYPES,
        networks=standard_networks(len(SHARED_YEAR_BINS), len(SEED_BODY_TYPES), inits),
        thresholds=Thresholds(car=thresholds.car, frontal=thresholds.frontal),
        valid_views=args.valid_views,
        segmenter="gate",
        morph_min_members=args.morph_min_members,
        atlas=AtlasSpec(tile=64),
        provenance={
            "data_root": str(args.data),
            "datasets": {
                "stanford_cars": "Stanford Cars (Krause et al. 2013), training split, cropped to the car",
                "epfl_multiview": "EPFL Multi-View Car (Ozuysal et al. 2009), 18 cars on a turntable",
                "negatives": "ImageNet samples, BSDS500, Sun-Hays80, Urban100: photographs without cars",
            },
            "counts": {d: {s: int(v) for s, v in row.items()} for d, row in counts.iterrows()},
            "split": "grouped 70/20/10 by car model class (Stanford), sequence (EPFL), image (negatives); seed "
            + str(args.seed),
            "splits": splits,
            "initialisation": inits,
        },
        training={
            key: {k: v for k, v in record.items() if k != "args"} | {"args": record["args"]}
            for key, record in records.items()
        }
        | {"thresholds": asdict(thresholds)},
    )
    labels = collection_labels(table)
    mapper = umap_coordinates(args.seed) if args.map == "umap" else pca_coordinates
    with tqdm(total=len(labels), desc="embed collection", unit="img") as bar:
        bundle = build_bundle(
            args.out,
            labels,
            args.data,
            networks,
            manifest,
            map_coordinates=mapper,
            progress=lambda done, total: bar.update(done - bar.n),
        )
    metrics: dict[str, Any] = {
        name: evaluate_folder(bundle, args.data / name, "test")
        for name in ("stanford_cars", "epfl_multiview", "negatives")
    }
    if args.map == "umap":
        metrics["map_placement"] = placement_error(bundle.embeddings, bundle.images["split"].to_numpy(), args.seed)
    manifest_path = args.out / MANIFEST_FILE
    data = json.loads(manifest_path.read_text())
    data["metrics"] = clean(metrics)
    manifest_path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(clean({k: v for k, v in metrics.items()}), indent=1)[:4000])


if __name__ == "__main__":
    main()
