"""The distillation workflow behind ``jobs/distill.py`` and ``jobs/train_teacher.py``.

1. data: generate it (demo) or check the given paths, then write Parquet record sets;
2. backbone: the given checkpoint, or a pretraining run (demo) that every model starts from;
3. teachers: use the given MMPose config + checkpoint, or train single-dataset teachers;
4. students: optionally the joint student without KD, then the distilled student;
5. the cross-dataset table of every model, printed and written to ``results.json``.

Every step reuses what an earlier run left in the output folder (generated data, record
files, trained teachers, Ray Train checkpoints), so a killed job started again goes on.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from unipose_ray.cli import InputError
from unipose_ray.config import DistillConfig, TeacherConfig
from unipose_ray.config.files import split_dataset
from unipose_ray.config.loading import ConfigError, build
from unipose_ray.data.records import read_records, write_records
from unipose_ray.data.sources import DataConfig, DatasetFiles, prepare_records
from unipose_ray.evaluation.cross_dataset import (
    EvalSet,
    evaluate_model,
    format_table,
    table_columns,
)
from unipose_ray.models import PoseModelSpec, build_from_config, build_teacher
from unipose_ray.models.checkpoints import load_backbone
from unipose_ray.paths import resolve_path
from unipose_ray.runtime.distributed import print0
from unipose_ray.skeleton import KEYPOINT_SETS, KeypointSet
from unipose_ray.teachers.service import StudentGrid, start_teachers, stop_teachers
from unipose_ray.tracking.runs import RunTracker
from unipose_ray.tracking.uris import resolve_tracking_uri
from unipose_ray.train.driver import export_best, run_training, uses_cache
from unipose_ray.train.job import TrainJob, build_student


@dataclass(frozen=True)
class PreparedData:
    """Record sets of a run.

    Attributes:
        train: per dataset (``coco``, ``mpii``, ...) the training record file.
        eval_sets: the validation sets.
    """

    train: dict[str, str]
    eval_sets: tuple[EvalSet, ...]

    def train_records(self, datasets: list[str], out: Path) -> str:
        """One record file with the training instances of ``datasets``."""
        missing = [d for d in datasets if d not in self.train]
        if missing:
            raise ValueError(f"no training split for {missing}; configure data.{missing[0]}_train")
        if len(datasets) == 1:
            return self.train[datasets[0]]
        path = out / f"train_{'_'.join(datasets)}.parquet"
        tables = [read_records(self.train[d]) for d in datasets]
        write_records(pa.concat_tables(tables), path)
        return str(path)


def generated_data_config(config: DistillConfig, output_dir: Path) -> DataConfig:
    """Generate the demo dataset (once) and describe it as a :class:`DataConfig`."""
    from unipose_ray.data.synthetic import SyntheticConfig, dataset_paths, generate_dataset  # noqa: PLC0415

    synthetic = build(SyntheticConfig, config.generate, "generate")
    if synthetic.skeleton != config.skeleton:  # a teacher of a dataset not generated
        missing = [d for d in config.datasets if d not in synthetic.datasets]
        raise ConfigError(
            f"the run's skeleton has the joints of {missing}, whose images are not generated, "
            f"so the generated files cannot label them; set generate.{missing[0]}_train and "
            f"generate.{missing[0]}_val")
    root = output_dir / "data"
    marker = root / "synthetic_config.json"
    wanted = json.dumps(synthetic.record(), sort_keys=True, default=list)  # as files.py writes it
    if not marker.exists() or json.dumps(json.loads(marker.read_text()), sort_keys=True, default=list) != wanted:
        print0(f"generating the demo dataset into {root}")
        generate_dataset(root, synthetic)
    paths = dataset_paths(root, synthetic)

    def files(dataset: str, split: str) -> DatasetFiles:
        return DatasetFiles(
            str(paths.annotation_file(dataset, split)), str(paths.images_dir(dataset, split)),
            unified_ann_file=str(paths.unified_val_file(dataset)) if split == "val" else None)

    return DataConfig(**{f"{dataset}_{split}": files(dataset, split)
                         for dataset in synthetic.datasets for split in ("train", "val")
                         if getattr(synthetic, f"{dataset}_{split}")})


def prepare_data(config: DistillConfig, output_dir: Path) -> tuple[DistillConfig, PreparedData]:
    """Check or generate the data, then write the record sets (reused when up to date).

    Every path it returns is absolute: workers read them in other folders."""
    output_dir = Path(output_dir).resolve()
    if config.generate is not None:
        config = replace(config, data=generated_data_config(config, output_dir))
    config = replace(config, data=config.data.resolved())  # workers run in another folder
    config.data.check()
    paths = prepare_records(config.data, output_dir / "records", config.skeleton)
    train = {split_dataset(name): str(p) for name, p in paths.items() if name.endswith("_train")}
    eval_sets = []
    for name, files in config.data.splits().items():
        if name.endswith("_val"):
            eval_sets.append(EvalSet(
                split_dataset(name), str(paths[name]), files.ann_file,
                files.unified_ann_file, config.run.val_samples, img_dir=files.img_dir,
                bbox_file=files.bbox_file, bbox_score_thr=files.bbox_score_thr))
    return config, PreparedData(train, tuple(eval_sets))


def resolve_teachers(config: DistillConfig) -> DistillConfig:
    """The teachers' config and checkpoint paths made absolute on the driver (actors and
    workers run in other folders); each must exist. A local cache folder, too."""
    teachers = []
    for teacher in config.teachers:
        paths = {}
        for what in ("config", "checkpoint"):
            path = getattr(teacher, what)
            if path is None or not Path(path).is_file():
                raise InputError(
                    f"teacher '{teacher.name}': {what} {path} does not exist (relative paths "
                    f"are read from {Path.cwd()}; set teachers.N.{what}=...)")
            paths[what] = str(Path(path).resolve())
        teachers.append(replace(teacher, **paths))
    cache = config.teacher_cache
    if cache.uri is not None:
        cache = replace(cache, uri=resolve_path(cache.uri))
    return replace(config, teachers=tuple(teachers), teacher_cache=cache)


def check_teachers(config: DistillConfig) -> dict[str, PoseModelSpec]:
    """Build every teacher once on the CPU: bad files fail here, before any training.

    Expects :func:`resolve_teachers`' paths.
    """
    specs = {}
    for i, teacher in enumerate(config.teachers):
        for what in ("config", "checkpoint"):
            path = getattr(teacher, what)
            if path is None or not Path(path).is_file():
                raise InputError(f"teacher '{teacher.name}': {what} {path} does not exist")
        model = build_teacher(teacher.config, teacher.checkpoint,
                              trust_checkpoint=teacher.trust_checkpoint,
                              trust_hint=f"teachers.{i}.trust_checkpoint=true")
        expected = KEYPOINT_SETS[teacher.dataset].num_keypoints
        if model.spec.num_keypoints != expected:
            raise ConfigError(f"teacher '{teacher.name}' ({teacher.checkpoint}) predicts "
                              f"{model.spec.num_keypoints} keypoints but dataset "
                              f"'{teacher.dataset}' has {expected}: set that teacher's dataset "
                              "to the one its checkpoint was trained on")
        specs[teacher.name] = model.spec
    return specs


def train_model(config: DistillConfig, data: PreparedData, output_dir: Path, datasets: list[str],
                teacher_specs: dict[str, PoseModelSpec] | None = None,
                tracking_name: str | None = None, parent_run_id: str | None = None):
    """Train one model (teacher, baseline, distilled student or pretraining run).

    Returns its folder and the Ray ``Result``. A heatmap model (pretraining) is not
    validated: the SimCC metrics do not apply; its loss curve is in MLflow.
    ``tracking_name`` / ``parent_run_id``: the MLflow run's name and parent.
    """
    run_dir = output_dir / "models" / config.run.name
    job = TrainJob(
        config=config,
        train_records=data.train_records(datasets, output_dir / "records"),
        eval_sets=data.eval_sets if config.student.head == "simcc" else (),
        teacher_specs=teacher_specs or {},
        output_dir=str(run_dir),
        tracking_uri=resolve_tracking_uri(config.tracking.tracking_uri, output_dir),
        tracking_name=tracking_name,
        parent_run_id=parent_run_id,
    )
    return run_dir, fit_with_teachers(job)


def fit_with_teachers(job: TrainJob):
    """Start the job's teacher services (when online), fit, stop them; returns the Result."""
    config = job.config
    pools = None
    if config.teachers and job.teachers_online and not uses_cache(config):
        grid = StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)
        pools, group = start_teachers(config.teachers, grid)
        for pool in pools.values():
            pool.wait_ready()
        print0(f"[{config.run.name}] teacher services ready: "
               + ", ".join(f"{t.name} x{t.replicas}" for t in config.teachers))
    try:
        result = run_training(job, pools)
    finally:
        if pools:
            stop_teachers(pools, group)
    export_best(result, job)
    return result


