"""``jobs/compare_teacher_crops.py``: the "student crop grown" boxes it evaluates teachers on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset, load_image
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.transforms import AugmentConfig, CodecConfig, crop_image


def test_grown_boxes_give_the_students_crop_grown_to_the_teachers_aspect(load_job, real_samples):
    job = load_job("compare_teacher_crops")
    records = read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco")
    records += read_mpii(real_samples / "mpii" / "test_mpii.json", real_samples / "mpii")
    student_size, teacher = (64, 96), CodecConfig((64, 64))
    plain = PipelineConfig(codec=CodecConfig(student_size), augment=AugmentConfig.none())
    student = TopdownDataset(records, plain)
    own = TopdownDataset(records, replace(plain, codec=teacher))
    grown = TopdownDataset([job.student_crop_box(r, student_size) for r in records],
                           replace(plain, codec=teacher))
    differs = 0
    for i, record in enumerate(records):
        # The student's crop box grown to the teacher's aspect (the box=None rule).
        params = replace(student.params(i), box=None).at_input_size(teacher.input_size)
        expected = crop_image(load_image(record.image_path), params).transpose(2, 0, 1)
        # The rebuilt box is read back through float32 again: one grey level at most.
        assert np.abs(grown.sample(i).image.astype(int) - expected).max() <= 1
        differs += not np.array_equal(own.sample(i).image, expected)
    assert differs >= 3  # wide people: the teacher's own crop is another crop
