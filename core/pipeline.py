"""score_image(): the one path from an uploaded image to a ScoreResult.

decode -> segment (find the car) -> crop -> view gate (on the frame, or on the crop where the bundle reads the view
there) -> modernity and body-type networks on the crop -> typicality against the group's morph -> position on the
bundle's map -> checks of the photo (blurred, a small car) that warn without rejecting. A car that is not there or
not in a valid view is a *rejection* (accepted=False with a reason), not an exception; unusable input raises a
CarmorphError subclass (e.g. ImageError); anything else is a bug.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.artifacts import Bundle, crop_to_box
from core.config import BLUR_SHARPNESS, CROP_MARGIN, SMALL_CAR_PIXELS
from core.gate import GateEstimates, gate_estimates, view_probabilities
from core.imaging import load_image, sharpness
from core.models import CropOutputs, crop_outputs
from core.projection import Neighbours
from core.scoring import BodyType, Modernity, Typicality, body_type_from_logits, modernity_from_logits, typicality
from core.segment import GateSegmenter, Segmentation, Segmenter, box_from_normalised, make_segmenter
from core.viewpoint import FrontalDecision, frontal_decision, view_rejection

ImageInput = bytes | Image.Image | str | Path


@dataclass
class ScoreResult:
    """Everything known about one scored image. Scores are None when the image was rejected (see `reason`)."""

    accepted: bool
    reason: str | None
    image: Image.Image
    segmenter: str
    car_confidence: float
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None
    crop: Image.Image | None = None
    frontal: FrontalDecision | None = None
    modernity: Modernity | None = None
    body_type: BodyType | None = None
    typicality: Typicality | None = None
    embedding: np.ndarray | None = None  # the body-type network's embedding (its neck, or its pooled feature)
    map_position: tuple[float, float] | None = None
    neighbours: Neighbours | None = None  # nearest bundle images (rows of bundle.images), closest first
    warnings: tuple[str, ...] = ()  # why the scores of a scored photo may not hold (out of focus, a small car)
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds, plus "total"

    @property
    def frontal_probability(self) -> float | None:
        return self.frontal.probability if self.frontal else None


class _Clock:
    """Milliseconds per stage, measured back to back."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = (now - self.last) * 1000.0
        self.last = now

    def total(self) -> dict[str, float]:
        self.timings["total"] = (time.perf_counter() - self.start) * 1000.0
        return self.timings


def score_image(image: ImageInput, bundle: Bundle, segmenter: Segmenter | None = None) -> ScoreResult:
    """Score the main car of `image` (encoded bytes, a path or a PIL image) with `bundle`'s networks.

    `segmenter` defaults to the bundle's choice, built once and kept on the bundle. Raises ImageError for input
    that is not a usable image; returns accepted=False with a reason when no car or no valid view is found.
    """
    clock = _Clock()
    picture = load_image(image)
    clock.lap("decode")
    segmenter = bundle_segmenter(bundle) if segmenter is None else segmenter
    found = segmenter.segment(picture)
    clock.lap("segment")
    result = ScoreResult(
        accepted=False, reason=None, image=picture, segmenter=found.backend, car_confidence=found.confidence
    )
    if not found.found:
        result.reason = (
            f"No car found (car confidence {found.confidence:.2f} < {_car_threshold(segmenter, bundle):.2f})."
        )
        result.timings = clock.total()
        return result
    result.box, result.mask, result.crop = found.box, found.mask, found.crop(picture, CROP_MARGIN)
    scores = _crop_scores(result.crop, bundle, clock) if bundle.manifest.view_from == "crop" else None
    result.frontal = _frontal(found, picture, bundle, clock, scores)
    result.reason = view_rejection(result.frontal, bundle.valid_views, bundle.thresholds.view)
    if result.reason is None:
        _score(result, scores if scores is not None else _crop_scores(result.crop, bundle, clock), bundle, clock)
        result.accepted = True
        result.warnings = tuple(w for w in (blur_warning(picture), small_car_warning(result.box)) if w)
        clock.lap("checks")
    result.timings = clock.total()
    return result


def blur_warning(picture: Image.Image) -> str | None:
    """Why the scores of a photo may not hold when it looks out of focus (its sharpness below BLUR_SHARPNESS)."""
    value = sharpness(picture)
    if value >= BLUR_SHARPNESS:
        return None
    return (
        f"This photo looks blurred (sharpness {value:.0f}, below {BLUR_SHARPNESS:.0f}; nearly every car photo of the "
        "data scores 150 or more): out of focus, moving, or enlarged from a small picture. The scores of blurred "
        "photos can be far off: take them with caution, or try a sharper photo."
    )


