"""Using a trained model: keypoints of the people in image files, as JSON and pictures.

The same top-down path as evaluation (:func:`~unipose_ray.evaluation.topdown.predict`): boxes
from a COCO detection-results file (MMPose's ``bbox_file``), or the whole image when there is
none; MMPose's crops, flip test and decoding. Writes to an output folder:

- ``predictions.json``: COCO keypoint results (``image_id``, ``category_id``, ``keypoints``
  as ``x, y, score`` per joint, ``score``, ``bbox``) plus each image's ``file_name``; the
  instance score is ``CocoMetric``'s (box score x mean of keypoint scores above 0.2);
- ``keypoints.json``: the joint names and skeleton links of those keypoints, and how they
  were made (model file, flip test, boxes);
- ``<image name>.png``: the image with the skeletons drawn on it.

:class:`PredictionSummary` counts what was found and what was drawn, so that an overlay
without skeletons (every score below the drawing threshold, or an image without a box)
has its reason printed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from unipose_ray.cli import InputError, UsageError
from unipose_ray.data.pipeline import load_image
from unipose_ray.deploy.onnx import ExportError, keypoint_names_of
from unipose_ray.evaluation.coco_metric import bbox_keypoint_score
from unipose_ray.evaluation.topdown import (
    Detections,
    ImageInfo,
    Predictions,
    box_record,
    gt_boxes,
    predict,
    read_detections,
)
from unipose_ray.evaluation.viz import draw_skeleton
from unipose_ray.skeleton import KeypointSet, keypoint_set_named

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(InputError, ValueError):
    """An input image that is missing or cannot be read, or whose name does not fit."""


def check_device(device: str, option: str = "--device") -> str:
    """``device`` if this process can run on it; checked before any model is loaded.

    Raises:
        UsageError: not a device name, or a CUDA device this machine does not have (the
            message names ``option``, the setting to change).
    """
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UsageError(f"{option} {device} is not a device name; pass cpu, cuda or "
                         "cuda:N") from None
    if parsed.type != "cuda":
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UsageError(f"{option} {device}: PyTorch sees no CUDA GPU on this machine "
                         f"(torch.cuda.is_available() is False); pass {option} cpu")
    if parsed.index is not None and parsed.index >= count:
        raise UsageError(f"{option} {device}: this machine has {count} CUDA GPU(s), "
                         f"cuda:0 to cuda:{count - 1}")
    return device


def model_keypoints(model, model_name: str = "the model") -> KeypointSet:
    """The keypoint set ``model`` predicts, from the joint names it carries (an export's
    metadata, a checkpoint's ``dataset_meta``): a dataset's, or a unified skeleton; a
    model without names by its joint count (21 unified, 17 COCO, 16 MPII).

    Raises:
        UsageError: names (or a count) no keypoint set of this product has.
    """
    try:
        names = getattr(model, "keypoint_names", None) or keypoint_names_of(model)
        return keypoint_set_named(names)[1]
    except (ValueError, ExportError) as err:  # the user's model
        raise UsageError(f"{model_name}: {err}; use a model of one of those sets") from None


def find_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named directly, plus the images inside named folders (sorted).

    Raises:
        ImageError: a path that does not exist, or no image at all.
    """
    images = []
    for item in map(Path, inputs):
        if item.is_dir():
            images += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            images.append(item)
        else:
            raise ImageError(f"{item} does not exist (pass image files or folders of images)")
    if not images:
        raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {[str(i) for i in inputs]}")
    return images


def image_infos(paths: Sequence[Path], coco_ids: bool = False) -> dict[int, ImageInfo]:
    """Images by id: COCO's (a file name that is a number, ``000000000785.jpg`` -> 785),
    else the image's position in the list (1-based).

    Args:
        coco_ids: every name must give a COCO id (boxes from a file are matched by it).

    Raises:
        ImageError: an unreadable image (named), two files with the same id or name, or
            with ``coco_ids`` a name that is not a number.
    """
    numeric = all(p.stem.isdigit() for p in paths)
    if coco_ids and not numeric:
        odd = [p.name for p in paths if not p.stem.isdigit()][:3]
        raise ImageError(f"boxes from a file are matched to images by COCO image id, read "
                         f"from numeric file names (000000000785.jpg -> 785); {odd} are not")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})[:3]
        raise ImageError(f"two input images share the name {twice}: their overlays would "
                         "overwrite each other; predict them in separate runs")
    infos: dict[int, ImageInfo] = {}
    for position, path in enumerate(paths, start=1):
        image_id = int(path.stem) if numeric else position
        if image_id in infos:
            raise ImageError(f"{path} and {infos[image_id].path} both have image id {image_id}")
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, ValueError) as err:
            raise ImageError(f"cannot read image {path}: {err}") from None
        infos[image_id] = ImageInfo(str(path.resolve()), int(width), int(height))
    return infos


def person_boxes(images: dict[int, ImageInfo], bbox_file: str | os.PathLike | None = None,
                 score_thr: float = 0.0, gt_ann_file: str | os.PathLike | None = None
                 ) -> Detections:
    """The detections of ``bbox_file`` on these images, the person boxes of a COCO
    annotation file, or one whole-image box per image."""
    if bbox_file is not None:
        return read_detections(bbox_file, images, score_thr, other_images=True)
    if gt_ann_file is not None:
        return gt_boxes(gt_ann_file, images)
    records = [box_record(info, image_id, 0, np.array([0, 0, info.width, info.height]))
               for image_id, info in images.items()]
    return Detections(records, np.ones(len(records), dtype=np.float32))


