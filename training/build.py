"""Build an artifact bundle from trained checkpoints: embed every image, morphs, typicality, UMAP map, atlas,
test-split metrics, one directory.

  python -m training.build --modernity runs/modernity/best.pt --bodytype runs/bodytype/best.pt \\
      --gate runs/gate/best.pt --out artifacts/default

With --engine ray the per-image work runs on Ray Data (a local Ray, or the cluster at --address; see
training/ray_engine.py): the same steps, the same bundle. `--remeasure --out BUNDLE` only measures a built bundle's
test metrics again (per data set, overall, and on the restyled test sets) into its manifest. `--gate-from BUNDLE`
takes the gate of a built bundle (network, thresholds, valid views, box head) instead of a `--gate` checkpoint, and
`--modernity-from BUNDLE` (`--bodytype-from BUNDLE`) its modernity (body-type) network instead of a checkpoint.
`--sharpen PERCENT` sharpens the car crops the scores must enlarge (small cars: softness reads as age), at build or
on a built bundle with `--remeasure`. `--gate-from BUNDLE --refit-views TEACHER` refits that gate's view head on
`--table`'s view labels (e.g. hand labels joined by `training.prepare --views`) and chooses its thresholds again.
The test metrics read the view labels `--table` holds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from core.artifacts import (
    MANIFEST_FILE,
    MAP_SAMPLE,
    VIEW_INPUTS,
    Bundle,
    Manifest,
    Thresholds,
    add_box_head,
    build_bundle,
    crop_to_box,
    load_box_head,
    load_bundle,
    load_networks,
    predict_pooled,
    read_manifest,
    save_manifest,
    standard_networks,
)
from core.atlas import AtlasSpec
from core.bundling import map_sample_rows
from core.config import SEED_BODY_TYPES, SHARED_DATA_DIR, SHARED_YEAR_BINS
from core.errors import BundleError
from core.gate import DEFAULT_CAM_THRESHOLD, BoxHead, GateEstimates, cam_boxes, gate_estimates_from_maps
from core.imaging import load_image
from core.models import LITES, RESNET18, CarNet, ImageTransform, Sharpening, lite_weights_source, timm_name
from core.projection import MapPlacer, pca_coordinates
from core.viewpoint import VIEW_CLASSES, accepted_views
from training.evaluate import clean, evaluate_folder
from training.metrics import box_iou
from training.teacher import BackboneInfo, saved_carnet
from training.view_head import cross_validated_view

SERVING_HEADS = {"gate": ("car", "box", "frontal", "view"), "year_bin": ("year_bin", "year"),
                 "body_type": ("body_type",)}  # fmt: skip


def serving_network(checkpoint_path: Path, head: str) -> tuple[CarNet, dict[str, Any]]:
    """The checkpoint's network with only the heads the app serves for `head` (auxiliary heads dropped; the
    modernity network keeps its per-year head), and its record."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    args = checkpoint["args"]
    heads = {k: v for k, v in checkpoint["heads"].items() if k in SERVING_HEADS[head]}
    model = saved_carnet(heads, args)
    kept = ("backbone.", "neck.", *(f"heads.{name}." for name in heads))
    model.load_state_dict({k: v for k, v in checkpoint["model"].items() if k.startswith(kept)})
    record = {"checkpoint": str(checkpoint_path), "epoch": checkpoint["epoch"], "history": checkpoint["history"],
              "args": checkpoint["args"]}  # fmt: skip
    if "view_head" in checkpoint:
        record["view_head"] = {k: v for k, v in checkpoint["view_head"].items() if k not in ("paths", "probabilities")}
    record |= {key: checkpoint[key] for key in ("year_head", "members", "validation") if key in checkpoint}
    return model.eval(), record


@dataclass(frozen=True)
class ViewEstimates:
    """View probabilities of view-labelled rows (the table's rows, in the same order)."""

    rows: pd.DataFrame
    probabilities: np.ndarray  # N x len(VIEW_CLASSES)


def out_of_fold_views(gate_checkpoint: Path, table: pd.DataFrame) -> ViewEstimates | None:
    """The out-of-fold view probabilities `training.view_head` kept with the gate (None for other gates)."""
    checkpoint = torch.load(gate_checkpoint, map_location="cpu", weights_only=True)
    if "view_head" not in checkpoint:
        return None
    head = checkpoint["view_head"]
    missing = set(head["paths"]) - set(table["path"])
    if missing:
        raise SystemExit(f"--gate: its view head was fitted on {len(missing)} images this --table lacks (e.g. "
                         f"{sorted(missing)[0]}); build with the table it was trained on")  # fmt: skip
    rows = table.set_index("path").loc[head["paths"]].reset_index()
    return ViewEstimates(rows, head["probabilities"].numpy())


