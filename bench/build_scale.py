"""Bundle-build benchmark: per-image throughput of the local and the Ray engine on real photos, how the stages that
grow with the collection scale from 10 k to 100 k rows, and a paper estimate for the full DVM-CAR (1.45 M images).

  python -m bench.build_scale [--bundle DIR] [--data DIR] [--images 200 1000] [--sizes 10000 30000 100000]
                              [--ray-cpus 2] [--workers 8 32 128] [--json FILE]

1. Throughput: the bundle's networks and manifest build a bundle of the first --images rows of its own table
   (real photos under --data) with each engine; images per second = the rows added between the two sizes over
   the time they added, so fixed costs (Ray start-up, its per-stage scheduling, the writes) drop out; those costs
   are printed too. Ray runs locally on --ray-cpus CPUs (one embedding actor each).
2. Scaling: in a fresh process per size (its peak RSS is the stage's memory), the bundle's rows and embeddings
   resampled with jitter (as bench/explorer.py does) to each size go through the steps that grow with the
   collection, as both engines run them (core.bundling): morph aggregation (member pixels at the bundle's morph
   size), the map (PCA fitted on a sample of at most core.artifacts.MAP_SAMPLE rows, the rest placed by kNN),
   annotate_images (scores, typicality, percentiles), and Parquet shards of the Ray engine (write and read back).
3. Estimate for 1.45 M images on N workers (CPU cores): per-image work at the measured Ray rate per CPU, divided
   by N; the parallel stages (kNN placement, annotation, shards) extrapolated linearly from the largest size, divided
   by N; the driver's serial stages (map fit on the sample, morph aggregation) extrapolated, not divided.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.artifacts import (
    LABEL_COLUMNS,
    MAP_SAMPLE,
    Bundle,
    NetworkOutputs,
    annotate_images,
    build_bundle,
    load_bundle,
)
from core.bundling import (
    EmbeddedBatch,
    fit_map,
    group_morph,
    map_sample_rows,
    member_groups,
    morphs_from_groups,
)
from core.config import SHARED_DATA_DIR
from core.projection import pca_coordinates
from core.viewpoint import VIEW_CLASSES

DVM_CAR_IMAGES = 1_450_000
JITTER = 0.02  # of each embedding dimension's spread
SERIAL_STAGES = ("map_fit", "morphs")


@dataclass(frozen=True)
class Throughput:
    engine: str
    images: tuple[int, ...]
    seconds: tuple[float, ...]

    @property
    def images_per_s(self) -> float:
        """Rows added over the time they added; nan when the larger build was not slower (load noise: raise
        --images)."""
        added = self.seconds[-1] - self.seconds[0]
        return (self.images[-1] - self.images[0]) / added if added > 0 else float("nan")

    @property
    def fixed_s(self) -> float:
        return self.seconds[0] - self.images[0] / self.images_per_s


@dataclass(frozen=True)
class ScaleRow:
    rows: int
    seconds: dict[str, float]
    peak_rss_mb: float


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def real_rows(bundle: Bundle, count: int) -> pd.DataFrame:
    """The first `count` rows of the bundle's own table as build labels (the whole photo as crop: no boxes)."""
    return bundle.images.loc[: count - 1, list(LABEL_COLUMNS)].reset_index(drop=True)


def engine_throughput(bundle: Bundle, data: Path, sizes: Sequence[int], engine: str, ray_cpus: int) -> Throughput:
    """Seconds to build a bundle of each size with `engine`; Ray started once, before the timings."""
    if engine == "ray":
        from training.ray_engine import build_bundle_on_ray, ray_session

        session = ray_session(num_cpus=ray_cpus, object_store_mb=512)
    else:
        session = contextlib.nullcontext()
    seconds = []
    with tempfile.TemporaryDirectory() as work, session:
        for size in sizes:
            out = Path(work) / f"{engine}-{size}"
            build = build_bundle
            if engine == "ray":
                build = functools.partial(build_bundle_on_ray, work_dir=out.with_suffix(".shards"))
            labels, start = real_rows(bundle, size), time.perf_counter()
            build(out, labels, data, bundle.networks, bundle.manifest)
            seconds.append(time.perf_counter() - start)
            print(f"  {engine:>5}: {size:>5} images in {seconds[-1]:7.1f} s", flush=True)
    return Throughput(engine, tuple(sizes), tuple(seconds))


