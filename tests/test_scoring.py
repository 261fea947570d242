"""core.scoring and core.viewpoint: the score arithmetic on hand-made logits, with expected values worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.config import SEED_BODY_TYPES, SHARED_YEAR_BINS, head_years
from core.scoring import (
    Morphs,
    body_type_from_logits,
    cosine_similarity,
    modernity_from_logits,
    percentile,
    softmax,
    typicality,
    whole_year,
)
from core.viewpoint import frontal_decision, frontal_decision_from_logit, view_rejection
from ui import format as fmt

# SHARED_YEAR_BINS centres: 2002.5, 2008.3, 2011.9, 2014.5, 2017.8


def logits_for(probabilities: list[float]) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.array(probabilities))


def test_uniform_logits_give_the_middle_score_and_the_mean_centre():
    result = modernity_from_logits(np.zeros(5), SHARED_YEAR_BINS)
    assert result.score == pytest.approx(2.0)
    assert result.expected_year == pytest.approx((2002.5 + 2008.3 + 2011.9 + 2014.5 + 2017.8) / 5)  # 2011.0
    assert result.probabilities == pytest.approx((0.2,) * 5)


def test_modernity_is_the_probability_weighted_bin_index():
    result = modernity_from_logits(logits_for([0.4, 0.3, 0.2, 0.1, 0.0]), SHARED_YEAR_BINS)
    assert result.score == pytest.approx(0.3 * 1 + 0.2 * 2 + 0.1 * 3)  # 1.0
    assert result.expected_year == pytest.approx(0.4 * 2002.5 + 0.3 * 2008.3 + 0.2 * 2011.9 + 0.1 * 2014.5)  # 2007.32
    assert (result.predicted_bin, result.predicted_label) == (0, "1991-2006")


def test_modernity_reaches_the_ends_of_its_range():
    newest = modernity_from_logits(torch.tensor([[-50.0, -50.0, -50.0, -50.0, 50.0]]), SHARED_YEAR_BINS)
    assert newest.score == pytest.approx(4.0) and newest.expected_year == pytest.approx(2017.8)
    assert newest.predicted_label == "2017-2020"
    oldest = modernity_from_logits(np.array([50.0, -50.0, -50.0, -50.0, -50.0]), SHARED_YEAR_BINS)
    assert oldest.score == pytest.approx(0.0) and oldest.expected_year == pytest.approx(2002.5)


def test_a_per_year_head_gives_the_expected_year_beyond_the_bin_centres():
    """A 1993 car surely in the oldest bin: the bins alone say 2002.5, the per-year head (1991-2020) says 1993,
    and the score still comes from the bins."""
    years = head_years(SHARED_YEAR_BINS)
    assert (years[0], years[-1], len(years)) == (1991, 2020, 30)
    per_year = np.where(years == 1993, 50.0, -50.0)
    bins = np.array([50.0, -50.0, -50.0, -50.0, -50.0])
    result = modernity_from_logits(bins, SHARED_YEAR_BINS, per_year)
    assert result.expected_year == pytest.approx(1993.0)
    assert result.score == pytest.approx(0.0) and result.predicted_bin == 0
    halves = np.where(np.isin(years, (2015, 2017)), 0.0, -50.0)
    assert modernity_from_logits(bins, SHARED_YEAR_BINS, halves).expected_year == pytest.approx(2016.0)
    with pytest.raises(ValueError, match="29 per-year logits for the 30 years 1991-2020"):
        modernity_from_logits(bins, SHARED_YEAR_BINS, np.zeros(29))


def test_the_whole_year_is_the_one_the_app_shows():
    expected = [2009.4, 2009.6, 2010.5, 2011.5, 1993.0]
    assert whole_year(expected).tolist() == [2009.0, 2010.0, 2010.0, 2012.0, 1993.0]  # halves to even
    assert [fmt.year(value) for value in expected] == [f"{year:.0f}" for year in whole_year(expected)]


def test_logit_count_must_match_the_bins():
    with pytest.raises(ValueError, match="4 year-bin logits for 5"):
        modernity_from_logits(np.zeros(4), SHARED_YEAR_BINS)


def test_body_type_probabilities():
    result = body_type_from_logits(np.array([0.0, math.log(3.0), 0.0, 0.0, 0.0]), SEED_BODY_TYPES)
    assert (result.label, result.index) == ("SUV", 1)
    assert result.probabilities["SUV"] == pytest.approx(3 / 7)
    assert result.probabilities["Hatchback"] == pytest.approx(1 / 7)
    assert sum(result.probabilities.values()) == pytest.approx(1.0)


def test_softmax_is_stable_for_large_logits():
    assert softmax([1000.0, 1000.0]) == pytest.approx([0.5, 0.5])


def test_cosine_similarity():
    assert cosine_similarity([1.0, 0.0], [2.0, 0.0]) == pytest.approx(1.0)
    assert cosine_similarity([1.0, 0.0], [1.0, 1.0]) == pytest.approx(math.sqrt(0.5))
    assert cosine_similarity([0.0, 0.0], [1.0, 1.0]) == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.05, 0.0), (0.25, 50.0), (0.3, 62.5), (0.4, 87.5), (0.5, 100.0)],
)
def test_percentile_counts_ties_half(value: float, expected: float):
    assert percentile(value, np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(expected)


def test_percentile_of_an_empty_group_is_nan():
    assert math.isnan(percentile(0.5, np.array([])))


def make_morphs() -> Morphs:
    """Two groups in 4-d features: SUV · 2012 (3 members) and Saloon · 2007 (2 members)."""
    return Morphs(
        features=np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=np.float32),
        body_type=np.array([1, 3]),
        year_bin=np.array([4, 1]),
        count=np.array([3, 2]),
        images=np.zeros((2, 4, 4, 3), dtype=np.uint8),
        train_typicality=np.array([[0.6, 0.8, 0.9], [0.5, 0.7, np.nan]], dtype=np.float32),
        body_types=SEED_BODY_TYPES,
        year_bins=SHARED_YEAR_BINS,
        min_members=2,
    )


def test_typicality_against_the_group_morph():
    result = typicality(np.array([1.0, 1.0, 0.0, 0.0]), make_morphs(), body_index=1, year_bin=4)
    assert result.group == "SUV · 2017-2020" and result.has_morph and result.reason is None
    assert result.cosine == pytest.approx(math.sqrt(0.5))  # 0.707: above 0.6, below 0.8 -> 1 of 3
    assert result.percentile == pytest.approx(100 / 3)
    assert result.members == 3


def test_typicality_percentile_ignores_the_padding():
    result = typicality(np.array([0.0, 3.0, 0.0, 0.0]), make_morphs(), body_index=3, year_bin=1)
    assert result.group == "Saloon · 2007-2010"
    assert result.cosine == pytest.approx(1.0) and result.percentile == pytest.approx(100.0)


def test_group_without_a_morph_says_so():
    result = typicality(np.ones(4), make_morphs(), body_index=4, year_bin=1)
    assert not result.has_morph and result.cosine is None and result.percentile is None
    assert result.group == "Convertible · 2007-2010"
    assert result.reason == "No morph for Convertible · 2007-2010: fewer than 2 training cars in this group."


def test_frontal_decision_uses_the_threshold_inclusively():
    assert frontal_decision(0.5, 0.5).is_frontal
    assert not frontal_decision(0.49, 0.5).is_frontal
    assert frontal_decision_from_logit(0.0, 0.5).probability == pytest.approx(0.5)
    assert frontal_decision_from_logit(-1000.0, 0.5).probability == 0.0


def test_view_policy():
    side_view = frontal_decision(0.12, 0.5)
    assert view_rejection(side_view, "frontal") == (
        "Not a frontal view (frontal probability 0.12 < threshold 0.50): the models are validated on front views only."
    )
    assert view_rejection(side_view, "all") is None
    assert view_rejection(frontal_decision(0.9, 0.5), "frontal") is None
    with pytest.raises(ValueError):
        view_rejection(side_view, "sideways")


def test_a_list_of_valid_views_accepts_by_the_probability_of_any_of_them():
    # front 0.3, three-quarter 0.4, side 0.2, rear 0.1: a valid view (front or three-quarter) with probability 0.7
    three_quarter = frontal_decision(0.3, 0.5, (0.3, 0.4, 0.2, 0.1))
    assert three_quarter.view == "three_quarter" and not three_quarter.is_frontal
    assert view_rejection(three_quarter, "front,three_quarter", view_threshold=0.6) is None
    # the likeliest view (three-quarter) is valid but not sure enough: the message names the likeliest refused one
    assert view_rejection(three_quarter, "front,three_quarter", view_threshold=0.75) == (
        "Uncertain view, perhaps seen from the side (probability of a valid view 0.70 < threshold 0.75): "
        "the models are validated on front and three-quarter views only."
    )
    side = frontal_decision(0.05, 0.5, (0.05, 0.15, 0.7, 0.1))
    assert view_rejection(side, "front,three_quarter", view_threshold=0.5).startswith("Seen from the side (")
    assert view_rejection(side, "front,three_quarter,side,rear") is None
