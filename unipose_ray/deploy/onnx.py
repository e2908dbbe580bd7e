"""ONNX export of a pose model on the mmdeploy convention, and a runner for such files.

The file holds the network only, as mmdeploy writes RTMPose and rtmlib runs it: one input
``input``, float32 ``(B, 3, H, W)`` **already normalised** (the model's channel order, mean
and std are applied outside the graph), and two outputs ``simcc_x (B, K, Wx)`` and
``simcc_y (B, K, Wy)``, raw SimCC logits, with a dynamic batch axis. Everything a runner
needs to prepare crops and decode keypoints is in the model's ``metadata_props``; every value
there is JSON text:

=====================  ===================================================================
``unipose_ray.format``  ``"simcc-pose/1"``: marks a file written by :func:`export_onnx`
``input_size``          ``[w, h]`` of the crop in pixels
``simcc_split_ratio``   SimCC bins per pixel
``sigma``               ``[sigma_x, sigma_y]`` of the SimCC training labels, in bins
``num_keypoints``       K
``flip_test``           whether the model's predictions average the crop with its mirror
``keypoint_names``      the K joint names, in output order
``channel_order``       ``"rgb"`` or ``"bgr"``: the order the network takes its channels in
``mean``, ``std``       per channel, in ``channel_order``, on 0-255 pixel values
=====================  ===================================================================

so ``input = (crop[channel_order] - mean) / std``. :class:`OnnxPoseModel` does exactly that
and is a drop-in for :class:`~unipose_ray.models.PoseModel` on the CPU;
:func:`load_pose_model` returns either from a file name.

Exporter: ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript, opset 18).
With torch 2.15 both it and the legacy TorchScript exporter (``dynamo=False``, still there)
export RTMPose (CSPNeXt; RTMCCHead with its GAU block and scale-norm) with identical decoded
keypoints, and onnxruntime's logits are as close to PyTorch's float64 result as PyTorch's
own float32 ones (both ~1e-5 off for RTMPose-t, ~1e-4 for RTMPose-m, on weights with
logits of a few units and the real COCO samples' crops). The dynamo one is kept: it is
PyTorch's maintained default, where the legacy one warns that it will be removed, and it
writes static keypoint and bin axes where the legacy one left K symbolic. It is slower to
export (~6 s for RTMPose-t on 2 cores, against ~1 s).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unipose_ray.cli import InputError, UsageError
from unipose_ray.models import FrozenTeacher, PoseModel, PoseModelSpec, build_from_config
from unipose_ray.models.checkpoints import TRUST_ARGUMENT, model_config_for
from unipose_ray.skeleton import KEYPOINT_SETS, keypoint_set_of

FORMAT_KEY = "unipose_ray.format"
FORMAT = "simcc-pose/1"
INPUT_NAME = "input"
OUTPUT_NAMES = ("simcc_x", "simcc_y")
DEFAULT_OPSET = 18  # the dynamo exporter's native opset; lower ones go through a converter
METADATA_KEYS = (FORMAT_KEY, "input_size", "simcc_split_ratio", "sigma", "num_keypoints",
                 "flip_test", "keypoint_names", "channel_order", "mean", "std")


class ExportError(UsageError, ValueError):
    """A model or file outside the export convention (module doc), or asked to run where
    this runner cannot."""


class _NormalisedNetwork(nn.Module):
    """The exported graph: ``(B, 3, H, W)`` normalised input -> SimCC logits."""

    def __init__(self, estimator: nn.Module) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.estimator.head(self.estimator.extract_feat(x))


def keypoint_names_of(model: PoseModel) -> tuple[str, ...]:
    """The joint names of ``model``'s outputs.

    From the checkpoint's ``dataset_meta`` when it carried one, else this project's keypoint
    set of that size (:func:`~unipose_ray.skeleton.keypoint_set_of`: 21 unified, 17 COCO...).

    Raises:
        ExportError: neither gives K names; pass them to :func:`export_onnx`.
    """
    k = model.spec.num_keypoints
    meta = getattr(getattr(model, "estimator", None), "dataset_meta", None) or {}
    id2name = meta.get("keypoint_id2name")
    if id2name and len(id2name) == k:
        return tuple(str(id2name[i]) for i in sorted(id2name, key=int))
    try:
        return KEYPOINT_SETS[keypoint_set_of(k)].names
    except ValueError as err:
        raise ExportError(f"{err}, and its checkpoint names no joints (no dataset_meta): "
                          "pass keypoint_names") from None


def export_metadata(model: PoseModel, keypoint_names: Sequence[str]) -> dict[str, str]:
    """The ``metadata_props`` of ``model``'s export (JSON text per key, see the module doc)."""
    spec = model.spec
    if len(keypoint_names) != spec.num_keypoints:
        raise ValueError(f"{len(keypoint_names)} keypoint names for a model with "
                         f"{spec.num_keypoints} keypoints")
    values: dict[str, Any] = {
        FORMAT_KEY: FORMAT,
        "input_size": list(spec.input_size),
        "simcc_split_ratio": spec.simcc_split_ratio,
        "sigma": list(spec.sigma),
        "num_keypoints": spec.num_keypoints,
        "flip_test": spec.flip_test,
        "keypoint_names": [str(n) for n in keypoint_names],
        "channel_order": "bgr" if model.rgb_to_bgr else "rgb",
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
    }
    return {key: json.dumps(value) for key, value in values.items()}


