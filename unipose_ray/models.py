"""RTMPose models and checkpoints: the one adapter to MMPose.

Everything that speaks MMPose's registry language (``type='CSPNeXt'`` dicts, ``Config``
files, ``TopdownPoseEstimator``) lives here; the rest of unipose_ray calls the plain
functions below.

Input convention (student and teachers alike): :class:`PoseModel` takes float images
``(B, 3, H, W)`` in **RGB order, 0-255** (``uint8`` is accepted and cast), at the model's
input size, and normalises them inside with the mean/std of its config. That is exactly
what MMPose's ``PoseDataPreprocessor`` feeds the network after ``bgr_to_rgb`` on a
cv2-loaded (BGR) image. It returns SimCC logits ``(simcc_x (B, K, Wx), simcc_y (B, K, Wy))``.

Checkpoint files (safe reading, strict loading, MMPose's layout) are in
:mod:`unipose_ray.checkpoints`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unipose_ray.checkpoints import load_weights, plain_values
from unipose_ray.data.transforms import CodecConfig
from unipose_ray.mmpose_compat import import_mmpose

# --- Architecture ------------------------------------------------------------------------

RTMPOSE_SIZES: dict[str, tuple[float, float, int]] = {
    # size: (deepen_factor, widen_factor, head in_channels), as in MMPose's rtmpose configs
    "t": (0.167, 0.375, 384),
    "s": (0.33, 0.5, 512),
    "m": (0.67, 0.75, 768),
}

# SimCC label sigma per input size (w, h), as in MMPose's rtmpose configs.
DEFAULT_SIGMAS: dict[tuple[int, int], tuple[float, float]] = {
    (192, 256): (4.9, 5.66),
    (256, 256): (5.66, 5.66),
    (288, 384): (6.93, 7.99),
}

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


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


HEATMAP_STRIDE = 4  # MMPose's HeatmapHead: three 2x deconvolutions on the stride-32 features
HEATMAP_SIGMA = 2.0  # the CSPNeXt-UDP configs' UDPHeatmap sigma, in heatmap pixels


def heatmap_size(input_size: tuple[int, int]) -> tuple[int, int]:
    return tuple(s // HEATMAP_STRIDE for s in input_size)


def rtmpose_model_cfg(
    size: str, num_keypoints: int, input_size: tuple[int, int], sigma: tuple[float, float],
    head: str = "simcc",
) -> dict:
    """MMPose's model dict for RTMPose-``size`` (the config files' settings, BN not SyncBN).

    ``head="heatmap"`` swaps RTMCCHead for the ``HeatmapHead`` + ``UDPHeatmap`` of MMPose's
    ``cspnext-*_udp_*`` configs: how the backbones RTMPose starts from were pretrained.
    """
    if size not in RTMPOSE_SIZES:
        raise ValueError(f"unknown RTMPose size '{size}'; choose one of {sorted(RTMPOSE_SIZES)}")
    deepen, widen, in_channels = RTMPOSE_SIZES[size]
    codec = dict(
        type="SimCCLabel",
        input_size=tuple(input_size),
        sigma=tuple(sigma),
        simcc_split_ratio=2.0,
        normalize=False,
        use_dark=False,
    )
    model = dict(
        type="TopdownPoseEstimator",
        data_preprocessor=dict(
            type="PoseDataPreprocessor", mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
            bgr_to_rgb=True,
        ),
        backbone=dict(
            type="CSPNeXt", arch="P5", expand_ratio=0.5, deepen_factor=deepen,
            widen_factor=widen, out_indices=(4,), channel_attention=True,
            norm_cfg=dict(type="BN"), act_cfg=dict(type="SiLU"),
        ),
        head=dict(
            type="RTMCCHead",
            in_channels=in_channels,
            out_channels=num_keypoints,
            input_size=tuple(input_size),
            in_featuremap_size=tuple(s // 32 for s in input_size),
            simcc_split_ratio=codec["simcc_split_ratio"],
            final_layer_kernel_size=7,
            gau_cfg=dict(
                hidden_dims=256, s=128, expansion_factor=2, dropout_rate=0.0, drop_path=0.0,
                act_fn="SiLU", use_rel_bias=False, pos_enc=False,
            ),
            loss=dict(type="KLDiscretLoss", use_target_weight=True, beta=10.0, label_softmax=True),
            decoder=codec,
        ),
        test_cfg=dict(flip_test=True),
    )  # fmt: skip
    if head == "heatmap":
        model["head"] = dict(
            type="HeatmapHead", in_channels=in_channels, out_channels=num_keypoints,
            loss=dict(type="KeypointMSELoss", use_target_weight=True),
            decoder=dict(type="UDPHeatmap", input_size=tuple(input_size),
                         heatmap_size=heatmap_size(input_size), sigma=HEATMAP_SIGMA),
        )
    elif head != "simcc":
        raise ValueError(f"head must be 'simcc' or 'heatmap', got '{head}'")
    return model


def build_rtmpose(
    size: str,
    num_keypoints: int,
    input_size: tuple[int, int] = (192, 256),
    sigma: tuple[float, float] | None = None,
    head: str = "simcc",
) -> PoseModel:
    """A freshly initialised RTMPose-``t``/``s``/``m`` (CSPNeXt + RTMCCHead, SimCC).

    Args:
        size: ``"t"``, ``"s"`` or ``"m"``.
        num_keypoints: output channels K.
        input_size: ``(w, h)`` crop size, multiples of 32.
        sigma: SimCC label sigma ``(x, y)``; defaults to MMPose's value for known sizes.
        head: ``"heatmap"`` for the backbone-pretraining variant (see
            :func:`rtmpose_model_cfg`); its forward returns ``(B, K, h/4, w/4)`` heatmaps.
    """
    input_size = tuple(int(s) for s in input_size)
    if sigma is None:
        if input_size not in DEFAULT_SIGMAS:
            raise ValueError(
                f"no default SimCC sigma for input size {input_size}; pass sigma=(sx, sy) "
                f"(MMPose's values: {DEFAULT_SIGMAS})"
            )
        sigma = DEFAULT_SIGMAS[input_size]
    spec = PoseModelSpec(num_keypoints, input_size, 2.0, tuple(float(s) for s in sigma))
    estimator = _build_estimator(rtmpose_model_cfg(size, num_keypoints, input_size, spec.sigma,
                                                   head))
    _init_weights_quietly(estimator)
    return PoseModel(estimator, spec)


def write_mmpose_config(model: PoseModel, size: str, path: str | os.PathLike,
                        dataset_meta: Mapping | None = None) -> Path:
    """Write an MMPose config file (``.py``) describing ``model``'s architecture.

    Together with :func:`save_checkpoint` this makes a self-trained model loadable exactly
    like a released one: ``build_from_config(path, checkpoint)``, or in MMPose
    ``init_model`` + ``inference_topdown`` (the config carries RTMPose's test pipeline).
    """
    from mmengine.config import Config  # noqa: PLC0415

    spec = model.spec
    test_pipeline = [
        dict(type="LoadImage"),
        dict(type="GetBBoxCenterScale"),
        dict(type="TopdownAffine", input_size=spec.input_size),
        dict(type="PackPoseInputs"),
    ]
    cfg = dict(
        default_scope="mmpose",
        model=rtmpose_model_cfg(size, spec.num_keypoints, spec.input_size, spec.sigma),
        codec=dict(type="SimCCLabel", input_size=spec.input_size, sigma=spec.sigma,
                   simcc_split_ratio=spec.simcc_split_ratio, normalize=False, use_dark=False),
        test_dataloader=dict(dataset=dict(pipeline=test_pipeline)),
    )
    if dataset_meta is not None:
        cfg["dataset_meta"] = plain_values(dict(dataset_meta))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Config(cfg).dump(str(path))
    return path


def _build_estimator(model_cfg: Mapping) -> nn.Module:
    import_mmpose()
    from mmengine.registry import DefaultScope  # noqa: PLC0415
    from mmpose.models import build_pose_estimator  # noqa: PLC0415

    with DefaultScope.overwrite_default_scope("mmpose"):
        return build_pose_estimator(dict(model_cfg))


def _init_weights_quietly(estimator: nn.Module) -> None:
    """MMPose's weight init, without its per-parameter INFO log (thousands of lines)."""
    from mmengine.logging import MMLogger  # noqa: PLC0415

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        estimator.init_weights()
    finally:
        logger.setLevel(level)


# --- Real MMPose config files --------------------------------------------------------------


def load_mmpose_config(config_path: str | os.PathLike) -> Any:
    """Read an MMPose config file and make it build on mmcv-lite.

    The RTMPose configs' backbone says ``_scope_='mmdet'`` (mmdet's registry imports
    compiled mmcv ops) and has an ``init_cfg`` that downloads ImageNet weights; MMPose's own
    ``CSPNeXt`` has the same parameter names, so both are dropped. SyncBN becomes BN.
    Returns an ``mmengine.Config``.
    """
    from unipose_ray.release import verify_released  # noqa: PLC0415

    verify_released(config_path)
    import_mmpose()
    from mmengine.config import Config  # noqa: PLC0415

    cfg = Config.fromfile(str(config_path))
    backbone = cfg.model.backbone
    backbone.pop("_scope_", None)
    backbone.pop("init_cfg", None)
    cfg.model = _replace_syncbn(cfg.model)
    return cfg


def _replace_syncbn(node: Any) -> Any:
    if isinstance(node, Mapping):
        out = type(node)({k: _replace_syncbn(v) for k, v in node.items()})
        if out.get("type") == "SyncBN":
            out["type"] = "BN"
        return out
    if isinstance(node, list | tuple):
        return type(node)(_replace_syncbn(v) for v in node)
    return node


def spec_from_config(cfg: Any) -> PoseModelSpec:
    """The :class:`PoseModelSpec` of an MMPose SimCC model config (``cfg.model.head``)."""
    head = cfg.model.head
    if "simcc_split_ratio" not in head:
        raise ValueError(f"the config's head ({head.get('type')}) is not a SimCC head")
    return PoseModelSpec(
        num_keypoints=int(head.out_channels),
        input_size=tuple(int(s) for s in head.input_size),
        simcc_split_ratio=float(head.simcc_split_ratio),
        sigma=tuple(float(s) for s in head.decoder.sigma),
        flip_test=bool(cfg.model.get("test_cfg", {}).get("flip_test", False)),  # MMPose's default
    )


def build_from_config(
    config_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    trust_checkpoint: bool = False,
) -> PoseModel:
    """Build the model of a real MMPose config file, optionally loading a checkpoint.

    Args:
        config_path: e.g. MMPose's ``rtmpose-m_8xb256-420e_coco-256x192.py``.
        checkpoint_path: an MMPose/mmengine ``.pth`` (``state_dict`` at top level or under
            ``'state_dict'``; a ``module.`` prefix is stripped).
        device: where the model goes.
        trust_checkpoint: unpickle the checkpoint without restrictions. Only for files you
            trust: it can execute arbitrary code.

    Raises:
        CheckpointError: unreadable safely, or tensors that do not fit the config.
    """
    cfg = load_mmpose_config(config_path)
    estimator = _build_estimator(cfg.model)
    if checkpoint_path is None:
        _init_weights_quietly(estimator)
    preprocessor = cfg.model.get("data_preprocessor", {})
    model = PoseModel(
        estimator,
        spec_from_config(cfg),
        mean=tuple(preprocessor.get("mean", IMAGENET_MEAN)),
        std=tuple(preprocessor.get("std", IMAGENET_STD)),
        # The config's network wants BGR only if its preprocessor neither flips BGR->RGB
        # nor receives RGB; MMPose's pipelines load BGR, so "no bgr_to_rgb" means BGR.
        rgb_to_bgr=not preprocessor.get("bgr_to_rgb", False),
    )
    if checkpoint_path is not None:
        load_weights(model, checkpoint_path, trust_checkpoint=trust_checkpoint)
    return model.to(device)


def build_teacher(
    config_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike | None,
    device: str | torch.device = "cpu",
    trust_checkpoint: bool = False,
) -> FrozenTeacher:
    """:func:`build_from_config`, frozen (see :class:`FrozenTeacher`)."""
    return FrozenTeacher(build_from_config(config_path, checkpoint_path, device, trust_checkpoint))
