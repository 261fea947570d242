"""The gate's view head chosen by car-grouped cross-validation (training.view_head): folds never split a car, and
the fitted regression folded onto the pooled feature gives the regression's own probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from core.viewpoint import VIEW_CLASSES
from training.view_head import ViewRows, car_folds, fit_view, front_recall, refit_view_head, view_weights


def synthetic_rows(seed: int = 0, cars: int = 12, per_car: int = 8, classes: int = 4) -> ViewRows:
    """Cars of two data sets; each row's view shifts its feature along one direction per view."""
    rng = np.random.default_rng(seed)
    n = cars * per_car
    views = rng.integers(0, classes, n)
    pooled = rng.normal(size=(n, 16)).astype(np.float32)
    pooled[np.arange(n), views] += 3.0
    groups = np.repeat([f"car{i}" for i in range(cars)], per_car)
    datasets = np.where(np.repeat(np.arange(cars), per_car) % 3 == 0, "dvm_porsche", "epfl_multiview")
    return ViewRows([f"p{i}.jpg" for i in range(n)], datasets, groups, views, pooled)


def test_folds_keep_each_car_whole_and_share_every_data_set_out():
    rows = synthetic_rows()
    fold = car_folds(rows, 4, seed=0)
    for car in np.unique(rows.groups):
        assert len(np.unique(fold[rows.groups == car])) == 1
    for dataset in np.unique(rows.datasets):
        cars_per_fold = [len(np.unique(rows.groups[(rows.datasets == dataset) & (fold == k)])) for k in range(4)]
        assert max(cars_per_fold) - min(cars_per_fold) <= 1, cars_per_fold


@pytest.mark.parametrize("space", ["pooled", "linear map"])
def test_the_folded_head_gives_the_regressions_probabilities(space):
    rows = synthetic_rows()
    x, views, weights = rows.pooled, rows.views, np.ones(len(rows.views))
    rng = np.random.default_rng(1)
    linear = (np.eye(16, dtype=np.float32), np.zeros(16, np.float32))
    if space == "linear map":  # like the ImageNet logits: more outputs than inputs, with a bias
        linear = (rng.normal(size=(24, 16)).astype(np.float32), rng.normal(size=24).astype(np.float32))
    head = fit_view(x, views, weights, linear, strength=0.1)
    inputs = x @ linear[0].T + linear[1]
    reference = LogisticRegression(C=0.1, max_iter=3000).fit((inputs - inputs.mean(0)) / (inputs.std(0) + 1e-6), views)
    expected = reference.predict_proba((inputs - inputs.mean(0)) / (inputs.std(0) + 1e-6))
    np.testing.assert_allclose(head.probabilities(x), expected, atol=1e-4)
    assert (head.probabilities(x).argmax(1) == views).mean() > 0.8


def test_a_view_no_training_row_shows_gets_no_probability():
    rows = synthetic_rows(classes=3)  # no rear views
    head = fit_view(rows.pooled, rows.views, np.ones(len(rows.views)), (np.eye(16), np.zeros(16)), strength=1.0)
    probabilities = head.probabilities(rows.pooled)
    assert probabilities.shape == (len(rows.views), len(VIEW_CLASSES))
    assert probabilities[:, 3].max() < 1e-6
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)


def test_every_data_set_and_every_view_within_it_weigh_alike():
    """DVM-CAR-like: many fronts, few rear views, one data set much larger than the other."""
    datasets = np.array(["dvm_porsche"] * 100 + ["epfl_multiview"] * 20)
    views = np.array([0] * 90 + [3] * 10 + [0, 1, 2, 3] * 5)
    weights = view_weights(datasets, views)
    assert weights.mean() == pytest.approx(1.0)
    totals = {(d, v): weights[(datasets == d) & (views == v)].sum() for d, v in set(zip(datasets, views, strict=True))}
    assert totals["dvm_porsche", 3] == pytest.approx(totals["dvm_porsche", 0])  # 10 rear views weigh as 90 fronts
    assert sum(t for (d, _), t in totals.items() if d == "dvm_porsche") == pytest.approx(60.0)
    assert len({round(t, 4) for (d, _), t in totals.items() if d == "epfl_multiview"}) == 1


def test_front_recall_is_measured_per_data_set():
    rows = synthetic_rows()
    perfect = (rows.views == VIEW_CLASSES.index("front")).astype(float)
    assert front_recall(rows, perfect) == {"dvm_porsche": 1.0, "epfl_multiview": 1.0}
    assert front_recall(rows, 1.0 - perfect) == {"dvm_porsche": 0.0, "epfl_multiview": 0.0}


def test_without_view_labels_the_neural_head_is_kept(tmp_path):
    """A table with no view labels (e.g. car crops only): nothing to cross-validate, the checkpoint is untouched."""
    teacher = tmp_path / "t"
    teacher.mkdir()
    for view in ("crop", "frame"):
        pd.DataFrame({"path": ["a.jpg"]}).to_parquet(teacher / f"{view}_index.parquet")
        np.save(teacher / f"{view}.npy", np.zeros((1, 1280), np.float16))
    table = pd.DataFrame({"path": ["a.jpg"], "split": ["train"], "view": [""], "dataset": ["stanford_cars"],
                          "group": ["g"]})  # fmt: skip
    checkpoint = tmp_path / "gate.pt"
    checkpoint.write_bytes(b"untouched")
    assert refit_view_head(checkpoint, table, teacher) is None
    assert checkpoint.read_bytes() == b"untouched"
