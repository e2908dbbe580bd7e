"""Each dataset's AP/AR against MMPose's ``CocoMetric`` configured as MMPose's configs
configure it: the settings read from the installed configs, the sigmas from MMPose's own
dataset files, the GT from a file, as its test loop runs it. Also the flat names and the
GT subset of a capped validation set (CrowdPose's crowd indices kept)."""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import replace
from pathlib import Path

import mmpose
import numpy as np
import pytest

from unipose_ray.evaluation import names
from unipose_ray.evaluation.coco_gt import coco_gt_subset
from unipose_ray.evaluation.coco_metric import (
    KeypointPrediction,
    coco_keypoint_metrics,
    dataset_keypoint_metrics,
    evaluate_coco,
    evaluate_coco_cocometric,
)
from unipose_ray.evaluation.coco_predictions import stack_predictions
from unipose_ray.evaluation.dataset_metrics import (
    DATASET_METRICS,
    MMPOSE_STAT_NAMES,
    STABLE_SUFFIXES,
    dataset_metric_names,
    metric_settings,
)
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import DATASET_SETS

MIM_CONFIGS = Path(mmpose.__file__).parent / ".mim" / "configs"
DATASETS = sorted(DATASET_METRICS)
CROWD_INDICES = (0.0, 0.1, 0.2, 0.35, 0.5, 0.79, 0.8, 0.9, 1.0)  # both boundaries included


# --- MMPose's side: its configs, its dataset files, its CocoMetric ------------------------


def _config(path: str):
    from mmengine.config import Config

    return Config.fromfile(str(MIM_CONFIGS / path))


def _cocometric():
    import_mmpose()
    from mmpose.evaluation.metrics import CocoMetric

    return CocoMetric


def _config_kwargs(dataset: str) -> dict:
    """The dataset's config's ``CocoMetric`` arguments besides ``ann_file``."""
    evaluator = dict(_config(metric_settings(dataset).config).val_evaluator)
    assert evaluator.pop("type") == "CocoMetric"
    evaluator.pop("ann_file")
    return evaluator


def _mmpose_meta(dataset: str) -> dict:
    """``dataset_meta`` from MMPose's ``configs/_base_/datasets/<dataset>.py``."""
    import_mmpose()
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    return parse_pose_metainfo({"from_file": str(MIM_CONFIGS / f"_base_/datasets/{dataset}.py")})


def _sample(p: KeypointPrediction) -> dict:
    """What a top-down model hands ``CocoMetric.process`` for one box."""
    instances = {"keypoints": np.asarray(p.keypoints)[None],
                 "keypoint_scores": np.asarray(p.keypoint_scores)[None],
                 "bbox_scores": np.array([p.bbox_score], dtype=np.float32)}
    if p.bbox is not None:
        xywh = np.asarray(p.bbox, dtype=np.float64)
        instances["bboxes"] = np.concatenate([xywh[:2], xywh[:2] + xywh[2:]])[None]
    gt_instances = {}
    if p.area is not None:  # the crop scale's product is the area: (area, 1)
        gt_instances["bbox_scales"] = np.array([[p.area, 1]], dtype=np.asarray(p.area).dtype)
    return {"id": p.instance_id, "img_id": p.image_id, "pred_instances": instances,
            "gt_instances": gt_instances}


def _mmpose_metric(dataset: str, ann_file: Path, preds: list[KeypointPrediction],
                   **overrides) -> dict[str, float]:
    """MMPose's ``CocoMetric`` as the dataset's config builds it, on the GT file, fed in
    dataloader-sized batches; its stat names without the prefix."""
    metric = _cocometric()(ann_file=str(ann_file), **{**_config_kwargs(dataset), **overrides})
    metric.dataset_meta = _mmpose_meta(dataset)
    samples = [_sample(p) for p in preds]
    for start in range(0, len(samples), 8):
        metric.process([], samples[start : start + 8])
    results = metric.evaluate(size=len(samples))
    return {name.split("/", 1)[1]: value for name, value in results.items()}


