"""COCO and MPII annotation readers -> unified :class:`InstanceRecord` lists.

Both follow MMPose's own dataset classes (``CocoDataset``, ``MpiiDataset``) in what they
keep and how they build boxes, so a record set matches what MMPose would train on. Any
problem with a file is reported with the file's path and what is wrong in it; a file in
another format (an MPII list given as COCO, a detections file, a ``.mat``) says which format
it looks like and where it belongs (:mod:`unipose_ray.data.formats`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from unipose_ray.data import formats
from unipose_ray.data.formats import AnnotationError, AnnotationFormatError  # both re-exported
from unipose_ray.data.geometry import BOX_PADDING
from unipose_ray.data.records import InstanceRecord
from unipose_ray.runtime.distributed import quiet
from unipose_ray.skeleton import mapping_for

MPII_PIXEL_STD = 200.0
PCKH_HEAD_FACTOR = 0.6  # MPII's SC_BIAS: head size = 0.6 x head-box diagonal


def _require_file(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist (check the path you passed)")
    return path.resolve()


def _require_dir(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a folder")
    return path.resolve()


def _load_json(path: Path, expected: str) -> object:
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError on a binary file
        found = formats.annotation_format(path)  # only now: a valid file is read once
        if found not in (expected, formats.NOT_JSON, formats.UNKNOWN_JSON):  # empty, a .mat...
            raise formats.format_error(path, found, expected) from e
        raise AnnotationFormatError(f"{path} is not valid JSON: {e}; a download or copy cut "
                                    "short? Fetch it again") from e


def _require_format(content: object, path: Path, *expected: str) -> None:
    """Raise :class:`AnnotationFormatError` unless parsed ``content`` is of an ``expected``
    format: told from its top-level keys or first element, no second read."""
    found = formats.json_format(content)
    if found not in expected:
        raise formats.format_error(path, found, expected[0])


def _image_size(path: Path, ann_file: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{ann_file} refers to image {path}, which does not exist; check the image folder "
            "you passed matches this annotation file") from None
    except OSError as e:
        raise AnnotationError(f"image {path} (from {ann_file}) cannot be read: {e}") from e


def read_coco(ann_file: str | Path, img_dir: str | Path, dataset: str = "coco"
              ) -> list[InstanceRecord]:
    """Read a COCO-format person-keypoints file (via pycocotools).

    Args:
        ann_file: e.g. ``person_keypoints_val2017.json``.
        img_dir: the folder the ``file_name`` entries are relative to.
        dataset: which registered keypoint set the file annotates (``coco``; ``aic`` or
            ``unified`` for files in COCO format with other joints).

    Skips crowd instances, instances without labelled keypoints and empty boxes, as MMPose's
    ``CocoDataset`` does in top-down mode; boxes are clipped to the image the same way.
    """
    from pycocotools.coco import COCO  # noqa: PLC0415  (prints while loading; kept local)

    ann_file = _require_file(ann_file, "COCO annotation file")
    img_dir = _require_dir(img_dir, "COCO image folder")
    raw = _load_json(ann_file, formats.COCO)
    _require_format(raw, ann_file, formats.COCO)
    _check_coco_layout(raw, ann_file)
    mapping = mapping_for(dataset)
    k = mapping.source.num_keypoints
    with quiet():
        coco = COCO()
        coco.dataset = raw
        coco.createIndex()

    records, sizes = [], {}
    ann_ids = [a for img_id in coco.getImgIds() for a in coco.getAnnIds(imgIds=img_id)]
    for ann_id in ann_ids:  # image by image, as MMPose orders its data list
        ann = coco.anns[ann_id]
        if ann.get("iscrowd", 0) or "keypoints" not in ann or "bbox" not in ann:
            continue
        keypoints = np.asarray(ann["keypoints"], dtype=np.float32)
        if keypoints.size != 3 * k:
            raise AnnotationError(
                f"{ann_file}: annotation {ann_id} has {keypoints.size // 3} keypoints, but "
                f"the '{dataset}' keypoint set has {k}; pass the matching dataset name")
        keypoints = keypoints.reshape(k, 3)
        if ann.get("num_keypoints", np.count_nonzero(keypoints[:, 2])) == 0:
            continue
        if keypoints[:, :2].max() <= 0:
            continue
        img = coco.imgs.get(ann["image_id"])
        if img is None:
            raise AnnotationError(f"{ann_file}: annotation {ann_id} refers to image id "
                                  f"{ann['image_id']}, which is not in 'images'")
        bbox = _clip_box(ann["bbox"], img["width"], img["height"])
        if bbox is None:
            continue
        path = img_dir / img["file_name"]
        if path not in sizes:
            sizes[path] = _image_size(path, ann_file)
        records.append(InstanceRecord(
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
            area=float(ann.get("area", bbox[2] * bbox[3] * 0.53)),
        ))
    return records


def _check_coco_layout(raw: dict, ann_file: Path) -> None:
    for key in ("images", "annotations", "categories"):
        if key not in raw:
            raise AnnotationError(f"{ann_file}: missing the '{key}' list of a COCO keypoint file")
    for img in raw["images"]:
        missing = {"id", "file_name", "width", "height"} - set(img)
        if missing:
            raise AnnotationError(f"{ann_file}: image entry {img.get('id', '?')} lacks "
                                  f"{sorted(missing)}")


def _clip_box(bbox: list[float], width: int, height: int) -> np.ndarray | None:
    """Clip ``x, y, w, h`` to the image as MMPose does; ``None`` for an empty box."""
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
    x2, y2 = np.clip(x + w, 0, width - 1), np.clip(y + h, 0, height - 1)
    if x2 <= x1 or y2 <= y1:
        return None
    corners = np.array([x1, y1, x2, y2], dtype=np.float32)  # MMPose's float32 xyxy box
    return box_from_center((corners[:2] + corners[2:]) * np.float32(0.5),
                           corners[2:] - corners[:2])


def read_mpii(ann_file: str | Path, img_dir: str | Path,
              headbox_file: str | Path | None = None) -> list[InstanceRecord]:
    """Read MPII in MMPose's JSON format (``image, center, scale, joints, joints_vis``).

    Head sizes for PCKh come from a per-annotation ``head_box`` field (``[x1, y1, x2, y2]``)
    or from the official ``mpii_gt_val.mat`` (``headboxes_src``, aligned with the file's
    order); the head size is ``0.6 x`` the head-box diagonal, as MPII's evaluation.

    Boxes are built as MMPose's ``MpiiDataset``: ``scale x 200`` square, centre moved down by
    ``15 / 200 x scale`` and shifted by -1 (MATLAB 1-based). Joints are shifted by -1 too,
    so crops and targets are exact; MMPose keeps them 1-based and adds 1 to predictions at
    evaluation instead, which gives the same PCKh.
    """
    ann_file = _require_file(ann_file, "MPII annotation file")
    img_dir = _require_dir(img_dir, "MPII image folder")
    anns = _load_json(ann_file, formats.MPII)
    _require_format(anns, ann_file, formats.MPII, formats.EMPTY_LIST)
    head_boxes = _read_headboxes(headbox_file, len(anns), ann_file) if headbox_file else None
    mapping = mapping_for("mpii")
    k = mapping.source.num_keypoints
    records, image_ids, sizes = [], {}, {}
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
            sizes[path] = _image_size(path, ann_file)
        width, height = sizes[path]
        image_ids.setdefault(ann["image"], _mpii_image_id(ann["image"], len(image_ids)))
        # MpiiDataset's float32 arithmetic, step for step: crops equal MMPose's to the bit.
        box_size = np.float32(ann["scale"]) * np.float32(MPII_PIXEL_STD)
        center = np.asarray(ann["center"], dtype=np.float32)
        if center[0] != -1:
            center[1] = center[1] + 15.0 / MPII_PIXEL_STD * box_size
        center = center - np.float32(1)
        bbox = box_from_center(center, np.array([box_size, box_size]))
        head = head_boxes[index] if head_boxes is not None else ann.get("head_box")
        records.append(InstanceRecord(
            image_path=str(path),
            dataset="mpii",
            image_id=image_ids[ann["image"]],
            instance_id=index,
            image_width=int(width),
            image_height=int(height),
            bbox=bbox,
            keypoints=mapping.keypoints_to_unified(joints - 1),
            visible=mapping.keypoints_to_unified(joints_vis),
            annotated=mapping.annotated.copy(),
            head_size=None if head is None else _head_size(head, ann_file, index),
            area=float(max(box_size * box_size * 0.53, 1.0)),
        ))
    return records


def box_from_center(center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """A float32 ``x, y, w, h`` box whose centre and padded size, read back the way
    :func:`~unipose_ray.data.geometry.box_center_scale` reads every box (MMPose's
    ``bbox_xyxy2cs``, float32), are exactly ``center`` and ``size x 1.25``.

    MMPose crops a person from its float32 box centre and size (MPII: as stored; COCO: from
    the clipped corners). A box rebuilt naively loses the last bit of either on the way
    back, which moves a few crop pixels by one grey level. Corners and sides are searched
    within a few ulps for ones that round-trip (where no side does, one a hair short: the
    aspect fix then mostly takes the other axis's side); the naive box is kept where none
    does.
    """
    box = []
    for c, side in zip(np.asarray(center, np.float32), np.broadcast_to(np.float32(size), 2)):
        padded = side * np.float32(BOX_PADDING)
        corners = _ulp_neighbours(np.float32(c - side / np.float32(2)), 32)
        x1, w = np.meshgrid(corners, _ulp_neighbours(side, 4), indexing="ij")
        x2 = x1 + w
        centred = (x1 + x2) * np.float32(0.5) == c
        got = (x2 - x1) * np.float32(BOX_PADDING)
        i, j = 0, 0
        for ok in (centred & (got == padded), centred & (got <= padded)):
            if ok.any():
                i, j = np.unravel_index(np.argmax(ok), ok.shape)
                break
        box.append((x1[i, j], w[i, j]))
    (x, w), (y, h) = box
    return np.array([x, y, w, h], dtype=np.float32)


def _ulp_neighbours(value: np.float32, n: int) -> np.ndarray:
    """``value`` first, then the float32 values up to ``n`` ulps above and below it."""
    up, down = [value], [value]
    for _ in range(n):
        up.append(np.nextafter(up[-1], np.float32(np.inf)))
        down.append(np.nextafter(down[-1], np.float32(-np.inf)))
    return np.array([value, *sum(zip(up[1:], down[1:]), ())], dtype=np.float32)


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

    path = _require_file(path, "MPII head-box file")
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
