"""``jobs/sweep.py``'s work: a Ray Tune sweep of the KD weights and the student size,
every trial a distillation run on the teacher-logit cache, tracked in MLflow.

1. Data, backbone and teachers are prepared once on the driver, and the cache is built
   (or completed) once: the trials run no teachers.
2. One MLflow parent run for the sweep; each trial's training run is its child. A SQLite
   store is put behind a local ``mlflow server`` for the sweep (:mod:`tracking_server`):
   the trials log side by side and SQLite takes one writer.
3. ``Tuner.fit`` (or ``Tuner.restore`` of an interrupted sweep in the same output folder:
   finished trials keep their results, unfinished ones resume their checkpoints, ASHA its
   rungs: :mod:`unipose_ray.workflows.sweep_scheduler`).
4. The summary: table (printed, JSON, CSV), picture of the metric against the weights,
   the best trial's checkpoint evaluated as ``jobs/evaluate.py`` does, tags in MLflow.
"""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

from unipose_ray.config import DistillConfig
from unipose_ray.data.records import read_records
from unipose_ray.evaluation.cross_dataset import format_table, table_columns
from unipose_ray.runtime.distributed import print0
from unipose_ray.runtime.signals import handlers_restored
from unipose_ray.teacher_cache.build import ensure_cache
from unipose_ray.tracking.params import run_params
from unipose_ray.tracking.runs import RunTracker, child_key
from unipose_ray.tracking.server import served
from unipose_ray.tracking.uris import resolve_tracking_uri
from unipose_ray.workflows.preflight import check_sweep
from unipose_ray.workflows.sweep_report import (
    format_rows,
    plot_weights,
    reference_weights,
    summary_rows,
    tag_trials,
    trial_id,
    write_summary,
)
from unipose_ray.workflows.sweep_trial import (
    SweepBase,
    concurrent_trials,
    param_space,
    progress_callback,
    resolve_backbones,
    run_trial,
    search_algorithm,
    total_trials,
    validations,
)
from unipose_ray.workflows.training import (
    check_teachers,
    ensure_backbone,
    evaluate_checkpoint,
    prepare_data,
    resolve_teachers,
)


class SweepInterrupted(RuntimeError):
    """The sweep was stopped (Ctrl+C) before every trial finished; its state is saved."""


def run_sweep(config: DistillConfig, output_dir: str | Path, callbacks: tuple = ()
              ) -> list[dict]:
    """Run (or resume) the sweep ``config.sweep`` describes; returns the summary rows, best
    first. ``callbacks``: more Tune callbacks for a new sweep (tests watch the cluster with
    them); a resumed sweep runs the ones it started with, as Tune saved them."""
    out = Path(output_dir).resolve()
    if config.teacher_cache.uri is None:
        config = replace(config, teacher_cache=replace(config.teacher_cache,
                                                       uri=str(out / "teacher_cache")))
    check_sweep(config)  # before any data is generated
    config, data = prepare_data(config, out)
    config = resolve_teachers(resolve_backbones(ensure_backbone(config, data, out)))
    specs = check_teachers(config)
    records = data.train_records(sorted(data.train), out / "records")
    cache = ensure_cache(config, records, specs)

    store = resolve_tracking_uri(config.tracking.tracking_uri, out)
    parent = RunTracker(store).start(  # the experiment is made on the store: file artifacts
        config.tracking.experiment, f"{config.run.name}_sweep", params=run_params(config),
        tags={"unipose_ray.kind": "sweep"}, key=f"sweep:{config.run.name}@{out}")
    try:
        with served(store) as uri:
            base = SweepBase(config, records, data.eval_sets, specs, str(out), uri,
                             parent.run_id)
            with handlers_restored(signal.SIGINT, signal.SIGUSR1):  # Tune leaves its own
                results = _tuner(config, base, out, callbacks).fit()
        # Ctrl+C: Tune saved its state and returned (trials not yet drawn are not in results)
        unfinished = total_trials(config) - results.num_terminated - results.num_errors
        if unfinished > 0:
            raise SweepInterrupted(
                f"the sweep stopped with {unfinished} trial(s) unfinished; run the same "
                f"command again (same --output-dir) to resume it: finished trials keep "
                f"their results, unfinished ones resume from their checkpoints")
        passes = cache.teacher_passes(len(read_records(records)))
        rows = _summarise(config, base, results, parent, data, passes)
        if results.num_errors == len(results):
            raise RuntimeError(f"every trial of the sweep failed; the first: {rows[0]['error']} "
                               f"(tracebacks in {out / 'tune'}, each trial's error.txt)")
    except BaseException as error:
        parent.end("KILLED" if isinstance(error, KeyboardInterrupt | SweepInterrupted)
                   else "FAILED")
        raise
    parent.end("FINISHED")
    return rows


