"""Losses against MMPose's own loss classes, or the formula where ours is MMPose's."""

from __future__ import annotations

import pytest
import torch

from unipose_ray.kd import losses as L
from unipose_ray.skeleton import mapping_for


@pytest.fixture(scope="module")
def mmpose_kd_loss():
    from unipose_ray.models.compat import import_mmpose

    import_mmpose()
    from mmpose.models.losses import KDLoss

    return KDLoss


def _logits(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def _weights(b, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(b, k, generator=g)
    w[torch.rand(b, k, generator=g) < 0.3] = 0.0  # unannotated joints
    return w


# --- L_gt ----------------------------------------------------------------------------------


def _kl_discret_formula(pred, target, weights, beta=10.0, label_softmax=True, label_beta=10.0):
    """``KLDiscretLoss`` written out: per joint, the mean over bins of
    ``labels * (log labels - log_softmax(beta * pred))``, weighted and summed."""
    labels = torch.softmax(label_beta * target, -1) if label_softmax else target
    log_p = torch.log_softmax(beta * pred, -1)
    per_joint = (torch.xlogy(labels, labels) - labels * log_p).mean(-1)  # (B, K)
    return (per_joint * weights).sum()


@pytest.mark.parametrize("label_softmax", [True, False])
def test_simcc_kl_loss_is_the_kldiscretloss_formula(label_softmax):
    """``simcc_kl_loss`` calls MMPose's ``KLDiscretLoss``; checked here against the formula
    written out (x + y, divided by K), value and gradients."""
    b, k, wx, wy = 4, 21, 384, 512
    px = _logits(b, k, wx, seed=1).requires_grad_()
    py = _logits(b, k, wy, seed=2).requires_grad_()
    tx, ty = _logits(b, k, wx, seed=3).abs(), _logits(b, k, wy, seed=4).abs()
    if not label_softmax:  # labels are then used as distributions
        tx, ty = tx / tx.sum(-1, keepdim=True), ty / ty.sum(-1, keepdim=True)
    w = _weights(b, k)
    assert (w == 0).any()

    ref = (_kl_discret_formula(px, tx, w, label_softmax=label_softmax)
           + _kl_discret_formula(py, ty, w, label_softmax=label_softmax)) / k
    ours = L.simcc_kl_loss(px, py, tx, ty, w, beta=10.0, label_softmax=label_softmax)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)

    g_ref = torch.autograd.grad(ref, (px, py))
    g_ours = torch.autograd.grad(ours, (px, py))
    for a, r in zip(g_ours, g_ref):
        torch.testing.assert_close(a, r)


def test_simcc_kl_loss_ignores_zero_weight_joints():
    b, k = 2, 5
    px, py = _logits(b, k, 40, seed=1), _logits(b, k, 50, seed=2)
    tx, ty = _logits(b, k, 40, seed=3).abs(), _logits(b, k, 50, seed=4).abs()
    w = torch.ones(b, k)
    w[0, 3] = 0
    base = L.simcc_kl_loss(px, py, tx, ty, w)
    px2 = px.clone()
    px2[0, 3] += 5 * torch.randn(40)
    torch.testing.assert_close(L.simcc_kl_loss(px2, py, tx, ty, w), base)
    px2[1, 3] += 5 * torch.randn(40)  # an annotated joint does count
    assert not torch.allclose(L.simcc_kl_loss(px2, py, tx, ty, w), base)


# --- L_kd ----------------------------------------------------------------------------------


def _kd_inputs(b=6, k=17, wx=384, wy=512, seed=0):
    return (
        _logits(b, k, wx, seed=seed + 1),
        _logits(b, k, wy, seed=seed + 2),
        _logits(b, k, wx, seed=seed + 3),
        _logits(b, k, wy, seed=seed + 4),
    )


def test_simcc_kd_loss_equals_mmpose_kdloss(mmpose_kd_loss):
    sx, sy, tx, ty = _kd_inputs()
    sx.requires_grad_()
    # DWPose's config: KDLoss(name='loss_logit', use_this=True, weight=1.0); beta = the
    # student head's KLDiscretLoss beta (10). target_weight is ignored by KDLoss.
    kd = mmpose_kd_loss(name="loss_logit", use_this=True, weight=1.0)
    ref = kd((sx, sy), (tx, ty), 10.0, torch.ones(6, 17))
    ours = L.simcc_kd_loss(sx, sy, tx, ty, beta=10.0)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.autograd.grad(ours, sx)[0], torch.autograd.grad(ref, sx)[0])
    # and another temperature
    torch.testing.assert_close(
        L.simcc_kd_loss(sx, sy, tx, ty, beta=1.0), kd((sx, sy), (tx, ty), 1.0, None)
    )


