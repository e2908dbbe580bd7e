"""The driver at real scale: every driver-side step of a COCO + MPII run, timed and sized.

    python jobs/benchmark_scale.py --coco-sample coco/sample.json --mpii-sample mpii/sample.json \\
        --coco-scale --out bench_scale      # COCO/MPII train + val sizes, files kept
    python jobs/benchmark_scale.py ... --scale 0.05      # a twentieth of them (quick)

The samples are a few real people: a COCO keypoints file and an MMPose MPII file, each with
its images beside it (a handful from your copy of the datasets). Writes annotation files of
the real ones' shape (COCO train: 118,287 image entries,
262,465 person annotations of which 149,813 with keypoints, polygons included; COCO val
5,000 images / 6,352 people; MPII 22,246 + 2,958 people in MMPose's JSON), their images hard
links to the samples' images (one file per image name, as a user holds them),
then runs what the driver runs before and around training, each step on its own, and
prints per step its wall time and the driver's peak resident memory during it (``VmHWM``,
reset before each step):

- ``prepare_data``: read the four annotation files, write the Parquet record sets;
- ``train_records``: the COCO + MPII training set the run trains on;
- ``read + fingerprint``: the record table as the driver ships it, and the teacher-logit
  cache's records fingerprint;
- ``metric @ dets``: COCO AP of detector-box predictions (``--dets-per-image`` boxes per
  val image, ~21 as COCO val's person detections), what rank 0 computes every validation;
- ``evaluate``: the evaluation's people/s (``--eval-people`` COCO val people, flip test,
  a random-weight RTMPose-m teacher at 192x256 on this machine's CPU), what the job pays
  per model and teacher on 9,310 val people; ``evaluate xN``: the same in ``N`` Ray tasks
  (``run.eval_workers``; on a cluster each with a teacher's GPU), the driver idle.

Generated files are kept in ``--out`` and reused (without it: a temporary folder). The crop stages' memory and the cache's
bytes read per epoch are ``jobs/benchmark_stream.py``'s; the metric alone side by side with
MMPose's is ``jobs/benchmark_metrics.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

COCO_SIZES = {"train": (118_287, 149_813, 262_465), "val": (5_000, 6_352, 11_004)}
MPII_SIZES = {"train": 22_246, "val": 2_958}
MPII_PEOPLE_PER_IMAGE = 1.4  # MPII: 25k people on ~18k images


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--coco-scale", action="store_true", help="the real datasets' sizes")
    size.add_argument("--scale", type=float, default=0.05,
                      help="a fraction of the real sizes (default 0.05)")
    parser.add_argument("--out", type=Path,
                        help="where the generated files and record sets go, reused (default: "
                             "a temporary folder)")
    parser.add_argument("--coco-sample", type=Path, required=True,
                        help="a COCO keypoints file of a few real people, images beside it")
    parser.add_argument("--mpii-sample", type=Path, required=True,
                        help="an MMPose-format MPII file of a few people, images beside it")
    parser.add_argument("--dets-per-image", type=int, default=21)
    parser.add_argument("--eval-people", type=int, default=48)
    parser.add_argument("--eval-workers", type=int, default=2,
                        help="also evaluate in this many Ray tasks (0: only on the driver)")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip")
    return parser.parse_args(argv)


# --- Files of the real shape ----------------------------------------------------------------


def _link(source: Path, target: Path) -> None:
    if not target.exists():
        os.link(source, target)


def write_coco(root: Path, split: str, sizes: tuple[int, int, int], sample: Path,
               rng: np.random.Generator) -> Path:
    """A COCO person-keypoints file: the sample's images and people, repeated and jittered."""
    real = json.loads(sample.read_text())
    people = [a for a in real["annotations"] if a["num_keypoints"] > 0]
    by_image = {im["id"]: im for im in real["images"]}
    num_images, num_people, num_annotations = sizes
    img_dir = root / f"coco_{split}"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image_id = i + 1
        source = by_image[people[i % len(people)]["image_id"]]
        name = f"{image_id:012d}.jpg"
        _link(sample.parent / source["file_name"], img_dir / name)
        images.append({**source, "id": image_id, "file_name": name})
    for n in range(num_annotations):
        labelled = n < num_people
        image_id = (n % num_images) + 1 if labelled else int(rng.integers(num_images)) + 1
        image = images[image_id - 1]
        template = people[(image_id - 1) % len(people)]  # the person of the linked image
        kp = np.asarray(template["keypoints"], np.float32).reshape(-1, 3)
        jitter = rng.normal(0, 2, (len(kp), 2)).astype(np.float32) * (kp[:, 2:] > 0)
        kp[:, :2] = np.clip(kp[:, :2] + jitter, 0, [image["width"] - 1, image["height"] - 1]) \
            * (kp[:, 2:] > 0)
        annotations.append({
            "id": n + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "area": template["area"], "bbox": template["bbox"],
            "segmentation": template["segmentation"],
            "num_keypoints": int((kp[:, 2] > 0).sum()) if labelled else 0,
            "keypoints": [round(float(v), 2) for v in kp.reshape(-1)] if labelled
            else [0] * kp.size})
    path = root / f"person_keypoints_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": real["categories"]}))
    return path