def teacher_run(config: DistillConfig, teacher: TeacherConfig) -> DistillConfig:
    """The config that trains ``teacher`` on its own dataset (no KD)."""
    codec = teacher.train_codec or config.student.codec
    return replace(
        config,
        student=replace(config.student, size=teacher.train_size, dataset=teacher.dataset, codec=codec),
        teachers=(),
        loss=replace(config.loss, w_gt=1.0),
        optim=replace(config.optim, epochs=config.teacher_epochs or config.optim.epochs),
        run=replace(config.run, name=f"{config.run.name}_teacher_{teacher.name}"),
    )


@dataclass(frozen=True)
class Run:
    """One training of a workflow: its config, datasets, teachers and MLflow name."""

    config: DistillConfig
    datasets: list[str]
    teacher_specs: dict[str, PoseModelSpec]
    name: str


def train_concurrently(runs: list[Run], data: PreparedData, output_dir: Path, parallel: int,
                       parent_run_id: str | None = None) -> list[Path]:
    """Train independent models side by side (``parallel`` at a time) on the same cluster."""
    def train(run: Run) -> Path:
        return train_model(run.config, data, output_dir, run.datasets, run.teacher_specs,
                           run.name, parent_run_id)[0]

    if parallel <= 1 or len(runs) <= 1:
        return [train(r) for r in runs]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(train, runs))


