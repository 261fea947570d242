"""Rewrite a bundle built before today's storage as a build writes it today, in place: nothing else of the bundle
changes, and no network runs.

- A one-file thumbnail atlas (`atlas.jpg`) becomes shards (`atlas/00000.jpg`, ...). A one-file atlas is decoded
  whole the first time any thumbnail is shown (0.45 s for the default bundle's 17,391 tiles, and it cannot hold
  more than about a million tiles); shards are decoded one at a time, on demand.
- float32 embeddings become float16 (`core.artifacts.write_embeddings`): half the size, memory-mapped as stored.

  python -m training.reshard --bundle artifacts/default
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.artifacts import (
    EMBEDDINGS_DTYPE,
    EMBEDDINGS_FILE,
    load_bundle,
    read_manifest,
    save_manifest,
    sha256_file,
    write_embeddings,
)
from core.atlas import STAGING_FOLDER, AtlasSpec, install_atlas
from core.bundling import copy_atlas


def reshard(directory: Path) -> AtlasSpec:
    """Shard `directory`'s one-file atlas and rewrite its manifest (the atlas layout and the files' sha256); returns
    the new layout. A bundle whose atlas is already sharded is left as it is."""
    bundle = load_bundle(directory)  # validated, files hashed: only a sound bundle is rewritten
    old = bundle.manifest.atlas
    if not old.file:
        return old
    spec = copy_atlas(bundle, directory / STAGING_FOLDER)
    manifest = read_manifest(directory)
    files = {name: digest for name, digest in manifest.files.items() if name != old.file}
    install_atlas(directory / STAGING_FOLDER, directory, spec)
    files |= {name: sha256_file(directory / name) for name in spec.files}
    save_manifest(directory, replace(manifest, atlas=spec, files=files))
    return spec


def halve_embeddings(directory: Path) -> np.dtype:
    """Store `directory`'s embeddings as a build does today and renew their sha256; returns the stored dtype."""
    embeddings = load_bundle(directory).embeddings  # validated, files hashed: only a sound bundle is rewritten
    if embeddings.dtype == EMBEDDINGS_DTYPE:
        return EMBEDDINGS_DTYPE
    write_embeddings(directory, embeddings)
    manifest = read_manifest(directory)
    files = manifest.files | {EMBEDDINGS_FILE: sha256_file(directory / EMBEDDINGS_FILE)}
    save_manifest(directory, replace(manifest, files=files))
    return EMBEDDINGS_DTYPE


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory to rewrite in place")
    args = p.parse_args(argv)
    spec = reshard(args.bundle)
    dtype = halve_embeddings(args.bundle)
    print(f"{args.bundle}: atlas in {spec.shards} shard(s) of {spec.shard_tiles or 'all'} tiles, embeddings {dtype}")


if __name__ == "__main__":
    main()
