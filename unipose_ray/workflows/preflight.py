"""Everything a run needs, checked before it imports Ray, MLflow or the model stack.

A job calls these right after reading its config: every missing or misplaced input is
listed in one :class:`~unipose_ray.cli.InputError` (not one per half-minute attempt), and
a sweep that cannot rank its trials is refused before any data is generated. What needs
the models (a checkpoint that does not fit its config) is checked next, still before any
training (``workflow.check_teachers``). Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unipose_ray.cli import InputError
from unipose_ray.config import ConfigError, DistillConfig
from unipose_ray.config.files import DatasetFiles
from unipose_ray.config.schema import GENERATED_BY_DEFAULT, generated_datasets
from unipose_ray.data.formats import check_annotation_format
from unipose_ray.evaluation.names import metric_names
from unipose_ray.paths import is_uri

FORMATS = {"ann_file": None, "unified_ann_file": "coco", "bbox_file": "coco_results",
           "headbox_file": "mpii_mat"}
"""The format each data file must have (``ann_file``: its dataset's, ``coco`` or ``mpii``)."""


def check_inputs(config: DistillConfig, *, sweep: bool = False) -> None:
    """Every local file and folder the run reads exists and has its format; all that do
    not are named in one error. ``sweep``: the swept sizes' backbones too.

    Raises:
        InputError: one line per missing or wrong input, then how paths are read.
    """
    problems = [] if config.generate is not None else _data_problems(config)
    files = {"student.backbone_checkpoint": config.student.backbone_checkpoint}
    for i, teacher in enumerate(config.teachers):
        if teacher.checkpoint is None:
            continue  # trained here (the demo's self-trained preset)
        if teacher.config is None:
            problems.append(f"teachers.{i}.config is not set: teacher '{teacher.name}' has a "
                            "checkpoint but no MMPose config (.py) to build it from")
        files |= {f"teachers.{i}.config": teacher.config,
                  f"teachers.{i}.checkpoint": teacher.checkpoint}
    if sweep:
        files |= {f"sweep.backbones.{size}": path
                  for size, path in config.sweep.backbones.items()}
    problems += [f"{name} = {path} does not exist" for name, path in files.items()
                 if path is not None and not is_uri(path) and not Path(path).is_file()]
    cache = config.teacher_cache.uri
    if cache and not is_uri(cache) and Path(cache).is_file():
        problems.append(f"teacher_cache.uri = {cache} is a file, not a cache folder (one "
                        "jobs/build_cache.py writes, or a new folder to build it in)")
    if problems:
        raise InputError("the run cannot start:\n  " + "\n  ".join(problems)
                         + f"\n(relative paths are read from {Path.cwd()}; set each with "
                         "its key, e.g. teachers.0.checkpoint=/path/to/file.pth)")


def _data_problems(config: DistillConfig) -> list[str]:
    problems = []
    for split, files in config.data.splits().items():
        missing = files.missing(f"data.{split}")
        problems += [f"{line} does not exist" for line in missing]
        problems += _format_problems(split, files)
    return problems


def _format_problems(split: str, files: DatasetFiles) -> list[str]:
    """The annotation files of ``split`` that exist but hold another format."""
    problems = []
    for name, expected in FORMATS.items():
        path, field = getattr(files, name), f"data.{split}.{name}"
        if path is None or is_uri(path) or not Path(path).is_file():
            continue  # missing ones are named as such
        try:
            check_annotation_format(path, expected or split.split("_")[0], field)
        except InputError as error:
            problems.append(str(error))
    return problems


@dataclass(frozen=True)
class ValidationFiles:
    """What a validation set reports depends on (as ``cross_dataset.EvalSet``'s fields)."""

    name: str
    ann_file: str | None
    unified_ann_file: str | None = None
    bbox_file: str | None = None


def validation_files(config: DistillConfig) -> tuple[ValidationFiles, ...]:
    """The run's validation sets as its config names them (generated data: each generated
    dataset's, with its whole-skeleton file)."""
    if config.generate is not None:
        return tuple(ValidationFiles(d, "generated", "generated")
                     for d in generated_datasets(config.generate)
                     if config.generate.get(f"{d}_val", d in GENERATED_BY_DEFAULT))
    return tuple(ValidationFiles(split.removesuffix("_val"), files.ann_file,
                                 files.unified_ann_file, files.bbox_file)
                 for split, files in config.data.splits().items() if split.endswith("_val"))


def check_sweep(config: DistillConfig, eval_sets=None) -> None:
    """Refuse a sweep that cannot rank its trials, before any data is read or generated.

    ``eval_sets``: what the validation runs on (default: as the config names it).

    Raises:
        ConfigError: naming what is wrong and how to fix it.
    """
    sweep = config.sweep
    if not config.teachers:
        raise ConfigError("a sweep of the KD weights needs teachers; the config has none")
    reported = sorted(f"val/{name}" for name in
                      metric_names(validation_files(config) if eval_sets is None else eval_sets))
    if sweep.metric not in reported:
        raise ConfigError(
            f"sweep.metric '{sweep.metric}' is never reported: validation on this config's "
            f"sets reports {', '.join(reported)}")
    if config.run.val_every_epochs > config.optim.epochs:
        raise ConfigError(
            f"no trial would validate (run.val_every_epochs={config.run.val_every_epochs} > "
            f"optim.epochs={config.optim.epochs}), so '{sweep.metric}' is never reported; "
            f"lower run.val_every_epochs")
    names = [t.name for t in config.teachers]
    if sweep.search == "grid" and any(len(w) != 1 + len(names) for w in sweep.grid):
        raise ConfigError(f"sweep.grid holds (w_gt, {', '.join(names)}) tuples of "
                          f"{1 + len(names)} numbers; got {[list(w) for w in sweep.grid]}")
    own = config.student.backbone_checkpoint or ("pretrained" if config.pretrain else None)
    backbones = {**({config.student.size: own} if own else {}), **sweep.backbones}
    missing = [size for size in sweep.sizes if size not in backbones]
    if backbones and missing:
        raise ConfigError(
            f"sweep.sizes {list(sweep.sizes)}: the student starts from a pretrained backbone "
            f"(student.backbone_checkpoint, size '{config.student.size}') but sizes {missing} "
            f"have none; give sweep.backbones: {{{missing[0]}: <cspnext-{missing[0]} "
            "checkpoint>}")
