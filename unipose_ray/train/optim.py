"""AdamW, the learning-rate schedule and the weight EMA of student training (RTMPose's).

Schedule (the RTMPose recipe): linear warm-up from 0.1% of the peak, constant, then cosine
down to ``min_lr_ratio x lr`` over the part of training after ``cosine_from``. Per step, so
it is independent of the number of workers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from unipose_ray.config import OptimConfig

# mmengine's ``DefaultOptimWrapperConstructor`` treats these as norms (``norm_decay_mult``).
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
              nn.GroupNorm, nn.LayerNorm)


def decay_groups(model: nn.Module, flat_decay: bool = True
                 ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decay, no_decay)`` parameters as MMPose's RTMPose ``paramwise_cfg`` splits them.

    ``dict(norm_decay_mult=0, bias_decay_mult=0, bypass_duplicate=True)``: a norm layer's
    parameters and every parameter named ``bias`` do not decay; everything else does (a
    1-D gain such as ``ScaleNorm.g`` too, unless ``flat_decay`` is off: mmengine's
    ``flat_decay_mult=0``); a parameter shared by two modules counts once; frozen ones are
    left out.
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            exempt = (isinstance(module, NORM_TYPES) or name == "bias"
                      or (not flat_decay and param.ndim <= 1))
            (no_decay if exempt else decay).append(param)
    return decay, no_decay


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with MMPose's RTMPose parameter groups (:func:`decay_groups`).

    ``config.weight_decay`` is filled in by ``DistillConfig`` (RTMPose's for the student
    size); an ``OptimConfig`` used on its own with ``None`` decays nothing (RTMPose-t/s).
    """
    decay, no_decay = decay_groups(model, config.flat_decay)
    groups = [{"params": decay, "weight_decay": config.weight_decay or 0.0},
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
    """Exponential moving average of a model's weights and buffers: MMPose's
    ``EMAHook(ema_type='ExpMomentumEMA', momentum=2e-4, update_buffers=True)``.

    The first update copies the model; update ``n >= 1`` then averages every floating
    tensor of its state dict (weights and BatchNorm running statistics alike) as
    ``ema = (1 - m) * ema + m * live`` with ``m = (1 - momentum) * exp(-(1 + n) / gamma)
    + momentum``. Integer buffers (BatchNorm's ``num_batches_tracked``) keep the value of
    the first update, as mmengine's ``ExponentialMovingAverage`` leaves them.
    """

    def __init__(self, model: nn.Module, momentum: float = 2e-4, gamma: int = 2000):
        self.module = _copy_model(model)
        self.momentum, self.gamma, self.steps = momentum, gamma, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # state_dict() tensors share storage with the modules: updating them updates these.
        averaged, live = self.module.state_dict(), model.state_dict()
        if self.steps == 0:
            for name, mine in averaged.items():
                mine.copy_(live[name])
        else:
            m = (1 - self.momentum) * math.exp(-(1 + self.steps) / self.gamma) + self.momentum
            for name, mine in averaged.items():
                if mine.dtype.is_floating_point:
                    mine.mul_(1 - m).add_(live[name].to(mine.device), alpha=m)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Also loads the checkpoints of the earlier EMA (same keys; its buffers were
        copies of the model's, a fine starting point for averaging them)."""
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
