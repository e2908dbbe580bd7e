"""The figure: a person's pose (all 21 unified joints and the face points on the
head) and appearance (the left-warm / right-cool colouring); feet are added by
:mod:`unipose_ray.data.synthetic.feet` when a run has them."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np

from unipose_ray.skeleton import UNIFIED

J = {name: i for i, name in enumerate(UNIFIED.names)}  # unified joint name -> index


@dataclass(frozen=True)
class Feet:
    """Both feet of a figure.

    Attributes:
        keypoints: ``(6, 2)`` pixel positions, in Halpe's order (``skeleton.keypoints.FEET``).
        state: ``(6,)`` 0 shown, 1 hidden by its own foot (labelled, no disc).
        shoes: ``(left, right)`` ``(n, 2)`` convex polygons.
        colors: ``{"<side>_shoe", "<side>_<point>"}``: BGR colours.
    """

    keypoints: np.ndarray
    state: np.ndarray
    shoes: tuple[np.ndarray, np.ndarray]
    colors: dict[str, tuple[int, int, int]]

    def shifted(self, offset: np.ndarray) -> Feet:
        return replace(self, keypoints=self.keypoints + offset,
                       shoes=tuple(s + offset for s in self.shoes))


LIMB_CHAINS = {  # side -> (arm joints, leg joints), root first
    side: ((f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist"),
           (f"{side}_hip", f"{side}_knee", f"{side}_ankle"))
    for side in ("left", "right")
}  # fmt: skip
# Face points: (joint, azimuth on the head in radians, height along the head axis / head length)
FACE = (("nose", 0.0, -0.12), ("left_eye", 0.45, 0.06), ("right_eye", -0.45, 0.06),
        ("left_ear", np.pi / 2, 0.0), ("right_ear", -np.pi / 2, 0.0))  # fmt: skip


@dataclass(frozen=True)
class Figure:
    keypoints: np.ndarray  # (21, 2)
    face_state: np.ndarray  # (21,) 0 shown, 1 turned away (labelled), 2 back of head (unlabelled)
    head: tuple[np.ndarray, tuple[float, float], float]  # centre, (across, along) semi-axes, deg
    torso: np.ndarray  # (4, 2) polygon
    thickness: int
    far_side: str  # the side turned away from the camera: drawn first
    side_view: bool
    colors: dict[str, tuple[int, int, int]]
    yaw: float  # radians, 0 = facing the camera; the person's left lies towards image right
    height: float  # pixels, head top to ankles standing
    feet: Feet | None = None

    def extent(self) -> np.ndarray:
        """``(4,)`` ``x0, y0, x1, y1`` of everything drawn."""
        box = self.body_extent()
        if self.feet is None:
            return box
        shoes, pad = np.concatenate(self.feet.shoes), 0.6 * self.thickness
        return np.concatenate([np.minimum(box[:2], shoes.min(0) - pad),
                               np.maximum(box[2:], shoes.max(0) + pad)])

    def body_extent(self) -> np.ndarray:
        """``(4,)`` ``x0, y0, x1, y1`` of everything but the feet: what places and sizes the
        figure, so that a run with feet draws the same people as one without."""
        centre, (across, along), angle = self.head
        t = np.deg2rad(angle)
        half = np.array([np.hypot(across * np.cos(t), along * np.sin(t)),
                         np.hypot(across * np.sin(t), along * np.cos(t))])
        points = np.concatenate([self.keypoints, self.torso, [centre - half, centre + half]])
        pad = 0.6 * self.thickness
        return np.concatenate([points.min(0) - pad, points.max(0) + pad])

    def shifted(self, offset: np.ndarray) -> Figure:
        centre, axes, angle = self.head
        feet = None if self.feet is None else self.feet.shifted(offset)
        return replace(self, keypoints=self.keypoints + offset, torso=self.torso + offset,
                       head=(centre + offset, axes, angle), feet=feet)


def _direction(angle: float) -> np.ndarray:
    """Unit vector at ``angle`` radians clockwise (on screen) from straight up."""
    return np.array([np.sin(angle), -np.cos(angle)])


def bgr(hue_deg: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360) / 360, sat, val)
    return int(b * 255), int(g * 255), int(r * 255)


def weighted_choice(rng: np.random.Generator, weights: list[float]) -> int:
    p = np.asarray(weights, dtype=float)
    return int(rng.choice(len(p), p=p / p.sum()))


def _arm_angle(rng: np.random.Generator) -> float:
    """Upper arm away from the torso's down axis; > 0 outwards, < 0 across the body."""
    kind = weighted_choice(rng, [0.4, 0.25, 0.15, 0.2])  # hanging, raised, across, anything
    return [abs(rng.normal(0.25, 0.15)), rng.uniform(0.9, 2.9), rng.uniform(-0.9, -0.2),
            rng.uniform(-0.5, 2.9)][kind]


