"""Faults in a real Ray Train run, on one local Ray instance (shared by this module).

A killed training worker: the run restarts from its last checkpoint (``FailureConfig``),
its stream starts at that step (nothing replayed), and it ends with the very weights of an
uninterrupted run. A run that fails marks its MLflow run FAILED.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from unipose_ray.config import load_config
from unipose_ray.train.driver import run_training
from unipose_ray.train.job import TrainJob
from unipose_ray.workflow import prepare_data

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = ["generate.coco_train=24", "generate.mpii_train=24", "generate.coco_val=4",
        "generate.mpii_val=4", "optim.batch_size=8", "optim.epochs=3", "optim.warmup_steps=2",
        "optim.ema=true", "run.val_every_epochs=10", "run.checkpoint_every_steps=3",
        "run.max_failures=2", "baseline=false", "parallel_runs=1", "teachers=[]",
        "loss.w_gt=1.0"]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from unipose_ray.distributed import start_local_ray

    # the dashboard serves the state API the test finds the worker's pid with
    start_local_ray(num_cpus=8, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("faults")
    config, data = prepare_data(load_config("demo_self_trained", TINY), out)
    config = replace(config, run=replace(config.run, storage_path=str(out / "ray_results")))
    return config, data, out


def _job(config, data, out, name: str) -> TrainJob:
    config = replace(config, run=replace(config.run, name=name))
    return TrainJob(config, data.train_records(["coco", "mpii"], out), (), {},
                    str(out / "models" / name))


def _final_state(result) -> dict:
    with result.checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=True)


def _registered_steps(run_dir: Path) -> list[int]:
    """Steps of the checkpoints Ray Train's controller has registered (what a restart sees)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        results = json.loads(snapshot.read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):  # not written yet, or being rewritten
        return []
    return [r["metrics"]["train/step"] for r in results]


def _kill_worker_after_first_checkpoint(run_dir: Path, killed: list[int]) -> None:
    """SIGKILL the run's training worker once a checkpoint is registered."""
    from ray.util.state import list_actors

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        steps = _registered_steps(run_dir)
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"),
                                       ("state", "=", "ALIVE")]) if steps else []
        if workers:
            os.kill(workers[0].pid, signal.SIGKILL)
            killed.append(max(steps))
            return
        time.sleep(0.2)


def test_a_killed_worker_resumes_from_its_checkpoint_where_it_was(setup):
    config, data, out = setup
    whole = run_training(_job(config, data, out, "uninterrupted"))
    assert whole.error is None

    job = _job(config, data, out, "killed")
    killed: list[int] = []
    killer = threading.Thread(target=_kill_worker_after_first_checkpoint,
                              args=(out / "ray_results" / "killed", killed), daemon=True)
    killer.start()
    result = run_training(job)
    killer.join(timeout=10)
    assert killed, "the worker was never killed: the test did not exercise a restart"
    assert result.error is None

    total = whole.metrics["train/step"]
    assert result.metrics["train/step"] == total
    # restarted from a checkpoint at or after the one seen before the kill: steps lost
    # <= run.checkpoint_every_steps
    start = result.metrics["train/start_step"]
    assert killed[0] <= start < total and start % config.run.checkpoint_every_steps == 0
    # same data order and RNG after the resume: the very same weights, EMA and optimiser
    a, b = _final_state(whole), _final_state(result)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=0, msg=name)
    for name, tensor in a["ema"]["module"].items():
        torch.testing.assert_close(b["ema"]["module"][name], tensor, rtol=0, atol=0, msg=name)
    # ... and on this local Ray, without the helper actors LeanTorchTrainer leaves out
    from ray.util.state import list_actors

    started = {a.class_name for a in list_actors(limit=10_000)}
    assert {"TrainController", "RayTrainWorker"} <= started
    assert not started & {"DatasetManager", "PlacementGroupCleaner"}


def test_a_failed_run_is_marked_failed_in_mlflow(setup):
    from mlflow.tracking import MlflowClient

    config, data, out = setup
    uri = f"sqlite:///{out}/mlflow.db"
    job = _job(config, data, out, "diverges")
    # an absurd learning rate: the first update sends the weights to ~1e30, the loss to NaN
    broken = replace(job.config, optim=replace(job.config.optim, lr=1e30, max_nonfinite_steps=2),
                     run=replace(job.config.run, max_failures=0))
    with pytest.raises(Exception, match="NaN or inf for 2 steps in a row"):
        run_training(replace(job, config=broken, tracking_uri=uri))

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'diverges'")
    assert run.info.status == "FAILED"
    assert run.data.metrics["train/nonfinite_steps"] == 2


@pytest.mark.parametrize("data_actors", [0, 1], ids=["inline crops", "Ray Data crop actors"])
def test_a_corrupt_training_image_is_named_or_skipped_and_counted(tmp_path, ray_session,
                                                                  data_actors):
    from unipose_ray.data.records import read_records

    config, data = prepare_data(
        load_config("demo_self_trained",
                    TINY + ["optim.epochs=1", f"run.data_actors={data_actors}"]), tmp_path)
    config = replace(config, run=replace(config.run, storage_path=str(tmp_path / "ray_results"),
                                         max_failures=0))
    bad = read_records(data.train["coco"]).column("image_path")[3].as_py()
    Path(bad).write_bytes(b"\xff\xd8 truncated")  # broken after the records were written

    with pytest.raises(Exception, match=rf"(?s)cannot read image {bad}.*data.skip_bad_images"):
        run_training(_job(config, data, tmp_path, "bad_image"))
    skipping = replace(config, data=replace(config.data, skip_bad_images=True))
    result = run_training(_job(skipping, data, tmp_path, "bad_image_skipped"))
    assert result.metrics["train/bad_images"] >= 1
