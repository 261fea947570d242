"""Artifact bundles: write them (training, tests) and load them with validation (the app).

A bundle is a directory: `manifest.json` plus the files it lists with their sha256 (docs/CONTRACTS.md).
Nothing here unpickles: safetensors, parquet, json, and numpy files read with `allow_pickle=False`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import save_file

from core.atlas import Atlas, AtlasCanvas, AtlasSpec, install_atlas, open_atlas
from core.config import (
    CROP_MARGIN,
    SEED_BODY_TYPES,
    SHARED_YEAR_BINS,
    YearBin,
    bundle_dir,
    head_years,
    year_to_bin,
)
from core.errors import BundleError
from core.gate import (
    DEFAULT_CAM_THRESHOLD,
    LEGACY_GATE_HEADS,
    VIEW_GATE_HEADS,
    BoxHead,
    GateEstimates,
    gate_estimates,
    gate_estimates_from_maps,
    gate_probabilities,
    is_gate_layout,
    view_probabilities,
)
from core.models import (
    ARCHITECTURES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    POOLED_WIDTH,
    RESNET18,
    CarNet,
    ImageTransform,
    Sharpening,
    beside_width,
    crop_outputs,
    load_carnet,
    read_safetensors,
    save_backbone,
    save_carnet,
)
from core.projection import MapPlacer, l2_normalise, pca_coordinates
from core.scoring import (
    Morphs,
    body_type_from_logits,
    group_key,
    modernity_from_logits,
    typicality,
)
from core.viewpoint import VIEW_CLASSES, FrontalDecision, accepted_views, frontal_decision, view_rejection

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
IMAGES_FILE = "images.parquet"
EMBEDDINGS_FILE = "embeddings.npy"
EMBEDDINGS_DTYPE = np.dtype(np.float16)  # what a build writes (`stored_embeddings`)
STORED_EMBEDDINGS = (EMBEDDINGS_DTYPE, np.dtype(np.float32))  # readable: older bundles stored float32
MORPHS_FILE = "morphs.npz"
NETWORK_FILES = {
    "modernity": "modernity.safetensors",
    "bodytype": "bodytype.safetensors",
    "gate": "frontal.safetensors",
}
BACKBONE_FILE = "backbone.safetensors"
SEGMENTERS = ("gate", "maskrcnn", "detectron2")
VIEW_INPUTS = ("frame", "crop")  # what the gate's view head reads: the whole frame, or the car's crop
BUILD_HINT = "Build one with `python -m training.build` (see its --help) or set CARMORPH_BUNDLE to a bundle directory."

# images.parquet: the labels a build starts from, then what the build adds (docs/CONTRACTS.md). `group`,
# `typicality` and `typicality_percentile` use the known body type and year bin where the labels have them,
# predictions only where they do not; `view` is the gate's most likely view class.
LABEL_COLUMNS = ("id", "path", "dataset", "split", "make", "model", "class_name", "year", "year_bin", "body_type")
IMAGE_COLUMNS = (
    *LABEL_COLUMNS,
    "pred_year_bin",
    "modernity",
    "expected_year",
    "pred_body_type",
    "group",
    "typicality",
    "typicality_percentile",
    "frontal_prob",
    "view",
    "umap_x",
    "umap_y",
    "atlas_index",
)
BOX_COLUMNS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
MORPH_KEYS = ("features", "body_type", "year_bin", "count", "images", "train_typicality")
MAP_SAMPLE = 50_000  # rows a build fits the 2-D map on; the others are placed by kNN as uploads are


@dataclass(frozen=True)
class NetworkSpec:
    """One network of a bundle: its weights file, head sizes, where its backbone started (scratch, or imagenet with
    the source), its architecture, the width of its neck (0: heads on the pooled feature) and, when it shares one
    backbone with other networks of the bundle, that backbone's file (then `file` holds only the neck and heads);
    `beside` names another network whose (frozen) backbone runs beside this one's, its features appended to this
    backbone's before the neck (e.g. the body type reading the gate's ImageNet teacher too)."""

    file: str
    heads: dict[str, int]
    init: str = "scratch"
    arch: str = RESNET18
    neck: int = 0
    backbone: str = ""
    beside: str = ""

    @property
    def stored_in_half(self) -> bool:
        """A network stored with its own backbone is stored in fp16; on a shared backbone file, in full precision."""
        return not self.backbone


@dataclass(frozen=True)
class BoxHeadSpec:
    """The gate's box head (core.gate.BoxHead): its weights file and layout."""

    file: str
    width: int
    channels: int
    grid: int

    @classmethod
    def of(cls, head: BoxHead, file: str = "box_head.safetensors") -> BoxHeadSpec:
        return cls(file, head.width, head.channels, head.grid)


@dataclass(frozen=True)
class Thresholds:
    """Car probability; P(front) for the frontal decision; P(a valid view) for a list of valid views; the car
    activation map's fraction of its peak that bounds the box (view-head gates)."""

    car: float = 0.5
    frontal: float = 0.5
    view: float = 0.5
    cam: float = DEFAULT_CAM_THRESHOLD


