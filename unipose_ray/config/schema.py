"""The typed config of a distillation (or single-teacher) run, one frozen dataclass a concern.

YAML presets (``unipose_ray/config/presets/*.yaml``) only fill these; each function receives the
sub-config it needs. Validation happens here, before any heavy work, with messages a user
can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from unipose_ray.config.files import DataConfig
from unipose_ray.config.loading import ConfigError
from unipose_ray.config.models import (
    RTMPOSE_WEIGHT_DECAY,
    PretrainConfig,
    StudentConfig,
    TeacherConfig,
)
from unipose_ray.config.settings import AugmentConfig
from unipose_ray.config.sweep import SWEEP_SEARCHES, SweepConfig  # noqa: F401  (re-exported)
from unipose_ray.skeleton import DATASET_SETS, KeypointSet, keypoint_set_for, unified_skeleton

KD_MASKS = ("none", "own_unlabelled")
AMP_MODES = ("bf16", "fp16", "off")


@dataclass(frozen=True)
class LossConfig:
    """The loss mix ``w_gt * L_gt + decay * sum_t w_t * L_kd_t`` (teacher weights live on teachers).

    By default every teacher distils on every sample, all of its joints: the paper
    authors' behaviour, and the point of the method. On an MPII image the COCO teacher
    supplies the face joints the MPII label lacks; on a COCO image the MPII teacher
    supplies pelvis, thorax, upper neck and head top.

    Attributes:
        w_gt: weight of the ground-truth term (``w1``).
        beta: SimCC softmax sharpness, as MMPose's ``KLDiscretLoss``/``KDLoss`` (10).
        kd_mask: ``none`` distils every joint; ``own_unlabelled`` skips KD on a joint the
            sample's own dataset annotates and marks as absent (unlabelled, or outside
            the crop), and keeps it on the joints that dataset does not annotate at all,
            so the cross-dataset transfer stays.
        kd_decay: DWPose's linear decay over the epochs, on every KD term
            (``1 - (epoch - 1) / epochs``).
    """

    w_gt: float = 0.45
    beta: float = 10.0
    kd_mask: str = "none"
    kd_decay: bool = False

    def __post_init__(self) -> None:
        if self.w_gt < 0:
            raise ConfigError(f"loss.w_gt must be >= 0, got {self.w_gt}")
        if self.beta <= 0:
            raise ConfigError(f"loss.beta must be > 0, got {self.beta}")
        if self.kd_mask not in KD_MASKS:
            raise ConfigError(f"loss.kd_mask must be one of {KD_MASKS}, got '{self.kd_mask}'")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + linear warm-up + cosine in the second half (the RTMPose recipe).

    Attributes:
        epochs: passes over the training records.
        batch_size: samples per worker per step.
        lr: peak learning rate (scaled by nothing: set it for your global batch).
        weight_decay: AdamW weight decay (not applied to norms and biases, as MMPose's
            ``paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0)``); ``None``: the
            RTMPose config's for ``student.size`` (t, s: 0; m: 0.05), filled in by
            :class:`DistillConfig`.
        flat_decay: decay 1-D weights other than norms' and biases (the head's
            ``ScaleNorm`` gains and residual scales), as RTMPose's ``paramwise_cfg`` does;
            false: none of them (mmengine's ``flat_decay_mult=0``).
        warmup_steps: linear warm-up length in steps.
        cosine_from: fraction of training after which cosine annealing starts.
        min_lr_ratio: final lr as a fraction of ``lr``.
        ema: keep an exponential moving average of the weights and BatchNorm statistics
            (evaluated and saved), as MMPose's ``EMAHook(ema_type='ExpMomentumEMA',
            update_buffers=True)``.
        ema_momentum: EMA update rate per step.
        amp: mixed precision on GPU workers: ``bf16``, ``fp16`` (with a ``GradScaler``) or
            ``off``; ``bf16`` on a GPU without it (V100, T4) runs as ``fp16``. CPU
            workers train in fp32.
        grad_clip: gradient-norm clip, 0 for none.
        max_nonfinite_steps: a step whose loss is NaN or inf is skipped (and counted); this
            many in a row stop the run with an error.
    """

    epochs: int = 420
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float | None = None
    flat_decay: bool = True
    warmup_steps: int = 1000
    cosine_from: float = 0.5
    min_lr_ratio: float = 0.05
    ema: bool = True
    ema_momentum: float = 2e-4
    amp: str = "bf16"
    grad_clip: float = 0.0
    max_nonfinite_steps: int = 20

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("optim.epochs and optim.batch_size must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0 <= self.cosine_from <= 1:
            raise ConfigError(f"optim.cosine_from must be in [0, 1], got {self.cosine_from}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"optim.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.max_nonfinite_steps < 1:
            raise ConfigError("optim.max_nonfinite_steps must be >= 1")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0 (or null: RTMPose's for the "
                              f"student size), got {self.weight_decay}")


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run executes.

    Attributes:
        name: run name; starting a run with the same name and storage resumes it.
        storage_path: Ray Train storage (checkpoints); default ``<output_dir>/ray_results``.
        num_workers: Ray Train workers (DDP).
        use_gpu: one GPU per worker (NCCL); CPU workers use gloo.
        cpus_per_worker: CPUs reserved per training worker.
        worker_resources: custom Ray resources per training worker, e.g. ``{student: 1}``.
        data_actors: Ray Data actors running the crop/augment stage, per training worker
            (each worker reads its own stream); 0 makes the crops in a thread of the
            training worker itself: the same batches, seconds less start-up, for one
            machine's few cores.
        seed: run seed (augmentation, shuffling, initialisation).
        val_every_epochs: validate (and checkpoint) every N epochs.
        checkpoint_every_steps: also checkpoint every N steps (0: only at validation).
        max_failures: worker-group restarts before the run fails (Ray ``FailureConfig``).
        val_samples: cap on validation instances per dataset (0: all).
        val_flip_test: validate (and evaluate the final models) with RTMPose's flip test,
            as MMPose's ``test_cfg``; off halves the validation cost.
        resource_wait_s: when the cluster lacks the GPUs the run needs and no autoscaler
            published how many it may add, wait this long for nodes to join before
            refusing (0: refuse at once).
        max_steps: end the run after this many optimiser steps (0: all ``optim.epochs``),
            e.g. a smoke run at real size; the learning-rate schedule spans the steps run.
        eval_workers: Ray tasks that evaluate each model of a comparison, the validation
            boxes split among them, each with the resources the model runs with (a
            teacher's ``num_cpus``/``num_gpus``/``resources``; a student's training worker's:
            ``cpus_per_worker``, a GPU with ``use_gpu``, ``worker_resources``); the
            teachers' evaluation runs while the students train. 0: on the driver's CPU,
            before the training (``unipose_ray.workflows.evaluation``).
    """

    name: str = "unipose"
    storage_path: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    data_actors: int = 1
    seed: int = 0
    val_every_epochs: int = 10
    checkpoint_every_steps: int = 0
    max_failures: int = 0
    val_samples: int = 0
    val_flip_test: bool = True
    worker_resources: dict[str, float] = field(default_factory=dict)
    resource_wait_s: float = 0.0
    max_steps: int = 0
    eval_workers: int = 2

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError("run.num_workers must be >= 1")
        if self.eval_workers < 0:
            raise ConfigError("run.eval_workers must be >= 0 (0: evaluate on the driver)")
        if self.val_every_epochs < 1:
            raise ConfigError("run.val_every_epochs must be >= 1")
        if self.max_steps < 0:
            raise ConfigError("run.max_steps must be >= 0 (0: train all optim.epochs)")
        if self.data_actors < 0:
            raise ConfigError("run.data_actors must be >= 0 (0: crops made in the training "
                              "worker's own thread)")


@dataclass(frozen=True)
class TeacherCacheConfig:
    """Teacher targets read from a cache (``jobs/build_cache.py``) instead of teacher actors.

    Attributes:
        uri: the cache folder (local path or ``s3://`` / ``gs://`` URI); ``None``: the
            teachers run online. A run refuses a cache built for other teachers, grid,
            keypoints, augmentation or records, naming the field.
        views: augmentation views per training instance; epoch ``e`` trains on view
            ``e mod views`` (``views >= optim.epochs``: the crops an online run sees).
        components: the basis format (the default): each teacher joint's logits on the
            teacher's grid as ``components`` fp16 coefficients of a per-joint PCA basis
            fitted on ``calibration`` instance-views at build time
            (:mod:`unipose_ray.kd.basis`); decoded exactly as an online teacher's
            logits are mapped. 0 turns it off (then ``topk``). On the demo's teachers 28
            components are 1/22 of fp32's bytes and move the KD loss by < 0.5%
            (``jobs/benchmark_kd.py``).
        calibration: instance-views the basis is fitted on (spread over records and views).
        topk: with ``components: 0``: SimCC bins kept per axis per joint on the student's
            grid (fp16 + uint16 index, the rest of the mass as one number); 0 keeps every
            bin in fp16 (``full-fp16``: exact to fp16, 1/2 of fp32). Top-k drops the
            teacher's mass outside the kept bins, which the build prints; on the demo's
            teachers top-8 dropped 20-25% and lost the distilled student's COCO AP gain,
            top-32 dropped 3.5% and kept it (docs/cache.md).
        shard_records: training instances per shard (one shard per view and block).
        actors: teacher actors per teacher while building.
        batch_size: instances per teacher call while building.
    """

    uri: str | None = None
    views: int = 1
    components: int = 28
    calibration: int = 512
    topk: int = 0
    shard_records: int = 512
    actors: int = 1
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.views < 1 or self.shard_records < 1 or self.actors < 1 or self.batch_size < 1:
            raise ConfigError("teacher_cache.views, shard_records, actors and batch_size must "
                              "be >= 1")
        if self.topk < 0:
            raise ConfigError(f"teacher_cache.topk must be >= 0 (0: every bin), got {self.topk}")
        if self.components < 0:
            raise ConfigError("teacher_cache.components must be >= 0 (0: top-k / fp16 "
                              f"targets), got {self.components}")
        if self.components and self.topk:
            raise ConfigError("teacher_cache.components (the basis format) and "
                              "teacher_cache.topk exclude each other: set components=0 for "
                              "top-k targets")
        if self.components and self.calibration < self.components:
            raise ConfigError(f"teacher_cache.calibration ({self.calibration}) must be >= "
                              f"teacher_cache.components ({self.components}): a basis is "
                              "fitted on that many instance-views")

    @property
    def compression(self) -> dict:
        """The manifest's ``compression`` entry of a cache built with these settings."""
        if self.components:
            return {"components": self.components, "calibration": self.calibration,
                    "k": None, "shard_records": self.shard_records}
        return {"k": self.topk or None, "shard_records": self.shard_records}


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow: ``tracking_uri`` ``None`` = ``MLFLOW_TRACKING_URI`` or the embedded SQLite store.

    Attributes:
        images_per_set: validation images per domain in each validation picture.
    """

    tracking_uri: str | None = None
    experiment: str = "unipose_ray"
    images_per_set: int = 3


@dataclass(frozen=True)
class DistillConfig:
    """A whole run: data, student, teachers, loss, optimisation, execution, tracking.

    Attributes:
        generate: settings of :class:`~unipose_ray.data.synthetic.SyntheticConfig`; when
            set, the data is generated into ``<output_dir>/data`` and ``data`` is filled
            from it (the demo).
        pretrain: train a backbone first and start every model from it (see
            :class:`PretrainConfig`); ignored when ``student.backbone_checkpoint`` is set.
        teacher_cache: read the teachers' targets from a built cache (see
            :class:`TeacherCacheConfig`).
        teacher_epochs: epochs for teachers trained here (0: ``optim.epochs``).
        baseline: also train the joint student without KD, for the comparison table.
        parallel_runs: independent trainings (the teachers; the baseline and the distilled
            student) run side by side, this many at a time.
    """

    data: DataConfig = field(default_factory=DataConfig)
    generate: dict | None = None
    student: StudentConfig = field(default_factory=StudentConfig)
    teachers: tuple[TeacherConfig, ...] = ()
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    pretrain: PretrainConfig | None = None
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    teacher_epochs: int = 0
    baseline: bool = False
    parallel_runs: int = 1

    def __post_init__(self) -> None:
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names):
            raise ConfigError(f"teacher names must be unique, got {names}")
        if self.student.head == "heatmap" and self.teachers:
            raise ConfigError("student.head 'heatmap' is for backbone pretraining, without "
                              "teachers (KD works on SimCC logits)")
        if self.pretrain is not None or self.student.backbone_checkpoint:
            sizes = {t.name: t.train_size for t in self.teachers
                     if t.checkpoint is None and t.train_size != self.student.size}
            if sizes:
                raise ConfigError(
                    f"teachers trained here start from the student's backbone (RTMPose-"
                    f"{self.student.size}), but {sizes} ask for another size; set their "
                    f"train_size to '{self.student.size}' or drop pretrain / "
                    "student.backbone_checkpoint")
        total = self.loss.w_gt + sum(t.weight for t in self.teachers)
        if total <= 0:
            raise ConfigError("all loss weights are zero (loss.w_gt and every teacher weight); "
                              "set loss.w_gt > 0 or give a teacher a positive weight")
        if self.teachers and self.teacher_cache.uri and self.augment.stage2_epochs:
            # The cache holds crops of one augmentation per view: a view replayed in a
            # stage-2 epoch would pair stage-1 teacher logits with another crop.
            raise ConfigError(
                f"teacher_cache.uri with augment.stage2_epochs={self.augment.stage2_epochs}: "
                "the cache holds stage-1 crops only; set augment.stage2_epochs=0 or run the "
                "teachers online (teacher_cache.uri=null)")
        if self.optim.weight_decay is None:  # RTMPose's recipe for the student's size
            object.__setattr__(self, "optim", replace(
                self.optim, weight_decay=RTMPOSE_WEIGHT_DECAY[self.student.size]))

    @property
    def datasets(self) -> tuple[str, ...]:
        """The run's datasets, in :data:`~unipose_ray.skeleton.DATASET_SETS` order: those its
        data splits (or its ``generate`` section) and its teachers name."""
        named = {*self.data.datasets(), *generated_datasets(self.generate),
                 *(t.dataset for t in self.teachers)}
        # naming none (a config built for a model alone: tests, tools) is the paper's pair;
        # a run without data stops at its missing training split
        return tuple(d for d in DATASET_SETS if d in named) or GENERATED_BY_DEFAULT

    @property
    def skeleton(self) -> KeypointSet:
        """The unified skeleton: the ordered union of the run's datasets' joints
        (:func:`~unipose_ray.skeleton.unified_skeleton`; COCO + MPII: the paper's 21)."""
        return unified_skeleton(self.datasets)

    @property
    def student_keypoints(self) -> KeypointSet:
        """What the student predicts: the skeleton, or one dataset's joints (a teacher run)."""
        return keypoint_set_for(self.student.dataset, self.skeleton)


GENERATED_BY_DEFAULT = ("coco", "mpii")
"""The datasets ``SyntheticConfig`` always writes (the others when given images)."""


def generated_datasets(generate: dict | None) -> tuple[str, ...]:
    """The datasets a ``generate`` section writes: COCO and MPII, and those with a
    ``<dataset>_train`` or ``_val`` count above 0 (as ``SyntheticConfig.datasets``)."""
    if generate is None:
        return ()
    return tuple(d for d in DATASET_SETS if d in GENERATED_BY_DEFAULT
                 or generate.get(f"{d}_train") or generate.get(f"{d}_val"))
