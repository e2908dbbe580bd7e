"""A run on a two-node loopback cluster, as on a real one.

Node 1 (head) advertises ``student`` slots, node 2 a (declared) GPU and ``teacher`` slots,
each with its own temp dir, so workers run in other folders than the driver. The demo job
is submitted with ``ray job submit --working-dir .`` and relative paths, two DDP training
workers (gloo) and two 0.5-GPU teachers: teachers land on node 2, packed on its one GPU,
students on node 1. Then a driver killed mid-run and the job submitted again: it resumes.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

from loopback import cluster_env, ray_cli, registered_steps, start_node, submit, wait_for_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ADDRESS = "http://127.0.0.1:8266"
TINY = ["generate.coco_train=24", "generate.mpii_train=24", "generate.coco_val=4",
        "generate.mpii_val=4", "optim.batch_size=8", "optim.warmup_steps=2", "baseline=false",
        "run.num_workers=2", "run.worker_resources={student: 1}",
        "teachers.0.resources={teacher: 1}", "teachers.1.resources={teacher: 1}",
        "teachers.0.num_gpus=0.5", "teachers.1.num_gpus=0.5"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    env = cluster_env()
    start_node(tmp_path_factory.mktemp("head"), env, "--head", "--port=6391", "--num-cpus=6",
               "--resources={\"student\": 2}", "--dashboard-host=127.0.0.1",
               "--dashboard-port=8266")
    start_node(tmp_path_factory.mktemp("node2"), env, "--address=127.0.0.1:6391",
               "--num-cpus=4", "--num-gpus=1", "--resources={\"teacher\": 2}")
    yield {**env, "RAY_ADDRESS": ADDRESS}
    ray_cli("stop", "--force", env=env)


def _nodes_and_actors():
    import ray
    from ray.util.state import list_actors, list_nodes

    ray.init(address="127.0.0.1:6391", logging_level="ERROR")
    try:
        nodes = {n.node_id: n.resources_total for n in list_nodes()}
        actors = [a for a in list_actors(detail=True, limit=1000)
                  if a.class_name in ("TeacherService", "RayTrainWorker")]
        return nodes, actors
    finally:
        ray.shutdown()


def test_the_demo_job_runs_across_two_nodes_placed_by_resource(cluster):
    client = JobSubmissionClient(ADDRESS)
    job_id = submit(cluster, "python", "jobs/distill.py", "--config", "demo",
                    "--output-dir", "outputs/two_nodes", "optim.epochs=1",
                    "run.val_every_epochs=1", *TINY)
    status, logs = wait_for_job(client, job_id)
    assert status == JobStatus.SUCCEEDED, f"job ended as {status}:\n{logs[-3000:]}"
    # relative paths (output, released teachers, backbone) were resolved on the driver,
    # in the job's working dir; the workers on the other node found them all
    assert re.search(r"results written to /\S+/outputs/two_nodes/results.json", logs)
    steps = int(re.search(r"training demo: (\d+) steps", logs).group(1))
    assert f"step {steps}/{steps}" in logs and "2 worker(s)" in logs
    assert "Moving model to device" not in logs and "core_worker.cc" not in logs

    nodes, actors = _nodes_and_actors()
    teachers = [a for a in actors if a.class_name == "TeacherService"]
    workers = [a for a in actors if a.class_name == "RayTrainWorker"]
    assert len(teachers) == 2 and len(workers) == 2
    assert all(nodes[a.node_id].get("teacher") for a in teachers)  # on node 2
    assert all(nodes[a.node_id].get("student") for a in workers)  # on the head
    assert len({a.node_id for a in teachers}) == 1  # the two halves of one GPU


def test_a_killed_driver_resubmitted_resumes_its_run(cluster, tmp_path):
    client = JobSubmissionClient(ADDRESS)
    out = tmp_path / "resume"
    command = ["python", "jobs/distill.py", "--config", "demo", "--output-dir", str(out),
               "optim.epochs=4", "run.val_every_epochs=4", "run.checkpoint_every_steps=2",
               *TINY]
    first = submit(cluster, *command)
    run_dir = out / "models" / "demo" / "ray_results" / "demo"
    deadline = time.time() + 600
    while not registered_steps(run_dir) and time.time() < deadline:
        assert not client.get_job_status(first).is_terminal(), client.get_job_logs(first)[-3000:]
        time.sleep(0.5)
    done = max(registered_steps(run_dir))
    stopped = ray_cli("job", "stop", first, env=cluster)  # the driver and its run go
    assert stopped.returncode == 0, stopped.stderr
    assert wait_for_job(client, first, 120)[0] == JobStatus.STOPPED

    second = submit(cluster, *command)
    status, logs = wait_for_job(client, second)
    assert status == JobStatus.SUCCEEDED, f"job ended as {status}:\n{logs[-3000:]}"
    resumed = int(re.search(r"training demo: \d+ steps .*from step (\d+)", logs).group(1))
    assert resumed >= done > 0
    assert f"resumed from the checkpoint at step {resumed}" in logs
    assert "student_distilled" in json.loads((out / "results.json").read_text())

    mlflow = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = mlflow.get_experiment_by_name("unipose_ray")
    runs = mlflow.search_runs([experiment.experiment_id],
                              "attributes.run_name = 'student_distilled'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the same run, reopened
