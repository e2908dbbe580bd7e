"""The driver side of a training run: resources, the ``TorchTrainer``, the run's storage.

Everything a worker reads is decided here, once: local paths absolute, URIs (``s3://``)
untouched, the record set in the object store (crop actors may run on any node).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from unipose_ray.cli import UsageError
from unipose_ray.config import DistillConfig
from unipose_ray.data.pipeline import PipelineConfig
from unipose_ray.data.records import RecordTable, read_records
from unipose_ray.paths import is_uri, resolve_path
from unipose_ray.runtime.distributed import print0, started_local_ray
from unipose_ray.runtime.ray_internals import autoscaler_max_resources
from unipose_ray.teacher_cache.format import describe
from unipose_ray.teacher_cache.shared import start_view_hub
from unipose_ray.teacher_cache.source import open_cache
from unipose_ray.teachers.service import TeacherPool
from unipose_ray.train.checkpointing import CHECKPOINT_SCORE, UNSCORED
from unipose_ray.train.data import StreamSpec
from unipose_ray.train.job import TrainJob
from unipose_ray.train.loop import train_fn_per_worker


class ResourceError(UsageError, RuntimeError):
    """The run asks for more than the cluster has or can get."""


def uses_cache(config: DistillConfig) -> bool:
    """The run reads its teachers' targets from ``teacher_cache.uri``: no teacher runs."""
    return bool(config.teachers) and config.teacher_cache.uri is not None


def gpus_wanted(config: DistillConfig) -> float:
    """GPUs the run holds at once: its workers (with ``use_gpu``) and every teacher replica
    (none when the teachers' targets come from a cache)."""
    teachers = 0 if uses_cache(config) else sum(t.num_gpus * t.replicas for t in config.teachers)
    return (config.run.num_workers if config.run.use_gpu else 0) + teachers


def max_cluster_gpus() -> float | None:
    """The GPUs the autoscaler may bring up (its node groups' maxima), or ``None`` when no
    autoscaler published its limits (a fixed cluster, or Ray's v1 autoscaler)."""
    try:
        limits = autoscaler_max_resources()
    except Exception:  # an old GCS, or no autoscaler state: same as no limits
        return None
    return None if limits is None else float(limits.get("GPU", 0))


def check_resources(config: DistillConfig, wait_s: float | None = None,
                    poll_s: float = 5.0) -> None:
    """Fail early when the run asks for more GPUs than the cluster has or can get.

    Counts the GPUs the autoscaler may add (both shipped cluster configs start with zero
    GPU workers); without published limits, waits up to ``wait_s`` (default
    ``run.resource_wait_s``, 0 on a Ray this process started) for nodes to join, then
    refuses with what is missing.
    """
    import ray  # noqa: PLC0415

    want = gpus_wanted(config)
    have = ray.cluster_resources().get("GPU", 0)
    if want <= have:
        return
    limit = max_cluster_gpus()
    if limit is not None and want <= limit:
        print0(f"the cluster has {have:g} GPU(s) now and its autoscaler up to {limit:g}; the "
               f"run needs {want:g}: training starts once the nodes are up")
        return
    if wait_s is None:  # a Ray this process started alone never grows
        wait_s = 0.0 if started_local_ray() else config.run.resource_wait_s
    if wait_s > 0:
        print0(f"the cluster has {have:g} GPU(s), the run needs {want:g}: waiting up to "
               f"{wait_s:g} s for nodes to join")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(min(poll_s, max(deadline - time.monotonic(), 0)))
            have = ray.cluster_resources().get("GPU", 0)
            if want <= have:
                return
    teachers = [(t.name, t.replicas, t.num_gpus) for t in config.teachers]
    raise ResourceError(
        f"the run asks for {want:g} GPU(s) ({config.run.num_workers} worker(s) with "
        f"use_gpu={config.run.use_gpu}, teachers (name, replicas, GPUs each) {teachers}) "
        f"but the Ray cluster has {have:g}"
        + (f" and its autoscaler at most {limit:g}" if limit is not None else "")
        + (f" after waiting {wait_s:g} s" if wait_s > 0 else "")
        + "; lower run.num_workers / teachers.N.num_gpus, set run.use_gpu=false, or give "
        "the cluster more GPU nodes")


def nodes_missing(paths: list[str]) -> dict[str, list[str]]:
    """``path -> [node id, ...]`` for each path some alive node cannot see; ``{}`` on a
    one-node cluster. Asks every node with a zero-CPU task pinned to it."""
    import ray  # noqa: PLC0415
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2 or not paths:
        return {}

    @ray.remote(num_cpus=0)
    def exists(paths: list[str]) -> list[bool]:
        import os  # noqa: PLC0415

        return [os.path.exists(p) for p in paths]

    answers = ray.get([exists.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node, soft=False)).remote(paths) for node in nodes], timeout=300)
    missing: dict[str, list[str]] = {}
    for node, seen in zip(nodes, answers, strict=True):
        for path, ok in zip(paths, seen, strict=True):
            if not ok:
                missing.setdefault(path, []).append(node)
    return missing


