"""core.models: ImageNet weights through torchvision's weights API, offline from a path or the torch cache,
with a clear error when they are missing; CarNet heads, features and safetensors round trip."""

from __future__ import annotations

import argparse
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet18

from core.errors import WeightsNotFoundError
from core.imaging import sharpness
from core.models import (
    CarNet,
    ImageTransform,
    Sharpening,
    build_carnet,
    crop_outputs,
    imagenet_state_dict,
    imagenet_weights_file,
    load_carnet,
    save_carnet,
)
from training.train import initialise

HEADS = {"year_bin": 5, "body_type": 5}


def marked_resnet18_state() -> dict[str, torch.Tensor]:
    """A torchvision ResNet-18 state dict with a recognisable first convolution (what the tests 'download')."""
    torch.manual_seed(0)
    state = resnet18(weights=None).state_dict()
    state["conv1.weight"].fill_(0.125)
    return state


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, and any download attempt failing as it does without internet."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError(f"no route to {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub"


def test_imagenet_weights_from_a_given_file_initialise_the_backbone(tmp_path):
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(marked_resnet18_state(), path)
    model = build_carnet(HEADS, imagenet=True, weights_path=path)
    assert torch.all(model.backbone.conv1.weight == 0.125)
    assert model.head_sizes == HEADS  # the ImageNet classifier is not carried over


def test_imagenet_weights_from_the_torch_cache_without_network(offline_hub):
    cached = imagenet_weights_file()
    assert cached.parent == offline_hub / "checkpoints"
    cached.parent.mkdir(parents=True)
    torch.save(marked_resnet18_state(), cached)
    assert torch.all(imagenet_state_dict()["conv1.weight"] == 0.125)


def test_missing_imagenet_weights_name_the_file_to_put_in_place(offline_hub):
    with pytest.raises(WeightsNotFoundError) as error:
        build_carnet(HEADS, imagenet=True)
    message = str(error.value)
    assert str(imagenet_weights_file()) in message and "download.pytorch.org" in message


def test_unreadable_or_absent_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="not found"):
        imagenet_state_dict(tmp_path / "nothing.pth")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="could not be read"):
        imagenet_state_dict(broken)


def test_training_records_imagenet_initialisation(tmp_path):
    path = tmp_path / "resnet18-imagenet.safetensors"
    from safetensors.torch import save_file

    save_file(marked_resnet18_state(), str(path))
    args = argparse.Namespace(arch="resnet18", pretrained=True, weights_path=path, init=None, drop_path=0.0)
    model, origin = initialise(args, HEADS)
    assert origin == "imagenet"
    assert torch.all(model.backbone.conv1.weight == 0.125)
    _, origin = initialise(
        argparse.Namespace(arch="resnet18", pretrained=False, weights_path=None, init=None, drop_path=0.0), HEADS
    )
    assert origin == "scratch"


def test_heads_and_penultimate_features(fixture_tensor):
    model = CarNet(HEADS).eval()
    with torch.inference_mode():
        outputs = model(fixture_tensor)
    assert outputs["year_bin"].shape == (1, 5) and outputs["body_type"].shape == (1, 5)
    assert outputs["features"].shape == (1, 512)
    assert (outputs["features"] >= 0).all()  # avgpool of ReLU maps


def test_a_backbone_beside_appends_its_features_and_stays_out_of_the_networks_weights(fixture_tensor):
    torch.manual_seed(0)
    other = CarNet({}).eval()
    model = CarNet(HEADS, neck=8, beside=512).eval()
    with pytest.raises(ValueError, match="not attached"):
        model(fixture_tensor)
    model.attach_beside(other)
    with torch.inference_mode():
        maps = model.feature_maps(fixture_tensor)
        own, beside = model.backbone_maps(fixture_tensor), other.backbone_maps(fixture_tensor)
        assert torch.equal(maps, torch.cat([own, beside], dim=1))
        pooled = torch.cat([own.mean(dim=(2, 3)), beside.mean(dim=(2, 3))], dim=1)
        body = model(fixture_tensor)["body_type"]
        assert torch.allclose(body, model.forward_from_pooled(pooled)["body_type"], atol=1e-5)
        year_network = CarNet(HEADS).eval()  # the modernity network shares the backbone and reads it alone
        year_network.backbone = model.backbone
        shared = crop_outputs(year_network, model, fixture_tensor)
        assert torch.allclose(shared.body["body_type"], body, atol=1e-5)
        assert torch.allclose(shared.year["year_bin"], year_network(fixture_tensor)["year_bin"], atol=1e-5)
        assert shared.maps.shape[1] == 512  # the shared backbone's maps (what a gate on it would read)
    assert model.neck[0].in_features == 1024
    assert {key.split(".")[0] for key in model.state_dict()} == {"backbone", "neck", "heads"}
    with pytest.raises(ValueError, match="width 512"):
        model.attach_beside(CarNet({}, "efficientnet_lite0"))
    with pytest.raises(ValueError, match="without a beside width"):
        CarNet(HEADS).attach_beside(other)


