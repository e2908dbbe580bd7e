"""Top-k compressed teacher targets and the KD loss on them (the teacher-logit cache's)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unipose_ray.kd.losses import simcc_kd_loss
from unipose_ray.kd.topk import compress, kd_loss_topk

BETA = 10.0


def _logits(seed: int, shape=(3, 5, 128)) -> torch.Tensor:
    """SimCC-like logits: a peak per joint over a noisy floor."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randint(10, shape[-1] - 10, shape[:2], generator=g)
    bins = torch.arange(shape[-1])
    peak = -((bins - centres[..., None]) ** 2) / 50.0
    return peak + 0.3 * torch.randn(shape, generator=g)


def _coarse_kd(student: torch.Tensor, p: torch.Tensor, k: int | None) -> torch.Tensor:
    """KL over the teacher's top-k bins plus one "other bins" outcome, from the dense
    distributions (sorting, not the gather/scatter the loss uses), (B, K)."""
    log_s = F.log_softmax(student * BETA, -1)
    if k is not None:
        order = p.argsort(-1, descending=True)
        p, log_s = p.gather(-1, order), log_s.gather(-1, order)
        p = torch.cat([p[..., :k], p[..., k:].sum(-1, keepdim=True)], -1)
        log_s = torch.cat([log_s[..., :k], log_s[..., k:].logsumexp(-1, keepdim=True)], -1)
    return (torch.special.xlogy(p, p) - p * log_s).sum(-1)


@pytest.mark.parametrize("k", [4, 16, None])
def test_the_loss_is_the_kl_over_the_kept_bins_and_the_rest(k):
    sx = (0.3 * _logits(1)).requires_grad_()
    sy = (0.3 * _logits(2, (3, 5, 96))).requires_grad_()
    t = (_logits(3), _logits(4, (3, 5, 96)))
    tx, ty = compress(t[0], BETA, k), compress(t[1], BETA, k)
    loss = kd_loss_topk(sx, sy, tx, ty, BETA)
    # the reference sees the fp16-rounded kept probabilities the cache stores
    px, py = (F.softmax(v * BETA, -1) for v in t)
    expected = (_coarse_kd(sx, px, k).sum(1).mean() + _coarse_kd(sy, py, k).sum(1).mean()) / 5
    torch.testing.assert_close(loss, expected, rtol=2e-3, atol=1e-5)
    grads = torch.autograd.grad(loss, (sx, sy))
    expected_grads = torch.autograd.grad(expected, (sx, sy))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-5)


def test_a_confident_student_keeps_the_loss_finite_and_close():
    """A student with log-probabilities of -1000 off its peak: the rest term must not
    explode (an even spread of the rest over those bins would)."""
    student = 40 * _logits(20)
    teacher = _logits(21)
    full = simcc_kd_loss(student, student, teacher, teacher, beta=BETA)
    cached = kd_loss_topk(student, student, compress(teacher, BETA, 8),
                          compress(teacher, BETA, 8), BETA)
    assert torch.isfinite(cached) and cached <= full * 1.001
    torch.testing.assert_close(cached, full, rtol=0.02, atol=0)


def test_full_fp16_targets_give_mmposes_kd_loss_within_fp16():
    s, t = (_logits(5), _logits(6, (3, 5, 96))), (_logits(7), _logits(8, (3, 5, 96)))
    full = simcc_kd_loss(s[0], s[1], t[0], t[1], beta=BETA)
    cached = kd_loss_topk(s[0], s[1], compress(t[0], BETA, None), compress(t[1], BETA, None),
                          BETA)
    torch.testing.assert_close(cached, full, rtol=2e-3, atol=1e-4)


def test_the_deviation_shrinks_as_k_grows_and_joint_weights_apply():
    s, t = (_logits(9), _logits(10, (3, 5, 96))), (_logits(11), _logits(12, (3, 5, 96)))
    full = simcc_kd_loss(*s, *t, beta=BETA)
    deviations = [abs(float(kd_loss_topk(*s, compress(t[0], BETA, k), compress(t[1], BETA, k),
                                         BETA) - full)) for k in (2, 8, 32)]
    assert deviations[0] > deviations[1] > deviations[2]
    weights = torch.ones(3, 5)
    weights[:, 2] = 0
    masked = kd_loss_topk(*s, compress(t[0], BETA, 8), compress(t[1], BETA, 8), BETA, weights)
    torch.testing.assert_close(
        masked, simcc_kd_loss(*s, *t, beta=BETA, joint_weights=weights), rtol=0.05, atol=0)


def test_a_target_on_another_grid_is_refused():
    s = _logits(13)
    with pytest.raises(ValueError, match="student has 128 bins, the cached target 96"):
        kd_loss_topk(s, s, compress(_logits(14, (3, 5, 96)), BETA, 4), compress(s, BETA, 4))
