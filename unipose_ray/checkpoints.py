"""Checkpoint files: safe reading, strict loading into a model, writing MMPose's layout.

Checkpoints are read with ``torch.load(weights_only=True)`` plus a short allow-list
(numpy arrays/scalars/dtypes and mmengine's ``HistoryBuffer``, which OpenMMLab training
checkpoints carry in ``meta``/``message_hub``). Anything else is refused unless the caller
opts in with ``trust_checkpoint=True``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.dtypes
import torch

if TYPE_CHECKING:
    from unipose_ray.models import FrozenTeacher, PoseModel

class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely or does not fit the model."""


_STATISTICS = ("min", "max", "current", "mean")


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to ``HistoryBuffer``'s statistic methods.

    torch pickles ``HistoryBuffer.statistics_methods`` (a dict of its own methods) as
    ``getattr(HistoryBuffer, 'min')``; a general ``getattr`` is not allow-listed.
    """
    from mmengine.logging.history_buffer import HistoryBuffer  # noqa: PLC0415

    if obj is HistoryBuffer and name in _STATISTICS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"getattr({obj!r}, {name!r}) is not allowed")


def _safe_globals() -> list:
    from mmengine.logging.history_buffer import HistoryBuffer  # noqa: PLC0415

    multiarray = np._core.multiarray
    dtypes = [c for c in vars(numpy.dtypes).values() if isinstance(c, type)]
    return [
        multiarray._reconstruct,
        multiarray.scalar,
        # Files written under numpy 1.x name the same functions numpy.core.multiarray.*
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        np.ndarray,
        np.dtype,
        *dtypes,
        HistoryBuffer,
        (_history_buffer_getattr, "builtins.getattr"),
    ]


@contextlib.contextmanager
def checkpoint_safe_globals() -> Iterator[None]:
    """Allow-list numpy and mmengine's ``HistoryBuffer`` for ``weights_only`` loads.

    Scoped: wrap third-party loaders such as ``mmengine.runner.load_checkpoint`` in it.
    """
    with torch.serialization.safe_globals(_safe_globals()):
        yield


def read_checkpoint(path: str | os.PathLike, trust_checkpoint: bool = False) -> dict:
    """Load a checkpoint file onto the CPU, safely unless ``trust_checkpoint``.

    A file in a release folder is checked against its manifest first.
    """
    from unipose_ray.release import verify_released  # noqa: PLC0415

    verify_released(path)
    if trust_checkpoint:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with checkpoint_safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - only used to improve the message
            unsafe = []
        allowed = {"numpy", "mmengine.logging.history_buffer", "builtins.getattr"}
        unexpected = [g for g in unsafe if not any(g.startswith(a) for a in allowed)]
        raise CheckpointError(
            f"refusing to unpickle {path}: it holds Python objects outside the safe "
            f"allow-list (tensors, numpy arrays/scalars, mmengine HistoryBuffer): "
            f"{unexpected or unsafe}. Unpickling them can run arbitrary code. If you trust "
            f"the file, pass trust_checkpoint=True. Detail: {str(err).splitlines()[-1]}"
        ) from err


def extract_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict: under ``'state_dict'`` or top-level,
    without a DataParallel/DDP ``module.`` prefix."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError("the checkpoint has no state_dict (an empty or non-dict one)")
    out = {}
    for key, value in state.items():
        out[key.removeprefix("module.")] = value
    return out


def check_state_dict(
    model_state: Mapping[str, torch.Tensor], ckpt_state: Mapping[str, torch.Tensor]
) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or misshapen tensor."""
    missing = [k for k in model_state if k not in ckpt_state]
    unexpected = [k for k in ckpt_state if k not in model_state]
    mismatched = [
        f"{k}: checkpoint {tuple(ckpt_state[k].shape)}, model expects {tuple(v.shape)}"
        for k, v in model_state.items()
        if k in ckpt_state and tuple(ckpt_state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = ["the checkpoint does not fit the model:"]
    if mismatched:
        lines.append("shape mismatches (a different keypoint count or input size?):")
        lines += [f"  {m}" for m in mismatched]
    if missing:
        lines.append(f"missing keys ({len(missing)}): {missing[:20]}")
    if unexpected:
        lines.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
    raise CheckpointError("\n".join(lines))


def load_weights(model: PoseModel, path: str | os.PathLike, trust_checkpoint: bool = False) -> dict:
    """Load an MMPose checkpoint into ``model`` (strictly); return the checkpoint's ``meta``."""
    checkpoint = read_checkpoint(path, trust_checkpoint)
    state = extract_state_dict(checkpoint)
    estimator = model.estimator
    check_state_dict(estimator.state_dict(), state)
    estimator.load_state_dict(state, strict=True)
    meta = checkpoint.get("meta", {}) if isinstance(checkpoint, Mapping) else {}
    if "dataset_meta" in meta:
        estimator.dataset_meta = meta["dataset_meta"]
    return meta


def load_backbone(model: PoseModel, path: str | os.PathLike, trust_checkpoint: bool = False) -> None:
    """Initialise ``model``'s backbone from the ``backbone.*`` tensors of a checkpoint.

    What RTMPose configs do with ``init_cfg=dict(type='Pretrained', prefix='backbone.',
    checkpoint=...)``: MMPose's released CSPNeXt backbones (``cspnext-s_udp-aic-coco_...``)
    are whole pose models, so any MMPose checkpoint of the same backbone fits; the head
    stays freshly initialised. Strict: every backbone tensor must be there, same shape.
    """
    state = extract_state_dict(read_checkpoint(path, trust_checkpoint))
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone:
        raise CheckpointError(f"{path} has no 'backbone.*' tensors: not an MMPose pose model or "
                              "backbone checkpoint")
    try:
        check_state_dict(model.estimator.backbone.state_dict(), backbone)
    except CheckpointError as err:
        raise CheckpointError(f"backbone checkpoint {path} does not fit this RTMPose size "
                              f"(a different t/s/m?): {err}") from None
    model.estimator.backbone.load_state_dict(backbone, strict=True)


def save_checkpoint(
    model: PoseModel | FrozenTeacher,
    path: str | os.PathLike,
    dataset_meta: Mapping | None = None,
    extra_meta: Mapping | None = None,
) -> Path:
    """Write ``{'state_dict': <TopdownPoseEstimator layout>, 'meta': {...}}``.

    MMPose's ``init_model``/``mmengine.runner.load_checkpoint`` read the file as is.
    numpy values in the meta are stored as plain lists/numbers so that the file loads with
    ``torch.load``'s default ``weights_only=True`` and no allow-list.
    """
    from unipose_ray.models import FrozenTeacher  # noqa: PLC0415 - models imports this module

    if isinstance(model, FrozenTeacher):
        model = model.model
    meta: dict[str, Any] = {
        "time": time.strftime("%Y%m%d_%H%M%S"),
        "simcc_split_ratio": model.spec.simcc_split_ratio,
        "input_size": list(model.spec.input_size),
        "num_keypoints": model.spec.num_keypoints,
    }
    if dataset_meta is not None:
        meta["dataset_meta"] = plain_values(dict(dataset_meta))
    meta.update(plain_values(dict(extra_meta or {})))
    state = {k: v.detach().cpu() for k, v in model.estimator.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": meta}, path)
    return path


def plain_values(value: Any) -> Any:
    """numpy arrays/scalars -> lists/Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {k: plain_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain_values(v) for v in value)
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


MODEL_CONFIG_NAME = "model_config.py"
"""The MMPose config a run of this project writes beside its ``best.pth``."""


def model_config_for(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None
                     ) -> Path:
    """The MMPose config file of ``checkpoint``: ``config`` if given, else the
    ``model_config.py`` a run of this project wrote beside it.

    Raises:
        FileNotFoundError: the checkpoint or the config is missing, with what to pass.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    path = Path(config) if config is not None else checkpoint.parent / MODEL_CONFIG_NAME
    if not path.is_file():
        hint = ("" if config is not None else
                f" (no --config given, and no {MODEL_CONFIG_NAME} beside the checkpoint as a "
                "run of this project writes it); pass the model's MMPose config with --config")
        raise FileNotFoundError(f"model config {path} does not exist{hint}")
    return path
