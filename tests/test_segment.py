"""core.segment: gate backend on real fixture photos, Mask R-CNN weight loading, the detectron2 adapter, factory."""

from __future__ import annotations

import math
import sys
import types
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.models.detection import maskrcnn_resnet50_fpn

import core.segment as segment
from core.errors import BackendUnavailableError, CarmorphError, WeightsNotFoundError
from core.gate import LEGACY_GATE_HEADS as GATE_HEADS
from core.models import CarNet, ImageTransform, save_carnet
from core.segment import (
    Detectron2Segmenter,
    GateSegmenter,
    MaskRCNNSegmenter,
    Segmentation,
    Segmenter,
    box_from_normalised,
    grabcut_mask,
    make_segmenter,
    maskrcnn_cache_file,
    segmentation_from_detectron2,
    select_main_car,
)

TRANSFORM = ImageTransform(64)


def open_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def row_box(row: dict[str, str]) -> tuple[float, float, float, float]:
    return tuple(float(row[key]) for key in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))  # type: ignore[return-value]


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def gate_net(car: float | None = None, box: tuple[float, ...] | None = None, frontal: float | None = None) -> CarNet:
    """A freshly initialised gate CarNet; heads given a probability output exactly that, whatever the image
    (their weights zeroed, their bias set to the logit)."""
    torch.manual_seed(0)
    model = CarNet(GATE_HEADS).eval()
    with torch.no_grad():
        for name, probabilities in (("car", car), ("box", box), ("frontal", frontal)):
            if probabilities is None:
                continue
            values = [probabilities] if isinstance(probabilities, float) else list(probabilities)
            model.heads[name].weight.zero_()
            model.heads[name].bias.copy_(torch.tensor([logit(p) for p in values]))
    return model


def assert_mask_in_box(result: Segmentation) -> None:
    assert result.mask is not None and result.box is not None
    width, height = result.image_size
    assert result.mask.shape == (height, width) and result.mask.dtype == np.bool_
    left, top, right, bottom = result.crop_box()
    outside = result.mask.copy()
    outside[top:bottom, left:right] = False
    assert not outside.any()


# --- Segmentation ------------------------------------------------------------------------------------------------


def test_crop_and_masked_crop(car_photo: Image.Image) -> None:
    width, height = car_photo.size
    mask = np.zeros((height, width), bool)
    mask[20:40, 30:60] = True
    result = Segmentation(True, (25.0, 15.0, 70.5, 45.2), mask, 0.9, "test", car_photo.size)
    assert result.crop(car_photo).size == (46, 31)
    assert result.crop_box(margin=0.1) == (20, 11, 76, 49)  # floor/ceil of 25 - 4.55, 70.5 + 4.55, ...
    assert result.crop_box(margin=10.0) == (0, 0, width, height)  # clamped to the image
    masked = np.asarray(result.masked_crop(car_photo))  # crop starts at (25, 15)
    assert (masked[:5] == 255).all() and (masked[:, :5] == 255).all()  # outside the mask: white
    assert np.array_equal(masked[5:25, 5:35], np.asarray(car_photo)[20:40, 30:60])
    with pytest.raises(ValueError, match="image is"):
        result.crop(car_photo.resize((10, 10)))


def test_segmentation_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="mask must be"):
        Segmentation(True, (0, 0, 5, 5), np.zeros((5, 6), bool), 1.0, "test", (5, 5))
    with pytest.raises(ValueError, match="needs a box"):
        Segmentation(True, None, None, 1.0, "test", (5, 5))
    with pytest.raises(ValueError, match="no box"):
        Segmentation.not_found("test", (5, 5)).crop_box()


def test_select_main_car_prefers_area_times_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 40, 40], [0, 0, 100, 100], [0, 0, 30, 30]], float)
    scores = np.array([0.99, 0.6, 0.95, 0.9])
    labels = np.array([3, 3, 1, 3])  # the biggest box is a person
    assert select_main_car(boxes, scores, labels, (3,), 0.5) == 1  # 1600 * 0.6 = 960 > 900 * 0.9 = 810
    assert select_main_car(boxes, scores, labels, (3,), 0.7) == 3  # box 1 is below the threshold
    assert select_main_car(boxes, scores, labels, (3, 1), 0.5) == 2
    assert select_main_car(boxes, scores, labels, (8,), 0.0) is None
    assert select_main_car(np.zeros((0, 4)), np.zeros(0), np.zeros(0), (3,), 0.0) is None


