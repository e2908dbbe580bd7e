"""Typed run configs: the schema, YAML loading with presets, the data files, the resume record.

Everything here is plain frozen dataclasses and YAML: a job reads and checks its whole
config before it imports Ray, torch or MLflow.
"""

from unipose_ray.config.files import DataConfig, DatasetFiles
from unipose_ray.config.loading import ConfigError
from unipose_ray.config.models import PretrainConfig, StudentConfig, TeacherConfig
from unipose_ray.config.resolve import PRESETS, load_config, preset_path
from unipose_ray.config.schema import (
    AMP_MODES,
    KD_MASKS,
    SWEEP_SEARCHES,
    DistillConfig,
    LossConfig,
    OptimConfig,
    RunConfig,
    SweepConfig,
    TeacherCacheConfig,
    TrackingConfig,
)
from unipose_ray.config.settings import AugmentConfig, CodecConfig

__all__ = ["AMP_MODES", "KD_MASKS", "PRESETS", "SWEEP_SEARCHES", "AugmentConfig", "CodecConfig",
           "ConfigError", "DataConfig", "DatasetFiles", "DistillConfig", "LossConfig",
           "OptimConfig", "PretrainConfig", "RunConfig", "StudentConfig", "SweepConfig",
           "TeacherCacheConfig", "TeacherConfig", "TrackingConfig", "load_config",
           "preset_path"]