@dataclass(frozen=True)
class Manifest:
    """Everything manifest.json says (docs/CONTRACTS.md); `files` maps file name to sha256."""

    name: str
    input_size: int
    year_bins: tuple[YearBin, ...]
    body_types: tuple[str, ...]
    networks: dict[str, NetworkSpec]
    thresholds: Thresholds = Thresholds()
    valid_views: str = "frontal"
    segmenter: str = "gate"
    morph_min_members: int = 5
    atlas: AtlasSpec = field(default_factory=AtlasSpec)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    created: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    gate_input_size: int | None = None  # the gate's own input size where it differs from the scores' (None: same)
    flip_average: bool = False  # the scores are the mean over the crop and its mirror image
    box_head: BoxHeadSpec | None = None  # the gate's box from a trained head (None: from the activation map)
    sharpening: Sharpening | None = None  # an unsharp mask on car crops the scores must enlarge (None: never)
    view_from: str = "frame"  # the gate's view head reads the whole frame (gate_transform) or the car's crop

    @property
    def transform(self) -> ImageTransform:
        """What the modernity and body-type networks see (the car crop)."""
        return ImageTransform(self.input_size, self.mean, self.std, self.sharpening)

    @property
    def gate_transform(self) -> ImageTransform:
        """What the gate sees (the whole image)."""
        return ImageTransform(self.gate_size, self.mean, self.std)

    @property
    def gate_size(self) -> int:
        return self.input_size if self.gate_input_size is None else self.gate_input_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "created": self.created,
            "input_size": self.input_size,
            "gate_input_size": self.gate_size,
            "flip_average": self.flip_average,
            "box_head": asdict(self.box_head) if self.box_head else None,
            "sharpening": asdict(self.sharpening) if self.sharpening else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "year_bins": [{"start": b.start, "end": b.end, "centre": b.centre} for b in self.year_bins],
            "body_types": list(self.body_types),
            "networks": {k: _network_dict(n) for k, n in self.networks.items()},
            "thresholds": asdict(self.thresholds),
            "valid_views": self.valid_views,
            "view_from": self.view_from,
            "segmenter": self.segmenter,
            "morph_min_members": self.morph_min_members,
            "atlas": self.atlas.to_dict(),
            "provenance": self.provenance,
            "metrics": self.metrics,
            "training": self.training,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Parse and type-check; a missing or malformed field is a BundleError naming it."""
        return cls(
            schema_version=_field(data, "schema_version", int),
            name=_field(data, "name", str),
            created=_field(data, "created", str),
            input_size=_field(data, "input_size", int),
            gate_input_size=_field(data, "gate_input_size", int) if "gate_input_size" in data else None,
            flip_average=_field(data, "flip_average", _boolean) if "flip_average" in data else False,
            box_head=_field(data, "box_head", _box_head_spec) if data.get("box_head") else None,
            sharpening=_field(data, "sharpening", _sharpening) if data.get("sharpening") else None,
            mean=_field(data, "mean", _triple),
            std=_field(data, "std", _triple),
            year_bins=_field(
                data,
                "year_bins",
                lambda v: tuple(YearBin(int(b["start"]), int(b["end"]), float(b["centre"])) for b in v),
            ),
            body_types=_field(data, "body_types", lambda v: tuple(str(x) for x in v)),
            networks=_field(data, "networks", _network_specs),
            thresholds=_field(data, "thresholds", _thresholds),
            valid_views=_field(data, "valid_views", str),
            view_from=_field(data, "view_from", str) if "view_from" in data else "frame",
            segmenter=_field(data, "segmenter", str),
            morph_min_members=_field(data, "morph_min_members", int),
            atlas=_field(data, "atlas", AtlasSpec.from_dict),
            provenance=_field(data, "provenance", dict),
            metrics=_field(data, "metrics", dict),
            training=_field(data, "training", dict),
            files=_field(data, "files", lambda v: {str(k): str(h) for k, h in v.items()}),
        )


def standard_networks(
    year_bins: int,
    body_types: int,
    inits: Mapping[str, str] | None = None,
    arch: str = RESNET18,
    necks: Mapping[str, int] | None = None,
    shared_backbone: Collection[str] = (),
    year_classes: int = 0,
    beside: Mapping[str, str] | None = None,
) -> dict[str, NetworkSpec]:
    """The three networks of a bundle with head sizes matching the label sets (the seed's gate layout for a
    ResNet-18, the view layout otherwise); the networks named in `shared_backbone` run one backbone, stored once;
    `year_classes` > 0 gives the modernity network a per-year head; `beside` maps a network to the one whose
    backbone runs beside its own."""
    gate = dict(LEGACY_GATE_HEADS if arch == RESNET18 else VIEW_GATE_HEADS)
    modernity = {"year_bin": year_bins} | ({"year": year_classes} if year_classes else {})
    heads = {"modernity": modernity, "bodytype": {"body_type": body_types}, "gate": gate}
    inits, necks, beside = inits or {}, necks or {}, beside or {}
    return {
        key: NetworkSpec(
            NETWORK_FILES[key],
            heads[key],
            inits.get(key, "scratch"),
            arch,
            necks.get(key, 0),
            BACKBONE_FILE if key in shared_backbone else "",
            beside.get(key, ""),
        )
        for key in NETWORK_FILES
    }


@dataclass(eq=False)
class Bundle:
    """A loaded, validated bundle: the manifest, the three networks (eval mode) and the tables they came with."""

    path: Path
    manifest: Manifest
    modernity: CarNet
    bodytype: CarNet
    gate: CarNet
    images: pd.DataFrame
    embeddings: np.ndarray  # N x D float16 (float32 in older bundles), row i = images row i (body-type network
    # features), memory-mapped
    morphs: Morphs
    atlas: Atlas  # thumbnails, decoded shard by shard when asked for
    placer: MapPlacer  # fitted on the L2-normalised embeddings and umap_x/umap_y
    transform: ImageTransform
    box_head: BoxHead | None = None  # the gate's box head (None: the box from the activation map)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # per-bundle runtime objects (segmenters...)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def networks(self) -> dict[str, CarNet]:
        """The three networks by their manifest key (modernity, bodytype, gate)."""
        return {"modernity": self.modernity, "bodytype": self.bodytype, "gate": self.gate}

    @property
    def year_bins(self) -> tuple[YearBin, ...]:
        return self.manifest.year_bins

    @property
    def body_types(self) -> tuple[str, ...]:
        return self.manifest.body_types

    @property
    def thresholds(self) -> Thresholds:
        return self.manifest.thresholds

    @property
    def valid_views(self) -> str:
        return self.manifest.valid_views

    @property
    def segmenter(self) -> str:
        return self.manifest.segmenter

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.metrics

    @property
    def provenance(self) -> dict[str, Any]:
        return self.manifest.provenance

    @property
    def gate_transform(self) -> ImageTransform:
        return self.manifest.gate_transform

    @property
    def accepted_views(self) -> tuple[str, ...]:
        return accepted_views(self.valid_views)

    @property
    def unit_embeddings(self) -> np.ndarray:
        """L2-normalised float32 copy of the embeddings (what neighbour search compares), made on each call."""
        return l2_normalise(self.embeddings)

    def thumbnail(self, index: int) -> Image.Image:
        """Atlas tile `index` (an images row's `atlas_index`); IndexError outside the atlas."""
        return self.atlas.tile(index)


# ---------------------------------------------------------------------------------------------------- loading


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load and validate a bundle (argument, else $CARMORPH_BUNDLE, else artifacts/default)."""
    directory = bundle_dir(path)
    if not directory.is_dir():
        raise BundleError(f"No artifact bundle at {directory}. {BUILD_HINT}")
    manifest = read_manifest(directory)
    check_manifest(manifest)
    verify_files(directory, manifest)
    images = _read_images(directory / IMAGES_FILE)
    embeddings = _read_embeddings(directory / EMBEDDINGS_FILE, len(images), embedding_dim(manifest))
    morphs = _read_morphs(directory / MORPHS_FILE, manifest)
    atlas = open_atlas(directory, manifest.atlas, atlas_tiles(images))
    coords = images[["umap_x", "umap_y"]].to_numpy(np.float32)
    if not np.isfinite(coords).all():
        raise BundleError(f"{IMAGES_FILE}: umap_x/umap_y contain missing or infinite values.")
    networks = load_networks(directory, manifest)
    return Bundle(
        path=directory,
        manifest=manifest,
        modernity=networks["modernity"],
        bodytype=networks["bodytype"],
        gate=networks["gate"],
        images=images,
        embeddings=embeddings,
        morphs=morphs,
        atlas=atlas,
        placer=MapPlacer().fit(embeddings, coords),
        transform=manifest.transform,
        box_head=load_box_head(directory, manifest.box_head) if manifest.box_head else None,
    )


def load_box_head(directory: Path, spec: BoxHeadSpec) -> BoxHead:
    head = BoxHead(spec.width, spec.channels, spec.grid)
    try:
        head.load_state_dict({k: v.float() for k, v in read_safetensors(directory / spec.file).items()})
    except RuntimeError as error:
        raise BundleError(f"{spec.file} does not fit the box head the manifest describes ({error}).") from error
    return head.eval()


def load_networks(directory: Path, manifest: Manifest) -> dict[str, CarNet]:
    """The three networks in eval mode; the networks naming one backbone file share one backbone module, and a
    network with a `beside` runs that network's backbone beside its own."""
    specs = manifest.networks
    networks = {
        key: load_carnet(
            directory / spec.file,
            spec.heads,
            spec.arch,
            spec.neck,
            directory / spec.backbone if spec.backbone else None,
            network_beside_width(manifest, spec),
        )
        for key, spec in specs.items()
    }
    for key, spec in specs.items():
        if spec.beside:
            networks[key].attach_beside(networks[spec.beside])
    groups: dict[str, list[CarNet]] = {}
    for key, spec in manifest.networks.items():
        if spec.backbone:
            groups.setdefault(spec.backbone, []).append(networks[key])
    for members in groups.values():
        for network in members[1:]:
            network.backbone = members[0].backbone
    return networks


def read_manifest(directory: Path) -> Manifest:
    """Parse manifest.json, refusing schema versions this code does not read."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{directory} has no {MANIFEST_FILE}, so it is not a complete bundle. {BUILD_HINT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON ({error}). {BUILD_HINT}") from error
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object, not {type(data).__name__}.")
    version = _field(data, "schema_version", int)
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"Bundle {directory} has schema version {version}, newer than this carmorph reads ({SCHEMA_VERSION}): "
            "update carmorph, or rebuild the bundle with this version's `python -m training.build`."
        )
    if version < SCHEMA_VERSION:
        raise BundleError(
            f"Bundle {directory} has schema version {version}, older than this carmorph reads ({SCHEMA_VERSION}): "
            "rebuild it with `python -m training.build`."
        )
    return Manifest.from_dict(data)


def check_manifest(manifest: Manifest) -> None:
    """Consistency of the manifest's own fields: label sets against head sizes, thresholds, policy names."""
    if len(manifest.year_bins) < 2:
        raise BundleError("manifest.json: year_bins needs at least two bins.")
    if not manifest.body_types or len(set(manifest.body_types)) != len(manifest.body_types):
        raise BundleError(f"manifest.json: body_types must be non-empty and unique, got {list(manifest.body_types)}.")
    for name, size in (("input_size", manifest.input_size), ("gate_input_size", manifest.gate_size)):
        if size < 16:
            raise BundleError(f"manifest.json: {name} {size} is too small (at least 16 px).")
    for name, value in asdict(manifest.thresholds).items():
        if not 0.0 <= value <= 1.0:
            raise BundleError(f"manifest.json: thresholds.{name} = {value} is outside [0, 1].")
    try:
        views = accepted_views(manifest.valid_views)
    except ValueError as error:
        raise BundleError(f"manifest.json: {error}.") from error
    if (
        views not in (VIEW_CLASSES, ("front",))
        and "view" not in manifest.networks.get("gate", NetworkSpec("", {})).heads
    ):
        raise BundleError(f"manifest.json: valid_views {manifest.valid_views!r} needs a gate with a view head.")
    if manifest.view_from not in VIEW_INPUTS:
        raise BundleError(f"manifest.json: view_from must be one of {VIEW_INPUTS}, got {manifest.view_from!r}.")
    if manifest.view_from == "crop" and "view" not in manifest.networks.get("gate", NetworkSpec("", {})).heads:
        raise BundleError("manifest.json: view_from 'crop' needs a gate with a view head.")
    if manifest.segmenter not in SEGMENTERS:
        raise BundleError(f"manifest.json: segmenter must be one of {SEGMENTERS}, got {manifest.segmenter!r}.")
    if set(manifest.networks) != set(NETWORK_FILES):
        raise BundleError(f"manifest.json: networks must be {sorted(NETWORK_FILES)}, got {sorted(manifest.networks)}.")
    has_year_head = "year" in manifest.networks["modernity"].heads
    years = len(head_years(manifest.year_bins)) if has_year_head else 0
    expected = standard_networks(len(manifest.year_bins), len(manifest.body_types), year_classes=years)
    for key, spec in manifest.networks.items():
        if spec.arch not in ARCHITECTURES:
            raise BundleError(
                f"manifest.json: network {key!r} has architecture {spec.arch!r}, not one of {ARCHITECTURES}."
            )
        if spec.beside and (spec.beside == key or spec.beside not in manifest.networks):
            raise BundleError(f"manifest.json: network {key!r} reads beside {spec.beside!r}, not another network.")
        if spec.beside and manifest.networks[spec.beside].beside:
            raise BundleError(f"manifest.json: network {key!r} reads beside {spec.beside!r}, which reads one itself.")
        if key == "gate" and is_gate_layout(spec.heads):
            continue
        if spec.heads != expected[key].heads:
            raise BundleError(
                f"manifest.json: network {key!r} has heads {spec.heads}, but the label sets need "
                f"{expected[key].heads} ({len(manifest.year_bins)} year bins, {len(manifest.body_types)} body types)."
            )


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Every file the bundle needs is listed, present and has the sha256 the manifest records."""
    needed = [spec.file for spec in manifest.networks.values()]
    needed += sorted({spec.backbone for spec in manifest.networks.values()} - {""})
    needed += [IMAGES_FILE, EMBEDDINGS_FILE, MORPHS_FILE, *manifest.atlas.files]
    needed += [manifest.box_head.file] if manifest.box_head else []
    unlisted = [name for name in needed if name not in manifest.files]
    if unlisted:
        raise BundleError(f"manifest.json: files lacks the sha256 of {unlisted}.")
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"Bundle {directory} is incomplete: missing file {name}. {BUILD_HINT}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{name} in {directory} is corrupted or was changed: sha256 {actual[:12]}…, "
                f"manifest says {expected[:12]}…. Copy or rebuild the bundle again."
            )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_images(path: Path) -> pd.DataFrame:
    try:
        images = pd.read_parquet(path)
    except Exception as error:
        raise BundleError(f"{path.name} is not a readable parquet table ({error}).") from error
    missing = [column for column in IMAGE_COLUMNS if column not in images.columns]
    if missing:
        raise BundleError(f"{path.name} lacks columns {missing}.")
    return images


def embedding_dim(manifest: Manifest) -> int:
    """Width of the body-type network's embedding: its neck, else its architecture's pooled feature (and the
    pooled feature of the network beside)."""
    spec = manifest.networks["bodytype"]
    return spec.neck or POOLED_WIDTH[spec.arch] + network_beside_width(manifest, spec)


def network_beside_width(manifest: Manifest, spec: NetworkSpec) -> int:
    """The pooled width of the network `spec` reads beside its own backbone (0: none)."""
    return beside_width(manifest.networks[spec.beside].arch if spec.beside else "")


def _read_embeddings(path: Path, rows: int, dim: int) -> np.ndarray:
    """The embeddings memory-mapped as stored (read from disk where used, so a large bundle loads without reading
    them; their readers compute in float32)."""
    embeddings = _load_npy(path, mmap=True)
    if embeddings.ndim != 2 or embeddings.shape[1] != dim or embeddings.dtype not in STORED_EMBEDDINGS:
        raise BundleError(f"{path.name} must be an N x {dim} float16 or float32 array, got {embeddings.dtype} "
                          f"{embeddings.shape}.")  # fmt: skip
    if len(embeddings) != rows:
        raise BundleError(f"{path.name} has {len(embeddings)} rows but {IMAGES_FILE} has {rows}: they must match.")
    return embeddings


def _read_morphs(path: Path, manifest: Manifest) -> Morphs:
    arrays = _load_npz(path)
    missing = [key for key in MORPH_KEYS if key not in arrays]
    if missing:
        raise BundleError(f"{path.name} lacks arrays {missing}.")
    groups = len(arrays["features"])
    expected = {
        "features": (groups, embedding_dim(manifest)),
        "body_type": (groups,),
        "year_bin": (groups,),
        "count": (groups,),
        "images": (groups, None, None, 3),
        "train_typicality": (groups, None),
    }
    for key, shape in expected.items():
        actual = arrays[key].shape
        if len(actual) != len(shape) or any(e is not None and e != a for e, a in zip(shape, actual, strict=True)):
            raise BundleError(f"{path.name}: {key} has shape {actual}, expected {shape} (None = any size).")
    if groups and not (arrays["body_type"].min() >= 0 and arrays["body_type"].max() < len(manifest.body_types)):
        raise BundleError(f"{path.name}: body_type indices fall outside the {len(manifest.body_types)} body types.")
    if groups and not (arrays["year_bin"].min() >= 0 and arrays["year_bin"].max() < len(manifest.year_bins)):
        raise BundleError(f"{path.name}: year_bin indices fall outside the {len(manifest.year_bins)} year bins.")
    return Morphs(
        features=arrays["features"].astype(np.float32, copy=False),
        body_type=arrays["body_type"].astype(np.int64, copy=False),
        year_bin=arrays["year_bin"].astype(np.int64, copy=False),
        count=arrays["count"].astype(np.int64, copy=False),
        images=arrays["images"].astype(np.uint8, copy=False),
        train_typicality=arrays["train_typicality"].astype(np.float32, copy=False),
        body_types=manifest.body_types,
        year_bins=manifest.year_bins,
        min_members=manifest.morph_min_members,
    )


def atlas_tiles(images: pd.DataFrame) -> int:
    """Tiles the atlas must hold: one per tile the table names (rows of a resampled collection may share tiles)."""
    return int(images["atlas_index"].max()) + 1 if len(images) else 0


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as error:
        raise BundleError(f"{path.name} is not a readable .npy array without pickled objects ({error}).") from error


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as error:
        raise BundleError(f"{path.name} is not a readable .npz archive without pickled objects ({error}).") from error


def _field(data: Mapping[str, Any], key: str, convert: Callable[[Any], Any]) -> Any:
    if key not in data:
        raise BundleError(f"manifest.json lacks the field {key!r}.")
    try:
        return convert(data[key])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BundleError(f"manifest.json: field {key!r} is malformed ({type(error).__name__}: {error}).") from error


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"expected 3 numbers, got {len(values)}")
    return (float(values[0]), float(values[1]), float(values[2]))


def _network_dict(spec: NetworkSpec) -> dict[str, Any]:
    """A network's manifest entry; `beside` only where it reads another network's backbone."""
    return {k: v for k, v in asdict(spec).items() if k != "beside" or v}


def _network_specs(value: Mapping[str, Any]) -> dict[str, NetworkSpec]:
    return {
        str(key): NetworkSpec(
            file=str(spec["file"]),
            heads={str(head): int(size) for head, size in spec["heads"].items()},
            init=str(spec.get("init", "scratch")),
            arch=str(spec.get("arch", RESNET18)),
            neck=int(spec.get("neck", 0)),
            backbone=str(spec.get("backbone", "")),
            beside=str(spec.get("beside", "")),
        )
        for key, spec in value.items()
    }


def _box_head_spec(value: Mapping[str, Any]) -> BoxHeadSpec:
    return BoxHeadSpec(str(value["file"]), int(value["width"]), int(value["channels"]), int(value["grid"]))


def _sharpening(value: Mapping[str, Any]) -> Sharpening:
    sharpening = Sharpening(*(float(value[key]) for key in ("percent_per_enlargement", "onset", "radius")))
    if min(asdict(sharpening).values()) < 0 or sharpening.radius == 0:
        raise ValueError(f"expected a strength and an onset of 0 or more and a radius above 0, got {value!r}")
    return sharpening


def _thresholds(value: Mapping[str, Any]) -> Thresholds:
    defaults = Thresholds()
    return Thresholds(**{name: float(value.get(name, getattr(defaults, name))) for name in ("view", "cam")},
                      car=float(value["car"]), frontal=float(value["frontal"]))  # fmt: skip


# ---------------------------------------------------------------------------------------------------- writing


def write_bundle(
    directory: str | Path,
    manifest: Manifest,
    *,
    networks: Mapping[str, CarNet],
    images: pd.DataFrame,
    embeddings: np.ndarray,
    morphs: Morphs,
    atlas: Path,
) -> Manifest:
    """Write every file, then manifest.json last with their sha256 (a half-written bundle has no manifest). `atlas`
    is the folder of the shards an `AtlasCanvas` wrote, laid out as `manifest.atlas`: it moves into the bundle.

    Returns the manifest as written (with `files` and `created` filled in).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST_FILE).unlink(missing_ok=True)
    for key, spec in manifest.networks.items():
        if networks[key].head_sizes != spec.heads:
            raise ValueError(f"network {key!r} has heads {networks[key].head_sizes}, manifest says {spec.heads}")
        save_carnet(networks[key], directory / spec.file, half=spec.stored_in_half, backbone=not spec.backbone)
        if spec.backbone:
            save_backbone(networks[key], directory / spec.backbone)
    missing = [column for column in IMAGE_COLUMNS if column not in images.columns]
    if missing:
        raise ValueError(f"images table lacks columns {missing}")
    images.reset_index(drop=True).to_parquet(directory / IMAGES_FILE, index=False)
    write_embeddings(directory, embeddings)
    np.savez_compressed(
        directory / MORPHS_FILE,
        features=morphs.features.astype(np.float32),
        body_type=morphs.body_type.astype(np.int64),
        year_bin=morphs.year_bin.astype(np.int64),
        count=morphs.count.astype(np.int64),
        images=morphs.images.astype(np.uint8),
        train_typicality=morphs.train_typicality.astype(np.float32),
    )
    install_atlas(Path(atlas), directory, manifest.atlas)
    names = [spec.file for spec in manifest.networks.values()] + [IMAGES_FILE, EMBEDDINGS_FILE, MORPHS_FILE]
    names += sorted({spec.backbone for spec in manifest.networks.values()} - {""})
    names += manifest.atlas.files
    written = Manifest.from_dict(
        replace(manifest, box_head=None).to_dict()  # a box head joins a written bundle: `add_box_head`
        | {
            "created": manifest.created or datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {name: sha256_file(directory / name) for name in names},
        }
    )
    save_manifest(directory, written)
    return written