# --- Random and adversarial inputs -----------------------------------------------------


def _synthetic_gt(rng, dataset: str, images: int = 36) -> dict:
    """Zero to three people per image, some joints unlabelled or occluded, a few crowd
    regions; CrowdPose's crowd indices (every level, both boundaries) and ``num_keypoints``
    of visible joints; a GT ``area`` only where the dataset's metric uses it."""
    settings = metric_settings(dataset)
    k = settings.keypoint_set.num_keypoints
    crowd = settings.iou_type == "keypoints_crowd"
    entries, anns = [], []
    for image_id in range(1, images + 1):
        entry = {"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480}
        if crowd:
            entry["crowdIndex"] = CROWD_INDICES[image_id % len(CROWD_INDICES)]
        entries.append(entry)
        for _ in range(0 if image_id % 7 == 0 else rng.integers(1, 4)):  # some without people
            x, y, w, h = rng.uniform(0, 300), rng.uniform(0, 200), *rng.uniform(30, 250, 2)
            v = rng.choice([0.0, 1.0, 2.0], size=k, p=[0.2, 0.2, 0.6])
            if rng.random() < 0.1:
                v[v == 2] = 1  # occluded only: labelled, yet CrowdPose ignores the person
            xyv = np.c_[rng.uniform([x, y], [x + w, y + h], (k, 2)), v]
            xyv[v == 0, :2] = 0
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                   "iscrowd": int(rng.random() < 0.05), "bbox": [x, y, w, h],
                   "keypoints": xyv.ravel().tolist(),
                   "num_keypoints": int(np.count_nonzero(v == 2 if crowd else v > 0))}
            if settings.use_area:
                ann["area"] = w * h * 0.6
            anns.append(ann)
    names_ = list(settings.keypoint_set.names)
    return {"images": entries, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": names_}]}


def _predictions(gt: dict, rng) -> list[KeypointPrediction]:
    """Boxes around the GT people, by image: none, one, a few with a repeated id, many
    near-duplicates (OKS-NMS), identical repeats with tied scores at the 0.2 threshold,
    all-zero or partly zero keypoint scores; false positives on images without people;
    tied box scores; areas missing for some."""
    k = len(gt["categories"][0]["keypoints"])
    near = np.float32(0.2) + np.array([-1, 0, 1], np.float32) * np.spacing(np.float32(0.2))
    people = [(a["image_id"], np.reshape(a["keypoints"], (k, 3))[:, :2], a["bbox"])
              for a in gt["annotations"]]
    empty = {im["id"] for im in gt["images"]} - {a["image_id"] for a in gt["annotations"]}
    people += [(i, rng.uniform(50, 400, (k, 2)), [60.0, 60.0, 120.0, 200.0])
               for i in sorted(empty) for _ in range(2)]
    preds = []
    for image_id, joints, box in people:
        mode = image_id % 6
        for j in range({0: 0, 1: 1, 2: 3, 3: 25, 4: 6, 5: 2}[mode]):
            kpts = joints + rng.normal(scale=rng.choice([0.5, 4.0, 40.0]), size=joints.shape)
            scores = rng.uniform(0, 1, k)
            if mode == 4:
                kpts, scores = kpts * 0 + joints.mean(0), rng.choice(near, k)
            if mode == 5:
                scores[: k if j == 0 else k // 2] = 0.0  # all zero: COCOeval drops it
            scores[rng.random(k) < 0.15] = near[1]
            xywh = np.asarray(box) + rng.normal(scale=3.0, size=4)
            preds.append(KeypointPrediction(
                image_id=image_id,
                instance_id=len(preds) - 1 if j == 2 else len(preds),  # a repeated id
                keypoints=kpts.astype(np.float32),
                keypoint_scores=scores.astype(np.float32),
                bbox_score=np.float32(np.round(rng.uniform(0.1, 1), 1)),
                bbox=xywh.astype(np.float32),
                area=None if j % 7 == 3 else np.float32(xywh[2] * xywh[3] * 1.5625),
            ))
    return [preds[i] for i in rng.permutation(len(preds))]


def _perfect(gt: dict) -> list[KeypointPrediction]:
    """The GT people themselves, on their GT boxes."""
    k = len(gt["categories"][0]["keypoints"])
    return [KeypointPrediction(a["image_id"], a["id"],
                               np.reshape(a["keypoints"], (k, 3))[:, :2].astype(np.float32),
                               np.ones(k, np.float32), np.float32(1.0),
                               np.asarray(a["bbox"], np.float32))
            for a in gt["annotations"]]


def _write(gt: dict, path: Path) -> Path:
    path.write_text(json.dumps(gt))
    return path


def _case(dataset: str, seed: int, tmp_path: Path):
    rng = np.random.default_rng(seed)
    gt = _synthetic_gt(rng, dataset)
    preds = _predictions(gt, rng)
    assert stack_predictions(preds, DATASET_SETS[dataset]) is not None  # the array route
    return gt, _write(gt, tmp_path / f"{dataset}_gt.json"), preds


# --- The settings are MMPose's ----------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
def test_settings_are_those_of_the_mmpose_config(dataset):
    settings = metric_settings(dataset)
    config = _config(settings.config)
    assert config.test_evaluator == config.val_evaluator
    defaults = {name: p.default
                for name, p in inspect.signature(_cocometric().__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert {**defaults, **settings.cocometric_kwargs()} == {**defaults, **_config_kwargs(dataset)}
    assert DATASET_SETS[dataset].dataset_meta()["sigmas"].tolist() == (
        _mmpose_meta(dataset)["sigmas"].tolist())


def test_no_mmpose_config_evaluates_halpe26_with_cocometric():
    """Why Halpe-26's settings are ours: the Body8-Halpe26 recipes validate with PCK."""
    configs = sorted((MIM_CONFIGS / "body_2d_keypoint/rtmpose/body8").glob("*halpe26*.py"))
    assert configs
    for path in configs:
        config = _config(str(path.relative_to(MIM_CONFIGS)))
        for evaluator in (config.val_evaluator, config.test_evaluator):
            evaluators = evaluator if isinstance(evaluator, list) else [evaluator]
            assert "CocoMetric" not in {e["type"] for e in evaluators}, path.name
    assert DATASET_METRICS["halpe26"].note
    assert DATASET_METRICS["halpe26"].cocometric_kwargs() == (
        DATASET_METRICS["coco"].cocometric_kwargs())


# --- The array route equals CocoMetric, stat for stat -----------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dataset", DATASETS)
def test_dataset_metrics_equal_cocometric_as_configured(dataset, seed, tmp_path):
    gt, gt_file, preds = _case(dataset, seed, tmp_path)
    settings = metric_settings(dataset)
    ours = evaluate_coco(gt, preds, settings.keypoint_set, use_area=settings.use_area,
                         iou_type=settings.iou_type)
    reference = _mmpose_metric(dataset, gt_file, preds)
    assert list(ours) == list(reference) == list(MMPOSE_STAT_NAMES[settings.iou_type])
    assert ours == reference
    assert 0 < ours["AP"] < 1
    flat = dataset_keypoint_metrics(dataset, gt_file, preds)
    assert list(flat) == list(settings.metric_names())
    assert list(flat.values()) == list(ours.values())
    if settings.iou_type == "keypoints_crowd":  # each crowd level has images and people
        assert all(0 < ours[level] < 1 for level in ("AP(E)", "AP(M)", "AP(H)"))


def test_crowdpose_without_nms_and_through_the_package_class_route(tmp_path):
    gt, gt_file, preds = _case("crowdpose", 2, tmp_path)
    kwargs = {"use_area": False, "iou_type": "keypoints_crowd"}
    without_nms = evaluate_coco(gt, preds, DATASET_SETS["crowdpose"], nms_thr=None, **kwargs)
    assert without_nms == _mmpose_metric("crowdpose", gt_file, preds, nms_mode="none")
    assert without_nms != evaluate_coco(gt, preds, DATASET_SETS["crowdpose"], **kwargs)
    # GT in memory: the class route writes it to a file for xtcocotools' crowd split
    assert evaluate_coco_cocometric(gt, preds, DATASET_SETS["crowdpose"], **kwargs) == (
        evaluate_coco(gt, preds, DATASET_SETS["crowdpose"], **kwargs))
    float64_areas = [replace(p, area=None if p.area is None else float(p.area)) for p in preds]
    assert stack_predictions(float64_areas, DATASET_SETS["crowdpose"]) is None  # mixed
    assert evaluate_coco(gt, float64_areas, DATASET_SETS["crowdpose"], **kwargs) == (
        _mmpose_metric("crowdpose", gt_file, float64_areas))


def test_crowd_levels_without_images_are_minus_one_as_in_mmpose(tmp_path):
    rng = np.random.default_rng(3)
    gt = _synthetic_gt(rng, "crowdpose")
    for image in gt["images"]:
        image["crowdIndex"] = 0.5  # every image medium
    preds = _predictions(gt, rng)
    ours = dataset_keypoint_metrics("crowdpose", gt, preds)
    reference = _mmpose_metric("crowdpose", _write(gt, tmp_path / "gt.json"), preds)
    assert list(ours.values()) == list(reference.values())
    assert ours["crowdpose_AP_easy"] == ours["crowdpose_AP_hard"] == -1
    assert ours["crowdpose_AP_medium"] > 0


def test_crowd_split_needs_crowd_indices():
    rng = np.random.default_rng(4)
    gt = _synthetic_gt(rng, "crowdpose", images=8)
    preds = _predictions(gt, rng)
    del gt["images"][3]["crowdIndex"]
    with pytest.raises(ValueError, match="crowdIndex.*coco_gt_subset"):
        dataset_keypoint_metrics("crowdpose", gt, preds)


def test_unknown_iou_type_and_datasets_without_ap_are_refused():
    rng = np.random.default_rng(5)
    gt = _synthetic_gt(rng, "coco", images=4)
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_coco(gt, _perfect(gt), iou_type="keypoints_wholebody")
    with pytest.raises(KeyError, match="PCKh"):
        dataset_keypoint_metrics("mpii", gt, _perfect(gt))


def test_coco_metrics_are_the_coco_dataset_metrics(tmp_path):
    gt, gt_file, preds = _case("coco", 6, tmp_path)
    assert coco_keypoint_metrics(gt_file, preds) == dataset_keypoint_metrics("coco", gt, preds)
    assert coco_keypoint_metrics(gt_file, preds, nms_thr=None) == dict(zip(
        dataset_metric_names("coco"), _mmpose_metric("coco", gt_file, preds,
                                                     nms_mode="none").values()))


# --- Flat names -------------------------------------------------------------------------


def test_flat_names_are_distinct_valid_mlflow_names_extending_the_coco_ones():
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    every = [n for d in DATASETS for n in dataset_metric_names(d)]
    assert len(set(every)) == len(every)
    for name in every + [f"val/{n}" for n in every]:
        assert validate_param_and_metric_name(name) and not path_not_unique(name), name
    assert len(set(STABLE_SUFFIXES.values())) == len(STABLE_SUFFIXES)  # AP_medium != AP_M
    assert names.STABLE_SUFFIXES is STABLE_SUFFIXES  # one table
    assert dataset_metric_names("crowdpose")[-3:] == (
        "crowdpose_AP_easy", "crowdpose_AP_medium", "crowdpose_AP_hard")
    assert dataset_metric_names("coco") == (
        "coco_AP", "coco_AP50", "coco_AP75", "coco_AP_M", "coco_AP_L", "coco_AR", "coco_AR50",
        "coco_AR75", "coco_AR_M", "coco_AR_L")  # the names every run so far logged


# --- GT of a capped validation set ------------------------------------------------------


def test_gt_subset_keeps_crowd_indices_and_scores_those_images_as_mmpose(tmp_path):
    rng = np.random.default_rng(7)
    gt = _synthetic_gt(rng, "crowdpose", images=45)
    gt_file = _write(gt, tmp_path / "crowdpose.json")
    kept = {a["image_id"] for a in gt["annotations"][:40]}  # max_samples, whole images
    subset = coco_gt_subset(gt_file, kept)
    by_id = {image["id"]: image for image in gt["images"]}
    assert [image["id"] for image in subset["images"]] == sorted(kept)
    assert all(image == by_id[image["id"]] for image in subset["images"])  # crowdIndex too
    assert subset["annotations"] == [a for a in gt["annotations"] if a["image_id"] in kept]
    assert {a["iscrowd"] for a in subset["annotations"]} == {0, 1}  # regions kept
    assert any(a["num_keypoints"] == 0 for a in subset["annotations"])  # ignored people too

    perfect = [p for p in _perfect(gt) if p.image_id in kept]
    assert dataset_keypoint_metrics("crowdpose", subset, perfect)["crowdpose_AR"] == 1.0
    assert dataset_keypoint_metrics("crowdpose", gt_file, perfect)["crowdpose_AR"] < 1.0
    preds = [p for p in _predictions(gt, rng) if p.image_id in kept]
    reference = _mmpose_metric("crowdpose", _write(subset, tmp_path / "subset.json"), preds)
    assert list(dataset_keypoint_metrics("crowdpose", subset, preds).values()) == list(
        reference.values())
    everything = coco_gt_subset(gt, [image["id"] for image in gt["images"]])
    assert dataset_keypoint_metrics("crowdpose", everything, preds) == (
        dataset_keypoint_metrics("crowdpose", gt_file, preds))


def test_gt_subset_refuses_images_the_file_does_not_have():
    gt = _synthetic_gt(np.random.default_rng(8), "aic", images=5)
    with pytest.raises(ValueError, match="not in the GT file"):
        coco_gt_subset(gt, [1, 2, 99])


def test_gt_subset_keeps_halpe26_of_a_fullbody_file():
    rng = np.random.default_rng(9)
    halpe26 = _synthetic_gt(rng, "halpe26", images=20)
    fullbody = copy.deepcopy(halpe26)
    fullbody["categories"][0]["keypoints"] += [f"extra_{i}" for i in range(110)]
    fullbody["categories"][0]["skeleton"] = [[1, 2], [20, 27], [100, 120]]
    for ann in fullbody["annotations"]:
        extra = np.c_[rng.uniform(0, 600, (110, 2)), np.full(110, 2.0)]
        ann["keypoints"] = ann["keypoints"] + extra.ravel().tolist()
        ann["num_keypoints"] += 110
    unchanged = copy.deepcopy(fullbody)
    subset = coco_gt_subset(fullbody, [image["id"] for image in fullbody["images"]],
                            num_keypoints=26)
    assert fullbody == unchanged
    assert subset["categories"][0]["keypoints"] == halpe26["categories"][0]["keypoints"]
    assert subset["categories"][0]["skeleton"] == [[1, 2]]
    assert subset["annotations"] == halpe26["annotations"]
    preds = _predictions(halpe26, rng)
    assert dataset_keypoint_metrics("halpe26", subset, preds) == (
        dataset_keypoint_metrics("halpe26", halpe26, preds))


def test_the_names_module_stays_light():
    """``names`` and sweeps read the flat names before any evaluation code is imported."""
    import subprocess
    import sys

    code = ("import sys, unipose_ray.evaluation.dataset_metrics as m; m.dataset_metric_names("
            "'crowdpose'); print(sorted({'torch', 'xtcocotools', 'mmpose'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
