"""Benchmark the validation metrics at COCO / MPII val size: MMPose's classes vs ours.

Side by side in one process, on the same generated predictions: COCO keypoint AP through
MMPose's ``CocoMetric`` (``evaluate_coco_cocometric``) and through the array path
(``evaluate_coco``) with GT boxes (5,000 people) and with detector boxes (100,000: 20 per
image, OKS-NMS at work); MPII PCKh through ``MpiiPCKAccuracy`` as its test loop feeds it and
through ``compute_pckh`` (2,958 people, MPII val). Each pair's results must be equal
(``==`` on every stat), else the script exits non-zero.

    python jobs/benchmark_metrics.py                 # COCO val and MPII val sizes
    python jobs/benchmark_metrics.py --images 500    # a quick look
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from unipose_ray.evaluation.coco_metric import (
    KeypointPrediction,
    evaluate_coco,
    evaluate_coco_cocometric,
    load_coco_gt,
)
from unipose_ray.evaluation.pckh import compute_pckh
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import COCO, MPII


def coco_data(images: int, detections_per_image: int, seed: int = 0
              ) -> tuple[dict, list[KeypointPrediction], list[KeypointPrediction]]:
    """A COCO-format GT (one person per image) and float32 predictions for its GT boxes
    and for ``detections_per_image`` jittered detector boxes per image (scores in tenths:
    ties)."""
    rng = np.random.default_rng(seed)
    entries, anns, gt_boxes, detections = [], [], [], []
    for image_id in range(1, images + 1):
        entries.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640,
                        "height": 480})
        x, y, w, h = *rng.uniform(0, [400, 250]), *rng.uniform([40, 80], [240, 230])
        k = np.c_[rng.uniform([x, y], [x + w, y + h], (17, 2)), np.full(17, 2.0)]
        k[rng.random(17) < 0.2] = 0
        anns.append({"id": image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                     "bbox": [x, y, w, h], "area": w * h * 0.6,
                     "num_keypoints": int(np.count_nonzero(k[:, 2])),
                     "keypoints": k.ravel().tolist()})
        gt_boxes.append(_prediction(rng, image_id, image_id, k, np.array([x, y, w, h]), 1.0))
        for _ in range(detections_per_image):
            box = np.array([x, y, w, h]) + rng.normal(scale=5, size=4)
            detections.append(_prediction(rng, image_id, len(detections), k, box,
                                          np.round(rng.uniform(0.05, 1), 1)))
    categories = [{"id": 1, "name": "person", "keypoints": list(COCO.names), "skeleton": []}]
    return {"images": entries, "annotations": anns, "categories": categories}, gt_boxes, detections


def _prediction(rng, image_id: int, instance_id: int, k: np.ndarray, box: np.ndarray,
                score: float) -> KeypointPrediction:
    keypoints = k[:, :2] + rng.normal(scale=rng.choice([1, 5, 30]), size=(17, 2))
    return KeypointPrediction(
        image_id, instance_id, keypoints.astype(np.float32),
        rng.uniform(0, 1, 17).astype(np.float32), np.float32(score), box.astype(np.float32),
        np.float32(abs(box[2] * box[3]) * 1.5625))


def mpii_data(people: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``pred (N, 16, 2)``, ``gt``, ``visible``, ``head_size`` of ``people`` MPII people."""
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 600, (people, MPII.num_keypoints, 2))
    head_size = rng.uniform(15, 80, people)
    pred = gt - 1 + rng.normal(size=gt.shape) * head_size[:, None, None] * 0.3
    visible = (rng.random((people, MPII.num_keypoints)) < 0.85).astype(np.float32)
    return pred.astype(np.float32), gt.astype(np.float32), visible, head_size


def mmpose_pckh(pred, gt, visible, head_size) -> dict[str, float]:
    """``MpiiPCKAccuracy`` as its test loop feeds it: one data sample per person."""
    from mmpose.evaluation.metrics import MpiiPCKAccuracy  # noqa: PLC0415

    metric = MpiiPCKAccuracy(thr=0.5, norm_item="head", prefix="mpii")
    metric.process([], [
        {"pred_instances": {"keypoints": p[None]},
         "gt_instances": {"keypoints": g[None], "keypoints_visible": v[None], "head_size": h}}
        for p, g, v, h in zip(pred, gt, visible, head_size)])
    return {name: float(value) for name, value in metric.compute_metrics(metric.results).items()}


def _timed(fn, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="COCO images (1 person each)")
    parser.add_argument("--detections", type=int, default=20, help="detector boxes per image")
    parser.add_argument("--mpii-people", type=int, default=2958, help="MPII people (val: 2,958)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_mmpose()  # once, outside the timings
    gt, gt_boxes, detections = coco_data(args.images, args.detections)
    coco = load_coco_gt(gt)
    rows, equal = [], True
    for name, preds in ((f"COCO AP, {len(gt_boxes):,} GT boxes", gt_boxes),
                        (f"COCO AP, {len(detections):,} detections", detections)):
        theirs, their_s = _timed(evaluate_coco_cocometric, coco, preds)
        ours, our_s = _timed(evaluate_coco, coco, preds)
        rows.append((name, their_s, our_s, ours == theirs, f"AP {ours['AP']:.4f}"))
    pckh_data = mpii_data(args.mpii_people)
    theirs, their_s = _timed(mmpose_pckh, *pckh_data)
    ours, our_s = _timed(compute_pckh, *pckh_data)
    rows.append((f"MPII PCKh, {args.mpii_people:,} people", their_s, our_s,
                 ours.mmpose_stats == theirs, f"PCKh {ours.mean:.2f}"))

    print(f"{'':<30}{'MMPose class':>14}{'ours':>10}{'speed-up':>10}  equal")
    for name, their_s, our_s, same, value in rows:
        print(f"{name:<30}{their_s:>12.2f} s{our_s:>8.2f} s{their_s / our_s:>9.1f}x  "
              f"{same}  ({value})")
        equal &= same
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
