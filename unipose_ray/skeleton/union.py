"""The unified skeleton of a run: the ordered union of its datasets' joints.

Every dataset joins through a *name table* alone (``dataset joint -> unified joint``); the
unified joints' sigmas, links and upper/lower halves come from one catalogue of canonical
joints, so a union is fully determined by its joint names, and checkpoints, exports and
cache manifests carry those names (:func:`skeleton_from_names` rebuilds it).

Correspondences, chosen once (MMPose's Body8-Halpe26 recipe makes the same calls where it
maps these datasets; ``configs/body_2d_keypoint/rtmpose/body8/``):

- AIC and CrowdPose ``neck``, Halpe ``neck`` -> ``upper_neck``: all mark the top of the neck
  under the chin, MPII's upper neck (Body8 maps all four to Halpe's ``neck``).
- AIC ``head_top``, CrowdPose ``top_head``, Halpe ``head`` -> ``head_top`` (Body8: ``head``).
- Halpe ``hip`` -> ``pelvis``: both are the point between the hip joints. Body8 drops MPII's
  pelvis and thorax only because Halpe-26 has no slot for a thorax and its converter keeps
  Halpe's list; we keep one pelvis that MPII and Halpe both supervise, and MPII's thorax.

The union lists the datasets' joints in :data:`DATASET_SETS` order (COCO, MPII, AIC,
CrowdPose, Halpe-26), whatever order a config names them in, so the same datasets always
give the same skeleton: COCO + MPII is the paper's 21 joints (COCO-17, pelvis, thorax,
upper neck, head top), and adding Halpe-26 appends its six foot joints (27).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from unipose_ray.skeleton.keypoints import (
    COCO,
    COCO_SIGMAS,
    DATASET_SETS,
    FEET,
    KeypointSet,
    _make_set,
)

UNANNOTATED = -1
"""Index-map value for a joint that has no counterpart in the other set."""

UNIFIED_NAME = "unified"
"""The name every union carries (metric names: ``unified_AP``)."""

# Canonical joints: name -> OKS sigma. MPII's 0.026 for thorax, upper neck and head top
# (MMPose's mpii.py); Halpe-26's mid-hip 0.066 for the pelvis (0.026 would make the pelvis
# stricter than the nose); Halpe-26's 0.079 for the feet.
JOINT_SIGMAS: dict[str, float] = {
    **dict(zip(COCO.names, COCO_SIGMAS)),
    "pelvis": 0.066, "thorax": 0.026, "upper_neck": 0.026, "head_top": 0.026,
    **dict.fromkeys(FEET, 0.079),
}  # fmt: skip
UPPER_BODY = frozenset(
    {"nose", "left_eye", "right_eye", "left_ear", "right_ear", "thorax", "upper_neck",
     "head_top"}
    | {f"{s}_{j}" for s in ("left", "right") for j in ("shoulder", "elbow", "wrist")}
)
_SPINE = ("pelvis", "thorax", "upper_neck", "head_top")  # linked through the joints present
_FOOT_LINKS = [(f"{side}_ankle", f"{side}_{part}") for side in ("left", "right")
               for part in ("big_toe", "small_toe", "heel")]

NAME_MAPS: dict[str, dict[str, str]] = {
    "coco": {n: n for n in COCO.names},
    "mpii": {n: n for n in DATASET_SETS["mpii"].names},
    "aic": {**{n: n for n in DATASET_SETS["aic"].names}, "neck": "upper_neck"},
    "crowdpose": {**{n: n for n in DATASET_SETS["crowdpose"].names},
                  "top_head": "head_top", "neck": "upper_neck"},
    "halpe26": {**{n: n for n in DATASET_SETS["halpe26"].names},
                "head": "head_top", "neck": "upper_neck", "hip": "pelvis"},
}
"""Dataset joint -> unified joint, for every dataset in :data:`DATASET_SETS`."""


def union_names(datasets: Iterable[str]) -> tuple[str, ...]:
    """The unified joint names of ``datasets``: each dataset's joints in its own order,
    datasets in :data:`DATASET_SETS` order, a joint listed once."""
    chosen = set(datasets)
    unknown = chosen - set(DATASET_SETS)
    if unknown:
        raise KeyError(f"unknown dataset(s) {sorted(unknown)}; known datasets: "
                       f"{list(DATASET_SETS)}")
    names: list[str] = []
    for dataset in DATASET_SETS:
        if dataset in chosen:
            names += [n for n in (NAME_MAPS[dataset][j] for j in DATASET_SETS[dataset].names)
                      if n not in names]
    return tuple(names)


@lru_cache(maxsize=None)
def skeleton_from_names(names: tuple[str, ...]) -> KeypointSet:
    """The unified :class:`KeypointSet` with these joints in this order: sigmas, halves and
    links from the catalogue (COCO's links, the spine through the joints present, the feet).

    Raises:
        ValueError: a name that is no canonical joint.
    """
    names = tuple(names)
    unknown = [n for n in names if n not in JOINT_SIGMAS]
    if unknown:
        raise ValueError(f"{unknown} are not joints of any unified skeleton; the joints are "
                         f"{list(JOINT_SIGMAS)}")
    spine = [j for j in _SPINE if j in names]
    links = [(COCO.names[a], COCO.names[b]) for a, b in COCO.links]
    links += [(h, "pelvis") for h in ("left_hip", "right_hip")] if "pelvis" in names else []
    links += list(zip(spine, spine[1:])) + _FOOT_LINKS
    return _make_set(UNIFIED_NAME, list(names), [JOINT_SIGMAS[n] for n in names],
                     [(a, b) for a, b in links if a in names and b in names],
                     set(names) & UPPER_BODY)


def unified_skeleton(datasets: Iterable[str]) -> KeypointSet:
    """The ordered union of ``datasets``' joints (see the module docstring)."""
    return skeleton_from_names(union_names(datasets))


UNIFIED = unified_skeleton(("coco", "mpii"))
"""The paper's 21 joints: COCO-17, then pelvis, thorax, upper neck and head top."""


@dataclass(frozen=True)
class DatasetMapping:
    """Index maps between one dataset's keypoint set and a unified one.

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


@lru_cache(maxsize=None)
def mapping_for(dataset: str, skeleton: KeypointSet = UNIFIED) -> DatasetMapping:
    """The :class:`DatasetMapping` of a dataset (or ``unified``: the skeleton's own joints,
    as generated files annotate them) onto ``skeleton``.

    Raises:
        KeyError: an unknown dataset name.
        ValueError: a dataset with joints the skeleton lacks (a union that left it out).
    """
    if dataset == UNIFIED_NAME:
        return build_mapping(skeleton, {n: n for n in skeleton.names}, skeleton)
    if dataset not in DATASET_SETS:
        raise KeyError(f"unknown dataset '{dataset}'; registered keypoint sets: "
                       f"{sorted(KEYPOINT_SETS)}")
    return build_mapping(DATASET_SETS[dataset], NAME_MAPS[dataset], skeleton)


def set_mapping(keypoints: KeypointSet, skeleton: KeypointSet = UNIFIED) -> DatasetMapping:
    """The mapping of a model's keypoint set (a dataset's, or a union) onto ``skeleton``,
    by joint name.

    Raises:
        ValueError: a joint ``skeleton`` does not have.
    """
    if keypoints.name in NAME_MAPS and keypoints == DATASET_SETS[keypoints.name]:
        return mapping_for(keypoints.name, skeleton)
    return build_mapping(keypoints, {n: n for n in keypoints.names}, skeleton)


def covering_skeleton(keypoints: KeypointSet, datasets: Iterable[str]) -> KeypointSet:
    """The skeleton to evaluate a model predicting ``keypoints`` on ``datasets``: the union
    of those datasets and of the datasets whose joints the model has, in the order every
    run and generated file uses (:func:`unified_skeleton`). A model with joints no such
    union has keeps its own order, the datasets' other joints after it."""
    own = _canonical_names(keypoints)
    covered = [d for d, ks in DATASET_SETS.items()
               if {NAME_MAPS[d][n] for n in ks.names} <= set(own)]
    canonical = unified_skeleton([*covered, *datasets])
    if set(own) <= set(canonical.names):
        return canonical
    extra = [n for n in union_names(datasets) if n not in own]
    return skeleton_from_names(tuple(own) + tuple(extra))


