"""``LeanTorchTrainer``: Ray Train's ``TorchTrainer`` without the helper actors our runs
never use.

Besides its workers, every Ray Train run starts a controller, a synchronization actor, a
dataset manager and a placement-group cleaner: each one a Python process that imports Ray
Train (pandas, Ray Data, pydantic), seconds of CPU apiece while the workers import theirs.
On a laptop's two cores, with two trainings side by side, that is the start-up the user
waits for. Two of them serve nothing here:

- the dataset manager serves the trainer's ``datasets=``; we pass none (each worker reads
  its own shard of the record set, through Ray Data or in a thread: ``train/data.py``);
- the placement-group cleaner frees a run's placement group when its controller dies
  without freeing it. When the driver of a Ray it started itself (``started_local_ray``)
  owns the controller, nothing outlives the driver. Anywhere else it stays: on a cluster,
  and in a Tune trial (a worker process, where ``started_local_ray`` is false), whose
  controller dies with the trial when ASHA stops it while Ray runs on.

Ray Train builds these in ``DataParallelTrainer._create_default_callbacks``; their classes
come from :mod:`unipose_ray.runtime.ray_internals`. ``tests/train/test_trainer.py`` checks
them against Ray's own list, so an upgrade that moves them fails there rather than here.

``fit()`` also gives Ctrl+C back to the job when the run ends (:mod:`unipose_ray.runtime.signals`).
"""

from __future__ import annotations

import signal

from ray.train.torch import TorchTrainer

from unipose_ray.runtime.ray_internals import train_helper_callbacks
from unipose_ray.runtime.signals import handlers_restored


class LeanTorchTrainer(TorchTrainer):
    """A ``TorchTrainer`` without the dataset manager unless ``keep_datasets``, and
    without the placement-group cleaner unless ``keep_cleaner`` (false: a Ray that dies
    with the driver). Keeping both gives Ray's own trainer."""

    def __init__(self, *args, keep_cleaner: bool = True, keep_datasets: bool = False,
                 **kwargs):
        if kwargs.get("datasets") and not keep_datasets:
            raise ValueError("LeanTorchTrainer has no dataset manager: pass no datasets "
                             "(or keep_datasets=True)")
        datasets, cleaner = train_helper_callbacks()
        self._dropped = (() if keep_datasets else (datasets,)) + (
            () if keep_cleaner else (cleaner,))
        super().__init__(*args, **kwargs)

    def fit(self):
        """Ray Train's ``fit()``, without leaving its SIGINT handler (and the finished
        run's controller with it) installed."""
        with handlers_restored(signal.SIGINT):
            return super().fit()

    def _create_default_callbacks(self) -> list:
        return [c for c in super()._create_default_callbacks()
                if not isinstance(c, self._dropped)]
