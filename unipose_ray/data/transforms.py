"""Top-down crops and SimCC targets, with every random choice replayable.

A training sample is a deterministic function of ``(record, CropParams)``; the parameters are
drawn from a per-sample seed (:func:`sample_seed`) by :func:`sample_params`. A sample carries
its parameters, so the exact crop can be rebuilt later (the teacher-logit cache relies on it),
and the same box can be cropped at a teacher's input size with the exact affine relation
between the two crops (:func:`crop_relation`).

The augmentations follow RTMPose's stage-1 pipeline: random flip, half-body, box
shift/scale/rotation (truncated normal, as MMPose's ``RandomBBoxTransform``), HSV colour
jitter (``YOLOXHSVRandomAug``), box blur, median blur and one coarse-dropout hole.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np

from unipose_ray.config.settings import AugmentConfig, CodecConfig
from unipose_ray.data.geometry import (
    affine_matrix,
    apply_affine,
    axis_relation,
    box_center_scale,
    fix_aspect_ratio,
)
from unipose_ray.data.records import InstanceRecord
from unipose_ray.skeleton import UNIFIED, KeypointSet


@dataclass(frozen=True)
class CropParams:
    """Everything that decides one sample's crop: replaying these rebuilds it exactly.

    Attributes:
        center: ``(x, y)`` box centre in image pixels.
        scale: ``(w, h)`` box size in image pixels, aspect-fixed to ``input_size``.
        rotation: degrees, counter-clockwise in the image.
        flip: horizontal mirror (joint labels are swapped with the flip pairs).
        input_size: ``(w, h)`` of the crop.
        hsv: hue / saturation / value offsets.
        blur: box-blur kernel size, 0 for none.
        median_blur: median-blur aperture (after the box blur), 0 for none.
        dropout: ``(x, y, w, h)`` hole in crop pixels, all zero for none.
        box: ``(w, h)`` of the (augmented, padded) person box before ``scale`` fixed its
            aspect ratio: what a model of another aspect crops (:meth:`at_input_size`).
            ``None``: ``scale`` itself.
    """

    center: tuple[float, float]
    scale: tuple[float, float]
    rotation: float = 0.0
    flip: bool = False
    input_size: tuple[int, int] = (192, 256)
    hsv: tuple[int, int, int] = (0, 0, 0)
    blur: int = 0
    dropout: tuple[int, int, int, int] = (0, 0, 0, 0)
    median_blur: int = 0
    box: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> CropParams:
        return cls(**{k: tuple(v) if isinstance(v, list | np.ndarray) else v
                      for k, v in values.items()})

    def at_input_size(self, input_size: tuple[int, int]) -> CropParams:
        """The same person box as a model of another input size (a teacher) crops it.

        MMPose's own crop for that model: the person box (``box``) fixed to the new aspect
        ratio, with the same centre, rotation and flip, so a released teacher sees people
        at the scale it was trained on. (Growing the student's crop instead would hand a
        256x256 teacher a wide person 4/3 smaller than its training crops.) The teacher's
        crop always holds the person box; where it is shorter than the student's along
        one axis, the student bins beyond it get no teacher mass (see
        :func:`~unipose_ray.kd.grid.map_teacher_logits`). Photometric parameters carry over;
        the dropout hole moves with the relation between the crops.
        """
        scale = fix_aspect_ratio(np.asarray(self.box or self.scale), input_size)
        other = replace(self, scale=tuple(scale.tolist()), input_size=tuple(input_size),
                        dropout=(0, 0, 0, 0))
        if not any(self.dropout):
            return other
        a, b = crop_relation(self, other)
        x, y, w, h = self.dropout
        start = np.array([x * a[0] + b[0], y * a[1] + b[1]])
        end = start + np.array([w * a[0], h * a[1]])
        # Clipped to the teacher's crop: a shorter teacher crop may start inside the hole.
        start, end = (np.clip(np.round(v), 0, input_size).astype(int) for v in (start, end))
        return replace(other, dropout=(*start.tolist(), *(end - start).tolist()))


@dataclass
class Sample:
    """One top-down training sample (unified keypoints, numpy).

    Attributes:
        image: ``(3, H, W)`` uint8 RGB crop.
        keypoints: ``(21, 2)`` keypoints in crop pixels.
        weights: ``(21,)`` float32 = visible x annotated x inside-the-target-window.
        target_x, target_y: ``(21, Wx)`` / ``(21, Wy)`` float32 SimCC Gaussian targets.
        params: the :class:`CropParams` that rebuild this crop.
        warp: ``(2, 3)`` image -> crop affine.
    """

    image: np.ndarray
    keypoints: np.ndarray
    weights: np.ndarray
    target_x: np.ndarray
    target_y: np.ndarray
    params: CropParams
    warp: np.ndarray = field(repr=False)


def sample_seed(base_seed: int, epoch: int, record: InstanceRecord) -> int:
    """A seed that depends only on the run seed, the epoch and the instance's identity.

    Independent of shuffling, sharding and worker count, so any process draws the same
    augmentation for the same sample.
    """
    key = f"{record.dataset}/{record.image_id}/{record.instance_id}".encode()
    entropy = [base_seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, zlib.crc32(key)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def _truncnorm(rng: np.random.Generator, size: int) -> np.ndarray:
    """Standard normal truncated to [-1, 1] (as MMPose's ``RandomBBoxTransform``)."""
    out = rng.standard_normal(size)
    bad = np.abs(out) > 1
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 1
    return out


def _half_body_box(record: InstanceRecord, prefer_upper: bool, skeleton: KeypointSet
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """MMPose's ``RandomHalfBody`` selection (9/2/3 visible joints, upper preferred 0.7)."""
    valid = record.weights > 0
    if valid.sum() < 9:
        return None
    upper = np.flatnonzero(valid & skeleton.upper_body_mask)
    lower = np.flatnonzero(valid & ~skeleton.upper_body_mask)
    if len(upper) < 2 and len(lower) < 3:
        return None
    if len(lower) < 3:
        chosen = upper
    elif len(upper) < 2:
        chosen = lower
    else:
        chosen = upper if prefer_upper else lower
    points = record.keypoints[chosen]
    low, high = points.min(axis=0), points.max(axis=0)
    return points.mean(axis=0), (high - low) * 1.5  # aspect-fixed later, per model


def sample_params(record: InstanceRecord, seed: int, codec: CodecConfig,
                  augment: AugmentConfig, skeleton: KeypointSet = UNIFIED) -> CropParams:
    """Draw one sample's :class:`CropParams` from its seed (always the same draws);
    ``skeleton``: the record's joints (the half-body split)."""
    rng = np.random.default_rng(seed)
    # A fixed number of draws per stage keeps later stages independent of earlier branches.
    u = rng.random(8)
    center, scale = box_center_scale(record.bbox)
    flip = bool(u[0] < augment.flip_prob)
    prefer_upper = bool(u[6] < 0.7)
    half = (_half_body_box(record, prefer_upper, skeleton)
            if u[1] < augment.half_body_prob else None)
    if half is not None:
        center, scale = half
    shift, factor, angle = _truncnorm(rng, 2), _truncnorm(rng, 1)[0], _truncnorm(rng, 1)[0]
    if u[2] < augment.shift_prob:
        center = center + shift * augment.shift_factor * scale
    low, high = augment.scale_range
    scale = scale * ((high + low) / 2 + factor * (high - low) / 2)
    rotation = float(angle * augment.rotate_factor) if u[3] < augment.rotate_prob else 0.0
    hsv = (rng.uniform(-1, 1, 3) * augment.hsv_delta * rng.integers(0, 2, 3)).astype(int)
    blur = int(rng.choice([3, 5, 7])) if u[4] < augment.blur_prob else 0
    w, h = codec.input_size
    hole_size = rng.uniform(0.2, 0.4, 2) * (w, h)
    hole_xy = rng.uniform(0, 1, 2) * ((w, h) - hole_size)
    dropout = (0, 0, 0, 0)
    if u[5] < augment.dropout_prob:
        dropout = tuple(int(v) for v in np.round(np.concatenate([hole_xy, hole_size])))
    # Drawn last, and always: every earlier draw stays what it was before median blur.
    median = int(rng.choice([3, 5, 7]))
    return CropParams(
        center=tuple(center.tolist()),
        scale=tuple(fix_aspect_ratio(scale, codec.input_size).tolist()),
        box=tuple(scale.tolist()),
        rotation=rotation,
        flip=flip,
        input_size=tuple(codec.input_size),
        hsv=tuple(int(v) for v in hsv),
        blur=blur,
        median_blur=median if u[7] < augment.median_blur_prob else 0,
        dropout=dropout,
    )


def warp_matrix(params: CropParams) -> np.ndarray:
    """``(2, 3)`` image -> crop affine of a sample: MMPose's ``get_warp_matrix`` for its box
    (see :mod:`unipose_ray.data.geometry`), mirrored when the sample is flipped."""
    return affine_matrix(np.asarray(params.center), np.asarray(params.scale), params.rotation,
                         params.input_size, params.flip)


def crop_relation(student: CropParams, teacher: CropParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis ``teacher_px = a * student_px + b`` between two crops of the same box.

    Both crops share centre, rotation and flip, so the relation is axis-aligned; this is
    what maps a teacher's SimCC bins onto the student's without stretching.

    Returns:
        ``a (2,)`` and ``b (2,)`` for the x and y axes.
    """
    if (student.center, student.rotation, student.flip) != (
        teacher.center, teacher.rotation, teacher.flip):
        raise ValueError("crop_relation needs two crops of the same box "
                         "(build the teacher's with CropParams.at_input_size)")
    return axis_relation(warp_matrix(student), warp_matrix(teacher))


def crop_image(image: np.ndarray, params: CropParams) -> np.ndarray:
    """Warp, colour-jitter, blur and drop out: ``(H_img, W_img, 3)`` BGR -> ``(h, w, 3)`` RGB.

    In the order of RTMPose's pipeline: ``YOLOXHSVRandomAug``, then albumentations'
    ``Blur``, ``MedianBlur`` (both ``cv2``'s filters) and ``CoarseDropout``."""
    crop = cv2.warpAffine(image, warp_matrix(params), tuple(params.input_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    if any(params.hsv):
        crop = _hsv_jitter(crop, params.hsv)
    if params.blur:
        crop = cv2.blur(crop, (params.blur, params.blur))
    if params.median_blur:
        crop = cv2.medianBlur(crop, params.median_blur)
    x, y, w, h = params.dropout
    if w and h:
        crop[y:y + h, x:x + w] = 0
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def _hsv_jitter(bgr: np.ndarray, hsv: tuple[int, int, int]) -> np.ndarray:
    """YOLOX HSV jitter via lookup tables (hue wraps at 180, OpenCV's range)."""
    h, s, v = cv2.split(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.int16)
    lut_h = ((x + hsv[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x + hsv[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x + hsv[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    return cv2.cvtColor(merged, cv2.COLOR_HSV2BGR)


def transform_keypoints(record: InstanceRecord, params: CropParams,
                        skeleton: KeypointSet = UNIFIED
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints, visibility and annotated flags in crop pixels and crop joint order
    (``skeleton``: the record's joints, whose flip pairs a flip swaps).

    Returns:
        ``keypoints (K, 2)``, ``visible (K,)``, ``annotated (K,)``; after a flip, slot
        ``left_x`` holds what was ``right_x`` (the person's left is now on the other side).
    """
    keypoints = apply_affine(record.keypoints.astype(np.float64), warp_matrix(params))
    visible, annotated = np.asarray(record.visible), np.asarray(record.annotated)
    if params.flip:
        perm = skeleton.flip_permutation
        keypoints, visible, annotated = keypoints[perm], visible[perm], annotated[perm]
    return keypoints.astype(np.float32), visible.astype(np.float32), annotated.astype(bool)


def simcc_targets(keypoints: np.ndarray, weights: np.ndarray, codec: CodecConfig
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SimCC Gaussian targets exactly as MMPose's ``SimCCLabel`` (gaussian, unnormalised).

    Args:
        keypoints: ``(K, 2)`` in crop pixels.
        weights: ``(K,)`` weights before the in-window check.

    Returns:
        ``target_x (K, Wx)``, ``target_y (K, Wy)``, ``weights (K,)`` with joints whose
        3-sigma window misses the crop set to 0.
    """
    n_x, n_y = codec.num_bins
    mu = np.around(keypoints * codec.split_ratio).astype(np.int64)
    sigma = np.asarray(codec.sigma, dtype=np.float32)
    radius = sigma * 3
    inside = ((mu - radius < (n_x, n_y)) & (mu + radius + 1 >= 0)).all(axis=1)
    weights = np.where(inside, weights, 0).astype(np.float32)
    labelled = (weights > 0)[:, None]
    target_x = np.exp(-((np.arange(n_x, dtype=np.float32) - mu[:, :1]) ** 2) / (2 * sigma[0] ** 2))
    target_y = np.exp(-((np.arange(n_y, dtype=np.float32) - mu[:, 1:]) ** 2) / (2 * sigma[1] ** 2))
    return ((target_x * labelled).astype(np.float32), (target_y * labelled).astype(np.float32),
            weights)


def make_sample(record: InstanceRecord, image: np.ndarray, params: CropParams,
                codec: CodecConfig, skeleton: KeypointSet = UNIFIED) -> Sample:
    """Build the sample that ``params`` describes (pure: no randomness here)."""
    if tuple(params.input_size) != tuple(codec.input_size):
        raise ValueError(f"crop size {params.input_size} differs from the codec's "
                         f"{codec.input_size}")
    crop = crop_image(image, params)
    keypoints, visible, annotated = transform_keypoints(record, params, skeleton)
    target_x, target_y, weights = simcc_targets(keypoints, visible * annotated, codec)
    return Sample(
        image=np.ascontiguousarray(crop.transpose(2, 0, 1)),
        keypoints=keypoints,
        weights=weights,
        target_x=target_x,
        target_y=target_y,
        params=params,
        warp=warp_matrix(params),
    )


def size_key(size: tuple[int, int]) -> str:
    """Column suffix for a teacher input size: ``256x256``."""
    return f"{size[0]}x{size[1]}"