def _summarise(config: DistillConfig, base: SweepBase, results, parent: RunTracker, data,
               passes: int) -> list[dict]:
    out, sweep = Path(base.output_dir), config.sweep
    checkpoints = {trial_id(result): _export(base, result) for result in results}
    rows = summary_rows(results, sweep.metric, sweep.mode, validations(config), checkpoints)
    json_path, csv_path = write_summary(rows, out)
    picture_path = out / "sweep_weights.png"
    picture = plot_weights(rows, sweep.metric, reference_weights(config), picture_path)
    for path in (json_path, csv_path):
        parent.log_artifact(path)
    parent.log_figure_png(picture, "sweep_weights")
    parent.log_metrics({"sweep/teacher_passes": passes, "sweep/trials": len(rows)}, step=0)
    tag_trials(parent.tracking_uri, parent.run_id, rows,
               {r["trial"]: child_key(parent.run_id, base.trial_name(r["trial"])) for r in rows})
    print0(f"\n{format_rows(rows, sweep.metric)}\n")
    print0(f"teacher forward passes: {passes}, paid once by the cache (the {len(rows)} "
           f"trial(s) ran none)")
    best = next((r for r in rows if r["checkpoint"]), None)
    if best is not None:
        metrics = evaluate_checkpoint(Path(best["checkpoint"]).parent, config.student_keypoints,
                                      data, config.skeleton, flip_test=config.run.val_flip_test)
        columns = table_columns(config.datasets)
        table = format_table({f"best_{best['trial']}": metrics}, columns)
        (out / "best_trial.txt").write_text(table + "\n")
        parent.log_text(table + "\n", "best_trial.txt")
        parent.log_metrics({f"best/{k}": v for k, v in metrics.items()
                            if k in columns}, step=0)
        print0(f"best trial {best['trial']} ({best['checkpoint']}), evaluated as "
               f"jobs/evaluate.py does:\n{table}")
    print0(f"\nsummary in {json_path} and {csv_path}, picture {picture_path}; MLflow parent "
           f"run {parent.run_id} in {parent.tracking_uri}")
    return rows


def _tuner(config: DistillConfig, base: SweepBase, out: Path, callbacks: tuple):
    import ray  # noqa: PLC0415
    from ray import tune  # noqa: PLC0415

    from unipose_ray.workflows.sweep_scheduler import ResumableASHA  # noqa: PLC0415

    sweep = config.sweep
    trainable = tune.with_parameters(run_trial, base=base)
    path = f"{out / 'tune'}/{config.run.name}_sweep"
    asha_state = Path(path) / "asha_state.pkl"
    if tune.Tuner.can_restore(path):
        print0(f"[sweep] resuming the sweep in {path}: finished trials keep their results")
        if callbacks:
            print0("[sweep] (the resumed sweep runs the Tune callbacks it started with, not "
                   "the ones given now: Tune saved them)")
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    asha_state.unlink(missing_ok=True)  # an earlier sweep's, never restored
    concurrent = concurrent_trials(config, ray.cluster_resources().get("CPU", 1))
    print0(f"[sweep] {total_trials(config)} {sweep.search} trial(s) of {sweep.metric} "
           f"({sweep.mode}), {concurrent} at a time, ASHA over {validations(config)} "
           f"validation(s)")
    return tune.Tuner(
        trainable, param_space=param_space(config),
        tune_config=tune.TuneConfig(
            metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
            search_alg=search_algorithm(config, concurrent),
            scheduler=ResumableASHA(str(asha_state), time_attr="training_iteration",
                                    grace_period=sweep.grace_period,
                                    reduction_factor=sweep.reduction_factor,
                                    max_t=validations(config))),
        run_config=tune.RunConfig(name=f"{config.run.name}_sweep", storage_path=str(out / "tune"),
                                  verbose=0,
                                  callbacks=[progress_callback(sweep.metric, total_trials(config)),
                                             *callbacks]))


def _export(base: SweepBase, result) -> Path | None:
    """The trial's best validated checkpoint as ``trials/<name>/best.pth`` (+ its MMPose
    config), read from its Ray Train run (a trial ASHA stopped included)."""
    import ray.train  # noqa: PLC0415

    from unipose_ray.train.driver import export_best, storage_path  # noqa: PLC0415

    job = base.job(result.config, trial_id(result))
    run_dir = Path(storage_path(job)) / job.config.run.name
    try:
        return export_best(ray.train.Result.from_path(run_dir), job)
    except (RuntimeError, FileNotFoundError):  # it never got as far as a checkpoint
        return None
