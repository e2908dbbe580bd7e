"""The shipped cluster files: valid for the tools that read them, and sized for ``paper``.

The launcher YAML is validated against the schema inside the installed ray package (what
``ray up`` checks); the KubeRay manifests are parsed and checked for the fields KubeRay
needs; all of them must hold the GPUs the ``paper`` preset asks for and name the image
``cluster/Dockerfile`` builds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import ray
import yaml

from unipose_ray.config import load_config
from unipose_ray.train.driver import gpus_wanted

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
IMAGE = "unipose-ray:latest"


@pytest.fixture(scope="module")
def paper_gpus() -> float:
    return gpus_wanted(load_config("paper"))


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _validate_launcher_config(config: dict) -> None:
    """What ``ray up`` does before anything else: defaults merged, then the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


def test_the_launcher_config_is_valid_and_can_grow_to_the_paper_run(paper_gpus):
    config = _load("ray-cluster.yaml")
    _validate_launcher_config(config)  # raises on any misfit
    node_types = config["available_node_types"]
    most = sum(t.get("resources", {}).get("GPU", 0) * t.get("max_workers", 0)
               for t in node_types.values())
    assert most >= paper_gpus and config["max_workers"] >= paper_gpus
    assert config["docker"]["image"] == IMAGE


def test_the_launcher_schema_check_catches_a_misspelt_key():
    import jsonschema

    config = _load("ray-cluster.yaml")
    config["available_node_types"]["gpu_worker"]["max_worker"] = 5  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _validate_launcher_config(config)


def _cluster_spec_problems(spec: dict, paper_gpus: float) -> list[str]:
    """What KubeRay (and the paper run) would miss in a RayCluster spec."""
    problems = []
    if spec.get("rayVersion") != ray.__version__:
        problems.append(f"rayVersion {spec.get('rayVersion')} is not the locked {ray.__version__}")
    head = spec["headGroupSpec"]["template"]["spec"]["containers"]
    if not head or head[0].get("image") != IMAGE:
        problems.append("the head container must run " + IMAGE)
    gpus = 0
    for group in spec.get("workerGroupSpecs", []):
        for key in ("groupName", "maxReplicas", "template"):
            if key not in group:
                problems.append(f"worker group lacks {key}")
        (container,) = group["template"]["spec"]["containers"]
        if container.get("image") != IMAGE:
            problems.append(f"worker group {group['groupName']} does not run {IMAGE}")
        per_pod = float(container["resources"]["limits"].get("nvidia.com/gpu", 0))
        gpus += per_pod * group["maxReplicas"]
        if group.get("minReplicas", 0) > group.get("replicas", 0) or \
                group.get("replicas", 0) > group["maxReplicas"]:
            problems.append(f"worker group {group['groupName']}: min <= replicas <= max broken")
    if gpus < paper_gpus:
        problems.append(f"at most {gpus:g} GPUs, the paper run needs {paper_gpus:g}")
    if gpus > 0 and not spec.get("enableInTreeAutoscaling"):
        problems.append("GPU groups start at zero: enableInTreeAutoscaling must be on")
    return problems


def test_the_kuberay_raycluster_fits_the_paper_run(paper_gpus):
    manifest = _load("kuberay-raycluster.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    assert manifest["metadata"]["name"]
    assert _cluster_spec_problems(manifest["spec"], paper_gpus) == []


def test_the_kuberay_rayjob_submits_the_paper_run(paper_gpus):
    manifest = _load("kuberay-rayjob.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    spec = manifest["spec"]
    assert spec["entrypoint"].startswith("python jobs/distill.py --config paper")
    assert "--tracking-uri http" in spec["entrypoint"]  # one MLflow writer across nodes
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"] == "/app"  # the image's copy
    assert _cluster_spec_problems(spec["rayClusterSpec"], paper_gpus) == []


def test_the_checks_catch_a_cluster_too_small_for_the_paper_run(paper_gpus):
    spec = _load("kuberay-raycluster.yaml")["spec"]
    spec["workerGroupSpecs"][0]["maxReplicas"] = 2
    spec["workerGroupSpecs"][0]["replicas"] = 0
    assert any("the paper run needs" in p for p in _cluster_spec_problems(spec, paper_gpus))


def test_the_dockerfile_builds_the_locked_environment_into_the_named_image():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"uv sync --locked", text) and "COPY pyproject.toml uv.lock" in text
    assert f"-t {IMAGE}" in text  # the build command documented in it
    python = re.search(r"FROM python:(\d+\.\d+)", text).group(1)
    requires = re.search(r'requires-python = ">=(\d+\.\d+)', (CLUSTER.parent / "pyproject.toml")
                         .read_text()).group(1)
    assert tuple(map(int, python.split("."))) >= tuple(map(int, requires.split(".")))
