"""MMPose config files: a user's (``rtmpose-m_8xb256-420e_coco-256x192.py``) read on
mmcv-lite, built and loaded with its checkpoint; ours written for self-trained models."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unipose_ray.cli import UsageError
from unipose_ray.models.checkpoints import TRUST_ARGUMENT, load_weights, plain_values
from unipose_ray.models.compat import import_mmpose
from unipose_ray.models.pose_model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrozenTeacher,
    PoseModel,
    PoseModelSpec,
)
from unipose_ray.models.rtmpose import build_estimator, init_weights_quietly, rtmpose_model_cfg


class ModelConfigError(UsageError, ValueError):
    """An MMPose config of a model this project does not run (not a SimCC pose model)."""


def load_mmpose_config(config_path: str | os.PathLike) -> Any:
    """Read an MMPose config file and make it build on mmcv-lite.

    The RTMPose configs' backbone says ``_scope_='mmdet'`` (mmdet's registry imports
    compiled mmcv ops) and has an ``init_cfg`` that downloads ImageNet weights; MMPose's own
    ``CSPNeXt`` has the same parameter names, so both are dropped. SyncBN becomes BN.
    Returns an ``mmengine.Config``.
    """
    from unipose_ray.models.release import verify_released  # noqa: PLC0415

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
    """The :class:`PoseModelSpec` of an MMPose SimCC model config (``cfg.model.head``).

    Raises:
        ModelConfigError: the head is not a SimCC head.
    """
    head = cfg.model.head
    if "simcc_split_ratio" not in head:
        raise ModelConfigError(f"the config's head ({head.get('type')}) is not a SimCC head: "
                               "pass the config of an RTMPose-style model (RTMCCHead)")
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
    trust_hint: str = TRUST_ARGUMENT,
) -> PoseModel:
    """Build the model of a real MMPose config file, optionally loading a checkpoint.

    Args:
        config_path: e.g. MMPose's ``rtmpose-m_8xb256-420e_coco-256x192.py``.
        checkpoint_path: an MMPose/mmengine ``.pth`` (``state_dict`` at top level or under
            ``'state_dict'``; a ``module.`` prefix is stripped).
        device: where the model goes.
        trust_checkpoint: unpickle the checkpoint without restrictions. Only for files you
            trust: it can execute arbitrary code.
        trust_hint: how the caller's user sets ``trust_checkpoint`` (``--trust-checkpoint``,
            ``teachers.0.trust_checkpoint=true``), named when a file needs it.

    Raises:
        InputError: no such checkpoint.
        CheckpointError: not a checkpoint, unreadable safely, or tensors that do not fit
            the config.
    """
    cfg = load_mmpose_config(config_path)
    estimator = build_estimator(cfg.model)
    if checkpoint_path is None:
        init_weights_quietly(estimator)
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
        load_weights(model, checkpoint_path, trust_checkpoint, trust_hint,
                     model_name=f"the model of {config_path}")
    return model.to(device)


def build_teacher(
    config_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike | None,
    device: str | torch.device = "cpu",
    trust_checkpoint: bool = False,
    trust_hint: str = TRUST_ARGUMENT,
) -> FrozenTeacher:
    """:func:`build_from_config`, frozen (see :class:`FrozenTeacher`)."""
    return FrozenTeacher(build_from_config(config_path, checkpoint_path, device, trust_checkpoint,
                                           trust_hint))


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
