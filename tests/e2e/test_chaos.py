"""Long fault runs (``--tier chaos``, opt-in): several faults in one distillation run.

Two DDP training workers, two replicas of each online teacher, a checkpoint every 2 steps.
During the run a training worker is killed at the first registered checkpoint and again
at a later one, and a teacher replica once it has served a few calls. The run restarts
from its checkpoints each time (``FailureConfig``), the teacher's calls are retried on its
restarted actor, and the run ends with the very weights of the same run left alone:
teachers answer the same crops with the same logits, and the data order and RNG resume
where the checkpoint left them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import pytest
from runs import assert_same_weights, final_state, registered_steps

from unipose_ray.config import load_config
from unipose_ray.teachers.service import StudentGrid, TeacherPool
from unipose_ray.train.driver import run_training
from unipose_ray.train.job import TrainJob
from unipose_ray.workflows.training import check_teachers, prepare_data

pytestmark = pytest.mark.chaos


def _alive_workers(address: str, seen: set[str]) -> list:
    from ray.util.state import list_actors

    return [a for a in list_actors(address=address, filters=[
        ("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]) if a.actor_id not in seen]


def _kill_workers_at(address: str, storage, steps: list[int], killed: list[int]) -> None:
    """SIGKILL a live training worker once the controller has registered a checkpoint at
    or after each of ``steps`` (the workers of the attempt running then)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 1800
    for wanted in steps:
        while max(registered_steps(storage), default=0) < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        while time.monotonic() < deadline:
            workers = _alive_workers(address, seen)
            try:
                os.kill(workers[0].pid, signal.SIGKILL)
            except (IndexError, ProcessLookupError):  # between two attempts
                time.sleep(0.1)
                continue
            seen |= {w.actor_id for w in workers}
            killed.append(max(registered_steps(storage)))
            break


def _run(config, data, out, name: str, faults: bool, address: str):
    import ray

    config = replace(config, run=replace(config.run, name=name))
    pools = {t.name: TeacherPool(t, StudentGrid(config.student.codec.num_bins,
                                                config.student.codec.split_ratio))
             for t in config.teachers}
    for pool in pools.values():
        pool.wait_ready()
    job = TrainJob(config, data.train_records(sorted(data.train), out), (),
                   check_teachers(config), str(out / "models" / name))
    killed: list[int] = []
    threads = []
    if faults:
        storage = out / "models" / name / "ray_results" / name
        threads.append(threading.Thread(target=_kill_workers_at, daemon=True,
                                        args=(address, storage, [2, 8], killed)))
        victim = pools["coco"].replicas[1]

        def kill_replica():
            while ray.get(victim.ping.remote()) < 5:
                time.sleep(0.1)
            ray.kill(victim, no_restart=False)
            killed.append(-1)

        threads.append(threading.Thread(target=kill_replica, daemon=True))
    for thread in threads:
        thread.start()
    try:
        result = run_training(job, pools)
    finally:
        for pool in pools.values():
            pool.shutdown()
    for thread in threads:
        thread.join(timeout=10)
    return result, killed


def test_a_run_that_loses_workers_and_a_teacher_replica_ends_as_if_left_alone(
        ray_cluster, tiny, random_teachers, tmp_path):
    config, data = prepare_data(load_config("demo_self_trained", [
        *tiny, "baseline=false", "pretrain=null", "optim.epochs=4", "optim.ema=true",
        "run.num_workers=2", "run.checkpoint_every_steps=2", "run.max_failures=3",
        "run.val_every_epochs=10"]), tmp_path)
    config = replace(config, teachers=tuple(replace(random_teachers[t.name], replicas=2)
                                            for t in config.teachers))
    calm, _ = _run(config, data, tmp_path, "calm", False, ray_cluster.dashboard)
    rough, killed = _run(config, data, tmp_path, "rough", True, ray_cluster.dashboard)
    assert sorted(killed)[0] == -1 and len(killed) == 3, killed  # a replica, two workers
    assert rough.error is None and rough.metrics["train/step"] == calm.metrics["train/step"]
    assert_same_weights(final_state(tmp_path / "models" / "rough", "rough"),
                        final_state(tmp_path / "models" / "calm", "calm"))