def shared_paths(job: TrainJob) -> dict[str, str]:
    """What the run's workers and actors read or write by local path, by its config name."""
    config = job.config
    paths = {"--output-dir": job.output_dir}
    uri = job.tracking_uri or ""
    if uri.startswith("sqlite:///"):
        paths["the MLflow SQLite store (--tracking-uri)"] = uri.removeprefix("sqlite:///")
    if config.student.backbone_checkpoint:
        paths["student.backbone_checkpoint"] = config.student.backbone_checkpoint
    if uses_cache(config):  # crop actors read the shards; the teachers do not run
        paths["teacher_cache.uri"] = config.teacher_cache.uri
    else:
        for i, teacher in enumerate(config.teachers):
            for what in ("config", "checkpoint"):
                if getattr(teacher, what):
                    paths[f"teachers.{i}.{what}"] = getattr(teacher, what)
    for eval_set in job.eval_sets:
        for what in ("records_path", "ann_file", "unified_ann_file", "img_dir", "bbox_file"):
            value = getattr(eval_set, what)
            if value:
                paths[f"{eval_set.name} validation {what}"] = value
    return {name: path for name, path in paths.items() if not is_uri(path)}


def check_shared(job: TrainJob) -> None:
    """On a multi-node cluster, refuse a run whose files some node cannot see.

    Rank 0, the teacher actors and the crop actors may run on any node: what they read
    (checkpoints, validation files) and write (the MLflow SQLite store) must be on storage
    every node mounts at the same path. Checked before any training, not hours in.
    """
    paths = shared_paths(job)
    missing = nodes_missing(list(paths.values()))
    if missing:
        lines = [f"  {name} = {path} (not on node(s) {', '.join(n[:8] for n in missing[path])})"
                 for name, path in paths.items() if path in missing]
        raise RuntimeError(
            "this Ray cluster has several nodes and some cannot see files the run uses:\n"
            + "\n".join(lines) + "\nPut them on storage every node mounts at the same path "
            "(NFS, a mounted bucket), or use URIs (s3://...) where the config takes them; for "
            "MLflow, run `mlflow server` and pass --tracking-uri http://<host>:5000")


def storage_path(job: TrainJob) -> str:
    """The run's Ray Train storage: ``run.storage_path`` (a URI passes through untouched)
    or ``<output_dir>/ray_results``, absolute."""
    configured = job.config.run.storage_path
    if configured:
        return configured if is_uri(configured) else resolve_path(configured)
    return resolve_path(Path(job.output_dir) / "ray_results")


