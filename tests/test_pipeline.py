"""core.pipeline.score_image on real fixture photos with the tiny bundle. The networks are untrained, so the
accept and reject paths are forced through the bundle's thresholds (0.0 lets everything through, 1.0 nothing)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from core.artifacts import Bundle, Thresholds, predict_images
from core.config import BLUR_SHARPNESS, SMALL_CAR_PIXELS
from core.errors import ImageError
from core.imaging import sharpness
from core.pipeline import ScoreResult, blur_warning, bundle_segmenter, score_image, small_car_warning
from core.scoring import softmax
from core.segment import Segmentation

STAGES = ("decode", "segment", "preprocess", "networks", "typicality", "placement", "checks", "total")


def variant(bundle: Bundle, car: float, frontal: float, valid_views: str = "frontal") -> Bundle:
    """The bundle with other thresholds / policy (and an empty cache, so the segmenter is rebuilt)."""
    manifest = dataclasses.replace(bundle.manifest, thresholds=Thresholds(car, frontal), valid_views=valid_views)
    return dataclasses.replace(bundle, manifest=manifest, cache={})


@pytest.fixture(scope="module")
def open_bundle(tiny_bundle: Bundle) -> Bundle:
    return variant(tiny_bundle, car=0.0, frontal=0.0)


class FixedBoxSegmenter:
    """A segmenter that reports a known box and no view estimate (like Mask R-CNN), for the pipeline's wiring."""

    name = "fixed"

    def __init__(self, box: tuple[float, float, float, float]):
        self.box = box

    def segment(self, image: Image.Image) -> Segmentation:
        return Segmentation(True, self.box, None, 0.9, self.name, image.size)


def test_a_car_photo_is_scored(open_bundle: Bundle, fixture_image_bytes: Callable[[str, int], bytes]):
    result = score_image(fixture_image_bytes("stanford_cars", 0), open_bundle)
    assert isinstance(result, ScoreResult) and result.accepted and result.reason is None
    assert result.segmenter == "gate" and 0.0 <= result.car_confidence <= 1.0
    assert result.frontal.is_frontal and result.frontal_probability == result.frontal.probability
    assert 0.0 <= result.modernity.score <= 4.0 and 1991 <= result.modernity.expected_year <= 2012
    assert sum(result.modernity.probabilities) == pytest.approx(1.0)
    assert result.body_type.label in open_bundle.body_types
    assert result.embedding.shape == (512,) and result.embedding.dtype == np.float32
    expected_group = open_bundle.morphs.group_label(result.body_type.index, result.modernity.predicted_bin)
    assert result.typicality.group == expected_group
    assert result.typicality.has_morph == (result.typicality.cosine is not None)
    assert result.typicality.has_morph or result.typicality.reason.startswith("No morph for")
    assert result.map_position == pytest.approx(tuple(open_bundle.placer.transform(result.embedding)))
    assert len(result.neighbours.indices) == open_bundle.placer.k
    assert set(STAGES) <= set(result.timings) and all(value >= 0 for value in result.timings.values())
    assert result.timings["total"] >= sum(result.timings[stage] for stage in STAGES[:-1]) * 0.99


def test_a_blurred_photo_or_a_small_car_is_scored_with_a_warning(open_bundle: Bundle, car_photo: Image.Image):
    whole_frame = FixedBoxSegmenter((0.0, 0.0, *map(float, car_photo.size)))  # 128 px across: not small
    sharp = score_image(car_photo, open_bundle, segmenter=whole_frame)
    assert sharp.accepted and sharp.warnings == () and sharpness(car_photo) >= BLUR_SHARPNESS
    out_of_focus = car_photo.filter(ImageFilter.GaussianBlur(0.01 * max(car_photo.size)))
    blurred = score_image(out_of_focus, open_bundle, segmenter=whole_frame)
    assert blurred.accepted and sharpness(out_of_focus) < BLUR_SHARPNESS
    assert [w[:36] for w in blurred.warnings] == ["This photo looks blurred (sharpness "]
    assert blur_warning(Image.new("RGB", (300, 200), (90, 90, 90))) is not None, "a flat grey picture has no detail"
    small_box = (10.0, 10.0, 10.0 + SMALL_CAR_PIXELS - 1, 50.0)
    small = score_image(car_photo, open_bundle, segmenter=FixedBoxSegmenter(small_box))
    assert small.accepted and small.modernity is not None, "a warning, not a rejection"
    assert small.warnings == (small_car_warning(small_box),) and small.warnings[0].startswith(
        f"The car is small in this photo ({SMALL_CAR_PIXELS - 1} px across, below {SMALL_CAR_PIXELS}):"
    )
    assert small_car_warning((0.0, 0.0, 40.0, float(SMALL_CAR_PIXELS))) is None, "a tall box counts its height"


