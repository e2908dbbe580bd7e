"""The teacher-grid -> student-grid mapping: exact crop geometry, not a resize."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unipose_ray.kd.grid import map_teacher_logits


def _logits(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def test_map_teacher_logits_pure_shift_is_exact():
    # 256x256 teacher crop vs 192x256 student crop of a tall box: same scale, teacher crop
    # 32 px wider on each side -> teacher_px = student_px + (32, 0).
    b, k = 3, 16
    tx, ty = _logits(b, k, 512, seed=1), _logits(b, k, 512, seed=2)
    a = torch.ones(b, 2)
    off = torch.tensor([[32.0, 0.0]]).repeat(b, 1)
    mx, my = map_teacher_logits(tx, ty, a, off, student_bins=(384, 512), split_ratio=2.0)
    assert mx.shape == (b, k, 384) and my.shape == (b, k, 512)
    torch.testing.assert_close(mx, tx[..., 64:448])
    torch.testing.assert_close(my, ty)
    # Stretching 512 -> 384 bins (the authors' resize) is not the same thing.
    stretched = F.interpolate(tx, size=384, mode="linear", align_corners=False)
    assert not torch.allclose(stretched, mx, atol=1e-2)


def _gaussian_logits(centres, n, sigma=4.0):
    grid = torch.arange(n, dtype=torch.float32)
    return -((grid - centres[..., None]) ** 2) / (2 * sigma**2)


@pytest.mark.parametrize(
    ("a", "b"),
    [((1.0, 1.0), (32.0, 0.0)), ((4 / 3, 4 / 3), (0.0, -42.7)), ((0.8, 1.25), (21.5, -13.0))],
)
def test_map_teacher_logits_keeps_the_peak_at_the_image_point(a, b):
    bsz, k, ratio, beta = 2, 16, 2.0, 10.0
    g = torch.Generator().manual_seed(0)
    # student-pixel positions well inside both crops
    p = torch.stack(
        [40 + 110 * torch.rand(bsz, k, generator=g), 60 + 130 * torch.rand(bsz, k, generator=g)], -1
    )
    a_t = torch.tensor([a]).repeat(bsz, 1)
    b_t = torch.tensor([b]).repeat(bsz, 1)
    q = a_t[:, None, :] * p + b_t[:, None, :]  # the same points in teacher pixels
    tx = _gaussian_logits(ratio * q[..., 0], 512) / beta
    ty = _gaussian_logits(ratio * q[..., 1], 512) / beta
    mx, my = map_teacher_logits(tx, ty, a_t, b_t, (384, 512), split_ratio=ratio)
    for mapped, axis in ((mx, 0), (my, 1)):
        prob = F.softmax(beta * mapped, dim=-1)
        bins = torch.arange(prob.shape[-1], dtype=torch.float32)
        expected = ratio * p[..., axis]
        assert (prob.argmax(-1).float() - expected).abs().max() < 1.0  # the nearest bins
        mean = (prob * bins).sum(-1)
        torch.testing.assert_close(mean / ratio, p[..., axis], atol=0.05, rtol=0)


def test_map_teacher_logits_drops_mass_outside_the_teacher_crop():
    tx, ty = _logits(1, 2, 512, seed=1), _logits(1, 2, 512, seed=2)
    # teacher crop starts 20 px right of the student's left edge: student x < 20 px is
    # outside it
    mx, _ = map_teacher_logits(tx, ty, torch.ones(1, 2), torch.tensor([[-20.0, 0.0]]), (384, 512))
    prob = F.softmax(10.0 * mx, dim=-1)
    assert prob[..., :40].max() < 1e-30
    torch.testing.assert_close(prob.sum(-1), torch.ones(1, 2))
    torch.testing.assert_close(mx[..., 40:], tx[..., : 384 - 40])
