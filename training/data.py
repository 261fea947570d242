"""Decode-once image caches and batch augmentation for CPU training.

Images are decoded, cropped and resized once into a uint8 array (N x S x S x 3) saved under `cache/`,
so an epoch costs only the network (the idea of torchvision's `--cache-dataset`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision.transforms import v2
from tqdm import tqdm

from core.artifacts import crop_to_box


def pixel_box(image: Image.Image, row: pd.Series) -> tuple[float, float, float, float]:
    """The row's car box (normalised columns box_x1..box_y2) in the image's pixels (NaN when unknown)."""
    w, h = image.size
    return row["box_x1"] * w, row["box_y1"] * h, row["box_x2"] * w, row["box_y2"] * h


def crop_box(image: Image.Image, row: pd.Series) -> Image.Image:
    """The car's box with the serving margin; the whole image when unknown."""
    box = pixel_box(image, row)
    return crop_to_box(image, None if np.isnan(box[0]) else box)


def build_cache(table: pd.DataFrame, data_root: Path, size: int, crop: bool, cache_dir: Path) -> np.ndarray:
    """uint8 array of every row's image (car crop or whole frame) squash-resized to size x size; cached."""
    key = hashlib.sha1(("|".join(table["path"]) + f"|{size}|{crop}|{data_root.resolve()}").encode()).hexdigest()[:16]
    path = cache_dir / f"images_{size}_{'crop' if crop else 'full'}_{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    out = np.empty((len(table), size, size, 3), dtype=np.uint8)
    for i, (_, row) in enumerate(tqdm(table.iterrows(), total=len(table), desc=f"decode {size}px", unit="img")):
        with Image.open(data_root / row["path"]) as raw:  # trusted training data, not user uploads
            image = ImageOps.exif_transpose(raw).convert("RGB")
        if crop:
            image = crop_box(image, row)
        out[i] = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


TRIVIAL_AUGMENT = v2.TrivialAugmentWide()


@dataclass(frozen=True)
class Augment:
    """Per-batch augmentation on uint8 NHWC tensors: optionally TrivialAugment (Müller & Hutter 2021: each image one
    randomly chosen operation of torchvision's wide set, e.g. a rotation, shear, posterisation or equalisation, at a
    random strength), then jittered crop, flip, colour, and random erasing (Zhong et al. 2020: with probability
    `erase`, one rectangle of 2-33 % of the image replaced by noise). Returns NCHW float [0, 1] and which images
    were flipped."""

    out_size: int
    min_scale: float = 0.55
    flip: bool = True
    colour: float = 0.3
    crop: bool = True
    erase: float = 0.0
    trivial: bool = False

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch.permute(0, 3, 1, 2)
        if self.trivial:
            x = torch.stack([TRIVIAL_AUGMENT(img) for img in x])
        x = x.float().div_(255.0)
        n = x.shape[0]
        if self.crop:
            x = torch.stack([self._jittered_crop(img, generator) for img in x])
        else:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        flipped = torch.rand(n, generator=generator) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        x[flipped] = x[flipped].flip(-1)
        if self.colour:
            x = self._colour(x, generator)
        for i in (torch.rand(n, generator=generator) < self.erase).nonzero().flatten().tolist():
            self._erase(x[i], generator)
        return x.clamp_(0, 1), flipped

    @staticmethod
    def _erase(img: torch.Tensor, generator: torch.Generator) -> None:
        """In place: one random rectangle (2-33 % of the area, aspect 0.3-3.3) filled with uniform noise."""
        x0, y0, w, h = _random_box(img.shape[-1], (0.02, 0.33), 0.3, generator)
        img[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(img.shape[0], h, w, generator=generator)

    def _jittered_crop(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x0, y0, cw, ch = _random_box(img.shape[-1], (self.min_scale, 1.0), 4 / 3, generator)
        patch = img[:, y0 : y0 + ch, x0 : x0 + cw].unsqueeze(0)
        return F.interpolate(patch, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)[0]

    def _colour(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]

        def factor() -> torch.Tensor:
            return (1 + self.colour * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)).to(x.dtype)

        x = x * factor()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor() + mean
        grey = x.mean(dim=1, keepdim=True)
        return (x - grey) * factor() + grey


def _random_box(
    size: int, share: tuple[float, float], aspect: float, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """A random box (x0, y0, w, h) in a size x size image: its area a uniform share of the image's within `share`,
    its aspect log-uniform in [1/aspect, aspect] (or [aspect, 1/aspect]), clipped to the image."""
    low, high = share
    area = low + (high - low) * torch.rand(1, generator=generator).item()
    ratio = float(np.exp(np.log(aspect) * (2 * torch.rand(1, generator=generator).item() - 1)))
    w = min(size, max(1, round(size * np.sqrt(area * ratio))))
    h = min(size, max(1, round(size * np.sqrt(area / ratio))))
    x0 = int(torch.randint(0, size - w + 1, (1,), generator=generator))
    y0 = int(torch.randint(0, size - h + 1, (1,), generator=generator))
    return x0, y0, w, h


def resize_batch(batch: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC to NCHW float [0, 1] at size x size, no augmentation (evaluation)."""
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
