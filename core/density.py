"""Server-side aggregation of the map (datashader's idea in plain numpy): millions of points become one picture.

Points are binned into a grid of pixels over a fixed extent; per pixel we keep the count of each category (or the
mean of a continuous value), and shade: the colour is the count-weighted mix of the category colours (or the
colour of the mean), the opacity grows with the log of the count, so dense and sparse areas both stay readable.
The browser then draws one image, whatever the number of points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARGIN = 0.02  # of the spread, around the points
MIN_ALPHA = 0.35  # a pixel holding one car stays visible
SPREAD = 1  # pixels each point reaches on every side (a 3 x 3 footprint)


@dataclass(frozen=True)
class Grid:
    """Pixels of the aggregated map: `width` x `height` over x0..x1, y0..y1 (map units; row 0 is the top, y1)."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int
    height: int

    def cells(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat pixel index (row-major, top row first) of every point; points outside the extent are clamped."""
        column = np.clip(((x - self.x0) / (self.x1 - self.x0) * self.width).astype(np.int64), 0, self.width - 1)
        row = np.clip(((self.y1 - y) / (self.y1 - self.y0) * self.height).astype(np.int64), 0, self.height - 1)
        return row * self.width + column


def grid_over(x: np.ndarray, y: np.ndarray, width: int, height: int) -> Grid:
    """A grid covering every point with a small margin (a degenerate axis gets a unit span)."""
    x_low, x_high = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
    y_low, y_high = (float(y.min()), float(y.max())) if len(y) else (0.0, 1.0)
    x_pad = (x_high - x_low) * MARGIN or 0.5
    y_pad = (y_high - y_low) * MARGIN or 0.5
    return Grid(x_low - x_pad, x_high + x_pad, y_low - y_pad, y_high + y_pad, width, height)


def spread(image: np.ndarray, reach: int = SPREAD) -> np.ndarray:
    """Sum of every pixel's (2 reach + 1)² neighbourhood, over the first two axes (so lone points show)."""
    padded = np.pad(image, [(reach, reach), (reach, reach)] + [(0, 0)] * (image.ndim - 2))
    height, width = image.shape[:2]
    total = np.zeros_like(image, dtype=np.float64)
    for dy in range(2 * reach + 1):
        for dx in range(2 * reach + 1):
            total += padded[dy : dy + height, dx : dx + width]
    return total


def category_counts(grid: Grid, x: np.ndarray, y: np.ndarray, codes: np.ndarray, categories: int) -> np.ndarray:
    """height x width x categories: how many points of each category code fall in each pixel."""
    flat = grid.cells(x, y) * categories + codes
    counts = np.bincount(flat, minlength=grid.width * grid.height * categories)
    return spread(counts.reshape(grid.height, grid.width, categories))


def value_sums(grid: Grid, x: np.ndarray, y: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """height x width sums of `values` and counts of the points in each pixel (spread like the counts)."""
    cells = grid.cells(x, y)
    size = grid.width * grid.height
    sums = np.bincount(cells, weights=values, minlength=size).reshape(grid.height, grid.width)
    counts = np.bincount(cells, minlength=size).reshape(grid.height, grid.width)
    return spread(sums), spread(counts)


def opacity(counts: np.ndarray) -> np.ndarray:
    """Opacity 0..1 per pixel: 0 where empty, MIN_ALPHA for the sparsest, 1 for the densest (log scale)."""
    densest = float(counts.max()) if counts.size else 0.0
    if densest <= 0:
        return np.zeros_like(counts, dtype=np.float64)
    scaled = np.log1p(counts) / np.log1p(densest)
    return np.where(counts > 0, MIN_ALPHA + (1.0 - MIN_ALPHA) * scaled, 0.0)


def rgba(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """height x width x 4 uint8 from colours in 0..1 (h x w x 3) and opacities (h x w)."""
    stacked = np.concatenate([colour, alpha[..., None]], axis=-1)
    return np.round(np.clip(stacked, 0.0, 1.0) * 255).astype(np.uint8)


def shade_categories(counts: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGBA image of per-category counts (h x w x K) with one colour per category (K x 3, in 0..1)."""
    total = counts.sum(axis=-1)
    mixed = (counts @ palette) / np.maximum(total, 1e-12)[..., None]
    return rgba(mixed, opacity(total))


def shade_values(sums: np.ndarray, counts: np.ndarray, lookup: np.ndarray, low: float, high: float) -> np.ndarray:
    """RGBA image of the mean value per pixel through a colour lookup table (L x 3, in 0..1) spanning low..high."""
    mean = sums / np.maximum(counts, 1e-12)
    position = np.clip((mean - low) / ((high - low) or 1.0), 0.0, 1.0)
    colour = lookup[np.round(position * (len(lookup) - 1)).astype(np.int64)]
    return rgba(colour, opacity(counts))


def sample(rows: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """At most `limit` of `rows`, drawn without replacement (seeded), in their original order."""
    if len(rows) <= limit:
        return rows
    picked = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
    return rows[np.sort(picked)]