def results_json(boxes: Detections, pred: Predictions) -> list[dict]:
    """COCO keypoint results, one per box (no OKS-NMS: that is the evaluation's step), with
    ``CocoMetric``'s instance score."""
    results = []
    for i, record in enumerate(boxes.records):
        keypoints = np.concatenate([pred.keypoints[i], pred.scores[i][:, None]], axis=1)
        results.append({
            "image_id": record.image_id,
            "file_name": Path(record.image_path).name,
            "category_id": 1,
            "keypoints": [round(float(v), 3) for v in keypoints.reshape(-1)],
            "score": float(bbox_keypoint_score(pred.scores[i], float(boxes.scores[i]))),
            "bbox": [round(float(v), 3) for v in record.bbox],
        })
    return results


@dataclass(frozen=True)
class PredictionSummary:
    """What a :func:`predict_images` run predicted and drew.

    Attributes:
        images: the input images.
        people: the boxes predicted on (one result each).
        people_drawn: of those, the ones whose instance score is at least ``draw_thr``.
        joints_drawn, joints_hidden: the joints of the drawn people scoring at least /
            below ``draw_thr`` (the hidden ones are not drawn).
        draw_thr: the drawing threshold.
        images_without_boxes: names of the input images that got no box, in input order.
    """

    images: int
    people: int
    people_drawn: int
    joints_drawn: int
    joints_hidden: int
    draw_thr: float
    images_without_boxes: tuple[str, ...]


def summarize(images: dict[int, ImageInfo], results: list[dict], draw_thr: float
              ) -> PredictionSummary:
    """Count the people and joints of ``results`` drawn at ``draw_thr``, and the images
    without a box."""
    drawn = drawn_people(results, draw_thr)
    joint_scores = np.array([r["keypoints"][2::3] for r in drawn]).reshape(-1)
    hidden = int((joint_scores < draw_thr).sum())
    boxed = {r["image_id"] for r in results}
    return PredictionSummary(
        images=len(images), people=len(results), people_drawn=len(drawn),
        joints_drawn=len(joint_scores) - hidden, joints_hidden=hidden, draw_thr=draw_thr,
        images_without_boxes=tuple(Path(info.path).name for image_id, info in images.items()
                                   if image_id not in boxed))


def drawn_people(results: list[dict], draw_thr: float) -> list[dict]:
    """The results whose instance score is at least ``draw_thr``: the people on the
    overlays (a detector's many weak boxes would bury the picture)."""
    return [r for r in results if r["score"] >= draw_thr]


def predict_images(model, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                   bbox_file: str | os.PathLike | None = None, bbox_score_thr: float = 0.0,
                   flip_test: bool | None = None, batch_size: int = 16,
                   device: str = "cpu", draw_thr: float = 0.3, model_name: str = "",
                   gt_ann_file: str | os.PathLike | None = None
                   ) -> tuple[list[dict], PredictionSummary]:
    """Predict every person in ``inputs`` and write the results to ``out_dir``.

    Args:
        model: a ``PoseModel`` or an ONNX runner (anything with ``.spec`` and the same call).
        inputs: image files and folders.
        bbox_file: COCO person detections; without one (nor ``gt_ann_file``), each image is
            one person's box.
        gt_ann_file: a COCO annotation file whose person boxes to use instead.
        flip_test: ``None`` follows the model's ``test_cfg``.
        draw_thr: people and joints scored below this are not drawn.

    Returns:
        The COCO results written to ``predictions.json``, and what was found and drawn.
    """
    spec = model.spec
    keypoint_set = model_keypoints(model, model_name or "the model")
    if bbox_file is not None and gt_ann_file is not None:
        raise UsageError("pass boxes from a detection file or from an annotation file, not both")
    images = image_infos(find_images(inputs), coco_ids=bool(bbox_file or gt_ann_file))
    boxes = person_boxes(images, bbox_file, bbox_score_thr, gt_ann_file)
    flip_test = spec.flip_test if flip_test is None else flip_test
    pred = predict(model, boxes.records, keypoint_set, spec.codec, flip_test, batch_size, device,
                   progress=len(boxes.records) > batch_size)
    results = results_json(boxes, pred)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "predictions.json", results)
    _write_json(out / "keypoints.json", {
        "keypoint_set": keypoint_set.name, "keypoint_names": list(keypoint_set.names),
        "skeleton_links": [list(link) for link in keypoint_set.links], "model": model_name,
        "flip_test": flip_test, "boxes": str(bbox_file or gt_ann_file or "whole image")},
        indent=1)
    draw_overlays(images, results, keypoint_set, out, draw_thr)
    return results, summarize(images, results, draw_thr)


def draw_overlays(images: dict[int, ImageInfo], results: list[dict], keypoint_set: KeypointSet,
                  out_dir: Path, draw_thr: float = 0.3) -> None:
    """``out_dir/<image name>.png``: each image with the skeletons of its
    :func:`drawn_people`, their joints scoring below ``draw_thr`` left out."""
    by_image: dict[int, list[dict]] = {}
    for result in drawn_people(results, draw_thr):
        by_image.setdefault(result["image_id"], []).append(result)
    items = list(images.items())
    for image_id, info in tqdm(items, desc="draw", unit="image", disable=len(items) < 20):
        picture = cv2.cvtColor(load_image(info.path), cv2.COLOR_BGR2RGB)
        for result in by_image.get(image_id, []):
            keypoints = np.reshape(result["keypoints"], (-1, 3))
            picture = draw_skeleton(picture, keypoints, keypoint_set=keypoint_set,
                                    score_threshold=draw_thr)
        cv2.imwrite(str(out_dir / f"{Path(info.path).stem}.png"),
                    cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))


def _write_json(path: Path, value, indent: int | None = None) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=indent))
    os.replace(tmp, path)
