"""``ray job submit -- python jobs/distill.py`` on a two-node loopback cluster, as on a real one.

Node 1 (head) advertises ``student`` slots, node 2 a (declared) GPU and ``teacher`` slots,
each with its own temp dir, so workers run in other folders than the driver. The demo job
goes in with ``ray job submit --working-dir .``, the preset's relative paths (released
teachers, backbone), two DDP training workers (gloo) and two 0.5-GPU teachers: teachers
land on node 2, packed on its one GPU, students on node 1. The job is stopped once a
checkpoint is registered (its driver and run go) and submitted again with one epoch more:
it resumes where it stopped, trains to the new end, and finishes in the same MLflow runs.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from loopback import LoopbackCluster, submit, wait_for_job
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient
from runs import registered_steps

pytestmark = pytest.mark.ci

TWO_NODES = ["baseline=false", "optim.epochs=4", "run.val_every_epochs=4",
             "run.checkpoint_every_steps=2", "run.num_workers=2",
             "run.worker_resources={student: 1}", "teachers.0.resources={teacher: 1}",
             "teachers.1.resources={teacher: 1}", "teachers.0.num_gpus=0.5",
             "teachers.1.num_gpus=0.5"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LoopbackCluster.start(tmp_path_factory.mktemp("head"), "--num-cpus=6",
                                    '--resources={"student": 2}')
    try:
        cluster.add_node(tmp_path_factory.mktemp("node2"), "--num-cpus=4", "--num-gpus=1",
                         '--resources={"teacher": 2}')
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def jobs(cluster, tiny, tmp_path_factory):
    """The demo job submitted, stopped after its first registered checkpoint, submitted
    again with one epoch more: ``{"out", "stopped_at", "logs"}`` (the second job's)."""
    out = tmp_path_factory.mktemp("two_nodes") / "demo"
    command = ["python", "jobs/distill.py", "--config", "demo", "--output-dir", str(out),
               *tiny, *TWO_NODES]
    client = JobSubmissionClient(cluster.dashboard)
    first = submit(cluster, *command)
    run = out / "models" / "demo" / "ray_results" / "demo"
    deadline = time.monotonic() + 500  # (the test's limit is 1500 s, both jobs included)
    while not registered_steps(run):
        assert not client.get_job_status(first).is_terminal(), client.get_job_logs(first)[-3000:]
        assert time.monotonic() < deadline, ("no checkpoint registered in 500 s:\n"
                                             + client.get_job_logs(first)[-3000:])
        time.sleep(0.2)
    stopped_at = max(registered_steps(run))
    assert client.stop_job(first)  # the driver and its run go
    status, logs = wait_for_job(client, first, 60)
    assert status == JobStatus.STOPPED, logs[-3000:]

    second = submit(cluster, *command, "optim.epochs=5")
    status, logs = wait_for_job(client, second, 700)
    assert status == JobStatus.SUCCEEDED, f"job ended as {status}:\n{logs[-3000:]}"
    return {"out": out, "stopped_at": stopped_at, "logs": logs}


def test_the_job_submitted_again_resumes_and_trains_to_its_new_end(jobs):
    logs = jobs["logs"]
    steps, per_epoch, resumed = map(int, re.search(
        r"training demo: (\d+) steps \((\d+)/epoch.*from step (\d+)", logs).groups())
    assert steps == 5 * per_epoch  # the new schedule: one epoch more
    assert 4 * per_epoch > resumed >= jobs["stopped_at"] > 0
    assert f"resumed from the checkpoint at step {resumed}" in logs
    assert f"step {steps}/{steps}" in logs and "2 worker(s)" in logs  # workers' lines arrive
    # Ray's chatter is filtered from what the driver prints; the table is printed
    for noise in ("Requesting resources", "core_worker.cc", "Moving model to device"):
        assert noise not in logs, noise
    assert "student_distilled" in logs


def test_relative_paths_are_resolved_on_the_driver_and_found_on_the_other_node(jobs):
    """The preset's released teachers and backbone are relative paths; the teachers and
    workers on the other nodes found them (the run finished), and the output is where the
    driver said."""
    out = jobs["out"]
    assert f"results written to {out / 'results.json'}" in jobs["logs"]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"teacher_coco", "teacher_mpii", "student_distilled"}
    assert (out / "pictures" / "student_distilled.png").is_file()


def test_mlflow_keeps_one_parent_and_one_child_per_model_across_the_two_jobs(jobs):
    out = jobs["out"]
    results = json.loads((out / "results.json").read_text())
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")  # the default: SQLite in the output
    experiment = client.get_experiment_by_name("unipose_ray")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(results)  # the same run, reopened
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        assert child.data.metrics["final/score"] == pytest.approx(results[child.info.run_name]["score"])
    (student,) = [r for r in children if r.info.run_name == "student_distilled"]
    assert "val/score" in student.data.metrics  # its training curves


def test_teachers_land_on_the_gpu_node_and_workers_on_the_head(cluster, jobs):
    from ray.util.state import list_actors, list_nodes

    nodes = {n.node_id: n.resources_total for n in list_nodes(address=cluster.dashboard)}
    actors = [a for a in list_actors(address=cluster.dashboard, detail=True, limit=1000)
              if a.class_name in ("TeacherService", "RayTrainWorker")]
    jobs_seen = {a.job_id for a in actors}
    assert len(jobs_seen) == 2, jobs_seen
    for job in jobs_seen:  # both jobs placed their actors alike
        teachers = [a for a in actors if a.job_id == job and a.class_name == "TeacherService"]
        workers = [a for a in actors if a.job_id == job and a.class_name == "RayTrainWorker"]
        assert len(teachers) == 2 and len(workers) >= 2
        assert all(nodes[a.node_id].get("teacher") for a in teachers)  # on node 2
        assert all(nodes[a.node_id].get("student") for a in workers)  # on the head
        assert len({a.node_id for a in teachers}) == 1  # the two halves of one GPU
