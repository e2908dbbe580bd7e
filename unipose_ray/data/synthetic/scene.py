"""One image: its domain's background and people, placed, drawn, occluded, and the
truth about every person in it (:class:`PersonLabel`).

Each dataset is a domain of its own (backgrounds, how many people, how large, how close);
COCO and MPII draw exactly what they always drew. Feet (runs with Halpe-26) come from a
second random stream per image, after the figure is placed, so that adding them changes no
other draw: the same people stand in the same places, now with feet."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from unipose_ray.data.synthetic.config import DATASETS, SyntheticConfig
from unipose_ray.data.synthetic.drawing import (
    CODES_PER_PERSON,
    Canvas,
    background,
    draw_person,
    owner_code,
    random_shape,
)
from unipose_ray.data.synthetic.feet import add_feet
from unipose_ray.data.synthetic.figure import Figure, J, bgr, sample_figure, weighted_choice
from unipose_ray.skeleton import UNIFIED

_SEED_CODES = {"coco": 0, "mpii": 1, "aic": 2, "crowdpose": 3, "halpe26": 4, "train": 0, "val": 1}
_FEET_STREAM = 0xF007  # appended to an image's seed: the stream its feet draw from


@dataclass(frozen=True)
class PersonLabel:
    """The truth about one drawn person, on the run's skeleton (:attr:`SyntheticConfig.skeleton`:
    the 21 unified joints, then the six foot joints in runs with Halpe-26).

    Attributes:
        keypoints: ``(K, 2)`` pixel positions in the skeleton's order (also outside the image).
        visibility: ``(K,)`` COCO-style flags 0/1/2 (see :mod:`unipose_ray.data.synthetic`).
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


@dataclass(frozen=True)
class _Domain:
    backgrounds: dict[str, float]  # style -> weight
    people: tuple[float, ...]  # weight of 1, 2, 3, ... people
    log_heights: bool  # log-uniform heights (many small people) instead of large ones
    crowded: bool = False  # people stand around one spot, overlapping (CrowdPose)


_DOMAINS = {
    "coco": _Domain({"noise": 0.4, "shapes": 0.35, "stripes": 0.1, "gradient": 0.15},
                    (0.35, 0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.1), log_heights=True),
    "mpii": _Domain({"gradient": 0.45, "stripes": 0.35, "noise": 0.1, "shapes": 0.1},
                    (0.55, 0.3, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05), log_heights=False),
    "aic": _Domain({"noise": 0.3, "shapes": 0.3, "gradient": 0.2, "stripes": 0.2},
                   (0.3, 0.3, 0.2, 0.1, 0.05, 0.05, 0.05, 0.05), log_heights=True),
    "crowdpose": _Domain({"shapes": 0.4, "noise": 0.3, "stripes": 0.15, "gradient": 0.15},
                         (0.02, 0.13, 0.25, 0.25, 0.15, 0.1, 0.05, 0.05), log_heights=False,
                         crowded=True),
    "halpe26": _Domain({"noise": 0.35, "shapes": 0.3, "gradient": 0.2, "stripes": 0.15},
                       (0.4, 0.3, 0.15, 0.1, 0.05, 0.05, 0.05, 0.05), log_heights=True),
}  # fmt: skip


def image_rng(config: SyntheticConfig, dataset: str, split: str, index: int) -> np.random.Generator:
    """The generator that draws image ``index`` of ``dataset``/``split``."""
    return np.random.default_rng([config.seed, _SEED_CODES[dataset], _SEED_CODES[split], index])


def _feet_rng(config: SyntheticConfig, dataset: str, split: str, index: int) -> np.random.Generator:
    seed = [config.seed, _SEED_CODES[dataset], _SEED_CODES[split], index, _FEET_STREAM]
    return np.random.default_rng(seed)


