"""The CUDA paths, for a machine with a GPU (``cluster/gpu_check.sh`` runs these and
``tests/e2e/test_training.py``'s GPU test).

Skipped, and reported as skipped, where torch sees no CUDA device.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import DEMO_CODEC

from unipose_ray.config import DistillConfig, OptimConfig, StudentConfig, TeacherConfig
from unipose_ray.models import build_rtmpose
from unipose_ray.teachers.service import StudentGrid, TeacherService
from unipose_ray.train.optim import MixedPrecision, build_optimizer

pytestmark = pytest.mark.gpu

CODEC = DEMO_CODEC
GRID = StudentGrid(CODEC.num_bins, CODEC.split_ratio)


@pytest.fixture(scope="module")
def teacher(random_teachers) -> TeacherConfig:
    """A random-weight RTMPose-t COCO teacher at the student's size, on half a GPU."""
    return replace(random_teachers["coco"], weight=0.5, num_gpus=0.5)


def test_a_teacher_on_the_gpu_gives_the_cpu_logits(teacher):
    images = np.random.default_rng(0).integers(0, 255, (4, 3, 96, 64), dtype=np.uint8)
    a, b = np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32)
    gpu = TeacherService(teacher, GRID, device="cuda")
    cpu = TeacherService(teacher, GRID, device="cpu")
    assert gpu.device.type == "cuda"
    for on_gpu, on_cpu in zip(gpu.logits(images, a, b), cpu.logits(images, a, b), strict=True):
        np.testing.assert_allclose(on_gpu, on_cpu, atol=0.1, rtol=0.05)  # bf16 / fp16


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_a_mixed_precision_training_step_on_the_gpu(mode):
    device = torch.device("cuda")
    precision = MixedPrecision(mode, device)
    expected = "fp16" if mode == "bf16" and not torch.cuda.is_bf16_supported() else mode
    assert precision.mode == expected and precision.scaler.is_enabled() == (expected == "fp16")
    model = build_rtmpose("t", 21, CODEC.input_size, CODEC.sigma).to(device)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3))
    before = [p.detach().clone() for p in model.parameters()]
    with precision.autocast():
        x, y = model(torch.randn(2, 3, 96, 64, device=device))
    loss = x.float().logsumexp(-1).mean() + y.float().logsumexp(-1).mean()
    precision.step(loss, optimizer, model.parameters(), grad_clip=1.0)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_one_distillation_step_on_the_gpu(teacher):
    from unipose_ray.kd.losses import SimCCTargets, distillation_loss
    from unipose_ray.train.kd_step import teacher_terms

    device = torch.device("cuda")
    config = DistillConfig(student=StudentConfig("t", codec=CODEC), teachers=(teacher,))
    student = build_rtmpose("t", 21, CODEC.input_size, CODEC.sigma).to(device)
    images = np.random.default_rng(1).integers(0, 255, (2, 3, 96, 64), dtype=np.uint8)
    service = TeacherService(teacher, GRID, device="cuda")
    tx, ty = service.logits(images, np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32))
    precision = MixedPrecision("bf16", device)
    with precision.autocast():
        sx, sy = student(torch.tensor(images, device=device))
    wx, wy = CODEC.num_bins
    targets = SimCCTargets(torch.rand(2, 21, wx, device=device), torch.rand(2, 21, wy, device=device),
                           torch.ones(2, 21, device=device))
    loss, parts = distillation_loss(
        (sx.float(), sy.float()), targets,
        {"coco": (torch.tensor(tx, device=device), torch.tensor(ty, device=device))},
        config.loss.w_gt, teacher_terms(config))
    optimizer = build_optimizer(student, config.optim)
    precision.step(loss, optimizer, student.parameters())
    assert torch.isfinite(loss) and parts["loss_kd_coco"] > 0
