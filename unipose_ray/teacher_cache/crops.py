"""The teacher crops of cached instance-views, replayed with the training pipeline's code.

Used by the cache build's Ray Data pipeline (:mod:`unipose_ray.teacher_cache.build`) and
by the basis calibration (:mod:`unipose_ray.teacher_cache.bases`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset, load_image
from unipose_ray.data.transforms import CropParams, size_key


def teacher_input(dataset: TopdownDataset, index: int, params: CropParams,
                  size: tuple[int, int], image: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(crop, a, b)`` of a teacher at input ``size`` for the view ``params`` of record
    ``index``: the student's own (augmented) crop when the sizes agree, as online teachers
    get it, else the same box cut at the teacher's size (``teacher_px = a * student_px + b``).
    """
    if tuple(size) == tuple(dataset.config.codec.input_size):
        crop = dataset.replay(index, params, image=image).image
        return crop, np.ones(2, np.float32), np.zeros(2, np.float32)
    view = dataset.teacher_view(index, params, size, image=image)
    return view.image, view.a.astype(np.float32), view.b.astype(np.float32)


@dataclass(frozen=True)
class CropPlan:
    """What :class:`ViewCrops` needs: the records, the crop pipeline, the teacher input
    sizes, and the (view, record) of each row id."""

    records_ref: object
    pipeline: PipelineConfig
    sizes: tuple[tuple[int, int], ...]
    views: np.ndarray
    records: np.ndarray
    skip_bad_images: bool = False


class ViewCrops:
    """Ray Data callable class: row ids -> ``view``, ``record`` and, per teacher input size
    ``S``, ``image_S`` (uint8 crops), ``a_S``, ``b_S`` (:func:`teacher_input`)."""

    def __init__(self, plan: CropPlan):
        import cv2  # noqa: PLC0415
        import ray  # noqa: PLC0415

        cv2.setNumThreads(1)
        self.plan = plan
        self.dataset = TopdownDataset(ray.get(plan.records_ref), plan.pipeline)

    def _image(self, index: int) -> np.ndarray:
        try:
            return load_image(self.dataset.records[index].image_path)
        except FileNotFoundError:
            if not self.plan.skip_bad_images:
                raise
            # training replaces this sample by the next readable record's: its row is unused
            record = self.dataset.records[index]
            return np.zeros((record.image_height, record.image_width, 3), np.uint8)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        views, records = self.plan.views[batch["id"]], self.plan.records[batch["id"]]
        out: dict[str, list] = {}
        for view, index in zip(views, records, strict=True):
            image = self._image(int(index))
            params = self.dataset.params(int(index), int(view))
            for size in self.plan.sizes:
                key = size_key(size)
                crop, a, b = teacher_input(self.dataset, int(index), params, size, image)
                for name, value in ((f"image_{key}", crop), (f"a_{key}", a), (f"b_{key}", b)):
                    out.setdefault(name, []).append(value)
        columns = {name: np.stack(values) for name, values in out.items()}
        columns["view"], columns["record"] = views, records
        return columns
