"""Top-down inference as MMPose runs it: boxes -> crops -> SimCC logits (flip test) -> image
keypoints. Evaluation, validation and ``jobs/predict.py`` all go through :func:`predict`.

- Boxes are ground-truth boxes (records of an annotation file) or person detections from a
  COCO results file (:func:`read_detections`, MMPose's ``bbox_file``).
- Crops are the unaugmented top-down crops of :mod:`unipose_ray.data.geometry`, bit-identical
  to MMPose's ``GetBBoxCenterScale`` + ``TopdownAffine``.
- Flip test (RTMPose's ``test_cfg=dict(flip_test=True)``): the logits of the mirrored crop,
  joints swapped with the flip pairs and x bins reversed, averaged with the plain logits
  (MMPose's ``TopdownPoseEstimator.predict`` + ``RTMCCHead.predict``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unipose_ray.cli import InputError, UsageError
from unipose_ray.config.settings import AugmentConfig, CodecConfig
from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset, collate, load_image
from unipose_ray.data.records import InstanceRecord
from unipose_ray.evaluation.decode import decode_simcc, to_image_coords
from unipose_ray.skeleton import KEYPOINT_SETS, UNIFIED, KeypointSet, set_mapping


@dataclass
class Predictions:
    """Predictions for a list of boxes, in image pixels.

    Attributes:
        keypoints: ``(N, K, 2)``; scores: ``(N, K)``.
        areas: ``(N,)`` crop-box areas (MMPose's OKS-NMS area).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    areas: np.ndarray


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model.eval()`` for the block, then the mode it had (BatchNorm of a student that is
    still training must go back to batch statistics)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def simcc_logits(model, images: torch.Tensor, flip_indices: Sequence[int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's SimCC logits of ``(B, 3, H, W)`` crops, flip-tested when ``flip_indices``.

    Returns:
        ``((B, K, Wx), (B, K, Wy))`` float32 logits.
    """
    simcc_x, simcc_y = model(images)
    if flip_indices is None:
        return simcc_x.float(), simcc_y.float()
    flip_x, flip_y = model(images.flip(-1))
    index = torch.as_tensor(list(flip_indices), device=flip_x.device)
    flip_x, flip_y = flip_x[:, index].flip(-1), flip_y[:, index]  # MMPose's flip_vectors
    return ((simcc_x + flip_x) * 0.5).float(), ((simcc_y + flip_y) * 0.5).float()


@torch.no_grad()
def predict(model, records: Sequence[InstanceRecord], keypoint_set: str | KeypointSet,
            codec: CodecConfig,
            flip_test: bool = True, batch_size: int = 32, device: str | torch.device = "cpu",
            progress: bool = False) -> Predictions:
    """Run ``model`` (predicting ``keypoint_set``) on the unaugmented crops of ``records``' boxes.

    Args:
        model: images ``(B, 3, H, W)`` RGB 0-255 -> SimCC logits (a ``PoseModel``, or any
            callable with ``training``/``eval``/``train`` such as an ONNX runner).
        records: one per box (GT instances, or detections from :func:`read_detections`).
        keypoint_set: what the model predicts (a :class:`KeypointSet`, or a dataset name;
            ``unified``: the paper's 21); its flip pairs drive the flip test.
        codec: the model's input size and SimCC split ratio.
        flip_test: average with the mirrored crop, as RTMPose's ``test_cfg``.
        progress: show a progress bar over the batches.

    Returns:
        :class:`Predictions` with the model's own ``K`` joints (none for no records).
    """
    keypoints = as_keypoint_set(keypoint_set)
    if not records:  # e.g. a box file with no box on the given images
        k = keypoints.num_keypoints
        return Predictions(np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32),
                           np.zeros(0))
    data = TopdownDataset(records, PipelineConfig(codec=codec, augment=AugmentConfig.none()))
    flip = keypoints.flip_permutation.tolist() if flip_test else None
    keypoints, scores = [], []
    batches = _batches(data, batch_size)
    if progress:
        batches = tqdm(batches, total=-(-len(data) // batch_size), unit="batch", desc="predict")
    with eval_mode(model):
        for batch in batches:
            simcc_x, simcc_y = simcc_logits(model, torch.from_numpy(batch["images"]).to(device),
                                            flip)
            crop_kp, score = decode_simcc(simcc_x.cpu(), simcc_y.cpu(), codec.split_ratio)
            keypoints.append(to_image_coords(crop_kp, batch["inverse_warp"]))
            scores.append(score)
    areas = np.array([np.prod(data.params(i).scale) for i in range(len(data))])
    return Predictions(np.concatenate(keypoints), np.concatenate(scores), areas)


def _batches(data: TopdownDataset, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The unaugmented samples in order, collated; an image is read once for a run of boxes
    on it (a detector gives dozens per image)."""
    path, image = None, None
    for start in range(0, len(data), batch_size):
        samples = []
        for i in range(start, min(start + batch_size, len(data))):
            if data.records[i].image_path != path:
                path = data.records[i].image_path
                image = load_image(path)
            samples.append(data.replay(i, data.params(i), image=image))
        yield collate(samples)


def as_keypoint_set(keypoint_set: str | KeypointSet) -> KeypointSet:
    """A keypoint set given as itself or by dataset name (``unified``: the paper's 21)."""
    return keypoint_set if isinstance(keypoint_set, KeypointSet) else KEYPOINT_SETS[keypoint_set]


def to_unified(pred: Predictions, keypoint_set: str | KeypointSet,
               skeleton: KeypointSet = UNIFIED) -> Predictions:
    """Place a ``keypoint_set`` model's joints in ``skeleton``'s slots (the others score 0)."""
    joints = set_mapping(as_keypoint_set(keypoint_set), skeleton).to_unified
    n, k = len(pred.keypoints), skeleton.num_keypoints
    # Explicit joint axis: a mapping's axis guess is ambiguous when N equals K.
    keypoints = np.zeros((n, k, 2), pred.keypoints.dtype)
    keypoints[:, joints] = pred.keypoints
    scores = np.zeros((n, k), pred.scores.dtype)
    scores[:, joints] = pred.scores
    return Predictions(keypoints, scores, pred.areas)


# --- Detector boxes -------------------------------------------------------------------------


class BoxFileError(UsageError, ValueError):
    """A person-box file (detections, or an annotation file's boxes) that cannot be used
    with the given images."""


@dataclass(frozen=True)
class Detections:
    """Person boxes from a detector, as top-down inputs.

    Attributes:
        records: one per kept box (image of the box, ``bbox``; no keypoints);
            ``instance_id`` is the box's index among the file's person boxes, as MMPose
            numbers them.
        scores: ``(N,)`` the boxes' detection scores (``bbox_score``).
    """

    records: list[InstanceRecord]
    scores: np.ndarray


@dataclass(frozen=True)
class ImageInfo:
    """An image boxes may refer to: its file and size."""

    path: str
    width: int
    height: int


def read_detections(bbox_file: str | Path, images: dict[int, ImageInfo],
                    score_thr: float = 0.0, other_images: bool = False) -> Detections:
    """Person boxes of a COCO detection-results JSON, as MMPose's ``bbox_file`` reads them.

    Like ``BaseCocoStyleDataset._load_detection_results`` + ``filter_data``: only
    ``category_id == 1``; boxes kept as given (not clipped); ids numbered over the person
    boxes in file order; boxes scoring below ``score_thr`` dropped afterwards.

    Args:
        bbox_file: a list of ``{image_id, category_id, bbox: [x, y, w, h], score}``.
        images: the images the boxes may refer to, by COCO image id.
        score_thr: MMPose's ``filter_cfg=dict(bbox_score_thr=...)``.
        other_images: skip boxes of images that are not given (a box file of a whole split
            used on a few of its images) instead of refusing them; the file must still
            have boxes for at least one given image.

    Raises:
        InputError: no such file. BoxFileError: not a results list, or boxes for images
            that are not given.
    """
    path = Path(bbox_file)
    dets = _read_box_json(path)
    if not isinstance(dets, list) or not all(
            isinstance(d, dict) and {"image_id", "category_id", "bbox", "score"} <= set(d)
            for d in dets):
        raise BoxFileError(f"{path} is not a COCO detection-results file: expected a JSON "
                           "list of {image_id, category_id, bbox: [x, y, w, h], score}")
    return detections_on(dets, images, score_thr, other_images, str(path))


def gt_boxes(ann_file: str | Path, images: dict[int, ImageInfo]) -> Detections:
    """The person boxes of a COCO annotation file as detections scoring 1 (people with
    keypoints, as the evaluation's GT boxes), on those of ``images`` it annotates.

    Raises:
        InputError: no such file. BoxFileError: not a COCO annotation file, or no box on
            any of ``images``.
    """
    raw = _read_box_json(Path(ann_file))
    if not isinstance(raw, dict) or not isinstance(raw.get("annotations"), list):
        raise BoxFileError(f"{ann_file} is not a COCO annotation file: expected a JSON object "
                           "with an 'annotations' list")
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
            for a in raw["annotations"] if a.get("num_keypoints", 1) > 0]
    return detections_on(dets, images, other_images=True, source=str(ann_file))


def _read_box_json(path: Path) -> object:
    """The JSON of a box file, or an error naming it."""
    if not path.is_file():
        raise InputError(f"box file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BoxFileError(f"{path} is not valid JSON ({err})") from None


def detections_on(dets: list[dict], images: dict[int, ImageInfo], score_thr: float = 0.0,
                  other_images: bool = False, source: str = "the box file") -> Detections:
    """:func:`read_detections` on already parsed ``{image_id, category_id, bbox, score}``."""
    people = [d for d in dets if d["category_id"] == 1]
    unknown = sorted({d["image_id"] for d in people} - set(images))
    if unknown and (not other_images or len(unknown) == len({d["image_id"] for d in people})):
        raise BoxFileError(
            f"{source} has boxes for {len(unknown)} image id(s) that are not among the "
            f"{len(images)} given images, e.g. {unknown[:5]}; known ids e.g. "
            f"{sorted(images)[:5]}. Is it the box file of another split?")
    records, scores = [], []
    for index, det in enumerate(people):
        if det["score"] < score_thr or det["image_id"] not in images:
            continue
        image = images[det["image_id"]]
        bbox = np.asarray(det["bbox"][:4], dtype=np.float32)
        records.append(box_record(image, int(det["image_id"]), index, bbox))
        scores.append(det["score"])
    return Detections(records, np.asarray(scores, dtype=np.float32))


def box_record(image: ImageInfo, image_id: int, box_id: int, bbox: np.ndarray) -> InstanceRecord:
    """A keypoint-free record that only carries a box to run top-down inference on."""
    k = UNIFIED.num_keypoints
    return InstanceRecord(
        image_path=image.path, dataset="coco", image_id=image_id, instance_id=box_id,
        image_width=image.width, image_height=image.height,
        bbox=np.asarray(bbox, dtype=np.float32), keypoints=np.zeros((k, 2), np.float32),
        visible=np.zeros(k, np.float32), annotated=np.zeros(k, bool), head_size=None,
        area=float(bbox[2] * bbox[3]),
    )


def coco_images(ann_file: str | Path, img_dir: str | Path) -> dict[int, ImageInfo]:
    """The images of a COCO annotation file, by id."""
    raw = json.loads(Path(ann_file).read_text())
    return {im["id"]: ImageInfo(str(Path(img_dir) / im["file_name"]), int(im["width"]),
                                int(im["height"]))
            for im in raw.get("images", [])}