def test_a_flip_averaging_bundle_scores_the_crop_and_its_mirror_image(open_bundle: Bundle, car_photo: Image.Image):
    """score_image gives what the bundle's build computes for the crop: with flip averaging, the mean over the crop
    and its mirror image."""
    flipping = dataclasses.replace(open_bundle, manifest=dataclasses.replace(open_bundle.manifest, flip_average=True))
    plain, averaged = score_image(car_photo, open_bundle), score_image(car_photo, flipping)
    expected = predict_images(flipping.networks, [averaged.crop], [averaged.crop], flipping.manifest)
    assert np.allclose(averaged.embedding, expected.features[0], atol=1e-5)
    assert not np.allclose(averaged.embedding, plain.embedding, atol=1e-4)
    probabilities = list(averaged.body_type.probabilities.values())
    assert probabilities == pytest.approx(softmax(expected.body_logits[0]).tolist(), abs=1e-5)
    assert averaged.modernity.probabilities == pytest.approx(softmax(expected.year_logits[0]).tolist(), abs=1e-5)


def test_box_mask_and_crop_belong_to_the_image(open_bundle: Bundle, car_photo: Image.Image):
    result = score_image(car_photo, open_bundle)
    x1, y1, x2, y2 = result.box
    assert 0 <= x1 < x2 <= car_photo.width and 0 <= y1 < y2 <= car_photo.height
    assert result.mask.shape == (car_photo.height, car_photo.width) and result.mask.dtype == bool
    assert result.crop.width <= car_photo.width and result.crop.height <= car_photo.height
    assert result.image.size == car_photo.size


def test_bytes_and_decoded_image_give_the_same_scores(open_bundle: Bundle, car_photo_path: Path):
    from_bytes = score_image(car_photo_path.read_bytes(), open_bundle)
    from_image = score_image(Image.open(car_photo_path), open_bundle)
    assert from_bytes.modernity == from_image.modernity and from_bytes.body_type == from_image.body_type
    assert np.array_equal(from_bytes.embedding, from_image.embedding)


def test_no_car_is_a_rejection_with_the_confidence(tiny_bundle: Bundle, car_photo: Image.Image):
    result = score_image(car_photo, variant(tiny_bundle, car=1.0, frontal=0.0))
    assert not result.accepted
    assert result.reason.startswith("No car found (car confidence ") and result.reason.endswith("< 1.00).")
    assert result.modernity is None and result.embedding is None and result.crop is None
    assert "total" in result.timings


def test_a_view_that_is_not_frontal_is_rejected(tiny_bundle: Bundle, frontal_row: dict[str, str]):
    result = score_image(Path(frontal_row["path"]), variant(tiny_bundle, car=0.0, frontal=1.0))
    assert not result.accepted and not result.frontal.is_frontal
    assert result.reason.startswith("Not a frontal view (frontal probability ")
    assert result.reason.endswith("the models are validated on front views only.")
    assert result.reason.count("validated") == 1
    assert result.crop is not None and result.modernity is None


def test_all_views_policy_scores_any_view(tiny_bundle: Bundle, car_photo: Image.Image):
    result = score_image(car_photo, variant(tiny_bundle, car=0.0, frontal=1.0, valid_views="all"))
    assert result.accepted and not result.frontal.is_frontal and result.modernity is not None


def test_a_segmenter_without_a_view_estimate_gets_the_gate(open_bundle: Bundle, frontal_row: dict[str, str]):
    box = tuple(float(frontal_row[key]) for key in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
    result = score_image(Path(frontal_row["path"]), open_bundle, segmenter=FixedBoxSegmenter(box))
    assert result.accepted and result.segmenter == "fixed" and result.box == box and result.mask is None
    assert "frontal" in result.timings and 0.0 <= result.frontal_probability <= 1.0
    assert result.crop.width == pytest.approx((box[2] - box[0]) * 1.08, abs=2)


def test_the_bundle_segmenter_is_built_once(open_bundle: Bundle):
    segmenter = bundle_segmenter(open_bundle)
    assert segmenter is bundle_segmenter(open_bundle)
    assert segmenter.name == "gate" and segmenter.car_threshold == 0.0


@pytest.mark.parametrize("data", [b"", b"this is a text file, not a photo\n", b"\xff\xd8\xff\xe0" + b"\x00" * 64])
def test_bad_input_is_an_image_error(open_bundle: Bundle, data: bytes):
    with pytest.raises(ImageError):
        score_image(data, open_bundle)


def test_a_truncated_photo_is_an_image_error(open_bundle: Bundle, car_photo_path: Path):
    data = car_photo_path.read_bytes()
    with pytest.raises(ImageError):
        score_image(data[: len(data) // 3], open_bundle)
