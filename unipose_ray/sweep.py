"""Ray Tune sweeps of the loss weights (w1, w2, w3) and the student size.

Each trial is a driver function that fits one distillation ``TorchTrainer`` (the Train V2
pattern: its ``TuneReportCallback`` created inside the trial, a deterministic run name per
trial so a restored trial resumes its checkpoint). Every trial reads the teacher-logit
cache, so teacher compute is paid once for the whole sweep. ASHA stops poor trials at
validations (each validation is one Tune iteration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from unipose_ray.config import DistillConfig
from unipose_ray.evaluation.cross_dataset import EvalSet
from unipose_ray.models import PoseModelSpec

WEIGHT_KEYS = ("w_gt", "w_coco", "w_mpii")


def param_space(config: DistillConfig) -> dict:
    """Tune's search space from ``config.sweep``."""
    from ray import tune  # noqa: PLC0415

    sweep = config.sweep
    names = [t.name for t in config.teachers]
    if sweep.search == "grid":
        triples = [dict(zip(["w_gt", *names], triple, strict=True)) for triple in sweep.grid]
        space = {"weights": tune.grid_search(triples), "size": tune.grid_search(list(sweep.sizes))}
    else:
        space = {"weights": {"w_gt": tune.loguniform(*sweep.w_gt),
                             **{n: tune.loguniform(*sweep.w_teacher) for n in names}},
                 "size": tune.choice(list(sweep.sizes))}
    if sweep.lr:
        space["lr"] = tune.loguniform(*sweep.lr)
    return space


def trial_config(config: DistillConfig, params: dict, name: str) -> DistillConfig:
    """The base config with one trial's weights, size and learning rate."""
    weights = params["weights"]
    teachers = tuple(replace(t, weight=float(weights[t.name])) for t in config.teachers)
    optim = replace(config.optim, lr=float(params["lr"])) if "lr" in params else config.optim
    return replace(config, teachers=teachers, optim=optim,
                   loss=replace(config.loss, w_gt=float(weights["w_gt"])),
                   student=replace(config.student, size=params["size"]),
                   run=replace(config.run, name=name))


def concurrent_trials(config: DistillConfig, cluster_cpus: float) -> int:
    """Trials the cluster holds at once: a trial takes its driver (1 CPU), its workers and
    their crop actors."""
    if config.sweep.max_concurrent_trials:
        return config.sweep.max_concurrent_trials
    run = config.run
    per_trial = 1 + run.num_workers * (run.cpus_per_worker + run.data_actors)
    return max(1, int(cluster_cpus // per_trial))


@dataclass(frozen=True)
class SweepBase:
    """What every trial shares (decided once, on the driver)."""

    config: DistillConfig
    train_records: str
    eval_sets: tuple[EvalSet, ...]
    teacher_specs: dict[str, PoseModelSpec]
    output_dir: str
    tracking_uri: str | None
    parent_run_id: str | None


def run_trial(params: dict, base: SweepBase) -> None:
    """A Tune trial: fit one distillation ``TorchTrainer`` on the cache, reporting each
    validation to Tune."""
    from ray import tune  # noqa: PLC0415
    from ray.tune.integration.ray_train import TuneReportCallback  # noqa: PLC0415

    from unipose_ray.train.driver import export_best, run_training  # noqa: PLC0415
    from unipose_ray.train.job import TrainJob  # noqa: PLC0415

    trial_id = tune.get_context().get_trial_id()
    name = f"{base.config.run.name}_{trial_id}"
    config = trial_config(base.config, params, name)
    job = TrainJob(config=config, train_records=base.train_records, eval_sets=base.eval_sets,
                   teacher_specs=base.teacher_specs,
                   output_dir=str(Path(base.output_dir) / "trials" / name),
                   tracking_uri=base.tracking_uri, tracking_name=name,
                   parent_run_id=base.parent_run_id)
    result = run_training(job, callbacks=[TuneReportCallback()])
    export_best(result, job)


def summary_rows(results, metric: str, mode: str) -> list[dict]:
    """One row per trial, best first: params, best ``val/*`` values, steps, early stop."""
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or metric not in frame:
            values, steps = {}, 0
        else:
            best = frame[metric].idxmax() if mode == "max" else frame[metric].idxmin()
            values = {k: float(frame.loc[best, k]) for k in frame.columns
                      if str(k).startswith("val/")}
            steps = int(frame["train/step"].max()) if "train/step" in frame else 0
        config = result.config
        rows.append({
            "trial": result.path.rstrip("/").split("/")[-1] if result.path else "?",
            "size": config["size"], **{k: float(v) for k, v in config["weights"].items()},
            **({"lr": float(config["lr"])} if "lr" in config else {}),
            **values, "steps": steps,
            "error": str(result.error).splitlines()[0] if result.error else ""})
    sign = -1 if mode == "max" else 1
    return sorted(rows, key=lambda r: sign * r.get(metric, -math.inf * sign))


def progress_callback(metric: str):
    """A Tune callback printing one line per validation and per finished trial, instead of
    Tune's tables of every metric."""
    from ray import tune  # noqa: PLC0415

    from unipose_ray.distributed import print0  # noqa: PLC0415

    class SweepProgress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            weights = " ".join(f"{k}={v:.3g}" for k, v in trial.config["weights"].items())
            print0(f"[sweep] {trial.trial_id} ({trial.config['size']}, {weights}) validation "
                   f"{result.get('training_iteration')}: {metric}="
                   f"{result.get(metric, float('nan')):.4g} at step {result.get('train/step')}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            running = sum(t.status == "RUNNING" for t in trials)
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
            print0(f"[sweep] {trial.trial_id} finished; {done}/{len(trials)} done, "
                   f"{running} running")

    return SweepProgress()
