"""From record sets to samples: the top-down dataset, and batches of its samples.

``TopdownDataset.sample(i, epoch)`` draws sample ``i``'s crop parameters from its seed and
builds it; ``replay(i, params)`` rebuilds it from stored parameters; ``teacher_view`` crops
the same box at a teacher's input size together with the per-axis relation between the two
crops. ``collate`` stacks samples into a batch of numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import pyarrow as pa

from unipose_ray.data.geometry import invert_affine
from unipose_ray.data.records import InstanceRecord, table_to_records
from unipose_ray.data.transforms import (
    AugmentConfig,
    CodecConfig,
    CropParams,
    Sample,
    crop_image,
    crop_relation,
    make_sample,
    sample_params,
    sample_seed,
)
from unipose_ray.skeleton import UNIFIED, KeypointSet


@dataclass(frozen=True)
class PipelineConfig:
    """How records become samples.

    Attributes:
        codec: the student's input size and SimCC settings.
        augment: random augmentation (use ``AugmentConfig.none()`` for validation).
        seed: run seed; each sample's seed derives from it, the epoch and the instance.
        epochs: the run's epochs (``optim.epochs``): its last ``augment.stage2_epochs``
            use RTMPose's stage-2 augmentation (:meth:`augment_at`); 0: ``augment`` at
            every epoch (validation, tools without a run length).
        skeleton: the records' unified joints (flip pairs, half-body halves).
    """

    codec: CodecConfig = field(default_factory=CodecConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    epochs: int = 0
    skeleton: KeypointSet = UNIFIED

    def augment_at(self, epoch: int) -> AugmentConfig:
        """The augmentation of (0-based) ``epoch``: stage 2 from
        :meth:`AugmentConfig.stage2_start` on, as mmdet's ``PipelineSwitchHook``."""
        start = self.augment.stage2_start(self.epochs) if self.epochs else None
        return AugmentConfig.stage2() if start is not None and epoch >= start else self.augment


def load_image(path: str) -> np.ndarray:
    """Read an image as BGR uint8, with an error that names the file."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}: it is missing or not an image; "
                                "check the image folder given for this dataset")
    return image


@dataclass(frozen=True)
class TeacherView:
    """A teacher-sized crop of a sample's box.

    Attributes:
        image: ``(3, h_t, w_t)`` uint8 RGB.
        params: the teacher crop's parameters.
        a, b: ``(2,)`` per-axis relation ``teacher_px = a * student_px + b``.
    """

    image: np.ndarray
    params: CropParams
    a: np.ndarray
    b: np.ndarray


class TopdownDataset:
    """Random-access top-down samples over a record set."""

    def __init__(self, records: Sequence[InstanceRecord] | pa.Table, config: PipelineConfig):
        # a Sequence (the stages' shared RecordTable) is kept as given: a row's record is
        # built when the row is used, not all 172k of COCO in every stage
        self.records = (table_to_records(records) if isinstance(records, pa.Table)
                        else records if isinstance(records, Sequence) else list(records))
        self.config = config

    def __len__(self) -> int:
        return len(self.records)

    def params(self, index: int, epoch: int = 0) -> CropParams:
        """The crop parameters sample ``index`` gets in ``epoch`` (pure function of seeds):
        drawn from the epoch's seed with the epoch's augmentation (stage 1 or 2)."""
        record = self.records[index]
        seed = sample_seed(self.config.seed, epoch, record)
        return sample_params(record, seed, self.config.codec, self.config.augment_at(epoch),
                             self.config.skeleton)

    def sample(self, index: int, epoch: int = 0) -> Sample:
        return self.replay(index, self.params(index, epoch))

    def replay(self, index: int, params: CropParams, image: np.ndarray | None = None) -> Sample:
        """Rebuild a sample from stored parameters (bit-identical to the original)."""
        record = self.records[index]
        if image is None:
            image = load_image(record.image_path)
        return make_sample(record, image, params, self.config.codec, self.config.skeleton)

    def teacher_view(self, index: int, params: CropParams, input_size: tuple[int, int],
                     image: np.ndarray | None = None) -> TeacherView:
        """Crop sample ``index``'s box (as ``params`` places it) at a teacher's input size."""
        teacher = params.at_input_size(input_size)
        if image is None:
            image = load_image(self.records[index].image_path)
        a, b = crop_relation(params, teacher)
        crop = crop_image(image, teacher)
        return TeacherView(np.ascontiguousarray(crop.transpose(2, 0, 1)), teacher, a, b)


def collate(samples: Sequence[Sample]) -> dict[str, np.ndarray]:
    """Stack samples into a batch of arrays (``images`` is ``(B, 3, H, W)`` uint8)."""
    return {
        "images": np.stack([s.image for s in samples]),
        "keypoints": np.stack([s.keypoints for s in samples]),
        "weights": np.stack([s.weights for s in samples]),
        "target_x": np.stack([s.target_x for s in samples]),
        "target_y": np.stack([s.target_y for s in samples]),
        "warp": np.stack([s.warp for s in samples]).astype(np.float32),
        "inverse_warp": invert_affine(np.stack([s.warp for s in samples])).astype(np.float32),
    }