def add_box_head(directory: Path, manifest: Manifest, box_head: BoxHead) -> Manifest:
    """Give a written bundle the gate's box head (replacing one it had); returns the manifest as written."""
    spec = BoxHeadSpec.of(box_head)
    save_file(box_head.state_dict(), str(directory / spec.file))
    written = replace(manifest, box_head=spec, files=manifest.files | {spec.file: sha256_file(directory / spec.file)})
    save_manifest(directory, written)
    return written


def write_embeddings(directory: Path, embeddings: np.ndarray) -> None:
    """`embeddings.npy` as stored (`stored_embeddings`), written beside and renamed: a reader's memory map keeps the
    old file."""
    partial = directory / f"{EMBEDDINGS_FILE}.partial"
    with partial.open("wb") as handle:
        np.save(handle, stored_embeddings(embeddings), allow_pickle=False)
    partial.replace(directory / EMBEDDINGS_FILE)


def stored_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """The embeddings as a bundle stores them: float16, half the size of float32 (the largest file of a bundle
    with a wide embedding), and cosine similarities within 1e-3 of float32's. Everything computed from them at
    build time (morphs, typicality, the map) reads the float32 values first."""
    return np.ascontiguousarray(embeddings, dtype=EMBEDDINGS_DTYPE)


def save_manifest(directory: Path, manifest: Manifest) -> None:
    """Write manifest.json (last, once every file it names is in place)."""
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class NetworkOutputs:
    """What the bundle's networks say about a set of images (row i = image i)."""

    year_logits: np.ndarray  # N x K
    year_head_logits: np.ndarray  # N x Y, one per year of `head_years` (Y = 0: the network has no per-year head)
    body_logits: np.ndarray  # N x B
    features: np.ndarray  # N x D float32, body-type network (the embedding)
    frontal_prob: np.ndarray  # N, gate on the whole frame
    car_prob: np.ndarray  # N, gate on the whole frame
    view_probs: np.ndarray  # N x 4 over VIEW_CLASSES, gate on the whole frame (NaN without a view head)

    @staticmethod
    def concatenate(parts: Sequence[NetworkOutputs]) -> NetworkOutputs:
        return NetworkOutputs(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(NetworkOutputs)))

    def view_decision(self, i: int, thresholds: Thresholds) -> FrontalDecision:
        views = None if np.isnan(self.view_probs[i]).any() else self.view_probs[i]
        return frontal_decision(float(self.frontal_prob[i]), thresholds.frontal, views)

    def accepted(self, thresholds: Thresholds, valid_views: str) -> np.ndarray:
        """Per image: does the bundle's valid-views policy accept the gate's view estimate (as the app decides)."""
        return np.array(
            [view_rejection(self.view_decision(i, thresholds), valid_views, thresholds.view) is None
             for i in range(len(self.car_prob))], dtype=bool
        )  # fmt: skip


