"""Checking an ONNX export against PyTorch: logits and decoded keypoints on person crops.

Used by ``jobs/export.py`` after every export (the file is removed when it fails). The crops
come from a folder the user names (:func:`person_crops`) or are drawn in memory by the
synthetic data generator (:func:`generated_crops`), so the check needs no file of its own.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unipose_ray.cli import InputError
from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset
from unipose_ray.data.readers import read_coco
from unipose_ray.data.records import InstanceRecord
from unipose_ray.data.synthetic import SyntheticConfig, render_sample
from unipose_ray.data.transforms import AugmentConfig
from unipose_ray.deploy.onnx import OnnxPoseModel
from unipose_ray.evaluation.decode import decode_simcc
from unipose_ray.evaluation.topdown import ImageInfo, box_record
from unipose_ray.models import PoseModel, PoseModelSpec

DEFAULT_ATOL = 1e-4
"""Largest |ONNX - PyTorch| logit difference an export may show. float32 rounding alone
moves logits of a few units by ~1e-5 in RTMPose-t and ~1e-4 in the deeper RTMPose-m (PyTorch
float32 is that far from its own float64 result, onnxruntime too), so for large models this
bound sits at float32's own accuracy: :attr:`ExportCheck.float32_error` shows it."""


@dataclass(frozen=True)
class ExportCheck:
    """How an export's outputs compare with PyTorch's on the same images.

    Attributes:
        num_images: B, the images both ran on (one batch).
        max_abs_diff: max |ONNX - PyTorch| over both logit tensors.
        max_abs_logit: max |PyTorch logit|: the scale to read ``max_abs_diff`` against.
        float32_error: max |PyTorch float32 - PyTorch float64|: float32's own rounding on
            this model and these images; an export that differs by about this much is exact
            up to the order of float operations.
        keypoints_differing: of the ``B x K`` keypoints :func:`decode_simcc` decodes, how
            many land elsewhere from the ONNX logits. With logits within ``d`` of each
            other, a keypoint can only move where PyTorch's two best bins are within
            ``2 d``: a tie that float32 rounding decides.
        num_keypoints: ``B x K``.
    """

    num_images: int
    max_abs_diff: float
    max_abs_logit: float
    float32_error: float
    keypoints_differing: int
    num_keypoints: int

    @property
    def keypoints_equal(self) -> bool:
        return self.keypoints_differing == 0

    def passed(self, atol: float = DEFAULT_ATOL) -> bool:
        return self.max_abs_diff <= atol and self.keypoints_equal


def compare_with_pytorch(model: PoseModel, exported: OnnxPoseModel, images: torch.Tensor
                         ) -> ExportCheck:
    """Run ``model`` (eval mode, no autograd; also a float64 copy) and ``exported`` on the
    same ``(B, 3, H, W)`` RGB 0-255 images; compare their logits and decoded keypoints."""
    reference = _eval_logits(model, images)
    exact = _eval_logits(copy.deepcopy(model).double(), images)
    outputs = exported(images)
    ratio = model.spec.simcc_split_ratio
    reference_keypoints, _ = decode_simcc(*reference, ratio)
    exported_keypoints, _ = decode_simcc(*outputs, ratio)
    return ExportCheck(
        num_images=len(images),
        max_abs_diff=_max_abs_diff(outputs, reference),
        max_abs_logit=max(float(r.abs().max()) for r in reference),
        float32_error=_max_abs_diff(reference, exact),
        keypoints_differing=int(np.any(reference_keypoints != exported_keypoints, -1).sum()),
        num_keypoints=reference_keypoints.shape[0] * reference_keypoints.shape[1],
    )


def _eval_logits(model: PoseModel, images: torch.Tensor) -> list[torch.Tensor]:
    """``model``'s logits in eval mode on the CPU, leaving its mode as it was."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [t.cpu() for t in model(images.to(model.mean.device))]
    finally:
        model.train(was_training)


def _max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b, strict=True))


def coco_file_in(folder: str | os.PathLike) -> Path:
    """The COCO person-keypoints file among ``folder``'s ``*.json`` (the first, by name, with
    ``images`` and ``annotations``; detection results and other JSON are passed over).

    Raises:
        InputError: there is none.
    """
    folder = Path(folder)
    for candidate in sorted(folder.glob("*.json")):
        try:
            data = json.loads(candidate.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and {"images", "annotations"} <= data.keys():
            return candidate
    raise InputError(f"{folder} holds no COCO person-keypoints file (a *.json with "
                     "'images' and 'annotations') to crop persons from")


def person_crops(folder: str | os.PathLike, spec: PoseModelSpec, limit: int = 16
                 ) -> torch.Tensor:
    """Up to ``limit`` person crops of a COCO folder, cut as for validation (the padded box,
    no augmentation) at ``spec``'s input size: ``(N, 3, H, W)`` uint8 RGB.

    ``folder`` holds the images and their person-keypoints file (:func:`coco_file_in`).

    Raises:
        InputError: no COCO file, or no person with keypoints in it.
    """
    folder = Path(folder)
    ann_file = coco_file_in(folder)
    records = read_coco(ann_file, folder)
    if not records:
        raise InputError(f"{ann_file} has no person instances with keypoints to crop")
    dataset = _validation_dataset(records, spec)
    crops = [dataset.sample(i).image for i in range(min(limit, len(dataset)))]
    return torch.from_numpy(np.stack(crops))


MIN_BOX_SIDE = 8
"""Generated people cut to a sliver by the image border are not cropped."""


def generated_crops(spec: PoseModelSpec, limit: int = 16, seed: int = 0) -> torch.Tensor:
    """``limit`` person crops of generated images (the COCO-style validation scenes of
    :mod:`unipose_ray.data.synthetic`, drawn in memory, seeded), cut as for validation at
    ``spec``'s input size: ``(N, 3, H, W)`` uint8 RGB."""
    config = SyntheticConfig(seed=seed)
    records: list[InstanceRecord] = []
    images: dict[int, np.ndarray] = {}
    while len(records) < limit:
        index = len(images)
        image, people = render_sample(config, "coco", "val", index)  # BGR, as files load
        images[index] = image
        info = ImageInfo(f"<generated coco val image {index}>", image.shape[1], image.shape[0])
        records += [box_record(info, index, number, person.bbox)
                    for number, person in enumerate(people)
                    if min(person.bbox[2:]) >= MIN_BOX_SIDE]
    records = records[:limit]
    dataset = _validation_dataset(records, spec)
    crops = [dataset.replay(i, dataset.params(i), image=images[record.image_id]).image
             for i, record in enumerate(records)]
    return torch.from_numpy(np.stack(crops))


def _validation_dataset(records: Sequence[InstanceRecord], spec: PoseModelSpec
                        ) -> TopdownDataset:
    """Unaugmented crops of ``records``' boxes at ``spec``'s input size."""
    return TopdownDataset(records, PipelineConfig(codec=spec.codec, augment=AugmentConfig.none()))
