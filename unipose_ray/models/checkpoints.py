"""Checkpoint files: safe reading, strict loading into a model, writing MMPose's layout.

Checkpoints are read with ``torch.load(weights_only=True)`` plus a short allow-list
(numpy arrays/scalars/dtypes and mmengine's ``HistoryBuffer``, which OpenMMLab training
checkpoints carry in ``meta``/``message_hub``). A file that holds other pickled objects is
refused unless the caller opts in with ``trust_checkpoint=True``; a file that is not a
checkpoint at all (another kind of file, a truncated copy) is refused as such.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.dtypes
import torch

from unipose_ray.cli import InputError, UsageError
from unipose_ray.models.pose_model import FrozenTeacher, PoseModel
from unipose_ray.models.release import verify_released

TRUST_ARGUMENT = "trust_checkpoint=True"
"""How :func:`read_checkpoint`'s callers in Python opt in; a job passes its own name for
the option (``--trust-checkpoint``, ``teachers.0.trust_checkpoint=true``) as ``trust_hint``."""


class CheckpointError(UsageError, RuntimeError):
    """A checkpoint that is not one, cannot be read safely or does not fit the model."""


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


def read_checkpoint(path: str | os.PathLike, trust_checkpoint: bool = False,
                    trust_hint: str = TRUST_ARGUMENT) -> dict:
    """Load a checkpoint file onto the CPU, safely unless ``trust_checkpoint``.

    A file in a release folder is checked against its manifest first.

    Args:
        trust_hint: how the caller's user sets ``trust_checkpoint``, named in the error
            when the file holds objects that only a trusted load reads.

    Raises:
        InputError: no such file.
        CheckpointError: not a PyTorch checkpoint, or (not trusted) one holding pickled
            objects beyond the allow-list.
    """
    if not Path(path).is_file():
        raise InputError(f"checkpoint {path} does not exist")
    verify_released(path)
    check_checkpoint_format(path)
    if trust_checkpoint:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with checkpoint_safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unexpected = _unsafe_globals(path)
        if not unexpected:  # refused for another reason: torch's own error says which
            raise
        raise CheckpointError(
            f"{path} holds pickled Python objects that the safe loader does not read "
            f"(it reads tensors, numpy arrays/scalars and mmengine's HistoryBuffer): "
            f"{', '.join(unexpected)}. Unpickling them can run arbitrary code; if you trust "
            f"the file and where it came from, load it with {trust_hint}") from err


_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
"""The first bytes of a file ``torch.save`` wrote before PyTorch 1.6 (its magic number)."""


def check_checkpoint_format(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is laid out as ``torch.save`` writes:
    a zip archive holding a ``data.pkl`` (PyTorch >= 1.6), or the older pickle format.

    Reads the first bytes and the zip directory only: a truncated archive has lost its
    directory, which sits at the end.
    """
    with open(path, "rb") as file:
        head = file.read(len(_LEGACY_MAGIC))
    if head.startswith(_LEGACY_MAGIC):
        return
    if not head:
        problem = "the file is empty"
    elif not head.startswith(b"PK\x03\x04"):
        problem = ("neither the zip archive torch.save writes nor its pre-1.6 format: another "
                   "kind of file?")
    else:
        problem = _zip_problem(path)
        if problem is None:
            return
    raise CheckpointError(f"{path} is not a PyTorch checkpoint ({problem}); pass the .pth "
                          "file that torch.save, MMPose or a run of this project wrote")


def _zip_problem(path: str | os.PathLike) -> str | None:
    """What keeps a zip file from being a ``torch.save`` archive, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return ("a zip archive whose end is missing or damaged: a truncated copy or an "
                "interrupted download?")
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        return "a zip archive without the data.pkl that torch.save writes"
    return None


def _unsafe_globals(path: str | os.PathLike) -> list[str]:
    """The pickled classes and functions of a zip checkpoint outside torch's and this
    module's allow-lists, by name (none found for a pre-1.6 file: torch cannot list them)."""
    if not zipfile.is_zipfile(path):
        return []
    with checkpoint_safe_globals():
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))