def teacher_run_dir(config: DistillConfig, teacher: TeacherConfig, output_dir: Path) -> Path:
    """Where a teacher trained here keeps its ``best.pth`` and ``model_config.py``."""
    return output_dir / "models" / f"{config.run.name}_teacher_{teacher.name}"


def ensure_teachers(config: DistillConfig, data: PreparedData, output_dir: Path,
                    parent_run_id: str | None = None) -> DistillConfig:
    """Train the teachers that came without a checkpoint (the paper's self-trained teachers)."""
    teachers, runs = [], []
    for teacher in config.teachers:
        if teacher.checkpoint is None:
            run_dir = teacher_run_dir(config, teacher, output_dir)
            if not (run_dir / "best.pth").exists():
                print0(f"training teacher '{teacher.name}' on {teacher.dataset}")
                runs.append(Run(teacher_run(config, teacher), [teacher.dataset], {},
                                f"teacher_{teacher.name}"))
            teacher = replace(teacher, config=str(run_dir / "model_config.py"),
                              checkpoint=str(run_dir / "best.pth"))
        teachers.append(teacher)
    train_concurrently(runs, data, output_dir, config.parallel_runs, parent_run_id)
    return replace(config, teachers=tuple(teachers))


def ensure_backbone(config: DistillConfig, data: PreparedData, output_dir: Path,
                    parent_run_id: str | None = None) -> DistillConfig:
    """Check the configured backbone checkpoint, or run ``pretrain`` and use its backbone."""
    if config.student.head != "simcc":
        raise ConfigError("student.head 'heatmap' is only for the run the pretrain section "
                          "starts; set pretrain instead")
    student = config.student
    if student.backbone_checkpoint is None and config.pretrain is not None:
        student = replace(student, backbone_checkpoint=str(
            pretrain_backbone(config, data, output_dir, parent_run_id)))
    if student.backbone_checkpoint is not None:
        path = Path(student.backbone_checkpoint).resolve()  # Ray Train workers run elsewhere
        if not path.is_file():
            raise FileNotFoundError(f"student.backbone_checkpoint {path} does not exist")
        load_backbone(build_student(config), path)  # a wrong file fails here, not in a worker
        student = replace(student, backbone_checkpoint=str(path))
    return replace(config, student=student)


