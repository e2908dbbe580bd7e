"""Rank 0's validation helpers leave the student as they found it."""

from __future__ import annotations

import numpy as np
import torch

from unipose_ray.config import load_config
from unipose_ray.data.readers import read_coco
from unipose_ray.data.records import write_records
from unipose_ray.evaluation.cross_dataset import EvalSet
from unipose_ray.train.job import TrainJob, build_student
from unipose_ray.train.report import val_picture


def test_the_skeleton_picture_keeps_the_student_in_training_mode(real_samples, tmp_path):
    records = read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco")
    path = write_records(records, tmp_path / "val.parquet")
    config = load_config("demo")
    job = TrainJob(config, str(path), (EvalSet("coco", str(path)),), output_dir=str(tmp_path))
    torch.manual_seed(0)
    student = build_student(config).train()
    picture = val_picture(student, job)
    # Left in eval mode, BatchNorm would use frozen running statistics for the rest of
    # training (it did: PCKh stalled after the first validation).
    assert student.training and all(m.training for m in student.modules())
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8
    assert picture.shape[0] >= 256  # whole images, at a readable size