def small_car_warning(box: tuple[float, float, float, float]) -> str | None:
    """Why the scores may not hold when the car is small in the photo (its box's longer side below
    SMALL_CAR_PIXELS): the networks read it enlarged, with less detail than any car they learned from."""
    side = max(box[2] - box[0], box[3] - box[1])
    if side >= SMALL_CAR_PIXELS:
        return None
    return (
        f"The car is small in this photo ({side:.0f} px across, below {SMALL_CAR_PIXELS}): the networks see it "
        "enlarged, with less detail than any car they learned from, and its scores can be far off. A closer or "
        "larger photo of the car helps."
    )


def bundle_segmenter(bundle: Bundle) -> Segmenter:
    """The segmenter the bundle names, built once per bundle (the gate one uses the bundle's gate and threshold)."""
    key = f"segmenter:{bundle.segmenter}"
    if key not in bundle.cache:
        if bundle.segmenter == "gate":
            thresholds = bundle.thresholds
            bundle.cache[key] = GateSegmenter(
                bundle.gate,
                bundle.gate_transform,
                thresholds.car,
                cam_threshold=thresholds.cam,
                box_head=bundle.box_head,
            )
        else:
            bundle.cache[key] = make_segmenter(bundle.segmenter, score_threshold=bundle.thresholds.car)
    return bundle.cache[key]


def gate_frames(bundle: Bundle, images: list[Image.Image]) -> GateEstimates:
    """The bundle's gate on whole frames, in one batch, with the box `score_image` takes (its box head's, where it
    has one)."""
    return gate_estimates(bundle.gate, bundle.gate_transform(images), bundle.thresholds.cam, bundle.box_head)


def gate_crops(images: list[Image.Image], boxes: np.ndarray) -> list[Image.Image]:
    """The crops `score_image` takes of `images` for the gate's normalised `boxes` (widened by CROP_MARGIN),
    whether or not the gate found a car in them."""
    pixels = [box_from_normalised(box, *image.size) for image, box in zip(images, boxes, strict=True)]
    return [crop_to_box(image, box) for image, box in zip(images, pixels, strict=True)]


def _car_threshold(segmenter: Segmenter, bundle: Bundle) -> float:
    threshold = getattr(segmenter, "car_threshold", getattr(segmenter, "score_threshold", bundle.thresholds.car))
    return float(threshold)


def _frontal(
    found: Segmentation, picture: Image.Image, bundle: Bundle, clock: _Clock, scores: CropOutputs | None
) -> FrontalDecision:
    """From the gate's view head on the crop where the bundle reads the view there (`scores` holds it), else from
    the segmenter when it estimated the view (the gate does), else from one gate pass on the image."""
    probability, views = found.frontal_probability, found.view_probabilities
    if scores is not None and scores.view_logits is not None:
        all_views, frontal = view_probabilities(scores.view_logits)
        probability, views = float(frontal[0]), tuple(float(p) for p in all_views[0])
    elif probability is None:
        estimates = gate_estimates(bundle.gate, bundle.gate_transform([picture]), bundle.thresholds.cam)
        probability = float(estimates.frontal[0])
        views = None if estimates.views is None else tuple(float(p) for p in estimates.views[0])
        clock.lap("frontal")
    return frontal_decision(probability, bundle.thresholds.frontal, views)


def _crop_scores(crop: Image.Image, bundle: Bundle, clock: _Clock) -> CropOutputs:
    """Both networks on the crop (and its mirror image where the bundle averages over both), and the gate's view
    head on it where the bundle reads the view from the crop."""
    batch = bundle.transform([crop])
    clock.lap("preprocess")
    gate = bundle.gate if bundle.manifest.view_from == "crop" else None
    with torch.inference_mode():
        scores = crop_outputs(bundle.modernity, bundle.bodytype, batch, bundle.manifest.flip_average, gate)
    clock.lap("networks")
    return scores


def _score(result: ScoreResult, scores: CropOutputs, bundle: Bundle, clock: _Clock) -> None:
    """The scores from the networks' outputs on the crop, then typicality and the map position."""
    year, body = scores.year, scores.body
    per_year = year["year"][0] if "year" in year else None
    result.modernity = modernity_from_logits(year["year_bin"][0], bundle.year_bins, per_year)
    result.body_type = body_type_from_logits(body["body_type"][0], bundle.body_types)
    result.embedding = body["features"][0].numpy()
    result.typicality = typicality(
        result.embedding, bundle.morphs, result.body_type.index, result.modernity.predicted_bin
    )
    clock.lap("typicality")
    result.neighbours = bundle.placer.neighbours(result.embedding)
    x, y = bundle.placer.coordinates(result.neighbours)
    result.map_position = (float(x), float(y))
    clock.lap("placement")
