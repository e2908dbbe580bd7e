"""Teacher SimCC targets kept small: top-k bins per axis per joint, and the KD loss on them.

The KD loss (:func:`unipose_ray.kd.losses.simcc_kd_loss`) compares the student with the
teacher's distribution ``p = softmax(beta * t)`` over the ``W`` bins of one axis of one
joint. A stored target keeps the ``k`` largest ``p_i`` (fp16), their bin indices (uint16)
and the mass outside them ``r = 1 - sum(kept)``.

The loss on it is the KL divergence over ``k + 1`` outcomes, the kept bins and "any other
bin":

    sum_{i kept} p_i log(p_i / s_i)  +  r log(r / s_rest),   s_rest = sum_{j not kept} s_j

with ``s = softmax(beta * student)``; reduced as ``simcc_kd_loss`` (sum over joints, mean
over the batch, x + y, / K). The student learns the teacher's kept bins exactly and to put
mass ``r`` on the other bins in total, without being told where. It is never above the
full loss, and below it by ``r x KL(p_tail / r || s_tail / s_rest)`` (small when ``r``
is: trained teachers are peaked). Spreading ``r`` evenly over the other bins instead would
not do: a confident student has log-probabilities of -1000 there, and the cross-entropy
of an even spread explodes (measured: 1300x the full loss). With ``k = W`` it is the full
loss; ``full-fp16`` keeps every ``p_i`` in fp16.
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


def kd_loss_topk(student_x: Tensor, student_y: Tensor, target_x: TopK, target_y: TopK,
                 beta: float = 10.0, joint_weights: Tensor | None = None) -> Tensor:
    """The KD loss on compressed targets (the module docstring), reduced as ``simcc_kd_loss``.

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
        index = t.indices.long()
        kept_p = t.values.float()
        per_joint = _xlogy_ratio(kept_p, log_s.gather(-1, index)).sum(-1)
        if t.k < t.bins:
            kept = torch.zeros_like(log_s, dtype=torch.bool).scatter(-1, index, True)
            rest_log_s = log_s.masked_fill(kept, float("-inf")).logsumexp(-1)
            per_joint = per_joint + _xlogy_ratio(t.rest.float(), rest_log_s)
        loss = loss + (per_joint * weight).sum(dim=1).mean()
    return loss / k_joints


def _xlogy_ratio(p: Tensor, log_q: Tensor) -> Tensor:
    """``p * (log p - log q)``, 0 where ``p`` is 0."""
    return torch.where(p > 0, p * (p.clamp(min=1e-30).log() - log_q), torch.zeros_like(p))