def test_kd_sample_mask_distils_only_selected_samples(mmpose_kd_loss):
    sx, sy, tx, ty = _kd_inputs()
    mask = torch.tensor([True, False, True, True, False, False])
    ours = L.simcc_kd_loss(sx, sy, tx, ty, sample_mask=mask)
    # Reference: KDLoss where unselected samples already agree with the teacher (KL 0).
    sx_ref, sy_ref = sx.clone(), sy.clone()
    sx_ref[~mask], sy_ref[~mask] = tx[~mask], ty[~mask]
    ref = mmpose_kd_loss("loss_logit", True)((sx_ref, sy_ref), (tx, ty), 10.0, None)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, L.simcc_kd_loss(sx, sy, tx, ty))
    torch.testing.assert_close(
        L.simcc_kd_loss(sx, sy, tx, ty, sample_mask=torch.ones(6, dtype=torch.bool)),
        L.simcc_kd_loss(sx, sy, tx, ty),
    )


def test_kd_joint_weights_mask_joints(mmpose_kd_loss):
    sx, sy, tx, ty = _kd_inputs()
    joints = (_weights(6, 17, seed=5) > 0).float()
    ours = L.simcc_kd_loss(sx, sy, tx, ty, joint_weights=joints)
    off = joints == 0
    sx_ref, sy_ref = sx.clone(), sy.clone()
    sx_ref[off], sy_ref[off] = tx[off], ty[off]
    ref = mmpose_kd_loss("loss_logit", True)((sx_ref, sy_ref), (tx, ty), 10.0, None)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, L.simcc_kd_loss(sx, sy, tx, ty))


def test_kd_decay_matches_dwpose_schedule():
    # DWPose multiplies by 1 - epoch/max_epochs with mmengine's 0-based epoch (the
    # RuntimeInfoHook publishes runner.epoch, incremented after each epoch).
    max_epochs = 420
    for epoch_1 in (1, 2, 210, 420):
        assert L.kd_decay(epoch_1, max_epochs) == pytest.approx(1 - (epoch_1 - 1) / max_epochs)
    assert L.kd_decay(1, max_epochs) == 1.0
    assert L.kd_decay(max_epochs, max_epochs) == pytest.approx(1 / max_epochs)
    with pytest.raises(ValueError, match="1-based"):
        L.kd_decay(0, max_epochs)


# --- The loss mix --------------------------------------------------------------------------


def _batch(b=4, k=21, seed=0):
    sx = _logits(b, k, 384, seed=seed).requires_grad_()
    sy = _logits(b, k, 512, seed=seed + 1).requires_grad_()
    targets = L.SimCCTargets(
        x=_logits(b, k, 384, seed=seed + 2).abs(),
        y=_logits(b, k, 512, seed=seed + 3).abs(),
        weights=_weights(b, k, seed=seed + 4),
    )
    mpii_idx = tuple(mapping_for("mpii").to_unified.tolist())
    teachers_out = {
        "coco": (_logits(b, 17, 384, seed=seed + 5), _logits(b, 17, 512, seed=seed + 6)),
        "mpii": (_logits(b, 16, 384, seed=seed + 7), _logits(b, 16, 512, seed=seed + 8)),
    }
    return (sx, sy), targets, teachers_out, mpii_idx


def test_distillation_loss_forms_the_weighted_sum_and_names_each_term():
    (sx, sy), targets, t_out, mpii_idx = _batch()
    teachers = [
        L.TeacherTerm("coco", 0.25, tuple(range(17))),
        L.TeacherTerm("mpii", 0.45, mpii_idx),
    ]
    total, terms = L.distillation_loss(
        (sx, sy), targets, t_out, gt_weight=0.3, teachers=teachers, kd_scale=0.5
    )
    assert set(terms) == {"loss_gt", "loss_kd_coco", "loss_kd_mpii", "loss"}
    idx = torch.tensor(mpii_idx)
    expect_gt = L.simcc_kl_loss(sx, sy, targets.x, targets.y, targets.weights)
    expect_coco = L.simcc_kd_loss(sx[:, :17], sy[:, :17], *t_out["coco"])
    expect_mpii = L.simcc_kd_loss(sx[:, idx], sy[:, idx], *t_out["mpii"])
    torch.testing.assert_close(terms["loss_gt"], expect_gt)
    torch.testing.assert_close(terms["loss_kd_coco"], expect_coco)
    torch.testing.assert_close(terms["loss_kd_mpii"], expect_mpii)
    # the decay (kd_scale) reaches every KD term, not the MPII one only
    torch.testing.assert_close(
        total, 0.3 * expect_gt + 0.5 * (0.25 * expect_coco + 0.45 * expect_mpii)
    )
    assert terms["loss"] is total