# --- gate backend ------------------------------------------------------------------------------------------------


def test_box_from_normalised() -> None:
    assert box_from_normalised((0.1, 0.2, 0.8, 0.9), 200, 100) == pytest.approx((20, 20, 160, 90))
    assert box_from_normalised((0.8, 0.9, 0.1, 0.2), 200, 100) == pytest.approx((20, 20, 160, 90))  # reordered
    assert box_from_normalised((-0.5, 0.0, 1.5, 1.0), 200, 100) == pytest.approx((0, 0, 200, 100))  # clamped
    x1, y1, x2, y2 = box_from_normalised((0.99, 0.5, 0.99, 0.5), 200, 100, min_fraction=0.1)
    assert (x2 - x1, y2 - y1) == pytest.approx((20, 10))  # grown to the minimum size
    assert x2 == pytest.approx(200)  # and shifted back inside the image


def test_gate_finds_car_with_box_mask_and_frontal_probability(frontal_row: dict[str, str]) -> None:
    image = open_rgb(frontal_row["path"])
    gate = GateSegmenter(gate_net(car=0.9, box=(0.2, 0.1, 0.8, 0.9), frontal=0.3), TRANSFORM, car_threshold=0.5)
    result = gate.segment(image)
    assert isinstance(gate, Segmenter)
    assert (result.found, result.backend, result.image_size) == (True, "gate", image.size)
    assert result.confidence == pytest.approx(0.9, abs=1e-5)
    assert result.frontal_probability == pytest.approx(0.3, abs=1e-5)
    width, height = image.size
    assert result.box == pytest.approx((0.2 * width, 0.1 * height, 0.8 * width, 0.9 * height), abs=1e-3)
    assert_mask_in_box(result)
    assert 0 < result.mask.sum() < 0.99 * (0.6 * width) * (0.8 * height)  # GrabCut, not the filled box


def test_gate_threshold_decides_found(frontal_row: dict[str, str]) -> None:
    image = open_rgb(frontal_row["path"])
    model = gate_net(car=0.5, box=(0.2, 0.1, 0.8, 0.9), frontal=0.7)
    found = GateSegmenter(model, TRANSFORM, car_threshold=0.45).segment(image)
    missed = GateSegmenter(model, TRANSFORM, car_threshold=0.55).segment(image)
    assert found.found and found.box is not None
    assert not missed.found
    assert (missed.box, missed.mask) == (None, None)
    assert missed.confidence == pytest.approx(0.5, abs=1e-5)  # still reported when no car is found
    assert missed.frontal_probability == pytest.approx(0.7, abs=1e-5)


def test_gate_orders_and_grows_a_degenerate_box(car_photo: Image.Image) -> None:
    model = gate_net(car=0.9, box=(0.6, 0.5, 0.58, 0.5))  # x1 > x2, zero height
    result = GateSegmenter(model, TRANSFORM, min_box_fraction=0.1, mask=False).segment(car_photo)
    x1, y1, x2, y2 = result.box
    assert x1 < x2 and y1 < y2
    assert x2 - x1 >= 0.1 * car_photo.width - 1e-6 and y2 - y1 >= 0.1 * car_photo.height - 1e-6
    assert result.mask is None


def test_fresh_gate_on_every_kind_of_photo(fixture_rows: dict[str, list[dict[str, str]]]) -> None:
    gate = GateSegmenter(gate_net(), TRANSFORM, car_threshold=0.0)  # random heads; threshold 0 forces "found"
    for dataset in ("stanford_cars", "epfl_multiview", "negatives"):
        for row in fixture_rows[dataset][:2]:
            image = open_rgb(row["path"])
            result = gate.segment(image)
            assert result.found and 0.0 <= result.confidence <= 1.0
            assert result.frontal_probability is not None and 0.0 <= result.frontal_probability <= 1.0
            x1, y1, x2, y2 = result.box
            assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
            assert_mask_in_box(result)
            assert result.crop(image).size[0] > 0


