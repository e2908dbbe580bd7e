"""Import MMPose on top of ``mmcv-lite``.

``mmcv-lite`` ships no compiled ops, yet ``mmpose.models`` imports a few of them at module
level (deformable attention for EDPose, NMS for RTMO). RTMPose (CSPNeXt + RTMCCHead) uses
none of them, so a placeholder ``mmcv.ops`` module whose members raise a clear error when
used lets everything else import. This is the one place that knows about it, and about
the warnings that follow from it (silenced: a user reads progress, not framework noise).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings

_MESSAGE = (
    "mmcv.ops.{name} needs the compiled ops of the full `mmcv` package, which unipose_ray "
    "does not install (it uses mmcv-lite). RTMPose does not need it; install full mmcv "
    "built for your torch version if you use a model that does."
)


def _placeholder(name: str) -> type:
    if name.startswith("_"):  # keep module introspection (__file__, __spec__) honest
        raise AttributeError(name)

    def fail(*args, **kwargs):
        raise RuntimeError(_MESSAGE.format(name=name))

    return type(name, (), {"__init__": fail, "__call__": fail, "__new__": fail})


def install_mmcv_ops_placeholder() -> None:
    """Register a placeholder ``mmcv.ops`` unless a real one can be imported."""
    if "mmcv.ops" in sys.modules:
        return
    if _has_compiled_mmcv_ops():
        return
    module = types.ModuleType("mmcv.ops")
    module.__getattr__ = _placeholder  # PEP 562: any name resolves to a placeholder
    module.__path__ = []  # lets `from mmcv.ops.x import y` fail as a package would
    sys.modules["mmcv.ops"] = module


def _has_compiled_mmcv_ops() -> bool:
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def quiet_mmpose_warnings() -> None:
    """Drop the warnings MMPose 1.3.2 raises on every import and forward pass here: mmcv-lite
    has no deformable attention (RTMPose does not use it) and CSPNeXt calls the deprecated
    ``torch.cuda.amp.autocast`` (harmless; an MMPose matter)."""
    warnings.filterwarnings("ignore", message="Fail to import ``MultiScaleDeformableAttention``")
    warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is "
                            "deprecated", category=FutureWarning)


def import_mmpose() -> types.ModuleType:
    """Import and return ``mmpose`` with the placeholder in place."""
    install_mmcv_ops_placeholder()
    quiet_mmpose_warnings()
    import mmpose  # noqa: PLC0415
    import mmpose.codecs  # noqa: F401, PLC0415
    import mmpose.models  # noqa: F401, PLC0415

    return mmpose
