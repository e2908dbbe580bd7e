"""What the driver decides before a run starts: GPUs (with an autoscaler), placement of
fractional teachers, storage URIs. No Ray instance: the cluster's answers are faked."""

from __future__ import annotations

from dataclasses import replace

import pytest

from unipose_ray.config import TeacherConfig, load_config
from unipose_ray.paths import resolve_path
from unipose_ray.teachers.service import pack_gpu_bundles
from unipose_ray.train import driver
from unipose_ray.train.job import TrainJob


@pytest.fixture
def paper():
    return load_config("paper")


def fake_cluster(monkeypatch, gpus_over_time: list[float], autoscaler_max: float | None):
    import ray

    answers = iter(gpus_over_time)
    last = [gpus_over_time[0]]

    def cluster_resources():
        last[0] = next(answers, last[0])
        return {"CPU": 8.0, "GPU": last[0]} if last[0] else {"CPU": 8.0}

    monkeypatch.setattr(ray, "cluster_resources", cluster_resources)
    monkeypatch.setattr(driver, "max_cluster_gpus", lambda: autoscaler_max)


def test_the_paper_preset_needs_five_gpus(paper):
    assert driver.gpus_wanted(paper) == 5  # 4 workers + 2 x 0.5 teachers


def test_gpus_the_autoscaler_can_add_count(monkeypatch, paper, capsys):
    fake_cluster(monkeypatch, [0], autoscaler_max=8)
    driver.check_resources(paper)  # no error: the autoscaler brings them
    assert "autoscaler up to 8" in capsys.readouterr().out

    fake_cluster(monkeypatch, [0], autoscaler_max=4)
    with pytest.raises(RuntimeError, match=r"asks for 5 GPU\(s\).*cluster has 0 and its "
                                            r"autoscaler at most 4"):
        driver.check_resources(paper, wait_s=0)  # (the preset would wait 900 s for nodes)


def test_without_published_limits_it_waits_for_nodes_then_refuses(monkeypatch, paper):
    fake_cluster(monkeypatch, [0, 0, 5], autoscaler_max=None)
    driver.check_resources(paper, wait_s=5, poll_s=0.01)  # the third poll has the GPUs

    fake_cluster(monkeypatch, [0], autoscaler_max=None)
    with pytest.raises(RuntimeError, match=r"cluster has 0 after waiting 0.05 s"):
        driver.check_resources(paper, wait_s=0.05, poll_s=0.01)
    with pytest.raises(RuntimeError, match=r"cluster has 0; lower run.num_workers"):
        driver.check_resources(paper, wait_s=0)


def test_fractional_teachers_share_one_gpu_bundle():
    half = [TeacherConfig("coco", "coco", num_gpus=0.5, num_cpus=2),
            TeacherConfig("mpii", "mpii", num_gpus=0.5, num_cpus=1)]
    bundles, where = pack_gpu_bundles(tuple(half))
    assert bundles == [{"GPU": 1.0, "CPU": 3.0}]
    assert where == {("coco", 0): 0, ("mpii", 0): 0}

    # three 0.4 replicas: two share a GPU, the third gets its own; whole GPUs and CPU
    # teachers are left to Ray
    mixed = (TeacherConfig("coco", "coco", num_gpus=0.4, replicas=3),
             TeacherConfig("mpii", "mpii", num_gpus=1), TeacherConfig("aic", "coco"))
    bundles, where = pack_gpu_bundles(mixed)
    assert [b["GPU"] for b in bundles] == [1.0, 1.0]
    assert where == {("coco", 0): 0, ("coco", 1): 0, ("coco", 2): 1}

    # teachers asking for different custom resources do not share a bundle
    tagged = (TeacherConfig("coco", "coco", num_gpus=0.5, resources={"teacher": 1}),
              TeacherConfig("mpii", "mpii", num_gpus=0.5))
    bundles, _ = pack_gpu_bundles(tagged)
    assert bundles == [{"GPU": 1.0, "CPU": 1.0, "teacher": 1.0}, {"GPU": 1.0, "CPU": 1.0}]


def test_storage_uris_pass_through_and_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config("demo")
    job = TrainJob(config, "train.parquet", (), output_dir="out/run")
    assert driver.storage_path(job) == str(tmp_path / "out" / "run" / "ray_results")
    for uri in ("s3://bucket/runs", "gs://bucket/runs", "abfs://container@account/runs"):
        job = replace(job, config=replace(config, run=replace(config.run, storage_path=uri)))
        assert driver.storage_path(job) == uri
    job = replace(job, config=replace(config, run=replace(config.run, storage_path="runs")))
    assert driver.storage_path(job) == str(tmp_path / "runs")
    assert resolve_path("~/x") == str(tmp_path.home() / "x")


