"""The loss's per-dataset pieces on a union of three datasets (COCO + MPII + Halpe-26).

Each teacher's KD term reaches the student channels of its own joints by name, the GT
mask follows each sample's dataset, and a flip swaps the new joints' sides too.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from unipose_ray.config import DistillConfig, StudentConfig, TeacherConfig
from unipose_ray.data.records import InstanceRecord
from unipose_ray.data.transforms import CropParams, transform_keypoints
from unipose_ray.skeleton import DATASET_SETS, NAME_MAPS, mapping_for, unified_skeleton
from unipose_ray.train.data import DATASET_CODES
from unipose_ray.train.kd_step import annotated_table, kd_joint_weights, teacher_terms

BODY = unified_skeleton(["coco", "mpii", "halpe26"])
FEET = [BODY.index(f"{s}_{p}") for s in ("left", "right") for p in ("big_toe", "small_toe", "heel")]


def _config() -> DistillConfig:
    teachers = tuple(TeacherConfig(name=f"t_{d}", dataset=d, weight=0.1)
                     for d in ("coco", "mpii", "halpe26"))
    return DistillConfig(student=StudentConfig("t"), teachers=teachers)


def test_each_teacher_term_reaches_its_joints_by_name():
    config = _config()
    assert config.skeleton == BODY and config.student_keypoints == BODY
    for term, teacher in zip(teacher_terms(config), config.teachers, strict=True):
        names = DATASET_SETS[teacher.dataset].names
        assert [BODY.names[c] for c in term.student_indices] == [
            NAME_MAPS[teacher.dataset][n] for n in names]
    halpe = teacher_terms(config)[2]
    assert set(FEET) <= set(halpe.student_indices)
    assert BODY.index("thorax") not in halpe.student_indices  # Halpe-26 has none


def test_the_gt_mask_follows_each_samples_dataset():
    table = annotated_table(BODY)
    for dataset in ("coco", "mpii", "halpe26"):
        np.testing.assert_array_equal(table[DATASET_CODES[dataset]],
                                      mapping_for(dataset, BODY).annotated)
    assert not table[DATASET_CODES["coco"], FEET].any()
    assert table[DATASET_CODES["halpe26"], FEET].all()


def test_own_unlabelled_keeps_kd_on_the_feet_of_coco_and_mpii_images():
    codes = torch.tensor([DATASET_CODES[d] for d in ("coco", "mpii", "halpe26")])
    weights = torch.zeros(3, BODY.num_keypoints)  # nothing labelled on any sample
    masked = kd_joint_weights(codes, weights, "own_unlabelled", "unified", BODY)
    for i, dataset in enumerate(("coco", "mpii", "halpe26")):
        # every joint the sample's dataset annotates is masked (unlabelled), the rest kept
        np.testing.assert_array_equal(masked[i].numpy(),
                                      (~mapping_for(dataset, BODY).annotated).astype(np.float32))
    assert (masked[:2, FEET] == 1).all() and (masked[2, FEET] == 0).all()


def test_a_flip_swaps_the_feet():
    k = BODY.num_keypoints
    keypoints = np.tile(np.arange(k, dtype=np.float32)[:, None], (1, 2)) + 10
    record = InstanceRecord("x.jpg", "halpe26", 1, 1, 200, 200,
                            np.array([0, 0, 100, 100], np.float32), keypoints,
                            np.ones(k, np.float32), np.ones(k, bool), None, 1.0)
    params = CropParams(center=(50.0, 50.0), scale=(100.0, 100.0), flip=True,
                        input_size=(100, 100))
    flipped, _, _ = transform_keypoints(record, params, BODY)
    plain, _, _ = transform_keypoints(record, replace(params, flip=False), BODY)
    for side, other in (("left", "right"), ("right", "left")):
        for part in ("big_toe", "small_toe", "heel"):
            a, b = BODY.index(f"{side}_{part}"), BODY.index(f"{other}_{part}")
            # the slot of one foot's joint holds the other foot's, mirrored (same height)
            assert flipped[a, 1] == plain[b, 1] and flipped[a, 0] != plain[b, 0]
