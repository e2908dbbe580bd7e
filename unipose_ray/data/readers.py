"""COCO-style and MPII annotation readers -> :class:`InstanceRecord` lists in a skeleton's slots.

Both follow MMPose's own dataset classes (``CocoDataset`` and the other
``BaseCocoStyleDataset`` s: ``CrowdPoseDataset``, ``HalpeDataset``, ``AicDataset``;
``MpiiDataset``) in what they keep and how they build boxes, so a record set matches what
MMPose would train on. Records hold the joints of a skeleton (default: the paper's 21,
:data:`~unipose_ray.skeleton.UNIFIED`; any :func:`~unipose_ray.skeleton.unified_skeleton`
that includes the dataset), through :func:`~unipose_ray.skeleton.mapping_for`. Any problem
with a file is reported with the file's path and what is wrong in it; a file in another
format (an MPII list given as COCO, a detections file, a ``.mat``) says which format it
looks like and where it belongs (:mod:`unipose_ray.data.formats`). AI Challenger's raw
files are read by :func:`unipose_ray.data.aic.read_aic`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unipose_ray.data import formats
from unipose_ray.data.annotation_io import (
    image_size,
    load_json,
    number_rows,
    require_dir,
    require_file,
    require_format,
    require_images,
)
from unipose_ray.data.formats import AnnotationError, AnnotationFormatError  # both re-exported
from unipose_ray.data.geometry import BOX_PADDING
from unipose_ray.data.records import InstanceRecord
from unipose_ray.runtime.distributed import quiet
from unipose_ray.skeleton import DATASET_SETS, UNIFIED, KeypointSet, mapping_for

__all__ = ["AnnotationError", "AnnotationFormatError", "box_from_center", "boxes_from_centers",
           "clipped_boxes", "coco_records", "read_coco", "read_mpii"]

MPII_PIXEL_STD = 200.0
PCKH_HEAD_FACTOR = 0.6  # MPII's SC_BIAS: head size = 0.6 x head-box diagonal
FULL_BODY_JOINTS = {"halpe26": 136}
"""Datasets whose files may hold more joints per person than the dataset's set, its joints
first: Halpe-FullBody's 136 are the 26 body joints, then face and hands (MMPose's Body8
recipe keeps the first 26 with ``KeypointConverter``)."""
COCO_STYLE_TITLES = {"coco": "COCO", "aic": "AIC", "crowdpose": "CrowdPose",
                     "halpe26": "Halpe", "unified": "COCO-style"}
COCO_STYLE_KINDS = (formats.AIC, formats.CROWDPOSE, formats.HALPE26)
"""Datasets whose annotation files are COCO-style, each its own kind of file in messages."""


def read_coco(ann_file: str | Path, img_dir: str | Path, dataset: str = "coco",
              skeleton: KeypointSet = UNIFIED) -> list[InstanceRecord]:
    """Read a COCO-style person-keypoints file (via pycocotools).

    Args:
        ann_file: e.g. ``person_keypoints_val2017.json``, MMPose's ``aic_train.json`` or
            ``mmpose_crowdpose_test.json``, ``halpe_val_v1.json``.
        img_dir: the folder the ``file_name`` entries are relative to.
        dataset: which keypoint set the file annotates: ``coco``, ``aic``, ``crowdpose``,
            ``halpe26`` (Halpe-FullBody files of 136 joints per person, or 26-joint files:
            the first 26 are kept), or ``unified`` (files annotating ``skeleton``'s joints).
        skeleton: the joints the records hold; it must include the dataset's.

    Skips crowd instances, instances without labelled keypoints and empty boxes, as MMPose's
    ``CocoDataset`` does in top-down mode (a Halpe-FullBody person is judged on all 136
    joints, as ``HalpeDataset`` does before the Body8 recipe keeps 26); boxes are clipped to
    the image the same way. Image sizes come from the file; the images are checked to exist
    with one directory listing per folder, none is opened (a corrupt image fails when it
    is loaded).
    """
    title = COCO_STYLE_TITLES.get(dataset, dataset)
    ann_file = require_file(ann_file, f"{title} annotation file")
    img_dir = require_dir(img_dir, f"{title} image folder")
    kind = dataset if dataset in COCO_STYLE_KINDS else formats.COCO  # what messages expect
    raw = load_json(ann_file, kind)
    found = require_format(raw, ann_file, kind)
    if found != formats.COCO:  # AIC's raw list (or an empty one): AIC's, not this reader's
        what = (f"looks like {formats.LOOKS_LIKE[found]}" if found in formats.LOOKS_LIKE
                else "is an empty JSON list")
        raise AnnotationFormatError(
            f"{ann_file} {what}, not a COCO-style file: read AI Challenger's list with "
            "unipose_ray.data.aic.read_aic, which takes either form")
    return coco_records(raw, ann_file, img_dir, dataset, skeleton)


def coco_records(raw: dict, ann_file: Path, img_dir: Path, dataset: str,
                 skeleton: KeypointSet = UNIFIED) -> list[InstanceRecord]:
    """:func:`read_coco` on the already parsed content ``raw`` of ``ann_file``."""
    from pycocotools.coco import COCO  # noqa: PLC0415  (prints while loading; kept local)

    _check_coco_layout(raw, ann_file)
    mapping = mapping_for(dataset, skeleton)
    with quiet():
        coco = COCO()
        coco.dataset = raw
        coco.createIndex()
    kept = _kept_annotations(coco, ann_file, dataset, mapping.source.num_keypoints)
    boxes, nonempty, areas = clipped_boxes(
        number_rows([a["bbox"] for _, a, _, _ in kept], 4,
                    lambda i: f"{ann_file}: annotation {kept[i][0]} 'bbox' ([x, y, w, h])"),
        [(img["width"], img["height"]) for _, _, img, _ in kept])
    kept = [item for item, ok in zip(kept, nonempty) if ok]
    paths = [img_dir / img["file_name"] for _, _, img, _ in kept]
    require_images(paths, ann_file)
    return [
        InstanceRecord(
            image_path=str(path),
            dataset=dataset,
            image_id=int(ann["image_id"]),
            instance_id=int(ann_id),
            image_width=int(img["width"]),
            image_height=int(img["height"]),
            bbox=bbox,
            keypoints=mapping.keypoints_to_unified(keypoints[:, :2]),
            visible=mapping.keypoints_to_unified(np.minimum(1.0, keypoints[:, 2])),
            annotated=mapping.annotated.copy(),
            head_size=None,
            area=float(ann.get("area", area)),
        )
        for (ann_id, ann, img, keypoints), path, bbox, area in zip(kept, paths, boxes, areas)
    ]


def _kept_annotations(coco, ann_file: Path, dataset: str, k: int) -> list[tuple]:
    """``(ann_id, ann, img, (k, 3) float32 keypoints)`` of the instances MMPose keeps, image
    by image as MMPose orders its data list; box tests come after (:func:`clipped_boxes`)."""
    counts = frozenset({k, FULL_BODY_JOINTS.get(dataset, k)})
    sizes = frozenset(3 * n for n in counts)
    kept = []
    for ann_id in [a for img_id in coco.getImgIds() for a in coco.getAnnIds(imgIds=img_id)]:
        ann = coco.anns[ann_id]
        if ann.get("iscrowd", 0) or "keypoints" not in ann or "bbox" not in ann:
            continue
        keypoints = np.asarray(ann["keypoints"])
        if keypoints.ndim != 1 or keypoints.dtype.kind not in "iuf" or keypoints.size not in sizes:
            _refuse_keypoints(ann, ann_id, ann_file, dataset, counts)
        keypoints = keypoints.astype(np.float32).reshape(-1, 3)
        # MMPose's tests, on every joint the file holds (all 136 of a Halpe-FullBody person)
        labelled = ann.get("num_keypoints")
        if labelled is None:
            labelled = np.count_nonzero(keypoints[:, :2].max(axis=1))
        if labelled == 0 or keypoints[:, :2].max() <= 0:
            continue
        img = coco.imgs.get(ann["image_id"])
        if img is None:
            raise AnnotationError(f"{ann_file}: annotation {ann_id} refers to image id "
                                  f"{ann['image_id']}, which is not in 'images'")
        kept.append((ann_id, ann, img, keypoints[:k]))
    return kept


def _refuse_keypoints(ann: dict, ann_id: int, ann_file: Path, dataset: str,
                      counts: frozenset[int]) -> None:
    """Raise for ``keypoints`` that are not numbers, or not ``3 x`` one of ``counts``."""
    keypoints = np.asarray(ann["keypoints"])
    if keypoints.ndim != 1 or keypoints.dtype.kind not in "iuf":
        text = json.dumps(ann["keypoints"])
        raise AnnotationError(f"{ann_file}: annotation {ann_id} 'keypoints' must be a list of "
                              f"numbers [x1, y1, v1, ...], found {text[:120]}")
    n, k = keypoints.size / 3, min(counts)
    full = f" (Halpe-FullBody files: {max(counts)})" if len(counts) > 1 else ""
    who = _who_has(n)
    raise AnnotationError(
        f"{ann_file}: annotation {ann_id} has {n:g} keypoints, but the '{dataset}' keypoint "
        f"set has {k}{full}{who}{':' if who else ';'} pass the matching dataset name")


def _who_has(count: float) -> str:
    """``; files of aic, crowdpose hold 14``: the datasets whose files hold ``count``."""
    names = [name for name, ks in DATASET_SETS.items() if ks.num_keypoints == count]
    names += [name for name, full in FULL_BODY_JOINTS.items() if full == count]
    return f"; files of {', '.join(names)} hold {count:g}" if names else ""


def _check_coco_layout(raw: dict, ann_file: Path) -> None:
    for key in ("images", "annotations", "categories"):
        if key not in raw:
            raise AnnotationError(f"{ann_file}: missing the '{key}' list of a COCO keypoint file")
    for img in raw["images"]:
        missing = {"id", "file_name", "width", "height"} - set(img)
        if missing:
            raise AnnotationError(f"{ann_file}: image entry {img.get('id', '?')} lacks "
                                  f"{sorted(missing)}")


def clipped_boxes(bboxes: np.ndarray, sizes: list[tuple[int, int]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N, 4)`` ``x, y, w, h`` boxes clipped to their images (``(width, height)`` each) as
    MMPose does (float64 corners, then its float32 ``x1, y1, x2, y2``), rebuilt by
    :func:`boxes_from_centers`.

    Returns:
        ``(M, 4)`` float32 boxes of the ``M`` non-empty ones, the ``(N,)`` mask of those,
        and their ``(M,)`` float32 areas where a file gives none (MMPose's: clipped box
        area x 0.53, at least 1).
    """
    if not len(bboxes):
        return np.zeros((0, 4), np.float32), np.zeros(0, bool), np.zeros(0, np.float32)
    x, y, w, h = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4).T
    width, height = np.asarray(sizes, dtype=np.float64).reshape(-1, 2).T
    x1, y1 = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
    x2, y2 = np.clip(x + w, 0, width - 1), np.clip(y + h, 0, height - 1)
    nonempty = ~((x2 <= x1) | (y2 <= y1))  # MMPose's test: a NaN box is kept
    areas = np.maximum((x2 - x1) * (y2 - y1) * 0.53, 1.0)[nonempty].astype(np.float32)
    corners = np.stack([x1, y1, x2, y2], axis=1)[nonempty].astype(np.float32)
    centers = (corners[:, :2] + corners[:, 2:]) * np.float32(0.5)
    return boxes_from_centers(centers, corners[:, 2:] - corners[:, :2]), nonempty, areas