def synthetic_collection(bundle: Bundle, size: int, seed: int = 0) -> tuple[pd.DataFrame, EmbeddedBatch]:
    """`size` rows resampled from the bundle (labels, jittered embeddings, network outputs consistent with its
    predictions), as the per-image step would have left them."""
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(bundle.images), size)
    rows = bundle.images.iloc[picked].reset_index(drop=True)
    embeddings = np.asarray(bundle.embeddings)[picked]
    features = (embeddings + rng.normal(0.0, JITTER, embeddings.shape) * embeddings.std(axis=0)).astype(np.float32)
    views = np.zeros((size, len(VIEW_CLASSES)), np.float32)
    views[np.arange(size), [VIEW_CLASSES.index(v) if v in VIEW_CLASSES else 0 for v in rows["view"]]] = 1.0
    outputs = NetworkOutputs(
        year_logits=np.eye(len(bundle.year_bins), dtype=np.float32)[rows["pred_year_bin"]] * 3.0,
        year_head_logits=np.zeros((size, 0), np.float32),
        body_logits=np.eye(len(bundle.body_types), dtype=np.float32)[
            [bundle.body_types.index(b) for b in rows["pred_body_type"]]
        ]
        * 3.0,
        features=features,
        frontal_prob=rows["frontal_prob"].to_numpy(np.float32),
        car_prob=np.ones(size, np.float32),
        view_probs=views,
    )
    members = (rows["group"] != "").to_numpy() & (rows["split"] == "train").to_numpy()
    morph_images = bundle.morphs.images
    pixels = [morph_images[i % len(morph_images)] if m else None for i, m in enumerate(members)]
    tiles = np.stack([np.asarray(bundle.thumbnail(int(i) % len(bundle.images))) for i in picked[: min(size, 512)]])
    all_tiles = tiles[np.arange(size) % len(tiles)]
    return rows.loc[:, list(LABEL_COLUMNS)], EmbeddedBatch(outputs, all_tiles, members, pixels)


