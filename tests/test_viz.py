"""Skeleton drawing: pixels change where joints and limbs are, and nowhere else."""

from __future__ import annotations

import numpy as np
import pytest

from unipose_ray.evaluation import viz
from unipose_ray.skeleton import COCO, UNIFIED

H, W = 256, 192


def _blank() -> np.ndarray:
    return np.zeros((H, W, 3), np.uint8)


def _only(joints: dict[str, tuple[float, float]], keypoint_set=UNIFIED):
    """Keypoints with the named joints placed and scored 1, every other joint scored 0."""
    kps = np.full((keypoint_set.num_keypoints, 2), 5.0)  # low-score joints parked in a corner
    scores = np.zeros(keypoint_set.num_keypoints)
    for name, xy in joints.items():
        kps[keypoint_set.index(name)] = xy
        scores[keypoint_set.index(name)] = 1.0
    return kps, scores


def _distance_to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def _palette_colour(pixel: np.ndarray) -> tuple[int, int, int]:
    """The palette colour ``pixel`` is a (possibly anti-aliased, dimmed) shade of."""
    p = pixel.astype(np.float64)
    palette = [viz.LEFT_COLOR, viz.RIGHT_COLOR, viz.CENTER_COLOR]

    def residual(c):
        c = np.asarray(c, np.float64)
        return np.linalg.norm(p - (p @ c) / (c @ c) * c)

    return min(palette, key=residual)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``(N, 2)`` (x, y) of the pixels that differ."""
    ys, xs = np.nonzero((before != after).any(axis=2))
    return np.stack([xs, ys], axis=1).astype(np.float64)


def test_draws_joints_and_limb_and_nothing_far_away():
    a, b = np.array([60.3, 40.0]), np.array([120.0, 170.6])  # left shoulder -> left elbow
    kps, scores = _only({"left_shoulder": a, "left_elbow": b})
    image = _blank()
    out = viz.draw_skeleton(image, kps, scores)

    assert out.shape == image.shape and out.dtype == np.uint8
    assert not image.any(), "the input image must not be drawn on"
    changed = _changed(image, out)
    assert len(changed) > 0
    # Every changed pixel lies within a joint's radius (+1 px of anti-aliasing) of the limb.
    tolerance = viz.joint_radius(H, W) + 2.5
    assert _distance_to_segment(changed, a, b).max() <= tolerance
    # Both joints and points along the limb are drawn.
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = np.round(a + t * (b - a)).astype(int)
        assert out[y, x].any(), f"nothing drawn at t={t} ({x}, {y})"
    # A left limb between left joints is drawn in the left colour.
    x, y = np.round((a + b) / 2).astype(int)
    assert _palette_colour(out[y, x]) == viz.LEFT_COLOR


def test_joints_below_threshold_and_their_limbs_are_not_drawn():
    kps, scores = _only({"left_hip": (50, 100), "left_knee": (50, 200)})
    scores[UNIFIED.index("left_knee")] = 0.29
    out = viz.draw_skeleton(_blank(), kps, scores, score_threshold=0.3)

    changed = _changed(_blank(), out)
    assert out[100, 50].any()
    assert not out[200, 50].any() and not out[150, 50].any()
    assert np.linalg.norm(changed - [50, 100], axis=1).max() <= viz.joint_radius(H, W) + 2.5
    # The same joint at the threshold is drawn.
    scores[UNIFIED.index("left_knee")] = 0.3
    assert viz.draw_skeleton(_blank(), kps, scores, score_threshold=0.3)[200, 50].any()


def test_left_and_right_colours_differ_and_centre_has_its_own():
    kps, scores = _only({"left_wrist": (40, 60), "right_wrist": (150, 60), "thorax": (96, 200)})
    out = viz.draw_skeleton(_blank(), kps, scores)
    left, right, centre = tuple(out[60, 40]), tuple(out[60, 150]), tuple(out[200, 96])
    assert left == viz.LEFT_COLOR
    assert right == viz.RIGHT_COLOR
    assert centre == viz.CENTER_COLOR
    assert len({left, right, centre}) == 3


def test_non_finite_joints_are_skipped_and_shape_is_checked():
    kps = np.full((UNIFIED.num_keypoints, 2), np.nan)
    kps[UNIFIED.index("nose")] = (96, 30)
    out = viz.draw_skeleton(_blank(), kps)  # no scores: every finite joint is drawn
    assert out[30, 96].any()
    assert np.linalg.norm(_changed(_blank(), out) - [96, 30], axis=1).max() <= 4.5
    with pytest.raises(ValueError, match="keypoints"):
        viz.draw_skeleton(_blank(), np.zeros((17, 2)))  # 17 joints for the 21-joint set
    # A (K, 3) array carries its own scores; another keypoint set is accepted.
    coco = np.concatenate([np.full((17, 2), 20.0), np.zeros((17, 1))], axis=1)
    assert not viz.draw_skeleton(_blank(), coco, keypoint_set=COCO).any()


def test_thickness_grows_with_image_size():
    assert viz.line_thickness(256, 192) == 1
    assert viz.line_thickness(1024, 768) > viz.line_thickness(256, 192)


@pytest.mark.parametrize("n, cols, rows, used_cols", [(5, 3, 2, 3), (2, 4, 1, 2), (4, 1, 4, 1)])
def test_grid_shape_and_placement(n, cols, rows, used_cols):
    images = [np.full((H, W, 3), 10 * (i + 1), np.uint8) for i in range(n)]
    grid = viz.make_grid(images, cols=cols, pad=3)
    assert grid.shape == (rows * H + (rows - 1) * 3, used_cols * W + (used_cols - 1) * 3, 3)
    for i in range(n):
        y, x = (i // used_cols) * (H + 3), (i % used_cols) * (W + 3)
        assert (grid[y : y + H, x : x + W] == 10 * (i + 1)).all()


def test_grid_pads_smaller_images():
    grid = viz.make_grid([np.full((10, 8, 3), 255, np.uint8), np.full((6, 4, 3), 128, np.uint8)],
                         cols=2, pad=0)  # fmt: skip
    assert grid.shape == (10, 16, 3)
    assert (grid[:6, 8:12] == 128).all() and not grid[6:, 8:].any() and not grid[:, 12:].any()