def read_mpii(ann_file: str | Path, img_dir: str | Path,
              headbox_file: str | Path | None = None, skeleton: KeypointSet = UNIFIED
              ) -> list[InstanceRecord]:
    """Read MPII in MMPose's JSON format (``image, center, scale, joints, joints_vis``).

    Head sizes for PCKh come from a per-annotation ``head_box`` field (``[x1, y1, x2, y2]``)
    or from the official ``mpii_gt_val.mat`` (``headboxes_src``, aligned with the file's
    order); the head size is ``0.6 x`` the head-box diagonal, as MPII's evaluation.

    Boxes are built as MMPose's ``MpiiDataset``: ``scale x 200`` square, centre moved down by
    ``15 / 200 x scale`` and shifted by -1 (MATLAB 1-based). Joints are shifted by -1 too,
    so crops and targets are exact; MMPose keeps them 1-based and adds 1 to predictions at
    evaluation instead, which gives the same PCKh.

    Each image is opened once (its header only): MMPose's MPII JSON has no image sizes, and
    the records carry them. :func:`read_coco` takes them from its file and opens none.
    Records hold ``skeleton``'s joints (it must include MPII's).
    """
    ann_file = require_file(ann_file, "MPII annotation file")
    img_dir = require_dir(img_dir, "MPII image folder")
    anns = load_json(ann_file, formats.MPII)
    require_format(anns, ann_file, formats.MPII)
    head_boxes = _read_headboxes(headbox_file, len(anns), ann_file) if headbox_file else None
    mapping = mapping_for("mpii", skeleton)
    k = mapping.source.num_keypoints
    records, image_ids, sizes, centers, box_sizes = [], {}, {}, [], []
    for index, ann in enumerate(anns):
        missing = {"image", "center", "scale", "joints", "joints_vis"} - set(ann)
        if missing:
            raise AnnotationError(f"{ann_file}: annotation {index} lacks {sorted(missing)}")
        joints = np.asarray(ann["joints"], dtype=np.float32)
        joints_vis = np.asarray(ann["joints_vis"], dtype=np.float32)
        if joints.shape != (k, 2) or joints_vis.shape != (k,):
            raise AnnotationError(
                f"{ann_file}: annotation {index} has joints {joints.shape} and joints_vis "
                f"{joints_vis.shape}; MPII needs ({k}, 2) and ({k},)")
        path = img_dir / ann["image"]
        if path not in sizes:
            sizes[path] = image_size(path, ann_file)
        width, height = sizes[path]
        image_ids.setdefault(ann["image"], _mpii_image_id(ann["image"], len(image_ids)))
        # MpiiDataset's float32 arithmetic, step for step: crops equal MMPose's to the bit.
        box_size = np.float32(ann["scale"]) * np.float32(MPII_PIXEL_STD)
        center = np.asarray(ann["center"], dtype=np.float32)
        if center[0] != -1:
            center[1] = center[1] + 15.0 / MPII_PIXEL_STD * box_size
        centers.append(center - np.float32(1))
        box_sizes.append((box_size, box_size))
        head = head_boxes[index] if head_boxes is not None else ann.get("head_box")
        records.append(dict(
            image_path=str(path),
            dataset="mpii",
            image_id=image_ids[ann["image"]],
            instance_id=index,
            image_width=int(width),
            image_height=int(height),
            keypoints=mapping.keypoints_to_unified(joints - 1),
            visible=mapping.keypoints_to_unified(joints_vis),
            annotated=mapping.annotated.copy(),
            head_size=None if head is None else _head_size(head, ann_file, index),
            area=float(max(box_size * box_size * 0.53, 1.0)),
        ))
    boxes = boxes_from_centers(np.reshape(centers, (-1, 2)), np.reshape(box_sizes, (-1, 2)))
    return [InstanceRecord(bbox=bbox, **fields) for fields, bbox in zip(records, boxes)]