def stage_times(bundle_path: str, size: int) -> ScaleRow:
    """The growing stages at `size` rows (run in a fresh process: its peak RSS is theirs)."""
    from training.ray_engine import SHARD_ROWS, embedded_frame

    bundle = load_bundle(bundle_path)
    labels, embedded = synthetic_collection(bundle, size)
    manifest, features = bundle.manifest, embedded.outputs.features
    seconds: dict[str, float] = {}
    result: dict[str, object] = {}

    def morphs() -> None:
        groups = [
            group_morph(b, y, features[r], np.stack([embedded.morph_pixels[i] for i in r]))
            for (b, y), r in member_groups(labels, embedded.members, manifest).items()
        ]
        result["morphs"] = morphs_from_groups(groups, manifest, features.shape[1])

    sample = map_sample_rows(size, MAP_SAMPLE, seed=0)
    seconds["morphs"] = timed(morphs)
    seconds["map_fit"] = timed(lambda: result.update(fit=fit_map(features[sample], sample, pca_coordinates)))
    seconds["placement"] = timed(lambda: result.update(coords=result["fit"].positions(features, np.arange(size))))
    seconds["annotate"] = timed(
        lambda: annotate_images(labels, embedded.outputs, result["morphs"], result["coords"], manifest.thresholds)
    )

    def shards(folder: Path) -> None:
        table = labels.assign(row=np.arange(size))
        for number, start in enumerate(range(0, size, SHARD_ROWS)):
            part = slice(start, start + SHARD_ROWS)
            batch = EmbeddedBatch(
                NetworkOutputs(*(getattr(embedded.outputs, f)[part] for f in NetworkOutputs.__dataclass_fields__)),
                embedded.tiles[part],
                embedded.members[part],
                embedded.morph_pixels[part],
            )
            frame = embedded_frame(table.iloc[part], batch, manifest)
            frame.to_parquet(folder / f"part-{number:05d}.parquet", index=False)
        pd.read_parquet(folder, columns=["row", "features"])

    with tempfile.TemporaryDirectory() as folder:
        seconds["shards"] = timed(lambda: shards(Path(folder)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return ScaleRow(size, seconds, peak)


def scale_in_fresh_process(bundle_path: str, size: int) -> ScaleRow:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(stage_times, (bundle_path, size))


def estimate(throughput: Throughput, ray_cpus: int, largest: ScaleRow, workers: Sequence[int]) -> list[dict]:
    """Paper estimate of the wall time for DVM_CAR_IMAGES on each number of workers (CPU cores)."""
    per_cpu = throughput.images_per_s / ray_cpus
    factor = DVM_CAR_IMAGES / largest.rows
    serial = largest.seconds["map_fit"] + largest.seconds["morphs"] * factor  # the map fit stays at MAP_SAMPLE rows
    parallel = sum(v for k, v in largest.seconds.items() if k not in SERIAL_STAGES) * factor
    out = []
    for n in workers:
        embed = DVM_CAR_IMAGES / (per_cpu * n)
        out.append({"workers": n, "embed_h": embed / 3600, "parallel_stages_h": parallel / n / 3600,
                    "serial_stages_h": serial / 3600, "total_h": (embed + parallel / n + serial) / 3600})  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: $CARMORPH_BUNDLE)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="image root of the bundle's photos")
    parser.add_argument("--images", type=int, nargs=2, default=[200, 1000], help="two real-photo build sizes")
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8, 32, 128])
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    print(f"bundle {bundle.name}: {len(bundle.images):,} rows; photos under {args.data}", flush=True)

    print("1. throughput on real photos (whole build, both sizes)", flush=True)
    speeds = {e: engine_throughput(bundle, args.data, args.images, e, args.ray_cpus) for e in args.engines}
    for t in speeds.values():
        print(f"  {t.engine:>5}: {t.images_per_s:6.1f} images/s, fixed cost {t.fixed_s:6.1f} s")

    print("2. growing stages on resampled rows (s; peak RSS of the process)", flush=True)
    rows = [scale_in_fresh_process(str(bundle.path), size) for size in args.sizes]
    stages = list(rows[0].seconds)
    print(f"  {'rows':>8} " + " ".join(f"{s:>10}" for s in stages) + f" {'total':>8} {'peak MB':>8}")
    for r in rows:
        cells = " ".join(f"{r.seconds[s]:>10.2f}" for s in stages)
        print(f"  {r.rows:>8,} {cells} {sum(r.seconds.values()):>8.2f} {r.peak_rss_mb:>8.0f}")

    speed = {e: asdict(t) | {"images_per_s": t.images_per_s, "fixed_s": t.fixed_s} for e, t in speeds.items()}
    result: dict[str, object] = {"throughput": speed, "scale": [asdict(r) for r in rows]}
    if "ray" in speeds:
        table = estimate(speeds["ray"], args.ray_cpus, rows[-1], args.workers)
        print(f"3. estimate for {DVM_CAR_IMAGES:,} images (hours)")
        print(f"  {'workers':>8} {'embed':>8} {'parallel':>9} {'serial':>8} {'total':>8}")
        for e in table:
            print(f"  {e['workers']:>8} {e['embed_h']:>8.2f} {e['parallel_stages_h']:>9.2f} "
                  f"{e['serial_stages_h']:>8.2f} {e['total_h']:>8.2f}")  # fmt: skip
        result["estimate"] = table
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
