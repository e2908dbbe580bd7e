"""COCO keypoint AP/AR on the real COCO samples, against MMPose's ``CocoMetric`` run as its
test loop runs it (GT file, boxes as x1y1x2y2, crop scales) and against xtcocotools'
``COCOeval`` on hand-written results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mmpose_reference import mmpose_coco_metric
from xtcocotools.coco import COCO as CocoApi
from xtcocotools.cocoeval import COCOeval

from unipose_ray.evaluation.coco_metric import (
    KeypointPrediction,
    coco_keypoint_metrics,
    evaluate_coco,
    unified_keypoint_metrics,
)
from unipose_ray.evaluation.names import STABLE_SUFFIXES
from unipose_ray.skeleton import COCO, UNIFIED, mapping_for

REAL = Path(__file__).resolve().parents[2] / "../shared/data/real_samples"
GT_FILE = REAL / "coco/test_coco.json"
DET_FILE = REAL / "coco/test_coco_det_AP_H_56.json"
pytestmark = pytest.mark.skipif(
    not GT_FILE.is_file(), reason=f"real COCO samples not found at {REAL.resolve()}"
)
ASPECT = 192 / 256  # RTMPose input w / h


@pytest.fixture(scope="module")
def gt() -> dict:
    return json.loads(GT_FILE.read_text())


def _crop_scale(xywh: np.ndarray) -> np.ndarray:
    """MMPose's top-down crop box scale: box x 1.25, aspect fixed to the input's."""
    w, h = np.float32(xywh[2] * 1.25), np.float32(xywh[3] * 1.25)
    return np.array([w, w / ASPECT] if w > h * ASPECT else [h * ASPECT, h], dtype=np.float32)


def _prediction(rng, image_id, instance_id, xywh, score, gt_kpts, mode) -> KeypointPrediction:
    """A prediction for one input box; ``gt_kpts`` (17, 3) of the matched person or None."""
    x, y, w, h = xywh
    kpts = rng.uniform([x, y], [x + w, y + h], size=(17, 2))
    if gt_kpts is not None:
        labelled = gt_kpts[:, 2] > 0
        kpts[labelled] = gt_kpts[labelled, :2]
        if mode != "perfect":
            kpts += rng.normal(scale=0.03 * np.sqrt(w * h), size=kpts.shape)
        if mode == "partly_wrong":
            wrong = rng.random(17) < 0.3
            kpts[wrong] = rng.uniform([x, y], [x + w, y + h], size=(wrong.sum(), 2))
    xyxy = np.array([[x, y, x + w, y + h]], dtype=np.float32)
    xywh32 = xyxy.copy()
    xywh32[:, 2:] -= xywh32[:, :2]  # as MMPose's bbox_xyxy2xywh
    scale = _crop_scale(np.asarray(xywh, dtype=np.float32))
    return KeypointPrediction(
        image_id=image_id,
        instance_id=instance_id,
        keypoints=kpts.astype(np.float32),
        keypoint_scores=rng.uniform(0, 1, 17).astype(np.float32),
        bbox_score=np.float32(score),
        bbox=xywh32[0],
        area=np.prod(scale[None], axis=1)[0],
    )


def _gt_box_predictions(gt: dict, mode: str, seed: int) -> list[KeypointPrediction]:
    rng = np.random.default_rng(seed)
    return [
        _prediction(
            rng, a["image_id"], a["id"], a["bbox"], 1.0, np.reshape(a["keypoints"], (17, 3)), mode
        )
        for a in gt["annotations"]
    ]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[:2] + a[2:], b[:2] + b[2:])
    inter = max(x2 - x1, 0) * max(y2 - y1, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _det_box_predictions(gt: dict, mode: str, seed: int) -> list[KeypointPrediction]:
    """One prediction per detection (MMPose's ids: the detection's index in the file)."""
    rng = np.random.default_rng(seed)
    dets = [d for d in json.loads(DET_FILE.read_text()) if d["category_id"] == 1]
    preds = []
    for index, det in enumerate(dets):
        box = np.asarray(det["bbox"], dtype=np.float64)
        anns = [a for a in gt["annotations"] if a["image_id"] == det["image_id"]]
        best = max(anns, key=lambda a: _iou(box, np.asarray(a["bbox"])))
        matched = _iou(box, np.asarray(best["bbox"])) > 0.5
        kpts = np.reshape(best["keypoints"], (17, 3)) if matched else None
        preds.append(_prediction(rng, det["image_id"], index, box, det["score"], kpts, mode))
    return preds


def _mmpose_coco_metric(ann_file: Path, preds, keypoint_set, nms_mode="oks_nms") -> dict:
    """MMPose's CocoMetric on the samples its top-down models emit for ``preds``."""
    samples = []
    for p in preds:
        xywh = np.asarray(p.bbox, dtype=np.float32)
        xyxy = np.concatenate([xywh[:2], xywh[:2] + xywh[2:]])[None]
        samples.append(
            {
                "id": p.instance_id,
                "img_id": p.image_id,
                "pred_instances": {
                    "keypoints": np.asarray(p.keypoints)[None],
                    "keypoint_scores": np.asarray(p.keypoint_scores)[None],
                    "bboxes": xyxy,
                    "bbox_scores": np.array([p.bbox_score], dtype=np.float32),
                },
                "gt_instances": {"bbox_scales": _crop_scale(xywh)[None]},
            }
        )
    return mmpose_coco_metric(ann_file, samples, keypoint_set, nms_mode)