def test_the_gates_view_head_on_the_crops_reads_the_backbone_the_scores_run_beside(fixture_tensor, monkeypatch):
    """`crop_outputs(..., gate=)`: the gate's view head on the crops (mean logits over the mirror image with
    flip_average), its backbone run once although the body-type network reads it beside its own."""
    torch.manual_seed(2)
    gate = CarNet({"car": 1, "view": 4}).eval()
    body = CarNet(HEADS, neck=8, beside=512).eval()
    body.attach_beside(gate)
    year = CarNet(HEADS).eval()
    year.backbone = body.backbone
    batch = torch.cat([fixture_tensor, fixture_tensor.flip(-2)])
    with torch.inference_mode():
        alone = crop_outputs(year, body, batch)
        expected = gate.forward_from_maps(gate.backbone_maps(batch))["view"]
        mirrored = gate.forward_from_maps(gate.backbone_maps(batch.flip(-1)))["view"]
    assert alone.view_logits is None
    calls, backbone_maps = [], gate.backbone_maps
    monkeypatch.setattr(gate, "backbone_maps", lambda x: calls.append(len(x)) or backbone_maps(x))
    with torch.inference_mode():
        viewed = crop_outputs(year, body, batch, gate=gate)
        averaged = crop_outputs(year, body, batch, flip_average=True, gate=gate)
    assert calls == [2, 4]  # once per batch (with its mirror images), for the body type and the view alike
    assert viewed.view_logits.shape == (2, 4) and torch.allclose(viewed.view_logits, expected, atol=1e-5)
    assert torch.allclose(averaged.view_logits, (expected + mirrored) / 2, atol=1e-5)
    assert torch.allclose(viewed.body["body_type"], alone.body["body_type"], atol=1e-5)


def test_safetensors_round_trip_keeps_predictions(tmp_path, fixture_tensor):
    torch.manual_seed(1)
    model = CarNet(HEADS).eval()
    save_carnet(model, tmp_path / "net.safetensors")
    loaded = load_carnet(tmp_path / "net.safetensors", HEADS)
    with torch.inference_mode():
        expected, actual = model(fixture_tensor), loaded(fixture_tensor)
    assert torch.allclose(expected["year_bin"], actual["year_bin"], atol=0.05)  # fp16 storage


@pytest.fixture
def fixture_tensor() -> torch.Tensor:
    from core.imaging import load_image
    from core.models import ImageTransform

    photo = next((Path(__file__).parent / "fixtures" / "data" / "stanford_cars" / "images").glob("*.jpg"))
    return ImageTransform(64)([load_image(photo)])


def test_sharpening_grows_with_the_enlargement_beyond_its_onset(car_photo):
    sharpening = Sharpening(100.0, onset=2.0)  # 100 % per 1x of enlargement beyond 2x
    assert [sharpening.percent(side, 224) for side in (300, 224, 112, 100, 56)] == [0, 0, 0, 24, 200]
    assert [Sharpening(90.0).percent(side, 224) for side in (300, 224, 128, 96, 64)] == [0, 0, 68, 120, 225]
    plain, sharpened = ImageTransform(224), ImageTransform(224, sharpening=sharpening)
    enlarged_less = car_photo.resize((150, 100))  # 1.5x: as it was
    assert np.array_equal(plain.to_array(enlarged_less), sharpened.to_array(enlarged_less))
    small = car_photo.resize((60, 40))  # 3.7x: sharpened, and only by detail (the mean colour stays)
    before, after = (t.to_array(small).astype(float) for t in (plain, sharpened))
    assert sharpness(Image.fromarray(after.astype(np.uint8))) > 1.5 * sharpness(
        Image.fromarray(before.astype(np.uint8))
    )
    assert abs(after.mean() - before.mean()) < 2.0
