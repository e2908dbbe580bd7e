"""Which annotation format a file is in, told from its first bytes, and the error for a file
given where another format belongs.

A COCO person-keypoints file, a COCO results (detections) file, MMPose's MPII list, MPII's
``.mat`` files and AI Challenger's raw annotation list are easy to swap in a config; the
readers would then fail deep inside with a ``KeyError``. :func:`check_annotation_format`
says instead what the file looks like and where it belongs. AIC, CrowdPose and Halpe are
held as COCO-style files (MMPose's converted ``aic_*.json``, ``mmpose_crowdpose_*.json``,
``halpe_*_v1.json``), so their fields accept the COCO format (AIC's the raw list too).

Real files are 100-500 MB, so the format is read from a bounded prefix: the first character
tells an object from a list, then the object's top-level keys or the list's first element
decide.

Stdlib only: the jobs' preflight checks import this before numpy, torch or Ray.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from unipose_ray.cli import InputError, UsageError

COCO = "coco"
COCO_RESULTS = "coco_results"
MPII = "mpii"
MPII_MAT = "mpii_mat"
AIC_RAW = "aic_raw"
EMPTY = "empty"
EMPTY_LIST = "empty list"
NOT_JSON = "not JSON"
UNKNOWN_JSON = "unknown JSON"

# What a dataset's ``ann_file`` may hold (besides the formats above, each its own kind).
AIC = "aic"
CROWDPOSE = "crowdpose"
HALPE26 = "halpe26"

COCO_KEYS = frozenset({"images", "annotations", "categories"})
MPII_KEYS = frozenset({"joints", "joints_vis"})  # the fields only MMPose's MPII list has
AIC_KEYS = frozenset({"keypoint_annotations", "human_annotations"})  # AI Challenger's list
MAT_MAGIC = b"MATLAB"  # MAT v5 and v7.3 files both open with a "MATLAB x.y MAT-file" header
PEEKS = (64 << 10, 1 << 20)  # bytes read: a second, longer look only when the first is unsure

# What a file of each format is called, as what a field expects and as what a file looks like.
EXPECTED = {
    COCO: "a COCO person-keypoints file",
    COCO_RESULTS: "a COCO results file of person detections",
    MPII: "an MPII annotation list (MMPose's mpii_*.json)",
    MPII_MAT: "MPII's mpii_gt_val.mat",
    AIC: "an AIC annotation file (MMPose's COCO-style aic_*.json or AI Challenger's "
         "keypoint_*_annotations_*.json)",
    CROWDPOSE: "a CrowdPose annotation file (MMPose's COCO-style mmpose_crowdpose_*.json)",
    HALPE26: "a Halpe annotation file (COCO-style halpe_*_v1.json)",
}
ACCEPTS = {COCO: (COCO,), COCO_RESULTS: (COCO_RESULTS,), MPII: (MPII,), MPII_MAT: (MPII_MAT,),
           AIC: (COCO, AIC_RAW), CROWDPOSE: (COCO,), HALPE26: (COCO,)}
"""The formats each expected kind takes."""
LIST_FORMATS = frozenset({MPII, COCO_RESULTS, AIC_RAW})  # an empty JSON list is one of them
LOOKS_LIKE = {
    COCO: "a COCO annotation file (a JSON object with images/annotations/categories)",
    COCO_RESULTS: "a COCO results file (a JSON list of detections or predictions, "
                  "{image_id, bbox, score})",
    MPII: "an MPII annotation list (MMPose's mpii_*.json)",
    MPII_MAT: "a MATLAB .mat file (such as MPII's mpii_gt_val.mat or "
              "mpii_human_pose_v1_u12_1.mat)",
    AIC_RAW: "an AI Challenger annotation list (a JSON list of {image_id, "
             "keypoint_annotations, human_annotations})",
}
POINT_AT = {
    COCO: "person_keypoints_*.json",
    COCO_RESULTS: "a person detections file (COCO results format, such as "
                  "COCO_val2017_detections_AP_H_56_person.json)",
    MPII: "MMPose's mpii_*.json",
    MPII_MAT: "MPII's mpii_gt_val.mat",
    AIC: "MMPose's aic_*.json or AI Challenger's keypoint_*_annotations_*.json",
    CROWDPOSE: "MMPose's mmpose_crowdpose_*.json",
    HALPE26: "Halpe's halpe_*_v1.json",
}
# A config field such as ``data.coco_train.ann_file``: which dataset, split and file it is.
FIELD = re.compile(r"^(?P<prefix>.*?)(?:coco|mpii|aic|crowdpose|halpe26)_(?P<split>\w+)\.\w+$")
# Strings and structure; numbers, literals, commas and blanks carry no keys and are skipped.
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:]')


class AnnotationError(UsageError, ValueError):
    """An annotation file is missing, malformed, or points at missing images (the user's
    file to fix: a job reports it as one message, exit code 2)."""


class AnnotationFormatError(InputError, AnnotationError):
    """An annotation file given where a file of another format belongs."""


def annotation_format(path: str | Path) -> str:
    """The format of ``path``, read from its first bytes (64 KiB, 1 MiB when unsure).

    Returns one of :data:`COCO` (a JSON object with images/annotations/categories),
    :data:`COCO_RESULTS` (a JSON list of ``{image_id, bbox, score}`` or keypoint results),
    :data:`MPII` (MMPose's list of ``{image, center, scale, joints, joints_vis}``),
    :data:`AIC_RAW` (AI Challenger's list of ``{image_id, keypoint_annotations,
    human_annotations}``), :data:`MPII_MAT` (a MATLAB file), :data:`EMPTY_LIST`,
    :data:`EMPTY`, :data:`NOT_JSON` or :data:`UNKNOWN_JSON`. A file no longer than a look
    is parsed whole (so a cut-off small file is :data:`NOT_JSON`); a longer one is judged by
    its prefix alone.
    """
    for peek in PEEKS:
        with open(path, "rb") as f:
            data = f.read(peek + 1)
        if data.startswith(MAT_MAGIC):
            return MPII_MAT
        if len(data) <= peek:
            return _whole_file_format(data)
        found = _prefix_format(data[:peek].decode("utf-8", errors="replace"))
        if found is not None:
            return found
    return UNKNOWN_JSON


def json_format(content: object) -> str:
    """The format of already-parsed JSON ``content`` (as :func:`annotation_format`): lets a
    reader check the object it parsed without reading the file twice."""
    if isinstance(content, dict):
        return _object_format(content.keys())
    if isinstance(content, list):
        return _list_format(content[0]) if content else EMPTY_LIST
    return UNKNOWN_JSON


def accepted(expected: str) -> frozenset[str]:
    """The formats a file given as ``expected`` (a key of :data:`ACCEPTS`) may have; an
    empty JSON list passes where a list format does (MPII, detections, raw AIC)."""
    if expected not in ACCEPTS:
        raise ValueError(f"unknown annotation format '{expected}'; known: {sorted(ACCEPTS)}")
    formats = frozenset(ACCEPTS[expected])
    return formats | {EMPTY_LIST} if formats & LIST_FORMATS else formats


def check_annotation_format(path: str | Path, expected: str, field: str) -> None:
    """Raise :class:`AnnotationFormatError` unless ``path`` holds ``expected``
    (:data:`COCO`, :data:`COCO_RESULTS`, :data:`MPII`, :data:`MPII_MAT`, or a dataset's
    annotation file: :data:`AIC`, :data:`CROWDPOSE`, :data:`HALPE26`; :data:`ACCEPTS`).

    ``field`` is the config field the path was given as (``data.coco_train.ann_file``); the
    message names it, the file, what the file looks like and where it belongs instead. An
    empty JSON list passes for the list formats (MPII, detections, raw AIC).
    """
    ok = accepted(expected)
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise InputError(f"{field} = {path} {what}; point it at {POINT_AT[expected]}")
    found = annotation_format(path)
    if found not in ok:
        raise format_error(path, found, expected, field)


def format_error(path: str | Path, found: str, expected: str, field: str | None = None
                 ) -> AnnotationFormatError:
    """The error for ``path``, of format ``found``, given where ``expected`` belongs.

    Without ``field`` (a reader called directly) the message names the file alone and the
    fields it belongs in by pattern (``data.mpii_*.ann_file``).
    """
    subject = f"{field} = {path}" if field else f"{path}"
    instead = _instead(expected, field)
    if found == EMPTY:
        return AnnotationFormatError(f"{subject} is empty, not {EXPECTED[expected]}: a download "
                                     f"or copy cut short? Fetch it again, {instead}")
    if found == NOT_JSON:
        return AnnotationFormatError(f"{subject} is not JSON, so not {EXPECTED[expected]}: a "
                                     f"download or copy cut short? Fetch it again, {instead}")
    if found == UNKNOWN_JSON:
        return AnnotationFormatError(f"{subject} is JSON of no known annotation format, not "
                                     f"{EXPECTED[expected]}: {instead.removeprefix('or ')}")
    if found == EMPTY_LIST:
        return AnnotationFormatError(f"{subject} is an empty JSON list, not "
                                     f"{EXPECTED[expected]}: {instead.removeprefix('or ')}")
    return AnnotationFormatError(f"{subject} looks like {LOOKS_LIKE[found]}, not "
                                 f"{EXPECTED[expected]}: {_where_it_goes(found, field)}, {instead}")


def _where_it_goes(found: str, field: str | None) -> str:
    """The field a file of format ``found`` belongs in: ``field``'s sibling when it is one of
    ``data.<dataset>_<split>.<file>``, else the pattern (``data.mpii_*.ann_file``)."""
    match = FIELD.match(field or "")
    prefix, split = (match["prefix"], match["split"]) if match else ("data.", "*")
    if found == MPII_MAT:
        return f"if it is mpii_gt_val.mat (head boxes), give it as {prefix}mpii_val.headbox_file"
    belongs = {COCO: f"{prefix}coco_{split}.ann_file",
               COCO_RESULTS: f"{prefix}coco_val.bbox_file",
               MPII: f"{prefix}mpii_{split}.ann_file",
               AIC_RAW: f"{prefix}aic_{split}.ann_file"}[found]
    return f"give it as {belongs}"


def _instead(expected: str, field: str | None) -> str:
    if field:
        return f"or point this field at {POINT_AT[expected]}"
    return f"or pass {POINT_AT[expected]} instead"


def _whole_file_format(data: bytes) -> str:
    if not data.strip():
        return EMPTY
    try:
        return json_format(json.loads(data))
    except (ValueError, RecursionError):  # JSONDecodeError, or bytes in no JSON encoding
        return NOT_JSON


def _prefix_format(text: str) -> str | None:
    """The format told by the first part of a longer file; ``None`` when it cannot tell."""
    start = text.lstrip("\ufeff \t\r\n")
    if not start:
        return None
    if start[0] == "{":
        return _object_prefix_format(start)
    if start[0] == "[":
        return _list_prefix_format(start)
    return NOT_JSON  # JSON files this long are objects or lists


def _object_prefix_format(text: str) -> str | None:
    """Scan the object's top-level keys until a COCO one shows or the object closes."""
    keys, depth, previous = set(), 0, None
    for token in TOKEN.finditer(text):
        value = token.group()
        if value in ("{", "["):
            depth += 1
        elif value in ("}", "]"):
            depth -= 1
            if depth == 0:
                return _object_format(keys)
        elif value == ":" and depth == 1 and previous is not None and previous[0] == '"':
            keys.add(previous[1:-1])  # escapes cannot make a COCO key: left as they are
            if keys & COCO_KEYS:
                return COCO
        previous = value
    return None


def _list_prefix_format(text: str) -> str | None:
    """Decode the list's first element alone."""
    index = len(text) - len(text[1:].lstrip())  # just past the '[' and any blanks
    if text[index:index + 1] == "]":
        return EMPTY_LIST
    try:
        element, _ = json.JSONDecoder().raw_decode(text, index)
    except json.JSONDecodeError:
        return None  # cut off by the prefix (or broken): a longer look, then unknown
    return _list_format(element)


def _object_format(keys: Iterable[str]) -> str:
    return COCO if COCO_KEYS & set(keys) else UNKNOWN_JSON


def _list_format(first: object) -> str:
    if not isinstance(first, dict):
        return UNKNOWN_JSON
    if MPII_KEYS & first.keys():
        return MPII
    if AIC_KEYS & first.keys():
        return AIC_RAW
    if "image_id" in first and ("keypoints" in first or "bbox" in first):
        return COCO_RESULTS
    return UNKNOWN_JSON
