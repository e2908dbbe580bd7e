"""Fixtures of the end-to-end tiers (``ci``, ``bench``, ``chaos``).

One Ray for the whole session (its dashboard on a free port, as many GPUs as CUDA sees),
the suite's tiny dataset at a few steps' settings, the runs several tests read (the demo's
comparison, the teacher-logit cache), and after each module a guard: nothing the module
started (Train workers and controllers, teacher actors, Tune trials, Ray Data actors,
placement groups) may be left on the shared Ray.
"""

from __future__ import annotations

import contextlib
import gc
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest
from helpers import free_port, in_repo
from runs import final_state, leftovers

from unipose_ray.config import DistillConfig, load_config

if TYPE_CHECKING:
    from unipose_ray.teacher_cache.build import BuildReport
    from unipose_ray.workflows.training import PreparedData

SHORT = ["optim.batch_size=8", "optim.epochs=2", "optim.warmup_steps=2",
         "run.val_every_epochs=1", "run.val_flip_test=false"]
"""A few steps of everything: 2 epochs of ~9 steps on the tiny dataset, validated after each."""

class SharedRay(NamedTuple):
    """The session's Ray, by its dashboard's URL: the state API's address (without one,
    the state API refuses to guess when another Ray runs on the machine)."""

    dashboard: str


@pytest.fixture(scope="session")
def ray_cluster() -> SharedRay:
    """The session's local Ray: 8 logical CPUs (a run's student, crops and teacher actors
    time-sliced on 2 cores), the GPUs CUDA sees, the dashboard (the state API the tests
    read) on a free port; worker output reaches the test's captured output."""
    import ray
    import torch

    from unipose_ray.runtime.distributed import start_local_ray
    from unipose_ray.runtime.output import filter_worker_output

    global _shared
    port = free_port()
    start_local_ray(num_cpus=8, num_gpus=torch.cuda.device_count(), include_dashboard=True,
                    dashboard_port=port, log_to_driver=True)
    filter_worker_output()
    _shared = SharedRay(f"http://127.0.0.1:{port}")
    try:
        yield _shared
    finally:
        _shared = None
        ray.shutdown()


_shared: SharedRay | None = None


@pytest.fixture(scope="module", autouse=True)
def leak_guard(request):
    """After the module: everything it started on the shared Ray is gone (actors die and
    groups are removed asynchronously: up to a minute)."""
    yield
    if _shared is None:  # no test has started the shared Ray yet
        return
    # a failed run's exception keeps its frames, and their actor handles, in reference
    # cycles: an actor lives while a handle does
    gc.collect()
    if left := leftovers(_shared.dashboard, wait_s=60):
        pytest.fail(f"{request.module.__name__} left these on the shared Ray: {left}")


@pytest.fixture(scope="session")
def tiny(tiny_dataset) -> list[str]:
    """Overrides that put any preset on the suite's tiny dataset (its files, as given data:
    nothing generated again) at a few steps' settings."""
    files = []
    for dataset in ("coco", "mpii"):
        for split in ("train", "val"):
            value = {"ann_file": tiny_dataset.annotation_file(dataset, split),
                     "img_dir": tiny_dataset.images_dir(dataset, split)}
            if split == "val":
                value["unified_ann_file"] = tiny_dataset.unified_val_file(dataset)
            files.append(f"data.{dataset}_{split}={{"
                         + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}")
    return ["generate=null", *files, *SHORT]


@dataclass(frozen=True)
class Comparison:
    """The demo's comparison as ``jobs/distill.py`` runs it, on the tiny dataset.

    Attributes:
        config: the config as run (data and backbone resolved).
        out: its output folder.
        results: what it returned (``row -> metrics``).
        printed: what it printed.
        tracking_uri, artifacts: the MLflow server it logged to, and the server's
            artifact folder.
        joint_state: the joint student's final training state (its last checkpoint's
            ``state.pt``): the uninterrupted run ``test_training.py``'s killed run ends as.
        argv: the job's command line.
    """

    config: DistillConfig
    out: Path
    results: dict[str, dict[str, float]]
    printed: str
    tracking_uri: str
    artifacts: Path
    joint_state: dict
    argv: list[str]


COMPARISON = ["pretrain.epochs=1", "pretrain.cpus_per_worker=1", "teacher_epochs=1",
              "optim.ema=true", "tracking.experiment=comparison"]


@pytest.fixture(scope="session")
def comparison(ray_cluster, tiny, mlflow_server, tmp_path_factory, load_job) -> Comparison:
    """``jobs/distill.py --config demo_self_trained`` end to end: a pretrained backbone, two
    teachers trained here, the joint student and the distilled student (online teacher
    services) side by side, the table and the claim, tracked on a real ``mlflow server``."""
    from unipose_ray.workflows.training import ensure_backbone, prepare_data

    uri, server_root = mlflow_server
    artifacts = server_root / "artifacts"  # its --artifacts-destination
    out = tmp_path_factory.mktemp("comparison")
    config = load_config("demo_self_trained", [*tiny, *COMPARISON, f"tracking.tracking_uri={uri}"])
    argv = ["--config", "demo_self_trained", "--output-dir", str(out), "--tracking-uri", uri,
            *tiny, *COMPARISON]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = load_job("distill").main(argv)
    config, data = prepare_data(config, out)
    config = ensure_backbone(config, data, out)  # the pretrained one, reused
    joint = f"{config.run.name}_joint"
    return Comparison(config, out, results, printed.getvalue(), uri, artifacts,
                      final_state(out / "models" / joint, joint), argv)


@pytest.fixture(scope="session")
def cache_overrides(tiny) -> list[str]:
    """``demo`` (the released teachers) with a two-view cache, rotations and scales in
    every crop (so a replayed crop is not the plain box), small shards."""
    return [*tiny, "teacher_cache.views=2", "teacher_cache.shard_records=10",
            "teacher_cache.batch_size=8", "augment.rotate_prob=1.0",
            "augment.scale_range=[0.8,1.2]"]


class BuiltCache(NamedTuple):
    """A cache built once, and the config overrides that describe it."""

    config: DistillConfig
    data: PreparedData
    specs: dict
    records_path: str
    report: BuildReport
    overrides: list[str]


@pytest.fixture(scope="session")
def basis_cache(ray_cluster, cache_overrides, tmp_path_factory) -> BuiltCache:
    """A basis-format cache of the tiny dataset with more components than instance-views
    (the basis spans every view: decoded logits are the live teachers' up to fp16), built
    once by ``ensure_cache`` (the build's report kept); the cache tests and the sweep read
    it."""
    import unipose_ray.teacher_cache.build as cache_build
    from unipose_ray.workflows.training import (
        check_teachers,
        ensure_backbone,
        prepare_data,
        resolve_teachers,
    )

    out = tmp_path_factory.mktemp("basis_cache")
    overrides = [*cache_overrides, "teacher_cache.topk=0", "teacher_cache.components=512",
                 "teacher_cache.calibration=512", f"teacher_cache.uri={out / 'cache'}"]
    with in_repo():
        config, data = prepare_data(load_config("demo", overrides), out)
        config = resolve_teachers(ensure_backbone(config, data, out))
    specs = check_teachers(config)
    records_path = data.train_records(sorted(data.train), out / "records")
    reports = []  # ensure_cache, as the jobs call it: it finds no cache and builds one
    build = cache_build.build_cache
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache_build, "build_cache", lambda *a, **k: reports.append(build(*a, **k)))
        cache_build.ensure_cache(config, records_path, specs)
    (report,) = reports
    return BuiltCache(config, data, specs, records_path, report, overrides)
