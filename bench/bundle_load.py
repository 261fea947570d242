"""Loading a bundle and showing its thumbnails, in this fresh process: what the app pays once per bundle, and per
gallery page.

  python -m bench.bundle_load [--bundle DIR] [--page 24] [--seed 0]

Prints the seconds `core.artifacts.load_bundle` took (files hashed and checked, networks loaded), the resident
memory after it, then a gallery page of `--page` thumbnails of rows drawn at random (each most likely in a shard of
its own: the worst case of a sharded atlas), timed cold and again warm, and the resident memory after.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.artifacts import Bundle, load_bundle
from core.config import bundle_dir


def resident_mb() -> float:
    """This process's resident memory now (VmRSS), MB."""
    status = Path("/proc/self/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def page_ms(bundle: Bundle, rows: np.ndarray) -> float:
    start = time.perf_counter()
    for row in rows:
        bundle.thumbnail(int(bundle.images["atlas_index"].iat[row]))
    return (time.perf_counter() - start) * 1000


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: $CARMORPH_BUNDLE)")
    parser.add_argument("--page", type=int, default=24, help="thumbnails of the gallery page (the Explore page's 24)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch  # imported before the clock starts: the app imports it before loading a bundle

    torch.set_num_threads(1)
    before = resident_mb()
    start = time.perf_counter()
    bundle = load_bundle(bundle_dir(args.bundle))
    seconds = time.perf_counter() - start
    loaded = resident_mb()
    rows = np.random.default_rng(args.seed).integers(0, len(bundle.images), args.page)
    cold, warm = page_ms(bundle, rows), page_ms(bundle, rows)
    atlas = bundle.manifest.to_dict()["atlas"]
    print(f"{len(bundle.images):,} rows, atlas {atlas}")
    print(f"load_bundle {seconds:.2f} s; resident memory {before:.0f} MB before, {loaded:.0f} MB after")
    after = resident_mb()
    print(f"{args.page} thumbnails of random rows: {cold:.0f} ms cold, {warm:.1f} ms warm; {after:.0f} MB after")


if __name__ == "__main__":
    main()