def export_onnx(
    model: PoseModel | FrozenTeacher,
    path: str | os.PathLike,
    keypoint_names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``model``'s network as an ONNX file on the mmdeploy convention (module doc).

    Args:
        model: the pose model (exported in eval mode; its mode is restored afterwards).
        path: the ``.onnx`` file; written to a temporary file beside it, then renamed.
        keypoint_names: the K joint names; default :func:`keypoint_names_of`.
        opset: ONNX opset of the file.

    Returns:
        ``path``.
    """
    import onnx  # noqa: PLC0415 - only exporting needs it

    if isinstance(model, FrozenTeacher):
        model = model.model
    names = tuple(keypoint_names) if keypoint_names is not None else keypoint_names_of(model)
    metadata = export_metadata(model, names)
    w, h = model.spec.input_size
    # Batch 2: torch.export specialises on an example batch of 1.
    example = torch.randn(2, 3, h, w, dtype=model.mean.dtype, device=model.mean.device)
    was_training = model.training
    network = _NormalisedNetwork(model.estimator).eval()  # BatchNorm on running statistics
    try:
        with torch.no_grad():
            _check_outputs(network(example), model.spec)
        program = torch.onnx.export(
            network, (example,), None, dynamo=True, verbose=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    finally:
        model.train(was_training)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    return write_model_atomically(proto, path)


def _check_outputs(outputs: Any, spec: PoseModelSpec) -> None:
    """The network must return ``((B, K, Wx), (B, K, Wy))``, as its spec says."""
    expected = [(spec.num_keypoints, bins) for bins in spec.simcc_bins]
    if (not isinstance(outputs, tuple | list) or len(outputs) != 2
            or [tuple(o.shape[1:]) for o in outputs] != expected):
        got = ([tuple(o.shape) for o in outputs] if isinstance(outputs, tuple | list)
               else type(outputs).__name__)
        raise ExportError(f"only SimCC pose models export: expected outputs (B, K, Wx), "
                          f"(B, K, Wy) = (B, {expected[0]}), (B, {expected[1]}), got {got}")


def write_model_atomically(proto: Any, path: str | os.PathLike) -> Path:
    """Save an ONNX ``ModelProto`` to ``path`` through a temporary file in its folder, so a
    reader never sees half a file and a failed write leaves any previous file intact."""
    import onnx  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save_model(proto, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class OnnxPoseModel:
    """An exported pose model run by onnxruntime on the CPU, with ``PoseModel``'s contract.

    ``model(images)`` takes ``(B, 3, H, W)`` RGB 0-255 images (uint8 or float, torch or
    numpy), normalises them as :class:`~unipose_ray.models.PoseModel` does and returns
    float32 torch tensors ``(simcc_x (B, K, Wx), simcc_y (B, K, Wy))``.

    Attributes:
        path: the ``.onnx`` file.
        spec: the :class:`PoseModelSpec` from its metadata.
        keypoint_names: the K joint names, in output order.
        mean, std: ``(1, 3, 1, 1)`` float32, in the network's channel order.
        rgb_to_bgr: whether the network takes BGR (images are flipped before normalising).
        training: always False (there is nothing to train).
    """

    training = False

    def __init__(self, path: str | os.PathLike, intra_op_threads: int | None = None) -> None:
        """Load ``path``; ``intra_op_threads`` caps onnxruntime's threads (None: its default).

        Raises:
            InputError: no such file.
            ExportError: not an ONNX file, or not one :func:`export_onnx` wrote.
        """
        self.path = Path(path)
        self._session = _cpu_session(self.path, intra_op_threads)
        meta = _read_metadata(self._session, self.path)
        self.spec = PoseModelSpec(
            num_keypoints=int(meta["num_keypoints"]),
            input_size=tuple(int(s) for s in meta["input_size"]),
            simcc_split_ratio=float(meta["simcc_split_ratio"]),
            sigma=tuple(float(s) for s in meta["sigma"]),
            flip_test=bool(meta["flip_test"]),
        )
        self.keypoint_names: tuple[str, ...] = tuple(meta["keypoint_names"])
        self.rgb_to_bgr = meta["channel_order"] == "bgr"
        self.mean = torch.tensor(meta["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(meta["std"], dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` RGB 0-255 -> ``((B, K, Wx), (B, K, Wy))`` float32 SimCC logits."""
        images = torch.as_tensor(images).cpu()
        w, h = self.spec.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, h, w):
            raise ValueError(
                f"expected images of shape (B, 3, {h}, {w}) (RGB, 0-255) for input size "
                f"(w, h) = {self.spec.input_size}, got {tuple(images.shape)}"
            )
        x = images.to(torch.float32)
        if self.rgb_to_bgr:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        simcc_x, simcc_y = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        return torch.from_numpy(simcc_x), torch.from_numpy(simcc_y)

    def eval(self) -> OnnxPoseModel:
        """No-op (always in inference mode), for code that toggles torch models' modes."""
        return self

    def train(self, mode: bool = True) -> OnnxPoseModel:  # noqa: ARG002 - never trains
        """No-op: an exported model has no training mode."""
        return self

    def to(self, device: str | torch.device) -> OnnxPoseModel:
        """Only the CPU: this runner uses onnxruntime's CPU provider."""
        if torch.device(device).type != "cpu":
            raise ExportError(f"{self.path} runs on onnxruntime's CPU provider; device "
                              f"'{device}' is not supported (use 'cpu', or the .pth checkpoint "
                              "with PyTorch for a GPU)")
        return self