def test_gate_from_bundle_file(tmp_path: Path, frontal_row: dict[str, str]) -> None:
    path = tmp_path / "frontal.safetensors"
    save_carnet(gate_net(car=0.8, box=(0.1, 0.1, 0.9, 0.9)), path)
    result = GateSegmenter.from_file(path, TRANSFORM).segment(open_rgb(frontal_row["path"]))
    assert result.found and result.confidence == pytest.approx(0.8, abs=2e-3)  # fp16 on disk


def test_gate_needs_box_head() -> None:
    with pytest.raises(BackendUnavailableError, match="box"):
        GateSegmenter(CarNet({"car": 1}), TRANSFORM)


def test_grabcut_segments_inside_the_true_box(fixture_rows: dict[str, list[dict[str, str]]]) -> None:
    for row in fixture_rows["epfl_multiview"]:
        image, box = open_rgb(row["path"]), row_box(row)
        mask = grabcut_mask(image, box)
        result = Segmentation(True, box, mask, 1.0, "test", image.size)
        assert_mask_in_box(result)
        left, top, right, bottom = result.crop_box()
        fraction = mask.sum() / ((right - left) * (bottom - top))
        assert 0.1 < fraction < 0.99, row["file"]  # a real cut: neither empty nor the whole box
        assert np.array_equal(mask, grabcut_mask(image, box))  # repeatable


def test_grabcut_falls_back_to_the_box_when_too_small(car_photo: Image.Image) -> None:
    mask = grabcut_mask(car_photo, (10.0, 10.0, 13.0, 12.0))
    assert mask.sum() == 3 * 2 and mask[10:12, 10:13].all()


# --- torchvision Mask R-CNN --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maskrcnn_state() -> dict[str, torch.Tensor]:
    """A COCO-layout Mask R-CNN state dict from a freshly initialised torchvision model (no download), whose
    classifier says "car" (COCO id 3) for every region, so detections are certain whatever the image."""
    torch.manual_seed(0)
    state = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    state = {k: v.half() for k, v in state.items() if not k.endswith("num_batches_tracked")}  # as the real file
    state["roi_heads.box_predictor.cls_score.weight"].zero_()
    state["roi_heads.box_predictor.cls_score.bias"].zero_()
    state["roi_heads.box_predictor.cls_score.bias"][3] = 8.0
    return state


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert maskrcnn_cache_file().is_relative_to(tmp_path)  # the hub dir follows $TORCH_HOME
    return tmp_path / "torch"


FAST = {"min_size": 128, "max_size": 192, "proposals": 100, "max_detections": 5}


def test_maskrcnn_from_the_torch_hub_cache(
    torch_home: Path, maskrcnn_state: dict[str, torch.Tensor], frontal_row: dict[str, str]
) -> None:
    cache = maskrcnn_cache_file()
    assert cache.name == "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    cache.parent.mkdir(parents=True)
    torch.save(maskrcnn_state, cache)
    segmenter = MaskRCNNSegmenter(allow_download=False, **FAST)
    image = open_rgb(frontal_row["path"])
    result = segmenter.segment(image)
    assert (result.found, result.backend, result.image_size) == (True, "maskrcnn", image.size)
    assert result.confidence == pytest.approx(math.exp(8) / (math.exp(8) + 90), abs=1e-3)
    x1, y1, x2, y2 = result.box
    assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
    assert result.mask is not None and result.mask.shape == (image.height, image.width)
    segmenter.car_labels = (1,)  # only people count: every detection is a car, so nothing is found
    nothing = segmenter.segment(image)
    assert (nothing.found, nothing.box, nothing.mask) == (False, None, None)