def _assert_same(ours: dict, ref: dict) -> None:
    assert list(ours) == list(ref)
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name


def _with_repeats(preds: list[KeypointPrediction], seed: int) -> list[KeypointPrediction]:
    """Shuffled, with a few repeated instance ids (MMPose keeps the first of each)."""
    rng = np.random.default_rng(seed)
    repeats = [
        KeypointPrediction(
            p.image_id,
            p.instance_id,
            p.keypoints[::-1].copy(),
            p.keypoint_scores,
            p.bbox_score,
            p.bbox,
            p.area,
        )
        for p in preds[::4]
    ]
    merged = preds + repeats
    return [merged[i] for i in rng.permutation(len(merged))]


@pytest.mark.parametrize("mode", ["perfect", "noisy", "partly_wrong"])
def test_gt_boxes_match_mmpose(gt, mode):
    preds = _gt_box_predictions(gt, mode, seed=len(mode))
    if mode != "perfect":  # repeats may replace a perfect instance by its wrong twin
        preds = _with_repeats(preds, seed=len(mode))
    ours = evaluate_coco(GT_FILE, preds)
    _assert_same(ours, _mmpose_coco_metric(GT_FILE, preds, COCO))
    if mode == "perfect":
        assert ours["AP"] > 0.9
    else:
        assert ours["AP"] < 1.0


@pytest.mark.parametrize("mode", ["noisy", "partly_wrong"])
def test_detector_boxes_with_oks_nms_match_mmpose(gt, mode):
    preds = _det_box_predictions(gt, mode, seed=10 + len(mode))
    ours = evaluate_coco(GT_FILE, preds)
    _assert_same(ours, _mmpose_coco_metric(GT_FILE, preds, COCO))
    _assert_same(
        evaluate_coco(GT_FILE, preds, nms_thr=None),
        _mmpose_coco_metric(GT_FILE, preds, COCO, nms_mode="none"),
    )
    if mode == "noisy":  # duplicate detections of one person agree: NMS drops some
        assert ours != evaluate_coco(GT_FILE, preds, nms_thr=None)


