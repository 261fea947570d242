"""The frontal gate: is this a frontal view, and does the bundle's valid-views policy accept it."""

from __future__ import annotations

import math
from dataclasses import dataclass

VALID_VIEWS = ("frontal", "all")


@dataclass(frozen=True)
class FrontalDecision:
    """Probability that the view is frontal, the bundle's threshold and the decision (probability >= threshold)."""

    probability: float
    threshold: float
    is_frontal: bool


def frontal_decision(probability: float, threshold: float) -> FrontalDecision:
    """Decide from the gate's frontal probability and the bundle threshold."""
    return FrontalDecision(
        probability=float(probability), threshold=float(threshold), is_frontal=probability >= threshold
    )


def frontal_decision_from_logit(logit: float, threshold: float) -> FrontalDecision:
    """Decide from the gate's raw frontal logit."""
    return frontal_decision(0.5 * (1.0 + math.tanh(0.5 * float(logit))), threshold)  # overflow-free sigmoid


def view_rejection(decision: FrontalDecision, valid_views: str) -> str | None:
    """Why the view is refused under the bundle's policy, or None when it is accepted."""
    if valid_views not in VALID_VIEWS:
        raise ValueError(f"valid_views must be one of {VALID_VIEWS}, got {valid_views!r}")
    if valid_views == "all" or decision.is_frontal:
        return None
    return (
        f"Not a frontal view (frontal probability {decision.probability:.2f} < threshold {decision.threshold:.2f}): "
        "the models were validated on frontal views only."
    )
