"""Find the main car in an image: its box, a mask and a confidence, from one of three interchangeable backends.

- `GateSegmenter` ("gate"): the bundle's own gate network (car probability, box, frontal probability in one
  forward pass) plus an OpenCV GrabCut mask inside the box. Offline, no download; the default.
- `MaskRCNNSegmenter` ("maskrcnn"): torchvision's COCO Mask R-CNN; weights from a path or the torch hub cache,
  a download only as the last resort, and a `WeightsNotFoundError` naming the missing file when offline.
- `Detectron2Segmenter` ("detectron2"): an adapter for detectron2's Mask R-CNN when detectron2 is installed.

`make_segmenter(name, **kwargs)` builds one by name (the bundle's "segmenter" field). When several cars are
detected, the main one is the largest box area x score.
"""

from __future__ import annotations

import importlib.util
import inspect
import urllib.error
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.models.detection import MaskRCNN, MaskRCNN_ResNet50_FPN_Weights
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms.functional import pil_to_tensor

from core.errors import BackendUnavailableError, WeightsNotFoundError
from core.gate import DEFAULT_CAM_THRESHOLD, LEGACY_GATE_HEADS, BoxHead, gate_estimates, is_gate_layout
from core.models import CarNet, ImageTransform, load_carnet, load_state_dict_file

