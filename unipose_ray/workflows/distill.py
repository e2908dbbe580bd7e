"""The comparison behind ``jobs/distill.py``: teachers, joint student, distilled student.

1. data, backbone and teachers (:mod:`unipose_ray.workflows.training`: generated or given, released
   or trained here);
2. each teacher's evaluation started (Ray tasks on the teachers' resources,
   :mod:`unipose_ray.workflows.evaluation`); the joint student without KD and the distilled
   student trained side by side meanwhile; the teachers' metrics collected, then the
   students evaluated the same way;
3. the cross-dataset table, printed and written to ``results.json`` with the paper's claim
   checked on it, and a picture of each model's skeletons on validation images.

MLflow: one parent run per comparison, the models as its child runs named as the table's
rows (``teacher_coco``, ``student_distilled``, ...), each with its final metrics under
``final/``; the parent holds the table, ``results.json`` and the pictures. A killed job
started again goes on where it stopped, in the same runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2

from unipose_ray.config import DistillConfig, TeacherConfig
from unipose_ray.evaluation.cross_dataset import (
    as_percent,
    eval_inputs,
    format_table,
    table_columns,
)
from unipose_ray.evaluation.pictures import validation_picture
from unipose_ray.models import build_from_config
from unipose_ray.runtime.distributed import print0
from unipose_ray.skeleton import DATASET_SETS
from unipose_ray.teacher_cache.build import ensure_cache
from unipose_ray.tracking.params import run_params
from unipose_ray.tracking.runs import PARENT_TAG, RunTracker, child_key
from unipose_ray.tracking.uris import resolve_tracking_uri
from unipose_ray.train.driver import uses_cache
from unipose_ray.workflows.evaluation import (
    PendingEvaluation,
    student_workers,
    submit_evaluation,
    teacher_workers,
)
from unipose_ray.workflows.training import (
    PreparedData,
    Run,
    check_teachers,
    ensure_backbone,
    ensure_teachers,
    prepare_data,
    resolve_teachers,
    train_concurrently,
)

JOINT, DISTILLED = "student_joint_no_kd", "student_distilled"
CLAIM_METRICS = ("coco_AP", "unified_AP", "transfer_PCK")
"""The paper's finding: distillation beats joint training on these (and each teacher on score)."""


def run_distill(config: DistillConfig, output_dir: str | Path) -> dict[str, dict[str, float]]:
    """The whole comparison; returns ``row -> metrics`` (also in ``results.json``)."""
    output_dir = Path(output_dir).resolve()
    config, data = prepare_data(config, output_dir)
    uri = resolve_tracking_uri(config.tracking.tracking_uri, output_dir)
    parent = RunTracker(uri).start(  # fails early on an unreachable server, too
        config.tracking.experiment, config.run.name, params=run_params(config),
        tags={"unipose_ray.kind": "comparison", "unipose_ray.output_dir": str(output_dir)},
        key=f"{config.run.name}@{output_dir}")
    status = "FAILED"
    try:
        results = _compare(config, data, output_dir, parent)
        status = "FINISHED"
        return results
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        parent.end(status)


def _compare(config: DistillConfig, data: PreparedData, output_dir: Path,
             parent: RunTracker) -> dict[str, dict[str, float]]:
    config = ensure_backbone(config, data, output_dir, parent.run_id)
    config = resolve_teachers(ensure_teachers(config, data, output_dir, parent.run_id))
    specs = check_teachers(config)
    inputs = eval_inputs(data.eval_sets)  # the boxes, read once for every model
    models: dict = {}  # row -> (model, the keypoint set it predicts), for the pictures
    # Submitted now, collected after the students train: the tasks run on the teachers'
    # resources beside the training (each frees them when its shard is done, so the
    # training never waits on them for long).
    teachers = {f"teacher_{t.name}": _evaluate_teacher(config, t, inputs, models)
                for t in config.teachers}
    try:
        runs, run_dirs = _train_students(config, data, specs, output_dir, parent)
    except BaseException:
        for pending in teachers.values():
            pending.cancel()
        raise
    results: dict[str, dict[str, float]] = {}
    for teacher in config.teachers:
        row = f"teacher_{teacher.name}"
        results[row] = teachers[row].result()
        _log_row(config, parent, row, results[row],
                 {"config": teacher.config, "checkpoint": teacher.checkpoint,
                  "dataset": teacher.dataset})
    print0("evaluating the students")
    students = {}
    for run, run_dir in zip(runs, run_dirs, strict=True):
        model = build_from_config(run_dir / "model_config.py", run_dir / "best.pth")
        models[run.name] = model, config.student_keypoints
        students[run.name] = submit_evaluation(
            model, config.student_keypoints, model.spec.codec, inputs,
            student_workers(config.run), config.run.val_flip_test, skeleton=config.skeleton)
    for name, pending in students.items():  # every student's tasks submitted first
        results[name] = pending.result()
        _log_row(config, parent, name, results[name])

    columns = table_columns(config.datasets)
    table = format_table(results, columns)
    claim = claim_summary(results)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    (output_dir / "results.txt").write_text(f"{table}\n\n{claim}\n")
    parent.log_artifact(output_dir / "results.json")
    parent.log_text(f"{table}\n\n{claim}\n", "results.txt")
    parent.log_metrics({f"{row}/{k}": v for row, m in results.items() for k, v in m.items()
                        if k in columns}, step=0)
    _pictures(models, config, data, output_dir, parent)
    print0(f"\n{table}\n\n{claim}\n\nresults written to {output_dir / 'results.json'}, "
           f"pictures to {output_dir / 'pictures'}")
    return results


