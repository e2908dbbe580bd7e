"""Drawing: the canvas with its owner map (who drew each pixel last, which decides
visibility), a person back to front, backgrounds and occluder shapes."""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np

from unipose_ray.data.synthetic.feet import FIGURE_JOINTS
from unipose_ray.data.synthetic.figure import FACE, LIMB_CHAINS, Figure, J, bgr
from unipose_ray.skeleton.keypoints import FEET

_SPINE = ("pelvis", "thorax", "upper_neck", "head_top")
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing


class Canvas:
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
# occluder, or another part of the same person). Joint k of FIGURE_JOINTS (the feet after
# the 21) has part k; 8 people use codes 1-232.
_BODY, _HEAD = FIGURE_JOINTS.num_keypoints, FIGURE_JOINTS.num_keypoints + 1  # after the joints
CODES_PER_PERSON = FIGURE_JOINTS.num_keypoints + 2
_OCCLUDER_CODE = 255
_FOOT_PART = {name: FIGURE_JOINTS.index(name) for name in FEET}


def owner_code(person: int, part: int) -> int:
    """Owner value of ``part`` (an index into the figure's joints, ``_BODY`` or ``_HEAD``)
    of ``person``."""
    return 1 + CODES_PER_PERSON * person + part


def draw_person(canvas: Canvas, fig: Figure, person: int) -> None:
    """Back to front: far leg (and far arm in side views), near leg (each leg with its shoe
    when the figure has feet), torso, neck, head and face, arms, then all joint discs on top
    so that every labelled-visible joint is seen."""
    kp, t, col, body = fig.keypoints, fig.thickness, fig.colors, owner_code(person, _BODY)

    def limb(side: str, part: int) -> None:
        chain = LIMB_CHAINS[side][part]
        name = f"{side}_{('arm', 'leg')[part]}"
        for a, b in pairwise(chain):
            canvas.line(kp[J[a]], kp[J[b]], col[name], int(t * (1.25 if part else 1.0)), body)
        if part and fig.feet is not None:  # the shoe with its leg, under what is nearer
            shoe = fig.feet.shoes[("left", "right").index(side)]
            color = fig.feet.colors[f"{side}_shoe"]
            canvas.polygon(shoe, color, body)
            for p, q in pairwise([*shoe, shoe[0]]):  # a rim: a foot seen end-on stays visible
                canvas.line(p, q, color, max(2, int(0.5 * t)), body)

    near = "right" if fig.far_side == "left" else "left"
    limb(fig.far_side, 1)
    if fig.side_view:
        limb(fig.far_side, 0)
    limb(near, 1)
    canvas.polygon(fig.torso, col["torso"], body)
    canvas.line(kp[J["thorax"]], kp[J["upper_neck"]], col["neck"], max(2, int(t * 1.1)), body)
    centre, axes, angle = fig.head
    canvas.ellipse(centre, axes, angle, col["head"], owner_code(person, _HEAD))
    for name, _, _ in FACE:
        if fig.face_state[J[name]] == 0:
            radius = axes[1] * (0.2 if name.endswith("ear") else 0.13)
            canvas.circle(kp[J[name]], max(1.5, radius), col[name], owner_code(person, J[name]))
    if not fig.side_view:
        limb(fig.far_side, 0)
    limb(near, 0)
    for side in ("left", "right"):
        for part, chain in enumerate(LIMB_CHAINS[side]):
            for name in chain:
                color = col[f"{side}_{('arm', 'leg')[part]}_joint"]
                canvas.circle(kp[J[name]], max(1.5, 0.75 * t), color, owner_code(person, J[name]))
    if fig.feet is not None:
        _foot_discs(canvas, fig, person)
    for name in _SPINE:
        canvas.circle(kp[J[name]], max(2.0, 0.45 * t + 1), (0, 0, 0), owner_code(person, J[name]))
        canvas.circle(kp[J[name]], max(1.0, 0.45 * t), (255, 255, 255), owner_code(person, J[name]))


def _foot_discs(canvas: Canvas, fig: Figure, person: int) -> None:
    """The foot joints a camera sees (not hidden by their own foot), smaller than the ankle's;
    the heel in a white ring, so that it differs from the ankle by more than its place."""
    feet, radius = fig.feet, max(1.5, 0.45 * fig.thickness)
    for k, name in enumerate(FEET):
        if feet.state[k] == 0:
            code = owner_code(person, _FOOT_PART[name])
            if name.endswith("heel"):
                canvas.circle(feet.keypoints[k], radius + 1, (255, 255, 255), code)
            canvas.circle(feet.keypoints[k], radius, feet.colors[name], code)


def background(rng: np.random.Generator, width: int, height: int, style: str) -> np.ndarray:
    """A textured backdrop in muted colours (people are drawn saturated)."""

    def muted() -> tuple[int, int, int]:
        return bgr(rng.uniform(0, 360), rng.uniform(0, 0.55), rng.uniform(0.15, 0.9))

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
            random_shape(rng, image, muted(), centre, rng.uniform(0.05, 0.3) * min(width, height))
    return image


def random_shape(rng, image, color, centre, size: float, owner=None) -> None:
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