def per_year_logits(outputs: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The modernity network's per-year logits (N x Y), or an N x 0 array when it has no per-year head."""
    year = outputs.get("year")
    return year.numpy() if year is not None else np.zeros((len(outputs["year_bin"]), 0), np.float32)


def predict_images(
    networks: Mapping[str, CarNet],
    crops: Sequence[Image.Image],
    frames: Sequence[Image.Image],
    manifest: Manifest,
    estimates: GateEstimates | None = None,
) -> NetworkOutputs:
    """One batch through the three networks as `manifest` says: modernity and body type on the car crops (its
    `transform`; with `flip_average`, the mean over each crop and its mirror image), the gate on the frames (its
    `gate_transform`) unless its `estimates` of them are given, and its view head on the crops instead where the
    manifest's `view_from` is "crop". A backbone shared by the networks runs once per image (twice where the crop
    is not the whole frame or the gate has its own input size)."""
    transform, gate_transform, cam_threshold = manifest.transform, manifest.gate_transform, manifest.thresholds.cam
    modernity, bodytype, gate = networks["modernity"], networks["bodytype"], networks["gate"]
    from_crop = manifest.view_from == "crop"
    with torch.inference_mode():
        batch = transform(list(crops))
        scores = crop_outputs(modernity, bodytype, batch, manifest.flip_average, gate if from_crop else None)
        year, body = scores.year, scores.body
        frames_are_crops = all(frame is crop for frame, crop in zip(frames, crops, strict=True))
        one_pass = scores.maps is not None and gate.backbone is bodytype.backbone and gate_transform == transform
        if estimates is None and frames_are_crops and one_pass:
            estimates = gate_estimates_from_maps(gate, scores.maps, cam_threshold)
        elif estimates is None:
            estimates = gate_estimates(gate, gate_transform(list(frames)), cam_threshold)
    if scores.view_logits is not None:
        estimates = with_crop_views(estimates, scores.view_logits)
    return network_outputs(year, body, estimates)


def with_crop_views(estimates: GateEstimates, view_logits: torch.Tensor) -> GateEstimates:
    """The gate's estimates of the frames (car, box) with the view its view head reads from the crops."""
    views, frontal = view_probabilities(view_logits)
    return replace(estimates, views=views, frontal=frontal)


def network_outputs(
    year: Mapping[str, torch.Tensor], body: Mapping[str, torch.Tensor], gate: GateEstimates
) -> NetworkOutputs:
    """The three networks' outputs of one batch as numpy arrays (views NaN where the gate has no view head)."""
    views = gate.views if gate.views is not None else np.full((len(gate.car), len(VIEW_CLASSES)), np.nan)
    return NetworkOutputs(
        year_logits=year["year_bin"].numpy(),
        year_head_logits=per_year_logits(year),
        body_logits=body["body_type"].numpy(),
        features=body["features"].numpy().astype(np.float32),
        frontal_prob=gate.frontal,
        car_prob=gate.car,
        view_probs=views.astype(np.float32),
    )


def predict_pooled(networks: Mapping[str, CarNet], pooled: np.ndarray) -> NetworkOutputs:
    """The three networks' outputs from their shared backbone's pooled features of images whose crop is the whole
    frame (a cache of that backbone's outputs, computed once): the same numbers as predict_images on those images,
    without the backbone pass. Boxes need the maps, so none are computed."""
    if not networks["modernity"].backbone is networks["bodytype"].backbone is networks["gate"].backbone:
        raise ValueError("predict_pooled needs networks that share one backbone")
    if any(network.beside_width for network in networks.values()):
        raise ValueError("predict_pooled needs networks that read their own backbone alone (none beside)")
    x = torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32))
    with torch.inference_mode():
        year = networks["modernity"].forward_from_pooled(x)
        body = networks["bodytype"].forward_from_pooled(x)
        gate = gate_probabilities(networks["gate"].forward_from_pooled(x))
    return network_outputs(year, body, gate)


