"""core.atlas: an atlas written in shards as they fill, read back shard by shard on demand, and the one-file atlas of
bundles written before sharding."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.atlas import ATLAS_FOLDER, Atlas, AtlasCanvas, AtlasSpec, install_atlas, open_atlas
from core.errors import BundleError

TILE = 16  # one JPEG block of subsampled colour: tiles do not share one
LAYOUT = AtlasSpec(tile=TILE, columns=2, shard_tiles=4)  # 2 x 2 tiles a shard
COUNT = 11  # shards of 4, 4 and 3 tiles


def colour_of(row: int) -> tuple[int, int, int]:
    """A colour per row, far from every other row's (JPEG keeps a flat tile's colour to a few levels)."""
    return (row * 23 % 256, 255 - row * 23 % 256, 40 + row * 17 % 200)


def tiles_of(rows: range | list[int]) -> np.ndarray:
    return np.array([np.full((TILE, TILE, 3), colour_of(row), np.uint8) for row in rows])


def assert_tile_is_row(tile: Image.Image, row: int) -> None:
    """The tile has the row's colour, up to JPEG's loss."""
    assert tile.size == (TILE, TILE)
    assert np.abs(np.asarray(tile, dtype=int) - colour_of(row)).mean() <= 4, f"tile of row {row}"


@pytest.fixture
def written(tmp_path: Path) -> Atlas:
    """An atlas of COUNT flat-coloured tiles in three shards, its rows pasted in two blocks out of order (as Ray's
    blocks arrive)."""
    folder = tmp_path / ATLAS_FOLDER
    canvas = AtlasCanvas(folder, COUNT, LAYOUT)
    late, early = list(range(6, COUNT)), list(range(6))
    canvas.paste(tiles_of(late), late)
    canvas.paste(tiles_of(early), early)
    return open_atlas(tmp_path, canvas.close(), COUNT)


def test_canvas_writes_each_shard_once_it_is_full(tmp_path: Path):
    canvas = AtlasCanvas(tmp_path / ATLAS_FOLDER, COUNT, LAYOUT)
    canvas.paste(tiles_of(range(3)), range(3))
    assert not list((tmp_path / ATLAS_FOLDER).iterdir()), "shard 0 still lacks a tile"
    canvas.paste(tiles_of([3, 8, 9, 10]), [3, 8, 9, 10])
    assert sorted(p.name for p in (tmp_path / ATLAS_FOLDER).iterdir()) == ["00000.jpg", "00002.jpg"]
    with pytest.raises(ValueError, match=r"shards \[1\] lack tiles"):
        canvas.close()


def test_canvas_records_the_layout_and_sizes_each_shard(written: Atlas):
    spec = written.spec
    assert spec == AtlasSpec(tile=TILE, columns=2, shard_tiles=4, shards=3, folder=ATLAS_FOLDER)
    assert spec.files == ("atlas/00000.jpg", "atlas/00001.jpg", "atlas/00002.jpg")
    sizes = [Image.open(written.directory / name).size for name in spec.files]
    assert sizes == [(32, 32), (32, 32), (32, 32)]  # the last shard's 3 tiles take 2 lines too


def test_every_tile_is_read_from_its_shard(written: Atlas):
    for row in range(COUNT):
        assert_tile_is_row(written.tile(row), row)
    with pytest.raises(IndexError):
        written.tile(COUNT)


def test_shards_are_decoded_on_demand_and_kept_in_a_bounded_cache(tmp_path: Path, written: Atlas):
    assert written.cache_info().misses == 0, "opening the atlas decodes no shard"
    written.tile(5)
    written.tile(6)
    assert (written.cache_info().misses, written.cache_info().hits) == (1, 1), "tiles 5 and 6 share shard 1"
    small = Atlas(tmp_path, written.spec, COUNT, cached=2)
    for row in (0, 4, 8, 0):
        small.tile(row)
    assert small.cache_info().currsize == 2 and small.cache_info().misses == 4, "shard 0 was dropped, then decoded"


def test_threads_share_the_cache(written: Atlas):
    rows = [row % COUNT for row in range(200)]
    with ThreadPoolExecutor(8) as pool:
        tiles = list(pool.map(written.tile, rows))
    for row, tile in zip(rows, tiles, strict=True):
        assert_tile_is_row(tile, row)
    assert written.cache_info().currsize == 3


def test_a_one_file_atlas_reads_as_before_sharding(tmp_path: Path):
    """The layout bundles had before sharding: one atlas.jpg, `columns` tiles to a line, no shard fields."""
    columns, image = 4, Image.new("RGB", (4 * TILE, 3 * TILE))
    for row in range(COUNT):
        image.paste(Image.fromarray(tiles_of([row])[0]), ((row % columns) * TILE, (row // columns) * TILE))
    image.save(tmp_path / "atlas.jpg", quality=85)
    old = {"file": "atlas.jpg", "tile": TILE, "columns": columns}
    spec = AtlasSpec.from_dict(old)
    assert spec.to_dict() == old and spec.files == ("atlas.jpg",)
    atlas = open_atlas(tmp_path, spec, COUNT)
    decoded = Image.open(tmp_path / "atlas.jpg").convert("RGB")
    for row in range(COUNT):
        box = ((row % columns) * TILE, (row // columns) * TILE, (row % columns + 1) * TILE, (row // columns + 1) * TILE)
        assert np.array_equal(np.asarray(atlas.tile(row)), np.asarray(decoded.crop(box))), "the old crop, exactly"
    with pytest.raises(BundleError, match="too small for 13 tiles"):
        open_atlas(tmp_path, spec, 13)


@pytest.mark.parametrize(
    "atlas",
    [
        {"folder": "atlas", "tile": 64, "columns": 16, "shard_tiles": 0, "shards": 1},
        {"folder": "atlas", "tile": 0, "columns": 16, "shard_tiles": 256, "shards": 1},
        {"file": "atlas.jpg", "tile": 64, "columns": 0},
    ],
)
def test_sizes_must_be_positive(atlas: dict):
    with pytest.raises(ValueError, match="must be positive"):
        AtlasSpec.from_dict(atlas)


def test_a_build_installs_only_a_sharded_atlas(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("a bundle file")
    with pytest.raises(ValueError, match="as shards"):
        install_atlas(tmp_path / "staged", tmp_path, AtlasSpec.single_file("atlas.jpg", TILE, 2))
    assert (tmp_path / "keep.txt").exists()