def extract_state_dict(checkpoint: Any, source: str = "the checkpoint"
                       ) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict: under ``'state_dict'`` or top-level,
    without a DataParallel/DDP ``module.`` prefix. ``source`` names it in errors."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        found = "an empty one" if isinstance(state, Mapping) else type(checkpoint).__name__
        raise CheckpointError(f"{source} holds no state_dict of tensors ({found}): not a model "
                              "checkpoint?")
    out = {}
    for key, value in state.items():
        out[key.removeprefix("module.")] = value
    return out


def check_state_dict(
    model_state: Mapping[str, torch.Tensor], ckpt_state: Mapping[str, torch.Tensor],
    model_name: str = "the model",
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
    lines = [f"the checkpoint does not fit {model_name}:"]
    if mismatched:
        lines.append("shape mismatches (a different keypoint count or input size?):")
        lines += [f"  {m}" for m in mismatched]
    if missing:
        lines.append(f"missing keys ({len(missing)}): {missing[:20]}")
    if unexpected:
        lines.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
    raise CheckpointError("\n".join(lines))


def load_weights(model: PoseModel, path: str | os.PathLike, trust_checkpoint: bool = False,
                 trust_hint: str = TRUST_ARGUMENT, model_name: str = "the model") -> dict:
    """Load an MMPose checkpoint into ``model`` (strictly); return the checkpoint's ``meta``.

    ``trust_hint``: see :func:`read_checkpoint`; ``model_name`` names the model in errors.
    """
    checkpoint = read_checkpoint(path, trust_checkpoint, trust_hint)
    state = extract_state_dict(checkpoint, str(path))
    estimator = model.estimator
    try:
        check_state_dict(estimator.state_dict(), state, model_name)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    estimator.load_state_dict(state, strict=True)
    meta = checkpoint.get("meta") or {}
    if "dataset_meta" in meta:
        estimator.dataset_meta = meta["dataset_meta"]
    return meta


def load_backbone(model: PoseModel, path: str | os.PathLike, trust_checkpoint: bool = False,
                  trust_hint: str = TRUST_ARGUMENT) -> None:
    """Initialise ``model``'s backbone from the ``backbone.*`` tensors of a checkpoint.

    What RTMPose configs do with ``init_cfg=dict(type='Pretrained', prefix='backbone.',
    checkpoint=...)``: MMPose's released CSPNeXt backbones (``cspnext-s_udp-aic-coco_...``)
    are whole pose models, so any MMPose checkpoint of the same backbone fits; the head
    stays freshly initialised. Strict: every backbone tensor must be there, same shape.
    """
    state = extract_state_dict(read_checkpoint(path, trust_checkpoint, trust_hint), str(path))
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
        InputError: the checkpoint or the config is missing, with what to pass.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError(f"checkpoint {checkpoint} does not exist")
    path = Path(config) if config is not None else checkpoint.parent / MODEL_CONFIG_NAME
    if not path.is_file():
        hint = ("" if config is not None else
                f" (no --model-config given, and no {MODEL_CONFIG_NAME} beside the checkpoint as a "
                "run of this project writes it); pass the model's MMPose config with --model-config")
        raise InputError(f"model config {path} does not exist{hint}")
    return path


def half_checkpoint(source: str | os.PathLike, dest: str | os.PathLike,
                    keep: str | None = None, meta: Mapping[str, Any] | None = None) -> Path:
    """Copy an MMPose checkpoint with its floating-point tensors in fp16.

    Args:
        keep: only tensors whose name starts with this prefix (``backbone.``).
        meta: merged into the checkpoint's ``meta``.
    """
    checkpoint = read_checkpoint(source)
    state = {k: v.half() if v.is_floating_point() else v
             for k, v in extract_state_dict(checkpoint).items() if keep is None or k.startswith(keep)}
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": {**checkpoint.get("meta", {}), **(meta or {})}}, dest)
    return dest