def share_frozen_backbone(networks: dict[str, CarNet], records: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """Give the networks trained on the body-type network's frozen backbone (training.heads) that one backbone
    module: the bundle then stores it once and runs it once per image. Returns their keys (none when fewer than two
    share it). Heads trained on another backbone (e.g. the gate on the ImageNet teacher, the scores on a fine-tuned
    one) keep their own, stored with their network."""
    reference = networks["bodytype"].backbone.state_dict()

    def on_reference(key: str) -> bool:
        state = networks[key].backbone.state_dict()
        return (
            bool(records[key]["args"].get("frozen_backbone"))
            and state.keys() == reference.keys()
            and all(torch.equal(v, reference[k]) for k, v in state.items())
        )

    shared = tuple(key for key in networks if on_reference(key))
    if len(shared) < 2:
        return ()
    for key in shared:
        networks[key].backbone = networks["bodytype"].backbone
    return shared


def collection_labels(table: pd.DataFrame) -> pd.DataFrame:
    """The car photos with a model year (Stanford, DVM-CAR) as bundle label columns with car boxes in pixels."""
    cars = table[(table["car"] == 1) & (table["year"] > 0)].reset_index(drop=True)
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
    """Thresholds chosen on the validation split (the view thresholds on the rows `view_thresholds_on` names), and
    what they reached there (per view-labelled data set)."""

    car: float
    car_val_accuracy: float
    frontal: float
    frontal_val: dict[str, dict[str, float]]
    view: float
    view_val: dict[str, dict[str, float]]
    target_precision: float
    cam: float
    cam_val_iou: float
    view_thresholds_on: str = "validation"


@dataclass(frozen=True)
class ValidationGate:
    """The gate's estimates on the validation frames, and the maps of the EPFL frames (for the box threshold)."""

    rows: pd.DataFrame
    estimates: GateEstimates
    epfl_maps: torch.Tensor


def validation_gate(
    table: pd.DataFrame,
    data_root: Path,
    networks: dict[str, CarNet],
    transform: ImageTransform,
    cache: FeatureCache | None,
) -> ValidationGate:
    """The gate on every validation row's whole frame (from the feature cache where there is one), with a progress
    bar; the EPFL frames always through the network, for their activation maps."""
    rows = table[table["split"] == "val"].reset_index(drop=True)
    gate, epfl = networks["gate"], (rows["dataset"] == "epfl_multiview").to_numpy()
    parts, maps = [], []
    for start in tqdm(range(0, len(rows), 64), desc="gate on val", unit="batch"):
        batch = rows.iloc[start : start + 64]
        in_epfl = epfl[start : start + 64]
        if cache is None or in_epfl.any():
            with torch.inference_mode():
                batch_maps = gate.feature_maps(transform([load_image(data_root / p) for p in batch["path"]]))
            maps.append(batch_maps[in_epfl])
        if cache is None:
            parts.append(gate_estimates_from_maps(gate, batch_maps))
        else:
            outputs = predict_pooled(networks, cache.frames(batch))
            parts.append(GateEstimates(outputs.car_prob, outputs.frontal_prob, outputs.view_probs, None))
    estimates = GateEstimates(
        *(None if getattr(parts[0], f) is None else np.concatenate([getattr(p, f) for p in parts])
          for f in ("car", "frontal", "views", "boxes"))
    )  # fmt: skip
    return ValidationGate(rows, estimates, torch.cat(maps))


@dataclass(frozen=True)
class FeatureCache:
    """Pooled features of the shared frozen backbone from `training.teacher` (crop and frame views, by path)."""

    crop: dict[str, np.ndarray]
    frame: dict[str, np.ndarray]

    @classmethod
    def read(cls, folder: Path) -> FeatureCache:
        def view(name: str) -> dict[str, np.ndarray]:
            index = pd.read_parquet(folder / f"{name}_index.parquet")
            features = np.load(folder / f"{name}.npy").astype(np.float32)
            return dict(zip(index["path"], features, strict=True))

        return cls(view("crop"), view("frame"))

    def crops(self, rows: pd.DataFrame) -> np.ndarray:
        return np.stack([self.crop[p] for p in rows["path"]])

    def frames(self, rows: pd.DataFrame) -> np.ndarray:
        """Whole frames: the frame view where it was computed (EPFL, negatives), else the crop (the whole image)."""
        return np.stack([self.frame.get(p, self.crop.get(p)) for p in rows["path"]])


def check_cache(cache: FeatureCache, networks: dict[str, CarNet], labels: pd.DataFrame, data_root: Path,
                transform: ImageTransform, sample: int = 32, seed: int = 0) -> float:  # fmt: skip
    """Largest absolute difference between cached features and the bundle's own backbone on sampled rows (what the
    app computes); refuses a cache that another backbone or transform made."""
    rows = labels.sample(min(sample, len(labels)), random_state=seed)
    images = [crop_to_box(load_image(data_root / r["path"]), [r[f"bbox_{c}"] for c in ("x1", "y1", "x2", "y2")])
              for _, r in rows.iterrows()]  # fmt: skip
    with torch.inference_mode():
        maps = networks["bodytype"].feature_maps(transform(images))
        fresh = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(maps, 1), 1).numpy()
    difference = float(np.abs(fresh - cache.crops(rows)).max())
    if difference > 0.05:
        raise SystemExit(f"--features: the cache differs from the bundle's backbone by up to {difference:.3f}")
    return difference


