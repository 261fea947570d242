"""The gate's box head (core.gate.BoxHead, training.box_head): its geometry, its loss, and that it learns where a
car is from the maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.gate import BoxHead, gate_estimates_from_maps
from core.models import CarNet
from training.box_head import BoxItem, giou_loss, iou_by_source, mirrored, train_box_head
from training.metrics import box_iou

GRID = 5


def test_the_box_head_gives_ordered_boxes_inside_the_frame_at_any_map_size():
    torch.manual_seed(0)
    head = BoxHead(width=16, channels=4, grid=GRID).eval()
    for size in (5, 7, 3):
        boxes = head(torch.randn(8, 16, size, size) * 5)
        assert boxes.shape == (8, 4)
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_giou_loss_is_zero_for_the_same_boxes_and_grows_as_they_part():
    a = torch.tensor([[0.1, 0.2, 0.5, 0.6]])
    overlapping, apart = torch.tensor([[0.3, 0.2, 0.7, 0.6]]), torch.tensor([[0.6, 0.2, 1.0, 0.6]])
    assert giou_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < giou_loss(a, overlapping).item() < 1 < giou_loss(a, apart).item()


def test_mirroring_moves_the_box_with_the_maps():
    maps = torch.zeros(2, 1, GRID, GRID)
    maps[:, 0, 1:3, 0:2] = 1.0  # the car in the two left columns
    boxes = torch.tensor([[0.0, 0.2, 0.4, 0.6]] * 2)
    flipped_maps, flipped_boxes = mirrored(maps, boxes, torch.tensor([True, False]))
    assert flipped_maps[0, 0, 1:3, 3:5].eq(1).all() and flipped_maps[1].equal(maps[1])
    assert flipped_boxes[0].tolist() == pytest.approx([0.6, 0.2, 1.0, 0.6])
    assert flipped_boxes[1].equal(boxes[1])


def synthetic_items(rng: np.random.Generator, n: int, split: str) -> tuple[np.ndarray, list[BoxItem]]:
    """Maps whose first channel is on over the car's cells (a box on the grid), the rest noise."""
    maps = rng.normal(0, 0.3, (n, 8, GRID, GRID)).astype(np.float32)
    items = []
    for i in range(n):
        x1, y1 = rng.integers(0, 3, 2)
        x2, y2 = x1 + rng.integers(2, GRID - x1 + 1), y1 + rng.integers(2, GRID - y1 + 1)
        maps[i, 0, y1:y2, x1:x2] += 2.0
        source = ("composite", "epfl_multiview")[i % 2]
        items.append(BoxItem(source, split, None, (x1 / GRID, y1 / GRID, x2 / GRID, y2 / GRID)))
    return maps, items


def test_the_box_head_learns_where_the_car_is_from_the_maps():
    rng = np.random.default_rng(0)
    (train_maps, train), (val_maps, val) = synthetic_items(rng, 3000, "train"), synthetic_items(rng, 200, "val")
    head, iou, epoch = train_box_head(np.concatenate([train_maps, val_maps]), train + val, 15, 8, seed=0)
    assert set(iou) == {"composite", "epfl_multiview"} and 0 <= epoch < 15
    truth = np.array([item.box for item in val], np.float32)
    whole_frame = box_iou(np.tile([0.0, 0.0, 1.0, 1.0], (len(val), 1)), truth).mean()
    assert min(iou.values()) > 0.75 > whole_frame + 0.2
    with torch.inference_mode():  # the head returned is the one of the best epoch, with the IoU reported
        again = iou_by_source(head(torch.from_numpy(val_maps)).numpy(), truth, np.array([i.source for i in val]))
    assert again == pytest.approx(iou, abs=1e-4)
    # the gate uses the head's box when it has one, whatever its car head's activation map says
    gate = CarNet({"car": 1, "view": 4}, arch="resnet18").eval()
    maps = torch.from_numpy(val_maps[:4])
    gate_like = torch.nn.functional.pad(maps, (0, 0, 0, 0, 0, 512 - maps.shape[1]))
    wide_head = BoxHead(512, 8, GRID).eval()
    estimates = gate_estimates_from_maps(gate, gate_like, box_head=wide_head)
    assert np.allclose(estimates.boxes, wide_head(gate_like).detach().numpy())
    assert not np.allclose(estimates.boxes, gate_estimates_from_maps(gate, gate_like).boxes)