def run_training(job: TrainJob, pools: dict[str, TeacherPool] | None = None,
                 callbacks: list | None = None, *, lean: bool = True):
    """Build and fit the ``TorchTrainer`` for ``job``; returns the Ray ``Result``.

    ``callbacks`` go to the run's ``RunConfig`` (a Tune trial passes its
    ``TuneReportCallback``). ``lean``: a ``LeanTorchTrainer`` (without the helper actors
    our runs do not use); false: with every one of them, as Ray's own ``TorchTrainer``
    (``benchmark_startup.py`` compares the two).

    Expects Ray to be initialised (the job scripts do that). Teacher pools, when given,
    are the online teacher services; ``job.teacher_specs`` must describe them.
    """
    import ray  # noqa: PLC0415
    import ray.train  # noqa: PLC0415

    from unipose_ray.train.trainer import LeanTorchTrainer  # noqa: PLC0415

    config = job.config
    check_resources(config)
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    check_shared(job)
    records = read_records(job.train_records, config.skeleton)
    n = records.num_rows
    global_batch = config.optim.batch_size * config.run.num_workers
    if n < global_batch:
        raise ValueError(f"{job.train_records} has {n} training instances, fewer than one "
                         f"global batch ({global_batch}); lower optim.batch_size")
    cache = None
    if uses_cache(config):  # the teachers' targets come with the data: no teacher inputs
        cache = open_cache(config, records, job.teacher_specs)
        print0(f"[{config.run.name}] teacher targets from the cache {cache.uri} "
               f"({cache.views} view(s): epoch e trains on view e mod {cache.views}; "
               f"{describe(cache.compression)})")
    teacher_sizes = () if cache else tuple(sorted(
        {tuple(s.input_size) for s in job.teacher_specs.values()}
        - {tuple(config.student.codec.input_size)}))
    # one columnar copy in the object store, mapped by every crop stage of a node; with a
    # cache, one reader of each view for the whole run (teacher_cache/shared.py)
    stream = StreamSpec(job.train_records,
                        PipelineConfig(config.student.codec, config.augment, config.run.seed,
                                       config.optim.epochs, config.skeleton),
                        teacher_sizes, records_ref=ray.put(RecordTable.from_arrow(records)),
                        skip_bad_images=config.data.skip_bad_images, cache=cache,
                        targets=start_view_hub(cache, n) if cache else None)
    job = replace(job, steps_per_epoch=n // global_batch, submitted_at=time.time(),
                  stream=stream, num_records=n)
    # lean: no dataset manager, and the placement-group cleaner only where something can
    # outlive the controller (not the driver of a Ray it started); else Ray's own trainer
    return fit_surviving_controller_errors(lambda: LeanTorchTrainer(
        train_fn_per_worker,
        keep_datasets=not lean, keep_cleaner=not lean or not started_local_ray(),
        # by reference: Ray Train's controller deserializes this config, and unpickling
        # the job or the pools would import torch and MMPose in it (seconds per training)
        train_loop_config={"job": ray.put(job), "pools": ray.put(pools)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.run.num_workers, use_gpu=config.run.use_gpu,
            resources_per_worker={"CPU": config.run.cpus_per_worker,
                                  **config.run.worker_resources}),
        run_config=ray.train.RunConfig(
            name=config.run.name, storage_path=storage_path(job),
            failure_config=ray.train.FailureConfig(max_failures=config.run.max_failures),
            callbacks=callbacks or None,
            # the best validated checkpoint and the latest (Ray keeps it) survive
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=CHECKPOINT_SCORE,
                checkpoint_score_order="max")),
    ), config.run.max_failures, config.run.name)


def fit_surviving_controller_errors(make_trainer, max_failures: int, name: str):
    """``make_trainer().fit()``, fitted again from the run's latest checkpoint when a
    training worker died while Ray Train's controller itself was calling it.

    Ray 2.60 retries a worker that dies during training (``FailureConfig``), but one that
    dies while the controller starts or polls its group (a node lost during a restart)
    reaches the controller as an ``ActorDiedError`` it reports as a ``ControllerError``
    and does not retry: the whole run failed on the second of two worker kills a minute
    apart (``tests/e2e/test_chaos_cluster.py``). A new fit of the same run name and
    storage resumes from the latest registered checkpoint, as any restart does; such
    refits count against ``run.max_failures`` too (-1: unlimited).
    """
    import ray.exceptions  # noqa: PLC0415
    import ray.train  # noqa: PLC0415

    refits = 0
    while True:
        try:
            return make_trainer().fit()
        except ray.train.ControllerError as error:
            cause = error.controller_failure
            if not isinstance(cause, ray.exceptions.RayActorError) or (
                    0 <= max_failures <= refits):
                raise
            refits += 1
            print0(f"[{name}] a training worker died while Ray Train's controller was calling "
                   f"it ({type(cause).__name__}); fitting again from the latest checkpoint "
                   f"(refit {refits}, run.max_failures={max_failures})")



def export_best(result, job: TrainJob) -> Path | None:
    """The best validated checkpoint, from the run's storage into ``job.output_dir``.

    Writes ``best.pth`` (MMPose layout), ``model_config.py`` and ``val_picture.png`` on
    the driver, whichever node rank 0 trained on. ``None`` when no checkpoint was
    validated (a pretraining run).
    """
    from unipose_ray.models import write_mmpose_config  # noqa: PLC0415
    from unipose_ray.models.checkpoints import MODEL_CONFIG_NAME  # noqa: PLC0415
    from unipose_ray.train.checkpointing import VAL_PICTURE  # noqa: PLC0415
    from unipose_ray.train.job import build_student  # noqa: PLC0415

    scored = [(metrics.get(CHECKPOINT_SCORE, UNSCORED), checkpoint)
              for checkpoint, metrics in result.best_checkpoints or []]
    scored = [(score, checkpoint) for score, checkpoint in scored if score > UNSCORED]
    if not scored:
        return None
    _, best = max(scored, key=lambda pair: pair[0])
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with best.as_directory() as folder:
        shutil.copyfile(Path(folder) / "student.pth", out / "best.pth")
        if (Path(folder) / VAL_PICTURE).is_file():
            shutil.copyfile(Path(folder) / VAL_PICTURE, out / VAL_PICTURE)
    config = job.config
    write_mmpose_config(build_student(config), config.student.size, out / MODEL_CONFIG_NAME,
                        config.student_keypoints.dataset_meta())
    return out / "best.pth"
