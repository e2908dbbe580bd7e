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

    Attributes:
        flip_prob: probability of a horizontal flip.
        half_body_prob: probability of cropping the upper or lower body only.
        shift_factor, shift_prob: box centre shift, in box sizes, and its probability.
        scale_range: box scale factor range (truncated normal over it).
        rotate_factor, rotate_prob: rotation in degrees (truncated normal) and probability.
        hsv_delta: maximum hue / saturation / value offsets (YOLOX HSV jitter).
        blur_prob: probability of a 3-7 px box blur.
        dropout_prob: probability of one coarse-dropout hole of 20-40% of the crop side.
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
    dropout_prob: float = 1.0

    def __post_init__(self) -> None:
        for name in ("flip_prob", "half_body_prob", "shift_prob", "rotate_prob",
                     "blur_prob", "dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name} must be a probability in [0, 1], got {value}")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ConfigError(f"augment.scale_range must satisfy 0 < low <= high, got "
                             f"{self.scale_range}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation: the plain padded box (validation, teacher inference)."""
        return cls(flip_prob=0, half_body_prob=0, shift_prob=0, scale_range=(1, 1),
                   rotate_prob=0, hsv_delta=(0, 0, 0), blur_prob=0, dropout_prob=0)


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
