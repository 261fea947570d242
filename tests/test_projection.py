"""core.projection: kNN placement on the map (cosine neighbours, inverse-distance-weighted coordinates)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.artifacts import Bundle
from core.projection import MapPlacer, l2_normalise, pca_coordinates

UNIT_X, UNIT_Y = np.array([1.0, 0.0]), np.array([0.0, 1.0])


def two_point_placer() -> MapPlacer:
    return MapPlacer(k=2).fit(np.stack([UNIT_X, 3.0 * UNIT_Y]), np.array([[0.0, 0.0], [10.0, 0.0]]))


def test_a_training_embedding_lands_on_its_own_coordinates(tiny_bundle: Bundle):
    coords = tiny_bundle.images[["umap_x", "umap_y"]].to_numpy(np.float32)
    for row in (0, 7, 22):
        assert tiny_bundle.placer.transform(tiny_bundle.embeddings[row]) == pytest.approx(coords[row], abs=1e-6)
        nearest = tiny_bundle.placer.neighbours(tiny_bundle.embeddings[row])
        assert nearest.indices[0] == row and nearest.cosine_distances[0] == pytest.approx(0.0, abs=1e-6)


def test_placement_is_the_inverse_distance_weighted_mean():
    placer = two_point_placer()
    halfway = np.array([math.cos(math.radians(45)), math.sin(math.radians(45))])
    assert placer.transform(halfway) == pytest.approx([5.0, 0.0])
    # 30 degrees from x: distances 1 - cos 30 = 0.134 and 1 - cos 60 = 0.5, weights 7.46 and 2 -> x = 20 / 9.46
    near_x = np.array([math.cos(math.radians(30)), math.sin(math.radians(30))])
    d1, d2 = 1 - math.cos(math.radians(30)), 0.5
    assert placer.transform(near_x)[0] == pytest.approx(10 * (1 / d2) / (1 / d1 + 1 / d2), rel=1e-5)


def test_neighbours_are_sorted_and_batched():
    placer = two_point_placer()
    single = placer.neighbours(np.array([0.2, 1.0]))
    assert single.indices.tolist() == [1, 0] and single.cosine_distances[0] < single.cosine_distances[1]
    batch = placer.neighbours(np.array([[0.2, 1.0], [1.0, 0.1], [1.0, 0.0]]), k=1)
    assert batch.indices.shape == (3, 1) and batch.indices[:, 0].tolist() == [1, 0, 0]
    assert placer.transform(np.array([[1.0, 0.0], [0.0, 2.0]])) == pytest.approx(np.array([[0, 0], [10, 0]]))


def test_k_larger_than_the_map_uses_every_point():
    assert len(two_point_placer().neighbours(UNIT_X, k=50).indices) == 2


def test_fit_checks_shapes():
    with pytest.raises(ValueError):
        MapPlacer().fit(np.ones((3, 4)), np.ones((2, 2)))


def test_l2_normalise_keeps_zero_rows():
    unit = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert unit == pytest.approx(np.array([[0.6, 0.8], [0.0, 0.0]])) and unit.dtype == np.float32


def test_pca_coordinates_of_real_embeddings(tiny_bundle: Bundle):
    coords = pca_coordinates(tiny_bundle.embeddings)
    assert coords.shape == (23, 2) and np.isfinite(coords).all()
    assert np.allclose(coords.mean(axis=0), 0.0, atol=1e-5)
    assert coords[:, 0].var() >= coords[:, 1].var()


def test_a_memory_mapped_matrix_searched_in_chunks_gives_the_same_neighbours(tmp_path, monkeypatch):
    """Large bundles: embeddings stay on disk and are compared a chunk at a time, with the same result."""
    from core import projection

    rng = np.random.default_rng(0)
    embeddings, coords, queries = rng.normal(size=(50, 8)), rng.normal(size=(50, 2)), rng.normal(size=(4, 8))
    whole = MapPlacer(k=5).fit(embeddings.astype(np.float32), coords).neighbours(queries)
    np.save(tmp_path / "e.npy", embeddings.astype(np.float32))
    monkeypatch.setattr(projection, "SEARCH_CHUNK_ROWS", 7)
    chunked = MapPlacer(k=5).fit(np.load(tmp_path / "e.npy", mmap_mode="r"), coords).neighbours(queries)
    np.testing.assert_array_equal(chunked.indices, whole.indices)
    np.testing.assert_allclose(chunked.cosine_distances, whole.cosine_distances, atol=1e-6)
