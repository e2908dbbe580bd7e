"""The joint tables of the datasets: names, flip pairs, OKS sigmas, skeleton links.

A :class:`KeypointSet` is one dataset's joints in the dataset's own order, as MMPose's
``configs/_base_/datasets/<name>.py`` defines them (tests/data/test_skeleton.py compares
each table with MMPose's ``dataset_info``). :mod:`unipose_ray.skeleton.union` joins them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class KeypointSet:
    """The joints of one dataset (or of the unified skeleton).

    Attributes:
        name: short dataset name, e.g. ``"coco"``.
        names: joint names in the dataset's own order.
        flip_pairs: index pairs swapped by a horizontal flip.
        sigmas: per-joint OKS sigmas (COCO convention, already divided by 10).
        links: index pairs drawn as limbs.
        upper_body: names of the joints MMPose's half-body augmentation calls "upper".
    """

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    links: tuple[tuple[int, int], ...]
    upper_body: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        k = len(self.names)
        if len(set(self.names)) != k:
            raise ValueError(f"{self.name}: joint names must be unique, got {self.names}")
        if len(self.sigmas) != k:
            raise ValueError(f"{self.name}: {len(self.sigmas)} sigmas for {k} joints")
        for a, b in (*self.flip_pairs, *self.links):
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"{self.name}: pair ({a}, {b}) out of range for {k} joints")
        unknown = self.upper_body - set(self.names)
        if unknown:
            raise ValueError(f"{self.name}: upper_body names {sorted(unknown)} are not joints")

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def index(self, joint: str) -> int:
        return self.names.index(joint)

    @cached_property
    def flip_permutation(self) -> np.ndarray:
        """``(K,)`` int array: joint ``k`` of a flipped sample is joint ``perm[k]`` before."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @cached_property
    def upper_body_mask(self) -> np.ndarray:
        """``(K,)`` bool array, True for upper-body joints."""
        return np.array([n in self.upper_body for n in self.names])

    def dataset_meta(self) -> dict:
        """MMPose-style ``dataset_meta`` (what ``CocoMetric`` and checkpoints carry)."""
        return {
            "dataset_name": self.name,
            "num_keypoints": self.num_keypoints,
            "keypoint_id2name": dict(enumerate(self.names)),
            "keypoint_name2id": {n: i for i, n in enumerate(self.names)},
            "flip_indices": self.flip_permutation.tolist(),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "sigmas": np.asarray(self.sigmas, dtype=np.float32),
            "skeleton_links": [list(p) for p in self.links],
            "upper_body_ids": np.flatnonzero(self.upper_body_mask).tolist(),
            "lower_body_ids": np.flatnonzero(~self.upper_body_mask).tolist(),
        }