def _canonical_names(keypoints: KeypointSet) -> list[str]:
    """A keypoint set's joints under their unified names."""
    if keypoints.name in DATASET_SETS and keypoints == DATASET_SETS[keypoints.name]:
        return [NAME_MAPS[keypoints.name][n] for n in keypoints.names]
    return list(keypoints.names)


KEYPOINT_SETS: dict[str, KeypointSet] = {**DATASET_SETS, UNIFIED_NAME: UNIFIED}
"""Every dataset's keypoint set, and the paper's unified 21 (a run's union may differ:
:func:`unified_skeleton`)."""


def keypoint_set_for(dataset: str, skeleton: KeypointSet = UNIFIED) -> KeypointSet:
    """What a model trained for ``dataset`` predicts: the dataset's joints, or ``skeleton``
    for ``unified``."""
    return skeleton if dataset == UNIFIED_NAME else DATASET_SETS[dataset]


def keypoint_set_named(names: Sequence[str]) -> tuple[str, KeypointSet]:
    """``(dataset, keypoint set)`` whose joints are exactly ``names``, in this order: a
    dataset's own set, or a union (``unified``); what a checkpoint's ``dataset_meta``
    names.

    Raises:
        ValueError: names that are neither.
    """
    names = tuple(names)
    for dataset, keypoints in DATASET_SETS.items():
        if keypoints.names == names:
            return dataset, keypoints
    return UNIFIED_NAME, skeleton_from_names(names)


def keypoint_set_of(num_keypoints: int) -> str:
    """The keypoint set a model with ``num_keypoints`` outputs predicts, for models that
    carry no joint names (21 unified, 17 coco, 16 mpii).

    Raises:
        ValueError: a count no single set has (AIC and CrowdPose both have 14).
    """
    sets = {"coco": COCO, "mpii": DATASET_SETS["mpii"], UNIFIED_NAME: UNIFIED}
    by_count = {ks.num_keypoints: name for name, ks in sets.items()}
    if num_keypoints not in by_count:
        raise ValueError(f"the model predicts {num_keypoints} keypoints and carries no joint "
                         f"names; without them only {sorted(by_count)} ({', '.join(sets)}) "
                         "are known")
    return by_count[num_keypoints]
