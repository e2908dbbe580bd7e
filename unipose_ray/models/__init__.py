"""RTMPose models and checkpoints: the one adapter to MMPose.

Everything that speaks MMPose's registry language (``type='CSPNeXt'`` dicts, ``Config``
files, ``TopdownPoseEstimator``) lives here; the rest of unipose_ray calls the plain
functions re-exported below.

Input convention (student and teachers alike): :class:`PoseModel` takes float images
``(B, 3, H, W)`` in **RGB order, 0-255** (``uint8`` is accepted and cast), at the model's
input size, and normalises them inside with the mean/std of its config. That is exactly
what MMPose's ``PoseDataPreprocessor`` feeds the network after ``bgr_to_rgb`` on a
cv2-loaded (BGR) image. It returns SimCC logits ``(simcc_x (B, K, Wx), simcc_y (B, K, Wy))``.

Checkpoint files (safe reading, strict loading, MMPose's layout) are in
:mod:`unipose_ray.models.checkpoints`.
"""

from unipose_ray.models.mmpose_config import (
    build_from_config,
    build_teacher,
    load_mmpose_config,
    spec_from_config,
    write_mmpose_config,
)
from unipose_ray.models.pose_model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenTeacher,
    PoseModel,
    PoseModelSpec,
    use_channels_last,
)
from unipose_ray.models.rtmpose import (
    DEFAULT_SIGMAS,
    HEATMAP_SIGMA,
    HEATMAP_STRIDE,
    RTMPOSE_SIZES,
    build_rtmpose,
    heatmap_size,
    rtmpose_model_cfg,
)

__all__ = [
    "DEFAULT_SIGMAS", "HEATMAP_SIGMA", "HEATMAP_STRIDE", "IMAGENET_MEAN", "IMAGENET_STD",
    "RTMPOSE_SIZES", "FrozenTeacher", "PoseModel", "PoseModelSpec", "build_from_config",
    "build_rtmpose", "build_teacher", "heatmap_size", "load_mmpose_config", "rtmpose_model_cfg",
    "spec_from_config", "use_channels_last", "write_mmpose_config",
]