def write_mpii(root: Path, split: str, num_people: int, sample: Path,
               rng: np.random.Generator) -> Path:
    """An MMPose-format MPII file (val with ``head_box``): the sample's people, repeated."""
    real = json.loads(sample.read_text())
    img_dir = root / f"mpii_{split}"
    img_dir.mkdir(parents=True, exist_ok=True)
    anns = []
    num_images = max(int(num_people / MPII_PEOPLE_PER_IMAGE), 1)
    for n in range(num_people):
        template = real[n % len(real)]
        name = f"{n % num_images:09d}.jpg"
        _link(sample.parent / template["image"], img_dir / name)
        joints = np.asarray(template["joints"], np.float32)
        visible = np.asarray(template["joints_vis"], np.float32)
        joints = joints + rng.normal(0, 2, joints.shape).astype(np.float32) * visible[:, None]
        ann = {**template, "image": name, "joints": joints.round(2).tolist()}
        if split == "val":  # head box from upper neck (8) and head top (9)
            neck, top = joints[8], joints[9]
            half = max(float(np.linalg.norm(top - neck)) * 0.6, 8.0)
            centre = (neck + top) / 2
            ann["head_box"] = [*(centre - half).tolist(), *(centre + half).tolist()]
        anns.append(ann)
    path = root / f"mpii_{split}.json"
    path.write_text(json.dumps(anns))
    return path


def write_datasets(out: Path, scale: float, coco_sample: Path, mpii_sample: Path) -> list[str]:
    """The four files (reused when ``out`` already holds them at this scale): the
    ``data.*`` overrides of a run on them."""
    root = out / "data"
    marker = root / "scale.json"
    overrides = json.loads(marker.read_text()) if marker.exists() else None
    if overrides and overrides["scale"] == scale:
        return overrides["overrides"]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    overrides = []
    for split, sizes in COCO_SIZES.items():
        scaled = tuple(max(int(s * scale), 1) for s in sizes)
        path = write_coco(root, split, scaled, coco_sample, rng)
        overrides += [f"data.coco_{split}.ann_file={path}",
                      f"data.coco_{split}.img_dir={root / f'coco_{split}'}"]
    for split, people in MPII_SIZES.items():
        path = write_mpii(root, split, max(int(people * scale), 1), mpii_sample, rng)
        overrides += [f"data.mpii_{split}.ann_file={path}",
                      f"data.mpii_{split}.img_dir={root / f'mpii_{split}'}"]
    marker.write_text(json.dumps({"scale": scale, "overrides": overrides}))
    print(f"wrote the annotation files at scale {scale} in {time.perf_counter() - t0:.0f} s "
          f"({sum(p.stat().st_size for p in root.glob('*.json')) / 1e6:.1f} MB)", flush=True)
    return overrides