def per_source_threshold(
    rows: pd.DataFrame, positive: np.ndarray, known: np.ndarray, prob: np.ndarray, precision: float
) -> tuple[float, dict[str, dict[str, float]]]:
    """The threshold whose worst recall over the view-labelled data sets is highest while every data set keeps
    precision >= `precision` (or, when none does, the highest worst precision); with what each data set reached."""
    sources = sorted(rows.loc[known, "dataset"].unique())
    candidates = np.unique(np.round(prob[known], 4))

    def reached(t: float) -> dict[str, dict[str, float]]:
        out = {}
        for source in sources:
            rows_s = known & (rows["dataset"] == source).to_numpy()
            pred, true = prob[rows_s] >= t, positive[rows_s]
            hits = float((pred & true).sum())
            out[source] = {"precision": hits / max(1, pred.sum()), "recall": hits / max(1, true.sum()),
                           "n": int(rows_s.sum())}  # fmt: skip
        return out

    def rank(t: float) -> tuple[bool, float]:
        r = reached(t)
        feasible = all(v["precision"] >= precision for v in r.values())
        worst = min(v["recall"] if feasible else v["precision"] for v in r.values())
        return feasible, worst

    best = max(candidates, key=rank)
    return float(best), reached(float(best))


def balanced_threshold(
    rows: pd.DataFrame, positive: np.ndarray, known: np.ndarray, prob: np.ndarray
) -> tuple[float, dict[str, dict[str, float]]]:
    """The threshold with the best mean over view-labelled data sets of their balanced accuracy (the recall of
    valid views, averaged with the rejection of invalid ones where a data set has both): a refused valid view
    costs the user as much as a scored invalid one."""
    sources = sorted(rows.loc[known, "dataset"].unique())
    masks = {source: known & (rows["dataset"] == source).to_numpy() for source in sources}

    def reached(t: float) -> dict[str, dict[str, float]]:
        out = {}
        for source, rows_s in masks.items():
            pred, true = prob[rows_s] >= t, positive[rows_s]
            rates = [pred[true].mean()] + ([(~pred[~true]).mean()] if (~true).any() else [])
            rejection = float(rates[1]) if len(rates) > 1 else float("nan")
            out[source] = {"valid_recall": float(rates[0]), "invalid_rejection": rejection,
                           "balanced_accuracy": float(np.mean(rates)), "n": int(rows_s.sum())}  # fmt: skip
        return out

    candidates = np.round(np.linspace(0.05, 0.95, 91), 2)
    best = max(candidates, key=lambda t: np.mean([v["balanced_accuracy"] for v in reached(t).values()]))
    return float(best), reached(float(best))


def cam_threshold(val: ValidationGate, gate: CarNet) -> tuple[float, float]:
    """The activation-map threshold with the best mean IoU against the validation EPFL boxes (view-head gates)."""
    if "view" not in gate.head_sizes:
        return DEFAULT_CAM_THRESHOLD, float("nan")
    epfl = val.rows[val.rows["dataset"] == "epfl_multiview"]
    truth = epfl[["box_x1", "box_y1", "box_x2", "box_y2"]].to_numpy(np.float32)
    weight = gate.heads["car"].weight[0].detach()
    scores = {t: float(box_iou(cam_boxes(val.epfl_maps, weight, t), truth).mean()) for t in np.arange(0.1, 0.75, 0.05)}
    best = max(scores, key=scores.__getitem__)
    return float(round(best, 2)), scores[best]


