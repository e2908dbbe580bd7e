"""The crop geometry equals MMPose's own functions, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from unipose_ray.data.geometry import (
    affine_matrix,
    apply_affine,
    axis_relation,
    box_center_scale,
    fix_aspect_ratio,
    invert_affine,
)
from unipose_ray.evaluation.decode import crop_to_image_affine
from unipose_ray.models.compat import import_mmpose

import_mmpose()
from mmpose.datasets.transforms import TopdownAffine  # noqa: E402
from mmpose.structures.bbox import bbox_xyxy2cs, get_warp_matrix  # noqa: E402

RNG = np.random.default_rng(3)
BOXES = np.concatenate([RNG.uniform(0, 400, (40, 2)), RNG.uniform(5, 300, (40, 2))], axis=1)


@pytest.mark.parametrize("size", [(192, 256), (256, 256), (64, 96)])
def test_affine_matrix_is_mmposes_get_warp_matrix(size):
    for bbox in BOXES:
        center, scale = box_center_scale(bbox)
        scale = fix_aspect_ratio(scale, size)
        for rotation in (0.0, 31.5, -80.0):
            ours = affine_matrix(center, scale, rotation, size)
            ref = get_warp_matrix(center.astype(np.float32), scale.astype(np.float32),
                                  rotation, size)
            np.testing.assert_array_equal(ours, ref)


def test_box_and_aspect_fix_are_mmposes():
    xyxy = np.concatenate([BOXES[:, :2], BOXES[:, :2] + BOXES[:, 2:]], axis=1).astype(np.float32)
    ref_center, ref_scale = bbox_xyxy2cs(xyxy, padding=1.25)
    affine = TopdownAffine(input_size=(192, 256))
    ref_fixed = affine._fix_aspect_ratio(ref_scale, aspect_ratio=192 / 256)
    for i, bbox in enumerate(np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)):
        center, scale = box_center_scale(bbox)
        np.testing.assert_allclose(center, ref_center[i], rtol=0, atol=1e-4)
        np.testing.assert_allclose(scale, ref_scale[i], rtol=1e-6)
        np.testing.assert_array_equal(fix_aspect_ratio(ref_scale[i], (192, 256)), ref_fixed[i])


def test_mirror_maps_x_to_w_minus_x():
    center, scale = np.array([100.0, 120.0]), np.array([150.0, 200.0])
    plain = affine_matrix(center, scale, 20.0, (192, 256))
    mirrored = affine_matrix(center, scale, 20.0, (192, 256), flip=True)
    points = RNG.uniform(0, 300, (10, 2))
    a, b = apply_affine(points, plain), apply_affine(points, mirrored)
    np.testing.assert_allclose(b[:, 0], 192 - a[:, 0], atol=1e-9)
    np.testing.assert_allclose(b[:, 1], a[:, 1], atol=1e-9)


def test_decoding_affine_is_the_inverse_of_the_crop():
    """MMPose's crop -> image formula (``add_pred_to_datasample``) undoes our crops."""
    for bbox in BOXES[:10]:
        center, scale = box_center_scale(bbox)
        scale = fix_aspect_ratio(scale, (192, 256))
        inverse = invert_affine(affine_matrix(center, scale, 0.0, (192, 256)))
        np.testing.assert_allclose(crop_to_image_affine(center, scale, (192, 256))[0], inverse,
                                   atol=1e-3)


def test_axis_relation_maps_one_crop_onto_the_other():
    center, scale = np.array([50.0, 80.0]), np.array([90.0, 120.0])
    student = affine_matrix(center, scale, 15.0, (192, 256), flip=True)
    teacher = affine_matrix(center, fix_aspect_ratio(scale, (256, 256)), 15.0, (256, 256),
                            flip=True)
    a, b = axis_relation(student, teacher)
    points = RNG.uniform(0, 200, (8, 2))
    np.testing.assert_allclose(apply_affine(points, teacher),
                               a * apply_affine(points, student) + b, atol=1e-3)
