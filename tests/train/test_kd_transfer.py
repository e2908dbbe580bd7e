"""The KD terms reach the joints the sample's own dataset does not annotate.

That is the method: on an MPII image the COCO teacher supplies the face joints the MPII
label lacks; on a COCO image the MPII teacher supplies pelvis, thorax, upper neck and head
top. Checked on real COCO and MPII crops from the training stream, real (randomly
initialised) RTMPose teachers served as in training, and the student's loss as the loop
builds it (``teacher_terms``, ``kd_joint_weights``, ``distillation_loss``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import DEMO_CODEC

from unipose_ray.config import DistillConfig, LossConfig, StudentConfig
from unipose_ray.data.pipeline import PipelineConfig
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.records import write_records
from unipose_ray.data.transforms import AugmentConfig, size_key
from unipose_ray.kd.losses import SimCCTargets, distillation_loss
from unipose_ray.models import build_rtmpose
from unipose_ray.skeleton import UNIFIED
from unipose_ray.teachers.service import StudentGrid, TeacherService
from unipose_ray.train.data import DATASET_CODES, CropStage, StreamSpec
from unipose_ray.train.kd_step import kd_joint_weights, teacher_terms

STUDENT = DEMO_CODEC
MPII_TEACHER_SIZE = (64, 64)  # the random_teachers fixture's (the student's for COCO)
FACE = [UNIFIED.index(n) for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
HEAD_TOP = UNIFIED.index("head_top")


@pytest.fixture(scope="module")
def setup(real_samples, random_teachers, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kd_transfer")
    records = (read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco")
               + read_mpii(real_samples / "mpii" / "test_mpii.json", real_samples / "mpii"))
    path = write_records(records, tmp / "train.parquet")
    teachers = [replace(random_teachers[name], weight=0.5) for name in ("coco", "mpii")]
    spec = StreamSpec(str(path), PipelineConfig(STUDENT, AugmentConfig.none(), seed=0),
                      (MPII_TEACHER_SIZE,))
    batch = CropStage(spec)({"id": np.arange(len(records))})
    return teachers, batch


def _loss_and_grads(setup, loss_config: LossConfig, sample: int):
    """The loop's loss on one sample; returns the terms and d(term)/d(student logits)."""
    teachers, batch = setup
    config = DistillConfig(student=StudentConfig("t", codec=STUDENT), teachers=tuple(teachers),
                           loss=loss_config)
    grid = StudentGrid(STUDENT.num_bins, STUDENT.split_ratio)
    outputs = {}
    for teacher in teachers:
        service = TeacherService(teacher, grid, device="cpu")
        key = "student" if teacher.name == "coco" else size_key(MPII_TEACHER_SIZE)
        images = batch["image"] if key == "student" else batch[f"teacher_image_{key}"]
        a = np.ones((len(images), 2), np.float32) if key == "student" else batch[f"teacher_a_{key}"]
        b = np.zeros((len(images), 2), np.float32) if key == "student" else batch[f"teacher_b_{key}"]
        x, y = service.logits(images[sample:sample + 1], a[sample:sample + 1], b[sample:sample + 1])
        outputs[teacher.name] = (torch.tensor(x), torch.tensor(y))
    student = build_rtmpose("t", 21, STUDENT.input_size, STUDENT.sigma)
    sx, sy = student(torch.tensor(batch["image"][sample:sample + 1]))
    sx.retain_grad()
    targets = SimCCTargets(torch.tensor(batch["target_x"][sample:sample + 1]),
                           torch.tensor(batch["target_y"][sample:sample + 1]),
                           torch.tensor(batch["weights"][sample:sample + 1]))
    joint_weights = kd_joint_weights(torch.tensor(batch["dataset"][sample:sample + 1]),
                                     targets.weights, config.loss.kd_mask)
    _, terms = distillation_loss((sx, sy), targets, outputs, config.loss.w_gt,
                                 teacher_terms(config), kd_joint_weights=joint_weights)
    grads = {}
    for name in ("loss_gt", "loss_kd_coco", "loss_kd_mpii"):
        sx.grad = None
        terms[name].backward(retain_graph=True)
        grads[name] = sx.grad[0].abs().sum(dim=-1)  # (21,) per student channel
    return terms, grads


def _first(setup, dataset: str) -> int:
    codes = setup[1]["dataset"]
    return int(np.flatnonzero(codes == DATASET_CODES[dataset])[0])


@pytest.mark.parametrize("kd_mask", ["none", "own_unlabelled"])
def test_coco_teacher_teaches_the_face_on_mpii_images(setup, kd_mask):
    sample = _first(setup, "mpii")
    assert (setup[1]["weights"][sample, FACE] == 0).all()  # MPII does not label the face
    terms, grads = _loss_and_grads(setup, LossConfig(kd_mask=kd_mask), sample)
    assert terms["loss_kd_coco"] > 0
    assert (grads["loss_kd_coco"][FACE] > 0).all()  # the student's face channels learn
    assert (grads["loss_gt"][FACE] == 0).all()  # ... from the COCO teacher alone


@pytest.mark.parametrize("kd_mask", ["none", "own_unlabelled"])
def test_mpii_teacher_teaches_the_head_top_on_coco_images(setup, kd_mask):
    sample = _first(setup, "coco")
    assert setup[1]["weights"][sample, HEAD_TOP] == 0  # COCO has no head top
    terms, grads = _loss_and_grads(setup, LossConfig(kd_mask=kd_mask), sample)
    assert terms["loss_kd_mpii"] > 0
    assert grads["loss_kd_mpii"][HEAD_TOP] > 0
    assert grads["loss_gt"][HEAD_TOP] == 0


def test_own_unlabelled_mask_skips_joints_the_own_label_marks_absent(setup):
    batch = setup[1]
    codes, weights = torch.tensor(batch["dataset"]), torch.tensor(batch["weights"])
    masked = kd_joint_weights(codes, weights, "own_unlabelled")
    assert kd_joint_weights(codes, weights, "none") is None
    for i, code in enumerate(batch["dataset"]):
        own = set(range(17)) if code == DATASET_CODES["coco"] else set(range(5, 21))
        for j in range(21):
            expected = float(weights[i, j] > 0) if j in own else 1.0
            assert masked[i, j] == expected, (i, j)
    assert (masked == 0).any()  # the real samples do have unlabelled own joints
