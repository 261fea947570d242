"""The steps of building a bundle, shared by every engine: the local one (`core.artifacts.build_bundle`) and the
Ray Data one (`training.ray_engine`) call these same functions, only the loop around them differs.

1. `embed_batch`: the per-image work on a batch of rows (read, decode, crop, the networks, atlas tile, and the
   morph-image pixels of the rows that are morph members).
2. `group_morph` per (body type, year bin) over the members, then `morphs_from_groups`: the aggregation.
3. `fit_map` on a seeded sample of rows (`map_sample_rows`); `MapFit.positions` places every other row with the
   kNN placement the app uses for uploads (`core.projection.MapPlacer`).
4. `core.artifacts.annotate_images` per batch (scores, typicality, percentiles, map position), then
   `finish_bundle` writes and loads the bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.artifacts import (
    BOX_COLUMNS,
    Bundle,
    Manifest,
    NetworkOutputs,
    atlas_tiles,
    crop_to_box,
    flip_aligned_mean,
    load_bundle,
    predict_images,
    predict_pooled,
    write_bundle,
)
from core.atlas import AtlasCanvas, AtlasSpec, atlas_tile
from core.models import CarNet
from core.projection import MapPlacer
from core.scoring import Morphs, cosine_similarity


@dataclass(frozen=True)
class EmbeddedBatch:
    """The per-image work on a batch of rows (row i = batch row i)."""

    outputs: NetworkOutputs
    tiles: np.ndarray  # n x tile x tile x 3 uint8: the atlas tiles
    members: np.ndarray  # n bool: morph members (training split, both labels known, view accepted)
    morph_pixels: list[np.ndarray | None]  # S x S x 3 uint8 crop of each member, None for the other rows

    @staticmethod
    def concatenate(parts: Sequence[EmbeddedBatch]) -> EmbeddedBatch:
        return EmbeddedBatch(
            NetworkOutputs.concatenate([p.outputs for p in parts]),
            np.concatenate([p.tiles for p in parts]),
            np.concatenate([p.members for p in parts]),
            [pixels for p in parts for pixels in p.morph_pixels],
        )


def body_indices(body_types: pd.Series, known: Sequence[str]) -> np.ndarray:
    """Index of each row's body type in `known`, -1 where unknown."""
    return np.array([known.index(b) if b in known else -1 for b in body_types], dtype=np.int64)


def labelled_training_rows(rows: pd.DataFrame, manifest: Manifest) -> np.ndarray:
    """Rows of split "train" whose body type and year bin are both known (morph member candidates)."""
    return (
        (rows["split"] == "train").to_numpy()
        & (body_indices(rows["body_type"], manifest.body_types) >= 0)
        & (rows["year_bin"].to_numpy(dtype=np.int64) >= 0)
    )


def morph_image_pixels(crop: Image.Image, size: int) -> np.ndarray:
    """The crop squash-resized to size x size, as it enters its group's mean image."""
    return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def embed_batch(
    rows: pd.DataFrame,
    image_root: str | Path,
    networks: Mapping[str, CarNet],
    manifest: Manifest,
    *,
    morph_image_size: int = 64,
    pooled: np.ndarray | None = None,
) -> EmbeddedBatch:
    """Read, decode and crop each row's image, run the networks (from `pooled` backbone features when given, see
    `predict_pooled`), cut its atlas tile and, for morph members, its morph-image pixels."""
    from core.imaging import load_image  # imported here: core.imaging is only needed to build, not to load

    has_boxes = set(BOX_COLUMNS) <= set(rows.columns)
    frames = [load_image(Path(image_root) / path) for path in rows["path"]]
    boxes = rows[list(BOX_COLUMNS)].to_numpy(dtype=float) if has_boxes else [None] * len(frames)
    crops = [crop_to_box(frame, None if box is None else list(box)) for frame, box in zip(frames, boxes, strict=True)]
    tile = manifest.atlas.tile
    tiles = np.stack([np.asarray(atlas_tile(crop, tile), dtype=np.uint8) for crop in crops]).reshape(-1, tile, tile, 3)
    if pooled is None:
        outputs = predict_images(networks, crops, frames, manifest)
    elif manifest.flip_average:
        raise ValueError("pooled features are of the crops alone: a flip-averaging bundle needs the backbone pass")
    else:
        outputs = predict_pooled(networks, pooled)
    members = labelled_training_rows(rows, manifest) & outputs.accepted(manifest.thresholds, manifest.valid_views)
    pixels = [morph_image_pixels(c, morph_image_size) if m else None for c, m in zip(crops, members, strict=True)]
    return EmbeddedBatch(outputs, tiles, members, pixels)


@dataclass(frozen=True)
class GroupMorph:
    """One group's morph: the mean feature of its members, their sorted typicality, their flip-aligned mean image."""

    body_type: int
    year_bin: int
    count: int
    feature: np.ndarray  # D float64
    typicality: np.ndarray  # count float64, sorted ascending
    image: np.ndarray  # S x S x 3 uint8


