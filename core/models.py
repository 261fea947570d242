"""ResNet-18 networks with named heads, their preprocessing, and safe weight loading (safetensors).

Every carmorph network is a torchvision ResNet-18 whose `fc` is replaced by named linear heads on the
512-d penultimate (avgpool) feature, so the embedding is always available next to the predictions.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from core.config import EMBEDDING_DIM
from core.errors import BundleError, WeightsNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageTransform:
    """Serving preprocessing: squash-resize to a square, scale to [0, 1], normalise. Travels with a bundle."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_array(self, image: Image.Image) -> np.ndarray:
        """uint8 HxWx3 array at the network's input size (what the network sees, before normalisation)."""
        resized = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)

    def normalise(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """NxHxWx3 uint8 (or Nx3xHxW float in [0, 1]) to a normalised Nx3xHxW float tensor."""
        batch = batch_uint8.permute(0, 3, 1, 2).float().div_(255.0) if batch_uint8.dtype == torch.uint8 else batch_uint8
        mean, std = self._mean_std
        return (batch - mean.to(batch.device)) / std.to(batch.device)

    @cached_property
    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as 1x3x1x1 tensors, made once per transform (scoring calls normalise per image)."""
        return torch.tensor(self.mean).view(1, 3, 1, 1), torch.tensor(self.std).view(1, 3, 1, 1)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        arrays = np.stack([self.to_array(image) for image in images])
        return self.normalise(torch.from_numpy(arrays))


class CarNet(nn.Module):
    """ResNet-18 backbone (fc removed) with named linear heads on its 512-d avgpool feature."""

    def __init__(self, heads: Mapping[str, int]):
        super().__init__()
        self.backbone = resnet18(weights=None)
        self.backbone.fc = nn.Identity()
        self.heads = nn.ModuleDict({name: nn.Linear(EMBEDDING_DIM, size) for name, size in heads.items()})

    @property
    def head_sizes(self) -> dict[str, int]:
        return {name: head.out_features for name, head in self.heads.items()}

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Output of layer4 (N x 512 x h x w), the maps Grad-CAM weighs."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward_from_maps(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.flatten(self.backbone.avgpool(maps), 1)
        outputs = {name: head(features) for name, head in self.heads.items()}
        outputs["features"] = features
        return outputs

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_from_maps(self.feature_maps(x))


def build_carnet(heads: Mapping[str, int], imagenet: bool = False, weights_path: Path | None = None) -> CarNet:
    """A CarNet; with `imagenet` its backbone starts from torchvision's ImageNet ResNet-18 weights."""
    model = CarNet(heads)
    if imagenet:
        state = imagenet_state_dict(weights_path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        model.backbone.load_state_dict(state, strict=False)
    return model


def imagenet_weights_file() -> Path:
    """Where torchvision's weights API caches ResNet18_Weights.DEFAULT (the torch hub cache)."""
    url = ResNet18_Weights.DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def imagenet_state_dict(weights_path: Path | None = None) -> dict[str, torch.Tensor]:
    """ImageNet ResNet-18 weights: from `weights_path`, else the torch cache, else torchvision's download."""
    if weights_path is not None:
        return load_state_dict_file(Path(weights_path))
    try:
        return ResNet18_Weights.DEFAULT.get_state_dict(progress=False, check_hash=False)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise WeightsNotFoundError(
            f"ImageNet ResNet-18 weights are not available offline: expected {imagenet_weights_file()} "
            f"(download {ResNet18_Weights.DEFAULT.url} there, or pass a weights path). Detail: {error}"
        ) from error


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a .pth/.pt file with torch's tensors-only unpickler."""
    if not path.is_file():
        raise WeightsNotFoundError(f"Weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsNotFoundError(f"Weights file {path} could not be read: {error}") from error


def save_carnet(model: CarNet, path: Path, half: bool = True) -> None:
    """Write the network's tensors as safetensors (fp16 by default to keep bundles small)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def load_carnet(path: Path, heads: Mapping[str, int]) -> CarNet:
    """A CarNet in eval mode from a bundle's safetensors file; shape mismatches become BundleError."""
    try:
        state = load_file(str(path))
    except Exception as error:
        raise BundleError(f"{path.name} is not a readable safetensors file ({error}).") from error
    model = CarNet(heads)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise BundleError(f"{path.name} lacks tensors {missing[:3]}{' ...' if len(missing) > 3 else ''}.")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise BundleError(
                f"{path.name}: tensor {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)} "
                "(label count and weights disagree)."
            )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in expected})
    return model.eval()
