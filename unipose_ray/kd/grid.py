"""Teacher grid -> student grid: a teacher's SimCC logits resampled at the student's bins.

A teacher crops the same box at its own input size (MPII's 256x256 against the student's
192x256); the two crops are related per axis by ``teacher_px = a * student_px + b``, and
:func:`map_teacher_logits` reads the teacher's logits at the student's bins through that
relation (torch only).
"""

from __future__ import annotations

import torch
from torch import Tensor


def map_teacher_logits(
    teacher_x: Tensor,
    teacher_y: Tensor,
    a: Tensor,
    b: Tensor,
    student_bins: tuple[int, int] = (384, 512),
    split_ratio: float = 2.0,
    teacher_split_ratio: float | None = None,
    outside: float = -1e4,
) -> tuple[Tensor, Tensor]:
    """Resample teacher SimCC logits at the student's bins (exact crop geometry).

    Student bin ``i`` sits at student pixel ``i / split_ratio`` (SimCC decoding); the same
    image point is at teacher pixel ``a * i / split_ratio + b`` (per sample and axis), i.e.
    at fractional teacher bin ``teacher_split_ratio * (a * i / split_ratio + b)``. The
    teacher logits are linearly interpolated there. Interpolating logits equals
    interpolating log-probabilities up to a per-row constant, which any later softmax
    removes, so the result stays valid for every ``beta``; a pure shift by whole bins
    (``a = 1``, ``b * ratio`` an integer: 256x256 vs 192x256 for a tall person) is exact.
    Student bins outside the teacher's crop get ``row_min + outside`` logits: probability
    ~0, i.e. the teacher mass outside the student's window is dropped and the rest is
    renormalised by the softmax. That happens along y for a person wider than the
    student's aspect ratio (every square MPII box): the teacher crops the person box at
    its own aspect (``a = 4/3`` for 256x256 vs 192x256), a window shorter than the
    student's, and puts no mass on the student's top and bottom eighths.

    The per-axis relation holds when both crops share the box centre and rotation (MMPose's
    top-down affine with the same augmentation): with uniform crop scales ``s_s``, ``s_t``
    (output px per image px) and crop centres ``c_s``, ``c_t`` (output px),
    ``a = s_t / s_s`` and ``b = c_t - a * c_s``; for a tall box, 256x256 vs 192x256 gives
    ``a = 1, b = (32, 0)``.

    Args:
        teacher_x: ``(B, K, Wt)`` teacher x logits; teacher_y ``(B, K, Ht)``.
        a: ``(B, 2)`` scale per sample, (x-axis, y-axis): teacher px per student px.
        b: ``(B, 2)`` offset per sample, (x, y), in teacher pixels.
        student_bins: ``(Wx, Wy)``.
        split_ratio: the student's SimCC split ratio.
        teacher_split_ratio: the teacher's; defaults to ``split_ratio``.

    Returns:
        ``((B, K, Wx), (B, K, Wy))`` logits on the student's grid.
    """
    bsz = teacher_x.shape[0]
    for name, v in (("a", a), ("b", b)):
        if v.shape != (bsz, 2):
            raise ValueError(f"{name} must be (B, 2) = ({bsz}, 2), got {tuple(v.shape)}")
    t_ratio = split_ratio if teacher_split_ratio is None else teacher_split_ratio
    out = []
    for axis, (logits, n_student) in enumerate(((teacher_x, student_bins[0]),
                                               (teacher_y, student_bins[1]))):  # fmt: skip
        student_px = torch.arange(n_student, device=logits.device, dtype=logits.dtype)
        student_px = student_px / split_ratio
        pos = t_ratio * (a[:, axis, None].to(logits) * student_px + b[:, axis, None].to(logits))
        out.append(_interp_1d(logits, pos, outside))
    return out[0], out[1]


def _interp_1d(logits: Tensor, pos: Tensor, outside: float) -> Tensor:
    """``(B, K, N)`` logits sampled at ``(B, M)`` fractional positions -> ``(B, K, M)``."""
    n = logits.shape[-1]
    k = logits.shape[1]
    inside = (pos >= 0) & (pos <= n - 1)
    p = pos.clamp(0, n - 1)
    lo = p.floor().long().clamp(max=n - 2) if n > 1 else p.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = (p - lo.to(p.dtype))[:, None, :]

    def gather(idx: Tensor) -> Tensor:
        return logits.gather(-1, idx[:, None, :].expand(-1, k, -1))

    values = gather(lo) * (1 - frac) + gather(hi) * frac
    fill = logits.amin(dim=-1, keepdim=True) + outside
    return torch.where(inside[:, None, :], values, fill)
