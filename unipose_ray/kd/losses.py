"""SimCC losses for multi-teacher distillation (torch only).

Shapes: B samples, K student keypoints, K_t teacher keypoints, Wx/Wy student x/y bins,
Wt/Ht teacher x/y bins.

- :func:`simcc_kl_loss` is ``L_gt`` (MMPose's ``KLDiscretLoss``, beta 10, label softmax,
  per-keypoint weights).
- :func:`simcc_kd_loss` is one ``L_kd`` (MMPose's/DWPose's ``KDLoss``), with optional
  per-sample and per-joint masks.
- :func:`map_teacher_logits` puts a teacher's logits onto the student's bins through the
  exact affine relation between the two crops of the same box.
- :func:`distillation_loss` forms ``w_gt * L_gt + sum_t decay * w_t * L_kd_t`` in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unipose_ray.kd.topk import TopK, kd_loss_topk

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
    """SimCC KL loss against (Gaussian) targets; MMPose's ``KLDiscretLoss``.

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
    k = pred_x.shape[1]
    w = weights.reshape(-1)
    loss = pred_x.new_zeros(())
    for pred, target in ((pred_x, target_x), (pred_y, target_y)):
        log_p = F.log_softmax(pred.reshape(-1, pred.shape[-1]) * beta, dim=-1)
        labels = target.reshape(-1, target.shape[-1])
        if label_softmax:
            labels = F.softmax(labels * label_beta, dim=-1)
        per_joint = F.kl_div(log_p, labels, reduction="none").mean(dim=-1)
        loss = loss + (per_joint * w).sum()
    return loss / k


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
            :func:`map_teacher_logits`); teacher_y ``(B, K, Wy)``.
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


# --- Teacher grid -> student grid ----------------------------------------------------------


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
            on the student's bins (:func:`map_teacher_logits` for a different crop), or
            a pair of cached :class:`~unipose_ray.kd.topk.TopK` targets (their
            KD term is :func:`~unipose_ray.kd.topk.kd_loss_topk`).
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
