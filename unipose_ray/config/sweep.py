"""The Ray Tune sweep of a run, as config: the loss weights and the student size."""

from __future__ import annotations

from dataclasses import dataclass, field

from unipose_ray.config.loading import ConfigError
from unipose_ray.config.models import STUDENT_SIZES

SWEEP_SEARCHES = ("random", "grid")


@dataclass(frozen=True)
class SweepConfig:
    """A Ray Tune sweep of the loss weights and the student size (``jobs/sweep.py``).

    Attributes:
        num_samples: trials drawn (``random``), or repeats of the grid (``grid``).
        metric, mode: what ASHA and the summary rank trials by (a validation metric).
        search: ``random``: w1 and each teacher's weight log-uniform in their ranges, the
            size from ``sizes``; ``grid``: every ``(w1, w_<teacher>...)`` of ``grid`` x
            ``sizes``.
        w_gt, w_teacher: log-uniform ranges of w1 and of each teacher weight.
        sizes: student sizes to try.
        backbones: ``size -> checkpoint`` the student of that size starts from (as
            ``student.backbone_checkpoint``, which serves ``student.size``); every size of
            ``sizes`` needs one when the student has a backbone.
        lr: ``random``: a log-uniform range of the learning rate; ``grid``: the learning
            rates to try; ``None``: the config's ``optim.lr``.
        grid: the ``(w_gt, one weight per teacher)`` tuples of ``grid`` mode (the paper's
            0.45/0.25/0.45 first), the teachers in the config's order.
        include_base: ``random`` search: the first trial takes the config's own weights,
            first size and lr (the paper's 0.45/0.25/0.45 in the presets), so the table
            shows what the search found against them.
        grace_period, reduction_factor: ASHA's, in validations.
        max_concurrent_trials: 0: as many as the cluster's CPUs hold.
    """

    num_samples: int = 6
    metric: str = "val/score"
    mode: str = "max"
    search: str = "random"
    w_gt: tuple[float, float] = (0.1, 1.0)
    w_teacher: tuple[float, float] = (0.05, 1.0)
    sizes: tuple[str, ...] = ("t",)
    backbones: dict[str, str] = field(default_factory=dict)
    lr: tuple[float, ...] | None = None
    grid: tuple[tuple[float, ...], ...] = ((0.45, 0.25, 0.45),)
    include_base: bool = True
    grace_period: int = 1
    reduction_factor: int = 2
    max_concurrent_trials: int = 0

    def __post_init__(self) -> None:
        if self.search not in SWEEP_SEARCHES:
            raise ConfigError(f"sweep.search must be one of {SWEEP_SEARCHES}, got "
                              f"'{self.search}'")
        if self.mode not in ("max", "min"):
            raise ConfigError(f"sweep.mode must be 'max' or 'min', got '{self.mode}'")
        if self.num_samples < 1:
            raise ConfigError("sweep.num_samples must be >= 1")
        if not self.sizes or set(self.sizes) - set(STUDENT_SIZES):
            raise ConfigError(f"sweep.sizes must be a non-empty subset of {STUDENT_SIZES}, "
                              f"got {list(self.sizes)}")
        ranges = ("w_gt", "w_teacher") + (("lr",) if self.lr and self.search == "random" else ())
        for name in ranges:
            if len(getattr(self, name)) != 2:
                raise ConfigError(f"sweep.{name} must be a range [low, high], got "
                                  f"{list(getattr(self, name))}")
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(f"sweep.{name} must be a range 0 < low <= high, got "
                                  f"[{low}, {high}]")
        if self.search == "grid" and not self.grid:
            raise ConfigError("sweep.grid is empty: give (w_gt, one weight per teacher) tuples")
        if self.search == "grid" and self.lr and min(self.lr) <= 0:
            raise ConfigError(f"sweep.lr must hold positive learning rates, got {list(self.lr)}")
