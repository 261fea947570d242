"""Synthetic collections of any size, resampled from a real bundle: for the explorer benchmarks and the tests of the
large-collection map.

  python -m bench.synthetic --size 1000000 --out /tmp/carmorph-1m [--bundle artifacts/default]

Rows of the source bundle's images table are drawn with replacement (seeded); map position, modernity and
typicality are jittered and ids made unique, so the collection keeps the real one's labels, groups and shape. A
written bundle shares the source's networks and morphs, holds the source's atlas tiles written again in the shards
a build writes (each row keeps its source row's `atlas_index`), and resamples the embeddings with the rows. Write it
to a temporary folder: it is never part of the repository.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.artifacts import EMBEDDINGS_FILE, IMAGES_FILE, MANIFEST_FILE, load_bundle, sha256_file, write_embeddings
from core.atlas import ATLAS_FOLDER
from core.bundling import copy_atlas
from core.config import bundle_dir

JITTER = 0.02  # of the map's spread


def resample(count: int, size: int, seed: int = 0) -> np.ndarray:
    """`size` source row positions drawn with replacement from `count` rows."""
    return np.random.default_rng(seed).integers(0, count, size)


def synthesise(images: pd.DataFrame, picks: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """The rows `picks` of `images` with jittered map position and scores (ids made unique)."""
    rng = np.random.default_rng(seed + 1)
    size = len(picks)
    picked = images.iloc[picks].reset_index(drop=True)
    spread = picked[["umap_x", "umap_y"]].std().fillna(1.0).to_numpy() + 1e-6
    picked[["umap_x", "umap_y"]] += rng.normal(0.0, JITTER, (size, 2)) * spread
    picked["modernity"] = np.clip(picked["modernity"] + rng.normal(0.0, 0.05, size), 0.0, 4.0)
    picked["typicality"] = picked["typicality"] + rng.normal(0.0, 0.005, size)
    picked["id"] = picked["id"] + "#" + pd.Series(np.arange(size)).astype(str)
    return picked


def write_synthetic_bundle(source: str | Path, target: str | Path, size: int, seed: int = 0) -> Path:
    """A copy of the bundle at `source` whose collection is `size` rows resampled from its own (see the module doc)."""
    source, target = Path(source), Path(target)
    bundle = load_bundle(source)
    picks = resample(len(bundle.images), size, seed)
    target.mkdir(parents=True)
    shared = set(bundle.manifest.files) - {IMAGES_FILE, EMBEDDINGS_FILE, *bundle.manifest.atlas.files}
    for name in shared:
        shutil.copy2(source / name, target / name)
    atlas = copy_atlas(bundle, target / ATLAS_FOLDER)
    synthesise(bundle.images, picks, seed).to_parquet(target / IMAGES_FILE, index=False)
    write_embeddings(target, bundle.embeddings[picks])
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    manifest["name"] = f"{manifest['name']} resampled to {size:,} rows"
    manifest["atlas"] = atlas.to_dict()
    written = [IMAGES_FILE, EMBEDDINGS_FILE, *atlas.files]
    manifest["files"] = {name: manifest["files"][name] for name in shared} | {
        name: sha256_file(target / name) for name in written
    }
    (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="source bundle (default: $CARMORPH_BUNDLE)")
    parser.add_argument("--size", type=int, required=True, help="rows of the synthetic collection")
    parser.add_argument("--out", type=Path, required=True, help="new bundle directory (must not exist)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write_synthetic_bundle(bundle_dir(args.bundle), args.out, args.size, args.seed)
    print(f"wrote {args.size:,} rows to {written}")


if __name__ == "__main__":
    main()
