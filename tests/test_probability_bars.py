"""Regression: year-bin labels such as "2007" and "2012" made Plotly type the label axis as numbers, which hid the
"1991-2006"-like bins from the Score page's bar chart (found by the browser tests, tests/e2e)."""

from __future__ import annotations

import pytest

from core.config import SHARED_YEAR_BINS
from core.figures import probability_bars

LABELS = [year_bin.label for year_bin in SHARED_YEAR_BINS]


@pytest.mark.parametrize(("horizontal", "label_axis"), [(False, "xaxis"), (True, "yaxis")])
def test_every_year_bin_label_is_a_category(horizontal: bool, label_axis: str) -> None:
    figure = probability_bars(LABELS, [0.2] * len(LABELS), "Year bin", horizontal=horizontal)
    assert figure.layout[label_axis].type == "category"
    assert list(figure.data[0].y if horizontal else figure.data[0].x) == LABELS
