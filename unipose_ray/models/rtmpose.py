"""RTMPose in MMPose's registry language: the model dicts of MMPose's rtmpose (and
cspnext-udp) configs, and fresh models built from them."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import nn

from unipose_ray.models.compat import import_mmpose
from unipose_ray.models.pose_model import IMAGENET_MEAN, IMAGENET_STD, PoseModel, PoseModelSpec

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
    estimator = build_estimator(rtmpose_model_cfg(size, num_keypoints, input_size, spec.sigma,
                                                   head))
    init_weights_quietly(estimator)
    return PoseModel(estimator, spec)


def build_estimator(model_cfg: Mapping) -> nn.Module:
    import_mmpose()
    from mmengine.registry import DefaultScope  # noqa: PLC0415
    from mmpose.models import build_pose_estimator  # noqa: PLC0415

    with DefaultScope.overwrite_default_scope("mmpose"):
        return build_pose_estimator(dict(model_cfg))


def init_weights_quietly(estimator: nn.Module) -> None:
    """MMPose's weight init, without its per-parameter INFO log (thousands of lines)."""
    from mmengine.logging import MMLogger  # noqa: PLC0415

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        estimator.init_weights()
    finally:
        logger.setLevel(level)

