"""SimCC losses for multi-teacher distillation (torch and MMPose's loss classes; no Ray).

Shapes: B samples, K student keypoints, K_t a teacher's keypoints, Wx/Wy student x/y bins.

- :func:`simcc_kl_loss` is ``L_gt``: MMPose's own ``KLDiscretLoss`` (beta 10, label
  softmax, per-keypoint weights), called through the MMPose adapter.
- :func:`simcc_kd_loss` is one ``L_kd`` (MMPose's/DWPose's ``KDLoss``), with optional
  per-sample and per-joint masks.
- :func:`distillation_loss` forms ``w_gt * L_gt + sum_t decay * w_t * L_kd_t`` in one place.

Teacher logits from another crop reach the student's bins through
:func:`unipose_ray.kd.grid.map_teacher_logits` first.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unipose_ray.kd.topk import TopK, kd_loss_topk
from unipose_ray.models.compat import import_mmpose

# --- Ground truth --------------------------------------------------------------------------


def simcc_kl_loss(
    pred_x: Tensor,
    pred_y: Tensor,
    target_x: Tensor,
    target_y: Tensor,
    weights: Tensor,
    beta: float = 10.0,
    label_softmax: bool = True,
    label_beta: float = 10.0,
) -> Tensor:
    """SimCC KL loss against (Gaussian) targets: MMPose's ``KLDiscretLoss`` itself.

    Per keypoint and axis: ``mean_bins KL(labels || softmax(beta * pred))`` with
    ``labels = softmax(label_beta * target)`` if ``label_softmax`` else ``target``.
    Weighted by ``weights``, summed over samples, keypoints and both axes, divided by K
    (not by the weight sum: unannotated joints count as zero).

    Args:
        pred_x: ``(B, K, Wx)`` student logits; pred_y ``(B, K, Wy)``.
        target_x: ``(B, K, Wx)`` SimCC labels; target_y ``(B, K, Wy)``.
        weights: ``(B, K)`` per-keypoint weights, 0 where the sample's dataset does not
            annotate (or marks invisible) the joint.

    Returns:
        scalar tensor.
    """
    _check_pair(pred_x, target_x, "pred_x", "target_x")
    _check_pair(pred_y, target_y, "pred_y", "target_y")
    loss = _kl_discret_loss(float(beta), bool(label_softmax), float(label_beta))
    return loss((pred_x, pred_y), (target_x, target_y), weights)


@functools.cache
def _kl_discret_loss(beta: float, label_softmax: bool, label_beta: float) -> nn.Module:
    """MMPose's ``KLDiscretLoss`` (no parameters, so one instance serves every device);
    MMPose is imported on the first call, not when this module is."""
    import_mmpose()
    from mmpose.models.losses import KLDiscretLoss  # noqa: PLC0415

    return KLDiscretLoss(beta=beta, label_softmax=label_softmax, label_beta=label_beta,
                         use_target_weight=True)


# --- Distillation --------------------------------------------------------------------------


def simcc_kd_loss(
    student_x: Tensor,
    student_y: Tensor,
    teacher_x: Tensor,
    teacher_y: Tensor,
    beta: float = 10.0,
    sample_mask: Tensor | None = None,
    joint_weights: Tensor | None = None,
) -> Tensor:
    """Logit distillation ``KL(softmax(beta t) || softmax(beta s))``; MMPose's ``KDLoss``.

    Summed over bins and keypoints, averaged over the batch (B, masked samples included,
    as zeros), x + y, divided by K. ``beta`` multiplies both logits (a temperature of
    ``1 / beta``); DWPose passes the student head's ``KLDiscretLoss.beta`` = 10. Without
    masks this equals ``KDLoss(...)(student, teacher, beta, _)`` exactly (``KDLoss``
    ignores its ``target_weight``). Teacher logits are detached.

    Args:
        student_x: ``(B, K, Wx)`` student logits of the teacher's joints; student_y
            ``(B, K, Wy)``.
        teacher_x: ``(B, K, Wx)`` teacher logits on the student's bins (see
            :func:`~unipose_ray.kd.grid.map_teacher_logits`); teacher_y ``(B, K, Wy)``.
        sample_mask: ``(B,)`` bool or float; distil only where true/nonzero (e.g. only the
            samples of the teacher's own dataset).
        joint_weights: ``(B, K)`` weights, e.g. 0 on joints invisible or unannotated.

    Returns:
        scalar tensor.
    """
    _check_pair(student_x, teacher_x, "student_x", "teacher_x")
    _check_pair(student_y, teacher_y, "student_y", "teacher_y")
    b, k = student_x.shape[:2]
    weight = student_x.new_ones(b, k)
    if sample_mask is not None:
        if sample_mask.shape != (b,):
            raise ValueError(f"sample_mask must be ({b},), got {tuple(sample_mask.shape)}")
        weight = weight * sample_mask.to(weight.dtype)[:, None]
    if joint_weights is not None:
        if joint_weights.shape != (b, k):
            raise ValueError(f"joint_weights must be ({b}, {k}), got {tuple(joint_weights.shape)}")
        weight = weight * joint_weights.to(weight.dtype)
    loss = student_x.new_zeros(())
    for s, t in ((student_x, teacher_x), (student_y, teacher_y)):
        log_s = F.log_softmax(s * beta, dim=-1)
        p_t = F.softmax(t.detach() * beta, dim=-1)
        per_joint = F.kl_div(log_s, p_t, reduction="none").sum(dim=-1)  # (B, K)
        loss = loss + (per_joint * weight).sum(dim=1).mean()
    return loss / k


def kd_decay(epoch: int, max_epochs: int) -> float:
    """DWPose's distillation weight decay, ``1 - (epoch - 1) / max_epochs``.

    ``epoch`` counts from 1: 1.0 in the first epoch, ``1 / max_epochs`` in the last. (DWPose
    multiplies by ``1 - e / max_epochs`` with mmengine's 0-based ``e``, the same thing.)
    Apply it to every KD term.
    """
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    if not 1 <= epoch <= max_epochs:
        raise ValueError(f"epoch must be in 1..{max_epochs} (1-based), got {epoch}")
    return 1.0 - (epoch - 1) / max_epochs


# --- The loss mix --------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherTerm:
    """One teacher's KD term.

    Attributes:
        name: short name; the term is reported as ``loss_kd_<name>``.
        weight: its weight in the total (w2, w3, ...), >= 0.
        student_indices: student channel of each teacher joint, in teacher order (COCO:
            0..16; MPII: ``skeleton.mapping_for('mpii').to_unified``).
        mask_joints: weight each joint by ``distillation_loss``'s ``kd_joint_weights``;
            False (the paper authors' behaviour) distils every joint of every sample.
    """

    name: str
    weight: float
    student_indices: tuple[int, ...]
    mask_joints: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"teacher name '{self.name}' must be a plain identifier")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"teacher '{self.name}': weight must be >= 0, got {self.weight}")
        indices = tuple(int(i) for i in self.student_indices)
        if not indices or min(indices) < 0 or len(set(indices)) != len(indices):
            raise ValueError(
                f"teacher '{self.name}': student_indices must be distinct channels >= 0, "
                f"got {indices}"
            )
        object.__setattr__(self, "student_indices", indices)

    @property
    def loss_name(self) -> str:
        return f"loss_kd_{self.name}"


@dataclass(frozen=True)
class SimCCTargets:
    """Ground-truth SimCC labels of a batch.

    Attributes:
        x: ``(B, K, Wx)`` labels; y: ``(B, K, Wy)``.
        weights: ``(B, K)``, 0 on joints the sample's dataset does not annotate.
    """

    x: Tensor
    y: Tensor
    weights: Tensor


def distillation_loss(
    student_out: tuple[Tensor, Tensor],
    targets: SimCCTargets,
    teacher_outputs: Mapping[str, tuple[Tensor, Tensor]],
    gt_weight: float,
    teachers: Sequence[TeacherTerm],
    kd_scale: float = 1.0,
    kd_joint_weights: Tensor | None = None,
    beta: float = 10.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``loss = gt_weight * L_gt + sum_t kd_scale * w_t * L_kd_t``, every term by name.

    Args:
        student_out: ``((B, K, Wx), (B, K, Wy))`` student logits.
        targets: the batch's :class:`SimCCTargets`.
        teacher_outputs: ``name -> ((B, K_t, Wx), (B, K_t, Wy))`` teacher logits already
            on the student's bins (:func:`~unipose_ray.kd.grid.map_teacher_logits` for a
            different crop), or a pair of cached :class:`~unipose_ray.kd.topk.TopK`
            targets (their KD term is :func:`~unipose_ray.kd.topk.kd_loss_topk`).
        gt_weight: w1.
        teachers: one :class:`TeacherTerm` per teacher (w2, w3, ...).
        kd_scale: multiplies every KD term, e.g. :func:`kd_decay`.
        kd_joint_weights: ``(B, K)`` per student channel, for teachers with
            ``mask_joints`` (see ``train.kd.kd_joint_weights``).
        beta: SimCC softmax factor for both losses.

    Returns:
        ``(loss, terms)`` with unweighted ``loss_gt``, ``loss_kd_<name>`` and ``loss``.
    """
    _check_weights(gt_weight, teachers, kd_scale)
    sx, sy = student_out
    terms = {"loss_gt": simcc_kl_loss(sx, sy, targets.x, targets.y, targets.weights, beta)}
    total = gt_weight * terms["loss_gt"]
    for term in teachers:
        if term.name not in teacher_outputs:
            raise KeyError(f"no outputs for teacher '{term.name}'; got {sorted(teacher_outputs)}")
        tx, ty = teacher_outputs[term.name]
        if max(term.student_indices) >= sx.shape[1]:
            raise ValueError(
                f"teacher '{term.name}': student_indices {term.student_indices} exceed the "
                f"student's {sx.shape[1]} channels"
            )
        idx = torch.tensor(term.student_indices, device=sx.device)
        joints = None
        if term.mask_joints:
            if kd_joint_weights is None:
                raise KeyError(f"teacher '{term.name}' masks joints: pass kd_joint_weights "
                               "= (B, K) per student channel")
            joints = kd_joint_weights.index_select(1, idx)
        if isinstance(tx, TopK):  # cached, compressed targets
            terms[term.loss_name] = kd_loss_topk(
                sx.index_select(1, idx), sy.index_select(1, idx), tx, ty, beta, joints)
        else:
            terms[term.loss_name] = simcc_kd_loss(
                sx.index_select(1, idx), sy.index_select(1, idx), tx, ty, beta, None, joints
            )
        total = total + kd_scale * term.weight * terms[term.loss_name]
    terms["loss"] = total
    return total, terms


def _check_weights(gt_weight: float, teachers: Sequence[TeacherTerm], kd_scale: float) -> None:
    if not math.isfinite(gt_weight) or gt_weight < 0:
        raise ValueError(f"gt_weight must be >= 0, got {gt_weight}")
    if not math.isfinite(kd_scale) or kd_scale < 0:
        raise ValueError(f"kd_scale must be >= 0, got {kd_scale}")
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique, got {names}")
    if gt_weight == 0 and all(t.weight == 0 for t in teachers):
        raise ValueError(
            "all loss weights are zero (gt_weight and every teacher weight): nothing to "
            "train on; the paper uses gt 0.45, coco 0.25, mpii 0.45"
        )


def _check_pair(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must both be (B, K, W) of the same shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


# --- Backbone pretraining: UDP heatmaps ----------------------------------------------------


def udp_heatmap_targets(
    keypoints: Tensor,
    weights: Tensor,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
) -> tuple[Tensor, Tensor]:
    """Gaussian heatmap targets, exactly as MMPose's ``UDPHeatmap`` codec encodes them.

    That codec trained the CSPNeXt backbones RTMPose starts from. Keypoints are scaled by
    ``(heatmap - 1) / (input - 1)`` (unbiased), each Gaussian is cut to a ``3 sigma``
    window around the rounded point, and a joint whose window lies wholly outside the
    heatmap gets weight 0.

    Args:
        keypoints: ``(B, K, 2)`` in input (crop) pixels.
        weights: ``(B, K)``; joints with weight < 0.5 get no Gaussian and weight 0.
        input_size, heatmap_size: ``(w, h)``.

    Returns:
        ``(B, K, H, W)`` heatmaps and ``(B, K)`` weights.
    """
    (w_in, h_in), (w, h) = input_size, heatmap_size
    scale = keypoints.new_tensor([(w - 1) / (w_in - 1), (h - 1) / (h_in - 1)])
    points = keypoints * scale
    radius = 3 * sigma
    centre = (points + 0.5).trunc()  # numpy's astype(int64) after + 0.5
    low = (centre - radius).trunc()
    high = (centre + radius + 1).trunc()  # exclusive
    size = keypoints.new_tensor([w, h])
    inside = ((low < size) & (high >= 0)).all(-1)
    labelled = (weights >= 0.5) & inside
    offset = (2 * radius + 1) // 2 - (centre - low)  # MMPose's window origin, in pixels

    def axis(n: int, i: int) -> Tensor:
        grid = torch.arange(n, device=keypoints.device, dtype=keypoints.dtype)
        d = grid - points[..., i, None] - offset[..., i, None]
        window = (grid >= low[..., i, None]) & (grid < high[..., i, None])
        return torch.exp(-(d**2) / (2 * sigma**2)) * window

    heatmaps = axis(h, 1)[..., :, None] * axis(w, 0)[..., None, :]
    heatmaps = heatmaps * labelled[..., None, None]
    return heatmaps, torch.where(labelled, weights, torch.zeros_like(weights))
