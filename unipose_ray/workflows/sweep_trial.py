"""Ray Tune sweeps of the loss weights (w1, w2, w3) and the student size: the trials.

Each trial is a driver function that fits one distillation ``TorchTrainer`` (the Train V2
pattern: its ``TuneReportCallback`` created inside the trial, a deterministic run name per
trial so a restored trial resumes its checkpoint). Every trial reads the teacher-logit
cache, so teacher compute is paid once for the whole sweep. ASHA stops poor trials at
validations (each validation is one Tune iteration). :mod:`unipose_ray.workflows.sweep` runs
the sweep; :mod:`unipose_ray.workflows.sweep_report` sums it up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from unipose_ray.config import ConfigError, DistillConfig
from unipose_ray.config.models import RTMPOSE_WEIGHT_DECAY
from unipose_ray.evaluation.cross_dataset import EvalSet
from unipose_ray.models import PoseModelSpec
from unipose_ray.train.job import TrainJob

WEIGHT_KEY = "weights"  # the trial's {w_gt, <teacher>: weight} in Tune's config


def resolve_backbones(config: DistillConfig) -> DistillConfig:
    """Every swept size with its backbone checkpoint (absolute, checked to load into that
    size), on the driver. Call after ``ensure_backbone``.

    Raises:
        ConfigError: a size without a backbone while the student has one.
    """
    from unipose_ray.models.checkpoints import load_backbone  # noqa: PLC0415
    from unipose_ray.train.job import build_student  # noqa: PLC0415

    student, sweep = config.student, config.sweep
    backbones = {size: str(Path(path).resolve()) for size, path in sweep.backbones.items()}
    if student.backbone_checkpoint:
        backbones.setdefault(student.size, str(Path(student.backbone_checkpoint).resolve()))
    missing = [size for size in sweep.sizes if size not in backbones]
    if backbones and missing:
        raise ConfigError(
            f"sweep.sizes {list(sweep.sizes)}: the student starts from a pretrained backbone "
            f"(student.backbone_checkpoint, size '{student.size}') but sizes {missing} have "
            f"none; give sweep.backbones: {{{missing[0]}: <cspnext-{missing[0]} checkpoint>}}")
    for size in sweep.sizes if backbones else ():
        if not Path(backbones[size]).is_file():
            raise FileNotFoundError(f"sweep.backbones.{size} {backbones[size]} does not exist")
        sized = replace(config, student=replace(student, size=size))
        load_backbone(build_student(sized), Path(backbones[size]))  # a wrong file fails here
    return replace(config, sweep=replace(sweep, backbones=backbones))


def param_space(config: DistillConfig) -> dict:
    """Tune's search space from ``config.sweep``: ``weights`` (w1 as ``w_gt``, each
    teacher's weight by its name), ``size`` and optionally ``lr``."""
    from ray import tune  # noqa: PLC0415

    sweep = config.sweep
    names = [t.name for t in config.teachers]
    if sweep.search == "grid":
        triples = [dict(zip(["w_gt", *names], triple, strict=True)) for triple in sweep.grid]
        space = {WEIGHT_KEY: tune.grid_search(triples), "size": tune.grid_search(list(sweep.sizes))}
    else:
        space = {WEIGHT_KEY: {"w_gt": tune.loguniform(*sweep.w_gt),
                              **{n: tune.loguniform(*sweep.w_teacher) for n in names}},
                 "size": tune.choice(list(sweep.sizes))}
    if sweep.lr:
        space["lr"] = (tune.grid_search(list(sweep.lr)) if sweep.search == "grid"
                       else tune.loguniform(*sweep.lr))
    return space


def base_point(config: DistillConfig) -> dict:
    """The config's own choices as a point of the search space."""
    point = {WEIGHT_KEY: {"w_gt": config.loss.w_gt, **{t.name: t.weight for t in config.teachers}},
             "size": config.sweep.sizes[0]}
    if config.sweep.lr:
        point["lr"] = config.optim.lr
    return point


def search_algorithm(config: DistillConfig, concurrent: int):
    """Tune's variant generator (random draws or the grid), starting from the config's
    own point when ``sweep.include_base``; its draws are seeded by ``run.seed``, so the
    same command draws the same trials."""
    from ray.tune.search import BasicVariantGenerator  # noqa: PLC0415

    sweep = config.sweep
    points = [base_point(config)] if sweep.include_base and sweep.search == "random" else None
    return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=concurrent,
                                 random_state=config.run.seed)


