"""A long distillation on a two-node loopback cluster under random kills (``--tier chaos``).

``jobs/distill.py`` goes in with ``ray job submit`` as in ``test_cluster.py`` (students on
node 1, two replicas of each teacher on node 2, two DDP workers, one Ray Data crop actor
each, a checkpoint every ``CHECKPOINT_EVERY`` steps) and trains for 10 minutes or more;
every 1-2 minutes a random victim is SIGKILLed: a teacher replica, a training worker or a
crop actor. The run must finish on its own, each restart resume from the checkpoint the
controller had registered when its kill came (at most one checkpoint interval lost), the
final metrics equal those of the same job left alone, and MLflow hold one FINISHED run per
model. The kills, the steps each cost and the metrics are printed (``-s``) for
``docs/chaos.md``.

    UNIPOSE_CHAOS_EPOCHS=200 pytest --tier chaos tests/e2e/test_chaos_cluster.py -s
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from loopback import LoopbackCluster, submit, wait_for_job
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient
from runs import registered_steps

pytestmark = pytest.mark.chaos

EPOCHS = int(os.environ.get("UNIPOSE_CHAOS_EPOCHS", "200"))
CHECKPOINT_EVERY = 20
KILL_EVERY_S = (60.0, 120.0)
VICTIMS = {"teacher": "TeacherService", "training worker": "RayTrainWorker",
           "crop actor": "MapWorker"}
OVERRIDES = ["baseline=false", f"optim.epochs={EPOCHS}", f"run.val_every_epochs={EPOCHS}",
             f"run.checkpoint_every_steps={CHECKPOINT_EVERY}", "run.max_failures=50",
             "run.num_workers=2", "run.data_actors=1", "run.worker_resources={student: 1}",
             "teachers.0.replicas=2", "teachers.1.replicas=2",
             "teachers.0.resources={teacher: 1}", "teachers.1.resources={teacher: 1}",
             "optim.warmup_steps=20", "run.val_flip_test=false"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LoopbackCluster.start(tmp_path_factory.mktemp("head"), "--num-cpus=6",
                                    '--resources={"student": 2}')
    try:
        cluster.add_node(tmp_path_factory.mktemp("node2"), "--num-cpus=6",
                         '--resources={"teacher": 4}')
        yield cluster
    finally:
        cluster.stop()


def _victims(address: str, kind: str) -> list:
    from ray.util.state import list_actors

    return [a for a in list_actors(address=address, filters=[("state", "=", "ALIVE")],
                                   limit=10_000, raise_on_missing_output=False)
            if VICTIMS[kind] in a.class_name and a.pid]


class Killer:
    """SIGKILLs a random victim every 1-2 minutes until stopped; remembers each kill with
    the checkpoint step the controller had registered then."""

    def __init__(self, address: str, storage: Path, logs, seed: int = 0):
        self.address, self.storage, self.logs = address, storage, logs
        self.random = random.Random(seed)
        self.kills: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.started = time.monotonic()

    def _loop(self) -> None:
        while not self.stop.wait(self.random.uniform(*KILL_EVERY_S)):
            kinds = list(VICTIMS)
            self.random.shuffle(kinds)
            for kind in kinds:  # the drawn kind, or the next one alive now
                try:
                    victim = self.random.choice(_victims(self.address, kind))
                    os.kill(victim.pid, signal.SIGKILL)
                except (IndexError, ProcessLookupError):
                    continue
                seen = re.findall(r"\] step (\d+)/", self.logs())  # progress, every 10 steps
                self.kills.append({"at_s": round(time.monotonic() - self.started),
                                   "kind": kind, "class": victim.class_name,
                                   "registered": max(registered_steps(self.storage), default=0),
                                   "step_seen": int(seen[-1]) if seen else 0})
                print(f"chaos: killed a {kind} ({victim.class_name}) at "
                      f"{self.kills[-1]['at_s']} s", flush=True)
                break


def _job(cluster, tiny, out: Path, chaos: bool) -> dict:
    command = ["python", "jobs/distill.py", "--config", "demo", "--output-dir", str(out),
               *tiny, *OVERRIDES]
    client = JobSubmissionClient(cluster.dashboard)
    started = time.monotonic()
    job = submit(cluster, *command)
    killer = Killer(cluster.dashboard, out / "models" / "demo" / "ray_results" / "demo",
                    lambda: client.get_job_logs(job))
    if chaos:
        killer.thread.start()
    try:
        status, logs = wait_for_job(client, job, timeout_s=3 * 3600)
    finally:
        killer.stop.set()
    assert status == JobStatus.SUCCEEDED, f"job ended as {status}:\n{logs[-4000:]}"
    results = json.loads((out / "results.json").read_text())
    return {"out": out, "logs": logs, "kills": killer.kills, "results": results,
            "wall_s": time.monotonic() - started}


def test_a_long_run_under_random_kills_ends_as_the_same_run_left_alone(
        cluster, tiny, tmp_path_factory):
    calm = _job(cluster, tiny, tmp_path_factory.mktemp("calm") / "demo", chaos=False)
    rough = _job(cluster, tiny, tmp_path_factory.mktemp("rough") / "demo", chaos=True)
    resumes = [int(s) for s in re.findall(r"training demo: \d+ steps .*from step (\d+)",
                                           rough["logs"])]
    total = int(re.search(r"training demo: (\d+) steps", rough["logs"]).group(1))
    print(f"\nchaos: calm {calm['wall_s']:.0f} s, rough {rough['wall_s']:.0f} s, "
          f"{total} steps, checkpoint every {CHECKPOINT_EVERY}")
    print("chaos: kills", json.dumps(rough["kills"]))
    print("chaos: attempts started from steps", resumes)
    student = "student_distilled"
    print("chaos: metrics calm ", json.dumps(calm["results"][student], sort_keys=True))
    print("chaos: metrics rough", json.dumps(rough["results"][student], sort_keys=True))

    assert rough["wall_s"] >= 600 or EPOCHS < 200, "the disturbed run must last 10 minutes"
    assert len(rough["kills"]) >= 4, rough["kills"]
    # each restart started from a checkpoint at least as late as the one registered when
    # the kill that caused it came: at most one checkpoint interval of work lost per kill
    worker_kills = [k["registered"] for k in rough["kills"] if k["kind"] != "teacher"]
    restarts = resumes[1:]
    assert len(restarts) <= len(worker_kills), (restarts, worker_kills)
    for start in restarts:
        assert any(start >= registered for registered in worker_kills), (start, worker_kills)
        assert start % CHECKPOINT_EVERY == 0 or start == total, start
    for metric, value in calm["results"][student].items():
        assert rough["results"][student][metric] == pytest.approx(value, abs=0.01), metric

    client = MlflowClient(f"sqlite:///{rough['out']}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("unipose_ray").experiment_id])
    names = sorted(r.info.run_name for r in runs)
    assert len(names) == len(set(names)), names  # one run per model, reopened on restarts
    assert all(r.info.status == "FINISHED" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs]