def table_from_labels(
    labels: pd.DataFrame, dataset: str, year_bins: Sequence[YearBin], split: str = "train"
) -> pd.DataFrame:
    """A shared-data labels.csv (stanford_cars, epfl_multiview) as bundle label columns plus its car boxes."""
    table = pd.DataFrame(
        {
            "id": [f"{dataset}/{Path(file).stem}" for file in labels["file"]],
            "path": [f"{dataset}/{file}" for file in labels["file"]],
            "dataset": dataset,
            "split": split,
            "make": _column(labels, "make", ""),
            "model": _column(labels, "model", ""),
            "class_name": _column(labels, "class_name", ""),
            "year": _column(labels, "year", -1).astype(int),
            "body_type": _column(labels, "body_type", "").fillna("").astype(str),
        }
    )
    bins = [year_to_bin(int(year), tuple(year_bins)) for year in table["year"]]
    table.insert(8, "year_bin", [-1 if index is None else index for index in bins])
    for column in BOX_COLUMNS:
        if column in labels.columns:
            table[column] = labels[column].to_numpy(dtype=float)
    return table


def crop_to_box(image: Image.Image, box: Sequence[float] | None, margin: float = CROP_MARGIN) -> Image.Image:
    """The box (x1, y1, x2, y2 px) widened by `margin` x its size on each side and clamped to the image (the crop
    the networks see, as in training and scoring); the whole image without a usable box."""
    if box is None or any(not math.isfinite(v) for v in box):
        return image
    dx, dy = margin * (box[2] - box[0]), margin * (box[3] - box[1])
    x1, y1 = max(0, math.floor(box[0] - dx)), max(0, math.floor(box[1] - dy))
    x2, y2 = min(image.width, math.ceil(box[2] + dx)), min(image.height, math.ceil(box[3] + dy))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return image
    return image.crop((x1, y1, x2, y2))