def gate_thresholds(
    val: ValidationGate, gate: CarNet, valid_views: str, precision: float, views_oof: ViewEstimates | None = None
) -> GateThresholds:
    """Car threshold with the best balanced accuracy on validation cars vs non-cars; the frontal threshold by
    `per_source_threshold` at precision >= `precision` and the valid-view threshold by `balanced_threshold`, on
    the view-labelled rows (EPFL angles, DVM-CAR's view lists): the out-of-fold estimates of train + val where the
    gate's view head kept them (`training.view_head`), else the validation frames; the box threshold by
    `cam_threshold`."""
    rows, estimates = val.rows, val.estimates
    is_car = rows["car"].to_numpy(int) == 1
    candidates = np.linspace(0.05, 0.95, 91)
    car_prob = estimates.car
    balanced = [((car_prob[is_car] >= t).mean() + (car_prob[~is_car] < t).mean()) / 2 for t in candidates]
    car = float(candidates[int(np.argmax(balanced))])
    if views_oof is not None:
        rows, view_probs = views_oof.rows, views_oof.probabilities
        frontal_prob = view_probs[:, VIEW_CLASSES.index("front")]
    else:
        view_probs, frontal_prob = estimates.views, estimates.frontal
    view = rows["view"].fillna("").to_numpy()
    known = view != ""
    frontal, frontal_val = per_source_threshold(rows, view == "front", known, frontal_prob, precision)
    views = accepted_views(valid_views)
    if view_probs is not None and views not in (VIEW_CLASSES, ("front",)):
        valid_prob = view_probs[:, [VIEW_CLASSES.index(v) for v in views]].sum(1)
        view_threshold, view_val = balanced_threshold(rows, np.isin(view, views), known, valid_prob)
    else:
        view_threshold, view_val = 0.5, {}
    cam, iou = cam_threshold(val, gate)
    return GateThresholds(
        car,
        float(max(balanced)),
        frontal,
        frontal_val,
        view_threshold,
        view_val,
        precision,
        cam,
        iou,
        "out-of-fold (train + val)" if views_oof is not None else "validation",
    )


DATASET_NOTES = {
    "stanford_cars": "Stanford Cars (Krause et al. 2013), training split, cropped to the car",
    "epfl_multiview": "EPFL Multi-View Car (Ozuysal et al. 2009), 18 cars on a turntable",
    "negatives": "ImageNet samples, BSDS500, Sun-Hays80, Urban100: photographs without cars",
    "dvm_porsche": "DVM-CAR (Huang et al. 2021), 10,000 Porsche advert images 2000-2019, backgrounds removed",
}


@dataclass(frozen=True)
class KeptGate:
    """The gate of a built bundle as it was built: network, training record, thresholds, valid views, box head."""

    network: CarNet
    record: dict[str, Any]
    thresholds: GateThresholds
    valid_views: str
    box_head: BoxHead | None
    box_report: dict[str, Any] | None
    view_from: str = "frame"


def network_of_bundle(directory: Path, manifest: Manifest, key: str) -> tuple[CarNet, dict[str, Any]]:
    """A built bundle's network `key` and its training record (which then names the bundle)."""
    if key not in manifest.training:
        raise BundleError(f"{directory} was not built from trained networks (its manifest has no {key} record)")
    return load_networks(directory, manifest)[key], manifest.training[key] | {"bundle": str(directory)}


def gate_of_bundle(directory: Path) -> KeptGate:
    """`training.build --gate-from`: a bundle's gate, its thresholds (chosen on validation when it was built) and
    its box head, for a bundle with new score networks that need no gate training."""
    manifest = read_manifest(directory)
    if not {"gate", "thresholds"} <= set(manifest.training):
        raise BundleError(f"{directory} was not built from a trained gate (its manifest has no gate thresholds)")
    box_head = load_box_head(directory, manifest.box_head) if manifest.box_head else None
    return KeptGate(
        *network_of_bundle(directory, manifest, "gate"),
        GateThresholds(**manifest.training["thresholds"]),
        manifest.valid_views,
        box_head,
        manifest.training.get("box_head"),
        manifest.view_from,
    )


def refit_kept_gate(
    gate: KeptGate, table: pd.DataFrame, teacher: Path, seed: int, view_from: str, crop_size: int
) -> ViewEstimates:
    """`--gate-from BUNDLE --refit-views TEACHER`: the kept gate's view head replaced (in place) by
    `training.view_head`'s cross-validated regression on the table's view labels (on the whole frames, or with
    `view_from` "crop" on the cars' crops at the scores' `crop_size`), its record saying so; the out-of-fold
    estimates, for the thresholds. ValueError where the cache is not of the gate's frozen backbone at that size, the
    gate has no view head or the labels are too few."""
    info, trained = BackboneInfo.read(teacher), gate.record["args"]
    size = crop_size if view_from == "crop" else trained["size"]
    if not trained.get("frozen_backbone"):
        raise ValueError("the gate's backbone was trained with it: no training.teacher cache holds its features")
    if info.checkpoint or (info.arch, info.size, info.origin) != (trained.get("arch"), size, trained["origin"]):
        raise ValueError(f"{teacher} holds {info.origin or info.checkpoint} at {info.size} px; the gate's view "
                         f"head reads {trained['origin']} at {size} px")  # fmt: skip
    if "view" not in gate.network.head_sizes:
        raise ValueError("the gate has no view head (a frontal-only gate)")
    fitted = cross_validated_view(table, teacher, seed, view_from)
    if fitted is None:
        raise ValueError("train + val of --table hold too few view-labelled cars or views to cross-validate")
    head = gate.network.heads["view"]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(fitted.head.weight))
        head.bias.copy_(torch.from_numpy(fitted.head.bias))
    gate.record["view_head"] = fitted.record | {"refitted": "training.build --refit-views, on --table's view labels"}
    return ViewEstimates(table.set_index("path").loc[fitted.paths].reset_index(), fitted.probabilities)


