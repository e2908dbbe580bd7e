"""Top-k compressed teacher targets and the KD loss on them (the teacher-logit cache's)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unipose_ray.losses import simcc_kd_loss
from unipose_ray.teachers.compress import compress, expand, kd_loss_topk

BETA = 10.0


def _logits(seed: int, shape=(3, 5, 128)) -> torch.Tensor:
    """SimCC-like logits: a peak per joint over a noisy floor."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randint(10, shape[-1] - 10, shape[:2], generator=g)
    bins = torch.arange(shape[-1])
    peak = -((bins - centres[..., None]) ** 2) / 50.0
    return peak + 0.3 * torch.randn(shape, generator=g)


def _dense_kd(student: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(q || softmax(beta s)) summed over bins, (B, K)."""
    return F.kl_div(F.log_softmax(student * BETA, -1), q, reduction="none").sum(-1)


@pytest.mark.parametrize("k", [4, 16, None])
def test_the_loss_is_exactly_kl_to_the_target_the_compression_stands_for(k):
    sx, sy = _logits(1).requires_grad_(), _logits(2, (3, 5, 96)).requires_grad_()
    tx, ty = compress(_logits(3), BETA, k), compress(_logits(4, (3, 5, 96)), BETA, k)
    qx, qy = expand(tx), expand(ty)
    torch.testing.assert_close(qx.sum(-1), torch.ones(3, 5), atol=1e-3, rtol=0)
    loss = kd_loss_topk(sx, sy, tx, ty, BETA)
    expected = (_dense_kd(sx, qx).sum(1).mean() + _dense_kd(sy, qy).sum(1).mean()) / 5
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(loss, (sx, sy))
    expected_grads = torch.autograd.grad(expected, (sx, sy))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


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