def annotate_images(
    labels: pd.DataFrame,
    outputs: NetworkOutputs,
    morphs: Morphs,
    coords: np.ndarray,
    thresholds: Thresholds,
    rows: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The labels table with the predictions, scores, typicality and map position of every image (the same
    scoring functions the app uses, so a fresh score of an unlabelled image agrees with its row). A car's group
    is its known body type and year bin; the predicted ones stand in only where a label is unknown. `rows`: the
    images' row numbers in the whole bundle (their atlas tiles) when `labels` is a part of it."""
    columns: dict[str, list[Any]] = {name: [] for name in IMAGE_COLUMNS[len(LABEL_COLUMNS) :]}
    known_body = [morphs.body_types.index(b) if b in morphs.body_types else -1 for b in labels["body_type"]]
    known_bin = labels["year_bin"].to_numpy(dtype=np.int64)
    for i in range(len(labels)):
        modernity = modernity_from_logits(outputs.year_logits[i], morphs.year_bins, outputs.year_head_logits[i])
        body = body_type_from_logits(outputs.body_logits[i], morphs.body_types)
        body_index = known_body[i] if known_body[i] >= 0 else body.index
        year_bin = int(known_bin[i]) if known_bin[i] >= 0 else modernity.predicted_bin
        typical = typicality(outputs.features[i], morphs, body_index, year_bin)
        columns["pred_year_bin"].append(modernity.predicted_bin)
        columns["modernity"].append(modernity.score)
        columns["expected_year"].append(modernity.expected_year)
        columns["pred_body_type"].append(body.label)
        columns["group"].append(group_key(morphs.body_types[body_index], year_bin) if typical.has_morph else "")
        columns["typicality"].append(typical.cosine if typical.has_morph else math.nan)
        columns["typicality_percentile"].append(typical.percentile if typical.has_morph else math.nan)
        columns["frontal_prob"].append(float(outputs.frontal_prob[i]))
        columns["view"].append(outputs.view_decision(i, thresholds).view or "")
        columns["umap_x"].append(float(coords[i, 0]))
        columns["umap_y"].append(float(coords[i, 1]))
        columns["atlas_index"].append(i if rows is None else int(rows[i]))
    table = labels.loc[:, list(LABEL_COLUMNS)].reset_index(drop=True).copy()
    for name, values in columns.items():
        table[name] = values
    return table.astype({"pred_year_bin": "int64", "atlas_index": "int64", "year": "int64", "year_bin": "int64"})


def flip_aligned_mean(stack: np.ndarray, rounds: int = 5) -> np.ndarray:
    """Pixel mean of N x H x W x 3 images after mirroring each one to face the same side as the others.

    Car crops face left or right; their plain mean is a blurred two-headed car. Starting from the first image,
    every image takes the orientation (as is or mirrored) closer to the current mean, and the mean is
    recomputed, a few rounds (a minimal congealing)."""
    images = stack.astype(np.float32)
    mirrored = images[:, :, ::-1]
    mean = images[0]
    for _ in range(rounds):
        keep = ((images - mean) ** 2).sum(axis=(1, 2, 3)) <= ((mirrored - mean) ** 2).sum(axis=(1, 2, 3))
        mean = np.where(keep[:, None, None, None], images, mirrored).mean(axis=0)
    return mean


def build_bundle(
    directory: str | Path,
    labels: pd.DataFrame,
    image_root: str | Path,
    networks: Mapping[str, CarNet],
    manifest: Manifest,
    *,
    map_coordinates: Callable[[np.ndarray], np.ndarray] = pca_coordinates,
    morph_image_size: int = 64,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    pooled: np.ndarray | None = None,
    map_sample: int = MAP_SAMPLE,
    seed: int = 0,
) -> Bundle:
    """Embed every labelled image with the networks, compute morphs, map, table and atlas, write and load back:
    the local engine, one process, batch after batch, over the steps of `core.bundling` (which the Ray engine,
    `training.ray_engine`, runs distributed).

    `labels` has LABEL_COLUMNS (optionally bbox_* car boxes in px; modernity and body type see that crop, the
    gate the whole frame); paths are relative to `image_root`. Morphs use rows of split "train".
    `map_coordinates` turns N x D embeddings into N x 2 map coordinates (training passes a UMAP fit); it is fitted
    on `map_sample` rows drawn with `seed` (all rows when fewer), the others are placed by kNN as uploads are.
    The networks are rounded to the stored precision first, so the table matches what the app computes.
    Morphs and their images use only training cars whose view the bundle accepts (`valid_views`).
    `progress(done, total)` is called after every batch of images (a CLI passes a progress bar).
    `pooled` (row i = the shared backbone's pooled feature of row i's crop, which must be its whole frame) skips
    the backbone pass (`predict_pooled`); the images are still read for the atlas and the morph images.
    """
    from core import bundling  # imported here: core.bundling builds on this module

    labels, stored = prepare_build(labels, networks, manifest)
    atlas = AtlasCanvas.staged(directory, len(labels), manifest.atlas)
    parts = []
    for start in range(0, len(labels), batch_size):
        rows = labels.iloc[start : start + batch_size]
        batch_pooled = None if pooled is None else pooled[start : start + len(rows)]
        part = bundling.embed_batch(
            rows, image_root, stored, manifest, morph_image_size=morph_image_size, pooled=batch_pooled
        )
        atlas.paste(part.tiles, range(start, start + len(rows)))
        parts.append(replace(part, tiles=part.tiles[:0]))  # its tiles are in the atlas now
        if progress is not None:
            progress(start + len(rows), len(labels))
    embedded = bundling.EmbeddedBatch.concatenate(parts)
    features = embedded.outputs.features
    groups = [
        bundling.group_morph(body, year_bin, features[rows], np.stack([embedded.morph_pixels[i] for i in rows]))
        for (body, year_bin), rows in bundling.member_groups(labels, embedded.members, manifest).items()
    ]
    morphs = bundling.morphs_from_groups(groups, manifest, features.shape[1])
    sample = bundling.map_sample_rows(len(labels), map_sample, seed)
    coords = bundling.fit_map(features[sample], sample, map_coordinates).positions(features, np.arange(len(labels)))
    table = annotate_images(labels, embedded.outputs, morphs, coords, manifest.thresholds)
    return bundling.finish_bundle(directory, manifest, stored, table, features, morphs, atlas)


def prepare_build(
    labels: pd.DataFrame, networks: Mapping[str, CarNet], manifest: Manifest
) -> tuple[pd.DataFrame, dict[str, CarNet]]:
    """Checked labels (index 0..n-1) and the networks as the bundle stores them: fp16 where a network keeps its
    own backbone, full precision on a shared backbone file."""
    missing = [column for column in LABEL_COLUMNS if column not in labels.columns]
    if missing:
        raise ValueError(f"labels lack columns {missing}")
    half = {key for key, spec in manifest.networks.items() if spec.stored_in_half}
    return labels.reset_index(drop=True), stored_networks(networks, half)


def build_untrained_bundle(
    directory: str | Path,
    data_root: str | Path,
    *,
    input_size: int = 64,
    seed: int = 0,
    morph_min_members: int = 2,
    name: str = "untrained",
    lean: bool = True,
    build: Callable[..., Bundle] | None = None,
) -> Bundle:
    """A small valid bundle for tests and benchmarks: seeded, freshly initialised (untrained) networks over the
    stanford_cars (train split) and epfl_multiview (val split) photos of `data_root`. Its scores mean nothing.
    With `lean` its heads lean towards the largest labelled group (uploads land in a group with a morph, and
    score nearly alike); without, scores differ from photo to photo. `build` takes build_bundle's arguments
    (default: build_bundle itself; another engine, e.g. training.ray_engine's, with options bound)."""
    data_root = Path(data_root)
    labels = untrained_bundle_labels(data_root)
    specs = standard_networks(len(SHARED_YEAR_BINS), len(SEED_BODY_TYPES))
    torch.manual_seed(seed)
    networks = {key: CarNet(spec.heads) for key, spec in specs.items()}
    if lean:
        _lean_towards_largest_group(networks, labels)
    manifest = Manifest(
        name=name,
        input_size=input_size,
        year_bins=SHARED_YEAR_BINS,
        body_types=SEED_BODY_TYPES,
        networks=specs,
        valid_views="all",  # an untrained gate says nothing of views: every image is a morph member
        morph_min_members=morph_min_members,
        atlas=AtlasSpec(tile=32, columns=4, shard_tiles=8),  # small shards: the tests read tiles from several
        provenance={"data_root": str(data_root), "note": f"untrained networks (seed {seed}): for tests only"},
    )
    return (build or build_bundle)(directory, labels, data_root, networks, manifest, morph_image_size=32)


def untrained_bundle_labels(data_root: Path) -> pd.DataFrame:
    """The labels (with car boxes) `build_untrained_bundle` builds from: stanford_cars as the training split,
    epfl_multiview as the validation split."""
    return pd.concat(
        [
            table_from_labels(pd.read_csv(data_root / dataset / "labels.csv"), dataset, SHARED_YEAR_BINS, split)
            for dataset, split in (("stanford_cars", "train"), ("epfl_multiview", "val"))
        ],
        ignore_index=True,
    )


def _lean_towards_largest_group(networks: Mapping[str, CarNet], labels: pd.DataFrame) -> None:
    """Bias untrained year-bin and body-type heads towards the training split's largest labelled group, so that
    whatever a test uploads lands in a group with a morph (random heads may pick a year bin with no cars)."""
    train = labels[(labels["split"] == "train") & (labels["year_bin"] >= 0) & labels["body_type"].isin(SEED_BODY_TYPES)]
    body, year_bin = train.groupby(["body_type", "year_bin"]).size().idxmax()
    with torch.no_grad():
        networks["modernity"].heads["year_bin"].bias[int(year_bin)] += 3.0
        networks["bodytype"].heads["body_type"].bias[SEED_BODY_TYPES.index(body)] += 3.0


def stored_networks(networks: Mapping[str, CarNet], half: Collection[str]) -> dict[str, CarNet]:
    """Copies in eval mode as the bundle stores them: the float weights of the networks named in `half` rounded
    through fp16; networks that shared one backbone module still share one copy of it."""
    copies = copy.deepcopy(dict(networks))
    for key, model in copies.items():
        model.eval()
        if key in half:
            with torch.no_grad():
                for tensor in model.state_dict().values():
                    if tensor.is_floating_point():
                        tensor.copy_(tensor.half().float())
    return copies


def _column(labels: pd.DataFrame, name: str, default: Any) -> pd.Series:
    return labels[name] if name in labels.columns else pd.Series([default] * len(labels), index=labels.index)
