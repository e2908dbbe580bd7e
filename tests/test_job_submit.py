"""``ray job submit -- python jobs/distill.py`` against a head node started on loopback."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

from loopback import cluster_env, ray_cli, start_node, submit, wait_for_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = ["generate.coco_train=16", "generate.mpii_train=16", "generate.coco_val=4",
        "generate.mpii_val=4", "optim.batch_size=8", "optim.epochs=1", "teacher_epochs=1",
        "baseline=false", "run.val_every_epochs=1", "pretrain.epochs=1",
        "pretrain.cpus_per_worker=1"]


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    env = cluster_env()
    start_node(tmp_path_factory.mktemp("ray"), env, "--head", "--num-cpus=8",
               "--dashboard-host=127.0.0.1", "--dashboard-port=8265")
    yield {**env, "RAY_ADDRESS": "http://127.0.0.1:8265"}
    ray_cli("stop", "--force", env=env)


def test_distill_job_submitted_to_a_cluster_succeeds(head_node, tmp_path):
    out = tmp_path / "demo"
    job_id = submit(head_node, "python", "jobs/distill.py", "--config", "demo_self_trained",
                    "--output-dir", str(out), *TINY)
    client = JobSubmissionClient(head_node["RAY_ADDRESS"])
    status, logs = wait_for_job(client, job_id)
    assert status == JobStatus.SUCCEEDED, f"job ended as {status}:\n{logs[-3000:]}"
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"teacher_coco", "teacher_mpii", "student_distilled"}
    assert "student_distilled" in logs  # the table was printed by the job
    assert (out / "models" / "demo_self_trained_pretrain" / "pretrained.pth").is_file()
    assert (out / "pictures" / "student_distilled.png").is_file()
    assert "Requesting resources" not in logs and "core_worker.cc" not in logs  # Ray's chatter

    # MLflow: one parent run, the models as its children named as the table's rows
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("unipose_ray")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"pretrain_backbone", "teacher_coco", "teacher_mpii", "student_distilled"}
    assert all(r.info.status == "FINISHED" for r in runs)
    for row, metrics in results.items():
        assert children[row].data.metrics["final/score"] == pytest.approx(metrics["score"])
    assert "val/score" in children["student_distilled"].data.metrics  # its training curves
