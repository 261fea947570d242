"""The per-year head (training.year_head) learns the year from the frozen neck and is chosen on validation."""

from __future__ import annotations

import numpy as np
import torch

from core.models import CarNet
from training.features import Split
from training.year_head import fit_year_head, soft_years, year_head_args


def cars_whose_features_encode_the_year(seed: int, n: int) -> Split:
    rng = np.random.default_rng(seed)
    years = rng.integers(1991, 2021, n).astype(float)
    features = rng.normal(size=(n, 1280)).astype(np.float32)
    features[:, :8] += ((years - 2005) / 8)[:, None]
    datasets = np.where(np.arange(n) % 2 == 0, "stanford_cars", "dvm_porsche")
    return Split(torch.from_numpy(features), {}, torch.ones(n), datasets, years)


def test_soft_labels_peak_at_the_year_and_sum_to_one():
    classes = np.arange(1991, 2021, dtype=float)
    labels = soft_years(np.array([1993.0, 2020.0]), classes, sigma=1.0).numpy()
    np.testing.assert_allclose(labels.sum(1), 1.0, rtol=1e-6)
    assert classes[labels.argmax(1)].tolist() == [1993.0, 2020.0]


def test_the_year_head_reads_the_year_from_the_frozen_neck():
    torch.manual_seed(0)
    model = CarNet({"year_bin": 5}, "efficientnet_lite0", neck=32).eval()
    with torch.no_grad():  # a trained neck passes the year on: two units read the year features, either sign
        model.neck[0].weight[:2].zero_()
        model.neck[0].weight[0, :8], model.neck[0].weight[1, :8] = 0.5, -0.5
    neck_before = {k: v.clone() for k, v in model.neck.state_dict().items()}
    cars = {"train": cars_whose_features_encode_the_year(0, 1500), "val": cars_whose_features_encode_the_year(1, 300)}
    classes = np.arange(1991, 2021, dtype=float)
    args = year_head_args(seed=0)
    args.epochs = 80
    head, record = fit_year_head(model, cars, classes, args)
    constant = np.abs(cars["val"].years - np.median(cars["train"].years)).mean()
    assert record["score"] < 0.5 * constant, (record, constant)
    assert 0 <= record["epoch"] < 80 and set(record["val_mae_years"]) == {"stanford_cars", "dvm_porsche"}
    assert all(torch.equal(v, neck_before[k]) for k, v in model.neck.state_dict().items())
    assert head.out_features == len(classes)
