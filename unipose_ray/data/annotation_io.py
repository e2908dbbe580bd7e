"""Opening annotation files and the images they name, with errors that say which file.

Shared by the readers (:mod:`unipose_ray.data.readers`, :mod:`unipose_ray.data.aic`): a
missing path, a file that is no JSON or JSON of another format, a field that is not the
numbers it should be, an image that is missing or unreadable. Each message names the file
and what is wrong in it; a file in another format says what it looks like
(:mod:`unipose_ray.data.formats`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from unipose_ray.data import formats
from unipose_ray.data.formats import AnnotationError, AnnotationFormatError

EXIF_ORIENTATION = 0x0112
SIDEWAYS = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees
HEADER_THREADS = 16  # image headers read at once: the wait is the file system's, not the CPU's


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist (check the path you passed)")
    return path.resolve()


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a folder")
    return path.resolve()


def load_json(path: Path, expected: str) -> object:
    """Parse ``path``; one that is not JSON is sniffed (only then) to say what it is instead
    of ``expected`` (a kind of :data:`formats.ACCEPTS`)."""
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError on a binary file
        found = formats.annotation_format(path)  # only now: a valid file is read once
        if found not in {*formats.accepted(expected), formats.NOT_JSON, formats.UNKNOWN_JSON}:
            raise formats.format_error(path, found, expected) from e  # empty, a .mat...
        raise AnnotationFormatError(f"{path} is not valid JSON: {e}; a download or copy cut "
                                    "short? Fetch it again") from e


def require_format(content: object, path: Path, expected: str) -> str:
    """The format of parsed ``content`` (told from its top-level keys or first element, no
    second read); raise :class:`AnnotationFormatError` unless ``expected`` accepts it."""
    found = formats.json_format(content)
    if found not in formats.accepted(expected):
        raise formats.format_error(path, found, expected)
    return found


def number_rows(rows: Sequence[object], width: int, where: Callable[[int], str]
                ) -> np.ndarray:
    """``rows`` (lists of numbers, from JSON) as one ``(N, width)`` float64 array.

    Converted at once; only when that fails is each row looked at, to raise an
    :class:`AnnotationError` that says ``where(i)`` the first bad row ``i`` is and what it
    holds (a string, a ``null``, a list of the wrong length).
    """
    if not rows:
        return np.zeros((0, width))
    try:
        array = np.array(rows)
    except ValueError:  # rows of different lengths
        array = None
    if array is not None and array.dtype.kind in "iuf" and array.shape == (len(rows), width):
        return array.astype(np.float64)
    bad = next((i for i, row in enumerate(rows) if not _numbers(row, width)), None)
    if bad is None:  # numbers numpy cannot hold (beyond int64)
        raise AnnotationError(f"{where(0)}: values are not numbers numpy can hold")
    raise AnnotationError(f"{where(bad)} must be {width} numbers, found {_short(rows[bad])}")


def _numbers(row: object, width: int) -> bool:
    return (isinstance(row, list) and len(row) == width
            and all(isinstance(x, (int, float)) for x in row))


def _short(value: object, limit: int = 120) -> str:
    text = json.dumps(value)
    count = f" ({len(value)} values)" if isinstance(value, list) else ""
    return (text if len(text) <= limit else f"{text[:limit]}...") + count


def image_size(path: Path, ann_file: Path) -> tuple[int, int]:
    """``(width, height)`` of an image as it is loaded (``cv2.imread`` turns an image by its
    EXIF orientation), from its header: no pixel is decoded."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            sideways = image.getexif().get(EXIF_ORIENTATION) in SIDEWAYS
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{ann_file} refers to image {path}, which does not exist; check the image folder "
            "you passed matches this annotation file") from None
    except OSError as e:
        raise AnnotationError(f"image {path} (from {ann_file}) cannot be read: {e}") from e
    return (height, width) if sideways else (width, height)


def image_sizes(paths: Sequence[Path], ann_file: Path) -> dict[Path, tuple[int, int]]:
    """:func:`image_size` of each distinct path, headers read a few at a time."""
    distinct = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=HEADER_THREADS) as pool:
        sizes = list(pool.map(lambda path: image_size(path, ann_file), distinct))
    return dict(zip(distinct, sizes))


def require_images(paths: Sequence[Path], ann_file: Path) -> None:
    """Raise naming the first of ``paths`` that is not a file: one directory listing per
    folder, no image opened (a read per image is slow on network storage)."""
    listings: dict[Path, set[str]] = {}
    for path in dict.fromkeys(paths):
        if path.parent not in listings:
            listings[path.parent] = _file_names(path.parent)
        if path.name not in listings[path.parent]:
            raise FileNotFoundError(
                f"{ann_file} refers to image {path}, which does not exist; check the image "
                "folder you passed matches this annotation file")


def _file_names(folder: Path) -> set[str]:
    """Names of the files in ``folder`` (none if it is missing)."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries if entry.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()