def test_files_a_node_cannot_see_are_refused_on_a_multi_node_cluster(monkeypatch, tmp_path):
    from unipose_ray.evaluation.cross_dataset import EvalSet

    config = load_config("demo")
    job = TrainJob(config, "train.parquet", (EvalSet("coco", str(tmp_path / "coco_val.parquet"),
                                                     str(tmp_path / "val.json")),),
                   output_dir=str(tmp_path / "out"), tracking_uri=f"sqlite:///{tmp_path}/m.db")
    paths = driver.shared_paths(job)
    assert paths["--output-dir"] == str(tmp_path / "out")
    assert paths["the MLflow SQLite store (--tracking-uri)"] == f"{tmp_path}/m.db"
    assert paths["coco validation ann_file"] == str(tmp_path / "val.json")
    assert paths["teachers.0.checkpoint"].endswith("rtmpose-t_demo-coco_96x128.pth")

    monkeypatch.setattr(driver, "nodes_missing", lambda p: {f"{tmp_path}/m.db": ["f00dcafe1234"]})
    with pytest.raises(RuntimeError, match=r"(?s)some cannot see.*MLflow SQLite store.*m\.db "
                                           r"\(not on node\(s\) f00dcafe\).*mlflow server"):
        driver.check_shared(job)
    monkeypatch.setattr(driver, "nodes_missing", lambda p: {})
    driver.check_shared(job)  # a one-node cluster, or every node sees them


def test_each_training_worker_starts_its_round_robin_at_its_own_replica():
    from unipose_ray.teachers.service import TeacherPool

    class Replica:
        def __init__(self, name):
            self.name, self.logits = name, self

        def remote(self, *args):
            return self.name

    pool = TeacherPool.__new__(TeacherPool)  # its replicas without Ray actors
    pool.replicas, pool._calls = [Replica(0), Replica(1)], 0
    # workers step in lockstep: without the offset both would ask replica 0, then 1, ...
    assert [pool.starting_at(rank).submit(None, None, None) for rank in range(2)] == [0, 1]
    worker = pool.starting_at(1)
    assert [worker.submit(None, None, None) for _ in range(4)] == [1, 0, 1, 0]
    assert pool._calls == 0  # each worker has its own copy


def test_a_job_called_where_ray_runs_keeps_that_ray_and_refuses_another_address(monkeypatch):
    import ray

    from unipose_ray.runtime import distributed
    from unipose_ray.runtime import output as ray_output

    started = []

    class Context:
        gcs_address = "127.0.0.1:6400"

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: started.append(kwargs))
    monkeypatch.setattr(ray, "get_runtime_context", Context)
    monkeypatch.setattr(distributed, "start_local_ray", lambda **kwargs: started.append(kwargs))
    monkeypatch.setattr(ray_output, "filter_worker_output", lambda: None)
    distributed.init_ray()  # a test's or a notebook's Ray: used as it is
    assert started == []
    with pytest.raises(RuntimeError, match=r"already has a Ray \(127\.0\.0\.1:6400\); "
                                           r"--address ray://head:10001 cannot"):
        distributed.init_ray("ray://head:10001")
    assert started == []


class _Trainer:
    """A trainer whose ``fit`` raises the next of ``errors``, then returns ``"done"``."""

    def __init__(self, errors: list):
        self.errors = errors

    def fit(self):
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_a_worker_lost_inside_the_controllers_call_is_fitted_again_within_max_failures():
    """Ray 2.60 reports a training worker that dies while its controller calls it (a group
    restarting) as a ControllerError it does not retry; the run is fitted again from its
    checkpoint, counted against ``run.max_failures``; other controller errors still raise."""
    import ray.exceptions
    import ray.train

    def lost():
        return ray.train.ControllerError(ray.exceptions.ActorDiedError())

    made = []

    def factory(errors):
        trainer = _Trainer(errors)
        return lambda: made.append(trainer) or trainer

    assert driver.fit_surviving_controller_errors(factory([lost(), lost()]), 2, "r") == "done"
    assert len(made) == 3
    with pytest.raises(ray.train.ControllerError):
        driver.fit_surviving_controller_errors(factory([lost(), lost()]), 1, "r")
    assert driver.fit_surviving_controller_errors(factory([lost()] * 5), -1, "r") == "done"
    with pytest.raises(ray.train.ControllerError, match="boom"):
        driver.fit_surviving_controller_errors(
            factory([ray.train.ControllerError(RuntimeError("boom"))]), 5, "r")
