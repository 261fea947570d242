"""The Ray Data engine of `training.build --engine ray`: the steps of `core.bundling`, distributed.

1. The image table (labels, boxes, row numbers) is cut into shards, one Ray block each (no read tasks: the
   actors below may then take every CPU); `map_batches` runs `Embedder`, an actor pool whose actors each hold
   the networks once, over them (`core.bundling.embed_batch`: read, decode, crop, networks, atlas tile,
   morph-image pixels), and the results are written as Parquet shards of predictions and embeddings.
2. Morphs: a group-by (body type, year bin) over the members read from those shards (sort-based shuffle: it
   needs no aggregator actors), `core.bundling.group_morph` per group, assembled on the driver by
   `core.bundling.morphs_from_groups`.
3. Map: fitted on the driver on a seeded sample of rows (`core.bundling.map_sample_rows`, `fit_map`); every
   shard is then annotated in parallel (`core.artifacts.annotate_images`: scores, typicality, percentiles) with
   its rows placed by the app's kNN placement (`MapFit.positions`).
4. The driver streams the annotated shards into the images table, the embeddings and the atlas, and writes the
   bundle (`core.bundling.finish_bundle`).

Arrays travel through Parquet as bytes columns (one value per row), so no Arrow tensor extension is needed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import ray
import torch
from ray.data.context import ShuffleStrategy

from core.artifacts import (
    BOX_COLUMNS,
    IMAGE_COLUMNS,
    LABEL_COLUMNS,
    MAP_SAMPLE,
    Bundle,
    Manifest,
    NetworkOutputs,
    annotate_images,
    embedding_dim,
    prepare_build,
)
from core.atlas import AtlasCanvas
from core.bundling import (
    EmbeddedBatch,
    GroupMorph,
    MapFit,
    body_indices,
    embed_batch,
    finish_bundle,
    fit_map,
    group_morph,
    map_sample_rows,
    morphs_from_groups,
)
from core.models import CarNet
from core.projection import pca_coordinates
from core.scoring import Morphs
from core.viewpoint import VIEW_CLASSES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARD_ROWS = 2_000  # rows per shard of the image table


@contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = None
) -> Iterator[None]:
    """Ray connected to the cluster at `address` with this project's `core` and `training` packages shipped to its
    workers, or a local Ray (`num_cpus`, an object store of `object_store_mb`) whose workers import them from here;
    shut down on exit."""
    if address:
        modules = [str(PROJECT_ROOT / "core"), str(PROJECT_ROOT / "training")]
        ray.init(address=address, runtime_env={"py_modules": modules})
    else:
        store = object_store_mb << 20 if object_store_mb else None
        # address="local": always a new local instance, never a cluster an earlier `ray start` left recorded
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=store, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Shapes:
    """Shapes of the per-row arrays stored as bytes in the shards."""

    dim: int
    year_bins: int
    head_years: int
    body_types: int
    tile: int
    morph: int

    @classmethod
    def of(cls, manifest: Manifest, morph_image_size: int) -> Shapes:
        head_years = manifest.networks["modernity"].heads.get("year", 0)
        sizes = (len(manifest.year_bins), head_years, len(manifest.body_types), manifest.atlas.tile, morph_image_size)
        return cls(embedding_dim(manifest), *sizes)


def to_bytes(array: np.ndarray) -> list[bytes]:
    """One bytes value per row of `array`."""
    return [row.tobytes() for row in np.ascontiguousarray(array)]


def from_bytes(column: pd.Series, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """The rows of a bytes column stacked into a len(column) x *shape array."""
    return np.frombuffer(b"".join(column), dtype=dtype).reshape(len(column), *shape)


def outputs_from_frame(frame: pd.DataFrame, shapes: Shapes) -> NetworkOutputs:
    return NetworkOutputs(
        year_logits=from_bytes(frame["year_logits"], np.float32, (shapes.year_bins,)),
        year_head_logits=from_bytes(frame["year_head_logits"], np.float32, (shapes.head_years,)),
        body_logits=from_bytes(frame["body_logits"], np.float32, (shapes.body_types,)),
        features=from_bytes(frame["features"], np.float32, (shapes.dim,)),
        frontal_prob=frame["frontal_prob"].to_numpy(np.float32),
        car_prob=frame["car_prob"].to_numpy(np.float32),
        view_probs=from_bytes(frame["view_probs"], np.float32, (len(VIEW_CLASSES),)),
    )


def embedded_frame(rows: pd.DataFrame, embedded: EmbeddedBatch, manifest: Manifest) -> pd.DataFrame:
    """A shard of step 1: the rows' labels and row numbers, the networks' outputs, tile and morph pixels."""
    outputs = embedded.outputs
    frame = rows.loc[:, ["row", *LABEL_COLUMNS]].reset_index(drop=True)
    frame["body_index"] = body_indices(rows["body_type"], manifest.body_types)
    frame["member"] = embedded.members
    frame["year_logits"] = to_bytes(outputs.year_logits.astype(np.float32))
    frame["year_head_logits"] = to_bytes(outputs.year_head_logits.astype(np.float32))
    frame["body_logits"] = to_bytes(outputs.body_logits.astype(np.float32))
    frame["features"] = to_bytes(outputs.features.astype(np.float32))
    frame["frontal_prob"] = outputs.frontal_prob.astype(np.float32)
    frame["car_prob"] = outputs.car_prob.astype(np.float32)
    frame["view_probs"] = to_bytes(outputs.view_probs.astype(np.float32))
    frame["tile"] = to_bytes(embedded.tiles)
    frame["morph_pixels"] = [b"" if pixels is None else pixels.tobytes() for pixels in embedded.morph_pixels]
    return frame


class Embedder:
    """Ray Data callable class: the networks are deserialised once per actor, then batch after batch of the image
    table goes through `core.bundling.embed_batch`."""

    def __init__(self, networks: ray.ObjectRef, manifest: Manifest, image_root: str, morph_image_size: int):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        self.networks: Mapping[str, CarNet] = ray.get(networks)
        self.manifest = manifest
        self.image_root, self.morph_image_size = image_root, morph_image_size

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        pooled = from_bytes(rows["pooled"], np.float32, (-1,)) if "pooled" in rows.columns else None
        embedded = embed_batch(
            rows, self.image_root, self.networks, self.manifest, morph_image_size=self.morph_image_size, pooled=pooled
        )
        return embedded_frame(rows, embedded, self.manifest)


MEMBER_COLUMNS = ["row", "body_index", "year_bin", "member", "features", "morph_pixels"]


def members_only(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[frame["member"], MEMBER_COLUMNS]


def morph_frame(group: pd.DataFrame, shapes: Shapes) -> pd.DataFrame:
    """`core.bundling.group_morph` on one group's members (in row order), as a one-row frame."""
    group = group.sort_values("row")
    features = from_bytes(group["features"], np.float32, (shapes.dim,))
    pixels = from_bytes(group["morph_pixels"], np.uint8, (shapes.morph, shapes.morph, 3))
    morph = group_morph(int(group["body_index"].iat[0]), int(group["year_bin"].iat[0]), features, pixels)
    return pd.DataFrame(
        {"body_type": [morph.body_type], "year_bin": [morph.year_bin], "count": [morph.count],
         "feature": [morph.feature.tobytes()], "typicality": [morph.typicality.tobytes()],
         "image": [morph.image.tobytes()]}
    )  # fmt: skip


