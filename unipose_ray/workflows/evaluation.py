"""Evaluation where the compute is: a model's validation boxes predicted by Ray tasks.

The driver reads each validation set's boxes once (:func:`~unipose_ray.evaluation.
cross_dataset.eval_inputs`), puts the model in the object store once, and splits every
set's boxes into ``workers`` contiguous shards, each a whole number of batches; task ``i``
predicts shard ``i`` of every set with the resources the model trains or serves with (a
teacher's ``num_cpus``/``num_gpus``/``resources``; a student's ``run.cpus_per_worker``, a
GPU with ``run.use_gpu``, ``run.worker_resources``). The driver gathers the predictions in
order and scores them once (:func:`~unipose_ray.evaluation.cross_dataset.score_predictions`):
the batches are the driver's own, so on the same device the predictions, and the metrics,
equal :func:`~unipose_ray.evaluation.cross_dataset.evaluate_model`'s.

Tasks, not actors or Ray Data: a task frees its CPUs/GPU the moment its shard is done, so
work submitted before a training (the teachers' evaluation, collected after it) can never
hold resources the training waits for; explicit batch-aligned shards keep the driver's
batches (Ray Data would re-batch 9,310 small records and start its executor for them).
``workers=0`` runs the same evaluation on the driver, at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from unipose_ray.config import RunConfig, TeacherConfig
from unipose_ray.config.settings import CodecConfig
from unipose_ray.data.records import InstanceRecord
from unipose_ray.evaluation.cross_dataset import SetInputs, score_predictions
from unipose_ray.evaluation.topdown import Predictions, predict
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import UNIFIED, KeypointSet


@dataclass(frozen=True)
class EvalWorkers:
    """Where a model's evaluation runs.

    Attributes:
        count: Ray tasks sharing the boxes (0: on the driver's CPU, at once).
        num_cpus, num_gpus, resources: what each task reserves; a task with a GPU (or a
            fraction of one) predicts on CUDA.
    """

    count: int
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)

    def options(self) -> dict:
        """The Ray task options."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                "resources": dict(self.resources) or None}


def teacher_workers(teacher: TeacherConfig, count: int) -> EvalWorkers:
    """Tasks with the resources of one of the teacher's service replicas."""
    return EvalWorkers(count, teacher.num_cpus, teacher.num_gpus, dict(teacher.resources))


def student_workers(run: RunConfig) -> EvalWorkers:
    """Tasks with the resources of one of the run's training workers."""
    return EvalWorkers(run.eval_workers, run.cpus_per_worker, 1.0 if run.use_gpu else 0.0,
                       dict(run.worker_resources))


def shard_bounds(n: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``[start, stop)`` ranges over ``n`` boxes, each a run of whole
    batches of ``batch_size`` (the last may be short), as even as batches allow; some are
    empty when there are fewer batches than shards."""
    batches = np.array_split(np.arange(-(-n // batch_size)), shards)
    return [(int(b[0]) * batch_size, min(n, (int(b[-1]) + 1) * batch_size)) if len(b)
            else (n, n) for b in batches]


def concat_predictions(parts: Sequence[Predictions]) -> Predictions:
    """Shards' predictions, in order, as one (``(N, K, 2)``, ``(N, K)``, ``(N,)``)."""
    return Predictions(np.concatenate([p.keypoints for p in parts]),
                       np.concatenate([p.scores for p in parts]),
                       np.concatenate([p.areas for p in parts]))


def predict_shard(model: torch.nn.Module, keypoint_set: str | KeypointSet, codec: CodecConfig,
                  boxes: list[list[InstanceRecord]], flip_test: bool, batch_size: int,
                  use_gpu: bool, threads: int) -> list[Predictions]:
    """A task's work: the model's predictions on its boxes of each set (the body of the
    Ray task; also callable in-process)."""
    device = "cpu"
    if use_gpu and torch.cuda.is_available():
        device = "cuda"
    elif use_gpu:  # Ray reserved a GPU the process cannot see: say so, do not fail
        print("evaluation task reserved a GPU but sees no CUDA device; it runs on the CPU",
              flush=True)
    if device == "cpu":
        torch.set_num_threads(threads)
    model = model.to(device)
    return [predict(model, b, keypoint_set, codec, flip_test, batch_size, device) for b in boxes]


def _predict_task(model_ref: list, *args) -> list[Predictions]:
    """The Ray task: :func:`predict_shard` on the model in the object store. The model's
    ref comes wrapped in a list so that Ray does not unpickle it before MMPose's modules
    can be imported (:func:`~unipose_ray.models.compat.import_mmpose`, which stands in
    for the compiled ``mmcv.ops`` the modules' imports name)."""
    import ray  # noqa: PLC0415

    import_mmpose()
    return predict_shard(ray.get(model_ref[0]), *args)


class PendingEvaluation:
    """A model's evaluation under way; :meth:`result` gathers and scores it.

    Args:
        inputs: the sets' boxes (:func:`eval_inputs`).
        keypoint_set: the model's keypoint set.
        skeleton: the unified skeleton of the sets' records.
        shards: ``ObjectRef`` per task of its per-set :class:`Predictions`; or
        metrics: the metrics, already computed on the driver.
    """

    def __init__(self, inputs: Sequence[SetInputs], keypoint_set: str | KeypointSet,
                 skeleton: KeypointSet = UNIFIED, shards: list | None = None,
                 metrics: dict[str, float] | None = None):
        self.inputs, self.keypoint_set, self.skeleton = list(inputs), keypoint_set, skeleton
        self.shards, self.metrics = shards, metrics

    def result(self) -> dict[str, float]:
        """The metrics (flat names); waits for the tasks the first time."""
        if self.metrics is None:
            import ray  # noqa: PLC0415

            parts = ray.get(self.shards)
            preds = [concat_predictions([p[i] for p in parts]) for i in range(len(self.inputs))]
            self.metrics = score_predictions(self.inputs, preds, self.keypoint_set,
                                             self.skeleton)
            self.shards = None
        return self.metrics

    def cancel(self) -> None:
        """Stop the tasks that have not finished (a failed workflow's cleanup)."""
        if self.shards:
            import ray  # noqa: PLC0415

            for ref in self.shards:
                ray.cancel(ref)
            self.shards = None


def submit_evaluation(model: torch.nn.Module, keypoint_set: str | KeypointSet,
                      codec: CodecConfig, inputs: Sequence[SetInputs], workers: EvalWorkers,
                      flip_test: bool = True, batch_size: int = 32,
                      skeleton: KeypointSet = UNIFIED) -> PendingEvaluation:
    """Start a model's evaluation on ``workers`` (Ray must be initialised when
    ``workers.count > 0``); returns at once, the metrics come with ``.result()``.

    ``model`` must be on the CPU (it travels through the object store once); each task
    moves it to its device.
    """
    if workers.count == 0:
        preds = [predict(model, s.boxes, keypoint_set, codec, flip_test, batch_size)
                 for s in inputs]
        return PendingEvaluation(inputs, keypoint_set, skeleton,
                                 metrics=score_predictions(inputs, preds, keypoint_set, skeleton))
    import ray  # noqa: PLC0415

    model_ref = ray.put(model)
    bounds = [shard_bounds(len(s.boxes), workers.count, batch_size) for s in inputs]
    task = ray.remote(_predict_task).options(**workers.options())
    shards = []
    for i in range(workers.count):
        boxes = [s.boxes[b[i][0]:b[i][1]] for s, b in zip(inputs, bounds, strict=True)]
        if any(boxes):
            shards.append(task.remote([model_ref], keypoint_set, codec, boxes, flip_test,
                                      batch_size, workers.num_gpus > 0,
                                      max(1, round(workers.num_cpus))))
    if not shards:  # no box in any set: score the empty predictions on the driver
        return submit_evaluation(model, keypoint_set, codec, inputs, EvalWorkers(0),
                                 flip_test, batch_size, skeleton)
    return PendingEvaluation(inputs, keypoint_set, skeleton, shards=shards)
