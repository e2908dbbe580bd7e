"""The demo's comparison end to end (the shared ``comparison`` run, ``tests/e2e/conftest.py``):
a backbone pretrained here, two teachers trained here, the joint student without KD and the
distilled student side by side, the cross-dataset table with the paper's claim checked on
it, MLflow's parent and child runs on a real server."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import cv2
import pytest
from mlflow.tracking import MlflowClient

from unipose_ray.evaluation.cross_dataset import TRANSFER_COLUMNS, format_table
from unipose_ray.tracking.runs import PARENT_TAG
from unipose_ray.workflows.distill import CLAIM_METRICS, DISTILLED, JOINT, claim_summary

pytestmark = pytest.mark.ci

ROWS = {"teacher_coco", "teacher_mpii", JOINT, DISTILLED}
CHILDREN = ROWS | {"pretrain_backbone"}


def _equal(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


def _runs(comparison):
    """The comparison's parent run and its children by name."""
    client = MlflowClient(comparison.tracking_uri)
    experiment = client.get_experiment_by_name(comparison.config.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("unipose_ray.kind") == "comparison"]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    named = {r.info.run_name: r for r in children}
    assert len(named) == len(children), [r.info.run_name for r in children]  # one run a model
    return client, parent, named


def test_every_model_gets_a_row_and_the_claim_is_checked_on_the_table(comparison):
    results, out = comparison.results, comparison.out
    assert set(results) == ROWS
    for row, metrics in results.items():
        assert set(TRANSFER_COLUMNS) <= set(metrics), row
        assert 0 <= metrics["score"] <= 100, row
    written = json.loads((out / "results.json").read_text())
    assert set(written) == ROWS
    for row, metrics in results.items():
        assert all(_equal(written[row][k], v) for k, v in metrics.items()), row

    table, claim = format_table(results, TRANSFER_COLUMNS), claim_summary(results)
    assert (out / "results.txt").read_text() == f"{table}\n\n{claim}\n"
    assert table in comparison.printed and claim in comparison.printed
    assert f"results written to {out / 'results.json'}" in comparison.printed

    # the claim's margins are the table's differences (AP in points), its verdicts their signs
    joint_line, teacher_line = claim.splitlines()
    margins = dict(re.findall(r"(\w+) ([+-]\d+\.\d\d)", joint_line.split("->")[0]))
    d, j = results[DISTILLED], results[JOINT]
    for metric in CLAIM_METRICS:
        scale = 100 if metric.endswith("AP") else 1
        assert float(margins[metric]) == pytest.approx(scale * (d[metric] - j[metric]), abs=0.006)
    helps = all(d[m] > j[m] for m in CLAIM_METRICS)
    assert joint_line.endswith("distillation helps" if helps else "NOT better on all of them")
    over = {row: float(v) for row, v in re.findall(r"(teacher_\w+) ([+-]\d+\.\d\d)", teacher_line)}
    assert over == pytest.approx({r: d["score"] - results[r]["score"] for r in over}, abs=0.006)
    assert set(over) == {"teacher_coco", "teacher_mpii"}

    for row in ROWS:  # a picture of each model's skeletons on validation images
        picture = cv2.imread(str(out / "pictures" / f"{row}.png"))
        assert picture is not None and picture.shape[0] >= 256, row