def test_without_nms_equals_cocoeval_on_hand_written_results(gt):
    # Independent of CocoMetric: the rescoring written out, xtcocotools' COCOeval run directly.
    preds = _gt_box_predictions(gt, "partly_wrong", seed=12)
    results = []
    for p in preds:
        counted = [float(s) for s in p.keypoint_scores if s > 0.2]
        xys = np.concatenate([p.keypoints, p.keypoint_scores[:, None]], axis=1)
        results.append({
            "image_id": p.image_id,
            "category_id": 1,
            "keypoints": xys.ravel().tolist(),
            "score": float(p.bbox_score) * (sum(counted) / len(counted) if counted else 0.0),
            "bbox": np.asarray(p.bbox).tolist(),
        })
    coco_gt = CocoApi(str(GT_FILE))
    cocoeval = COCOeval(coco_gt, coco_gt.loadRes(results), "keypoints",
                        np.asarray(COCO.sigmas, np.float32), True)
    cocoeval.params.useSegm = None
    cocoeval.evaluate()
    cocoeval.accumulate()
    cocoeval.summarize()
    expected = dict(zip(STABLE_SUFFIXES, cocoeval.stats))
    _assert_same(evaluate_coco(GT_FILE, preds, nms_thr=None), expected)
    assert 0.0 < expected["AP"] < 1.0


def test_unified_predictions_are_evaluated_on_their_coco_joints(gt):
    preds = _gt_box_predictions(gt, "noisy", seed=5)
    rng = np.random.default_rng(6)
    unified = [
        KeypointPrediction(
            p.image_id,
            p.instance_id,
            np.concatenate([p.keypoints, rng.uniform(0, 600, (4, 2))]),
            np.concatenate([p.keypoint_scores, rng.uniform(0, 1, 4)]),
            p.bbox_score,
            p.bbox,
            p.area,
        )
        for p in preds
    ]
    assert evaluate_coco(GT_FILE, unified) == evaluate_coco(GT_FILE, preds)
    flat = coco_keypoint_metrics(GT_FILE, unified)
    assert {"coco_AP", "coco_AP50", "coco_AP75", "coco_AR", "coco_AR50", "coco_AR75"} <= set(flat)
    assert flat["coco_AP"] == evaluate_coco(GT_FILE, preds)["AP"]


# --- Unified-21 AP: the same evaluation on a GT file that labels all 21 joints ----------


def _midpoint(k: np.ndarray, a: int, b: int, labelled: bool) -> list[float]:
    """``x, y, v`` halfway between joints a and b, labelled when both are (and asked)."""
    ok = k[a, 2] > 0 and k[b, 2] > 0 and labelled
    return [*(0.5 * (k[a, :2] + k[b, :2])), 2.0] if ok else [0.0, 0.0, 0.0]


def _unified_gt(gt: dict, extra_labelled: bool = True) -> dict:
    """The real COCO GT with 4 extra joints placed from the labelled COCO joints."""
    out = json.loads(json.dumps(gt))
    out["categories"][0]["keypoints"] = list(UNIFIED.names)
    for ann in out["annotations"]:
        k = np.reshape(ann["keypoints"], (17, 3)).astype(np.float64)
        pelvis = _midpoint(k, 11, 12, extra_labelled)
        thorax = _midpoint(k, 5, 6, extra_labelled)
        neck = [thorax[0], thorax[1] - 10.0, 2.0] if thorax[2] else [0.0, 0.0, 0.0]
        head = [thorax[0], thorax[1] - 40.0, 2.0] if thorax[2] else [0.0, 0.0, 0.0]
        ann["keypoints"] = [*ann["keypoints"], *pelvis, *thorax, *neck, *head]
        ann["num_keypoints"] = int(np.count_nonzero(np.reshape(ann["keypoints"], (21, 3))[:, 2]))
    return out


def _unified_predictions(unified_gt: dict, rng, wrong_extra: bool) -> list[KeypointPrediction]:
    preds = []
    for a in unified_gt["annotations"]:
        if a["num_keypoints"] == 0:
            continue  # no labelled joint: nothing to be right about
        k = np.reshape(a["keypoints"], (21, 3))
        kpts = k[:, :2].astype(np.float32).copy()
        if wrong_extra:
            kpts[17:] += np.float32(60.0)
        w, h = a["bbox"][2:]
        preds.append(
            KeypointPrediction(
                a["image_id"],
                a["id"],
                kpts,
                rng.uniform(0.3, 1, 21).astype(np.float32),
                1.0,
                np.array(a["bbox"], np.float32),
                float(w * h * 1.25**2),
            )
        )
    return preds