def render_sample(
    config: SyntheticConfig, dataset: str, split: str, index: int
) -> tuple[np.ndarray, list[PersonLabel]]:
    """Draw one image: ``(H, W, 3)`` uint8 BGR and the truth of every person drawn in it,
    on ``config.skeleton``'s joints."""
    if dataset not in _DOMAINS:
        raise KeyError(f"unknown synthetic dataset '{dataset}', expected one of {DATASETS}")
    rng, domain = image_rng(config, dataset, split, index), _DOMAINS[dataset]
    lo, hi = config.image_size
    width, height = (int(s) for s in rng.integers(lo, hi + 1, 2))
    style = list(domain.backgrounds)[weighted_choice(rng, list(domain.backgrounds.values()))]
    canvas = Canvas(background(rng, width, height, style))

    num_people = 1 + weighted_choice(rng, list(domain.people[: config.max_people]))
    tallest = 0.95 * height
    if domain.log_heights:
        heights = np.exp(rng.uniform(np.log(config.min_person_height), np.log(tallest), num_people))
    else:
        heights = rng.uniform(max(config.min_person_height, 0.4 * height), tallest, num_people)
    crowd = rng.uniform(0.25 * width, 0.75 * width) if domain.crowded else None
    figures = [_place(rng, sample_figure(rng, h), width, height, config.truncation_prob, crowd)
               for h in np.sort(heights)]  # small (far) people first, so big ones overlap them
    if config.draws_feet:
        feet_rng = _feet_rng(config, dataset, split, index)
        figures = [add_feet(feet_rng, fig) for fig in figures]
    for person, fig in enumerate(figures):
        draw_person(canvas, fig, person)
    if rng.random() < config.occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            _add_occluder(rng, canvas, figures)
    if rng.random() < 0.2:
        canvas.image = cv2.GaussianBlur(canvas.image, (3, 3), 0)
    counts = np.bincount(canvas.owner.ravel(), minlength=256)
    labels = [_label(fig, person, canvas.owner, counts) for person, fig in enumerate(figures)]
    return canvas.image, labels


def _place(rng, fig: Figure, width: int, height: int, truncation_prob: float,
           crowd: float | None = None) -> Figure:
    """Move the figure into the image: fully inside when it fits, else partly outside; in a
    crowd, centred about ``crowd`` (an x in pixels; about a body width apart)."""
    x0, y0, x1, y1 = fig.body_extent()
    w, h = x1 - x0, y1 - y0
    if crowd is not None:
        left = np.clip(rng.normal(crowd, 0.9 * w), 0.2 * w, width - 0.2 * w) - w / 2
        top = rng.uniform(min(0, height - h), max(0, height - h))
    elif rng.random() < truncation_prob:
        left, top = rng.uniform(-0.5 * w, width - 0.5 * w), rng.uniform(-0.4 * h, height - 0.6 * h)
    else:
        left = rng.uniform(min(0, width - w), max(0, width - w))
        top = rng.uniform(min(0, height - h), max(0, height - h))
    return fig.shifted(np.array([left - x0, top - y0]))


def _add_occluder(rng, canvas: Canvas, figures: list[Figure]) -> None:
    """A muted shape near a random joint of a random person."""
    fig = figures[int(rng.integers(len(figures)))]
    x0, y0, x1, y1 = fig.body_extent()  # the same occluders with or without feet
    size = (y1 - y0) * rng.uniform(0.1, 0.3)
    centre = fig.keypoints[int(rng.integers(UNIFIED.num_keypoints))] + rng.normal(0, 0.3 * size, 2)
    color = bgr(rng.uniform(0, 360), rng.uniform(0, 0.5), rng.uniform(0.2, 0.9))
    random_shape(rng, canvas.image, color, centre, size, owner=canvas.owner)


def _label(fig: Figure, person: int, owner: np.ndarray, counts: np.ndarray) -> PersonLabel:
    h, w = owner.shape
    kp, state = fig.keypoints, fig.face_state
    if fig.feet is not None:  # joint k of the figure's joints is owner part k
        kp = np.concatenate([kp, fig.feet.keypoints])
        state = np.concatenate([state, fig.feet.state])
    inside = (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
    xi = np.clip(np.round(kp[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(kp[:, 1]).astype(int), 0, h - 1)
    seen = owner[yi, xi] == owner_code(person, np.arange(len(kp)))
    v = np.where(seen & (state == 0), 2, 1)
    v[~inside | (state == 2)] = 0

    x0, y0, x1, y1 = fig.extent()
    x0, x1 = np.clip([x0, x1], 0, w - 1)
    y0, y1 = np.clip([y0, y1], 0, h - 1)
    head_len = np.linalg.norm(kp[J["head_top"]] - kp[J["upper_neck"]])
    head_centre = fig.head[0]
    area = counts[owner_code(person, 0) : owner_code(person, CODES_PER_PERSON)].sum()
    return PersonLabel(
        keypoints=kp, visibility=v.astype(np.int8),
        bbox=np.array([x0, y0, x1 - x0, y1 - y0]), area=float(max(area, 1)),
        head_box=np.concatenate([head_centre - head_len / 2, head_centre + head_len / 2]),
    )  # fmt: skip

