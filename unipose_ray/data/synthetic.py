"""Generated people, written as real COCO and MPII annotation files.

Real COCO/MPII images cannot be downloaded everywhere, so the default dataset is drawn:
a 2D kinematic figure carrying all 21 unified joints (plus face points), 1-4 per image,
with varied pose, size, colours, overlap, occluders and truncation, on textured
backgrounds. The drawing follows one rule so that a small CNN learns it in minutes:

- the person's **left** limbs, left eye and left ear are warm (red to yellow), the
  **right** ones cool (cyan to blue); the rule never changes, only the shades jitter;
- the torso is a quadrilateral from the shoulders to the hips (green or purple tones);
  the neck is a segment thorax -> upper_neck; the head is an ellipse whose bottom is
  upper_neck and whose top is head_top (skin tone from the front, hair from the back);
- every limb joint is a darker disc of its limb's colour; pelvis, thorax, upper_neck and
  head_top are white discs with a black rim; the nose is a dark dot.

Geometry: pelvis = midpoint of the hips, thorax = midpoint of the shoulders moved up the
torso by 3% of the height, upper_neck above the thorax, head_top above upper_neck along
the head axis. Coordinates are pixels with pixel centres at integers (x = 0 is the centre
of the first column), which is how cv2 draws and how MMPose reads keypoints.

Labels (COCO ``v``): 2 visible; 1 labelled but occluded (covered by another person, an
occluder or the own arm, or a face point turned away); 0 unlabelled (outside the image, or
eyes/nose on the back of the head), with ``x = y = 0``. MPII ``joints_vis`` is 1 exactly
where ``v == 2``; joints outside the image are written as ``[-1, -1]`` like the real files.

MPII files follow the real MPII convention, MATLAB 1-based pixels: ``joints``, ``head_box``
and ``center`` are the 0-based truth + 1, and ``center`` is also pre-compensated for the
15 px shift MMPose applies (``center_file = (cx + 1, cy + 1 - 15 * scale)``), so MMPose's
box centre is the person-box centre ``(cx, cy)`` and its box side ``200 * scale`` is the
longer person-box side. MMPose keeps MPII joints 1-based and adds 1 to its predictions in
``MpiiPCKAccuracy``; unipose_ray's reader subtracts the 1 when it reads the joints. Both
treat the generated files exactly as they treat the real ones.

The two datasets are different image sets with a mild domain gap: "coco" has cluttered
backgrounds (noise, shapes) and more, smaller people; "mpii" has smooth backgrounds
(gradients, stripes) and fewer, larger people. Layout: see :func:`dataset_paths`.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from unipose_ray.skeleton import COCO, UNIFIED, mapping_for

DATASETS = ("coco", "mpii")
SPLITS = ("train", "val")
_SEED_CODES = {"coco": 0, "mpii": 1, "train": 0, "val": 1}

_J = {name: i for i, name in enumerate(UNIFIED.names)}  # unified joint name -> index
_LIMB_CHAINS = {  # side -> (arm joints, leg joints), root first
    side: ((f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist"),
           (f"{side}_hip", f"{side}_knee", f"{side}_ankle"))
    for side in ("left", "right")
}  # fmt: skip
_SPINE = ("pelvis", "thorax", "upper_neck", "head_top")
# Face points: (joint, azimuth on the head in radians, height along the head axis / head length)
_FACE = (("nose", 0.0, -0.12), ("left_eye", 0.45, 0.06), ("right_eye", -0.45, 0.06),
         ("left_ear", np.pi / 2, 0.0), ("right_ear", -np.pi / 2, 0.0))  # fmt: skip
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing
_MIN_MPII_VISIBLE = 3  # MPII annotates only people with at least this many visible joints


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. The same config always produces byte-identical files.

    Attributes:
        seed: base seed; image ``i`` of a dataset/split draws from ``(seed, dataset, split, i)``,
            so an image does not depend on how many images are generated.
        coco_train, coco_val, mpii_train, mpii_val: number of images per dataset and split.
        image_size: ``(min, max)`` side length in pixels; width and height are drawn
            independently in this range.
        min_person_height: smallest person height (head top to ankles) in pixels.
        max_people: at most this many people per image (at least one).
        occluder_prob: probability that an image gets 1-2 occluder shapes over people.
        truncation_prob: probability that a person is placed partly outside the image.
        jpeg_quality: JPEG quality of the written images.
    """

    seed: int = 0
    coco_train: int = 1024
    coco_val: int = 256
    mpii_train: int = 1024
    mpii_val: int = 256
    image_size: tuple[int, int] = (320, 480)
    min_person_height: int = 80
    max_people: int = 4
    occluder_prob: float = 0.4
    truncation_prob: float = 0.25
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        for name in ("coco_train", "coco_val", "mpii_train", "mpii_val"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 images, got {getattr(self, name)}")
        if len(self.image_size) != 2 or not 64 <= self.image_size[0] <= self.image_size[1]:
            raise ValueError(f"image_size must be (min, max) with 64 <= min <= max, "
                             f"got {self.image_size}")
        if not 16 <= self.min_person_height <= 0.9 * self.image_size[0]:
            raise ValueError(f"min_person_height must be in [16, 0.9 * image_size[0] = "
                             f"{0.9 * self.image_size[0]:.0f}] px, got {self.min_person_height}; "
                             "lower it or raise the smallest image size")
        if not 1 <= self.max_people <= 8:
            raise ValueError(f"max_people must be in [1, 8], got {self.max_people}")
        for name in ("occluder_prob", "truncation_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    def num_images(self, dataset: str, split: str) -> int:
        return getattr(self, f"{dataset}_{split}")


@dataclass(frozen=True)
class SyntheticDataset:
    """Where the files of a generated dataset live (see :func:`dataset_paths`)."""

    root: Path
    coco_train_images: Path
    coco_val_images: Path
    coco_train_ann: Path
    coco_val_ann: Path
    coco_val_unified: Path
    mpii_train_images: Path
    mpii_val_images: Path
    mpii_train_ann: Path
    mpii_val_ann: Path
    mpii_val_unified: Path

    def images_dir(self, dataset: str, split: str) -> Path:
        return getattr(self, f"{dataset}_{split}_images")

    def annotation_file(self, dataset: str, split: str) -> Path:
        return getattr(self, f"{dataset}_{split}_ann")

    def unified_val_file(self, dataset: str) -> Path:
        return getattr(self, f"{dataset}_val_unified")


def dataset_paths(out_dir: str | Path) -> SyntheticDataset:
    """The file layout under ``out_dir``::

        coco/images/{train,val}/000001.jpg ...
        coco/annotations/person_keypoints_{train,val}.json   COCO, 17 keypoints
        coco/annotations/unified21_val.json                  COCO style, 21 unified keypoints
        mpii/images/{train,val}/000001.jpg ...
        mpii/annotations/mpii_{train,val}.json               MMPose MPII list, 16 joints
        mpii/annotations/unified21_val.json                  COCO style, 21 unified keypoints
        synthetic_config.json                                the SyntheticConfig used

    MPII ``image`` fields are bare file names (``000001.jpg``) relative to
    ``mpii/images/{split}``: MMPose parses the image id as ``int(image.split('.')[0])``.
    Image ids are the file numbers (from 1) in every file. Annotation ids in the unified
    files: the COCO file's ids for COCO; the MPII list index + 1 for MPII (COCOeval reads
    id 0 as "unmatched").
    """
    root = Path(out_dir)
    coco, mpii = root / "coco", root / "mpii"
    return SyntheticDataset(
        root=root,
        coco_train_images=coco / "images" / "train",
        coco_val_images=coco / "images" / "val",
        coco_train_ann=coco / "annotations" / "person_keypoints_train.json",
        coco_val_ann=coco / "annotations" / "person_keypoints_val.json",
        coco_val_unified=coco / "annotations" / "unified21_val.json",
        mpii_train_images=mpii / "images" / "train",
        mpii_val_images=mpii / "images" / "val",
        mpii_train_ann=mpii / "annotations" / "mpii_train.json",
        mpii_val_ann=mpii / "annotations" / "mpii_val.json",
        mpii_val_unified=mpii / "annotations" / "unified21_val.json",
    )


@dataclass(frozen=True)
class PersonLabel:
    """The truth about one drawn person.

    Attributes:
        keypoints: ``(21, 2)`` pixel positions in unified order (also outside the image).
        visibility: ``(21,)`` COCO-style flags 0/1/2 (see the module docstring).
        bbox: ``(4,)`` ``x, y, w, h`` of the drawn figure, clipped to the image.
        area: pixels of the person left visible in the image (the COCO segment area).
        head_box: ``(4,)`` ``x1, y1, x2, y2``: a square of side ``|head_top - upper_neck|``
            centred on the head, so ``0.6 * diagonal`` is the PCKh head size.
    """

    keypoints: np.ndarray
    visibility: np.ndarray
    bbox: np.ndarray
    area: float
    head_box: np.ndarray


# --- The figure: pose and appearance ---------------------------------------------------------


@dataclass(frozen=True)
class _Figure:
    keypoints: np.ndarray  # (21, 2)
    face_state: np.ndarray  # (21,) 0 shown, 1 turned away (labelled), 2 back of head (unlabelled)
    head: tuple[np.ndarray, tuple[float, float], float]  # centre, (across, along) semi-axes, deg
    torso: np.ndarray  # (4, 2) polygon
    thickness: int
    far_side: str  # the side turned away from the camera: drawn first
    side_view: bool
    colors: dict[str, tuple[int, int, int]]

    def extent(self) -> np.ndarray:
        """``(4,)`` ``x0, y0, x1, y1`` of everything drawn."""
        centre, (across, along), angle = self.head
        t = np.deg2rad(angle)
        half = np.array([np.hypot(across * np.cos(t), along * np.sin(t)),
                         np.hypot(across * np.sin(t), along * np.cos(t))])
        points = np.concatenate([self.keypoints, self.torso, [centre - half, centre + half]])
        pad = 0.6 * self.thickness
        return np.concatenate([points.min(0) - pad, points.max(0) + pad])

    def shifted(self, offset: np.ndarray) -> _Figure:
        centre, axes, angle = self.head
        return replace(self, keypoints=self.keypoints + offset, torso=self.torso + offset,
                       head=(centre + offset, axes, angle))


def _direction(angle: float) -> np.ndarray:
    """Unit vector at ``angle`` radians clockwise (on screen) from straight up."""
    return np.array([np.sin(angle), -np.cos(angle)])


def _bgr(hue_deg: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360) / 360, sat, val)
    return int(b * 255), int(g * 255), int(r * 255)


def _choice(rng: np.random.Generator, weights: list[float]) -> int:
    p = np.asarray(weights, dtype=float)
    return int(rng.choice(len(p), p=p / p.sum()))


def _arm_angle(rng: np.random.Generator) -> float:
    """Upper arm away from the torso's down axis; > 0 outwards, < 0 across the body."""
    kind = _choice(rng, [0.4, 0.25, 0.15, 0.2])  # hanging, raised, across, anything
    return [abs(rng.normal(0.25, 0.15)), rng.uniform(0.9, 2.9), rng.uniform(-0.9, -0.2),
            rng.uniform(-0.5, 2.9)][kind]


def _leg_angle(rng: np.random.Generator) -> float:
    """Thigh away from straight down; > 0 outwards, < 0 crossing the other leg."""
    kind = _choice(rng, [0.55, 0.2, 0.12, 0.13])  # standing, wide, crossed, kicking
    return [rng.normal(0.1, 0.06), rng.uniform(0.2, 0.6), rng.uniform(-0.45, -0.12),
            rng.uniform(0.6, 1.6)][kind]


def _bend(rng: np.random.Generator, small: float, large: float) -> float:
    """Angle between the two segments of a limb: often nearly straight, sometimes bent."""
    if rng.random() < small:
        return rng.uniform(-0.25, 0.25)
    return rng.choice([-1.0, 1.0]) * rng.uniform(0.3, large)


def _foreshorten(rng: np.random.Generator) -> float:
    return rng.uniform(0.55, 1.0) if rng.random() < 0.3 else 1.0


def _sample_figure(rng: np.random.Generator, height: float) -> _Figure:
    """A person of ``height`` pixels (head top to ankles, standing) with its pelvis at 0."""
    size = {name: ratio * height * rng.uniform(0.9, 1.1) for name, ratio in
            dict(head=0.15, neck=0.05, torso=0.30, shoulders=0.24, hips=0.15, upper_arm=0.17,
                 forearm=0.15, thigh=0.24, shin=0.24).items()}  # fmt: skip
    back = rng.random() < 0.2
    yaw = rng.uniform(-1.2, 1.2) + (np.pi if back else 0.0)  # 0 = facing the camera
    lateral = np.cos(yaw)  # how far the person's left side lies towards image right
    lean = rng.normal(0, 0.12) if rng.random() < 0.85 else rng.uniform(-0.7, 0.7)
    up, right = _direction(lean), _direction(lean + np.pi / 2)

    kp = np.zeros((UNIFIED.num_keypoints, 2))
    kp[_J["thorax"]] = up * size["torso"]
    shoulder_mid = kp[_J["thorax"]] - up * 0.03 * height
    for sign, side in ((1, "left"), (-1, "right")):
        kp[_J[f"{side}_shoulder"]] = shoulder_mid + right * sign * lateral * size["shoulders"] / 2
        kp[_J[f"{side}_hip"]] = right * sign * lateral * size["hips"] / 2
    kp[_J["upper_neck"]] = kp[_J["thorax"]] + _direction(lean + rng.normal(0, 0.1)) * size["neck"]
    head_angle = lean + (rng.normal(0, 0.2) if rng.random() < 0.8 else rng.uniform(-0.8, 0.8))
    kp[_J["head_top"]] = kp[_J["upper_neck"]] + _direction(head_angle) * size["head"]

    for sign, side in ((1, "left"), (-1, "right")):
        outward = np.sign(lateral) * sign  # +1: this limb hangs on the image-right side
        arm, leg = _LIMB_CHAINS[side]
        upper = lean + np.pi - outward * _arm_angle(rng)
        _chain(kp, arm, [upper, upper + _bend(rng, 0.4, 2.3)],
               [size["upper_arm"] * _foreshorten(rng), size["forearm"] * _foreshorten(rng)])
        thigh = np.pi - outward * _leg_angle(rng)
        _chain(kp, leg, [thigh, thigh + _bend(rng, 0.6, 1.8)],
               [size["thigh"] * _foreshorten(rng), size["shin"] * _foreshorten(rng)])

    head, face_state, head_back = _head_and_face(rng, kp, head_angle, yaw, size["head"])
    half_shoulders = max(abs(lateral) * size["shoulders"] / 2, 0.07 * height)
    half_hips = max(abs(lateral) * size["hips"] / 2, 0.06 * height)
    hip_mid = -up * 0.02 * height  # the torso reaches just below the pelvis
    torso = np.array([shoulder_mid + right * half_shoulders, shoulder_mid - right * half_shoulders,
                      hip_mid - right * half_hips, hip_mid + right * half_hips])
    return _Figure(
        keypoints=kp, face_state=face_state, head=head, torso=torso,
        thickness=max(2, int(round(height * rng.uniform(0.03, 0.05)))),
        far_side="left" if np.sin(yaw) > 0 else "right", side_view=abs(lateral) < 0.7,
        colors=_sample_colors(rng, head_back),
    )  # fmt: skip


def _chain(kp: np.ndarray, joints: tuple[str, ...], angles: list[float], lengths: list[float]):
    for (parent, child), angle, length in zip(pairwise(joints), angles, lengths, strict=True):
        kp[_J[child]] = kp[_J[parent]] + _direction(angle) * length


def _head_and_face(rng, kp, head_angle, yaw, head_len):
    """Head ellipse (bottom at upper_neck, top at head_top), the face points on it (written
    into ``kp``), their ``face_state`` and whether the camera sees the back of the head."""
    axis, across_dir = _direction(head_angle), _direction(head_angle + np.pi / 2)
    centre = kp[_J["upper_neck"]] + axis * head_len / 2
    across = 0.38 * head_len * rng.uniform(0.9, 1.1)
    head_yaw = yaw + rng.normal(0, 0.35)
    state = np.zeros(UNIFIED.num_keypoints, dtype=np.int8)
    for name, azimuth, up in _FACE:
        depth = np.cos(head_yaw + azimuth)  # > 0: on the half of the head facing the camera
        kp[_J[name]] = (centre + across_dir * 0.92 * across * np.sin(head_yaw + azimuth)
                       + axis * up * head_len)
        if name.endswith("ear"):
            state[_J[name]] = 0 if depth > -0.25 else 1
        else:
            state[_J[name]] = 0 if depth > 0.25 else (1 if depth > -0.3 else 2)
    head = (centre, (across, head_len / 2), float(np.rad2deg(head_angle)))
    return head, state, bool(np.cos(head_yaw) < 0)


_SKIN = [(205, 225, 250), (160, 190, 235), (120, 160, 210), (90, 130, 190), (60, 95, 140),
         (45, 65, 100)]  # fmt: skip  (BGR)


def _sample_colors(rng: np.random.Generator, head_back: bool) -> dict[str, tuple[int, int, int]]:
    """Per-person colours: left limbs warm, right limbs cool, torso green or purple."""
    colors = {}
    for side, (lo, hi) in (("left", (0, 50)), ("right", (185, 240))):
        for part in ("arm", "leg"):
            hue, sat, val = rng.uniform(lo, hi), rng.uniform(0.65, 1), rng.uniform(0.7, 1)
            colors[f"{side}_{part}"] = _bgr(hue, sat, val)
            colors[f"{side}_{part}_joint"] = _bgr(hue, sat, 0.55 * val)
    torso_hue = rng.uniform(75, 150) if rng.random() < 0.7 else rng.uniform(260, 290)
    colors["torso"] = _bgr(torso_hue, rng.uniform(0.3, 0.75), rng.uniform(0.3, 0.75))
    skin = np.array(_SKIN[rng.integers(len(_SKIN))]) * rng.uniform(0.9, 1.1)
    colors["skin"] = tuple(int(c) for c in np.clip(skin, 0, 255))
    colors["neck"] = tuple(int(c * 0.8) for c in colors["skin"])
    hair = _bgr(rng.uniform(10, 40), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.4))
    colors["head"] = hair if head_back else colors["skin"]
    for side, hue in (("left", rng.uniform(0, 15)), ("right", rng.uniform(200, 235))):
        colors[f"{side}_eye"] = colors[f"{side}_ear"] = _bgr(hue, 1.0, rng.uniform(0.8, 1))
    colors["nose"] = _bgr(0, 0, rng.uniform(0.0, 0.15))
    return colors