def load_networks_from_checkpoints(
    args: argparse.Namespace, kept_gate: KeptGate | None = None
) -> tuple[dict[str, CarNet], dict[str, dict], tuple[str, ...]]:
    networks, records = {}, {}
    for key, path, head in (
        ("modernity", args.modernity, "year_bin"),
        ("bodytype", args.bodytype, "body_type"),
        ("gate", args.gate, "gate"),
    ):
        built = getattr(args, f"{key}_from", None)
        if key == "gate" and kept_gate:
            networks[key], records[key] = kept_gate.network, kept_gate.record
        elif key != "gate" and built:
            try:
                networks[key], records[key] = network_of_bundle(built, read_manifest(built), key)
            except BundleError as error:
                raise BundleError(f"--{key}-from: {error}") from error
        else:
            networks[key], records[key] = serving_network(path, head)
    return networks, records, share_frozen_backbone(networks, records)


def run_gate_beside(networks: dict[str, CarNet], records: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Networks whose heads were trained on a joined cache (`training.teacher --join`) run the gate's backbone
    beside their own, which must be the backbone of the cache's second half. Returns {network: "gate"} for them
    (the manifest's `beside`); ValueError where the gate is another backbone."""
    gate = records["gate"]["args"]
    beside = {}
    for key in ("modernity", "bodytype"):
        args = records[key]["args"]
        if not args.get("beside_arch"):
            continue
        if (args["beside_arch"], args["beside_origin"]) != (gate.get("arch", RESNET18), gate.get("origin")):
            raise ValueError(
                f"the {key} network's heads read {args['beside_origin']} beside its backbone, but the gate is "
                f"{gate.get('origin')}: a bundle runs the gate's backbone beside it"
            )
        networks[key].attach_beside(networks["gate"])
        beside[key] = "gate"
    return beside


def serving_transforms(records: dict[str, dict[str, Any]]) -> tuple[ImageTransform, ImageTransform]:
    """The scores' transform and the gate's, from the sizes and normalisation the networks were trained with. The
    two scores see the same crop, so they share one size; the gate may have its own (e.g. the frozen teacher at a
    smaller size than the fine-tuned scores). ValueError where the checkpoints disagree."""
    transforms = {
        key: ImageTransform(int(record["args"]["size"]), *(tuple(record["args"][k]) for k in ("mean", "std")
                                                          if k in record["args"]))
        for key, record in records.items()
    }  # fmt: skip
    scores, gate = transforms["modernity"], transforms["gate"]
    if transforms["bodytype"] != scores:
        raise ValueError(
            f"the modernity and body-type networks were trained at {scores.size} and {transforms['bodytype'].size} "
            "px (or with other normalisations): a bundle runs them on one crop at one size"
        )
    if (gate.mean, gate.std) != (scores.mean, scores.std):
        raise ValueError("the gate was trained with another normalisation than the scores: a bundle has one")
    return scores, gate


def overall_metrics(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """n-weighted means over the data sets of modernity accuracy and MAE, body-type accuracy and car accuracy."""

    def weighted(task: str, key: str) -> dict[str, float]:
        parts = [(m[task][key], m[task]["n"]) for m in metrics.values() if task in m and m[task].get("n")]
        total = sum(n for _, n in parts)
        return {key: sum(v * n for v, n in parts) / total, "n": total} if total else {}

    return {"modernity": weighted("modernity", "accuracy") | weighted("modernity", "mae_years"),
            "body_type": weighted("body_type", "accuracy"), "car": weighted("car", "accuracy"),
            "note": "n-weighted means of the per-data-set test metrics"}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="data root (image root of the bundle)")
    p.add_argument("--modernity", type=Path, help="checkpoint with a year_bin head")
    p.add_argument("--modernity-from", type=Path, help="instead of --modernity: the modernity network of this "
                   "built bundle (e.g. new body-type heads beside the same modernity)")  # fmt: skip
    p.add_argument("--bodytype", type=Path, help="checkpoint with a body_type head")
    p.add_argument("--bodytype-from", type=Path, help="instead of --bodytype: the body-type network of this built "
                   "bundle (e.g. a new gate beside the same scores)")  # fmt: skip
    p.add_argument("--gate", type=Path, help="checkpoint of the gate (car, box, frontal / car, view)")
    p.add_argument("--gate-from", type=Path, help="instead of --gate: the gate of this built bundle, with its "
                   "thresholds, valid views and box head (new score networks, the same gate)")  # fmt: skip
    p.add_argument("--refit-views", type=Path, metavar="TEACHER", help="with --gate-from: that gate's view head "
                   "refitted on --table's view labels (training.view_head's cross-validation, on this "
                   "training.teacher cache of the gate's backbone with its crop and frame views), its thresholds "
                   "chosen again")  # fmt: skip
    p.add_argument("--view-from", choices=VIEW_INPUTS, help="with --refit-views: the view head reads the whole "
                   "frame at the gate's size (frame, default) or the car's crop at the scores' size, from the pass "
                   "the body-type network makes of it anyway (crop: TEACHER holds that size's crop view)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--remeasure", action="store_true", help="only measure the test metrics of the bundle at --out "
                   "again (e.g. after training.evaluate changed) and write them into its manifest")  # fmt: skip
    p.add_argument("--box-head", type=Path, help="a training.box_head checkpoint: the gate's box from it instead of "
                   "the car head's activation map (with --remeasure: added to the bundle at --out first)")  # fmt: skip
    p.add_argument("--sharpen", type=float, metavar="PERCENT", help="an unsharp mask on car crops the scores "
                   "enlarge (more than --sharpen-onset times): PERCENT (Pillow's) per 1x of enlargement beyond it, in "
                   "the app as in the metrics (with --remeasure: set on the bundle at --out first; 0: "
                   "none)")  # fmt: skip
    p.add_argument("--sharpen-onset", type=float, default=1.0, help="the enlargement --sharpen starts from")
    p.add_argument("--name", default="carmorph-default")
    p.add_argument(
        "--valid-views",
        default="frontal",
        help="views the scores are valid for: all, frontal, or a comma-separated list of front, three_quarter, "
        "side, rear (needs a gate with a view head)",
    )
    p.add_argument("--frontal-precision", type=float, default=0.95, help="view thresholds: precision on val")
    p.add_argument("--morph-min-members", type=int, default=10)
    p.add_argument("--map", choices=["umap", "pca"], default="umap", help="map method (pca: quick builds, tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--map-sample", type=int, default=MAP_SAMPLE, help="rows the map is fitted on (others: kNN)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: the per-image work on Ray Data")
    p.add_argument("--address", help="--engine ray: the Ray cluster (e.g. auto, or host:6379); default a local Ray")
    p.add_argument("--ray-cpus", type=int, help="--engine ray without --address: CPUs of the local Ray (default all)")
    p.add_argument("--object-store-mb", type=int, default=512, help="--engine ray without --address: object store")
    p.add_argument(
        "--shards",
        type=Path,
        help="--engine ray: folder of the Parquet shards (default <out>.shards; on a cluster, "
        "storage every node reads, like --data)",
    )
    p.add_argument(
        "--features",
        type=Path,
        help="training.teacher cache of the shared frozen backbone: skips its pass over the collection (checked on a "
        "sample against the backbone itself)",
    )
    p.add_argument(
        "--flip-average",
        action="store_true",
        help="the scores (modernity, body type, the embedding) are the mean over the crop and its mirror image, in "
        "the app as in the bundle's table and metrics (twice the scores' compute)",
    )
    args = p.parse_args(argv)
    if (args.sharpen or 0) < 0 or args.sharpen_onset < 1:
        p.error("--sharpen takes a strength of 0 or more, --sharpen-onset an enlargement of 1 or more")
    if args.remeasure:
        if args.box_head:
            attach_box_head(args.out, args.box_head)
        if args.sharpen is not None:
            set_sharpening(args.out, sharpening(args))
        remeasure(args.out, pd.read_parquet(args.table), args.data)
        return
    if not ((args.modernity or args.modernity_from) and (args.bodytype or args.bodytype_from)
            and (args.gate or args.gate_from)):  # fmt: skip
        p.error("--modernity (or --modernity-from), --bodytype (or --bodytype-from) and --gate (or --gate-from) are "
                "required (except with --remeasure)")  # fmt: skip
    if args.gate and args.gate_from:
        p.error("--gate and --gate-from: one gate only")
    if args.modernity and args.modernity_from:
        p.error("--modernity and --modernity-from: one modernity network only")
    if args.bodytype and args.bodytype_from:
        p.error("--bodytype and --bodytype-from: one body-type network only")
    try:
        accepted_views(args.valid_views)
    except ValueError as error:
        p.error(str(error))
    try:
        kept_gate = gate_of_bundle(args.gate_from) if args.gate_from else None
    except BundleError as error:
        p.error(f"--gate-from: {error}")
    if args.refit_views and not kept_gate:
        p.error("--refit-views refits the view head of the --gate-from bundle's gate")
    if args.view_from and not args.refit_views:
        p.error("--view-from says what a refitted view head reads: it needs --refit-views")
    if kept_gate and not args.refit_views and args.valid_views != kept_gate.valid_views:
        p.error(f"--valid-views {args.valid_views}: the gate of {args.gate_from} has its view threshold for "
                f"{kept_gate.valid_views}")  # fmt: skip
    if args.features and args.flip_average:
        p.error("--features holds the crops alone: a --flip-average bundle needs the backbone pass over the collection")

    table = pd.read_parquet(args.table)
    try:
        networks, records, shared = load_networks_from_checkpoints(args, kept_gate)
    except BundleError as error:
        p.error(str(error))
    try:
        transform, gate_transform = serving_transforms(records)
        beside = run_gate_beside(networks, records)
    except ValueError as error:
        p.error(str(error))
    view_from = (args.view_from or "frame") if args.refit_views or not kept_gate else kept_gate.view_from
    try:
        views_oof = (
            refit_kept_gate(kept_gate, table, args.refit_views, args.seed, view_from, transform.size)
            if args.refit_views
            else None
        )
    except ValueError as error:
        p.error(f"--refit-views: {error}")
    size, arch = transform.size, records["modernity"]["args"].get("arch", RESNET18)
    one_pass = set(shared) == set(networks) and gate_transform == transform and not beside
    cache = FeatureCache.read(args.features) if args.features and one_pass else None
    if kept_gate and not args.refit_views:
        thresholds = kept_gate.thresholds
    else:
        val = validation_gate(table, args.data, networks, gate_transform, cache)
        views_oof = views_oof or out_of_fold_views(args.gate, table)
        thresholds = gate_thresholds(val, networks["gate"], args.valid_views, args.frontal_precision, views_oof)
    inits = {key: record["args"].get("origin", "scratch") for key, record in records.items()}
    labels = collection_labels(table)
    cache_difference = check_cache(cache, networks, labels, args.data, transform) if cache else None
    splits = {  # the bundle's split of the datasets outside its collection, for `evaluate --split`
        dataset: dict(zip(rows["path"], rows["split"], strict=True))
        for dataset, rows in table.groupby("dataset")
        if dataset not in set(labels["dataset"])
    }
    counts = table.groupby(["dataset", "split"]).size().unstack(fill_value=0)
    necks = {key: int(record["args"].get("neck", 0)) for key, record in records.items()}
    provenance = {
        "data_root": str(args.data),
        "datasets": {name: note for name, note in DATASET_NOTES.items() if name in counts.index},
        "counts": {d: {s: int(v) for s, v in row.items()} for d, row in counts.iterrows()},
        "split": "grouped 70/20/10 by car model class (Stanford: make + model + year; DVM-CAR: Genmodel + year), "
        f"sequence (EPFL), image (negatives); seed {args.seed}",
        "splits": splits,
        "initialisation": inits,
    }
    if arch in LITES:
        provenance["pretrained_weights"] = lite_weights_source(arch).as_dict() | {"architecture": timm_name(arch)}
    manifest = Manifest(
        name=args.name,
        input_size=size,
        gate_input_size=gate_transform.size if gate_transform.size != size else None,
        flip_average=args.flip_average,
        sharpening=sharpening(args),
        year_bins=SHARED_YEAR_BINS,
        body_types=SEED_BODY_TYPES,
        networks=standard_networks(
            len(SHARED_YEAR_BINS),
            len(SEED_BODY_TYPES),
            inits,
            arch,
            necks,
            shared,
            networks["modernity"].head_sizes.get("year", 0),
            beside,
        ),
        thresholds=Thresholds(thresholds.car, thresholds.frontal, thresholds.view, thresholds.cam),
        valid_views=args.valid_views,
        view_from=view_from,
        segmenter="gate",
        morph_min_members=args.morph_min_members,
        atlas=AtlasSpec(tile=64),
        mean=transform.mean,
        std=transform.std,
        provenance=provenance,
        training={
            key: {k: v for k, v in record.items() if k != "args"} | {"args": record["args"]}
            for key, record in records.items()
        }
        | {
            "thresholds": asdict(thresholds),
            "feature_cache": {"path": str(args.features), "max_abs_difference": cache_difference},
        },
    )
    mapper = umap_coordinates(args.seed) if args.map == "umap" else pca_coordinates
    options = {"map_coordinates": mapper, "pooled": cache.crops(labels) if cache else None,
               "map_sample": args.map_sample, "seed": args.seed}  # fmt: skip
    if args.engine == "ray":
        from training.ray_engine import build_bundle_on_ray, ray_session

        shards = args.shards or args.out.with_name(args.out.name + ".shards")
        with ray_session(args.address, args.ray_cpus, args.object_store_mb):
            bundle = build_bundle_on_ray(args.out, labels, args.data, networks, manifest, work_dir=shards, **options)
    else:
        with tqdm(total=len(labels), desc="embed collection", unit="img") as bar:
            progress = lambda done, total: bar.update(done - bar.n)  # noqa: E731
            bundle = build_bundle(args.out, labels, args.data, networks, manifest, progress=progress, **options)
    if args.box_head:
        bundle = attach_box_head(args.out, args.box_head)
    elif kept_gate and kept_gate.box_head:
        bundle = bundle_with_box_head(args.out, kept_gate.box_head, kept_gate.box_report)
    metrics = test_metrics(bundle, table, args.data)
    if args.map == "umap":
        rows = map_sample_rows(len(bundle.images), args.map_sample, args.seed)  # a UMAP fit on at most the sample
        split = bundle.images["split"].to_numpy()[rows]
        metrics["map_placement"] = placement_error(np.asarray(bundle.embeddings[rows]), split, args.seed)
    write_metrics(args.out, metrics)


def test_metrics(bundle: Bundle, table: pd.DataFrame, data_root: Path) -> dict[str, Any]:
    """`training.evaluate` on the test split of every data set folder, their n-weighted overall, the dated folders'
    scores on the gate's crops as the app takes them (`<name>_gate_box`), and how the answers hold when the cars
    leave their photo style: a DVM-CAR folder's cars in front of the test photos without cars
    (`<name>_before_photos`), a folder of boxed, dated photos (Stanford's) with every car cut out onto white
    (`<name>_on_white`)."""
    names = [name for name in table["dataset"].unique() if (data_root / name).is_dir()]
    views = {name: table_views(table, name) for name in names}
    metrics: dict[str, Any] = {
        name: evaluate_folder(bundle, data_root / name, "test", views=views[name]) for name in names
    }
    metrics["overall"] = overall_metrics(metrics)
    negatives = [name for name in names if (table.loc[table["dataset"] == name, "car"] == 0).all()]
    for name in names:
        rows = table[table["dataset"] == name]
        if (rows["year"] > 0).any():
            metrics[f"{name}_gate_box"] = evaluate_folder(
                bundle, data_root / name, "test", gate_box=True, views=views[name]
            )
        if negatives and rows["group"].str.startswith("dvm:").all():
            metrics[f"{name}_before_photos"] = evaluate_folder(
                bundle, data_root / name, "test", data_root / negatives[0], views=views[name]
            )
        elif rows["box_x1"].notna().all() and (rows["year"] > 0).all():
            metrics[f"{name}_on_white"] = evaluate_folder(
                bundle, data_root / name, "test", whiteout=True, views=views[name]
            )
    return metrics


def table_views(table: pd.DataFrame, name: str) -> dict[str, str]:
    """The view labels the table holds for data set `name` (its `views.csv`, `training.prepare --views`, EPFL's
    angles): view per file relative to the data set's folder."""
    rows = table[(table["dataset"] == name) & (table["view"] != "")]
    return dict(zip(rows["path"].str.removeprefix(f"{name}/"), rows["view"], strict=True))


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    manifest_path = out / MANIFEST_FILE
    data = json.loads(manifest_path.read_text())
    data["metrics"] = clean(metrics)
    manifest_path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(clean(metrics), indent=1)[:6000])


def attach_box_head(out: Path, checkpoint: Path) -> Bundle:
    """The bundle at `out` with the box head of `checkpoint` (training.box_head), which must have been trained on the
    maps of the gate's own frozen backbone."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    manifest = read_manifest(out)
    gate, trained_on = manifest.training.get("gate", {}).get("args", {}), saved["report"]["backbone"]
    if not gate.get("frozen_backbone") or any(gate.get(key) != trained_on[key] for key in ("arch", "size", "origin")):
        raise SystemExit(f"--box-head {checkpoint} was trained on the maps of {trained_on['origin']} at "
                         f"{trained_on['size']} px; the gate of {out} runs another backbone")  # fmt: skip
    head = BoxHead(saved["width"], saved["channels"], saved["grid"])
    head.load_state_dict(saved["model"])
    return bundle_with_box_head(out, head, saved["report"] | {"checkpoint": str(checkpoint)})


def bundle_with_box_head(out: Path, head: BoxHead, report: dict[str, Any] | None) -> Bundle:
    """The bundle at `out` with `head` as its box head, `report` recorded under the manifest's training."""
    manifest = read_manifest(out)
    add_box_head(out, replace(manifest, training=manifest.training | {"box_head": report}), head)
    return load_bundle(out)


def sharpening(args: argparse.Namespace) -> Sharpening | None:
    """The crops' unsharp mask that --sharpen and --sharpen-onset ask for (None without one)."""
    return Sharpening(args.sharpen, args.sharpen_onset) if args.sharpen else None


def set_sharpening(out: Path, value: Sharpening | None) -> None:
    """The bundle at `out` with its crops sharpened so (or never, for None); its metrics are then stale."""
    save_manifest(out, replace(read_manifest(out), sharpening=value))


def remeasure(out: Path, table: pd.DataFrame, data_root: Path) -> None:
    """The test metrics of the bundle at `out` measured again (its map placement kept): after the evaluation changed,
    without building the bundle again."""
    bundle = load_bundle(out)
    kept = {key: value for key, value in bundle.manifest.metrics.items() if key == "map_placement"}
    write_metrics(out, test_metrics(bundle, table, data_root) | kept)


if __name__ == "__main__":
    main()