def group_morph(body_type: int, year_bin: int, features: np.ndarray, pixels: np.ndarray) -> GroupMorph:
    """The morph of one (body type, year bin) group from its members' features and morph-image pixels, in row
    order (the mean image's flip alignment starts from the first member)."""
    morph = features.astype(np.float64).mean(axis=0)
    values = np.sort([cosine_similarity(f, morph) for f in features])
    image = np.round(flip_aligned_mean(pixels)).astype(np.uint8)
    return GroupMorph(int(body_type), int(year_bin), len(features), morph, values, image)


def member_groups(rows: pd.DataFrame, members: np.ndarray, manifest: Manifest) -> dict[tuple[int, int], np.ndarray]:
    """Row numbers of the morph members of each (body type index, year bin), in row order."""
    keys = np.stack([body_indices(rows["body_type"], manifest.body_types), rows["year_bin"].to_numpy(np.int64)], 1)
    chosen = np.flatnonzero(members)
    return {(int(b), int(y)): chosen[(keys[chosen] == (b, y)).all(1)] for b, y in np.unique(keys[chosen], axis=0)}


def morphs_from_groups(groups: Sequence[GroupMorph], manifest: Manifest, dim: int) -> Morphs:
    """The bundle's morphs: the groups with at least `morph_min_members` members, ordered by (body type, year bin),
    their training typicality nan-padded to one width."""
    kept = sorted((g for g in groups if g.count >= manifest.morph_min_members), key=lambda g: (g.body_type, g.year_bin))
    width = max((g.count for g in kept), default=0)
    size = kept[0].image.shape[0] if kept else 1
    padded = [np.pad(g.typicality, (0, width - g.count), constant_values=np.nan) for g in kept]
    return Morphs(
        features=np.array([g.feature for g in kept], dtype=np.float32).reshape(len(kept), dim),
        body_type=np.array([g.body_type for g in kept], dtype=np.int64),
        year_bin=np.array([g.year_bin for g in kept], dtype=np.int64),
        count=np.array([g.count for g in kept], dtype=np.int64),
        images=np.array([g.image for g in kept], dtype=np.uint8).reshape(len(kept), size, size, 3),
        train_typicality=np.array(padded, dtype=np.float32).reshape(len(kept), width),
        body_types=manifest.body_types,
        year_bins=manifest.year_bins,
        min_members=manifest.morph_min_members,
    )


def map_sample_rows(count: int, size: int, seed: int) -> np.ndarray:
    """Sorted row numbers the map is fitted on: all rows when there are at most `size`, else a seeded sample."""
    if count <= size:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


PLACE_ROWS = 1024  # rows placed at a time: their similarities to the sample stay a few hundred MB


@dataclass(frozen=True)
class MapFit:
    """The 2-D map fitted on sampled rows, and the kNN placer (the app's, for uploads) for every other row."""

    sample: np.ndarray  # sorted row numbers
    coords: np.ndarray  # len(sample) x 2 float32
    placer: MapPlacer

    def positions(self, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Map coordinates of `rows` (their features row by row): fitted ones for sampled rows, placed otherwise."""
        where = np.searchsorted(self.sample, rows).clip(0, len(self.sample) - 1)
        sampled = self.sample[where] == rows
        coords = np.empty((len(rows), 2), dtype=np.float32)
        coords[sampled] = self.coords[where[sampled]]
        placed = np.flatnonzero(~sampled)
        for start in range(0, len(placed), PLACE_ROWS):
            chunk = placed[start : start + PLACE_ROWS]
            coords[chunk] = self.placer.transform(features[chunk]).reshape(-1, 2)
        return coords


def fit_map(features: np.ndarray, sample: np.ndarray, map_coordinates: Callable[[np.ndarray], np.ndarray]) -> MapFit:
    """Fit the map on the sampled rows' features (`map_coordinates`: N x D -> N x 2, e.g. UMAP or PCA)."""
    coords = np.asarray(map_coordinates(features), dtype=np.float32)
    return MapFit(np.asarray(sample), coords, MapPlacer().fit(features, coords))


def copy_atlas(bundle: Bundle, folder: Path) -> AtlasSpec:
    """The bundle's atlas tiles (either layout) written into `folder` as the shards a build writes, shard by shard."""
    count = atlas_tiles(bundle.images)
    canvas = AtlasCanvas(folder, count, AtlasSpec(tile=bundle.manifest.atlas.tile))
    for start in range(0, count, canvas.spec.shard_tiles):
        rows = range(start, min(count, start + canvas.spec.shard_tiles))
        canvas.paste(np.stack([np.asarray(bundle.thumbnail(row)) for row in rows]), rows)
    return canvas.close()


def finish_bundle(
    directory: str | Path,
    manifest: Manifest,
    networks: Mapping[str, CarNet],
    images: pd.DataFrame,
    embeddings: np.ndarray,
    morphs: Morphs,
    atlas: AtlasCanvas,
) -> Bundle:
    """Write the bundle (its manifest records the layout of the atlas, whose every row was pasted) and load it
    back, validated."""
    write_bundle(
        directory,
        replace(manifest, atlas=atlas.close()),
        networks=networks,
        images=images,
        embeddings=embeddings,
        morphs=morphs,
        atlas=atlas.folder,
    )
    return load_bundle(directory)
