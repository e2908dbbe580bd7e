"""SimCC decoding and the crop -> image map against MMPose's codec and warp matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unipose_ray.evaluation.decode import crop_to_image_affine, decode_simcc, to_image_coords
from unipose_ray.models.compat import import_mmpose

INPUT_SIZE = (192, 256)  # w, h


@pytest.fixture(scope="module")
def codec():
    import_mmpose()
    from mmpose.codecs import SimCCLabel

    return SimCCLabel(input_size=INPUT_SIZE, sigma=(4.9, 5.66), simcc_split_ratio=2.0)


def _logits(rng: np.random.Generator, b: int = 4, k: int = 21) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(b, k, INPUT_SIZE[0] * 2)).astype(np.float32)
    y = rng.normal(size=(b, k, INPUT_SIZE[1] * 2)).astype(np.float32)
    x[0, :5] -= 10.0  # all-negative rows: MMPose marks these keypoints with location -1
    y[1, 3:9] -= 10.0
    return x, y


def test_decode_matches_mmpose_simcc_label(codec):
    x, y = _logits(np.random.default_rng(0))
    ref_kpts, ref_scores = codec.decode(x.copy(), y.copy())
    kpts, scores = decode_simcc(x, y, split_ratio=2.0)
    assert (ref_scores <= 0).any()  # the "no maximum" branch is exercised
    np.testing.assert_array_equal(kpts, ref_kpts)
    np.testing.assert_array_equal(scores, ref_scores)
    assert kpts.dtype == ref_kpts.dtype


def test_decode_accepts_torch_and_recovers_encoded_keypoints(codec):
    rng = np.random.default_rng(1)
    keypoints = rng.uniform([0, 0], INPUT_SIZE, size=(1, 21, 2)).astype(np.float32)
    encoded = codec.encode(keypoints, np.ones((1, 21), dtype=np.float32))
    x = torch.from_numpy(encoded["keypoint_x_labels"])
    y = torch.from_numpy(encoded["keypoint_y_labels"])
    kpts, scores = decode_simcc(x, y, split_ratio=2.0)
    ref_kpts, ref_scores = codec.decode(x.numpy(), y.numpy())
    np.testing.assert_array_equal(kpts, ref_kpts)
    np.testing.assert_array_equal(scores, ref_scores)
    np.testing.assert_allclose(kpts, keypoints, atol=0.5)  # one bin = half a pixel


def test_to_image_coords_matches_mmpose_topdown_formula():
    import_mmpose()
    from mmpose.structures.bbox import get_warp_matrix

    rng = np.random.default_rng(2)
    kpts = rng.uniform([0, 0], INPUT_SIZE, size=(3, 21, 2)).astype(np.float32)
    center = rng.uniform(100, 500, size=(3, 2)).astype(np.float32)
    scale = rng.uniform(50, 300, size=(3, 1)).astype(np.float32) * np.array(
        [[0.75, 1.0]], np.float32
    )
    # TopdownPoseEstimator.add_pred_to_datasample:
    expected = kpts / np.array(INPUT_SIZE) * scale[:, None] + center[:, None] - 0.5 * scale[:, None]
    got = to_image_coords(kpts, crop_to_image_affine(center, scale, INPUT_SIZE))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)
    inverse = np.stack(
        [get_warp_matrix(c, s, 0.0, INPUT_SIZE, inv=True) for c, s in zip(center, scale)]
    )
    np.testing.assert_allclose(to_image_coords(kpts, inverse), expected, rtol=0, atol=1e-3)


def test_to_image_coords_inverts_a_rotated_crop():
    import_mmpose()
    from mmpose.structures.bbox import get_warp_matrix

    rng = np.random.default_rng(3)
    image_pts = rng.uniform(100, 400, size=(2, 21, 2))
    center, scale = np.array([250.0, 250.0]), np.array([240.0, 320.0])
    forward = np.stack([get_warp_matrix(center, scale, rot, INPUT_SIZE) for rot in (30, -45)])
    inverse = np.stack(
        [get_warp_matrix(center, scale, rot, INPUT_SIZE, inv=True) for rot in (30, -45)]
    )
    crop_pts = to_image_coords(image_pts, forward)
    np.testing.assert_allclose(to_image_coords(crop_pts, inverse), image_pts, atol=1e-6)


def test_decode_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same"):
        decode_simcc(np.zeros((2, 21, 384)), np.zeros((2, 17, 512)))
