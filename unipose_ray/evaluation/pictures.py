"""Validation pictures: a model's skeletons drawn on whole validation images, per domain."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from unipose_ray.config.settings import CodecConfig
from unipose_ray.data.pipeline import load_image
from unipose_ray.evaluation.cross_dataset import EvalSet
from unipose_ray.evaluation.topdown import predict, to_unified
from unipose_ray.evaluation.viz import draw_skeleton, label, make_grid
from unipose_ray.skeleton import UNIFIED, KeypointSet


def validation_picture(model: torch.nn.Module, keypoint_set: str | KeypointSet,
                       codec: CodecConfig, eval_sets: Sequence[EvalSet], images_per_set: int = 3,
                       flip_test: bool = True, device: str | torch.device = "cpu",
                       min_height: int = 256, skeleton: KeypointSet = UNIFIED) -> np.ndarray:
    """One row per validation set: its first images with every person's predicted skeleton.

    Predictions are the evaluation's (GT boxes, flip test as configured), drawn in unified
    order (``skeleton``'s joints and limbs) on the original image, scaled up to at least
    ``min_height`` pixels.

    Returns:
        ``(H, W, 3)`` RGB uint8.
    """
    tiles = []
    for eval_set in eval_sets:
        records = eval_set.records()
        image_ids = list(dict.fromkeys(r.image_id for r in records))[:images_per_set]
        chosen = [r for r in records if r.image_id in image_ids]
        if not chosen:
            continue
        pred = to_unified(predict(model, chosen, keypoint_set, codec, flip_test, device=device),
                          keypoint_set, skeleton)
        for image_id in image_ids:
            people = [i for i, r in enumerate(chosen) if r.image_id == image_id]
            image = load_image(chosen[people[0]].image_path)
            scale = max(1.0, min_height / image.shape[0])
            if scale > 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            for i in people:
                image = draw_skeleton(image, pred.keypoints[i] * scale, pred.scores[i],
                                      skeleton)
            tiles.append(label(image, f"{eval_set.name} {image_id}"))
    if not tiles:
        raise ValueError("no validation images to draw")
    return make_grid(tiles, cols=images_per_set)
