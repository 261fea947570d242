"""core.explain: Grad-CAM of the modernity network on a real car crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.artifacts import Bundle
from core.explain import colourise, grad_cam, overlay


def test_heatmap_has_the_image_size_and_unit_range(tiny_bundle: Bundle, car_photo: Image.Image):
    cam = grad_cam(tiny_bundle.modernity, car_photo, tiny_bundle.transform)
    assert cam.heatmap.shape == (car_photo.height, car_photo.width) and cam.heatmap.dtype == np.float32
    assert cam.heatmap.min() >= 0.0 and cam.heatmap.max() <= 1.0
    assert cam.heatmap.max() in (0.0, pytest.approx(1.0, abs=0.02))
    with torch.inference_mode():
        logits = tiny_bundle.modernity(tiny_bundle.transform([car_photo]))["year_bin"][0]
    assert cam.year_bin == int(logits.argmax())
    assert cam.probability == pytest.approx(float(torch.softmax(logits, 0)[cam.year_bin]), abs=1e-5)


def test_a_chosen_bin_works_inside_inference_mode(tiny_bundle: Bundle, car_photo: Image.Image):
    with torch.inference_mode():
        cam = grad_cam(tiny_bundle.modernity, car_photo, tiny_bundle.transform, year_bin=2)
    assert cam.year_bin == 2 and np.isfinite(cam.heatmap).all()


def test_overlay_is_an_rgb_image_of_the_input_size(car_photo: Image.Image):
    ramp = np.tile(np.linspace(0.0, 1.0, 16, dtype=np.float32), (8, 1))
    blended = overlay(car_photo, ramp)
    assert blended.mode == "RGB" and blended.size == car_photo.size
    assert overlay(car_photo, ramp, alpha=0.0).tobytes() == car_photo.convert("RGB").tobytes()


def test_colour_ramp_runs_dark_to_bright():
    colours = colourise(np.array([[0.0, 0.5, 1.0]]))
    brightness = colours.astype(int).sum(axis=-1)[0]
    assert colours.shape == (1, 3, 3) and brightness[0] < brightness[1] < brightness[2]
