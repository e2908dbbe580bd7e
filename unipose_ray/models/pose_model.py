"""The plain-PyTorch face of an MMPose pose model: :class:`PoseModel` (images in, SimCC
logits out; the input convention is in :mod:`unipose_ray.models`), its
:class:`PoseModelSpec`, and :class:`FrozenTeacher`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unipose_ray.config.settings import CodecConfig

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class PoseModelSpec:
    """What a SimCC pose model expects and produces.

    Attributes:
        num_keypoints: K, the number of output channels.
        input_size: ``(w, h)`` of the input crop in pixels.
        simcc_split_ratio: SimCC bins per pixel.
        sigma: ``(sigma_x, sigma_y)`` of the SimCC Gaussian labels, in bins.
        flip_test: the config's ``test_cfg.flip_test`` (on in every RTMPose config):
            predictions average the crop with its mirror.
    """

    num_keypoints: int
    input_size: tuple[int, int]
    simcc_split_ratio: float
    sigma: tuple[float, float]
    flip_test: bool = True

    def __post_init__(self) -> None:
        if self.num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {self.num_keypoints}")
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(f"input_size must be (w, h) with both >= 32, got {self.input_size}")
        if any(s % 32 for s in self.input_size):
            raise ValueError(
                f"input_size {self.input_size} must be a multiple of 32 (the backbone stride)"
            )
        if self.simcc_split_ratio <= 0:
            raise ValueError(f"simcc_split_ratio must be > 0, got {self.simcc_split_ratio}")

    @property
    def codec(self) -> CodecConfig:
        """The crops and SimCC bins of this model (evaluation and targets)."""
        return CodecConfig(self.input_size, self.sigma, self.simcc_split_ratio)

    @property
    def simcc_bins(self) -> tuple[int, int]:
        """``(Wx, Wy)``: the number of x and y bins."""
        w, h = self.input_size
        return int(w * self.simcc_split_ratio), int(h * self.simcc_split_ratio)


class PoseModel(nn.Module):
    """An MMPose ``TopdownPoseEstimator`` behind a plain ``images -> SimCC logits`` forward.

    Attributes:
        estimator: the MMPose model (its ``state_dict`` is MMPose's layout).
        spec: the model's :class:`PoseModelSpec`.
    """

    def __init__(
        self,
        estimator: nn.Module,
        spec: PoseModelSpec,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        rgb_to_bgr: bool = False,
    ) -> None:
        super().__init__()
        self.estimator = estimator
        self.spec = spec
        self.rgb_to_bgr = rgb_to_bgr
        self.channels_last = False  # see use_channels_last
        # Not persistent: checkpoints keep MMPose's layout (backbone.*, head.*) only.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` RGB 0-255 -> ``((B, K, Wx), (B, K, Wy))`` SimCC logits."""
        w, h = self.spec.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, h, w):
            raise ValueError(
                f"expected images of shape (B, 3, {h}, {w}) (RGB, 0-255) for input size "
                f"(w, h) = {self.spec.input_size}, got {tuple(images.shape)}"
            )
        x = images.to(self.mean.dtype)
        if self.rgb_to_bgr:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.estimator.extract_feat(x)
        return self.estimator.head(feats)


def use_channels_last(model: nn.Module) -> nn.Module:
    """Convolutions in NHWC: weights converted in place, inputs on the way in (every
    :class:`PoseModel` inside ``model``). The same convolutions, faster kernels:
    ``jobs/benchmark_kd.py --paper-sizes --steps 24`` went from 12.95 to 16.02 samples/s
    for the RTMPose-s student on cached targets (one CPU thread), from 5.29 to 5.71 with two
    in-process RTMPose-m teachers. State dicts load either way.
    """
    model.to(memory_format=torch.channels_last)
    for module in model.modules():
        if isinstance(module, PoseModel):
            module.channels_last = True
    return model


class FrozenTeacher(nn.Module):
    """A :class:`PoseModel` that never trains: no gradients, eval mode whatever ``train()``.

    A runner calling ``.train()`` on a parent module would otherwise flip BatchNorm back to
    batch statistics and update its running stats on every teacher forward.
    """

    def __init__(self, model: PoseModel) -> None:
        super().__init__()
        self.model = model
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    @property
    def spec(self) -> PoseModelSpec:
        return self.model.spec

    def train(self, mode: bool = True) -> FrozenTeacher:  # noqa: ARG002 - always eval
        self.training = False
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`PoseModel.forward`, without autograd."""
        return self.model(images)