def test_mpii_term_reaches_only_the_mapped_student_channels():
    (sx, sy), targets, t_out, mpii_idx = _batch()
    teachers = [L.TeacherTerm("mpii", 1.0, mpii_idx)]
    total, _ = L.distillation_loss((sx, sy), targets, t_out, gt_weight=0.0, teachers=teachers)
    grad = torch.autograd.grad(total, sx)[0].abs().sum(dim=(0, 2))
    touched = set(torch.nonzero(grad).flatten().tolist())
    assert touched == set(mpii_idx)
    assert {0, 1, 2, 3, 4}.isdisjoint(touched)  # MPII has no face joints


def test_distillation_joint_mask_takes_the_given_weights():
    (sx, sy), targets, t_out, mpii_idx = _batch()
    joints = (torch.rand(targets.weights.shape, generator=torch.Generator().manual_seed(3)) > 0.4)
    term = L.TeacherTerm("mpii", 1.0, mpii_idx, mask_joints=True)
    _, terms = L.distillation_loss(
        (sx, sy), targets, t_out, 1.0, [term], kd_joint_weights=joints.float()
    )
    idx = torch.tensor(mpii_idx)
    expect = L.simcc_kd_loss(
        sx[:, idx], sy[:, idx], *t_out["mpii"], joint_weights=joints[:, idx].float()
    )  # fmt: skip
    torch.testing.assert_close(terms["loss_kd_mpii"], expect)
    _, plain = L.distillation_loss(
        (sx, sy), targets, t_out, 1.0, [L.TeacherTerm("mpii", 1.0, mpii_idx)]
    )
    assert not torch.allclose(plain["loss_kd_mpii"], terms["loss_kd_mpii"])
    with pytest.raises(KeyError, match="kd_joint_weights"):
        L.distillation_loss((sx, sy), targets, t_out, 1.0, [term])


def test_loss_weights_are_validated():
    (sx, sy), targets, t_out, mpii_idx = _batch()
    with pytest.raises(ValueError, match=">= 0"):
        L.TeacherTerm("coco", -0.1, tuple(range(17)))
    with pytest.raises(ValueError, match="gt_weight"):
        L.distillation_loss((sx, sy), targets, t_out, -1.0, [])
    with pytest.raises(ValueError, match="all loss weights are zero"):
        L.distillation_loss(
            (sx, sy), targets, t_out, 0.0, [L.TeacherTerm("coco", 0.0, tuple(range(17)))]
        )
    with pytest.raises(ValueError, match="unique"):
        L.distillation_loss(
            (sx, sy), targets, t_out, 1.0,
            [L.TeacherTerm("coco", 1.0, tuple(range(17)))] * 2,
        )  # fmt: skip
    with pytest.raises(KeyError, match="no outputs for teacher 'aic'"):
        L.distillation_loss((sx, sy), targets, t_out, 1.0, [L.TeacherTerm("aic", 1.0, (0,))])
    out17, targets17, t_out17, _ = _batch(k=17)
    with pytest.raises(ValueError, match="exceed the student's 17 channels"):
        L.distillation_loss(out17, targets17, t_out17, 1.0, [L.TeacherTerm("mpii", 1.0, mpii_idx)])


# --- backbone pretraining: UDP heatmaps ----------------------------------------------------


@pytest.mark.parametrize("sigma, input_size, heatmap_size", [
    (2.0, (192, 256), (48, 64)),  # MMPose's cspnext-udp config
    (2.0, (64, 96), (16, 24)),  # the demo's
    (1.5, (64, 64), (16, 16)),  # a fractional 3-sigma window
])
def test_udp_heatmap_targets_equal_mmposes_udpheatmap_codec(sigma, input_size, heatmap_size):
    """Same heatmaps and weights as ``UDPHeatmap.encode``, including joints whose window
    falls partly or wholly outside the heatmap, and unlabelled joints."""
    import numpy as np

    from unipose_ray.models.compat import import_mmpose

    import_mmpose()
    from mmpose.codecs import UDPHeatmap

    g = torch.Generator().manual_seed(3)
    n, k = 24, 17
    keypoints = torch.rand(n, k, 2, generator=g) * (max(input_size) + 60) - 30
    visible = (torch.rand(n, k, generator=g) > 0.2).float()
    ours, our_weights = L.udp_heatmap_targets(keypoints, visible, input_size, heatmap_size, sigma)
    codec = UDPHeatmap(input_size=input_size, heatmap_size=heatmap_size, sigma=sigma)
    cut = 0
    for i in range(n):
        ref = codec.encode(keypoints[i : i + 1].numpy(), visible[i : i + 1].numpy())
        torch.testing.assert_close(ours[i], torch.from_numpy(ref["heatmaps"]), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(our_weights[i].numpy(), ref["keypoint_weights"][0])
        cut += int(((visible[i] > 0) & (our_weights[i] == 0)).sum())
    assert cut > 0  # some labelled joints lay wholly outside: the weight rule was exercised