_BOXES_PER_BLOCK = 4096  # (block, 65, 9) float32 search grids: ~2.4 MB each


def box_from_center(center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """One box of :func:`boxes_from_centers`: ``(2,)`` centre, ``(2,)`` or scalar size ->
    ``(4,)`` float32 ``x, y, w, h``."""
    size = np.broadcast_to(np.asarray(size, dtype=np.float32), (2,))
    return boxes_from_centers(np.asarray(center, dtype=np.float32)[None], size[None])[0]


def boxes_from_centers(centers: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Float32 ``x, y, w, h`` boxes whose centres and padded sizes, read back the way
    :func:`~unipose_ray.data.geometry.box_center_scale` reads every box (MMPose's
    ``bbox_xyxy2cs``, float32), are exactly ``centers`` and ``sizes x 1.25``.

    MMPose crops a person from its float32 box centre and size (MPII: as stored; COCO: from
    the clipped corners). A box rebuilt naively loses the last bit of either on the way
    back, which moves a few crop pixels by one grey level. Corners and sides are searched
    within a few ulps for ones that round-trip (where no side does, one a hair short: the
    aspect fix then mostly takes the other axis's side); the naive box is kept where none
    does. Every axis of every box is searched at once, in blocks.

    Args:
        centers: ``(N, 2)`` float32 box centres.
        sizes: ``(N, 2)`` float32 box sides (unpadded).

    Returns:
        ``(N, 4)`` float32 boxes.
    """
    centers = np.asarray(centers, dtype=np.float32).reshape(-1)
    sides = np.asarray(sizes, dtype=np.float32).reshape(-1)
    corner, side = np.empty_like(centers), np.empty_like(sides)
    for lo in range(0, len(centers), _BOXES_PER_BLOCK):
        block = slice(lo, lo + _BOXES_PER_BLOCK)
        corner[block], side[block] = _round_trip_axes(centers[block], sides[block])
    return np.concatenate([corner.reshape(-1, 2), side.reshape(-1, 2)], axis=1)


def _round_trip_axes(center: np.ndarray, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(M,)`` float32 centres and sides of box axes -> ``(M,)`` corners and sides: the first
    candidate (corner-major, nearest ulps first) whose centre and padded side round-trip."""
    padded = side * np.float32(BOX_PADDING)
    corners = _ulp_neighbours(center - side / np.float32(2), 32)  # (M, 65)
    widths = _ulp_neighbours(side, 4)  # (M, 9)
    x1, w = corners[:, :, None], widths[:, None, :]
    x2 = x1 + w
    centred = (x1 + x2) * np.float32(0.5) == center[:, None, None]
    got = (x2 - x1) * np.float32(BOX_PADDING)
    exact = (centred & (got == padded[:, None, None])).reshape(len(center), -1)
    short = (centred & (got <= padded[:, None, None])).reshape(len(center), -1)
    pick = np.where(exact.any(axis=1), exact.argmax(axis=1),
                    np.where(short.any(axis=1), short.argmax(axis=1), 0))
    i, j = np.divmod(pick, widths.shape[1])
    rows = np.arange(len(center))
    return corners[rows, i], widths[rows, j]


def _ulp_neighbours(values: np.ndarray, n: int) -> np.ndarray:
    """``(M,)`` -> ``(M, 2n + 1)``: each value, then the float32 values 1, -1, 2, -2, ...
    ulps from it, up to ``n``."""
    up, down, columns = values, values, [values]
    for _ in range(n):
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
        columns += [up, down]
    return np.stack(columns, axis=1)


def _mpii_image_id(name: str, ordinal: int) -> int:
    """MMPose's id is the numeric file stem (``005808361.jpg``); else the first-seen order."""
    stem = Path(name).stem
    return int(stem) if stem.isdigit() else ordinal


def _head_size(head_box: object, ann_file: Path, index: int) -> float:
    box = np.asarray(head_box, dtype=np.float64).reshape(-1)
    if box.shape != (4,):
        raise AnnotationError(f"{ann_file}: annotation {index} head_box must be "
                              f"[x1, y1, x2, y2], found {head_box}")
    return float(np.linalg.norm(box[2:] - box[:2]) * PCKH_HEAD_FACTOR)


def _read_headboxes(path: str | Path, count: int, ann_file: Path) -> np.ndarray:
    """``headboxes_src`` of the official ``mpii_gt_val.mat`` as ``(N, 4)`` boxes."""
    from scipy.io import loadmat  # noqa: PLC0415

    path = require_file(path, "MPII head-box file")
    found = formats.annotation_format(path)  # its header: loadmat's errors say not what it got
    if found != formats.MPII_MAT:
        raise formats.format_error(path, found, formats.MPII_MAT)
    mat = loadmat(path)
    if "headboxes_src" not in mat:
        raise AnnotationError(f"{path} has no 'headboxes_src' (expected the layout of MPII's "
                              "mpii_gt_val.mat)")
    boxes = np.transpose(mat["headboxes_src"], (2, 0, 1)).reshape(-1, 4)
    if len(boxes) != count:
        raise AnnotationError(f"{path} holds {len(boxes)} head boxes but {ann_file} has "
                              f"{count} annotations; they must be the same split, in order")
    return boxes
