"""Evaluate a bundle on a data set folder and print JSON: a folder laid out like ../shared/data/<dataset>/
(labels.csv + images/) or a DVM-CAR folder (images found by DVM's file names at any depth, body types from its
Ad_table.csv where it has one).

Tasks follow the labels the folder has: `modernity` and `body_type` (year and body_type columns), `frontal`
(a frontal column, an EPFL angle, or a `views.csv` beside the labels: frontal = `front`), `car` (every folder:
cars are positives, a `car` column marks negatives). Where views are known, `by_view` has the modernity and
body-type metrics per labelled view (and `by_predicted_view` per view the gate estimates); `by_make` splits
modernity into Porsche and other makes (after 2012 the shared data's cars are all Porsches). With `--split`,
only rows of that split of the bundle's own grouped split are used (folders the bundle was trained on);
metrics on training rows are inflated, and the output says so. `--backdrops NEGATIVES` puts every car whose photo
has a white background (DVM-CAR's adverts) in front of a photo without cars instead (of `--split` where the bundle
knows those photos), and `--whiteout` puts every car with a labelled box (Stanford's photos) on white, cut out by
GrabCut, and `--photo-style` turns every photo greyscale, dark, overexposed, blurred, low-resolution (and back
to its size), small (kept at that size) or heavily JPEG-compressed: how the answers hold when a car leaves its photo
style. The scores are taken on the labelled car box, and where a photo has none on the box the bundle's gate finds,
as the app crops; `--gate-box` takes the gate's box for every photo: the scores as a user meets them.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from tqdm import tqdm

from core.artifacts import Bundle, NetworkOutputs, crop_to_box, load_bundle, predict_images
from core.config import seed_body_type, year_to_bin
from core.errors import CarmorphError
from core.imaging import load_image
from core.pipeline import gate_crops, gate_frames
from core.report import INTERVAL_KEY
from core.scoring import expected_year, softmax, whole_year
from core.viewpoint import VIEW_CLASSES
from training.metrics import car_model_interval, classification_metrics, frontal_metrics
from training.prepare import (
    frontal_from_view,
    is_dvm_folder,
    read_dvm,
    read_view_file,
    read_views,
    view_from_angle,
    view_label,
)
from training.teacher import cut_out_on_white, swap_background

BATCH = 64
MAX_LISTED = 20  # unreadable files named in the report
BOX = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"]  # a labels.csv's car box (pixels)
# Where a folder names each photo's car model, first found first: DVM-CAR's Genmodel + year, Stanford's class, an EPFL
# sequence (one car), else make + model + year.
CAR_MODEL_COLUMNS = (("car_model",), ("class_name",), ("sequence",), ("make", "model", "year"))


def greyscale(image: Image.Image) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def dark(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(0.35)


def overexposed(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(1.8)


def blurred(image: Image.Image) -> Image.Image:
    """Out of focus: a Gaussian blur of 1 % of the longer side (2.6 px on the data's 256 px photos)."""
    return image.filter(ImageFilter.GaussianBlur(0.01 * max(image.size)))


def low_resolution(image: Image.Image, longer_side: int = 96) -> Image.Image:
    """`longer_side` px on the longer side and back to its size (so a labelled box still fits); a photo already as
    small stays as it is."""
    reduced = small(image, longer_side)
    return image if reduced is image else reduced.resize(image.size, Image.Resampling.BILINEAR)


def small(image: Image.Image, longer_side: int = 96) -> Image.Image:
    """`longer_side` px on the longer side, kept at that size (a small photo as it is uploaded; a labelled box is
    scaled with it); a photo already as small stays as it is."""
    scale = longer_side / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def jpeg_artefacts(image: Image.Image) -> Image.Image:
    """Saved as a JPEG of quality 15."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=15)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


PHOTO_STYLES = {f.__name__.replace("_", "-"): f for f in (greyscale, dark, overexposed, blurred, low_resolution,
                                                          small, jpeg_artefacts)}  # fmt: skip
SIZED_STYLES = {"low-resolution": low_resolution, "small": small}  # the styles --low-resolution sizes


def read_folder(folder: Path, views: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The folder's labels with `file` (relative to the folder), `path` (folder name + file), `view` (from `views`
    or a `views.csv` beside the labels, else the labels' own `view` column, else an EPFL angle) and the seed's name
    of each body type (blank for other types)."""
    if is_dvm_folder(folder):
        labels = read_dvm(folder, views=views)
        labels["file"] = labels["path"].str.removeprefix(folder.name + "/")
        return labels.rename(columns={"group": "car_model"}).drop(columns="year_bin")
    labels = pd.read_csv(folder / "labels.csv")
    labels["path"] = folder.name + "/" + labels["file"]
    if "body_type" in labels:  # hand-written labels: any case, Sedan for Saloon, Minivan for MPV
        labels["body_type"] = labels["body_type"].map(seed_body_type)
    if set(BOX) <= set(labels.columns):  # a box that is not numbers is unknown: the gate finds the car
        labels[BOX] = labels[BOX].apply(pd.to_numeric, errors="coerce")
    views = read_views(folder, views)
    given = labels["view"].fillna("").map(view_label) if "view" in labels else ""
    from_angle = labels["angle_deg"].map(view_from_angle) if "angle_deg" in labels else ""
    fallback = given.where(given != "", from_angle) if "view" in labels else from_angle
    labels["view"] = labels["file"].map(views).fillna(fallback)
    labelled = labels["file"].isin(views.keys()) | (given != "")
    if labelled.any() or "frontal" not in labels:
        frontal = labels["view"].map(frontal_from_view)
        labels["frontal"] = frontal.where(labelled, labels["frontal"]) if "frontal" in labels else frontal
    return labels


def car_models(labels: pd.DataFrame) -> np.ndarray | None:
    """Each row's car model, the unit a grouped split keeps together (`CAR_MODEL_COLUMNS`); None where the labels
    do not name one for every row."""
    for columns in CAR_MODEL_COLUMNS:
        if set(columns) <= set(labels.columns) and labels[list(columns)].notna().all(axis=None):
            return labels[list(columns)].astype(str).agg(" ".join, axis=1).to_numpy()
    return None


def intervals(models: np.ndarray | None, statistics: dict[str, Callable[[np.ndarray], float]]) -> dict[str, Any]:
    """The number of car models and, per statistic (a function of row indices), its range over resamples of them
    (`training.metrics.car_model_interval`); nothing where the car models are unknown or fewer than two."""
    if models is None:
        return {}
    found = {key: car_model_interval(models, statistic) for key, statistic in statistics.items()}
    ranges = {key: list(value) for key, value in found.items() if value is not None}
    return {"car_models": len(np.unique(models)), INTERVAL_KEY: ranges} if ranges else {}


def frontal_intervals(true: np.ndarray, pred: np.ndarray, models: np.ndarray | None) -> dict[str, Any]:
    """The ranges of the frontal precision and recall (at the bundle's threshold) over samples of car models."""

    def share(hits: np.ndarray, among: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda rows: float(hits[rows].sum() / among[rows].sum()) if among[rows].any() else float("nan")

    hits = pred & (true == 1)
    return intervals(models, {"precision": share(hits, pred), "recall": share(hits, true == 1)})


def bundle_split(bundle: Bundle, labels: pd.DataFrame, dataset: str) -> pd.Series:
    """Split of each row under the bundle's grouped split; NaN for rows the bundle never saw."""
    by_path = dict(zip(bundle.images["path"], bundle.images["split"], strict=True))
    by_path |= bundle.provenance.get("splits", {}).get(dataset, {})
    return labels["path"].map(by_path)


def run_networks(
    bundle: Bundle,
    labels: pd.DataFrame,
    gate_box: bool = False,
    restyle: Callable[[Image.Image], Image.Image] | None = None,
) -> tuple[dict[str, np.ndarray] | None, list[dict[str, str]]]:
    """Gate on each whole frame; modernity and body type on the labelled car box, on the gate's box (as the app
    crops) where no box is labelled, or with `gate_box` on the gate's box everywhere; every photo `restyle`d first.
    Returns the outputs of the rows whose image could be read (None if none could) and the rows that could not
    (file and reason)."""
    has_box = set(BOX) <= set(labels.columns)
    parts, unreadable = [], []
    for start in tqdm(range(0, len(labels), BATCH), desc="evaluate", unit="batch"):
        frames, crops, unboxed = [], [], []
        for _, row in labels.iloc[start : start + BATCH].iterrows():
            box = tuple(row[BOX]) if has_box and row[BOX].notna().all() else None
            try:
                frame = load_image(Path(row["root"]) / row["file"])
                if "background" in row:
                    frame = swap_background(frame, load_image(row["background"]))
                if "whiteout" in row:
                    frame = cut_out_on_white(frame, box)
                if restyle is not None:
                    frame, box = restyled(frame, box, restyle)
            except (CarmorphError, OSError) as error:
                unreadable.append({"file": str(row["file"]), "reason": str(error)})
                continue
            if gate_box or box is None:
                unboxed.append(len(frames))
            frames.append(frame)
            crops.append(crop_to_box(frame, box))
        estimates = gate_frames(bundle, frames) if unboxed else None  # the gate runs once, for boxes and scores
        if estimates is not None:
            boxed = gate_crops([frames[i] for i in unboxed], estimates.boxes[unboxed])
            for i, crop in zip(unboxed, boxed, strict=True):
                crops[i] = crop
        if frames:
            parts.append(predict_images(bundle.networks, crops, frames, bundle.manifest, estimates))
    if not parts:
        return None, unreadable
    outputs = NetworkOutputs.concatenate(parts)
    predicted_views = [outputs.view_decision(i, bundle.thresholds).view or "" for i in range(len(outputs.car_prob))]
    bins = [softmax(row) for row in outputs.year_logits]
    return (
        {
            "year_logits": outputs.year_logits,
            "year": whole_year(
                [expected_year(p, bundle.year_bins, y) for p, y in zip(bins, outputs.year_head_logits, strict=True)]
            ),
            "body_logits": outputs.body_logits,
            "frontal_prob": outputs.frontal_prob,
            "car_prob": outputs.car_prob,
            "view": np.array(predicted_views),
            "accepted": outputs.accepted(bundle.thresholds, bundle.valid_views),
        },
        unreadable,
    )


def restyled(
    frame: Image.Image, box: tuple[float, ...] | None, restyle: Callable[[Image.Image], Image.Image]
) -> tuple[Image.Image, tuple[float, ...] | None]:
    """The frame restyled, with its labelled box scaled to the restyled frame's size."""
    styled = restyle(frame)
    if box is None or styled.size == frame.size:
        return styled, box
    sx, sy = styled.width / frame.width, styled.height / frame.height
    return styled, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def modernity_metrics(
    bundle: Bundle, years: np.ndarray, logits: np.ndarray, shown: np.ndarray, models: np.ndarray | None = None
) -> dict[str, Any]:
    """Year-bin metrics of the logits and the MAE of `shown` (the whole year the app shows), with baselines; with
    each row's car model, the ranges of macro-F1 and MAE over samples of car models."""
    bins = bundle.year_bins
    known = years > 0  # a year of 0 or below is unknown
    true = np.array([-1 if y <= 0 or (b := year_to_bin(int(y), bins)) is None else b for y in years])
    probs = np.array([softmax(row) for row in logits])
    m = classification_metrics(true, probs.argmax(1), len(bins))
    majority = np.bincount(true[true >= 0], minlength=len(bins)).argmax()
    always_majority = classification_metrics(true, np.full_like(true, majority), len(bins))
    constant = float(np.median(years[known]))
    known_true, pred, errors = true[known], probs.argmax(1)[known], np.abs(shown - years)[known]
    spread = intervals(
        models[known] if models is not None else None,
        {"macro_f1": lambda rows: classification_metrics(known_true[rows], pred[rows], len(bins)).macro_f1,
         "mae_years": lambda rows: float(errors[rows].mean())},
    )  # fmt: skip
    return {
        "accuracy": m.accuracy,
        "macro_f1": m.macro_f1,
        "per_class_f1": m.per_class_f1,
        "confusion": m.confusion,
        "mae_years": float(np.abs(shown - years)[known].mean()),
        "labels": [b.label for b in bins],
        "n": int((true >= 0).sum()),
        "baselines": {
            "chance_accuracy": 1 / len(bins),
            "majority_accuracy": always_majority.accuracy,  # over the cars with a year bin, as the accuracy
            "majority_macro_f1": always_majority.macro_f1,
            "constant_year": constant,
            "constant_mae_years": float(np.abs(years[known] - constant).mean()),
        },
    } | spread


def body_type_metrics(
    bundle: Bundle, body: pd.Series, logits: np.ndarray, models: np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy and macro-F1 over the rows of a seed body type, with baselines; with each row's car model, the
    accuracy's range over samples of car models."""
    names = list(bundle.body_types)
    true = np.array([names.index(b) if b in names else -1 for b in body.fillna("")])
    m = classification_metrics(true, logits.argmax(1), len(names))
    known = true[true >= 0]
    majority = np.bincount(known, minlength=len(names)).argmax()
    right = (logits.argmax(1) == true)[true >= 0]
    spread = intervals(models[true >= 0] if models is not None else None,
                       {"accuracy": lambda rows: float(right[rows].mean())})  # fmt: skip
    return {
        "accuracy": m.accuracy,
        "macro_f1": m.macro_f1,
        "per_class_f1": m.per_class_f1,
        "confusion": m.confusion,
        "labels": names,
        "n": len(known),
        "baselines": {"chance_accuracy": 1 / len(names), "majority_accuracy": float((known == majority).mean())},
    } | spread


def by_view(bundle: Bundle, outputs: dict[str, np.ndarray], labels: pd.DataFrame, views: np.ndarray) -> dict[str, Any]:
    """Modernity and body-type metrics per view class of `views` (labelled or estimated), and on the images the
    bundle accepts ("accepted") and refuses ("refused")."""
    groups = [(view, views == view) for view in VIEW_CLASSES]
    groups += [("accepted", outputs["accepted"]), ("refused", ~outputs["accepted"])]
    result = {}
    for name, rows in groups:
        if rows.sum() == 0:
            continue
        years = labels["year"].to_numpy()[rows]
        mod = (
            modernity_metrics(bundle, years, outputs["year_logits"][rows], outputs["year"][rows])
            if (years > 0).any()
            else dict.fromkeys(("macro_f1", "accuracy", "mae_years"))
        )
        body = labels.get("body_type", pd.Series("", index=labels.index)).fillna("")[rows]
        result[name] = {
            "n": int(rows.sum()),
            "modernity_macro_f1": mod["macro_f1"],
            "modernity_accuracy": mod["accuracy"],
            "mae_years": mod["mae_years"],
            "body_type_accuracy": body_type_metrics(bundle, body, outputs["body_logits"][rows])["accuracy"]
            if (body != "").any()
            else None,
        }
    return result


def by_make(bundle: Bundle, labels: pd.DataFrame, logits: np.ndarray, shown: np.ndarray) -> dict[str, Any]:
    """Modernity of Porsches and of other makes: does "new" mean "Porsche"? Mean signed error of the shown
    year, MAE, and the share of cars put in a bin after 2012 (every post-2012 car of the shared data is a
    Porsche)."""
    makes = labels["make"].fillna("").str.lower().to_numpy() if "make" in labels else np.full(len(labels), "")
    probs = np.array([softmax(row) for row in logits])
    late = np.array([b.start > 2012 for b in bundle.year_bins])
    years = labels["year"].to_numpy(float)
    result = {}
    for name, rows in (("porsche", makes == "porsche"), ("other", (makes != "porsche") & (makes != ""))):
        rows = rows & (years > 0)
        if rows.sum() == 0:
            continue
        result[name] = {
            "n": int(rows.sum()),
            "mean_error_years": float((shown[rows] - years[rows]).mean()),
            "mae_years": float(np.abs(shown[rows] - years[rows]).mean()),
            "share_predicted_after_2012": float(late[probs[rows].argmax(1)].mean()),
            "share_truly_after_2012": float((years[rows] > 2012).mean()),
        }
    return result


def backdrop_photos(bundle: Bundle, folder: Path, split: str | None, count: int, seed: int) -> list[str]:
    """`count` photos drawn from a folder of photos without cars (`labels.csv` + images/), of the bundle's `split`
    where the bundle was trained on that folder (its other photos taught the gate "no car")."""
    photos = read_folder(folder)
    if split and not (splits := bundle_split(bundle, photos, folder.name)).isna().all():
        photos = photos[splits == split]
    if photos.empty:
        raise SystemExit(f"--backdrops: no photos in {folder}" + (f" of the {split} split" if split else ""))
    paths = [str(folder / f) for f in photos["file"]]
    return [paths[i] for i in np.random.default_rng(seed).integers(len(paths), size=count)]


def evaluate_folder(
    bundle: Bundle,
    folder: Path,
    split: str | None = None,
    backdrops: Path | None = None,
    whiteout: bool = False,
    gate_box: bool = False,
    photo_style: str | None = None,
    low_resolution_px: int = 96,
    views: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Metrics for every task the folder's labels support; with `backdrops`, on the folder's photos with their white
    background (DVM-CAR's) replaced by photos of that folder; with `whiteout`, on its cars cut out onto white; with
    `gate_box`, the scores on the gate's crops; with `photo_style` (a key of `PHOTO_STYLES`), on every photo so
    restyled (`low-resolution`: to `low_resolution_px` on the longer side); `views` labels photos by view (file
    relative to the folder) beside the folder's own."""
    labels = read_folder(folder, views)
    labels["root"] = str(folder)
    if "year" in labels:  # blank or unreadable years are unknown (-1)
        labels["year"] = pd.to_numeric(labels["year"], errors="coerce").fillna(-1).astype(int)
    report: dict[str, Any] = {"data": str(folder), "bundle": bundle.name, "split": split or "all"}
    if split:
        splits = bundle_split(bundle, labels, folder.name)
        if splits.isna().all():
            raise SystemExit(f"--split {split}: the bundle was not trained on {folder}; evaluate without --split.")
        labels = labels[splits == split].reset_index(drop=True)
    elif not bundle_split(bundle, labels, folder.name).isna().all():
        report["warning"] = "rows include the bundle's training data: metrics are inflated; use --split test"
    if backdrops:
        labels["background"] = backdrop_photos(bundle, backdrops, split, len(labels), seed=0)
        report["backdrops"] = str(backdrops)
    if whiteout:
        if not set(BOX) <= set(labels.columns) or labels[BOX].isna().any(axis=None):
            raise SystemExit(f"--whiteout needs the car's box of every photo (bbox_x1..bbox_y2 in {folder}/labels.csv)")
        labels["whiteout"] = True
        report["whiteout"] = True
    restyle = PHOTO_STYLES[photo_style] if photo_style else None
    if photo_style:
        report["photo_style"] = photo_style
    if photo_style in SIZED_STYLES:
        restyle = functools.partial(SIZED_STYLES[photo_style], longer_side=low_resolution_px)
        report["low_resolution_px"] = low_resolution_px
    report["crop"] = "gate box" if gate_box else "labelled box, else the gate's box"
    outputs, unreadable = run_networks(bundle, labels, gate_box, restyle)
    if unreadable:
        report["unreadable"] = {"n": len(unreadable), "files": unreadable[:MAX_LISTED]}
        labels = labels[~labels["file"].astype(str).isin({u["file"] for u in unreadable})].reset_index(drop=True)
    report["n"] = len(labels)
    if outputs is None:
        return report
    has_years = "year" in labels and bool((labels["year"] > 0).any())
    models = car_models(labels)
    if has_years:
        report["modernity"] = modernity_metrics(
            bundle, labels["year"].to_numpy(), outputs["year_logits"], outputs["year"], models
        )
    if "body_type" in labels and (labels["body_type"].fillna("") != "").any():
        report["body_type"] = body_type_metrics(bundle, labels["body_type"], outputs["body_logits"], models)
    if has_years:
        report["by_predicted_view"] = by_view(bundle, outputs, labels, outputs["view"])
        report["by_make"] = by_make(bundle, labels, outputs["year_logits"], outputs["year"])
        if (labels["view"] != "").any():
            report["by_view"] = by_view(bundle, outputs, labels, labels["view"].to_numpy())
    if "frontal" in labels and (labels["frontal"] >= 0).any():
        known = (labels["frontal"] >= 0).to_numpy()
        true = labels["frontal"].to_numpy(int)[known]
        outputs_frontal = outputs["frontal_prob"][known]
        report["frontal"] = frontal_metrics(true, outputs_frontal, bundle.thresholds.frontal) | {
            "threshold": bundle.thresholds.frontal, "n": len(true), "positives": int(true.sum())} | frontal_intervals(
            true, outputs_frontal >= bundle.thresholds.frontal, models[known] if models is not None else None
        )  # fmt: skip
    car_true = labels["car"].to_numpy(int) if "car" in labels else np.ones(len(labels), int)
    car_pred = outputs["car_prob"] >= bundle.thresholds.car
    report["car"] = {"accuracy": float((car_pred == (car_true == 1)).mean()), "n": len(car_true),
                     "threshold": bundle.thresholds.car}  # fmt: skip
    return report


def clean(value: Any) -> Any:
    """JSON-safe: NaN becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True,
                        help="a dataset folder: labels.csv and images/, or a DVM-CAR folder")  # fmt: skip
    parser.add_argument("--split", choices=["train", "val", "test"], help="only rows of the bundle's split")
    parser.add_argument("--json", type=Path, help="also write the metrics to this file")
    parser.add_argument("--backdrops", type=Path, help="a folder of photos without cars (labels.csv + images/, "
                        "e.g. ../shared/data/negatives): the white background of every photo (DVM-CAR's) is replaced "
                        "by one of them, of --split where the bundle was trained on them")  # fmt: skip
    parser.add_argument("--whiteout", action="store_true", help="every car (its labelled box, cut out "
                        "by GrabCut) is put on white, as on DVM-CAR's adverts: the answers in that style")  # fmt: skip
    parser.add_argument("--photo-style", choices=list(PHOTO_STYLES), help="every photo (after --backdrops or "
                        "--whiteout) greyscale, darkened to 35 %%, brightened to 180 %%, blurred by 1 %% of its longer "
                        "side, reduced to --low-resolution px and back, reduced to it and kept small (a small "
                        "upload), or saved as a JPEG of quality 15")  # fmt: skip
    parser.add_argument("--low-resolution", type=int, default=96, metavar="PX", help="the longer side (px) that "
                        "--photo-style low-resolution or small reduces every photo to (default 96)")  # fmt: skip
    parser.add_argument("--views", type=Path, help="view labels for the photos (views.csv's columns: file relative "
                        "to --data, view), e.g. data/views/stanford_cars.csv; joined over a views.csv beside the "
                        "labels")  # fmt: skip
    parser.add_argument("--gate-box", action="store_true", help="score every car on the crop of the box the "
                        "bundle's gate finds (as the app does), not on its labelled box")  # fmt: skip
    args = parser.parse_args(argv)
    if args.low_resolution < 1:
        parser.error("--low-resolution takes the longer side in pixels: 1 or more")
    try:
        bundle = load_bundle(args.bundle)
    except CarmorphError as error:
        sys.exit(f"error: {error}")
    if not ((args.data / "labels.csv").is_file() or is_dvm_folder(args.data)):
        sys.exit(f"error: {args.data} has neither a labels.csv (a folder like ../shared/data/stanford_cars) nor "
                 "DVM-CAR images (an Ad_table.csv, or files named Maker$$Genmodel$$Year$$Colour$$Genmodel_ID$$Adv_ID$$"
                 "image_N.jpg)")  # fmt: skip
    if args.views and not args.views.is_file():
        sys.exit(f"error: --views {args.views}: no such file")
    views = read_view_file(args.views) if args.views else None
    report = clean(evaluate_folder(bundle, args.data, args.split, args.backdrops, args.whiteout, args.gate_box,
                                   args.photo_style, args.low_resolution, views))  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