@pytest.fixture(scope="module")
def unified_gt_file(gt, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("unified") / "unified_gt.json"
    path.write_text(json.dumps(_unified_gt(gt)))
    return path


def test_unified_ap_perfect_is_one_and_matches_mmpose(unified_gt_file):
    preds = _unified_predictions(
        json.loads(unified_gt_file.read_text()), np.random.default_rng(7), wrong_extra=False
    )
    ours = unified_keypoint_metrics(unified_gt_file, preds)
    assert ours["unified_AP"] == 1.0
    ref = _mmpose_coco_metric(unified_gt_file, preds, UNIFIED)
    _assert_same(evaluate_coco(unified_gt_file, preds, UNIFIED), ref)


def test_unified_ap_sees_wrong_extra_joints_that_coco_ap_does_not(gt, unified_gt_file):
    preds = _unified_predictions(
        json.loads(unified_gt_file.read_text()), np.random.default_rng(8), wrong_extra=True
    )
    unified = evaluate_coco(unified_gt_file, preds, UNIFIED)
    _assert_same(unified, _mmpose_coco_metric(unified_gt_file, preds, UNIFIED))
    assert unified["AP"] < 1.0
    assert evaluate_coco(GT_FILE, preds, COCO)["AP"] == 1.0  # its COCO-17 part is perfect


def test_unified_ap_reduces_to_coco_ap_when_only_coco_joints_are_labelled(gt):
    preds = _gt_box_predictions(gt, "partly_wrong", seed=9)
    unified = [
        KeypointPrediction(
            p.image_id,
            p.instance_id,
            np.concatenate([p.keypoints, np.zeros((4, 2), np.float32)]),
            np.concatenate([p.keypoint_scores, np.zeros(4, np.float32)]),
            p.bbox_score,
            p.bbox,
            p.area,
        )
        for p in preds
    ]
    coco_only = _unified_gt(gt, extra_labelled=False)
    # Unlabelled joints do not enter OKS and scores < 0.2 do not enter the rescoring; only
    # OKS-NMS would see the extra joints, so it is off on both sides.
    assert evaluate_coco(coco_only, unified, UNIFIED, nms_thr=None) == evaluate_coco(
        GT_FILE, preds, COCO, nms_thr=None
    )


def test_gt_written_from_records_evaluates_like_the_original_file(gt):
    from unipose_ray.data.records import InstanceRecord
    from unipose_ray.evaluation.coco_gt import coco_gt_from_records

    images = {im["id"]: im for im in gt["images"]}
    coco = mapping_for("coco")
    records = []
    for a in gt["annotations"]:
        k = np.reshape(a["keypoints"], (17, 3)).astype(np.float32)
        image = images[a["image_id"]]
        records.append(
            InstanceRecord(
                image_path=image["file_name"],
                dataset="coco",
                image_id=a["image_id"],
                instance_id=a["id"],
                image_width=image["width"],
                image_height=image["height"],
                bbox=np.asarray(a["bbox"], np.float32),
                keypoints=coco.keypoints_to_unified(k[:, :2]),
                visible=coco.keypoints_to_unified((k[:, 2] > 0).astype(np.float32)),
                annotated=coco.annotated,
                head_size=None,
                area=a["area"],
            )
        )
    unified_gt = coco_gt_from_records(records)
    assert len(unified_gt["annotations"][0]["keypoints"]) == 3 * UNIFIED.num_keypoints
    preds = _gt_box_predictions(gt, "partly_wrong", seed=11)
    assert evaluate_coco(coco_gt_from_records(records, COCO), preds) == evaluate_coco(
        GT_FILE, preds
    )


# --- The array path against MMPose's CocoMetric class, at random and adversarial inputs ---


def _synthetic_gt(rng, images: int = 40) -> dict:
    """One or two people per image, 17 joints, some unlabelled."""
    anns, entries = [], []
    for image_id in range(1, images + 1):
        entries.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640,
                        "height": 480})
        for _ in range(rng.integers(1, 3)):
            x, y, w, h = rng.uniform(0, 300), rng.uniform(0, 200), *rng.uniform(30, 250, 2)
            k = np.c_[rng.uniform([x, y], [x + w, y + h], (17, 2)), np.full(17, 2.0)]
            k[rng.random(17) < 0.2] = 0
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "iscrowd": 0, "bbox": [x, y, w, h], "area": w * h * 0.6,
                         "num_keypoints": int(np.count_nonzero(k[:, 2])),
                         "keypoints": k.ravel().tolist()})
    return {"images": entries, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO.names)}]}


