"""Latency of score_image per stage, cold and warm, next to the bare forward time of the networks it runs.

    python bench/score_latency.py [--bundle artifacts/default] [--n 30] [--images 8] [--threads 2] [--json]

Cold = the first call after loading the bundle; warm = the median over --n further calls cycling through real
photos (../shared/data when present, else the test fixture). Bare forward = gate + modernity + body-type
networks on the batch-of-one tensor the bundle's transform makes of a real photo, median of --n, interleaved
with the warm calls (same run, same torch threads, same machine load). The bundle's thresholds are set to 0 so
that every call runs every stage. Without a bundle at --bundle, an untrained bundle is built from the test
fixture in a temporary directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from core.artifacts import Bundle, build_untrained_bundle, load_bundle  # noqa: E402
from core.config import SHARED_DATA_DIR, bundle_dir  # noqa: E402
from core.imaging import load_image  # noqa: E402
from core.pipeline import score_image  # noqa: E402

FIXTURE_DATA_DIR = PROJECT_ROOT / "tests" / "fixtures" / "data"
STAGE_ORDER = ("decode", "segment", "frontal", "preprocess", "networks", "typicality", "placement", "checks")


def photo_bytes(count: int) -> tuple[Path, list[bytes]]:
    """Encoded bytes of `count` car photos, alternating Stanford Cars and EPFL frames, from the first root found."""
    root = SHARED_DATA_DIR if (SHARED_DATA_DIR / "stanford_cars" / "labels.csv").is_file() else FIXTURE_DATA_DIR
    files = [sorted((root / name / "images").glob("*.jpg")) for name in ("stanford_cars", "epfl_multiview")]
    chosen = [path for pair in zip(*files, strict=False) for path in pair][:count]
    return root, [path.read_bytes() for path in chosen]


def open_bundle(path: Path | None, workdir: Path) -> Bundle:
    directory = bundle_dir(path)
    if (directory / "manifest.json").is_file():
        return load_bundle(directory)
    print(f"No bundle at {directory}: building an untrained one from the test fixture.", file=sys.stderr)
    return build_untrained_bundle(workdir / "bundle", FIXTURE_DATA_DIR, name="bench-untrained")


class BareForward:
    """Times the three networks' forward passes on a real photo preprocessed by the bundle's transforms (the gate's
    for the gate): the very tensors (values, size and memory layout) score_image feeds them, minus everything else
    it does."""

    def __init__(self, bundle: Bundle, photo: bytes):
        image = load_image(photo)
        self.networks = bundle.networks
        self.inputs = {name: (bundle.gate_transform if name == "gate" else bundle.transform)([image])
                       for name in self.networks}  # fmt: skip
        self.samples: dict[str, list[float]] = {name: [] for name in (*self.networks, "sum")}

    def run(self, record: bool = True) -> None:
        total = 0.0
        with torch.inference_mode():
            for name, network in self.networks.items():
                start = time.perf_counter()
                network(self.inputs[name])
                elapsed = (time.perf_counter() - start) * 1000.0
                total += elapsed
                if record:
                    self.samples[name].append(elapsed)
        if record:
            self.samples["sum"].append(total)

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.samples.items()}


def measure(bundle: Bundle, photos: list[bytes], n: int) -> dict[str, object]:
    """Cold call, then n rounds of (one warm score_image, one bare forward) interleaved, so both see the same load."""
    every_stage = dataclasses.replace(bundle.manifest.thresholds, car=0.0, frontal=0.0, view=0.0)  # cam as built
    accept_all = dataclasses.replace(bundle.manifest, thresholds=every_stage)
    bundle = dataclasses.replace(bundle, manifest=accept_all, cache={})
    cold = score_image(photos[0], bundle)
    bare = BareForward(bundle, photos[0])
    bare.run(record=False)
    warm = []
    for i in range(n):
        warm.append(score_image(photos[(i + 1) % len(photos)], bundle))
        bare.run()
    bare_ms = bare.medians()
    stages = [stage for stage in STAGE_ORDER if any(stage in r.timings for r in [cold, *warm])] + ["total"]
    warm_ms = {stage: statistics.median(r.timings.get(stage, 0.0) for r in warm) for stage in stages}
    return {
        "bundle": bundle.name,
        "input_size": bundle.transform.size,
        "gate_input_size": bundle.gate_transform.size,
        "segmenter": cold.segmenter,
        "torch_threads": torch.get_num_threads(),
        "n": n,
        "accepted": sum(r.accepted for r in warm),
        "cold_ms": {stage: cold.timings.get(stage, 0.0) for stage in stages},
        "warm_median_ms": warm_ms,
        "bare_forward_ms": bare_ms,
        "warm_over_bare": warm_ms["total"] / bare_ms["sum"],
    }


def print_table(report: dict[str, object], source: Path, photos: int) -> None:
    print(
        f"bundle {report['bundle']} · input {report['input_size']} px (gate {report['gate_input_size']} px) · "
        f"segmenter {report['segmenter']} · "
        f"torch threads {report['torch_threads']} · {photos} photos from {source} · n = {report['n']}"
    )
    print(f"{'stage':<12}{'cold ms':>10}{'warm ms':>10}")
    for stage, warm in report["warm_median_ms"].items():
        print(f"{stage:<12}{report['cold_ms'][stage]:>10.1f}{warm:>10.1f}")
    bare = report["bare_forward_ms"]
    parts = " + ".join(f"{name} {bare[name]:.1f}" for name in ("gate", "modernity", "bodytype"))
    print(f"bare forward (median): {parts} = {bare['sum']:.1f} ms")
    print(f"warm total / bare forward = {report['warm_over_bare']:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: artifacts/default)")
    parser.add_argument("--n", type=int, default=30, help="warm calls and bare-forward repetitions")
    parser.add_argument("--images", type=int, default=8, help="distinct photos to cycle through")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source, photos = photo_bytes(args.images)
    with tempfile.TemporaryDirectory() as workdir:
        bundle = open_bundle(args.bundle, Path(workdir))
        report = measure(bundle, photos, args.n)
    if args.json:
        print(json.dumps(report | {"photos": str(source)}, indent=2))
    else:
        print_table(report, source, len(photos))


if __name__ == "__main__":
    main()
