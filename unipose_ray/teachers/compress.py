"""Teacher SimCC targets kept small: top-k bins per axis per joint, and the KD loss on them.

The KD loss (:func:`unipose_ray.losses.simcc_kd_loss`) compares the student with the
teacher's distribution ``p = softmax(beta * t)`` over the bins of one axis of one joint.
A stored target keeps the ``k`` largest ``p_i`` (fp16), their bin indices (uint16) and the
mass outside them ``r = 1 - sum(kept)``. The target it stands for, exactly:

    q_i = p_i                 for a kept bin i
    q_i = r / (W - k)         for every other bin (the rest spread evenly)

and the loss on it is ``KL(q || softmax(beta * s))``, the same reduction as
``simcc_kd_loss`` (sum over bins and joints, mean over the batch, x + y, / K). With
``k = W`` it is that loss exactly; ``full-fp16`` keeps every ``p_i`` in fp16 instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class TopK:
    """Compressed teacher targets of one axis.

    Attributes:
        values: ``(..., k)`` fp16 probabilities of the kept bins, largest first.
        indices: ``(..., k)`` their bins (uint16 on disk; any integer type here).
        rest: ``(...)`` the probability mass outside them (fp32: it is one number).
        bins: ``W``, the axis' number of bins.
    """

    values: Tensor
    indices: Tensor
    rest: Tensor
    bins: int

    @property
    def k(self) -> int:
        return self.values.shape[-1]

    def to(self, device) -> TopK:
        return TopK(self.values.to(device), self.indices.to(device), self.rest.to(device),
                    self.bins)


def compress(logits: Tensor, beta: float, k: int | None) -> TopK:
    """Top-``k`` of ``softmax(beta * logits)`` over the last axis; ``k=None``: every bin
    (``full-fp16``)."""
    probs = F.softmax(logits.float() * beta, dim=-1)
    bins = probs.shape[-1]
    if k is None or k >= bins:
        values, indices = probs, torch.arange(bins).expand_as(probs)
    else:
        values, indices = probs.topk(k, dim=-1)
    values = values.half()
    rest = (1.0 - values.float().sum(-1)).clamp(min=0.0)
    return TopK(values, indices.to(torch.int32), rest, bins)


def expand(target: TopK) -> Tensor:
    """The dense target ``q`` a :class:`TopK` stands for (see the module docstring)."""
    spread = target.rest / max(target.bins - target.k, 1)
    dense = spread[..., None].expand(*target.rest.shape, target.bins).clone()
    if target.k == target.bins:
        dense.zero_()
    return dense.scatter(-1, target.indices.long(), target.values.float())


def kd_loss_topk(student_x: Tensor, student_y: Tensor, target_x: TopK, target_y: TopK,
                 beta: float = 10.0, joint_weights: Tensor | None = None) -> Tensor:
    """``KL(q || softmax(beta * s))`` on compressed targets, reduced as ``simcc_kd_loss``.

    Computed without the dense ``q``: the kept bins from their values and indices, the rest
    as ``r / (W - k)`` times the sum of the student's log-probabilities outside them.

    Args:
        student_x, student_y: ``(B, K, W)`` student logits of the teacher's joints.
        target_x, target_y: the teacher's compressed targets, ``(B, K, k)``.
        joint_weights: ``(B, K)`` weights, as in ``simcc_kd_loss``.
    """
    b, k_joints = student_x.shape[:2]
    weight = student_x.new_ones(b, k_joints) if joint_weights is None else joint_weights.float()
    loss = student_x.new_zeros(())
    for s, t in ((student_x, target_x), (student_y, target_y)):
        if s.shape[-1] != t.bins:
            raise ValueError(f"student has {s.shape[-1]} bins, the cached target {t.bins}")
        log_s = F.log_softmax(s.float() * beta, dim=-1)
        kept_p = t.values.float()
        kept_log_s = log_s.gather(-1, t.indices.long())
        cross = (kept_p * kept_log_s).sum(-1)
        entropy = torch.where(kept_p > 0, kept_p * kept_p.clamp(min=1e-30).log(),
                              torch.zeros_like(kept_p)).sum(-1)
        others = t.bins - t.k
        if others:
            share = t.rest.float() / others
            rest_log_s = log_s.sum(-1) - kept_log_s.sum(-1)
            cross = cross + share * rest_log_s
            rest_entropy = t.rest.float() * share.clamp(min=1e-30).log()
            entropy = entropy + torch.where(share > 0, rest_entropy, torch.zeros_like(share))
        per_joint = entropy - cross  # KL(q || p_s) for each (sample, joint)
        loss = loss + (per_joint * weight).sum(dim=1).mean()
    return loss / k_joints
