"""Top-down crop geometry in MMPose's convention: boxes, the crop affine, their relations.

A released RTMPose checkpoint was trained on crops cut by MMPose's ``TopdownAffine``
(``use_udp=False``): the box centre goes to ``(w / 2, h / 2)`` of the crop and one uniform
scale ``w / box_w`` applies to both axes (the box is aspect-fixed first). The matrix comes
from three float32 point pairs through ``cv2.getAffineTransform``, exactly as MMPose's
``get_warp_matrix``; building it the same way makes the crops here bit-identical to MMPose's,
so a checkpoint predicts here what it predicts in MMPose. Numpy and OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np

BOX_PADDING = 1.25  # MMPose's GetBBoxCenterScale


def box_center_scale(bbox: np.ndarray, padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y, w, h)`` box -> centre ``(2,)`` and padded size ``(2,)``.

    MMPose's ``bbox_xyxy2cs`` on the box's corners, in float32 as MMPose holds boxes.
    """
    x, y, w, h = np.asarray(bbox, dtype=np.float32)
    x1, y1, x2, y2 = x, y, x + w, y + h
    center = np.array([x1 + x2, y1 + y2], dtype=np.float32) * np.float32(0.5)
    scale = np.array([x2 - x1, y2 - y1], dtype=np.float32) * np.float32(padding)
    return center.astype(np.float64), scale.astype(np.float64)


def fix_aspect_ratio(scale: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Grow the shorter side of a ``(w, h)`` box to the aspect ratio of ``input_size``
    (MMPose's ``TopdownAffine._fix_aspect_ratio``, same comparison and arithmetic)."""
    w, h = np.float32(scale[0]), np.float32(scale[1])  # MMPose holds boxes in float32
    aspect = input_size[0] / input_size[1]
    fixed = (w, w / aspect) if w > h * aspect else (h * aspect, h)
    return np.array(fixed, dtype=np.float32).astype(np.float64)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` turned 90 degrees anticlockwise about ``b`` (MMPose's ``_get_3rd_point``)."""
    direction = a - b
    return b + np.r_[-direction[1], direction[0]]


def affine_matrix(center: np.ndarray, scale: np.ndarray, rotation: float,
                  output_size: tuple[int, int], flip: bool = False) -> np.ndarray:
    """``(2, 3)`` image -> crop affine, as MMPose's ``get_warp_matrix`` (+ an optional mirror).

    The box centre maps to ``(w / 2, h / 2)``; the image direction at ``rotation`` degrees
    (counter-clockwise on screen) maps to the crop's +x; the scale is ``w / scale[0]`` on both
    axes. ``flip`` mirrors the crop itself (``x -> w - x``), so flip and rotation commute
    and a flipped sample's keypoints go through the same matrix as its pixels.
    """
    dst_w, dst_h = output_size
    theta = np.deg2rad(rotation)
    sin, cos = np.sin(theta), np.cos(theta)
    src_dir = np.array([[cos, -sin], [sin, cos]]) @ np.array([scale[0] * -0.5, 0.0])
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = np.asarray(center) + src_dir
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([dst_w * -0.5, 0.0])
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    matrix = cv2.getAffineTransform(src, dst)
    if flip:
        matrix = np.array([[-1.0, 0.0, dst_w], [0.0, 1.0, 0.0]]) @ np.vstack([matrix, [0, 0, 1]])
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of ``(..., 2, 3)`` affines."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear_inv = np.linalg.inv(matrix[..., :2])
    offset = -(linear_inv @ matrix[..., 2:])
    return np.concatenate([linear_inv, offset], axis=-1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to ``(..., 2)`` points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def axis_relation(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis ``target_px = a * source_px + b`` between two crops of one box.

    ``source`` and ``target`` are the two crops' image -> crop affines; they must share the
    rotation and mirror (the relation is then axis-aligned).

    Returns:
        ``a (2,)`` and ``b (2,)`` for the x and y axes.
    """
    relation = target[:, :2] @ np.linalg.inv(source[:, :2])
    a = np.diag(relation).copy()
    return a, target[:, 2] - a * source[:, 2]