def _evaluate_teacher(config: DistillConfig, teacher: TeacherConfig, inputs: list,
                      models: dict) -> PendingEvaluation:
    """Build the teacher (kept in ``models`` for the pictures) and start its evaluation."""
    row = f"teacher_{teacher.name}"
    workers = teacher_workers(teacher, config.run.eval_workers)
    where = f"on {workers.count} Ray task(s)" if workers.count else "on the driver"
    print0(f"evaluating teacher '{teacher.name}' ({Path(teacher.checkpoint).name}) {where}")
    model = build_from_config(teacher.config, teacher.checkpoint,
                              trust_checkpoint=teacher.trust_checkpoint)
    models[row] = model, DATASET_SETS[teacher.dataset]
    return submit_evaluation(model, teacher.dataset, model.spec.codec, inputs,
                             workers, config.run.val_flip_test, skeleton=config.skeleton)


def _train_students(config: DistillConfig, data: PreparedData, specs: dict, output_dir: Path,
                    parent: RunTracker) -> tuple[list[Run], list[Path]]:
    """The distilled student (and the joint one without KD), side by side; their folders."""
    datasets = sorted(data.train)
    if uses_cache(config):  # built once (or completed); the distilled student reads it
        ensure_cache(config, data.train_records(datasets, output_dir / "records"), specs)
    runs = [Run(config, datasets, specs, DISTILLED)]
    if config.baseline:
        joint = replace(config, teachers=(), run=replace(config.run, name=f"{config.run.name}_joint"))
        runs.insert(0, Run(joint, datasets, {}, JOINT))
    return runs, train_concurrently(runs, data, output_dir, config.parallel_runs, parent.run_id)


def _log_row(config: DistillConfig, parent: RunTracker, row: str, metrics: dict[str, float],
             params: dict | None = None) -> None:
    """The row's child run (the training run of a model trained here) gets ``final/*``."""
    child = RunTracker(parent.tracking_uri).start(
        config.tracking.experiment, row, params=params,
        tags={PARENT_TAG: parent.run_id, "unipose_ray.row": row},
        key=child_key(parent.run_id, row))
    child.log_metrics({f"final/{k}": v for k, v in metrics.items()}, step=0)
    child.end("FINISHED")


def _pictures(models: dict, config: DistillConfig, data: PreparedData, output_dir: Path,
              parent: RunTracker) -> None:
    folder = output_dir / "pictures"
    folder.mkdir(exist_ok=True)
    for row, (model, keypoints) in models.items():
        picture = validation_picture(model, keypoints, model.spec.codec, data.eval_sets,
                                     config.tracking.images_per_set, config.run.val_flip_test,
                                     skeleton=config.skeleton)
        cv2.imwrite(str(folder / f"{row}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        parent.log_figure_png(picture, f"pictures/{row}")


def claim_summary(results: dict[str, dict[str, float]]) -> str:
    """The paper's finding checked on a table: one line per comparison, with the margins."""
    if DISTILLED not in results:
        return ""
    d = results[DISTILLED]
    lines = []
    if JOINT in results:
        j = results[JOINT]
        parts = [f"{k} {as_percent(k, d[k] - j[k]):+.2f}" for k in CLAIM_METRICS
                 if not math.isnan(d.get(k, math.nan) - j.get(k, math.nan))]
        wins = all(d.get(k, math.nan) > j.get(k, math.nan) for k in CLAIM_METRICS)
        lines.append(f"distilled vs joint student: {', '.join(parts)} -> "
                     f"{'distillation helps' if wins else 'NOT better on all of them'}")
    teachers = {row: m for row, m in results.items() if row.startswith("teacher_")}
    if teachers:
        parts = [f"{row} {d['score'] - m['score']:+.2f}" for row, m in teachers.items()]
        wins = all(d["score"] > m["score"] for m in teachers.values())
        lines.append(f"distilled student's score vs teachers: {', '.join(parts)} -> "
                     f"{'beats every teacher' if wins else 'NOT above every teacher'}")
    return "\n".join(lines)

