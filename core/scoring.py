"""Scores from network outputs: modernity, body type, typicality and percentiles. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.config import YearBin, head_years

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


@dataclass(frozen=True)
class Modernity:
    """Modernity = Σ p_i·i over the ordinal year bins (0 = oldest bin), and the expected year: Σ p_y·y over the
    network's per-year head where it has one, else Σ p_i·centre_i over the bins."""

    score: float
    expected_year: float
    probabilities: tuple[float, ...]
    predicted_bin: int
    predicted_label: str


@dataclass(frozen=True)
class BodyType:
    """The most probable body type and the probability of every body type."""

    label: str
    index: int
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Typicality:
    """Cosine similarity to the morph of a group (body type × year bin) and its percentile among that group's
    training cars; `cosine`/`percentile` are None (and `reason` says why) when the group has no morph."""

    group: str
    has_morph: bool
    cosine: float | None = None
    percentile: float | None = None
    members: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class Morphs:
    """Morphs (mean penultimate feature per body type × year bin) and the training typicality of their members."""

    features: np.ndarray  # G x 512 float32
    body_type: np.ndarray  # G int, index into body_types
    year_bin: np.ndarray  # G int, index into year_bins
    count: np.ndarray  # G int, training members
    images: np.ndarray  # G x S x S x 3 uint8, pixel mean of the members' crops, flip-aligned
    train_typicality: np.ndarray  # G x M float32, sorted ascending, nan-padded
    body_types: tuple[str, ...]
    year_bins: tuple[YearBin, ...]
    min_members: int

    def __len__(self) -> int:
        return len(self.features)

    def find(self, body_index: int, year_bin: int) -> int | None:
        """Row of the morph for (body type, year bin), or None when that group has none."""
        rows = np.flatnonzero((self.body_type == body_index) & (self.year_bin == year_bin))
        return int(rows[0]) if len(rows) else None

    def group_label(self, body_index: int, year_bin: int) -> str:
        return group_label(self.body_types[body_index], self.year_bins[year_bin])

    def typicality_values(self, row: int) -> np.ndarray:
        """The sorted training typicality values of morph `row`, without padding."""
        values = self.train_typicality[row]
        return values[~np.isnan(values)]


def group_label(body_type: str, year_bin: YearBin) -> str:
    """Human-readable group name, e.g. 'SUV · 2012' or 'Saloon · 2008-2009'."""
    return f"{body_type} · {year_bin.label}"


def group_key(body_type: str, year_bin: int) -> str:
    """The group key stored in images.parquet: '<body type>|<year bin index>'."""
    return f"{body_type}|{year_bin}"


def softmax(logits: ArrayLike) -> np.ndarray:
    """Softmax of one logit vector (a 1 x K batch is accepted) as float64."""
    values = _vector(logits)
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def modernity_from_logits(
    logits: ArrayLike, year_bins: Sequence[YearBin], year_logits: ArrayLike | None = None
) -> Modernity:
    """Modernity score in [0, K-1] (Σ p_i·i), probabilities and the expected year: from the per-year head's logits
    (`year_logits`, one per year of `head_years`) when given, else Σ p_i·centre_i over the bins."""
    probabilities = softmax(logits)
    if len(probabilities) != len(year_bins):
        raise ValueError(f"{len(probabilities)} year-bin logits for {len(year_bins)} year bins")
    predicted = int(probabilities.argmax())
    return Modernity(
        score=float(probabilities @ np.arange(len(probabilities))),
        expected_year=expected_year(probabilities, year_bins, year_logits),
        probabilities=tuple(float(p) for p in probabilities),
        predicted_bin=predicted,
        predicted_label=year_bins[predicted].label,
    )


def expected_year(
    bin_probabilities: np.ndarray, year_bins: Sequence[YearBin], year_logits: ArrayLike | None = None
) -> float:
    """Σ p_y·y over the per-year head (its classes are `head_years(year_bins)`), or Σ p_i·centre_i without one."""
    if year_logits is None or len(_vector(year_logits)) == 0:
        return float(bin_probabilities @ np.array([year_bin.centre for year_bin in year_bins]))
    years = head_years(year_bins)
    per_year = softmax(year_logits)
    if len(per_year) != len(years):
        raise ValueError(f"{len(per_year)} per-year logits for the {len(years)} years {years[0]}-{years[-1]}")
    return float(per_year @ years)


def whole_year(expected: ArrayLike) -> np.ndarray:
    """The year the app shows for expected years: the nearest whole year (halves to even, as Python's `round`).
    Model years are whole, so errors are measured on this reading, as users see it."""
    return np.rint(np.asarray(expected, dtype=float))


def body_type_from_logits(logits: ArrayLike, body_types: Sequence[str]) -> BodyType:
    """The arg-max body type and a {label: probability} dict."""
    probabilities = softmax(logits)
    if len(probabilities) != len(body_types):
        raise ValueError(f"{len(probabilities)} body-type logits for {len(body_types)} body types")
    index = int(probabilities.argmax())
    return BodyType(
        label=body_types[index],
        index=index,
        probabilities={label: float(p) for label, p in zip(body_types, probabilities, strict=True)},
    )


def cosine_similarity(a: ArrayLike, b: ArrayLike) -> float:
    """Cosine similarity of two vectors (0 when either is all zeros)."""
    u, v = _vector(a), _vector(b)
    norm = float(np.linalg.norm(u) * np.linalg.norm(v))
    return float(u @ v / norm) if norm > 0 else 0.0


def percentile(value: float, sorted_values: np.ndarray) -> float:
    """Share (0-100) of `sorted_values` below `value`, ties counted half (mid-rank); nan for an empty set."""
    if len(sorted_values) == 0:
        return float("nan")
    below = np.searchsorted(sorted_values, value, side="left")
    not_above = np.searchsorted(sorted_values, value, side="right")
    return float(100.0 * (below + not_above) / (2 * len(sorted_values)))


def typicality(feature: ArrayLike, morphs: Morphs, body_index: int, year_bin: int) -> Typicality:
    """Typicality of a penultimate feature within the group (body type, year bin) it is predicted to belong to."""
    label = morphs.group_label(body_index, year_bin)
    row = morphs.find(body_index, year_bin)
    if row is None:
        return Typicality(
            group=label,
            has_morph=False,
            reason=f"No morph for {label}: fewer than {morphs.min_members} training cars in this group.",
        )
    cosine = cosine_similarity(feature, morphs.features[row])
    return Typicality(
        group=label,
        has_morph=True,
        cosine=cosine,
        percentile=percentile(cosine, morphs.typicality_values(row)),
        members=int(morphs.count[row]),
    )


def _vector(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise ValueError(f"expected one vector, got shape {array.shape}")
    return array
