"""Grad-CAM for the modernity network: which parts of the car crop drove the year-bin prediction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.models import CarNet, ImageTransform

# A perceptually ordered dark-blue → red → yellow ramp (anchor colours of 'inferno'), so no matplotlib is needed.
RAMP = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class GradCam:
    """Heatmap (H x W float32 in [0, 1], the input image's size) for one year bin, and that bin's probability."""

    heatmap: np.ndarray
    year_bin: int
    probability: float


def grad_cam(
    model: CarNet, image: Image.Image, transform: ImageTransform, year_bin: int | None = None, head: str = "year_bin"
) -> GradCam:
    """Grad-CAM on layer4 for `year_bin` (default: the predicted bin); all zeros when no region raises the score."""
    with torch.inference_mode(False), torch.enable_grad():  # works even when the caller is in inference mode
        with torch.no_grad():
            maps = model.feature_maps(transform([image]))
        maps.requires_grad_(True)
        logits = model.forward_from_maps(maps)[head][0]
        target = int(logits.argmax()) if year_bin is None else year_bin
        (gradients,) = torch.autograd.grad(logits[target], maps)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * maps.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=(image.height, image.width), mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    heatmap = (cam / peak if peak > 0 else torch.zeros_like(cam)).clamp_(0.0, 1.0).numpy().astype(np.float32)
    probability = float(torch.softmax(logits.detach(), dim=0)[target])
    return GradCam(heatmap=heatmap, year_bin=target, probability=probability)


def colourise(heatmap: np.ndarray) -> np.ndarray:
    """H x W values in [0, 1] to H x W x 3 uint8 colours along RAMP."""
    position = np.clip(heatmap, 0.0, 1.0) * (len(RAMP) - 1)
    anchors = np.arange(len(RAMP))
    channels = [np.interp(position, anchors, RAMP[:, c]) for c in range(3)]
    return np.round(np.stack(channels, axis=-1)).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The image with the coloured heatmap blended on top (`alpha` = heatmap weight); heatmap resized to fit."""
    colours = Image.fromarray(colourise(heatmap))
    if colours.size != image.size:
        colours = colours.resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image.convert("RGB"), colours, alpha)
