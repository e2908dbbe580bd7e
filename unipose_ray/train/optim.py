"""AdamW, the learning-rate schedule and the weight EMA of student training.

Schedule (FACTS.md section 3, the RTMPose recipe): linear warm-up from 0.1% of the peak,
constant, then cosine down to ``min_lr_ratio x lr`` over the part of training after
``cosine_from``. Per step, so it is independent of the number of workers.
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