def pretrain_backbone(config: DistillConfig, data: PreparedData, output_dir: Path,
                      parent_run_id: str | None = None) -> Path:
    """Train the ``pretrain`` run (heatmap head, no validation) once; returns its checkpoint.

    The file is a whole MMPose pose model (``backbone.*`` + ``head.*``), like MMPose's
    released ``cspnext-*_udp_*`` checkpoints.
    """
    pretrain = config.pretrain
    run_dir = output_dir / "models" / f"{config.run.name}_pretrain"
    final = run_dir / "pretrained.pth"
    wanted = {"size": config.student.size, "dataset": pretrain.dataset, "epochs": pretrain.epochs,
              "input_size": list(config.student.codec.input_size)}
    marker = run_dir / "pretrain.json"
    if final.exists():
        made = json.loads(marker.read_text()) if marker.exists() else None
        if made != wanted:
            raise ConfigError(f"{final} was pretrained with {made}, this config asks for "
                              f"{wanted}; delete {run_dir} to pretrain again")
        return final
    print0(f"pretraining the RTMPose-{config.student.size} backbone on {pretrain.dataset} "
           "heatmaps")
    run = replace(
        config,
        student=replace(config.student, dataset=pretrain.dataset, head="heatmap",
                        backbone_checkpoint=None),
        teachers=(),
        loss=replace(config.loss, w_gt=1.0),
        optim=replace(config.optim, epochs=pretrain.epochs, ema=False),
        run=replace(config.run, name=run_dir.name, cpus_per_worker=pretrain.cpus_per_worker,
                    val_every_epochs=pretrain.epochs),
        pretrain=None,
    )
    _, result = train_model(run, data, output_dir, [pretrain.dataset],
                            tracking_name="pretrain_backbone", parent_run_id=parent_run_id)
    if result.checkpoint is None:
        raise RuntimeError(f"the pretraining run left no checkpoint under {run_dir}; delete "
                           "that folder and start again")
    with result.checkpoint.as_directory() as path:
        partial = final.with_suffix(".partial")
        shutil.copyfile(Path(path) / "student.pth", partial)
        os.replace(partial, final)  # a killed copy never looks finished
    marker.write_text(json.dumps(wanted))
    return final


def evaluate_checkpoint(run_dir: Path, keypoints: str | KeypointSet, data: PreparedData,
                        skeleton: KeypointSet, flip_test: bool = True) -> dict[str, float]:
    """Evaluate a trained model's ``best.pth`` (predicting ``keypoints``) on the validation
    sets (records in ``skeleton``'s slots)."""
    model = build_from_config(run_dir / "model_config.py", run_dir / "best.pth")
    return evaluate_model(model, keypoints, model.spec.codec, data.eval_sets,
                          flip_test=flip_test, skeleton=skeleton)


def run_train_teacher(config: DistillConfig, teacher_name: str, output_dir: str | Path
                      ) -> dict[str, float]:
    """Train one single-dataset teacher (no KD) and evaluate it; returns its metrics."""
    output_dir = Path(output_dir).resolve()
    teachers = {t.name: t for t in config.teachers}
    if teacher_name not in teachers:
        raise KeyError(f"no teacher '{teacher_name}' in the config; teachers: {sorted(teachers)}")
    teacher = replace(teachers[teacher_name], checkpoint=None)
    config = replace(config, teachers=(teacher,))  # re-checked: it is trained here now
    config, data = prepare_data(config, output_dir)
    RunTracker(resolve_tracking_uri(config.tracking.tracking_uri, output_dir)).prepare(
        config.tracking.experiment)
    run = teacher_run(ensure_backbone(config, data, output_dir), teacher)
    run_dir, _ = train_model(run, data, output_dir, [teacher.dataset])
    metrics = evaluate_checkpoint(run_dir, teacher.dataset, data, config.skeleton)
    print0("\n" + format_table({f"teacher_{teacher_name}": metrics},
                               table_columns(config.datasets, transfer=False)))
    print0(f"\nMMPose config and checkpoint: {run_dir / 'model_config.py'}, {run_dir / 'best.pth'}")
    return metrics
