"""SimCC decoding as MMPose does it, and the map from crop pixels back to the image.

MMPose's ``RTMCCHead.predict`` decodes the *raw logits* (no softmax) with
``SimCCLabel.decode`` -> ``get_simcc_maximum``: the argmax of each axis, divided by the
split ratio, and the smaller of the two axis maxima as the keypoint score. A keypoint whose
score is ``<= 0`` gets location ``-1`` *before* the division (so ``-1 / split_ratio`` in
crop pixels). ``TopdownPoseEstimator.add_pred_to_datasample`` then maps crop pixels to the
image with ``kpt / input_size * input_scale + input_center - 0.5 * input_scale``, which is
the inverse of the (unrotated) top-down crop affine: :func:`crop_to_image_affine` builds it
as a ``(2, 3)`` matrix so that any crop affine (rotated ones too) goes through
:func:`to_image_coords`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = np.ndarray  # numpy arrays, or torch tensors (converted on entry)


def _to_numpy(values) -> np.ndarray:
    """A numpy view of a numpy array or a torch tensor (without importing torch)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        if str(values.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            values = values.float()
        values = values.numpy()
    return np.asarray(values)


def decode_simcc(
    simcc_x: ArrayLike, simcc_y: ArrayLike, split_ratio: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Decode SimCC logits to crop-pixel keypoints exactly as MMPose's ``SimCCLabel``.

    Args:
        simcc_x: ``(B, K, Wx)`` x-axis logits (raw, as ``RTMCCHead`` outputs them).
        simcc_y: ``(B, K, Wy)`` y-axis logits.
        split_ratio: bins per input pixel (``simcc_split_ratio``).

    Returns:
        ``keypoints`` ``(B, K, 2)`` float32 in crop (model input) pixels and ``scores``
        ``(B, K)``: ``min(max_x, max_y)`` of the logits. Where that score is ``<= 0`` the
        location is ``-1 / split_ratio`` (MMPose's "no maximum" marker).
    """
    x, y = _to_numpy(simcc_x), _to_numpy(simcc_y)
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise ValueError(
            f"expected simcc_x (B, K, Wx) and simcc_y (B, K, Wy) with the same "
            f"B and K, got {x.shape} and {y.shape}"
        )
    locs = np.stack((x.argmax(axis=-1), y.argmax(axis=-1)), axis=-1).astype(np.float32)
    scores = np.minimum(x.max(axis=-1), y.max(axis=-1))
    locs[scores <= 0.0] = -1
    return locs / np.float32(split_ratio), scores


def crop_to_image_affine(
    center: ArrayLike, scale: ArrayLike, input_size: Sequence[int]
) -> np.ndarray:
    """The ``(B, 2, 3)`` affine MMPose applies to crop-pixel predictions (no rotation).

    Args:
        center: ``(B, 2)`` crop box centre in image pixels (``input_center``).
        scale: ``(B, 2)`` crop box width, height in image pixels (``input_scale``, i.e.
            the padded, aspect-fixed box).
        input_size: model input ``(w, h)``, e.g. ``(192, 256)``.

    Returns:
        ``(B, 2, 3)`` float64: ``image = A[:, :2] @ crop + A[:, 2]``.
    """
    center = _to_numpy(center).astype(np.float64).reshape(-1, 2)
    scale = _to_numpy(scale).astype(np.float64).reshape(-1, 2)
    factor = scale / np.asarray(input_size, dtype=np.float64)
    affine = np.zeros((len(center), 2, 3))
    affine[:, 0, 0] = factor[:, 0]
    affine[:, 1, 1] = factor[:, 1]
    affine[:, :, 2] = center - 0.5 * scale
    return affine


def to_image_coords(keypoints: ArrayLike, inverse_affine: ArrayLike) -> np.ndarray:
    """Map crop-pixel keypoints to image pixels through each sample's inverse crop affine.

    Args:
        keypoints: ``(B, K, 2)`` crop pixels (from :func:`decode_simcc`).
        inverse_affine: ``(B, 2, 3)`` crop -> image affine (the inverse of the warp used to
            cut the crop; :func:`crop_to_image_affine` for MMPose's unrotated crops).

    Returns:
        ``(B, K, 2)`` image pixels, in the dtype of ``keypoints`` promoted with the affine's.
    """
    kpts, affine = _to_numpy(keypoints), _to_numpy(inverse_affine)
    if kpts.ndim != 3 or kpts.shape[-1] != 2 or affine.shape != (len(kpts), 2, 3):
        raise ValueError(
            f"expected keypoints (B, K, 2) and inverse_affine (B, 2, 3), got "
            f"{kpts.shape} and {affine.shape}"
        )
    return np.einsum("bij,bkj->bki", affine[:, :, :2], kpts) + affine[:, None, :, 2]
