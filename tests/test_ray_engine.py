"""The Ray Data engine of training.build gives the local engine's bundle: both build the untrained fixture bundle
(map fitted on a sample of 12 rows, the others placed by kNN), Ray in local mode on 2 CPUs."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.artifacts import Bundle, build_bundle, build_untrained_bundle
from core.bundling import map_sample_rows

ray = pytest.importorskip("ray", reason="ray is not installed (requirements-dev.txt installs it)")

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data"
MAP_SAMPLE = 12
PREDICTIONS = ["pred_year_bin", "modernity", "expected_year", "pred_body_type", "frontal_prob", "view"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[Bundle, Bundle, Path]:
    """(local bundle, Ray bundle, Ray's shard folder)."""
    from training.ray_engine import build_bundle_on_ray, ray_session

    root = tmp_path_factory.mktemp("engines")
    local = build_untrained_bundle(
        root / "local", FIXTURE_DATA, build=functools.partial(build_bundle, map_sample=MAP_SAMPLE)
    )
    on_ray = functools.partial(build_bundle_on_ray, map_sample=MAP_SAMPLE, work_dir=root / "shards")
    with ray_session(num_cpus=2, object_store_mb=256):
        distributed = build_untrained_bundle(root / "ray", FIXTURE_DATA, build=on_ray)
    return local, distributed, root / "shards"


def test_ray_engine_writes_parquet_shards_of_predictions_and_embeddings(bundles):
    _, distributed, shards = bundles
    embedded = pd.read_parquet(shards / "embedded")
    assert sorted(embedded["row"]) == list(range(len(distributed.images)))
    assert {"features", "year_logits", "body_logits", "frontal_prob", "tile"} <= set(embedded.columns)


def test_ray_engine_gives_the_local_predictions_and_embeddings(bundles):
    local, distributed, _ = bundles
    pd.testing.assert_frame_equal(local.images[PREDICTIONS], distributed.images[PREDICTIONS])
    np.testing.assert_allclose(
        local.embeddings, distributed.embeddings, rtol=np.finfo(np.float16).eps, atol=1e-6
    )  # a step at most


def test_ray_engine_gives_the_local_morphs_and_percentiles(bundles):
    local, distributed, _ = bundles
    assert len(local.morphs) >= 2
    for key in ("body_type", "year_bin", "count", "images"):
        np.testing.assert_array_equal(getattr(local.morphs, key), getattr(distributed.morphs, key))
    np.testing.assert_allclose(local.morphs.features, distributed.morphs.features, atol=1e-6)
    np.testing.assert_allclose(local.morphs.train_typicality, distributed.morphs.train_typicality, atol=1e-6)
    columns = ["group", "typicality", "typicality_percentile"]
    pd.testing.assert_frame_equal(local.images[columns], distributed.images[columns], atol=1e-6)


def test_ray_engine_gives_the_local_map_for_sampled_and_placed_rows(bundles):
    local, distributed, _ = bundles
    rows = len(local.images)
    sampled = np.zeros(rows, dtype=bool)
    sampled[map_sample_rows(rows, MAP_SAMPLE, seed=0)] = True
    assert 0 < sampled.sum() < rows  # both paths ran: fitted and kNN-placed rows
    coords = ["umap_x", "umap_y"]
    np.testing.assert_array_equal(local.images.loc[sampled, coords], distributed.images.loc[sampled, coords])
    np.testing.assert_allclose(local.images.loc[~sampled, coords], distributed.images.loc[~sampled, coords], atol=1e-5)


def test_ray_engine_gives_the_same_table_and_atlas(bundles):
    local, distributed, _ = bundles
    pd.testing.assert_frame_equal(local.images, distributed.images, atol=1e-5)
    assert distributed.manifest.atlas == local.manifest.atlas and local.manifest.atlas.shards > 1
    for name in local.manifest.atlas.files:
        assert distributed.manifest.files[name] == local.manifest.files[name], f"{name}: the same bytes"
