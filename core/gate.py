"""The gate network's outputs as probabilities and boxes, one function for the app, the build and evaluation.

Two gate layouts exist. The seed's ResNet-18 gate has heads `car`, `box` (normalised x1, y1, x2, y2 through a
sigmoid) and `frontal`. The EfficientNet-Lite0 gate has linear heads `car` and `view` (VIEW_CLASSES) on the
pooled feature of a frozen ImageNet backbone. Its box comes from a `BoxHead` on the backbone's maps where the bundle
has one (`training.box_head`), else from the class activation map of the car head (the car logit is the mean over
positions of w·f(x, y), so w·f(x, y) says where the car evidence is), thresholded at `cam_threshold` of its peak.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.models import CarNet
from core.viewpoint import VIEW_CLASSES

LEGACY_GATE_HEADS: dict[str, int] = {"car": 1, "box": 4, "frontal": 1}
VIEW_GATE_HEADS: dict[str, int] = {"car": 1, "view": len(VIEW_CLASSES)}
GATE_LAYOUTS = (LEGACY_GATE_HEADS, VIEW_GATE_HEADS)
DEFAULT_CAM_THRESHOLD = 0.3
CAM_GRID = 56  # the map is upsampled to this many cells a side before thresholding


@dataclass(frozen=True)
class GateEstimates:
    """Per image of a batch: car probability, P(front), view probabilities (N x 4, or None) and the car box
    (N x 4, normalised x1, y1, x2, y2)."""

    car: np.ndarray
    frontal: np.ndarray
    views: np.ndarray | None
    boxes: np.ndarray


def is_gate_layout(heads: Mapping[str, int]) -> bool:
    return dict(heads) in GATE_LAYOUTS


class BoxHead(nn.Module):
    """The car's box (normalised x1, y1, x2, y2) regressed from the gate backbone's maps: a 1x1 convolution to a
    few channels, then one linear layer over the grid of positions, so that where the car is stays known (the
    pooled feature has lost it). The maps are pooled to `grid` x `grid` cells first (a no-op at the gate's input
    size)."""

    def __init__(self, width: int, channels: int = 64, grid: int = 5, dropout: float = 0.2):
        super().__init__()
        self.width, self.channels, self.grid = width, channels, grid
        self.reduce = nn.Sequential(nn.BatchNorm2d(width), nn.Conv2d(width, channels, 1), nn.BatchNorm2d(channels),
                                    nn.ReLU(), nn.Dropout(dropout))  # fmt: skip
        self.out = nn.Linear(channels * grid * grid, 4)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        corners = torch.sigmoid(self.out(self.reduce(F.adaptive_avg_pool2d(maps, self.grid)).flatten(1)))
        x1, x2 = torch.minimum(corners[:, 0], corners[:, 2]), torch.maximum(corners[:, 0], corners[:, 2])
        y1, y2 = torch.minimum(corners[:, 1], corners[:, 3]), torch.maximum(corners[:, 1], corners[:, 3])
        return torch.stack([x1, y1, x2, y2], dim=1)


def gate_estimates(
    gate: CarNet,
    batch: torch.Tensor,
    cam_threshold: float = DEFAULT_CAM_THRESHOLD,
    box_head: BoxHead | None = None,
) -> GateEstimates:
    """Run the gate on a normalised batch of whole frames."""
    with torch.inference_mode():
        return gate_estimates_from_maps(gate, gate.feature_maps(batch), cam_threshold, box_head)


def gate_estimates_from_maps(
    gate: CarNet,
    maps: torch.Tensor,
    cam_threshold: float = DEFAULT_CAM_THRESHOLD,
    box_head: BoxHead | None = None,
) -> GateEstimates:
    """The gate's estimates from its backbone's maps of the frames (reused when another network computed them).
    The box: `box_head`'s where given, else the seed gate's box head or the car head's activation map."""
    with torch.inference_mode():
        outputs = gate.forward_from_maps(maps)
        if box_head is not None:
            boxes = box_head(maps.float()).numpy()
        elif "view" in outputs:
            boxes = cam_boxes(maps, gate.heads["car"].weight[0], cam_threshold)
        else:
            boxes = torch.sigmoid(outputs["box"]).numpy()
    return gate_probabilities(outputs, boxes)


def gate_probabilities(outputs: Mapping[str, torch.Tensor], boxes: np.ndarray | None = None) -> GateEstimates:
    """Car, frontal and view probabilities from the gate's head outputs (P(front) from a view head, else the
    frontal head); `boxes` as computed by the caller (None where no maps were at hand)."""
    with torch.inference_mode():
        car = torch.sigmoid(outputs["car"][:, 0]).numpy()
        if "view" in outputs:
            views, frontal = view_probabilities(outputs["view"])
        else:
            views = None
            frontal = torch.sigmoid(outputs["frontal"][:, 0]).numpy()
    return GateEstimates(car=car, frontal=frontal, views=views, boxes=boxes)


def view_probabilities(view_logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image, each view class's probability (N x len(VIEW_CLASSES)) and P(front), from the view head's logits
    (of the whole frame, or of the car's crop)."""
    with torch.inference_mode():
        views = torch.softmax(view_logits, dim=1).numpy()
    return views, views[:, VIEW_CLASSES.index("front")]


def cam_boxes(maps: torch.Tensor, weight: torch.Tensor, threshold: float) -> np.ndarray:
    """Normalised boxes around the cells whose car activation is at least `threshold` of the image's peak."""
    cam = torch.einsum("c,nchw->nhw", weight, maps)[:, None]
    cam = F.interpolate(cam, size=(CAM_GRID, CAM_GRID), mode="bilinear", align_corners=False)[:, 0]
    low = cam.flatten(1).min(1).values[:, None, None]
    high = cam.flatten(1).max(1).values[:, None, None]
    hot = ((cam - low) / (high - low).clamp_min(1e-6) >= threshold).numpy()
    boxes = np.empty((len(hot), 4), np.float32)
    for i, cells in enumerate(hot):
        rows, cols = np.nonzero(cells.any(1))[0], np.nonzero(cells.any(0))[0]
        boxes[i] = (cols[0] / CAM_GRID, rows[0] / CAM_GRID, (cols[-1] + 1) / CAM_GRID, (rows[-1] + 1) / CAM_GRID)
    return boxes