# --- Drawing ---------------------------------------------------------------------------------


class _Canvas:
    """The image plus an owner map: which person part or occluder drew each pixel last."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.owner = np.zeros(image.shape[:2], dtype=np.uint8)

    @staticmethod
    def _fix(points) -> np.ndarray:
        return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32)

    def line(self, a, b, color, thickness: int, code: int) -> None:
        a, b = tuple(self._fix(a)), tuple(self._fix(b))
        cv2.line(self.image, a, b, color, thickness, cv2.LINE_AA, _SHIFT)
        cv2.line(self.owner, a, b, code, thickness, cv2.LINE_8, _SHIFT)

    def circle(self, centre, radius: float, color, code: int) -> None:
        c, r = tuple(self._fix(centre)), int(round(radius * (1 << _SHIFT)))
        cv2.circle(self.image, c, r, color, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(self.owner, c, r, code, -1, cv2.LINE_8, _SHIFT)

    def polygon(self, points, color, code: int) -> None:
        pts = [self._fix(points).reshape(-1, 1, 2)]
        cv2.fillPoly(self.image, pts, color, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(self.owner, pts, code, cv2.LINE_8, _SHIFT)

    def ellipse(self, centre, axes, angle: float, color, code: int) -> None:
        c, ax = tuple(self._fix(centre)), tuple(self._fix(axes))
        cv2.ellipse(self.image, c, ax, angle, 0, 360, color, -1, cv2.LINE_AA, _SHIFT)
        cv2.ellipse(self.owner, c, ax, angle, 0, 360, code, -1, cv2.LINE_8, _SHIFT)


# Owner codes: every joint disc of every person has its own code, so a joint counts as
# visible only where its own disc is still on top (not covered by another person, an
# occluder, or another part of the same person).
_BODY, _HEAD = UNIFIED.num_keypoints, UNIFIED.num_keypoints + 1  # parts after the joints
_CODES_PER_PERSON = UNIFIED.num_keypoints + 2
_OCCLUDER_CODE = 255


def _code(person: int, part: int) -> int:
    """Owner value of ``part`` (a joint index, ``_BODY`` or ``_HEAD``) of ``person``."""
    return 1 + _CODES_PER_PERSON * person + part


def _draw_person(canvas: _Canvas, fig: _Figure, person: int) -> None:
    """Back to front: far leg (and far arm in side views), near leg, torso, neck, head and
    face, arms, then all joint discs on top so that every labelled-visible joint is seen."""
    kp, t, col, body = fig.keypoints, fig.thickness, fig.colors, _code(person, _BODY)

    def limb(side: str, part: int) -> None:
        chain = _LIMB_CHAINS[side][part]
        name = f"{side}_{('arm', 'leg')[part]}"
        for a, b in pairwise(chain):
            canvas.line(kp[_J[a]], kp[_J[b]], col[name], int(t * (1.25 if part else 1.0)), body)

    near = "right" if fig.far_side == "left" else "left"
    limb(fig.far_side, 1)
    if fig.side_view:
        limb(fig.far_side, 0)
    limb(near, 1)
    canvas.polygon(fig.torso, col["torso"], body)
    canvas.line(kp[_J["thorax"]], kp[_J["upper_neck"]], col["neck"], max(2, int(t * 1.1)), body)
    centre, axes, angle = fig.head
    canvas.ellipse(centre, axes, angle, col["head"], _code(person, _HEAD))
    for name, _, _ in _FACE:
        if fig.face_state[_J[name]] == 0:
            radius = axes[1] * (0.2 if name.endswith("ear") else 0.13)
            canvas.circle(kp[_J[name]], max(1.5, radius), col[name], _code(person, _J[name]))
    if not fig.side_view:
        limb(fig.far_side, 0)
    limb(near, 0)
    for side in ("left", "right"):
        for part, chain in enumerate(_LIMB_CHAINS[side]):
            for name in chain:
                color = col[f"{side}_{('arm', 'leg')[part]}_joint"]
                canvas.circle(kp[_J[name]], max(1.5, 0.75 * t), color, _code(person, _J[name]))
    for name in _SPINE:
        canvas.circle(kp[_J[name]], max(2.0, 0.45 * t + 1), (0, 0, 0), _code(person, _J[name]))
        canvas.circle(kp[_J[name]], max(1.0, 0.45 * t), (255, 255, 255), _code(person, _J[name]))


def _background(rng: np.random.Generator, width: int, height: int, style: str) -> np.ndarray:
    """A textured backdrop in muted colours (people are drawn saturated)."""

    def muted() -> tuple[int, int, int]:
        return _bgr(rng.uniform(0, 360), rng.uniform(0, 0.55), rng.uniform(0.15, 0.9))

    # a bilinear gradient between four corner colours is the base of every style
    corners = np.array([[muted(), muted()], [muted(), muted()]], dtype=np.uint8)
    image = cv2.resize(corners, (width, height), interpolation=cv2.INTER_LINEAR)
    if style == "noise":  # blotchy, mostly-luminance noise on top: base + amp * (noise - 128)
        cells = int(rng.integers(3, 30))
        shape = (max(2, height // cells), max(2, width // cells))
        small = rng.normal(0, 1, (*shape, 1)) + rng.normal(0, 0.35, (*shape, 3))
        small = np.clip(128 + 45 * small, 0, 255).astype(np.uint8)
        noise = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        amp = rng.uniform(0.4, 1.0)
        image = cv2.addWeighted(noise, amp, image, 1.0, -128 * amp)
    if style == "stripes":
        color, period = muted(), rng.uniform(8, 60)
        angle, thickness = rng.uniform(0, np.pi), max(1, int(period * rng.uniform(0.2, 0.6)))
        d, n = np.array([np.cos(angle), np.sin(angle)]), int(np.hypot(width, height) / period) + 1
        normal, span = np.array([-d[1], d[0]]), 2 * np.hypot(width, height)
        for k in range(-n, n + 1):
            p = np.array([width / 2, height / 2]) + normal * k * period
            a, b = (p - d * span).astype(int), (p + d * span).astype(int)
            cv2.line(image, tuple(a.tolist()), tuple(b.tolist()), color, thickness)
    if style == "shapes" or rng.random() < 0.3:
        for _ in range(int(rng.integers(5, 30))):
            centre = rng.uniform([0, 0], [width, height])
            _random_shape(rng, image, muted(), centre, rng.uniform(0.05, 0.3) * min(width, height))
    return image


def _random_shape(rng, image, color, centre, size: float, owner=None) -> None:
    """An ellipse, rectangle or blob polygon; also marked in ``owner`` when given."""
    kind = int(rng.integers(3))
    targets = [(image, color)] + ([] if owner is None else [(owner, _OCCLUDER_CODE)])
    if kind == 0:
        axes = tuple(int(a) for a in rng.uniform(0.3, 1.0, 2) * size)
        angle = float(rng.uniform(0, 180))
        for target, value in targets:
            cv2.ellipse(target, tuple(np.round(centre).astype(int).tolist()), axes, angle, 0, 360,
                        value, -1)
        return
    if kind == 1:
        n, angles = 4, np.arange(4) * np.pi / 2 + rng.uniform(0, np.pi / 2)
    else:
        n = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.4, 1.0, n) * size
    pts = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    for target, value in targets:
        cv2.fillPoly(target, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], value)


# --- One image -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Domain:
    backgrounds: dict[str, float]  # style -> weight
    people: tuple[float, ...]  # weight of 1, 2, 3, ... people
    log_heights: bool  # log-uniform heights (many small people) instead of large ones


_DOMAINS = {
    "coco": _Domain({"noise": 0.4, "shapes": 0.35, "stripes": 0.1, "gradient": 0.15},
                    (0.35, 0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.1), log_heights=True),
    "mpii": _Domain({"gradient": 0.45, "stripes": 0.35, "noise": 0.1, "shapes": 0.1},
                    (0.55, 0.3, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05), log_heights=False),
}  # fmt: skip


def image_rng(config: SyntheticConfig, dataset: str, split: str, index: int) -> np.random.Generator:
    """The generator that draws image ``index`` of ``dataset``/``split``."""
    return np.random.default_rng([config.seed, _SEED_CODES[dataset], _SEED_CODES[split], index])


def render_sample(
    config: SyntheticConfig, dataset: str, split: str, index: int
) -> tuple[np.ndarray, list[PersonLabel]]:
    """Draw one image: ``(H, W, 3)`` uint8 BGR and the truth of every person drawn in it."""
    if dataset not in _DOMAINS:
        raise KeyError(f"unknown synthetic dataset '{dataset}', expected one of {DATASETS}")
    rng, domain = image_rng(config, dataset, split, index), _DOMAINS[dataset]
    lo, hi = config.image_size
    width, height = (int(s) for s in rng.integers(lo, hi + 1, 2))
    style = list(domain.backgrounds)[_choice(rng, list(domain.backgrounds.values()))]
    canvas = _Canvas(_background(rng, width, height, style))

    num_people = 1 + _choice(rng, list(domain.people[: config.max_people]))
    tallest = 0.95 * height
    if domain.log_heights:
        heights = np.exp(rng.uniform(np.log(config.min_person_height), np.log(tallest), num_people))
    else:
        heights = rng.uniform(max(config.min_person_height, 0.4 * height), tallest, num_people)
    figures = [_place(rng, _sample_figure(rng, h), width, height, config.truncation_prob)
               for h in np.sort(heights)]  # small (far) people first, so big ones overlap them
    for person, fig in enumerate(figures):
        _draw_person(canvas, fig, person)
    if rng.random() < config.occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            _add_occluder(rng, canvas, figures)
    if rng.random() < 0.2:
        canvas.image = cv2.GaussianBlur(canvas.image, (3, 3), 0)
    counts = np.bincount(canvas.owner.ravel(), minlength=256)
    labels = [_label(fig, person, canvas.owner, counts) for person, fig in enumerate(figures)]
    return canvas.image, labels


def _place(rng, fig: _Figure, width: int, height: int, truncation_prob: float) -> _Figure:
    """Move the figure into the image: fully inside when it fits, else partly outside."""
    x0, y0, x1, y1 = fig.extent()
    w, h = x1 - x0, y1 - y0
    if rng.random() < truncation_prob:
        left, top = rng.uniform(-0.5 * w, width - 0.5 * w), rng.uniform(-0.4 * h, height - 0.6 * h)
    else:
        left = rng.uniform(min(0, width - w), max(0, width - w))
        top = rng.uniform(min(0, height - h), max(0, height - h))
    return fig.shifted(np.array([left - x0, top - y0]))


def _add_occluder(rng, canvas: _Canvas, figures: list[_Figure]) -> None:
    """A muted shape near a random joint of a random person."""
    fig = figures[int(rng.integers(len(figures)))]
    x0, y0, x1, y1 = fig.extent()
    size = (y1 - y0) * rng.uniform(0.1, 0.3)
    centre = fig.keypoints[int(rng.integers(UNIFIED.num_keypoints))] + rng.normal(0, 0.3 * size, 2)
    color = _bgr(rng.uniform(0, 360), rng.uniform(0, 0.5), rng.uniform(0.2, 0.9))
    _random_shape(rng, canvas.image, color, centre, size, owner=canvas.owner)


def _label(fig: _Figure, person: int, owner: np.ndarray, counts: np.ndarray) -> PersonLabel:
    h, w = owner.shape
    kp = fig.keypoints
    inside = (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
    xi = np.clip(np.round(kp[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(kp[:, 1]).astype(int), 0, h - 1)
    seen = owner[yi, xi] == _code(person, np.arange(len(kp)))
    v = np.where(seen & (fig.face_state == 0), 2, 1)
    v[~inside | (fig.face_state == 2)] = 0

    x0, y0, x1, y1 = fig.extent()
    x0, x1 = np.clip([x0, x1], 0, w - 1)
    y0, y1 = np.clip([y0, y1], 0, h - 1)
    head_len = np.linalg.norm(kp[_J["head_top"]] - kp[_J["upper_neck"]])
    head_centre = fig.head[0]
    area = counts[_code(person, 0) : _code(person, _CODES_PER_PERSON)].sum()
    return PersonLabel(
        keypoints=kp, visibility=v.astype(np.int8),
        bbox=np.array([x0, y0, x1 - x0, y1 - y0]), area=float(max(area, 1)),
        head_box=np.concatenate([head_centre - head_len / 2, head_centre + head_len / 2]),
    )  # fmt: skip


# --- Annotation files ------------------------------------------------------------------------


def _r(values) -> list[float]:
    return [round(float(v), 2) for v in np.ravel(values)]


def _coco_annotation(label: PersonLabel, ann_id: int, image_id: int, joints: np.ndarray) -> dict:
    v = label.visibility[joints]
    xy = np.where(v[:, None] > 0, label.keypoints[joints], 0.0)  # COCO: x = y = 0 when v = 0
    keypoints = []
    for (x, y), vis in zip(xy, v, strict=True):
        keypoints += [round(float(x), 2), round(float(y), 2), int(vis)]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": _r(label.bbox),
            "area": round(label.area, 2), "iscrowd": 0, "num_keypoints": int((v > 0).sum()),
            "keypoints": keypoints}


def _coco_file(keypoint_set, images: list[dict], annotations: list[dict]) -> dict:
    return {
        "info": {"description": f"unipose_ray synthetic people ({keypoint_set.name} keypoints)"},
        "images": images,
        "annotations": annotations,
        "categories": [{
            "id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(keypoint_set.names),
            "skeleton": [[a + 1, b + 1] for a, b in keypoint_set.links],  # 1-based like COCO
        }],
    }  # fmt: skip


def _mpii_entry(label: PersonLabel, file_name: str) -> dict:
    joints = mapping_for("mpii").to_unified
    v = label.visibility[joints]
    # 1-based like the real files; unlabelled joints are [-1, -1]
    xy = np.where(v[:, None] > 0, label.keypoints[joints] + 1, -1.0)
    x, y, w, h = label.bbox
    scale = max(w, h) / 200.0
    return {
        "image": file_name,
        # 1-based centre minus MMPose's +15 px shift: MMPose then gets the box centre
        "center": _r([x + w / 2 + 1, y + h / 2 + 1 - 15.0 * scale]),
        "scale": round(scale, 6),
        "joints": [_r(p) for p in xy],
        "joints_vis": [int(vis == 2) for vis in v],
        "head_box": _r(np.asarray(label.head_box) + 1),
    }


def _write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")))


def generate_dataset(
    out_dir: str | Path, config: SyntheticConfig, progress: bool | None = None
) -> SyntheticDataset:
    """Draw both datasets and write images and annotation files under ``out_dir``.

    Args:
        out_dir: root folder; see :func:`dataset_paths` for the layout.
        config: what to generate.
        progress: show a tqdm bar; by default only for 500 images or more.
    """
    paths = dataset_paths(out_dir)
    total = sum(config.num_images(d, s) for d in DATASETS for s in SPLITS)
    bar = tqdm(total=total, desc="synthetic images", unit="img",
               disable=not (total >= 500 if progress is None else progress))
    for dataset in DATASETS:
        for split in SPLITS:
            _generate_split(paths, config, dataset, split, bar)
    bar.close()
    _write_json(asdict(config), paths.root / "synthetic_config.json")
    return paths


def _generate_split(paths: SyntheticDataset, config: SyntheticConfig, dataset: str,
                    split: str, bar: tqdm) -> None:
    image_dir = paths.images_dir(dataset, split)
    image_dir.mkdir(parents=True, exist_ok=True)
    coco_joints, all_joints = np.arange(COCO.num_keypoints), np.arange(UNIFIED.num_keypoints)
    images, coco_anns, unified_anns, mpii_entries = [], [], [], []
    for index in range(config.num_images(dataset, split)):
        image, labels = render_sample(config, dataset, split, index)
        image_id, file_name = index + 1, f"{index + 1:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
        if not ok:
            raise RuntimeError(f"cv2 could not encode {image_dir / file_name} as JPEG")
        (image_dir / file_name).write_bytes(encoded.tobytes())
        images.append({"id": image_id, "file_name": file_name,
                       "width": image.shape[1], "height": image.shape[0]})
        for label in labels:
            if dataset == "coco" and (label.visibility[coco_joints] > 0).any():
                ann_id = len(coco_anns) + 1
                coco_anns.append(_coco_annotation(label, ann_id, image_id, coco_joints))
                unified_anns.append(_coco_annotation(label, ann_id, image_id, all_joints))
            mpii_visible = (label.visibility[mapping_for("mpii").to_unified] == 2).sum()
            if dataset == "mpii" and mpii_visible >= _MIN_MPII_VISIBLE:
                mpii_entries.append(_mpii_entry(label, file_name))
                # ids from 1 (COCOeval treats id 0 as "unmatched"): MMPose's index + 1
                ann_id = len(mpii_entries)
                unified_anns.append(_coco_annotation(label, ann_id, image_id, all_joints))
        bar.update()
    if dataset == "coco":
        _write_json(_coco_file(COCO, images, coco_anns), paths.annotation_file(dataset, split))
    else:
        _write_json(mpii_entries, paths.annotation_file(dataset, split))
    if split == "val":
        _write_json(_coco_file(UNIFIED, images, unified_anns), paths.unified_val_file(dataset))
