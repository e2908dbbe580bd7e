"""Teacher inference services: Ray actors that turn teacher crops into student-grid logits.

A :class:`TeacherService` loads one MMPose config + checkpoint once and answers
``logits(images, a, b)`` with the teacher's SimCC logits resampled onto the student's bins
(:func:`unipose_ray.kd.grid.map_teacher_logits`), in the teacher's own joint order. A
:class:`TeacherPool` holds the replicas of one teacher, creates them with the resources of
its :class:`~unipose_ray.config.TeacherConfig` and spreads requests across them; actors
restart after a crash and their calls are retried, so a dead teacher costs a delay, not
the run. :func:`start_teachers` starts the pools of a run: replicas with a fraction of a
GPU share GPUs through one placement group (two 0.5-GPU teachers on one GPU), and each
training worker starts its round-robin at its own replica.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from unipose_ray.config import TeacherConfig
from unipose_ray.kd.grid import map_teacher_logits
from unipose_ray.models import PoseModelSpec, build_teacher, use_channels_last


@dataclass(frozen=True)
class StudentGrid:
    """The student's SimCC grid the teachers' logits are mapped onto."""

    bins: tuple[int, int]
    split_ratio: float


class TeacherService:
    """One teacher replica (a Ray actor class; also usable in-process).

    Args:
        config: the teacher's config (MMPose config file and checkpoint).
        grid: the student's SimCC grid.
        device: ``cuda`` when the actor was given a GPU, else ``cpu`` (Ray does not hide
            the GPUs from an actor that reserved none); ``None``: CUDA when present.
        threads: CPU threads for inference (an actor uses its CPU share; in-process
            callers leave their own setting alone with ``None``).
    """

    def __init__(self, config: TeacherConfig, grid: StudentGrid, device: str | None = None,
                 threads: int | None = None):
        self.config, self.grid = config, grid
        if device == "cuda" and not torch.cuda.is_available():
            print(f"teacher '{config.name}' reserved a GPU but this process sees no CUDA "
                  "device; it runs on the CPU", flush=True)
            device = "cpu"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # bf16 where the GPU has it, else fp16 (V100, T4)
        self.autocast_dtype = (torch.bfloat16 if self.device.type == "cuda"
                               and torch.cuda.is_bf16_supported() else torch.float16)
        if threads is not None and self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.model = use_channels_last(build_teacher(
            config.config, config.checkpoint, device=str(self.device),
            trust_checkpoint=config.trust_checkpoint))
        self.calls = 0

    def spec(self) -> PoseModelSpec:
        return self.model.spec

    @torch.inference_mode()
    def raw_logits(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's SimCC logits on its own grid, ``(B, K_t, Wt)`` and ``(B, K_t, Ht)``
        float32 on the service's device (``images``: ``(B, 3, h_t, w_t)`` uint8 RGB)."""
        self.calls += 1
        x = torch.tensor(images, device=self.device)  # a copy: object-store arrays are read-only
        autocast = self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=autocast):
            tx, ty = self.model(x)
        return tx.float(), ty.float()

    @torch.inference_mode()
    def logits(self, images: np.ndarray, a: np.ndarray, b: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Teacher logits on the student's grid.

        Args:
            images: ``(B, 3, h_t, w_t)`` uint8 RGB crops at the teacher's input size.
            a, b: ``(B, 2)`` per-axis relation ``teacher_px = a * student_px + b``.

        Returns:
            ``(B, K_t, Wx)`` and ``(B, K_t, Wy)`` float32 logits on the student's bins.
        """
        tx, ty = self.raw_logits(images)
        mx, my = map_teacher_logits(
            tx, ty, torch.tensor(a, device=self.device), torch.tensor(b, device=self.device),
            student_bins=self.grid.bins, split_ratio=self.grid.split_ratio,
            teacher_split_ratio=self.model.spec.simcc_split_ratio)
        return mx.cpu().numpy(), my.cpu().numpy()

    def ping(self) -> int:
        """Number of batches served (also a liveness check)."""
        return self.calls

    def placement(self) -> dict:
        """Where this replica runs: node id, GPU ids, device (for checks and tests)."""
        import ray  # noqa: PLC0415

        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "device": str(self.device)}


class TeacherPool:
    """The replicas of one teacher, created where the resources are decided.

    Args:
        config: the teacher (its ``replicas``, ``num_gpus``, ``num_cpus``, ``resources``).
        grid: the student's grid.
        max_restarts: actor restarts after a crash (``-1``: unlimited).
        max_task_retries: retries of a call that was running when its actor died.
        placement: per replica, a ``(placement_group, bundle_index)`` to run in (see
            :func:`start_teachers`); ``None``: wherever Ray finds the resources.
    """

    def __init__(self, config: TeacherConfig, grid: StudentGrid, max_restarts: int = -1,
                 max_task_retries: int = 3, placement: list[tuple[object, int]] | None = None):
        import ray  # noqa: PLC0415
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # noqa: PLC0415

        self.name, self.config = config.name, config
        actor = ray.remote(TeacherService)
        options = {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus,
                   "resources": dict(config.resources) or None,
                   "max_restarts": max_restarts, "max_task_retries": max_task_retries}
        threads = max(1, round(config.num_cpus))
        device = "cuda" if config.num_gpus > 0 else "cpu"
        self.replicas = []
        for i in range(config.replicas):
            placed = {}
            if placement is not None:
                group, bundle = placement[i]
                placed["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=bundle)
            self.replicas.append(actor.options(**options, **placed).remote(
                config, grid, device=device, threads=threads))
        self._calls = 0

    def starting_at(self, offset: int) -> TeacherPool:
        """This pool with its round-robin starting at replica ``offset``: training worker
        ``r`` starts at ``r``, so workers stepping in lockstep ask different replicas."""
        pool = copy.copy(self)
        pool._calls = offset
        return pool

    def submit(self, images, a, b):
        """Queue one batch on the next replica; returns an ``ObjectRef`` of ``(x, y)``.

        ``images`` may be an ``ObjectRef`` (``ray.put`` once, shared by teachers).
        """
        replica = self.replicas[self._calls % len(self.replicas)]
        self._calls += 1
        return replica.logits.remote(images, a, b)

    def spec(self) -> PoseModelSpec:
        import ray  # noqa: PLC0415

        return ray.get(self.replicas[0].spec.remote())

    def wait_ready(self, timeout_s: float = 600) -> PoseModelSpec:
        """Block until every replica has loaded its model; errors surface here, early."""
        import ray  # noqa: PLC0415

        specs = ray.get([r.spec.remote() for r in self.replicas], timeout=timeout_s)
        return specs[0]

    def shutdown(self) -> None:
        """Stop the replicas (their resources go back to the cluster)."""
        import ray  # noqa: PLC0415

        for replica in self.replicas:
            ray.kill(replica)


def pack_gpu_bundles(teachers: tuple[TeacherConfig, ...]) -> tuple[list[dict], dict]:
    """Placement-group bundles for the teacher replicas that take a fraction of a GPU.

    First-fit: replicas are packed into bundles of at most one GPU, so two 0.5-GPU
    teachers share one GPU (and its node) instead of holding two. Returns the bundles
    (``GPU``, ``CPU`` and custom resources summed) and ``(teacher name, replica) ->
    bundle index``. Whole-GPU and CPU replicas are left out: Ray places those well.
    """
    bundles: list[dict] = []
    where: dict[tuple[str, int], int] = {}
    for teacher in teachers:
        if not 0 < teacher.num_gpus < 1:
            continue
        for replica in range(teacher.replicas):
            fits = [i for i, b in enumerate(bundles)
                    if b["GPU"] + teacher.num_gpus <= 1 + 1e-9
                    and set(b) - {"GPU", "CPU"} == set(teacher.resources)]
            if not fits:
                bundles.append({"GPU": 0.0, "CPU": 0.0, **{k: 0.0 for k in teacher.resources}})
                fits = [len(bundles) - 1]
            bundle = bundles[fits[0]]
            bundle["GPU"] += teacher.num_gpus
            bundle["CPU"] += teacher.num_cpus
            for name, amount in teacher.resources.items():
                bundle[name] += amount
            where[(teacher.name, replica)] = fits[0]
    for bundle in bundles:  # a bundle's GPU share is reserved whole: nobody else fits in it
        bundle["GPU"] = float(math.ceil(bundle["GPU"] - 1e-9))
    return bundles, where


def start_teachers(teachers: tuple[TeacherConfig, ...], grid: StudentGrid,
                   timeout_s: float = 600) -> tuple[dict[str, TeacherPool], object]:
    """Start every teacher's pool; fractional-GPU replicas share GPUs (see
    :func:`pack_gpu_bundles`). Returns the pools and the placement group (or ``None``),
    which :func:`stop_teachers` removes."""
    import ray  # noqa: PLC0415
    from ray.util.placement_group import placement_group  # noqa: PLC0415

    bundles, where = pack_gpu_bundles(teachers)
    group = None
    if bundles:
        group = placement_group(bundles, strategy="PACK", name="unipose_teachers")
        if not group.wait(timeout_s):
            ray.util.remove_placement_group(group)
            raise RuntimeError(f"the teachers' GPU bundles {bundles} could not be placed in "
                               f"{timeout_s:g} s; the cluster lacks those GPUs")
    pools = {}
    for teacher in teachers:
        placement = ([(group, where[(teacher.name, r)]) for r in range(teacher.replicas)]
                     if (teacher.name, 0) in where else None)
        pools[teacher.name] = TeacherPool(teacher, grid, placement=placement)
    return pools, group


def stop_teachers(pools: dict[str, TeacherPool], group) -> None:
    import ray  # noqa: PLC0415

    for pool in pools.values():
        pool.shutdown()
    if group is not None:
        ray.util.remove_placement_group(group)
