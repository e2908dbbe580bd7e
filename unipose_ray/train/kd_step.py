"""The distillation side of a training step: KD terms, their joint weights, teacher requests.

- :func:`teacher_terms`: one :class:`~unipose_ray.kd.losses.TeacherTerm` per teacher (weight,
  student channels of its joints, masking);
- :func:`kd_joint_weights`: the per-joint KD weights of ``loss.kd_mask``;
- :class:`TeacherClient` and :func:`one_ahead`: teacher logits for batch i+1 requested
  while batch i trains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from unipose_ray.config import DistillConfig
from unipose_ray.data.transforms import size_key
from unipose_ray.kd.losses import TeacherTerm
from unipose_ray.runtime import distributed as dist
from unipose_ray.skeleton import NAME_MAPS, UNIFIED, KeypointSet, mapping_for
from unipose_ray.teacher_cache.source import batch_targets
from unipose_ray.teachers.service import StudentGrid, TeacherPool, TeacherService
from unipose_ray.train.data import DATASET_CODES

if TYPE_CHECKING:
    from unipose_ray.train.job import TrainJob


def teacher_terms(config: DistillConfig) -> list[TeacherTerm]:
    """One KD term per teacher: its weight and the student channels of its joints.

    Every teacher reaches every sample (the term has no per-sample mask): the COCO
    teacher's face joints on MPII images and the MPII teacher's spine and head top on
    COCO images are what the student learns from the other dataset.
    """
    student = mapping_for(config.student.dataset, config.skeleton)
    terms = []
    for teacher in config.teachers:
        uni = mapping_for(teacher.dataset, config.skeleton).to_unified
        missing = [int(i) for i in uni if student.from_unified[i] < 0]
        if missing:
            raise ValueError(f"teacher '{teacher.name}' predicts joints the student does not have")
        terms.append(TeacherTerm(
            teacher.name, teacher.weight, tuple(int(student.from_unified[i]) for i in uni),
            mask_joints=config.loss.kd_mask != "none"))
    return terms


@lru_cache(maxsize=None)
def annotated_table(skeleton: KeypointSet) -> np.ndarray:
    """``(num dataset codes, K)``: which of ``skeleton``'s joints each dataset annotates
    (a dataset with joints outside it annotates none: it cannot be in such a run)."""
    table = np.zeros((max(DATASET_CODES.values()) + 1, skeleton.num_keypoints), bool)
    for name, code in DATASET_CODES.items():
        if set(NAME_MAPS.get(name, {}).values()) <= set(skeleton.names):
            table[code, mapping_for(name, skeleton).to_unified] = True
    return table


def kd_joint_weights(dataset_codes: torch.Tensor, weights: torch.Tensor, kd_mask: str,
                     student_dataset: str = "unified", skeleton: KeypointSet = UNIFIED
                     ) -> torch.Tensor | None:
    """Per-sample, per-student-channel KD weights for ``loss.kd_mask``; ``None`` for ``none``.

    ``own_unlabelled``: 0 where the sample's own dataset annotates the joint and its
    target weight is 0 (unlabelled, or outside the crop); 1 elsewhere, in particular on
    every joint that dataset does not annotate (the transfer from the other teacher).

    Args:
        dataset_codes: ``(B,)`` ``DATASET_CODES`` of the samples.
        weights: ``(B, K)`` unified target weights of the batch.
        kd_mask: ``loss.kd_mask``.
        student_dataset: the student's keypoint set (its channels are returned).
        skeleton: the run's unified skeleton (``K`` joints).
    """
    if kd_mask == "none":
        return None
    if kd_mask != "own_unlabelled":
        raise ValueError(f"unknown kd_mask '{kd_mask}'")
    annotated = torch.as_tensor(annotated_table(skeleton), device=weights.device)[
        dataset_codes.long()]
    unified = torch.where(annotated, (weights > 0).to(weights.dtype), torch.ones_like(weights))
    idx = torch.as_tensor(mapping_for(student_dataset, skeleton).to_unified, device=weights.device)
    return unified.index_select(1, idx)


class TeacherClient:
    """Sends a batch to every teacher and later collects the logits.

    Online: ``request`` puts each distinct teacher input once in the object store and
    submits to all teachers without waiting; ``collect`` does one ``ray.get`` for all.
    In-process: ``request`` runs the teachers right away (no overlap). From the cache: the
    batch already carries the teachers' compressed targets: coefficients decoded here into
    student-grid logits with each teacher's basis, or :class:`TopK` pairs.
    """

    def __init__(self, job: TrainJob, pools: dict[str, TeacherPool] | None):
        self.job = job
        self.pools = {name: pool.starting_at(dist.rank()) for name, pool in (pools or {}).items()}
        grid = StudentGrid(job.config.student.codec.num_bins, job.config.student.codec.split_ratio)
        self.grid = grid
        self.cached = job.stream is not None and job.stream.cache is not None
        self.bases = job.stream.cache.load_bases() if self.cached else {}
        self.local = {}
        if not job.teachers_online and not self.cached:
            self.local = {t.name: TeacherService(t, grid, device=str(dist.device()))
                          for t in job.config.teachers}

    def _inputs(self, batch: dict, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        size = tuple(self.job.teacher_specs[name].input_size)
        if size == tuple(self.job.config.student.codec.input_size):
            n = len(batch["image"])
            return batch["image"], np.ones((n, 2), np.float32), np.zeros((n, 2), np.float32), "student"
        key = size_key(size)
        return batch[f"teacher_image_{key}"], batch[f"teacher_a_{key}"], batch[f"teacher_b_{key}"], key

    def request(self, batch: dict) -> dict:
        if not self.job.config.teachers:
            return {}
        if self.cached:
            return {t.name: batch_targets(batch, t.name, self.grid, self.bases.get(t.name))
                    for t in self.job.config.teachers}
        if self.local:
            return {name: service.logits(*self._inputs(batch, name)[:3])
                    for name, service in self.local.items()}
        import ray  # noqa: PLC0415

        shared: dict[str, object] = {}
        refs = {}
        for name, pool in self.pools.items():
            images, a, b, key = self._inputs(batch, name)
            if key not in shared:
                shared[key] = ray.put(images)
            refs[name] = pool.submit(shared[key], a, b)
        return refs

    def collect(self, handle: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self.cached:
            return handle
        if not handle or self.local:
            values = handle
        else:
            import ray  # noqa: PLC0415

            values = dict(zip(handle, ray.get(list(handle.values())), strict=True))
        return {name: (torch.tensor(x), torch.tensor(y)) for name, (x, y) in values.items()}


def one_ahead(batches: Iterable[dict], request: Callable[[dict], object],
              collect: Callable[[object], dict]) -> Iterator[tuple[dict, dict]]:
    """Yield ``(batch_i, teacher_outputs_i)`` with batch i+1's request already sent."""
    pending = None
    for batch in batches:
        handle = request(batch)
        if pending is not None:
            yield pending[0], collect(pending[1])
        pending = (batch, handle)
    if pending is not None:
        yield pending[0], collect(pending[1])
