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

Ray Train builds these in ``DataParallelTrainer._create_default_callbacks`` (Ray 2.60,
pinned by the lock). ``tests/train/test_trainer.py`` checks the callbacks against Ray's
own list, so an upgrade that moves them fails there rather than here.

And one thing Ray's ``fit()`` leaves behind, called in the main thread: its Ctrl+C handler
(``_register_sigint_handler``), a closure over the run's controller. It stays installed
after the run, so the controller actor (a process) lives on while the job evaluates and
trains the next model, and a Ctrl+C after the run asks that finished controller to abort
instead of stopping the job (the third one exits with code 0). The handler that was there
before ``fit()`` comes back when it returns.
"""

from __future__ import annotations

import signal
import threading

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)


class LeanTorchTrainer(TorchTrainer):
    """A ``TorchTrainer`` without the dataset manager unless ``keep_datasets``, and
    without the placement-group cleaner unless ``keep_cleaner`` (false: a Ray that dies
    with the driver). Keeping both gives Ray's own trainer."""

    def __init__(self, *args, keep_cleaner: bool = True, keep_datasets: bool = False,
                 **kwargs):
        if kwargs.get("datasets") and not keep_datasets:
            raise ValueError("LeanTorchTrainer has no dataset manager: pass no datasets "
                             "(or keep_datasets=True)")
        self._dropped = (() if keep_datasets else (DatasetsCallback,)) + (
            () if keep_cleaner else (PlacementGroupCleanerCallback,))
        super().__init__(*args, **kwargs)

    def fit(self):
        """Ray Train's ``fit()``; the main thread's SIGINT handler is restored after it."""
        if threading.current_thread() is not threading.main_thread():
            return super().fit()  # (Ray registers no handler there)
        before = signal.getsignal(signal.SIGINT)
        try:
            return super().fit()
        finally:
            signal.signal(signal.SIGINT, before)

    def _create_default_callbacks(self) -> list:
        return [c for c in super()._create_default_callbacks()
                if not isinstance(c, self._dropped)]