def _pairs(names: tuple[str, ...], named: list[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    return tuple((names.index(a), names.index(b)) for a, b in named)


def _mirror_pairs(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """Flip pairs from ``left_*`` / ``right_*`` names (every other joint is self-symmetric)."""
    pairs = []
    for i, n in enumerate(names):
        if n.startswith("left_") and f"right_{n[5:]}" in names:
            pairs.append((i, names.index(f"right_{n[5:]}")))
    return tuple(pairs)


def _make_set(
    name: str,
    names: list[str],
    sigmas: list[float],
    links: list[tuple[str, str]],
    upper_body: set[str],
) -> KeypointSet:
    names_t = tuple(names)
    return KeypointSet(
        name=name,
        names=names_t,
        flip_pairs=_mirror_pairs(names_t),
        sigmas=tuple(sigmas),
        links=_pairs(names_t, links),
        upper_body=frozenset(upper_body),
    )


_FACE = {"nose", "left_eye", "right_eye", "left_ear", "right_ear"}
_ARMS = {f"{s}_{j}" for s in ("left", "right") for j in ("shoulder", "elbow", "wrist")}
_LIMB_LINKS = [
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"),
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
]  # fmt: skip

COCO_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
COCO_SIGMAS = [
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
]  # fmt: skip

COCO = _make_set(
    "coco",
    COCO_NAMES,
    COCO_SIGMAS,
    _LIMB_LINKS
    + [
        ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
        ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
        ("left_eye", "right_eye"), ("nose", "left_eye"), ("nose", "right_eye"),
        ("left_eye", "left_ear"), ("right_eye", "right_ear"),
        ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
    ],
    _FACE | _ARMS,
)  # fmt: skip

MPII = _make_set(
    "mpii",
    [
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "pelvis", "thorax", "upper_neck", "head_top",
        "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
        "left_wrist",
    ],
    # MMPose's configs/_base_/datasets/mpii.py
    [
        0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026,
        0.062, 0.072, 0.179, 0.179, 0.072, 0.062,
    ],
    _LIMB_LINKS
    + [
        ("right_hip", "pelvis"), ("left_hip", "pelvis"), ("pelvis", "thorax"),
        ("thorax", "upper_neck"), ("upper_neck", "head_top"),
        ("right_shoulder", "thorax"), ("left_shoulder", "thorax"),
    ],
    _ARMS | {"thorax", "upper_neck", "head_top"},
)  # fmt: skip

AIC = _make_set(
    "aic",
    [
        "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
        "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
        "left_ankle", "head_top", "neck",
    ],
    # MMPose's configs/_base_/datasets/aic.py
    [
        0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144,
        0.03909642, 0.03686941, 0.01981803, 0.03843971, 0.03412318, 0.02415081,
        0.01291456, 0.01236173,
    ],
    _LIMB_LINKS + [("head_top", "neck"), ("right_shoulder", "neck"), ("left_shoulder", "neck")],
    _ARMS | {"head_top", "neck"},
)  # fmt: skip
"""AI Challenger (14 joints): limbs, head top and neck (the top of the neck, under the chin)."""

CROWDPOSE = _make_set(
    "crowdpose",
    [
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
        "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
        "right_ankle", "top_head", "neck",
    ],
    # MMPose's configs/_base_/datasets/crowdpose.py
    [0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
     0.079, 0.079],
    [
        ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
        ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
        ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
        ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
        ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("top_head", "neck"),
        ("right_shoulder", "neck"), ("left_shoulder", "neck"),
    ],
    _ARMS | {"top_head", "neck"},
)  # fmt: skip
"""CrowdPose (14 joints): the COCO limbs (left first), top of the head and neck."""

FEET = [f"{side}_{part}" for part in ("big_toe", "small_toe", "heel")
        for side in ("left", "right")]

HALPE26 = _make_set(
    "halpe26",
    COCO_NAMES + ["head", "neck", "hip"] + FEET,
    # MMPose's configs/_base_/datasets/halpe26.py
    COCO_SIGMAS + [0.026, 0.026, 0.066] + [0.079] * 6,
    [
        ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("left_hip", "hip"),
        ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "hip"),
        ("head", "neck"), ("neck", "hip"), ("neck", "left_shoulder"),
        ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
        ("neck", "right_shoulder"), ("right_shoulder", "right_elbow"),
        ("right_elbow", "right_wrist"), ("left_eye", "right_eye"), ("nose", "left_eye"),
        ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
        ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
        ("left_ankle", "left_big_toe"), ("left_ankle", "left_small_toe"),
        ("left_ankle", "left_heel"), ("right_ankle", "right_big_toe"),
        ("right_ankle", "right_small_toe"), ("right_ankle", "right_heel"),
    ],
    _FACE | _ARMS | {"head", "neck"},
)  # fmt: skip
"""Halpe-26 (26 body joints): COCO-17, head, neck, hip (mid-hip), big/small toes, heels.
Halpe-FullBody files hold 136 joints per person; these are its first 26 (MMPose's
``KeypointConverter`` in the Body8 recipe keeps the same)."""

DATASET_SETS: dict[str, KeypointSet] = {
    ks.name: ks for ks in (COCO, MPII, AIC, CROWDPOSE, HALPE26)
}
"""Every dataset this product reads, in the order unions list their joints."""