Box = tuple[float, float, float, float]
COCO_CAR = 3  # torchvision's COCO category ids (1-based, 0 = background): 3 car, 8 truck
COCO_TRUCK = 8
DETECTRON2_COCO_CAR = 2  # detectron2's contiguous 0-based COCO ids: 2 car, 7 truck
DETECTRON2_COCO_TRUCK = 7


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The main car found in an image, or that none was found.

    `box` is (x1, y1, x2, y2) in pixels of the image that was segmented, `mask` an H x W bool array of the same
    image (True on the car; None when the backend gives no mask), both None when `found` is False.
    `confidence` is the backend's score for the car (for the gate: its car probability, set even when no car
    was found). `image_size` is (width, height). `frontal_probability` is set only by backends that estimate
    the view in the same pass (the gate); it is None otherwise, and the pipeline then runs the frontal gate
    itself. A dedicated, typed field rather than a free-form dict: it is the only extra any backend has.
    Instances compare by identity (they hold an array).
    """

    found: bool
    box: Box | None
    mask: np.ndarray | None
    confidence: float
    backend: str
    image_size: tuple[int, int]
    frontal_probability: float | None = None
    view_probabilities: tuple[float, ...] | None = None  # over core.viewpoint.VIEW_CLASSES, from a view head

    def __post_init__(self) -> None:
        if self.found and self.box is None:
            raise ValueError("a found car needs a box")
        width, height = self.image_size
        if self.mask is not None and (self.mask.dtype != np.bool_ or self.mask.shape != (height, width)):
            raise ValueError(
                f"mask must be a bool array of shape {(height, width)}, got {self.mask.dtype} {self.mask.shape}"
            )

    @classmethod
    def not_found(
        cls,
        backend: str,
        image_size: tuple[int, int],
        confidence: float = 0.0,
        frontal_probability: float | None = None,
        view_probabilities: tuple[float, ...] | None = None,
    ) -> Segmentation:
        return cls(False, None, None, float(confidence), backend, image_size, frontal_probability, view_probabilities)

    def crop_box(self, margin: float = 0.0) -> tuple[int, int, int, int]:
        """Integer crop box: `box` widened by `margin` x its width/height on each side, clamped to the image."""
        if self.box is None:
            raise ValueError("no box to crop: the segmentation found no car")
        x1, y1, x2, y2 = self.box
        dx, dy = margin * (x2 - x1), margin * (y2 - y1)
        width, height = self.image_size
        left, top = max(0, int(np.floor(x1 - dx))), max(0, int(np.floor(y1 - dy)))
        right, bottom = min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy)))
        return left, top, max(right, left + 1), max(bottom, top + 1)

    def crop(self, image: Image.Image, margin: float = 0.0) -> Image.Image:
        """The box crop of `image` (the image that was segmented), widened by `margin`; no masking."""
        self._check_image(image)
        return image.crop(self.crop_box(margin))

    def masked_crop(
        self, image: Image.Image, margin: float = 0.0, fill: tuple[int, int, int] = (255, 255, 255)
    ) -> Image.Image:
        """The box crop with everything outside the mask painted `fill` (the plain crop when there is no mask)."""
        crop = self.crop(image, margin)
        if self.mask is None:
            return crop
        left, top, right, bottom = self.crop_box(margin)
        background = Image.new(crop.mode, crop.size, fill)
        keep = Image.fromarray(self.mask[top:bottom, left:right].astype(np.uint8) * 255, mode="L")
        return Image.composite(crop, background, keep)

    def _check_image(self, image: Image.Image) -> None:
        if image.size != self.image_size:
            raise ValueError(f"image is {image.size}, but this segmentation is of a {self.image_size} image")


@runtime_checkable
class Segmenter(Protocol):
    """Finds the main car in an RGB image."""

    name: str

    def segment(self, image: Image.Image) -> Segmentation: ...


# --- shared helpers -----------------------------------------------------------------------------------------


def select_main_car(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, car_labels: Collection[int], score_threshold: float
) -> int | None:
    """Index of the main car among N detections (xyxy boxes): a car label, score >= threshold, largest area x score."""
    boxes, scores, labels = np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float), np.asarray(labels)
    keep = np.isin(labels, list(car_labels)) & (scores >= score_threshold)
    if not keep.any():
        return None
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return int(np.argmax(np.where(keep, areas * scores, -np.inf)))


def clamp_box(box: Collection[float], width: int, height: int) -> Box:
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    return x1, y1, x2, y2


def to_numpy(value: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a NumPy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


# --- gate backend (offline) -----------------------------------------------------------------------------------


def box_from_normalised(values: Collection[float], width: int, height: int, min_fraction: float = 0.05) -> Box:
    """Pixel box from normalised (x1, y1, x2, y2): corners ordered, clamped to [0, 1], at least `min_fraction` wide
    and high (grown around its centre and shifted back inside the image)."""
    x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in values)
    (x1, x2), (y1, y2) = _grow_span(*sorted((x1, x2)), min_fraction), _grow_span(*sorted((y1, y2)), min_fraction)
    return x1 * width, y1 * height, x2 * width, y2 * height


def _grow_span(low: float, high: float, minimum: float) -> tuple[float, float]:
    if high - low >= minimum:
        return low, high
    centre = (low + high) / 2.0
    low = min(max(centre - minimum / 2.0, 0.0), 1.0 - minimum)
    return low, low + minimum


def grabcut_mask(
    image: Image.Image,
    box: Box,
    max_side: int = 64,
    iterations: int = 2,
    context: float = 0.3,
    core: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """H x W bool mask of the object inside `box`, by OpenCV GrabCut on the box region downscaled to `max_side`.

    GrabCut starts from: outside the box = background (the region is the box widened by `context` so there are
    background samples), inside = probably foreground, and the central `core` fraction of the box = surely
    foreground (without that seed GrabCut often gives up and calls everything background). The result is
    upscaled and is always inside the box. If GrabCut cannot run (too few pixels, OpenCV error) or finds
    nothing, the mask is the filled box. OpenCV's RNG is seeded so masks repeat. GrabCut's cost grows faster
    than the pixel count (about 5 ms at 64 px, 40 ms at 128 px on one busy core), hence the small default.
    """
    width, height = image.size
    left, top, right, bottom = _pixel_box(box, width, height)
    mask = np.zeros((height, width), dtype=bool)
    region = Segmentation(True, box, None, 1.0, "", (width, height)).crop_box(context)
    small, scale = _downscaled_bgr(image.crop(region), max_side)
    rect = _grabcut_rect(box, region, scale, small.shape[1], small.shape[0])
    foreground = _run_grabcut(small, rect, core, iterations, seed) if rect is not None else None
    if foreground is None:
        mask[top:bottom, left:right] = True
        return mask
    upscaled = cv2.resize(foreground, (region[2] - region[0], region[3] - region[1]), interpolation=cv2.INTER_NEAREST)
    mask[top:bottom, left:right] = upscaled[top - region[1] : bottom - region[1], left - region[0] : right - region[0]]
    return mask


def _run_grabcut(
    bgr: np.ndarray, rect: tuple[int, int, int, int], core: float, iterations: int, seed: int
) -> np.ndarray | None:
    """uint8 foreground map (1 = object) of `bgr`, or None when OpenCV fails or finds no foreground."""
    labels = _grabcut_seed(bgr.shape[:2], rect, core)
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.setRNGSeed(seed)
        cv2.grabCut(bgr, labels, None, *models, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    foreground = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    return foreground.astype(np.uint8) if foreground.any() else None


def _grabcut_seed(shape: tuple[int, int], rect: tuple[int, int, int, int], core: float) -> np.ndarray:
    """GrabCut's initial labels: background outside `rect`, probable foreground in it, sure foreground at its core."""
    x, y, w, h = rect
    labels = np.full(shape, cv2.GC_BGD, np.uint8)
    labels[y : y + h, x : x + w] = cv2.GC_PR_FGD
    if core > 0:
        core_w, core_h = max(1, round(w * core)), max(1, round(h * core))
        core_x, core_y = x + (w - core_w) // 2, y + (h - core_h) // 2
        labels[core_y : core_y + core_h, core_x : core_x + core_w] = cv2.GC_FGD
    return labels


