"""Three datasets, three teachers, one 27-joint student, end to end (``jobs/distill.py``).

COCO-, MPII- and Halpe-26-format generated data, random-weight RTMPose teachers of each
dataset (MMPose config + checkpoint files), the joint and the distilled student on the
union skeleton (the paper's 21 joints and Halpe's six foot joints): the table has a column
per dataset and a unified AP per image domain, the distilled run logs one KD term per
teacher, and the student's checkpoint carries its 27 joints to ``predict``, ``export`` (the
ONNX file names them for ``predict``) and ``evaluate``, which need no flag to know them.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml
from conftest import SHORT

from unipose_ray.skeleton import HALPE26, UNIFIED, unified_skeleton

pytestmark = pytest.mark.ci

BODY = unified_skeleton(["coco", "mpii", "halpe26"])
TEACHERS = {"coco": ((64, 96), (1.63, 2.12)), "mpii": ((64, 64), (1.42, 1.42)),
            "halpe26": ((64, 96), (1.63, 2.12))}


@pytest.fixture(scope="module")
def body_run(ray_cluster, tmp_path_factory, load_job):
    """The comparison on 12 training and 3 validation images of each dataset."""
    import torch

    from unipose_ray.config import TeacherConfig
    from unipose_ray.config.settings import CodecConfig
    from unipose_ray.data.synthetic import SyntheticConfig, generate_dataset

    tmp = tmp_path_factory.mktemp("body")
    data = generate_dataset(tmp / "data", SyntheticConfig(
        seed=1, coco_train=12, coco_val=3, mpii_train=12, mpii_val=3, halpe26_train=12,
        halpe26_val=3, max_people=2), progress=False)
    write_random_teacher = load_job("bench_common").write_random_teacher
    torch.manual_seed(0)
    teachers = []
    for dataset, (size, sigma) in TEACHERS.items():
        teacher = TeacherConfig(name=dataset, dataset=dataset, train_size="t",
                                train_codec=CodecConfig(size, sigma), weight=0.2, num_cpus=0.5)
        written = write_random_teacher(teacher, teacher.train_codec, tmp)
        teachers.append({"name": dataset, "dataset": dataset, "config": written.config,
                         "checkpoint": written.checkpoint, "weight": 0.2, "num_cpus": 0.5})
    splits = {}
    for dataset in TEACHERS:
        for split in ("train", "val"):
            splits[f"{dataset}_{split}"] = {
                "ann_file": str(data.annotation_file(dataset, split)),
                "img_dir": str(data.images_dir(dataset, split)),
                **({"unified_ann_file": str(data.unified_val_file(dataset))}
                   if split == "val" else {})}
    config_file = tmp / "body.yaml"
    config_file.write_text(yaml.safe_dump(
        {"base": "demo", "generate": None, "data": splits, "teachers": teachers}))
    out = tmp / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = load_job("distill").main(["--config", str(config_file), "--output-dir",
                                            str(out), "run.name=body", *SHORT])
    return out, results, printed.getvalue(), data


def test_the_table_has_a_column_per_dataset_and_a_domain_per_image_set(body_run):
    _, results, printed, _ = body_run
    assert set(results) == {"teacher_coco", "teacher_mpii", "teacher_halpe26",
                            "student_joint_no_kd", "student_distilled"}
    for row, metrics in results.items():
        assert {"coco_AP", "mpii_PCKh", "halpe26_AP", "unified_AP", "score"} <= set(metrics), row
        for domain in ("coco", "mpii", "halpe26"):
            assert f"unified_AP_{domain}_domain" in metrics, (row, domain)
            assert f"transfer_PCK_{domain}_domain" in metrics, (row, domain)
    header = next(line for line in printed.splitlines() if line.startswith("model "))
    assert header.split()[1:] == ["coco_AP", "mpii_PCKh", "mpii_PCKh@0.1", "halpe26_AP",
                                  "unified_AP", "unified_AP_coco_domain",
                                  "unified_AP_mpii_domain", "unified_AP_halpe26_domain",
                                  "transfer_PCK", "score"]


def test_mlflow_has_one_kd_term_per_teacher_and_the_skeleton(body_run):
    from mlflow.tracking import MlflowClient

    out, *_ = body_run
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs(
        [e.experiment_id for e in client.search_experiments()])}
    distilled = runs["student_distilled"].data.metrics
    assert {"train/loss_kd_coco", "train/loss_kd_mpii", "train/loss_kd_halpe26"} <= set(distilled)
    assert not any(k.startswith("train/loss_kd") for k in runs["student_joint_no_kd"].data.metrics)
    for name in ("body", "student_distilled", "student_joint_no_kd"):  # parent and children
        params = runs[name].data.params
        assert params["skeleton"].split(",") == list(BODY.names), name
        assert params["datasets"] == "coco,mpii,halpe26", name


def test_the_student_carries_its_27_joints_to_predict_export_and_evaluate(body_run, load_job,
                                                                               tmp_path):
    import torch

    out, _, _, data = body_run
    best = out / "models" / "body" / "best.pth"
    meta = torch.load(best, map_location="cpu", weights_only=False)["meta"]["dataset_meta"]
    names = [meta["keypoint_id2name"][i] for i in sorted(meta["keypoint_id2name"])]
    assert tuple(names) == BODY.names and BODY.names[:21] == UNIFIED.names
    assert BODY.names[21:] == HALPE26.names[20:]

    predict = load_job("predict").main(["--checkpoint", str(best),
                                        str(data.images_dir("halpe26", "val")),
                                        "--out", str(tmp_path / "preds")])
    written = json.loads((tmp_path / "preds" / "keypoints.json").read_text())
    assert written["keypoint_names"] == list(BODY.names)
    assert predict is not None

    onnx = tmp_path / "body.onnx"
    load_job("export").main(["--checkpoint", str(best), "--out", str(onnx), "--max-crops", "4"])
    exported = load_job("predict").main(["--checkpoint", str(onnx),
                                         str(data.images_dir("coco", "val")),
                                         "--out", str(tmp_path / "onnx_preds")])
    assert exported is not None  # the export names its joints: predict reads 27 from it
    names = json.loads((tmp_path / "onnx_preds" / "keypoints.json").read_text())["keypoint_names"]
    assert names == list(BODY.names)

    metrics = load_job("evaluate").main([
        "--checkpoint", str(best), "--halpe26-ann", str(data.annotation_file("halpe26", "val")),
        "--halpe26-img-dir", str(data.images_dir("halpe26", "val")), "--halpe26-unified-ann",
        str(data.unified_val_file("halpe26")), "--no-flip-test"])
    assert {"halpe26_AP", "unified_AP_halpe26_domain", "transfer_PCK_halpe26_domain"} <= set(metrics)


def test_generated_files_label_the_feet_where_the_dataset_has_them(body_run):
    _, _, _, data = body_run
    coco = json.loads(Path(data.unified_val_file("coco")).read_text())
    assert len(coco["categories"][0]["keypoints"]) == BODY.num_keypoints
