"""AdamW, the learning-rate schedule and the weight EMA of student training.

Schedule (the RTMPose recipe): linear warm-up from 0.1% of the peak, constant, then cosine
down to ``min_lr_ratio x lr`` over the part of training after ``cosine_from``. Per step, so
it is independent of the number of workers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from unipose_ray.config import OptimConfig


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW without weight decay on norms and biases (MMPose's ``norm_decay_mult=0``)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_at(step: int, total_steps: int, config: OptimConfig) -> float:
    """Learning rate at ``step`` (0-based) of ``total_steps``."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    if step < warmup:
        start = 1e-3
        return config.lr * (start + (1 - start) * step / warmup)
    cosine_start = max(int(config.cosine_from * total_steps), warmup)
    if step < cosine_start:
        return config.lr
    progress = (step - cosine_start) / max(total_steps - cosine_start, 1)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EMA:
    """Exponential moving average of a model's weights (MMPose's ``ExpMomentumEMA`` rule).

    ``ema = (1 - m) * ema + m * weights`` with ``m`` growing from the start of training as
    ``(1 - momentum) * exp(-(1 + step) / 2000) + momentum``; buffers are copied.

    Not MMPose's class itself: ``ExpMomentumEMA`` copies the weights on its first update
    (this one averages them with the initial weights) and computes ``mul_`` + ``add_``
    where this one calls ``lerp_``: the EMA weights differ by ~2e-5 after one step and by
    float rounding ever after, so swapping it in would change every trained run's numbers.
    """

    def __init__(self, model: nn.Module, momentum: float = 2e-4, gamma: int = 2000):
        self.module = _copy_model(model)
        self.momentum, self.gamma, self.steps = momentum, gamma, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        m = (1 - self.momentum) * math.exp(-(1 + self.steps) / self.gamma) + self.momentum
        live = dict(model.named_parameters())
        for name, param in self.module.named_parameters():
            param.lerp_(live[name].detach(), m)
        for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = state["steps"]


def _copy_model(model: nn.Module) -> nn.Module:
    import copy  # noqa: PLC0415

    clone = copy.deepcopy(model)
    clone.requires_grad_(False)
    clone.eval()
    return clone


class MixedPrecision:
    """``optim.amp`` on a worker's device: autocast dtype, loss scaling, the optimiser step.

    ``bf16`` needs no scaling; ``fp16`` scales the loss with a ``GradScaler``, which also
    skips a step whose gradients overflowed. A GPU without bf16 (V100, T4) gets ``fp16``
    instead; CPU workers train in fp32 (``off``).
    """

    def __init__(self, mode: str, device: torch.device):
        if device.type != "cuda":
            mode = "off"
        elif mode == "bf16" and not torch.cuda.is_bf16_supported():
            mode = "fp16"
        self.mode, self.device_type = mode, device.type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    @property
    def label(self) -> str:
        """``", amp bf16"`` for progress lines; empty when off."""
        return "" if self.dtype is None else f", amp {self.mode}"

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params,
             grad_clip: float = 0.0) -> None:
        """Backward, optional gradient clipping (on unscaled gradients), optimiser step."""
        self.scaler.scale(loss).backward()
        if grad_clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.load_state_dict(state)
