"""The teachers' bases of a basis-format cache: fitted once, before any shard is written.

Each teacher's basis (:mod:`unipose_ray.kd.basis`) is fitted in one Ray task with
the teacher's resources (its GPU when the cluster has one) on ``teacher_cache.calibration``
instance-views spread evenly over the records and views, cropped by the build's own code
(:class:`~unipose_ray.teacher_cache.crops.ViewCrops`). It is written beside the shards
(``basis-<teacher>.npz``, atomically) and its sha256 goes into the manifest; the shards
hold coefficients in it, so a build that resumes reuses it, and a cache whose basis file
is gone or changed is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from unipose_ray.config import DistillConfig, TeacherConfig
from unipose_ray.data.pipeline import PipelineConfig
from unipose_ray.data.transforms import size_key
from unipose_ray.kd.basis import Basis, fit_basis
from unipose_ray.models import PoseModelSpec
from unipose_ray.runtime.distributed import print0
from unipose_ray.teacher_cache.crops import CropPlan, ViewCrops
from unipose_ray.teacher_cache.format import CacheManifest, CacheStore, basis_name
from unipose_ray.teachers.service import StudentGrid


def teacher_on_cluster(teacher: TeacherConfig, gpus: float) -> TeacherConfig:
    """The teacher with the GPUs it asks for, or on the CPU (said once) when the cluster
    has fewer."""
    if gpus >= teacher.num_gpus:
        return teacher
    print0(f"[cache] teacher '{teacher.name}' asks for {teacher.num_gpus:g} GPU(s); "
           "the cluster has none: it runs on the CPU")
    return replace(teacher, num_gpus=0.0)


def calibration_rows(num_records: int, views: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(views, records)`` of ``count`` instance-views spread evenly over all of them."""
    total = num_records * views
    rows = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))
    return rows // num_records, rows % num_records


def fit_teacher_basis(plan: CropPlan, teacher: TeacherConfig, grid: StudentGrid,
                      components: int, batch_size: int) -> bytes:
    """Crop the plan's rows, run the teacher, fit its basis (a Ray task's body)."""
    import torch  # noqa: PLC0415

    from unipose_ray.teachers.service import TeacherService  # noqa: PLC0415

    device = "cuda" if teacher.num_gpus > 0 else "cpu"
    service = TeacherService(teacher, grid, device=device,
                             threads=max(1, round(teacher.num_cpus)))
    crops = ViewCrops(plan)
    key = size_key(plan.sizes[0])
    xs, ys = [], []
    for start in range(0, len(plan.records), batch_size):
        batch = crops({"id": np.arange(start, min(start + batch_size, len(plan.records)))})
        x, y = service.raw_logits(batch[f"image_{key}"])
        xs.append(x.cpu())
        ys.append(y.cpu())
    x, y = torch.cat(xs), torch.cat(ys)
    # n samples span at most n dimensions: a basis of n components is exact on them
    usable = min(components, len(x), x.shape[-1] + y.shape[-1])
    return fit_basis(x, y, usable, service.spec().simcc_split_ratio).to_bytes()


def ensure_bases(config: DistillConfig, records, specs: dict[str, PoseModelSpec],
                 store: CacheStore, manifest: CacheManifest) -> tuple[dict[str, Basis], int]:
    """Every teacher's basis of the cache at ``store``, and the teacher passes spent on
    fitting now: the ones ``manifest`` lists (checked against their sha256), else fitted
    now, written, and listed in ``manifest`` (written too). Refuses shards whose basis is
    gone."""
    import ray  # noqa: PLC0415

    cache = config.teacher_cache
    bases: dict[str, Basis] = {}
    for teacher in config.teachers:
        name = basis_name(teacher.name)
        if teacher.name in manifest.bases and store.exists(name):
            data = store.read_bytes(name)
            if hashlib.sha256(data).hexdigest() == manifest.bases[teacher.name]:
                bases[teacher.name] = Basis.from_bytes(data)
    todo = [t for t in config.teachers if t.name not in bases]
    if not todo:
        return bases, 0
    if manifest.shards:
        raise ValueError(f"teacher cache {cache.uri}: its shards hold coefficients in "
                         f"{basis_name(todo[0].name)}, which is missing or changed; delete "
                         "the folder and build the cache again")
    views, rows = calibration_rows(records.num_rows, cache.views, cache.calibration)
    print0(f"[cache] fitting each teacher's basis ({cache.components} components per joint) "
           f"on {len(rows)} instance-views")
    pipeline = PipelineConfig(config.student.codec, config.augment, config.run.seed,
                              skeleton=config.skeleton)
    grid = StudentGrid(config.student.codec.num_bins, config.student.codec.split_ratio)
    records_ref = ray.put(records)
    gpus = ray.cluster_resources().get("GPU", 0)
    refs = {}
    for teacher in todo:
        teacher = teacher_on_cluster(teacher, gpus)
        plan = CropPlan(records_ref, pipeline, (tuple(specs[teacher.name].input_size),),
                        views, rows, config.data.skip_bad_images)
        task = ray.remote(fit_teacher_basis).options(
            num_cpus=teacher.num_cpus, num_gpus=teacher.num_gpus, max_retries=0)
        refs[teacher.name] = task.remote(plan, teacher, grid, cache.components,
                                         cache.batch_size)
    for teacher_name, ref in refs.items():
        data = ray.get(ref)
        store.write_bytes(basis_name(teacher_name), data)
        manifest.bases[teacher_name] = hashlib.sha256(data).hexdigest()
        bases[teacher_name] = Basis.from_bytes(data)
        if bases[teacher_name].num_components < cache.components:
            print0(f"[cache] teacher '{teacher_name}': {len(rows)} instance-views in all, a "
                   f"basis of {bases[teacher_name].num_components} components holds them "
                   "exactly")
    store.write_manifest(manifest)
    return bases, len(rows) * len(todo)
