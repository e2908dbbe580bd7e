"""Keypoint sets as data, and the declarative union that forms the unified skeleton.

A :class:`KeypointSet` is a dataset's joints: names, flip pairs, OKS sigmas, skeleton links.
The unified 21-keypoint skeleton is COCO-17 followed by the four MPII spine/head joints.
Every dataset joins it through a *name-mapping table* alone (``dataset joint -> unified
joint``); index maps in both directions are derived from that table, so adding a dataset
means writing its :class:`KeypointSet` and one dict, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

UNANNOTATED = -1
"""Index-map value for a joint that has no counterpart in the other set."""


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
"""AI Challenger (14 joints): the third real keypoint set, joined by a name table only."""

# The unified skeleton: COCO order, then the MPII spine/head joints (the paper authors' order).
# Sigmas for the four extra joints: MPII's 0.026 for thorax/neck/head top (MMPose's
# configs/_base_/datasets/mpii.py), and Halpe-26's hip value 0.066 for the pelvis
# (.../halpe26.py; 0.026 would make the pelvis stricter than the nose).
UNIFIED = _make_set(
    "unified",
    COCO_NAMES + ["pelvis", "thorax", "upper_neck", "head_top"],
    COCO_SIGMAS + [0.066, 0.026, 0.026, 0.026],
    [(COCO_NAMES[a], COCO_NAMES[b]) for a, b in COCO.links]
    + [
        ("left_hip", "pelvis"), ("right_hip", "pelvis"), ("pelvis", "thorax"),
        ("thorax", "upper_neck"), ("upper_neck", "head_top"),
    ],
    _FACE | _ARMS | {"thorax", "upper_neck", "head_top"},
)  # fmt: skip


# --- The union: dataset joint name -> unified joint name. Nothing else is needed. --------

NAME_MAPS: dict[str, dict[str, str]] = {
    "coco": {n: n for n in COCO.names},
    "mpii": {n: n for n in MPII.names},
    # AI Challenger's "neck" is the top of the neck (it sits just under the chin), which
    # is MPII's upper_neck; AIC has no face, thorax or pelvis.
    "aic": {**{n: n for n in AIC.names if n != "neck"}, "neck": "upper_neck"},
    # Files that annotate the whole unified skeleton (generated data's evaluation files).
    "unified": {n: n for n in UNIFIED.names},
}

KEYPOINT_SETS: dict[str, KeypointSet] = {"coco": COCO, "mpii": MPII, "aic": AIC,
                                         "unified": UNIFIED}


@dataclass(frozen=True)
class DatasetMapping:
    """Index maps between one dataset's keypoint set and the unified one.

    Attributes:
        source: the dataset's keypoint set.
        target: the unified keypoint set.
        to_unified: ``(K_src,)``: unified index of each dataset joint.
        from_unified: ``(K_uni,)``: dataset index of each unified joint, or -1.
    """

    source: KeypointSet
    target: KeypointSet
    to_unified: np.ndarray
    from_unified: np.ndarray

    @property
    def annotated(self) -> np.ndarray:
        """``(K_uni,)`` bool: the unified joints this dataset annotates."""
        return self.from_unified != UNANNOTATED

    @property
    def unified_indices(self) -> np.ndarray:
        """``(K_src,)`` unified indices in dataset order (what ``index_select`` takes)."""
        return self.to_unified

    def keypoints_to_unified(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter ``(..., K_src)`` or ``(..., K_src, 2)`` values onto unified slots."""
        values = np.asarray(values)
        axis = _joint_axis(values, self.source.num_keypoints)
        shape = list(values.shape)
        shape[axis] = self.target.num_keypoints
        out = np.full(shape, fill, dtype=values.dtype)
        index = [slice(None)] * values.ndim
        index[axis] = self.to_unified
        out[tuple(index)] = values
        return out

    def keypoints_from_unified(self, values: np.ndarray) -> np.ndarray:
        """Gather ``(..., K_uni)`` or ``(..., K_uni, 2)`` unified values into dataset order."""
        values = np.asarray(values)
        axis = _joint_axis(values, self.target.num_keypoints)
        return np.take(values, self.to_unified, axis=axis)


def _joint_axis(values: np.ndarray, k: int) -> int:
    """The joint axis by layout: ``(..., K, 2)`` coordinates use -2, anything else -1."""
    axis = -2 if values.ndim >= 2 and values.shape[-1] == 2 and values.shape[-2] == k else -1
    if values.shape[axis] != k:
        raise ValueError(f"expected joints (length {k}) on the last axis, or before a "
                         f"trailing (x, y) axis; got an array of shape {values.shape}")
    return axis


def build_mapping(
    source: KeypointSet, name_map: dict[str, str], target: KeypointSet = UNIFIED
) -> DatasetMapping:
    """Derive both index maps from a ``source joint -> target joint`` name table.

    Raises:
        ValueError: if the table misses a source joint, names a joint that does not exist,
            or sends two source joints to the same target joint.
    """
    missing = [n for n in source.names if n not in name_map]
    if missing:
        raise ValueError(
            f"the name map for '{source.name}' has no entry for {missing}; map each joint to "
            f"one of the unified joints {list(target.names)}"
        )
    unknown = {s: t for s, t in name_map.items() if t not in target.names}
    if unknown:
        raise ValueError(
            f"'{source.name}' joints map to names the {target.name} skeleton does not have: "
            f"{unknown}; the unified joints are {list(target.names)}"
        )
    to_unified = np.array([target.index(name_map[n]) for n in source.names])
    if len(set(to_unified.tolist())) != len(to_unified):
        raise ValueError(f"'{source.name}': two joints map to the same unified joint")
    from_unified = np.full(target.num_keypoints, UNANNOTATED)
    from_unified[to_unified] = np.arange(source.num_keypoints)
    return DatasetMapping(source, target, to_unified, from_unified)


def mapping_for(dataset: str) -> DatasetMapping:
    """The :class:`DatasetMapping` of a registered dataset name (``coco``, ``mpii``, ``aic``)."""
    if dataset not in KEYPOINT_SETS:
        raise KeyError(
            f"unknown dataset '{dataset}'; registered keypoint sets: {sorted(KEYPOINT_SETS)}"
        )
    return _MAPPINGS[dataset]


_MAPPINGS = {name: build_mapping(ks, NAME_MAPS[name]) for name, ks in KEYPOINT_SETS.items()}


def keypoint_set_of(num_keypoints: int) -> str:
    """The keypoint set a model with ``num_keypoints`` outputs predicts (21 unified,
    17 coco, 16 mpii)."""
    by_count = {ks.num_keypoints: name for name, ks in KEYPOINT_SETS.items()}
    if num_keypoints not in by_count:
        raise ValueError(f"the model predicts {num_keypoints} keypoints; known keypoint sets "
                         f"have {sorted(by_count)} ({', '.join(sorted(KEYPOINT_SETS))})")
    return by_count[num_keypoints]
