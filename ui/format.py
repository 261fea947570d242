"""Number formatting for the dashboard (pure functions: years, percentages, milliseconds, scores)."""

from __future__ import annotations

import math

from core.report import INTERVAL_LEVEL, Headline, MakeHorizon
from core.scoring import whole_year

DASH = "–"


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def year(value: float | None) -> str:
    """A (possibly fractional, expected) year as the whole year the app shows: 2009.6 -> '2010'."""
    return DASH if _missing(value) or value <= 0 else f"{int(whole_year(value)):d}"


def percent(value: float | None, digits: int = 0) -> str:
    """A share in [0, 1] as a percentage: 0.873 -> '87 %'."""
    return DASH if _missing(value) else f"{100 * value:.{digits}f} %"


def percentile(value: float | None) -> str:
    """A percentile already in [0, 100]: 42.4 -> '42nd percentile'. The ends keep two significant digits, so the
    most typical cars of a group stay apart: 99.95 -> 'top 0.05 %', 0.3 -> 'bottom 0.3 %'; 100 and 0 say that the
    value lies beyond every training car (never '100th percentile')."""
    if _missing(value):
        return DASH
    if value >= 100:
        return "above every training car"
    if value <= 0:
        return "below every training car"
    if value >= 99.5:
        return f"top {100 - value:.2g} %"
    if value < 0.5:
        return f"bottom {value:.2g} %"
    whole = round(value)
    suffix = "th" if 10 <= whole % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(whole % 10, "th")
    return f"{whole:d}{suffix} percentile"


def milliseconds(value: float | None) -> str:
    """A duration in ms: 3.21 -> '3.2 ms', 1234 -> '1,234 ms'."""
    if _missing(value):
        return DASH
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def score(value: float | None, digits: int = 2) -> str:
    return DASH if _missing(value) else f"{value:.{digits}f}"


def measure(value: float, is_year: bool = False) -> str:
    """A metric value: a year as a year (2012), whole numbers (counts) with separators, others with three decimals."""
    if is_year:
        return year(value)
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.3f}"


def measure_range(bounds: tuple[float, float] | None) -> str:
    """A metric's range as its value is shown ('0.700–0.850'); empty without one."""
    return "" if bounds is None else f"{measure(bounds[0])}{DASH}{measure(bounds[1])}"


def count(value: int) -> str:
    return f"{value:,d}"


def _headline_number(headline: Headline, value: float) -> str:
    """A number of a headline's kind: '1.88' (years), '0.768' (a score)."""
    return f"{value:.{headline.digits}f}"


def _headline_amount(headline: Headline, value: float) -> str:
    """A number of a headline's kind with its unit: '1.88 years', '0.768'."""
    return f"{_headline_number(headline, value)} {headline.unit}".rstrip()


def headline_value(headline: Headline) -> str:
    """'1.88' (years: the unit is in the label), '0.768'."""
    return _headline_number(headline, headline.value)


def headline_range(headline: Headline) -> str | None:
    """The headline's range over resamples of its car models as its value is shown: '1.52–2.31', '0.700–0.850'."""
    if headline.interval is None:
        return None
    low, high = headline.interval
    return f"{_headline_number(headline, low)}{DASH}{_headline_number(headline, high)}"


def headline_ranges(headlines: list[Headline]) -> str | None:
    """One line of the ranges of a data set's headlines, None if none has one."""
    parts = [f"{row.label} {text}" for row in headlines if (text := headline_range(row)) is not None]
    if not parts:
        return None
    return f"{percent(INTERVAL_LEVEL)} of resamples of the car models measured fall within: " + " · ".join(parts)


def headline_change(headline: Headline) -> str | None:
    """The headline against its constant answer, short: an error as a relative change ('-35 % vs constant'), a
    score as a difference ('+0.436 vs constant'); None without a baseline."""
    if headline.baseline is None:
        return None
    if headline.lower_is_better and headline.baseline > 0:
        return f"{100 * (headline.value / headline.baseline - 1):+.0f} % vs constant"
    return f"{headline.value - headline.baseline:+.3f} vs constant"


def headline_baseline(headline: Headline) -> str | None:
    """The constant answer's own score: 'Answering 2012 for every car scores 2.90 years.'; None without one."""
    if headline.baseline is None:
        return None
    return f"Answering {headline.baseline_label} for every car scores {_headline_amount(headline, headline.baseline)}."


def year_error(dataset: str, split: str, headline: Headline) -> str:
    """'1.88 years on stanford_cars (the test split; 1.26–2.55 over resamples of its car models)'."""
    spread = f"; {text} over resamples of its car models" if (text := headline_range(headline)) else ""
    return f"{_headline_amount(headline, headline.value)} on {dataset} ({split}{spread})"


def horizon_caveat(horizon: MakeHorizon) -> str:
    """What a make horizon means for the year shown, in one sentence."""
    return (
        f"Every car it trained on after {horizon.year} is a {' or '.join(horizon.makes)}: a newer car of another "
        f"make is likely to read as {horizon.year} or earlier."
    )
