"""``LeanTorchTrainer`` drops exactly the helper actors our runs do not use."""

from __future__ import annotations

import pytest
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import (
    PlacementGroupCleanerCallback,
)

from unipose_ray.train.trainer import LeanTorchTrainer

SCALING = ScalingConfig(num_workers=1)


def _types(trainer) -> list[type]:
    return [type(c) for c in trainer._create_default_callbacks()]


@pytest.mark.parametrize("keep_cleaner", [True, False])
def test_the_lean_trainer_has_rays_callbacks_but_the_dataset_manager(keep_cleaner):
    ray_own = _types(TorchTrainer(lambda: None, scaling_config=SCALING))
    # Ray 2.60 builds both here; an upgrade that moves them fails this line
    assert DatasetsCallback in ray_own and PlacementGroupCleanerCallback in ray_own
    dropped = {DatasetsCallback} | (set() if keep_cleaner else {PlacementGroupCleanerCallback})
    lean = _types(LeanTorchTrainer(lambda: None, scaling_config=SCALING,
                                   keep_cleaner=keep_cleaner))
    assert lean == [t for t in ray_own if t not in dropped]


def test_keeping_both_helpers_gives_rays_own_trainer():
    ray_own = _types(TorchTrainer(lambda: None, scaling_config=SCALING))
    assert _types(LeanTorchTrainer(lambda: None, scaling_config=SCALING, keep_cleaner=True,
                                   keep_datasets=True)) == ray_own


def test_the_lean_trainer_refuses_datasets():
    with pytest.raises(ValueError, match="no dataset manager"):
        LeanTorchTrainer(lambda: None, scaling_config=SCALING, datasets={"train": [1, 2]})


def test_the_run_leaves_ctrl_c_to_the_handler_that_was_there_before(monkeypatch):
    """Ray's ``fit()`` installs a SIGINT handler holding the run's controller and leaves it
    installed; after our ``fit()`` Ctrl+C is the job's again (and the controller free)."""
    import signal

    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    def before(signum, frame):  # the job's own handler
        raise KeyboardInterrupt

    def rays_fit(self):  # what Ray's fit does to the handler in the main thread
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        return "result"

    monkeypatch.setattr(DataParallelTrainer, "fit", rays_fit)
    previous = signal.signal(signal.SIGINT, before)
    try:
        assert LeanTorchTrainer(lambda: None, scaling_config=SCALING).fit() == "result"
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, previous)