def group_morph_from_row(row: pd.Series, shapes: Shapes) -> GroupMorph:
    image = np.frombuffer(row["image"], np.uint8).reshape(shapes.morph, shapes.morph, 3)
    feature, values = np.frombuffer(row["feature"], np.float64), np.frombuffer(row["typicality"], np.float64)
    return GroupMorph(int(row["body_type"]), int(row["year_bin"]), int(row["count"]), feature, values, image)


def annotated_frame(
    frame: pd.DataFrame, morphs: Morphs, fit: MapFit, manifest: Manifest, shapes: Shapes
) -> pd.DataFrame:
    """A shard of step 3: the images-table rows (`annotate_images`, map position by `fit`), plus row number,
    embedding and atlas tile."""
    outputs = outputs_from_frame(frame, shapes)
    rows = frame["row"].to_numpy(np.int64)
    coords = fit.positions(outputs.features, rows)
    table = annotate_images(frame, outputs, morphs, coords, manifest.thresholds, rows=rows)
    table["row"], table["features"], table["tile"] = rows, frame["features"].to_numpy(), frame["tile"].to_numpy()
    return table


def table_shards(labels: pd.DataFrame, pooled: np.ndarray | None, shards: int) -> list[pd.DataFrame]:
    """The image table (label and box columns, row numbers, pooled features when given) in shards of at most
    SHARD_ROWS rows, at least `shards` of them (one per actor) when there are rows enough."""
    columns = [c for c in (*LABEL_COLUMNS, *BOX_COLUMNS) if c in labels.columns]
    table = labels.loc[:, columns].assign(row=np.arange(len(labels)))
    if pooled is not None:
        table["pooled"] = to_bytes(pooled.astype(np.float32))
    size = max(1, min(SHARD_ROWS, -(-len(table) // shards)))
    return [table.iloc[start : start + size] for start in range(0, len(table), size)]


def sampled_features(folder: Path, sample: np.ndarray, dim: int) -> np.ndarray:
    """Features of the sampled rows (in row order), read from the shards with the row filter pushed down."""
    picked = pq.read_table(folder, columns=["row", "features"], filters=[("row", "in", sample.tolist())])
    picked = picked.sort_by("row")
    return np.frombuffer(b"".join(picked.column("features").to_pylist()), np.float32).reshape(-1, dim)


def build_bundle_on_ray(
    directory: str | Path,
    labels: pd.DataFrame,
    image_root: str | Path,
    networks: Mapping[str, CarNet],
    manifest: Manifest,
    *,
    work_dir: str | Path,
    map_coordinates: Callable[[np.ndarray], np.ndarray] = pca_coordinates,
    morph_image_size: int = 64,
    batch_size: int = 32,
    pooled: np.ndarray | None = None,
    map_sample: int = MAP_SAMPLE,
    seed: int = 0,
    concurrency: int | None = None,
) -> Bundle:
    """`core.artifacts.build_bundle` (same arguments, same bundle) on the running Ray cluster. Shards go to
    `work_dir` (on a cluster: storage every node reads, like `image_root`); `concurrency` embedding actors of one
    CPU each (default: one per CPU of the cluster)."""
    labels, stored = prepare_build(labels, networks, manifest)
    shapes = Shapes.of(manifest, morph_image_size)
    work = Path(work_dir).resolve()
    shutil.rmtree(work / "embedded", ignore_errors=True)
    actors = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
    ray.data.from_pandas(table_shards(labels, pooled, actors)).map_batches(
        Embedder,
        fn_constructor_kwargs={"networks": ray.put(stored), "manifest": manifest,
                               "image_root": str(Path(image_root).resolve()), "morph_image_size": morph_image_size},
        batch_size=batch_size, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
    ).write_parquet(str(work / "embedded"), ray_remote_args={"num_cpus": 0})  # fmt: skip
    embedded = ray.data.read_parquet(str(work / "embedded"))

    ray.data.DataContext.get_current().shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    member_columns = ray.data.read_parquet(str(work / "embedded")).select_columns(MEMBER_COLUMNS)
    members = member_columns.map_batches(members_only, batch_format="pandas")
    groups = members.groupby(["body_index", "year_bin"], num_partitions=actors)
    morph_rows = groups.map_groups(morph_frame, batch_format="pandas", fn_kwargs={"shapes": shapes}).to_pandas()
    morphs = morphs_from_groups(
        [group_morph_from_row(row, shapes) for _, row in morph_rows.iterrows()], manifest, shapes.dim
    )

    sample = map_sample_rows(len(labels), map_sample, seed)
    fit = fit_map(sampled_features(work / "embedded", sample, shapes.dim), sample, map_coordinates)

    annotated = embedded.map_batches(
        annotated_frame,
        batch_format="pandas",
        fn_kwargs={"morphs": morphs, "fit": fit, "manifest": manifest, "shapes": shapes},
    )
    atlas = AtlasCanvas.staged(directory, len(labels), manifest.atlas)
    tables, features = [], np.empty((len(labels), shapes.dim), np.float32)
    for batch in annotated.iter_batches(batch_format="pyarrow", batch_size=SHARD_ROWS):
        part = batch.to_pandas()  # numpy dtypes, as the local engine's table
        rows = part["row"].to_numpy(np.int64)
        atlas.paste(from_bytes(part["tile"], np.uint8, (shapes.tile, shapes.tile, 3)), rows)
        features[rows] = from_bytes(part["features"], np.float32, (shapes.dim,))
        tables.append(part.loc[:, ["row", *IMAGE_COLUMNS]])
    table = pd.concat(tables).sort_values("row").drop(columns="row").reset_index(drop=True)
    return finish_bundle(directory, manifest, stored, table, features, morphs, atlas)