def _pixel_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    left, top = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    return left, top, min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))


def _downscaled_bgr(image: Image.Image, max_side: int) -> tuple[np.ndarray, float]:
    scale = min(1.0, max_side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    rgb = np.asarray(small if small.mode == "RGB" else small.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1]), scale


def _grabcut_rect(
    box: Box, region: tuple[int, int, int, int], scale: float, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """GrabCut's (x, y, w, h) rectangle in the downscaled region, leaving at least one background pixel around."""
    x1, y1 = max(1, int((box[0] - region[0]) * scale)), max(1, int((box[1] - region[1]) * scale))
    x2 = min(width - 1, int(np.ceil((box[2] - region[0]) * scale)))
    y2 = min(height - 1, int(np.ceil((box[3] - region[1]) * scale)))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    return x1, y1, x2 - x1, y2 - y1


class GateSegmenter:
    """The bundle's gate CarNet on the whole image, then a GrabCut mask in the box.

    One forward pass gives the car probability, the box and the view (core.gate.gate_estimates: heads car, box,
    frontal, or car and view with the box from `box_head` where given, else from the car head's activation map).
    `found` is car probability >=
    `car_threshold`. The model is put in eval mode. GrabCut runs on a copy at most `grabcut_side` px on its
    longer side (a few ms); `mask=False` skips it (mask None).
    """

    name: str = "gate"

    def __init__(
        self,
        model: CarNet,
        transform: ImageTransform,
        car_threshold: float = 0.5,
        mask: bool = True,
        grabcut_side: int = 64,
        grabcut_iterations: int = 2,
        min_box_fraction: float = 0.05,
        cam_threshold: float = DEFAULT_CAM_THRESHOLD,
        box_head: BoxHead | None = None,
    ):
        if not is_gate_layout(model.head_sizes):
            raise BackendUnavailableError(
                f"The gate network has heads {sorted(model.head_sizes)}; the gate segmenter needs car, box and "
                "frontal, or car and view."
            )
        self.model = model.eval()
        self.transform = transform
        self.car_threshold = float(car_threshold)
        self.mask = mask
        self.grabcut_side = grabcut_side
        self.grabcut_iterations = grabcut_iterations
        self.min_box_fraction = min_box_fraction
        self.cam_threshold = cam_threshold
        self.box_head = box_head

    @classmethod
    def from_file(cls, path: Path, transform: ImageTransform, **kwargs: Any) -> GateSegmenter:
        """From a seed-layout gate safetensors file (heads car, box, frontal)."""
        return cls(load_carnet(Path(path), LEGACY_GATE_HEADS), transform, **kwargs)

    def segment(self, image: Image.Image) -> Segmentation:
        device = next(self.model.parameters()).device
        batch = self.transform([image]).to(device)
        estimates = gate_estimates(self.model, batch, self.cam_threshold, self.box_head)
        car_probability, frontal = float(estimates.car[0]), float(estimates.frontal[0])
        views = None if estimates.views is None else tuple(float(p) for p in estimates.views[0])
        if car_probability < self.car_threshold:
            return Segmentation.not_found(self.name, image.size, car_probability, frontal, views)
        box = box_from_normalised(estimates.boxes[0].tolist(), *image.size, self.min_box_fraction)
        mask = grabcut_mask(image, box, self.grabcut_side, self.grabcut_iterations) if self.mask else None
        return Segmentation(True, box, mask, car_probability, self.name, image.size, frontal, views)


# --- torchvision Mask R-CNN -----------------------------------------------------------------------------------

MASKRCNN_WEIGHTS = MaskRCNN_ResNet50_FPN_Weights.DEFAULT


def maskrcnn_cache_file() -> Path:
    """Where torchvision's weights API keeps the COCO Mask R-CNN weights (torch hub cache, honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / MASKRCNN_WEIGHTS.url.rsplit("/", 1)[-1]


def build_maskrcnn(min_size: int = 800, max_size: int = 1333, **kwargs: Any) -> MaskRCNN:
    """An untrained Mask R-CNN ResNet-50 FPN laid out like torchvision's pretrained one (frozen batch norm),
    so that its COCO state dict loads strictly. Nothing is downloaded."""
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d)
    classes = len(MASKRCNN_WEIGHTS.meta["categories"])
    return MaskRCNN(backbone, num_classes=classes, min_size=min_size, max_size=max_size, **kwargs)


def load_maskrcnn_state(weights_path: str | Path | None = None, allow_download: bool = True) -> dict[str, torch.Tensor]:
    """COCO Mask R-CNN weights: `weights_path` (.pth, tensors only, or .safetensors), else the torch hub cache,
    else torchvision's download (when `allow_download`). Raises `WeightsNotFoundError` naming file and URL."""
    if weights_path is not None:
        return load_state_dict_file(Path(weights_path))
    cached = maskrcnn_cache_file()
    if cached.is_file():
        return load_state_dict_file(cached)
    advice = (
        f"Mask R-CNN weights are not available offline: expected {cached} (download {MASKRCNN_WEIGHTS.url} "
        "there, or pass a weights path), or use the 'gate' segmenter, which needs no download."
    )
    if not allow_download:
        raise WeightsNotFoundError(advice)
    try:
        return MASKRCNN_WEIGHTS.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise WeightsNotFoundError(f"{advice} Download failed: {error}") from error


class MaskRCNNSegmenter:
    """torchvision's COCO Mask R-CNN (ResNet-50 FPN): the main car among `car_labels` detections (COCO ids:
    3 car, 8 truck) with score >= `score_threshold`; its mask is mask probability > `mask_threshold`.

    `min_size`/`max_size` set the network's resize, `proposals` the region proposals kept and `max_detections`
    the detections (each gets a mask) per image; smaller values trade recall for speed.
    """

    name: str = "maskrcnn"

    def __init__(
        self,
        weights_path: str | Path | None = None,
        score_threshold: float = 0.5,
        car_labels: Collection[int] = (COCO_CAR,),
        mask_threshold: float = 0.5,
        min_size: int = 800,
        max_size: int = 1333,
        proposals: int = 1000,
        max_detections: int = 100,
        allow_download: bool = True,
        device: str = "cpu",
    ):
        self.score_threshold = float(score_threshold)
        self.car_labels = tuple(car_labels)
        self.mask_threshold = float(mask_threshold)
        self.device = torch.device(device)
        state = load_maskrcnn_state(weights_path, allow_download)
        model = build_maskrcnn(
            min_size,
            max_size,
            box_score_thresh=self.score_threshold,
            rpn_pre_nms_top_n_test=proposals,
            rpn_post_nms_top_n_test=proposals,
            box_detections_per_img=max_detections,
        )
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            source = weights_path or maskrcnn_cache_file()
            raise WeightsNotFoundError(
                f"{source} does not hold Mask R-CNN ResNet-50 FPN COCO weights ({str(error).splitlines()[0]})."
            ) from error
        for module in model.modules():  # torchvision does the same for these COCO_V1 weights (trained with eps 0)
            if isinstance(module, FrozenBatchNorm2d):
                module.eps = 0.0
        self.model = model.eval().to(self.device)

    def segment(self, image: Image.Image) -> Segmentation:
        tensor = pil_to_tensor(image.convert("RGB")).float().div_(255.0).to(self.device)
        with torch.inference_mode():
            output = self.model([tensor])[0]
        boxes, scores, labels = (to_numpy(output[key]) for key in ("boxes", "scores", "labels"))
        index = select_main_car(boxes, scores, labels, self.car_labels, self.score_threshold)
        if index is None:
            return Segmentation.not_found(self.name, image.size)
        mask = to_numpy(output["masks"][index, 0] > self.mask_threshold).astype(bool)
        box = clamp_box(boxes[index], *image.size)
        return Segmentation(True, box, mask, float(scores[index]), self.name, image.size)


# --- detectron2 adapter ---------------------------------------------------------------------------------------

DETECTRON2_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"


def _instances_field(instances: Any, name: str) -> Any:
    if isinstance(instances, Mapping):
        return instances.get(name)
    if hasattr(instances, "has"):
        return instances.get(name) if instances.has(name) else None
    return getattr(instances, name, None)


def _instances_size(instances: Any, masks: np.ndarray | None, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height): the argument, else detectron2's `Instances.image_size` (height, width), else the masks'."""
    if image_size is not None:
        return image_size
    size = getattr(instances, "image_size", None)
    if size is not None:
        return int(size[1]), int(size[0])
    if masks is not None and masks.ndim == 3:
        return int(masks.shape[2]), int(masks.shape[1])
    raise ValueError("cannot tell the image size: pass image_size=(width, height)")


def segmentation_from_detectron2(
    instances: Any,
    image_size: tuple[int, int] | None = None,
    car_class_ids: Collection[int] = (DETECTRON2_COCO_CAR,),
    score_threshold: float = 0.5,
) -> Segmentation:
    """A `Segmentation` from detectron2 predictions (`outputs["instances"]`, or a mapping of its fields).

    Reads `pred_boxes` (a `Boxes` with `.tensor`, or an N x 4 tensor, xyxy pixels), `scores`, `pred_classes`
    (detectron2's 0-based contiguous COCO ids: 2 = car) and optional `pred_masks` (N x H x W bool).
    """
    raw_boxes = _instances_field(instances, "pred_boxes")
    if raw_boxes is None:  # no detections field at all: nothing found
        boxes, scores, classes = np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)
    else:
        boxes = to_numpy(getattr(raw_boxes, "tensor", raw_boxes))
        scores = to_numpy(_instances_field(instances, "scores"))
        classes = to_numpy(_instances_field(instances, "pred_classes"))
    raw_masks = _instances_field(instances, "pred_masks")
    masks = to_numpy(raw_masks) if raw_masks is not None else None
    width, height = _instances_size(instances, masks, image_size)
    index = select_main_car(boxes, scores, classes, car_class_ids, score_threshold)
    if index is None:
        return Segmentation.not_found(Detectron2Segmenter.name, (width, height))
    mask = masks[index].astype(bool) if masks is not None else None
    box = clamp_box(boxes[index], width, height)
    return Segmentation(True, box, mask, float(scores[index]), Detectron2Segmenter.name, (width, height))


def detectron2_available() -> bool:
    return importlib.util.find_spec("detectron2") is not None


class Detectron2Segmenter:
    """detectron2's COCO Mask R-CNN R50-FPN 3x through `DefaultPredictor` (used only when detectron2 is installed).

    `weights` is a local .pth checkpoint or, by default, detectron2's model-zoo URL (downloaded and cached by
    detectron2 itself; those zoo files are pickles that detectron2 loads, so a user-supplied `weights` must be a
    .pth file, which detectron2 reads with torch.load).
    """

    name: str = "detectron2"

    def __init__(
        self,
        weights: str | Path | None = None,
        config: str = DETECTRON2_CONFIG,
        score_threshold: float = 0.5,
        car_class_ids: Collection[int] = (DETECTRON2_COCO_CAR,),
        device: str = "cpu",
    ):
        if weights is not None and Path(weights).suffix != ".pth":
            raise WeightsNotFoundError(
                f"Detectron2 weights must be a .pth file (pickled .pkl files are refused): {weights}"
            )
        if weights is not None and not Path(weights).is_file():
            raise WeightsNotFoundError(f"Detectron2 weights file not found: {weights}")
        self.score_threshold = float(score_threshold)
        self.car_class_ids = tuple(car_class_ids)
        self._predictor = self._build_predictor(weights, config, device)

    def _build_predictor(self, weights: str | Path | None, config: str, device: str) -> Any:
        try:
            from detectron2 import model_zoo
            from detectron2.config import get_cfg
            from detectron2.engine import DefaultPredictor
        except ImportError as error:
            raise BackendUnavailableError(
                "The 'detectron2' segmenter needs the detectron2 package, which is not installed (it is built from "
                "https://github.com/facebookresearch/detectron2). Use the 'gate' or 'maskrcnn' segmenter instead."
            ) from error
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(config))
        cfg.MODEL.WEIGHTS = str(weights) if weights is not None else model_zoo.get_checkpoint_url(config)
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = self.score_threshold
        cfg.MODEL.DEVICE = device
        return DefaultPredictor(cfg)

    def segment(self, image: Image.Image) -> Segmentation:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # DefaultPredictor expects BGR
        instances = self._predictor(bgr)["instances"].to("cpu")
        return segmentation_from_detectron2(instances, image.size, self.car_class_ids, self.score_threshold)


# --- factory --------------------------------------------------------------------------------------------------

SEGMENTERS: dict[str, type] = {
    GateSegmenter.name: GateSegmenter,
    MaskRCNNSegmenter.name: MaskRCNNSegmenter,
    Detectron2Segmenter.name: Detectron2Segmenter,
}


def make_segmenter(name: str, **kwargs: Any) -> Segmenter:
    """Build a segmenter by name ("gate", "maskrcnn", "detectron2") with its constructor's keyword arguments."""
    key = name.strip().lower()
    if key not in SEGMENTERS:
        raise BackendUnavailableError(f"Unknown segmenter {name!r}: choose one of {', '.join(SEGMENTERS)}.")
    cls = SEGMENTERS[key]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as error:
        raise BackendUnavailableError(f"Cannot build the {key!r} segmenter: {error}.") from error
    return cls(**kwargs)
