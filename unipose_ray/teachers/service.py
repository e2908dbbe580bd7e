"""Teacher inference services: Ray actors that turn teacher crops into student-grid logits.

A :class:`TeacherService` loads one MMPose config + checkpoint once and answers
``logits(images, a, b)`` with the teacher's SimCC logits resampled onto the student's bins
(:func:`unipose_ray.losses.map_teacher_logits`), in the teacher's own joint order. A
:class:`TeacherPool` holds the replicas of one teacher, creates them with the resources of
its :class:`~unipose_ray.config.TeacherConfig` and spreads requests across them; actors
restart after a crash and their calls are retried, so a dead teacher costs a delay, not
the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unipose_ray.config import TeacherConfig
from unipose_ray.losses import map_teacher_logits
from unipose_ray.models import PoseModelSpec, build_teacher


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
        device: ``cuda`` when the actor was given a GPU, else ``cpu``.
        threads: CPU threads for inference (an actor uses its CPU share; in-process
            callers leave their own setting alone with ``None``).
    """

    def __init__(self, config: TeacherConfig, grid: StudentGrid, device: str | None = None,
                 threads: int | None = None):
        self.config, self.grid = config, grid
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if threads is not None and self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.model = build_teacher(config.config, config.checkpoint, device=str(self.device),
                                   trust_checkpoint=config.trust_checkpoint)
        self.calls = 0

    def spec(self) -> PoseModelSpec:
        return self.model.spec

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
        self.calls += 1
        x = torch.tensor(images, device=self.device)  # a copy: object-store arrays are read-only
        autocast = self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            tx, ty = self.model(x)
        mx, my = map_teacher_logits(
            tx.float(), ty.float(),
            torch.tensor(a, device=self.device), torch.tensor(b, device=self.device),
            student_bins=self.grid.bins, split_ratio=self.grid.split_ratio,
            teacher_split_ratio=self.model.spec.simcc_split_ratio)
        return mx.cpu().numpy(), my.cpu().numpy()

    def ping(self) -> int:
        """Number of batches served (also a liveness check)."""
        return self.calls


class TeacherPool:
    """The replicas of one teacher, created where the resources are decided.

    Args:
        config: the teacher (its ``replicas``, ``num_gpus``, ``num_cpus``).
        grid: the student's grid.
        max_restarts: actor restarts after a crash (``-1``: unlimited).
        max_task_retries: retries of a call that was running when its actor died.
    """

    def __init__(self, config: TeacherConfig, grid: StudentGrid, max_restarts: int = -1,
                 max_task_retries: int = 3):
        import ray  # noqa: PLC0415

        self.name, self.config = config.name, config
        actor = ray.remote(TeacherService).options(
            num_cpus=config.num_cpus,
            num_gpus=config.num_gpus,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
        )
        threads = max(1, round(config.num_cpus))
        self.replicas = [actor.remote(config, grid, threads=threads) for _ in range(config.replicas)]
        self._calls = 0

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