def _adversarial_predictions(gt: dict, rng, joints: int = 17) -> list[KeypointPrediction]:
    """Detections around the GT people: none for some images, many for others, identical
    repeats, tied box scores, keypoint scores at 0.2, repeated ids, boxes and areas missing."""
    near = np.float32(0.2) + np.array([-1, 0, 1], np.float32) * np.spacing(np.float32(0.2))
    preds = []
    for a in gt["annotations"]:
        mode = a["image_id"] % 5
        if mode == 0:
            continue  # an image without detections
        k, box = np.reshape(a["keypoints"], (17, 3))[:, :2], np.asarray(a["bbox"])
        for j in range({1: 1, 2: 3, 3: 40, 4: 8}[mode]):
            kpts = k + rng.normal(scale=rng.choice([0.5, 4.0, 40.0]), size=k.shape)
            if joints == UNIFIED.num_keypoints:
                kpts = np.concatenate([kpts, rng.uniform(0, 600, (4, 2))])
            scores = rng.uniform(0, 1, joints)
            if mode == 4:  # identical repeats with tied scores at the threshold
                kpts, scores = kpts * 0 + k.mean(0), rng.choice(near, joints)
            scores[rng.random(joints) < 0.2] = near[1]
            xywh = box + rng.normal(scale=3.0, size=4)
            preds.append(KeypointPrediction(
                image_id=a["image_id"],
                instance_id=len(preds) if j != 2 else len(preds) - 1,  # a repeated id
                keypoints=kpts.astype(np.float32),
                keypoint_scores=scores.astype(np.float32),
                bbox_score=np.float32(np.round(rng.uniform(0.1, 1), 1)),  # ties
                bbox=xywh.astype(np.float32),
                area=None if j % 7 == 3 else np.float32(xywh[2] * xywh[3] * 1.5625),
            ))
    return [preds[i] for i in rng.permutation(len(preds))]


@pytest.mark.parametrize("seed", [0, 1])
def test_array_path_equals_cocometric_on_adversarial_detections(seed):
    from dataclasses import replace

    from unipose_ray.evaluation.coco_metric import evaluate_coco_cocometric

    rng = np.random.default_rng(seed)
    gt = _synthetic_gt(rng)
    preds = _adversarial_predictions(gt, rng)
    for nms_thr in (0.9, 0.5, None):
        ours = evaluate_coco(gt, preds, nms_thr=nms_thr)
        assert ours == evaluate_coco_cocometric(gt, preds, nms_thr=nms_thr), nms_thr
    assert ours != evaluate_coco(gt, preds)  # NMS mattered
    unboxed = [replace(p, bbox=None) for p in preds]  # loadRes' keypoints branch
    assert evaluate_coco(gt, unboxed) == evaluate_coco_cocometric(gt, unboxed)
    float64_areas = [replace(p, area=None if p.area is None else float(p.area)) for p in preds]
    # mixed area dtypes: each instance computed in its own, through CocoMetric itself
    assert evaluate_coco(gt, float64_areas) == evaluate_coco_cocometric(gt, float64_areas)


def test_array_path_equals_cocometric_on_unified_predictions():
    from unipose_ray.evaluation.coco_metric import evaluate_coco_cocometric

    rng = np.random.default_rng(5)
    gt = _synthetic_gt(rng, images=25)
    preds = _adversarial_predictions(gt, rng, joints=UNIFIED.num_keypoints)
    assert evaluate_coco(gt, preds) == evaluate_coco_cocometric(gt, preds)
