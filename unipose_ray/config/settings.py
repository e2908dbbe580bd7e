"""The crop and target settings of a model, as plain config (imports nothing heavy).

:mod:`unipose_ray.data.transforms` applies them; the run's config (``unipose_ray.config``)
holds them, and a job reads and checks its config before importing the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from unipose_ray.config.loading import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the random augmentations (RTMPose stage 1 by default).

    RTMPose trains its last ``stage2_num_epochs`` (30) epochs on a weaker pipeline
    (mmdet's ``PipelineSwitchHook``): :meth:`stage2` is that pipeline, and
    :meth:`stage2_start` the epoch it starts at.

    Attributes:
        flip_prob: probability of a horizontal flip.
        half_body_prob: probability of cropping the upper or lower body only.
        shift_factor, shift_prob: box centre shift, in box sizes, and its probability.
        scale_range: box scale factor range (truncated normal over it).
        rotate_factor, rotate_prob: rotation in degrees (truncated normal) and probability.
        hsv_delta: maximum hue / saturation / value offsets (YOLOX HSV jitter).
        blur_prob: probability of a 3-7 px box blur (albumentations' ``Blur``).
        median_blur_prob: probability of a 3-7 px median blur after it (albumentations'
            ``MedianBlur``, default ``blur_limit=7`` as RTMPose's configs leave it).
        dropout_prob: probability of one coarse-dropout hole of 20-40% of the crop side.
        stage2_epochs: the run's last this many epochs use :meth:`stage2`, as RTMPose's
            ``stage2_num_epochs``; 0: stage 1 throughout.
    """

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_range: tuple[float, float] = (0.6, 1.4)
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6
    hsv_delta: tuple[int, int, int] = (5, 30, 30)
    blur_prob: float = 0.1
    median_blur_prob: float = 0.1
    dropout_prob: float = 1.0
    stage2_epochs: int = 30

    def __post_init__(self) -> None:
        for name in ("flip_prob", "half_body_prob", "shift_prob", "rotate_prob",
                     "blur_prob", "median_blur_prob", "dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name} must be a probability in [0, 1], got {value}")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ConfigError(f"augment.scale_range must satisfy 0 < low <= high, got "
                             f"{self.scale_range}")
        if self.stage2_epochs < 0:
            raise ConfigError(f"augment.stage2_epochs must be >= 0 (0: no stage 2), got "
                              f"{self.stage2_epochs}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation: the plain padded box (validation, teacher inference)."""
        return cls(flip_prob=0, half_body_prob=0, shift_prob=0, scale_range=(1, 1),
                   rotate_prob=0, hsv_delta=(0, 0, 0), blur_prob=0, median_blur_prob=0,
                   dropout_prob=0, stage2_epochs=0)

    @classmethod
    def stage2(cls) -> AugmentConfig:
        """RTMPose's ``train_pipeline_stage2``: no box shift, scale 0.75-1.25, rotation up
        to 60 degrees, the coarse-dropout hole half the time (flip, half-body, HSV and
        both blurs as in stage 1)."""
        return cls(shift_factor=0.0, scale_range=(0.75, 1.25), rotate_factor=60.0,
                   dropout_prob=0.5, stage2_epochs=0)

    def stage2_start(self, epochs: int) -> int | None:
        """The first (0-based) epoch of :meth:`stage2` in a run of ``epochs`` epochs:
        mmdet's ``PipelineSwitchHook(switch_epoch=max_epochs - stage2_num_epochs)``, which
        switches before every epoch ``>= switch_epoch`` (all of them when the run is
        shorter than ``stage2_epochs``). ``None``: no switch."""
        return epochs - self.stage2_epochs if self.stage2_epochs else None


@dataclass(frozen=True)
class CodecConfig:
    """Input size and SimCC target settings of one model.

    Attributes:
        input_size: model input ``(w, h)``.
        sigma: Gaussian sigma of the x and y targets, in SimCC bins.
        split_ratio: SimCC bins per input pixel.
    """

    input_size: tuple[int, int] = (192, 256)
    sigma: tuple[float, float] = (4.9, 5.66)
    split_ratio: float = 2.0

    @property
    def num_bins(self) -> tuple[int, int]:
        w, h = self.input_size
        return int(round(w * self.split_ratio)), int(round(h * self.split_ratio))