def test_maskrcnn_from_an_explicit_safetensors_file(tmp_path: Path, maskrcnn_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "maskrcnn.safetensors"
    save_file({k: v.contiguous() for k, v in maskrcnn_state.items()}, str(path))
    segmenter = MaskRCNNSegmenter(weights_path=path, allow_download=False, **FAST)
    bias = segmenter.model.roi_heads.box_predictor.cls_score.bias
    assert bias[3].item() == 8.0 and bias[1].item() == 0.0  # the file's weights, not a fresh initialisation


def test_maskrcnn_missing_weights_names_file_and_url(torch_home: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as caught:
        MaskRCNNSegmenter(allow_download=False)
    message = str(caught.value)
    assert str(torch_home / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth") in message
    assert "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in message


def test_maskrcnn_failed_download_is_a_clear_error(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = segment.MASKRCNN_WEIGHTS

    def offline(**kwargs: Any) -> dict:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(
        segment, "MASKRCNN_WEIGHTS", types.SimpleNamespace(url=real.url, meta=real.meta, get_state_dict=offline)
    )
    with pytest.raises(WeightsNotFoundError, match=r"not available offline.*no network"):
        MaskRCNNSegmenter()


def test_maskrcnn_refuses_wrong_or_unsafe_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="not found"):
        MaskRCNNSegmenter(weights_path=tmp_path / "absent.pth")
    wrong = tmp_path / "carnet.pth"
    torch.save(CarNet({"car": 1}).state_dict(), wrong)
    with pytest.raises(WeightsNotFoundError, match="does not hold Mask R-CNN"):
        MaskRCNNSegmenter(weights_path=wrong, **FAST)
    pickled = tmp_path / "pickle.pth"
    torch.save({"payload": types.SimpleNamespace(x=1)}, pickled)  # needs full unpickling: refused
    with pytest.raises(WeightsNotFoundError, match="could not be read"):
        MaskRCNNSegmenter(weights_path=pickled, **FAST)


# --- detectron2 adapter ------------------------------------------------------------------------------------------


class FakeBoxes:
    """Shaped like detectron2.structures.Boxes."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class FakeInstances:
    """Shaped like detectron2.structures.Instances: image_size is (height, width)."""

    def __init__(self, image_size: tuple[int, int], **fields: Any):
        self.image_size = image_size
        self._fields = fields

    def has(self, name: str) -> bool:
        return name in self._fields

    def get(self, name: str) -> Any:
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        return self._fields

    def to(self, device: str) -> FakeInstances:
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._fields[name]

    def __len__(self) -> int:
        return len(self._fields["scores"])


def fake_instances(height: int = 60, width: int = 100, masks: bool = True) -> FakeInstances:
    boxes = torch.tensor([[10, 10, 30, 30], [5, 5, 95, 55], [0, 0, 100, 60], [40, 20, 90, 58]], dtype=torch.float32)
    pred_masks = torch.zeros((4, height, width), dtype=torch.bool)
    for index, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        pred_masks[index, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2] = True
    fields = {
        "pred_boxes": FakeBoxes(boxes),
        "scores": torch.tensor([0.99, 0.7, 0.98, 0.9]),
        "pred_classes": torch.tensor([2, 2, 0, 7]),  # car, car, person, truck (detectron2's 0-based ids)
    }
    if masks:
        fields["pred_masks"] = pred_masks
    return FakeInstances((height, width), **fields)


def test_detectron2_outputs_pick_the_main_car() -> None:
    instances = fake_instances()
    result = segmentation_from_detectron2(instances)
    assert (result.found, result.backend, result.image_size) == (True, "detectron2", (100, 60))
    assert result.box == (5.0, 5.0, 95.0, 55.0)  # 90 x 50 x 0.7 beats 20 x 20 x 0.99; the person does not count
    assert result.confidence == pytest.approx(0.7)
    assert np.array_equal(result.mask, instances.pred_masks[1].numpy())
    with_trucks = segmentation_from_detectron2(instances, car_class_ids=(2, 7), score_threshold=0.8)
    assert with_trucks.box == (40.0, 20.0, 90.0, 58.0)


def test_detectron2_outputs_without_a_car_or_masks() -> None:
    assert not segmentation_from_detectron2(fake_instances(), score_threshold=0.995).found
    no_masks = segmentation_from_detectron2(fake_instances(masks=False))
    assert no_masks.found and no_masks.mask is None
    empty = FakeInstances(
        (60, 100),
        pred_boxes=FakeBoxes(torch.zeros((0, 4))),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.int64),
        pred_masks=torch.zeros((0, 60, 100), dtype=torch.bool),
    )
    result = segmentation_from_detectron2(empty)
    assert (result.found, result.image_size) == (False, (100, 60))


def test_detectron2_fields_as_a_mapping_with_raw_tensors() -> None:
    fields = fake_instances().get_fields()
    mapping = {**fields, "pred_boxes": fields["pred_boxes"].tensor + torch.tensor([-20.0, 0.0, 0.0, 0.0])}
    result = segmentation_from_detectron2(mapping)
    assert result.image_size == (100, 60)  # from the masks
    assert result.box == (0.0, 5.0, 95.0, 55.0)  # clamped to the image
    with pytest.raises(ValueError, match="image_size"):
        segmentation_from_detectron2({k: v for k, v in mapping.items() if k != "pred_masks"})


def test_detectron2_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "detectron2", None)  # import fails even where detectron2 is installed
    with pytest.raises(BackendUnavailableError, match=r"detectron2 package.*'gate' or 'maskrcnn'"):
        Detectron2Segmenter()
    with pytest.raises(BackendUnavailableError, match="detectron2"):
        make_segmenter("detectron2")


def test_detectron2_refuses_pickled_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"\.pth"):
        Detectron2Segmenter(weights=tmp_path / "model_final.pkl")


def test_detectron2_adapter_end_to_end_with_a_fake_detectron2(
    monkeypatch: pytest.MonkeyPatch, frontal_row: dict[str, str]
) -> None:
    """The adapter drives detectron2's API as documented: config from the model zoo, BGR input, instances out."""
    image = open_rgb(frontal_row["path"])
    seen: dict[str, Any] = {}

    class DefaultPredictor:
        def __init__(self, cfg: Any):
            seen["cfg"] = cfg

        def __call__(self, bgr: np.ndarray) -> dict[str, Any]:
            seen["input"] = bgr
            return {"instances": fake_instances(image.height, image.width)}

    def get_cfg() -> Any:
        cfg = types.SimpleNamespace(MODEL=types.SimpleNamespace(ROI_HEADS=types.SimpleNamespace()))
        cfg.merge_from_file = lambda path: seen.setdefault("config_file", path)
        return cfg

    modules = {
        "detectron2": types.ModuleType("detectron2"),
        "detectron2.model_zoo": types.SimpleNamespace(
            get_config_file=lambda name: f"/zoo/{name}", get_checkpoint_url=lambda name: f"https://zoo/{name}.pkl"
        ),
        "detectron2.config": types.SimpleNamespace(get_cfg=get_cfg),
        "detectron2.engine": types.SimpleNamespace(DefaultPredictor=DefaultPredictor),
    }
    modules["detectron2"].model_zoo = modules["detectron2.model_zoo"]  # type: ignore[attr-defined]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    segmenter = make_segmenter("detectron2", score_threshold=0.6)
    result = segmenter.segment(image)
    assert seen["config_file"] == "/zoo/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    model_cfg = seen["cfg"].MODEL
    assert (model_cfg.DEVICE, model_cfg.ROI_HEADS.SCORE_THRESH_TEST) == ("cpu", 0.6)
    assert model_cfg.WEIGHTS == "https://zoo/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml.pkl"
    assert np.array_equal(seen["input"], np.asarray(image)[:, :, ::-1])  # BGR, as DefaultPredictor expects
    assert result.found and result.box == (5.0, 5.0, 95.0, 55.0) and result.image_size == image.size


# --- factory -----------------------------------------------------------------------------------------------------


def test_factory_builds_by_name() -> None:
    gate = make_segmenter(" Gate ", model=gate_net(), transform=TRANSFORM, car_threshold=0.7)
    assert isinstance(gate, GateSegmenter) and gate.car_threshold == 0.7


def test_factory_errors_are_carmorph_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match=r"Unknown segmenter 'yolo'.*gate, maskrcnn, detectron2"):
        make_segmenter("yolo")
    with pytest.raises(BackendUnavailableError, match=r"'gate'.*model"):
        make_segmenter("gate")
    with pytest.raises(BackendUnavailableError, match=r"'maskrcnn'.*colour"):
        make_segmenter("maskrcnn", colour="red")
    with pytest.raises(CarmorphError, match="not found"):
        make_segmenter("maskrcnn", weights_path=tmp_path / "absent.pth")
