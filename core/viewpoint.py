"""The view gate: which way the car is seen, and whether the bundle's valid-views policy accepts it.

A gate network estimates the view either as four classes (`view` head: front, three_quarter, side, rear) or, in
older bundles, only as a frontal probability (`frontal` head). A bundle's `valid_views` is `all`, `frontal`
(P(front) at least the frontal threshold) or a comma-separated list of view classes (P(one of them) at least
the view threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

VIEW_CLASSES = ("front", "three_quarter", "side", "rear")
VIEW_NAMES = {"front": "front", "three_quarter": "three-quarter", "side": "side", "rear": "rear"}
SEEN = {"front": "Seen from the front", "three_quarter": "Seen at a three-quarter angle", "side": "Seen from the side",
        "rear": "Seen from the rear"}  # fmt: skip
VALID_VIEWS = ("frontal", "all")


@dataclass(frozen=True)
class FrontalDecision:
    """The view estimate: P(front) against the frontal threshold, and, from a view head, the probability of every
    view class (VIEW_CLASSES order) and the most likely one."""

    probability: float
    threshold: float
    is_frontal: bool
    view_probabilities: tuple[float, ...] | None = None

    @property
    def view(self) -> str | None:
        """The most likely view class; None when the gate estimates only frontal or not."""
        if self.view_probabilities is None:
            return None
        return VIEW_CLASSES[max(range(len(VIEW_CLASSES)), key=self.view_probabilities.__getitem__)]

    def probability_of(self, views: Sequence[str]) -> float:
        """P(the car is seen in one of `views`); with a frontal-only gate, P(front) for ("front",)."""
        if self.view_probabilities is None:
            return self.probability if tuple(views) == ("front",) else math.nan
        return float(sum(self.view_probabilities[VIEW_CLASSES.index(view)] for view in views))


def frontal_decision(
    probability: float, threshold: float, view_probabilities: Sequence[float] | None = None
) -> FrontalDecision:
    """Decide from the frontal probability and the bundle threshold (probability >= threshold is frontal)."""
    views = None if view_probabilities is None else tuple(float(p) for p in view_probabilities)
    return FrontalDecision(float(probability), float(threshold), probability >= threshold, views)


def frontal_decision_from_logit(logit: float, threshold: float) -> FrontalDecision:
    """Decide from the gate's raw frontal logit."""
    return frontal_decision(0.5 * (1.0 + math.tanh(0.5 * float(logit))), threshold)  # overflow-free sigmoid


def accepted_views(valid_views: str) -> tuple[str, ...]:
    """The view classes a policy accepts; ValueError for a policy that names no known view."""
    if valid_views == "all":
        return VIEW_CLASSES
    if valid_views == "frontal":
        return ("front",)
    views = tuple(v.strip() for v in valid_views.split(",") if v.strip())
    unknown = [v for v in views if v not in VIEW_CLASSES]
    if not views or unknown:
        raise ValueError(
            f"valid_views must be one of {VALID_VIEWS} or a comma-separated list of {VIEW_CLASSES}, got {valid_views!r}"
        )
    return views


def describe_views(views: Sequence[str]) -> str:
    """'front and three-quarter views' for ("front", "three_quarter")."""
    names = [VIEW_NAMES[v] for v in views]
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{joined} views"


def view_rejection(decision: FrontalDecision, valid_views: str, view_threshold: float = 0.5) -> str | None:
    """Why the view is refused under the bundle's policy (said once), or None when it is accepted."""
    views = accepted_views(valid_views)
    if views == VIEW_CLASSES:
        return None
    accepted = f"the models are validated on {describe_views(views)} only."
    if valid_views == "frontal":
        if decision.is_frontal:
            return None
        return (
            f"Not a frontal view (frontal probability {decision.probability:.2f} < threshold "
            f"{decision.threshold:.2f}): {accepted}"
        )
    probability = decision.probability_of(views)
    if probability >= view_threshold:
        return None
    return (
        f"{seen_as(decision, views)} (probability of a valid view {probability:.2f} < threshold "
        f"{view_threshold:.2f}): {accepted}"
    )


def seen_as(decision: FrontalDecision, views: Sequence[str]) -> str:
    """How a refused car is seen: its most likely view, or, when that view is a valid one that is not sure enough,
    the most likely of the refused views ("Uncertain view, perhaps seen from the side")."""
    if decision.view is None:
        return "Not a valid view"
    if decision.view not in views:
        return SEEN[decision.view]
    refused = max((v for v in VIEW_CLASSES if v not in views), key=lambda v: decision.probability_of((v,)))
    return f"Uncertain view, perhaps {SEEN[refused][0].lower()}{SEEN[refused][1:]}"
