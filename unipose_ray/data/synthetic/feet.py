"""Feet: big toe, small toe and heel of each foot, for runs whose skeleton has them.

A foot lies on the ground, roughly at right angles to the shin, pointing where the person
faces (the figure's yaw) turned out by a few degrees per foot. It is projected like the
rest of the figure: its screen-horizontal part follows the yaw (a side view shows its
length, a front view its width), and points nearer the camera sit lower on the screen (the
camera looks slightly down), so a foot pointing at the camera shows its toes below its heel.

Lengths are in foot lengths ``L`` (0.15 of the person's height): the sole is ``0.3 L``
below the ankle along the shin; the heel ``0.2 L`` behind the ankle, the big toe ``0.78 L``
ahead on the inner side, the small toe ``0.62 L`` ahead on the outer side.

Self-occlusion (labelled but hidden, ``v = 1``, no disc drawn), like the face points: a
foot pointing at the camera (``cos(yaw) > 0.7``, within 45 degrees) hides its heel, one
pointing away (``cos(yaw) < -0.7``) its toes. Everything else (other people, the other leg,
occluders) is decided by the owner map like any joint.

Drawing (:func:`unipose_ray.data.synthetic.drawing.draw_person`): a shoe in a shade of its
leg's colour (left warm, right cool) right after the leg, and three discs of that hue told
apart by saturation and value: big toe pale, small toe vivid, heel dark in a white ring.
"""

from __future__ import annotations

import colorsys
from dataclasses import replace

import cv2
import numpy as np

from unipose_ray.data.synthetic.figure import Feet, Figure, J, bgr
from unipose_ray.skeleton import DATASET_SETS, UNIFIED, unified_skeleton
from unipose_ray.skeleton.keypoints import FEET

FIGURE_JOINTS = unified_skeleton(DATASET_SETS)
"""Every joint a figure can carry: the 21 unified joints, then the feet in Halpe order."""
if FIGURE_JOINTS.names != UNIFIED.names + tuple(FEET):  # labels concatenate the two
    raise ImportError(f"the union of all datasets must be the 21 unified joints then {FEET}, "
                      f"got {FIGURE_JOINTS.names}")

_SOLE, _HIDES = 0.3, 0.7  # sole below the ankle (foot lengths); |cos(yaw)| that hides points
_POINTS = {"big_toe": (0.78, -0.2), "small_toe": (0.62, 0.22), "heel": (-0.2, 0.0)}
# (forward, outward) in foot lengths; the shoe is the convex hull of these and the ankle
_SHOE = ((-0.28, -0.16), (-0.28, 0.16), (0.2, 0.25), (0.7, 0.28), (0.86, 0.02), (0.8, -0.24),
         (0.2, -0.22))  # fmt: skip


def add_feet(rng: np.random.Generator, fig: Figure) -> Figure:
    """``fig`` with feet at its ankles, drawn from ``rng`` (a stream of their own: the rest
    of the figure and the image do not depend on whether feet are drawn)."""
    keypoints, state = np.zeros((len(FEET), 2)), np.zeros(len(FEET), dtype=np.int8)
    shoes, colors = [], {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        yaw = fig.yaw + sign * rng.normal(0.3, 0.2)  # turned out (sometimes in) from the body
        length = 0.15 * fig.height * rng.uniform(0.9, 1.1)
        place = _projector(fig, side, sign, yaw, length)
        for point, (forward, outward) in _POINTS.items():
            k = FEET.index(f"{side}_{point}")
            keypoints[k] = place(forward, outward)
            hidden = np.cos(yaw) < -_HIDES if point != "heel" else np.cos(yaw) > _HIDES
            state[k] = int(hidden)
        outline = np.array([place(f, o) for f, o in _SHOE] + [fig.keypoints[J[f"{side}_ankle"]]])
        shoes.append(cv2.convexHull(outline.astype(np.float32))[:, 0].astype(float))
        colors |= _foot_colors(rng, side, fig.colors[f"{side}_leg"])
    return replace(fig, feet=Feet(keypoints, state, (shoes[0], shoes[1]), colors))


def _projector(fig: Figure, side: str, sign: float, yaw: float, length: float):
    """``(forward, outward) -> (2,)`` screen point of a foot (foot lengths, see the module)."""
    ankle, knee = fig.keypoints[J[f"{side}_ankle"]], fig.keypoints[J[f"{side}_knee"]]
    shin = ankle - knee
    down = shin / max(float(np.linalg.norm(shin)), 1e-6)
    across = np.array([down[1], -down[0]])  # screen right for a shin pointing down

    def place(forward: float, outward: float) -> np.ndarray:
        lateral = sign * outward  # along the person's left
        x = np.sin(yaw) * forward + np.cos(yaw) * lateral  # yaw 0: facing the camera
        away = -np.cos(yaw) * forward + np.sin(yaw) * lateral  # depth, away from the camera
        return ankle + length * (across * x + down * (_SOLE - 0.25 * away))

    return place


def _foot_colors(rng: np.random.Generator, side: str, leg_bgr) -> dict[str, tuple[int, int, int]]:
    b, g, r = (c / 255 for c in leg_bgr)
    hue = colorsys.rgb_to_hsv(r, g, b)[0] * 360
    return {f"{side}_shoe": bgr(hue, rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.4)),
            f"{side}_big_toe": bgr(hue, 0.3, 1.0),
            f"{side}_small_toe": bgr(hue, 1.0, 1.0),
            f"{side}_heel": bgr(hue, 1.0, 0.45)}