# --- Measured steps -------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@contextmanager
def step(rows: list[tuple[str, float, float, str]], name: str, note: str = ""):
    """Time the block and record the driver's peak RSS during it (GiB; ``VmHWM`` reset first,
    Linux's ``clear_refs`` 5). The block may set ``info["note"]``."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: the peak is the process's so far
        pass
    print(f"{name} ...", flush=True)
    info = {"note": note}
    t0 = time.perf_counter()
    yield info
    seconds = time.perf_counter() - t0
    rows.append((name, seconds, _status_kib("VmHWM") / 2**20, info["note"]))
    print(f"{name}: {seconds:.1f} s, peak {rows[-1][2]:.2f} GiB {info['note']}", flush=True)


def metric_at_detections(data, dets_per_image: int) -> tuple[int, float]:
    """COCO AP of ``dets_per_image`` boxes per val image (GT people jittered, the rest
    random): ``(detections, seconds)``."""
    from unipose_ray.data.records import read_records, table_to_records
    from unipose_ray.evaluation.coco_metric import KeypointPrediction, coco_keypoint_metrics
    from unipose_ray.skeleton import mapping_for

    coco = next(e for e in data.eval_sets if e.name == "coco")
    records = table_to_records(read_records(coco.records_path))
    by_image: dict[int, list] = {}
    for r in records:
        by_image.setdefault(r.image_id, []).append(r)
    joints = mapping_for("coco").to_unified
    rng = np.random.default_rng(0)
    preds = []
    for image_id, people in by_image.items():
        for d in range(dets_per_image):
            person = people[d % len(people)]
            kp = person.keypoints[joints] + rng.normal(0, 3 + d, (len(joints), 2))
            preds.append(KeypointPrediction(
                image_id, len(preds), kp.astype(np.float32),
                rng.uniform(0.05, 1, len(joints)).astype(np.float32),
                float(rng.uniform(0.05, 1)), person.bbox, float(np.prod(person.bbox[2:]) * 1.56)))
    first = [p for p in preds if p.image_id == preds[0].image_id]
    coco_keypoint_metrics(coco.ann_file, first)  # MMPose's imports, not the metric
    t0 = time.perf_counter()
    coco_keypoint_metrics(coco.ann_file, preds)
    return len(preds), time.perf_counter() - t0


def evaluation_rate(config, data, people: int, out: Path, workers: int = 0
                    ) -> tuple[int, float]:
    """``(people, seconds)`` of evaluating a random-weight RTMPose-m teacher (192x256, flip
    test) on the first ``people`` COCO val people, as the job evaluates each model: on the
    driver, or (``workers``) in that many Ray tasks (``run.eval_workers``)."""
    from dataclasses import replace

    from bench_common import paper_sizes, write_random_teacher

    from unipose_ray.evaluation.cross_dataset import evaluate_model
    from unipose_ray.models import build_from_config

    config = paper_sizes(config)
    teacher = next(t for t in config.teachers if t.dataset == "coco")
    teacher = write_random_teacher(teacher, config.student.codec, out)
    model = build_from_config(teacher.config, teacher.checkpoint)
    coco = replace(next(e for e in data.eval_sets if e.name == "coco"), max_samples=people)
    if not workers:
        t0 = time.perf_counter()
        evaluate_model(model, "coco", model.spec.codec, [coco], flip_test=True)
        return people, time.perf_counter() - t0
    import ray

    from unipose_ray.evaluation.cross_dataset import eval_inputs
    from unipose_ray.runtime.distributed import start_local_ray
    from unipose_ray.workflows.evaluation import EvalWorkers, submit_evaluation

    started = not ray.is_initialized()  # (the CI tier's smoke runs on its shared Ray)
    if started:
        start_local_ray(num_cpus=os.cpu_count() or 1, include_dashboard=False)
    try:
        inputs = eval_inputs([coco])
        seconds = []
        for _ in range(2):  # cold (the tasks' processes start), then warm
            t0 = time.perf_counter()
            submit_evaluation(model, "coco", model.spec.codec, inputs, EvalWorkers(workers)
                              ).result()
            seconds.append(time.perf_counter() - t0)
        print(f"  {workers} Ray tasks: cold {seconds[0]:.1f} s, warm {seconds[1]:.1f} s")
        return people, seconds[1]
    finally:
        if started:
            ray.shutdown()


def _has_remote_evaluation() -> bool:
    """Whether this checkout evaluates in Ray tasks (the script also runs on older ones, for
    the before/after table)."""
    import importlib.util

    return importlib.util.find_spec("unipose_ray.workflows.evaluation") is not None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.out is not None:
        return measure(args, args.out.resolve())
    with tempfile.TemporaryDirectory(prefix="unipose_scale_") as out:
        return measure(args, Path(out))


def measure(args: argparse.Namespace, out: Path) -> None:
    """Write (or reuse) the files in ``out``, run each step, print the table."""
    scale = 1.0 if args.coco_scale else args.scale
    skip = set(filter(None, args.skip.split(",")))
    overrides = write_datasets(out, scale, args.coco_sample.resolve(), args.mpii_sample.resolve())

    import torch

    from unipose_ray.config import load_config
    from unipose_ray.data.records import read_records
    from unipose_ray.teacher_cache.source import records_fingerprint
    from unipose_ray.workflows.training import prepare_data

    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    config = load_config("paper", [*overrides, "run.val_samples=0", "data.mpii_val.headbox_file=null"])
    rows: list[tuple[str, float, float, str]] = []
    records_dir = out / "records"
    for old in records_dir.glob("*"):  # every run measures the reading, not the reuse
        old.unlink()
    with step(rows, "prepare_data", "read 4 annotation files, write record sets"):
        config, data = prepare_data(config, out)
    with step(rows, "train_records", "COCO + MPII training set"):
        path = data.train_records(sorted(data.train), records_dir)
    with step(rows, "read + fingerprint") as info:
        records = read_records(path)
        records_fingerprint(records)
        info["note"] = f"{records.num_rows:,} records"
    if "metric" not in skip:
        with step(rows, "metric @ dets") as info:
            dets, seconds = metric_at_detections(data, args.dets_per_image)
            info["note"] = f"{dets:,} detections, {seconds:.1f} s in the metric"
    if "evaluate" not in skip:
        with step(rows, "evaluate") as info:
            people, seconds = evaluation_rate(config, data, args.eval_people, out)
            info["note"] = f"{people / seconds:.2f} people/s on the driver (RTMPose-m, flip)"
    if "evaluate" not in skip and args.eval_workers and _has_remote_evaluation():
        with step(rows, f"evaluate x{args.eval_workers}") as info:
            people, seconds = evaluation_rate(config, data, args.eval_people, out,
                                              args.eval_workers)
            info["note"] = (f"{people / seconds:.2f} people/s in {args.eval_workers} Ray tasks "
                            "(warm), the driver idle")
    print(f"\nscale {scale} ({records.num_rows:,} training records), {os.cpu_count()} CPUs")
    print("| step | wall s | peak RSS GiB | |\n|---|---:|---:|---|")
    for name, seconds, peak, note in rows:
        print(f"| {name} | {seconds:.1f} | {peak:.2f} | {note} |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