def _leg_angle(rng: np.random.Generator) -> float:
    """Thigh away from straight down; > 0 outwards, < 0 crossing the other leg."""
    kind = weighted_choice(rng, [0.55, 0.2, 0.12, 0.13])  # standing, wide, crossed, kicking
    return [rng.normal(0.1, 0.06), rng.uniform(0.2, 0.6), rng.uniform(-0.45, -0.12),
            rng.uniform(0.6, 1.6)][kind]


def _bend(rng: np.random.Generator, small: float, large: float) -> float:
    """Angle between the two segments of a limb: often nearly straight, sometimes bent."""
    if rng.random() < small:
        return rng.uniform(-0.25, 0.25)
    return rng.choice([-1.0, 1.0]) * rng.uniform(0.3, large)


def _foreshorten(rng: np.random.Generator) -> float:
    return rng.uniform(0.55, 1.0) if rng.random() < 0.3 else 1.0


def sample_figure(rng: np.random.Generator, height: float) -> Figure:
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
    kp[J["thorax"]] = up * size["torso"]
    shoulder_mid = kp[J["thorax"]] - up * 0.03 * height
    for sign, side in ((1, "left"), (-1, "right")):
        kp[J[f"{side}_shoulder"]] = shoulder_mid + right * sign * lateral * size["shoulders"] / 2
        kp[J[f"{side}_hip"]] = right * sign * lateral * size["hips"] / 2
    kp[J["upper_neck"]] = kp[J["thorax"]] + _direction(lean + rng.normal(0, 0.1)) * size["neck"]
    head_angle = lean + (rng.normal(0, 0.2) if rng.random() < 0.8 else rng.uniform(-0.8, 0.8))
    kp[J["head_top"]] = kp[J["upper_neck"]] + _direction(head_angle) * size["head"]

    for sign, side in ((1, "left"), (-1, "right")):
        outward = np.sign(lateral) * sign  # +1: this limb hangs on the image-right side
        arm, leg = LIMB_CHAINS[side]
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
    return Figure(
        keypoints=kp, face_state=face_state, head=head, torso=torso,
        thickness=max(2, int(round(height * rng.uniform(0.03, 0.05)))),
        far_side="left" if np.sin(yaw) > 0 else "right", side_view=abs(lateral) < 0.7,
        colors=_sample_colors(rng, head_back), yaw=float(yaw), height=float(height),
    )  # fmt: skip


def _chain(kp: np.ndarray, joints: tuple[str, ...], angles: list[float], lengths: list[float]):
    for (parent, child), angle, length in zip(pairwise(joints), angles, lengths, strict=True):
        kp[J[child]] = kp[J[parent]] + _direction(angle) * length


def _head_and_face(rng, kp, head_angle, yaw, head_len):
    """Head ellipse (bottom at upper_neck, top at head_top), the face points on it (written
    into ``kp``), their ``face_state`` and whether the camera sees the back of the head."""
    axis, across_dir = _direction(head_angle), _direction(head_angle + np.pi / 2)
    centre = kp[J["upper_neck"]] + axis * head_len / 2
    across = 0.38 * head_len * rng.uniform(0.9, 1.1)
    head_yaw = yaw + rng.normal(0, 0.35)
    state = np.zeros(UNIFIED.num_keypoints, dtype=np.int8)
    for name, azimuth, up in FACE:
        depth = np.cos(head_yaw + azimuth)  # > 0: on the half of the head facing the camera
        kp[J[name]] = (centre + across_dir * 0.92 * across * np.sin(head_yaw + azimuth)
                       + axis * up * head_len)
        if name.endswith("ear"):
            state[J[name]] = 0 if depth > -0.25 else 1
        else:
            state[J[name]] = 0 if depth > 0.25 else (1 if depth > -0.3 else 2)
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
            colors[f"{side}_{part}"] = bgr(hue, sat, val)
            colors[f"{side}_{part}_joint"] = bgr(hue, sat, 0.55 * val)
    torso_hue = rng.uniform(75, 150) if rng.random() < 0.7 else rng.uniform(260, 290)
    colors["torso"] = bgr(torso_hue, rng.uniform(0.3, 0.75), rng.uniform(0.3, 0.75))
    skin = np.array(_SKIN[rng.integers(len(_SKIN))]) * rng.uniform(0.9, 1.1)
    colors["skin"] = tuple(int(c) for c in np.clip(skin, 0, 255))
    colors["neck"] = tuple(int(c * 0.8) for c in colors["skin"])
    hair = bgr(rng.uniform(10, 40), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.4))
    colors["head"] = hair if head_back else colors["skin"]
    for side, hue in (("left", rng.uniform(0, 15)), ("right", rng.uniform(200, 235))):
        colors[f"{side}_eye"] = colors[f"{side}_ear"] = bgr(hue, 1.0, rng.uniform(0.8, 1))
    colors["nose"] = bgr(0, 0, rng.uniform(0.0, 0.15))
    return colors