def _cpu_session(path: Path, intra_op_threads: int | None) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    if not path.is_file():
        raise InputError(f"ONNX model {path} does not exist")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: not its notes on unused initialisers
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ExportError(f"{path} cannot be loaded by onnxruntime (not an ONNX model?): "
                          f"{err}") from err


def _read_metadata(session: Any, path: Path) -> dict[str, Any]:
    """The decoded metadata of an export, checked for every key and for the I/O names."""
    props = session.get_modelmeta().custom_metadata_map
    missing = [key for key in METADATA_KEYS if key not in props]
    if missing:
        raise ExportError(f"{path} is not a pose model exported by unipose_ray.deploy.onnx "
                          f"(metadata {missing} missing); export it with jobs/export.py")
    meta = {key: json.loads(props[key]) for key in METADATA_KEYS}
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise ExportError(f"{path}: expected input {[INPUT_NAME]} and outputs "
                          f"{list(OUTPUT_NAMES)}, the file has {inputs} and {outputs}")
    if meta[FORMAT_KEY] != FORMAT or meta["channel_order"] not in ("rgb", "bgr"):
        raise ExportError(f"{path}: unsupported export format {meta[FORMAT_KEY]!r} / channel "
                          f"order {meta['channel_order']!r} (this version reads {FORMAT!r})")
    return meta


def load_pose_model(
    checkpoint: str | os.PathLike,
    config: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    trust_checkpoint: bool = False,
    trust_hint: str = TRUST_ARGUMENT,
) -> PoseModel | OnnxPoseModel:
    """Either kind of pose model file: ``.onnx`` -> :class:`OnnxPoseModel` (CPU), anything
    else -> :func:`~unipose_ray.models.build_from_config` with the checkpoint's config.

    Args:
        checkpoint: an ``.onnx`` export or an MMPose ``.pth`` checkpoint.
        config: the checkpoint's MMPose config; default ``model_config.py`` beside it.
            Not accepted with an ``.onnx`` file, which carries its own settings.
        device: where the model runs (``cpu`` only for ``.onnx``).
        trust_checkpoint, trust_hint: see :func:`~unipose_ray.models.build_from_config`.

    Raises:
        InputError: a missing file (with what to pass).
        CheckpointError: a checkpoint that is not one, cannot be read safely or does not
            fit the config.
        ExportError: an unreadable ``.onnx`` file, a config with one, or a non-CPU device.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.suffix.lower() == ".onnx":
        if config is not None:
            raise ExportError(f"{checkpoint} is an ONNX export: it carries its own settings, so "
                              f"no config ({config}) is used with it")
        return OnnxPoseModel(checkpoint).to(device)
    return build_from_config(model_config_for(checkpoint, config), checkpoint, device=device,
                             trust_checkpoint=trust_checkpoint, trust_hint=trust_hint)
