"""Shared constants and settings. Arguments win over environment variables, which win over defaults."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE_DIR = PROJECT_ROOT / "artifacts" / "default"
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"

SEED_BODY_TYPES: tuple[str, ...] = ("Hatchback", "SUV", "MPV", "Saloon", "Convertible")
# Other names of the seed's body types in labels: the US names of Stanford Cars' classes and common spellings.
BODY_TYPE_SYNONYMS = {"sedan": "Saloon", "minivan": "MPV", "people carrier": "MPV", "cabriolet": "Convertible"}
_BODY_TYPE_NAMES = {t.casefold(): t for t in SEED_BODY_TYPES} | BODY_TYPE_SYNONYMS  # casefolded label -> seed type


def seed_body_type(label: object) -> str:
    """The seed body type a label names, in any case or by a synonym (Sedan, Minivan); "" for any other label."""
    return _BODY_TYPE_NAMES.get(label.strip().casefold(), "") if isinstance(label, str) else ""


EMBEDDING_DIM = 512
# The crop the modernity and body-type networks see: the car box widened by this fraction of its width/height on
# each side (training, bundle building and scoring all use it).
CROP_MARGIN = 0.04
# Below this sharpness (core.imaging.sharpness) a photo looks out of focus and its scores may not hold. Chosen on the
# validation split's car photos: below it are 0.19 % of Stanford's (0.5th percentile 153), none of DVM-CAR's or
# EPFL's (549, 554), and 96-100 % of them blurred by 0.5 % of their longer side, all blurred by 1 %
# (docs/EXPERIMENTS.md).
BLUR_SHARPNESS = 100.0
# Below this many pixels on its longer side the car's box is smaller than any car photo of the data (the smallest
# validation car: 110 px on an EPFL frame, 113 px on Stanford's), and the scores fall off: Stanford validation with
# every photo reduced to 96 px gives a year error of 1.82 years (1.30 as is) and body type 0.752 (0.822); to 64 px,
# 2.09 years and 0.614 (docs/EXPERIMENTS.md).
SMALL_CAR_PIXELS = 100

# Largest image (in pixels) that is decoded; larger ones are refused as possible decompression bombs.
# 50 MP covers any phone photo; the upload limit in .streamlit/config.toml (25 MB) is of the same order.
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class YearBin:
    """An ordinal year bin: inclusive year range and the year it stands for (its centre)."""

    start: int
    end: int
    centre: float

    @property
    def label(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"

    def contains(self, year: int) -> bool:
        return self.start <= year <= self.end


# The seed's bins on DVM-CAR (2000-17); gaps between bins are part of the seed's recipe.
DVM_YEAR_BINS: tuple[YearBin, ...] = (
    YearBin(2000, 2003, 2001.5),
    YearBin(2006, 2008, 2007.0),
    YearBin(2009, 2011, 2010.0),
    YearBin(2012, 2014, 2013.0),
    YearBin(2015, 2017, 2016.0),
)

# Bins for the shared data (Stanford Cars 1991-2012, 60 % of it 2012; DVM-CAR Porsche 2000-2019): the most
# balanced ordinal cut that keeps each year whole and keeps 2012 (4,846 cars) in one bin; the last bin reaches
# 2020 so cars of 2020 still have a bin. Counts in the shared data: 2,564 / 3,743 / 5,511 / 3,470 / 2,103;
# centres are the mean year of each bin's cars.
SHARED_YEAR_BINS: tuple[YearBin, ...] = (
    YearBin(1991, 2006, 2002.5),
    YearBin(2007, 2010, 2008.3),
    YearBin(2011, 2012, 2011.9),
    YearBin(2013, 2016, 2014.5),
    YearBin(2017, 2020, 2017.8),
)


def head_years(bins: Sequence[YearBin]) -> np.ndarray:
    """The years a per-year head has one class for: every year from the first bin's start to the last bin's end."""
    return np.arange(bins[0].start, bins[-1].end + 1)


def year_to_bin(year: int, bins: tuple[YearBin, ...]) -> int | None:
    """Index of the bin holding `year`, or None when no bin does."""
    for index, year_bin in enumerate(bins):
        if year_bin.contains(year):
            return index
    return None


def env_path(name: str, default: Path | None) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def bundle_dir(explicit: str | Path | None = None) -> Path:
    """The artifact bundle to load: argument, else $CARMORPH_BUNDLE, else artifacts/default."""
    if explicit:
        return Path(explicit)
    return env_path("CARMORPH_BUNDLE", DEFAULT_BUNDLE_DIR) or DEFAULT_BUNDLE_DIR


def image_root(explicit: str | Path | None = None) -> Path | None:
    """Folder the bundle's relative image paths resolve against: argument, $CARMORPH_IMAGE_ROOT, shared data."""
    if explicit:
        return Path(explicit)
    default = SHARED_DATA_DIR if SHARED_DATA_DIR.is_dir() else None
    return env_path("CARMORPH_IMAGE_ROOT", default)


def max_pixels(explicit: int | None = None) -> int:
    if explicit:
        return explicit
    return int(os.environ.get("CARMORPH_MAX_PIXELS", DEFAULT_MAX_PIXELS))


DEFAULT_MAP_POINTS = 50_000


def map_point_limit(explicit: int | None = None) -> int:
    """Most points the Explore map draws one by one (WebGL markers); above it the map is aggregated on the server:
    argument, else $CARMORPH_MAP_POINTS, else 50,000."""
    if explicit:
        return explicit
    return int(os.environ.get("CARMORPH_MAP_POINTS", DEFAULT_MAP_POINTS))


def serving_threads(explicit: int | None = None) -> int:
    """torch threads of the app: argument, else $CARMORPH_THREADS, else 1 (a web server runs beside other work, and
    one thread per scoring keeps concurrent sessions from oversubscribing the cores)."""
    if explicit:
        return explicit
    return max(1, int(os.environ.get("CARMORPH_THREADS", "1")))
