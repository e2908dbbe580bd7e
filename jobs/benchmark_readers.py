"""Benchmark ``read_coco`` on a COCO-train-sized file: the previous reader vs the current one.

Generates a person-keypoints file of COCO train's size (118,287 image entries, ~150k people
with keypoints) whose images are hard links to one real sample image under distinct names,
in a temp folder. Times, in one process: the reader of ``--before`` (a git revision; by
default the commit before the box search was vectorised and the per-image open removed,
loaded from git, so the comparison reruns), then the current ``read_coco``; the records
must be equal, field by field.

    python jobs/benchmark_readers.py
    python jobs/benchmark_readers.py --images 20000     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from unipose_ray.data.readers import read_coco
from unipose_ray.skeleton import COCO

PREVIOUS = "883f97518567ad087e7b6de5a41a9302b3611f65"  # per-record box search, PIL per image


def write_coco_train_like(folder: Path, images: int, people: int, sample: Path, seed: int = 0
                          ) -> Path:
    """``person_keypoints.json`` + ``images/`` of hard links to copies of ``sample`` (a
    new copy every 50,000 names: file systems cap a file's links)."""
    rng = np.random.default_rng(seed)
    image_dir = folder / "images"
    image_dir.mkdir()
    entries = []
    for image_id in range(1, images + 1):
        name = f"{image_id:012d}.jpg"
        if image_id % 50_000 == 1:
            source = folder / f"sample_{image_id}.jpg"
            shutil.copyfile(sample, source)
        os.link(source, image_dir / name)
        entries.append({"id": image_id, "file_name": name, "width": 640, "height": 480})
    anns = []
    for ann_id, image_id in enumerate(rng.integers(1, images + 1, people).tolist(), 1):
        x, y, w, h = (float(v) for v in (*rng.uniform(-20, [600, 440]), *rng.uniform(5, 300, 2)))
        k = np.c_[rng.uniform([x, y], [x + w, y + h], (17, 2)), np.full(17, 2.0)].round(2)
        k[rng.random(17) < 0.3] = 0
        anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                     "bbox": [x, y, w, h], "area": w * h * 0.6,
                     "num_keypoints": int(np.count_nonzero(k[:, 2])),
                     "keypoints": k.ravel().tolist()})
    path = folder / "person_keypoints.json"
    categories = [{"id": 1, "name": "person", "keypoints": list(COCO.names), "skeleton": []}]
    path.write_text(json.dumps({"images": entries, "annotations": anns,
                                "categories": categories}))
    return path


def previous_reader(revision: str) -> types.ModuleType:
    """``unipose_ray/data/readers.py`` as of ``revision``, loaded as a module."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{revision}:unipose_ray/data/readers.py"],
                            cwd=root, check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("readers_previous")
    exec(compile(source, f"readers.py@{revision[:7]}", "exec"), module.__dict__)  # noqa: S102
    return module


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)
               if isinstance(getattr(a, f), np.ndarray) else getattr(a, f) == getattr(b, f)
               for f in a.__dataclass_fields__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=118_287, help="image entries")
    parser.add_argument("--people", type=int, default=150_000, help="people with keypoints")
    parser.add_argument("--before", default=PREVIOUS, help="git revision of the old reader")
    parser.add_argument("--sample", type=Path, required=True,
                        help="a JPEG image (any real one) every image entry links to")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    old = previous_reader(args.before)
    with tempfile.TemporaryDirectory() as tmp:
        ann_file = write_coco_train_like(Path(tmp), args.images, args.people, args.sample)
        timings, outputs = {}, {}
        for name, reader in ((f"before ({args.before[:7]})", old.read_coco),
                             ("now", read_coco)):
            start = time.perf_counter()
            outputs[name] = reader(ann_file, Path(tmp) / "images")
            timings[name] = time.perf_counter() - start
    before, now = outputs.values()
    equal = len(before) == len(now) and all(_same(a, b) for a, b in zip(before, now))
    print(f"read_coco: {args.images:,} image entries, {args.people:,} people, "
          f"{len(now):,} records kept")
    for name, seconds in timings.items():
        print(f"  {name:<20}{seconds:>8.2f} s  ({1e6 * seconds / len(now):.0f} us a record)")
    print(f"  speed-up {timings[next(iter(timings))] / timings['now']:.1f}x; records equal: {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
