"""The thumbnail atlas of a bundle: one `tile` px square per image, stored in JPEG shards of a fixed number of tiles,
written shard by shard as a build fills them and decoded shard by shard when a thumbnail is asked for.

Layout (`AtlasSpec`, the manifest's "atlas"): tile i is position p = i % shard_tiles of shard i // shard_tiles
(`atlas/00000.jpg`, `atlas/00001.jpg`, ...), at column p % columns and line p // columns of that shard. The default
shard is 16 x 16 tiles: 1024 x 1024 px at 64 px, 3 MB decoded. Bundles written before sharding have one file,
`atlas.jpg`, holding every tile (`AtlasSpec.single_file`); they load as they did.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import BundleError

ATLAS_FILE = "atlas.jpg"  # the one-file atlas of bundles written before sharding
ATLAS_FOLDER = "atlas"
STAGING_FOLDER = f"{ATLAS_FOLDER}.partial"  # where a build writes the shards before the bundle takes them
SHARD_COLUMNS = 16
SHARD_TILES = SHARD_COLUMNS * SHARD_COLUMNS
CACHED_SHARDS = 32  # decoded shards a loaded bundle keeps: 96 MB at 64 px tiles
ATLAS_BACKGROUND = (240, 240, 240)
JPEG_QUALITY = 85


@dataclass(frozen=True)
class AtlasSpec:
    """Where the tiles are (see the module doc): `tile` px squares, `columns` to a line, `shard_tiles` to a shard,
    `shards` files in `folder`; or, with `file` set, one file holding every tile (`shard_tiles` 0)."""

    tile: int = 64
    columns: int = SHARD_COLUMNS
    shard_tiles: int = SHARD_TILES
    shards: int = 0
    folder: str = ATLAS_FOLDER
    file: str = ""

    @classmethod
    def single_file(cls, file: str, tile: int, columns: int) -> AtlasSpec:
        """The atlas of a bundle written before sharding."""
        return cls(tile, columns, shard_tiles=0, shards=1, folder="", file=file)

    @property
    def files(self) -> tuple[str, ...]:
        """The bundle's atlas files, shard by shard."""
        return tuple(self.shard_file(shard) for shard in range(self.shards))

    def shard_file(self, shard: int) -> str:
        return self.file or f"{self.folder}/{shard:05d}.jpg"

    def locate(self, index: int) -> tuple[int, tuple[int, int, int, int]]:
        """The shard holding tile `index` and the tile's box in it (left, top, right, bottom px)."""
        shard, position = divmod(index, self.shard_tiles) if self.shard_tiles else (0, index)
        x, y = (position % self.columns) * self.tile, (position // self.columns) * self.tile
        return shard, (x, y, x + self.tile, y + self.tile)

    def tiles_in(self, shard: int, count: int) -> int:
        """How many of an atlas's `count` tiles shard `shard` holds."""
        if not self.shard_tiles:
            return count
        return max(0, min(self.shard_tiles, count - shard * self.shard_tiles))

    def shard_size(self, tiles: int) -> tuple[int, int]:
        """Width and height (px) of a shard holding `tiles` tiles."""
        return self.columns * self.tile, -(-tiles // self.columns) * self.tile

    def to_dict(self) -> dict[str, Any]:
        if self.file:
            return {"file": self.file, "tile": self.tile, "columns": self.columns}
        return {
            "folder": self.folder,
            "tile": self.tile,
            "columns": self.columns,
            "shard_tiles": self.shard_tiles,
            "shards": self.shards,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> AtlasSpec:
        """Parse the manifest's "atlas" (ValueError when a size is not positive)."""
        tile, columns = int(value["tile"]), int(value["columns"])
        if "file" in value:
            spec = cls.single_file(str(value["file"]), tile, columns)
        else:
            spec = cls(tile, columns, int(value["shard_tiles"]), int(value["shards"]), str(value["folder"]))
        if spec.tile < 1 or spec.columns < 1 or spec.shards < 0 or not (spec.file or spec.shard_tiles > 0):
            raise ValueError(f"tile, columns and shard_tiles must be positive and shards not negative: {value}")
        return spec


class Atlas:
    """A bundle's atlas of `count` tiles, read on demand: a shard is decoded when one of its tiles is first asked
    for, and the `cached` shards used last stay decoded. The cache is a `functools.lru_cache`, safe to share between
    the threads of several sessions (two threads missing the same shard at once may both decode it)."""

    def __init__(self, directory: Path, spec: AtlasSpec, count: int, cached: int = CACHED_SHARDS):
        self.directory, self.spec, self.count = Path(directory), spec, count
        self._decoded = functools.lru_cache(maxsize=cached)(self._decode)

    def tile(self, index: int) -> Image.Image:
        """Tile `index` (a new image: callers may change it)."""
        if not 0 <= index < self.count:
            raise IndexError(f"atlas tile {index} outside 0..{self.count - 1}")
        shard, box = self.spec.locate(index)
        return self._decoded(shard).crop(box)

    def cache_info(self) -> functools._CacheInfo:
        """Decoded-shard cache statistics: hits, misses (shards decoded), maxsize, currsize (shards held)."""
        return self._decoded.cache_info()

    def _decode(self, shard: int) -> Image.Image:
        name = self.spec.shard_file(shard)
        try:
            with Image.open(self.directory / name) as image:
                return image.convert("RGB")
        except (OSError, ValueError) as error:
            raise BundleError(f"Atlas file {name} of {self.directory} cannot be decoded ({error}).") from error


def open_atlas(directory: Path, spec: AtlasSpec, count: int) -> Atlas:
    """The atlas of a bundle whose table names `count` tiles, checked without decoding any shard: there are shards
    enough, and each file's header says it is an image large enough for the tiles it must hold."""
    if spec.shard_tiles and spec.shards * spec.shard_tiles < count:
        raise BundleError(
            f"manifest.json: the atlas has {spec.shards} shards of {spec.shard_tiles} tiles, fewer than the "
            f"{count} tiles the images table names. Rebuild the bundle."
        )
    for shard in range(spec.shards):
        _check_shard(directory, spec, shard, spec.tiles_in(shard, count))
    return Atlas(directory, spec, count)


def _check_shard(directory: Path, spec: AtlasSpec, shard: int, tiles: int) -> None:
    name = spec.shard_file(shard)
    try:
        with Image.open(directory / name) as image:
            width, height = image.size
    except (OSError, ValueError) as error:
        raise BundleError(f"{name} is not a readable image ({error}).") from error
    needed = spec.shard_size(tiles)
    if width < needed[0] or height < needed[1]:
        raise BundleError(
            f"{name} is {width}x{height} px, too small for {tiles} tiles of {spec.tile} px in {spec.columns} "
            f"columns ({needed[0]}x{needed[1]} px). Copy or rebuild the bundle again."
        )


def atlas_tile(image: Image.Image, tile: int) -> Image.Image:
    """The image fitted (aspect kept) and centred on a tile x tile square."""
    fitted = image.copy()
    fitted.thumbnail((tile, tile), Image.Resampling.LANCZOS)
    square = Image.new("RGB", (tile, tile), ATLAS_BACKGROUND)
    square.paste(fitted, ((tile - fitted.width) // 2, (tile - fitted.height) // 2))
    return square


class AtlasCanvas:
    """The atlas of `count` tiles being built into `folder` (emptied first), laid out as `layout` (its tile, columns
    and shard_tiles). Tiles are pasted by row number; a shard is written as soon as it holds all its tiles, so only
    the shards being filled are in memory: one when rows come in order (the local engine), a few when blocks of rows
    come as workers finish them (the Ray engine)."""

    def __init__(self, folder: Path, count: int, layout: AtlasSpec):
        if layout.shard_tiles < 1:
            raise ValueError("an atlas is built in shards: layout.shard_tiles must be positive")
        shards = -(-count // layout.shard_tiles)
        self.spec = AtlasSpec(layout.tile, layout.columns, layout.shard_tiles, shards, ATLAS_FOLDER)
        self.folder, self.count = Path(folder), count
        self._filling: dict[int, tuple[Image.Image, int]] = {}  # shard -> (its image, tiles pasted)
        self._written: set[int] = set()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)

    @classmethod
    def staged(cls, directory: str | Path, count: int, layout: AtlasSpec) -> AtlasCanvas:
        """A canvas in the bundle `directory`'s staging folder (`core.artifacts.write_bundle` moves it in place)."""
        return cls(Path(directory) / STAGING_FOLDER, count, layout)

    def paste(self, tiles: np.ndarray, rows: Sequence[int]) -> None:
        """Put tile k (tile x tile x 3 uint8) at row `rows[k]`, once per row."""
        for pixels, row in zip(tiles, rows, strict=True):
            shard, box = self.spec.locate(int(row))
            image, pasted = self._filling.get(shard) or (self._blank(shard), 0)
            image.paste(Image.fromarray(pixels), box[:2])
            self._filling[shard] = (image, pasted + 1)
            if pasted + 1 == self.spec.tiles_in(shard, self.count):
                self._write(shard)

    def close(self) -> AtlasSpec:
        """The layout of the written atlas, every shard complete (ValueError when rows were not pasted)."""
        missing = sorted(set(range(self.spec.shards)) - self._written)
        if missing:
            raise ValueError(f"atlas shards {missing[:10]} lack tiles: every row must be pasted once")
        return self.spec

    def _blank(self, shard: int) -> Image.Image:
        return Image.new("RGB", self.spec.shard_size(self.spec.tiles_in(shard, self.count)), ATLAS_BACKGROUND)

    def _write(self, shard: int) -> None:
        image, _ = self._filling.pop(shard)
        image.save(self.folder / Path(self.spec.shard_file(shard)).name, "JPEG", quality=JPEG_QUALITY)
        self._written.add(shard)


def install_atlas(staged: Path, directory: Path, spec: AtlasSpec) -> None:
    """Move the shards built in `staged` into the bundle `directory` as `spec.folder`, replacing its earlier atlas
    (sharded or one file)."""
    if spec.file or spec.folder != ATLAS_FOLDER:
        raise ValueError(f"a build writes its atlas as shards in {ATLAS_FOLDER}/, not as {spec.to_dict()}")
    target = directory / spec.folder
    shutil.rmtree(target, ignore_errors=True)
    (directory / ATLAS_FILE).unlink(missing_ok=True)
    staged.replace(target)