def trial_config(config: DistillConfig, params: dict, name: str) -> DistillConfig:
    """The base config with one trial's weights, size and learning rate.

    A base weight decay equal to RTMPose's for the base size (``optim.weight_decay`` left
    to the recipe) follows the trial's size; any other value is kept for every size."""
    weights = params[WEIGHT_KEY]
    teachers = tuple(replace(t, weight=float(weights[t.name])) for t in config.teachers)
    decay = config.optim.weight_decay
    if decay == RTMPOSE_WEIGHT_DECAY[config.student.size]:  # the size's recipe: the trial's
        decay = RTMPOSE_WEIGHT_DECAY[params["size"]]
    optim = replace(config.optim, weight_decay=decay,
                    **({"lr": float(params["lr"])} if "lr" in params else {}))
    return replace(config, teachers=teachers, optim=optim,
                   loss=replace(config.loss, w_gt=float(weights["w_gt"])),
                   student=replace(config.student, size=params["size"],
                                   backbone_checkpoint=config.sweep.backbones.get(
                                       params["size"], config.student.backbone_checkpoint)),
                   run=replace(config.run, name=name))


def short_params(params: dict) -> dict[str, str | float]:
    """The trial's choices under the names a user compares them by in MLflow."""
    out: dict[str, str | float] = {"size": params["size"]}
    for key, value in params[WEIGHT_KEY].items():
        out["w1_gt" if key == "w_gt" else f"w_{key}"] = float(value)
    if "lr" in params:
        out["lr"] = float(params["lr"])
    return out


def concurrent_trials(config: DistillConfig, cluster_cpus: float) -> int:
    """Trials the cluster holds at once: a trial takes its driver (1 CPU), its workers and
    their crop actors (or, with ``data_actors=0``, the CPU of each worker's crop thread)."""
    if config.sweep.max_concurrent_trials:
        return config.sweep.max_concurrent_trials
    run = config.run
    per_trial = 1 + run.num_workers * (run.cpus_per_worker + max(run.data_actors, 1))
    return max(1, int(cluster_cpus // per_trial))


def validations(config: DistillConfig) -> int:
    """Validations of a trial that runs to the end: ASHA's ``max_t``."""
    return config.optim.epochs // config.run.val_every_epochs


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

    def trial_name(self, trial_id: str) -> str:
        return f"{self.config.run.name}_{trial_id}"

    def job(self, params: dict, trial_id: str) -> TrainJob:
        """The training run of trial ``trial_id``."""
        name = self.trial_name(trial_id)
        return TrainJob(config=trial_config(self.config, params, name),
                        train_records=self.train_records, eval_sets=self.eval_sets,
                        teacher_specs=self.teacher_specs,
                        output_dir=str(Path(self.output_dir) / "trials" / name),
                        tracking_uri=self.tracking_uri, tracking_name=name,
                        parent_run_id=self.parent_run_id,
                        tracking_tags={"unipose_ray.kind": "sweep_trial",
                                       "unipose_ray.trial_id": trial_id,
                                       "unipose_ray.student_size": params["size"]},
                        tracking_params=short_params(params))


def run_trial(params: dict, base: SweepBase) -> None:
    """A Tune trial: fit one distillation ``TorchTrainer`` on the cache, reporting each
    validation to Tune (a restored trial resumes its Ray Train run by its name)."""
    from ray import tune  # noqa: PLC0415
    from ray.tune.integration.ray_train import TuneReportCallback  # noqa: PLC0415

    from unipose_ray.train.driver import run_training  # noqa: PLC0415

    job = base.job(params, tune.get_context().get_trial_id())
    run_training(job, callbacks=[TuneReportCallback()])


def total_trials(config: DistillConfig) -> int:
    sweep = config.sweep
    grid = 1
    if sweep.search == "grid":
        grid = len(sweep.grid) * len(sweep.sizes) * len(sweep.lr or [None])
    return grid * sweep.num_samples


def progress_callback(metric: str, total: int):
    """A Tune callback printing one line per validation and per finished trial, instead of
    Tune's tables of every metric."""
    from ray import tune  # noqa: PLC0415

    from unipose_ray.runtime.distributed import print0  # noqa: PLC0415

    class SweepProgress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            choices = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in short_params(trial.config).items())
            print0(f"[sweep] {trial.trial_id} ({choices}) validation "
                   f"{result.get('training_iteration')}: {metric}="
                   f"{result.get(metric, float('nan')):.4g} at step {result.get('train/step')}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            done = sum(t.status in ("TERMINATED", "ERROR") or t is trial for t in trials)
            ran = trial.last_result.get("training_iteration", 0)
            print0(f"[sweep] {trial.trial_id} finished after {ran} validation(s); "
                   f"{done}/{total} trials done")

        def on_trial_error(self, iteration, trials, trial, **info):
            print0(f"[sweep] {trial.trial_id} FAILED: {trial.error_file or ''}")

    return SweepProgress()
