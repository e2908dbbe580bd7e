"""Teacher logits as a few coefficients in a per-joint basis: the cache's compact format.

An RTMPose head computes each joint's SimCC logits as ``cls_x(h)`` and ``cls_y(h)`` of one
feature vector ``h`` of that joint (256 numbers): the joint's x and y logits side by side,
``D = Wt + Ht`` numbers on the teacher's own grid, lie in a subspace of at most 256
dimensions, and over real crops in far fewer. The build fits, per teacher and joint, the
mean and the first ``M`` principal directions of those vectors on a calibration sample of
crops (:func:`fit_basis`), and stores each instance-view as ``M`` fp16 coefficients plus
its crop relation ``a, b`` (:meth:`Basis.encode`). A run decodes ``mean + c @ U`` on the
teacher's grid and maps it onto the student's bins with
:func:`~unipose_ray.kd.grid.map_teacher_logits`, as an online teacher does
(:meth:`Basis.decode`): the KD loss is then MMPose's ``KDLoss`` on those logits, with no
special case.

Top-k (:mod:`unipose_ray.kd.topk`) keeps the largest probabilities and loses the
bins far from the peak, which dominate the loss value; the basis keeps the whole curve to
within its truncation error (measured by ``jobs/benchmark_kd.py``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from unipose_ray.kd.grid import map_teacher_logits


@dataclass(frozen=True)
class Basis:
    """One teacher's per-joint basis.

    Attributes:
        mean: ``(K, D)`` float32, the joint's mean logits (x bins then y bins).
        components: ``(K, M, D)`` float32 (stored as fp16: these are the values used),
            orthonormal rows up to fp16 rounding.
        bins: the teacher's ``(Wt, Ht)`` SimCC bins.
        split_ratio: the teacher's SimCC split ratio.
    """

    mean: Tensor
    components: Tensor
    bins: tuple[int, int]
    split_ratio: float

    @property
    def num_components(self) -> int:
        return self.components.shape[1]

    def encode(self, x: Tensor, y: Tensor) -> Tensor:
        """``(B, K, Wt)``, ``(B, K, Ht)`` teacher-grid logits -> ``(B, K, M)`` fp16."""
        if (x.shape[-1], y.shape[-1]) != self.bins:
            raise ValueError(f"logits have {(x.shape[-1], y.shape[-1])} bins, the basis "
                             f"{self.bins}")
        centred = torch.cat([x, y], dim=-1).float() - self.mean
        return torch.einsum("bkd,kmd->bkm", centred, self.components).half()

    def decode(self, coefficients: Tensor, a: Tensor, b: Tensor,
               student_bins: tuple[int, int], split_ratio: float) -> tuple[Tensor, Tensor]:
        """Coefficients -> logits on the student's grid.

        Args:
            coefficients: ``(B, K, M)``.
            a, b: ``(B, 2)`` crop relation ``teacher_px = a * student_px + b``.
            student_bins, split_ratio: the student's SimCC grid.
        """
        logits = self.mean + torch.einsum("bkm,kmd->bkd", coefficients.float(),
                                          self.components)
        x, y = logits.split(self.bins, dim=-1)
        return map_teacher_logits(x, y, a.float(), b.float(), student_bins=student_bins,
                                  split_ratio=split_ratio, teacher_split_ratio=self.split_ratio)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean.numpy().astype(np.float32),
                 components=self.components.numpy().astype(np.float16),
                 bins=np.asarray(self.bins, np.int64), split_ratio=np.float64(self.split_ratio))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Basis:
        with np.load(io.BytesIO(data)) as arrays:
            return cls(torch.from_numpy(arrays["mean"]),
                       torch.from_numpy(arrays["components"].astype(np.float32)),
                       tuple(int(v) for v in arrays["bins"]), float(arrays["split_ratio"]))


def fit_basis(x: Tensor, y: Tensor, components: int, split_ratio: float) -> Basis:
    """The per-joint mean and first ``components`` principal directions of ``N`` samples of
    teacher-grid logits ``(N, K, Wt)``, ``(N, K, Ht)`` (one SVD per joint)."""
    data = torch.cat([x, y], dim=-1).double().transpose(0, 1)  # (K, N, D)
    n, dims = data.shape[1:]
    if components > min(n, dims):
        raise ValueError(f"a basis of {components} components needs at least {components} "
                         f"calibration samples and logits; got {n} samples of {dims} logits "
                         "(lower teacher_cache.components or raise teacher_cache.calibration)")
    mean = data.mean(dim=1)
    _, _, vh = torch.linalg.svd(data - mean[:, None], full_matrices=False)
    # the stored (fp16) directions are the ones coefficients are computed with
    basis = vh[:, :components].half().float()
    return Basis(mean.float(), basis, (x.shape[-1], y.shape[-1]), split_ratio)