def test_mlflow_has_the_comparison_as_a_parent_and_each_model_as_its_child(comparison):
    import ray.train

    client, parent, children = _runs(comparison)
    assert parent.info.status == "FINISHED"
    assert {"results.json", "results.txt", "pictures"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    assert set(children) == CHILDREN
    assert all(run.info.status == "FINISHED" for run in children.values())
    for row in ROWS:  # each row's final metrics, as in the table
        assert _equal(children[row].data.metrics["final/score"], comparison.results[row]["score"])

    config = comparison.config
    pretrained = str(comparison.out / "models" / f"{config.run.name}_pretrain" / "pretrained.pth")
    for name in (JOINT, DISTILLED):  # the students' training runs
        run = children[name]
        params, metrics = run.data.params, run.data.metrics
        assert params["loss.w_gt"] == str(config.loss.w_gt)
        assert params["student.backbone_checkpoint"] == pretrained  # both start from it
        assert {"train/loss", "train/loss_gt", "val/coco_AP", "val/mpii_PCKh",
                "val/unified_AP", "val/score"} <= set(metrics)
        history = client.get_metric_history(run.info.run_id, "val/score")
        assert len(history) == config.optim.epochs  # validated once an epoch ...
        result = ray.train.Result.from_path(str(
            comparison.out / "models" / run.data.tags["unipose_ray.run_name"] / "ray_results"
            / run.data.tags["unipose_ray.run_name"]))
        assert max(m.step for m in history) == result.metrics["train/step"]  # ... the last at the end
        kd = {"train/loss_kd_coco", "train/loss_kd_mpii"}
        if name == DISTILLED:
            assert params["teachers.1.weight"] == str(config.teachers[1].weight)
            assert all(math.isfinite(metrics[k]) and metrics[k] > 0 for k in kd)
        else:
            assert not kd & set(metrics) and params["teachers"] == "[]"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "checkpoints", "val"} <= artifacts
        assert any(a.path.endswith(".png") for a in client.list_artifacts(run.info.run_id, "val"))
    assert children["pretrain_backbone"].data.metrics["train/loss_heatmap"] > 0
    # proxied artifacts: uploaded through the server into its --artifacts-destination
    stored = {p.name for p in (comparison.artifacts / parent.info.experiment_id).rglob("*")}
    assert {"config.yaml", "best.pth", "results.json"} <= stored


def test_every_model_is_an_mmpose_model_and_the_backbone_is_trained_once(comparison):
    from unipose_ray.models import build_from_config, build_rtmpose
    from unipose_ray.models.checkpoints import load_weights
    from unipose_ray.workflows.training import ensure_backbone, prepare_data

    config, models = comparison.config, comparison.out / "models"
    name = config.run.name
    for folder in (name, f"{name}_joint"):
        student = build_from_config(models / folder / "model_config.py", models / folder / "best.pth")
        assert student.spec.num_keypoints == 21
        assert tuple(student.spec.input_size) == config.student.codec.input_size
    for teacher, keypoints in (("coco", 17), ("mpii", 16)):
        folder = models / f"{name}_teacher_{teacher}"
        model = build_from_config(folder / "model_config.py", folder / "best.pth")
        wanted = next(t for t in config.teachers if t.name == teacher)
        codec = wanted.train_codec or config.student.codec
        assert model.spec.num_keypoints == keypoints
        assert tuple(model.spec.input_size) == codec.input_size

    path = Path(config.student.backbone_checkpoint)
    assert path == models / f"{name}_pretrain" / "pretrained.pth"
    codec = config.student.codec
    heatmap = build_rtmpose("t", 17, codec.input_size, codec.sigma, head="heatmap")
    load_weights(heatmap, path)  # strict: a whole MMPose HeatmapHead model on COCO joints
    written = path.stat().st_mtime_ns
    again, data = prepare_data(replace(config, student=replace(
        config.student, backbone_checkpoint=None)), comparison.out)
    assert ensure_backbone(again, data, comparison.out).student.backbone_checkpoint == str(path)
    assert path.stat().st_mtime_ns == written  # reused, not trained again


def test_the_finished_comparison_started_again_with_another_weight_is_refused(
        comparison, load_job, capsys):
    """The silent wrong result of issue 25: a finished run resumed with other weights
    trained nothing and reported the old table as the new settings'."""
    results = json.loads((comparison.out / "results.json").read_text())
    with pytest.raises(SystemExit) as refused:
        load_job("distill").main([*comparison.argv, "loss.w_gt=0.9"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "  loss.w_gt: 0.45 -> 0.9\n" in err and "--resume-anyway" in err
    assert json.loads((comparison.out / "results.json").read_text()) == results  # untouched
