"""The box search over arrays against the per-record search it replaced, to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from unipose_ray.data.geometry import BOX_PADDING, box_center_scale
from unipose_ray.data.readers import box_from_center, boxes_from_centers


def _previous_box_from_center(center, size) -> np.ndarray:
    """``readers.box_from_center`` as it was, one record and one axis at a time."""
    box = []
    for c, side in zip(np.asarray(center, np.float32), np.broadcast_to(np.float32(size), 2)):
        padded = side * np.float32(BOX_PADDING)
        corners = _previous_ulp_neighbours(np.float32(c - side / np.float32(2)), 32)
        x1, w = np.meshgrid(corners, _previous_ulp_neighbours(side, 4), indexing="ij")
        x2 = x1 + w
        centred = (x1 + x2) * np.float32(0.5) == c
        got = (x2 - x1) * np.float32(BOX_PADDING)
        i, j = 0, 0
        for ok in (centred & (got == padded), centred & (got <= padded)):
            if ok.any():
                i, j = np.unravel_index(np.argmax(ok), ok.shape)
                break
        box.append((x1[i, j], w[i, j]))
    (x, w), (y, h) = box
    return np.array([x, y, w, h], dtype=np.float32)


def _previous_ulp_neighbours(value, n):
    up, down = [value], [value]
    for _ in range(n):
        up.append(np.nextafter(up[-1], np.float32(np.inf)))
        down.append(np.nextafter(down[-1], np.float32(-np.inf)))
    return np.array([value, *sum(zip(up[1:], down[1:]), ())], dtype=np.float32)


def _cases(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres and sizes: image-sized, huge, tiny, integral, halves, odd float32 values."""
    scale = rng.choice([1e-3, 1.0, 100.0, 1e4, 1e7], size=(n, 1))
    centers = (rng.uniform(0, 1, (n, 2)) * scale).astype(np.float32)
    sizes = (rng.uniform(0, 1, (n, 2)) * scale).astype(np.float32)
    centers[: n // 8] = np.round(centers[: n // 8])
    sizes[n // 8 : n // 4] = np.round(sizes[n // 8 : n // 4] * 2) / 2
    odd = rng.integers(1, 1 << 24, (n // 8, 2)).astype(np.float32)  # odd mantissas
    centers[n // 4 : n // 4 + n // 8] = odd * np.float32(2**-7)
    sizes[-8:] = [[0, 0], [1e-30, 1e-30], [3.4e30, 1], [1, 1], [0.5, 7], [1e-7, 1e7],
                  [255, 255], [1e-45, 2e-45]]
    return centers, sizes


def test_array_search_equals_the_per_record_search_to_the_bit():
    centers, sizes = _cases(np.random.default_rng(0), 3000)
    expected = np.array([_previous_box_from_center(c, s) for c, s in zip(centers, sizes)])
    ours = boxes_from_centers(centers, sizes)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours.view(np.uint32), expected.view(np.uint32))
    one = box_from_center(centers[5], sizes[5])
    np.testing.assert_array_equal(one.view(np.uint32), expected[5].view(np.uint32))
    assert box_from_center(centers[0], sizes[0][0]).tolist() == _previous_box_from_center(
        centers[0], sizes[0][0]).tolist()  # a scalar size: a square box


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_blocks_do_not_change_a_box(monkeypatch, block):
    from unipose_ray.data import readers

    centers, sizes = _cases(np.random.default_rng(1), 200)
    expected = boxes_from_centers(centers, sizes)
    monkeypatch.setattr(readers, "_BOXES_PER_BLOCK", block)
    np.testing.assert_array_equal(boxes_from_centers(centers, sizes), expected)


def test_most_boxes_read_back_their_centre_and_padded_size():
    # What the search is for: MMPose's float32 read-back gives the centre and size exactly,
    # for centres and sizes made as read_coco makes them from clipped float32 corners.
    rng = np.random.default_rng(2)
    x1 = rng.uniform(0, 400, (500, 2)).astype(np.float32)
    x2 = x1 + rng.uniform(10, 300, (500, 2)).astype(np.float32)
    centers, sizes = (x1 + x2) * np.float32(0.5), x2 - x1
    exact = 0
    for box, c, s in zip(boxes_from_centers(centers, sizes), centers, sizes):
        center, scale = box_center_scale(box)
        exact += np.array_equal(center, c) and np.array_equal(scale, s * np.float32(1.25))
    assert exact > 450
