"""Pictures of skeletons, for MLflow figures, prediction overlays and debugging.

Colours code the side of the body: left joints and limbs in :data:`LEFT_COLOR`, right ones
in :data:`RIGHT_COLOR`, the rest (nose, spine, head, and limbs joining two sides or a side
to the centre) in :data:`CENTER_COLOR`. Images are RGB ``uint8``; nothing is drawn in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from unipose_ray.skeleton import UNIFIED, KeypointSet

Color = tuple[int, int, int]
LEFT_COLOR: Color = (0, 200, 255)  # RGB: sky blue
RIGHT_COLOR: Color = (255, 128, 0)  # orange
CENTER_COLOR: Color = (60, 220, 60)  # green
_SHIFT = 4  # cv2 sub-pixel bits: coordinates are drawn at 1/16 px precision


def line_thickness(height: int, width: int) -> int:
    """Limb thickness in pixels: 1 px for a 256x192 crop, growing with the image."""
    return max(1, round(min(height, width) / 200))


def joint_radius(height: int, width: int) -> int:
    """Joint dot radius in pixels (2 px for a 256x192 crop)."""
    return max(2, 2 * line_thickness(height, width))


def _side(name: str) -> str:
    return name.split("_", 1)[0] if name.startswith(("left_", "right_")) else "center"


def _side_color(side: str) -> Color:
    return {"left": LEFT_COLOR, "right": RIGHT_COLOR}.get(side, CENTER_COLOR)


def draw_skeleton(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray | None = None,
    keypoint_set: KeypointSet = UNIFIED,
    score_threshold: float = 0.3,
) -> np.ndarray:
    """Draw one skeleton onto a copy of ``image``.

    Args:
        image: ``(H, W, 3)`` RGB uint8.
        keypoints: ``(K, 2)`` pixel ``(x, y)``, or ``(K, 3)`` with the score in column 2.
        scores: ``(K,)`` confidences or visibilities; None draws every finite joint.
        keypoint_set: names (for the side colours) and limbs; ``K`` must match.
        score_threshold: joints scored below it, and their limbs, are not drawn.

    Returns:
        ``(H, W, 3)`` RGB uint8, a new array.
    """
    _check_image(image)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    k = keypoint_set.num_keypoints
    if keypoints.ndim != 2 or keypoints.shape[0] != k or keypoints.shape[1] not in (2, 3):
        raise ValueError(f"expected ({k}, 2) keypoints for the {keypoint_set.name} set, "
                         f"got {keypoints.shape}")  # fmt: skip
    if scores is None and keypoints.shape[1] == 3:
        scores = keypoints[:, 2]
    xy = keypoints[:, :2]
    visible = np.isfinite(xy).all(axis=1)
    if scores is not None:
        visible &= np.asarray(scores, dtype=np.float64).reshape(k) >= score_threshold

    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    thickness, radius = line_thickness(h, w), joint_radius(h, w)
    safe = np.clip(np.where(visible[:, None], xy, 0.0), -1e4, 1e4)
    fixed = (safe * (1 << _SHIFT)).round().astype(np.int64)
    sides = [_side(n) for n in keypoint_set.names]
    for a, b in keypoint_set.links:
        if visible[a] and visible[b]:
            side = sides[a] if sides[a] == sides[b] else "center"
            cv2.line(out, _pt(fixed[a]), _pt(fixed[b]), _side_color(side),
                     thickness, cv2.LINE_AA, _SHIFT)  # fmt: skip
    for j in np.flatnonzero(visible):
        cv2.circle(out, _pt(fixed[j]), radius << _SHIFT, _side_color(sides[j]),
                   -1, cv2.LINE_AA, _SHIFT)  # fmt: skip
    return out


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(p[0]), int(p[1])


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} "
                         f"{image.dtype}")  # fmt: skip


def label(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner of ``image`` (in place; returns it)."""
    scale = max(0.35, image.shape[0] / 600)
    thickness = line_thickness(*image.shape[:2])
    origin = (4, int(4 + 22 * scale))
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)  # fmt: skip
    return image


def make_grid(
    images: Sequence[np.ndarray], cols: int = 4, pad: int = 2, pad_value: int = 0
) -> np.ndarray:
    """Tile RGB images row by row into one picture.

    Every cell is as large as the largest image (smaller ones sit top-left); cells are
    separated by ``pad`` pixels of ``pad_value``, with no border outside.

    Returns:
        ``(rows * Hmax + (rows - 1) * pad, c * Wmax + (c - 1) * pad, 3)`` uint8, where
        ``c = min(cols, len(images))`` and ``rows = ceil(len(images) / c)``.
    """
    if not images:
        raise ValueError("make_grid needs at least one image")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    for img in images:
        _check_image(img)
    cell_h = max(img.shape[0] for img in images)
    cell_w = max(img.shape[1] for img in images)
    cols = min(cols, len(images))
    rows = math.ceil(len(images) / cols)
    grid = np.full(
        (rows * cell_h + (rows - 1) * pad, cols * cell_w + (cols - 1) * pad, 3),
        pad_value,
        dtype=np.uint8,
    )
    for i, img in enumerate(images):
        y, x = (i // cols) * (cell_h + pad), (i % cols) * (cell_w + pad)
        grid[y : y + img.shape[0], x : x + img.shape[1]] = img
    return grid
