"""Benchmark the top-down pipeline: samples/s per core for 192x256 crops.

Runs in one process with OpenCV single-threaded, so the figure is per core. Times each
stage side by side on the same samples: image decode, crop + augmentation, SimCC targets,
and the whole ``TopdownDataset.sample`` call.

    python jobs/benchmark_pipeline.py                      # generated data (made in a temp dir)
    python jobs/benchmark_pipeline.py --coco-ann A.json --coco-img-dir DIR
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2

from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset, load_image
from unipose_ray.data.readers import read_coco
from unipose_ray.data.synthetic import SyntheticConfig, generate_dataset
from unipose_ray.data.transforms import (
    AugmentConfig,
    crop_image,
    simcc_targets,
    transform_keypoints,
)


def _rate(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def run(records, samples: int, augment: AugmentConfig) -> dict[str, float]:
    dataset = TopdownDataset(records, PipelineConfig(augment=augment))
    indices = [i % len(dataset) for i in range(samples)]
    params = [dataset.params(i, epoch=0) for i in indices]
    images = {r.image_path: load_image(r.image_path) for r in dataset.records}
    pairs = list(zip(indices, params, strict=True))
    codec = dataset.config.codec

    def targets(pair):
        keypoints, visible, annotated = transform_keypoints(dataset.records[pair[0]], pair[1])
        simcc_targets(keypoints, visible * annotated, codec)

    return {
        "draw params": _rate(lambda i: dataset.params(i, epoch=1), indices),
        "decode image": _rate(lambda i: load_image(dataset.records[i].image_path), indices),
        "crop + augment": _rate(lambda p: crop_image(images[dataset.records[p[0]].image_path], p[1]), pairs),
        "keypoints + SimCC targets": _rate(targets, pairs),
        "full sample": _rate(lambda i: dataset.sample(i, epoch=2), indices),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-ann", type=Path, help="COCO person-keypoints file to crop from")
    parser.add_argument("--coco-img-dir", type=Path, help="its image folder")
    parser.add_argument("--samples", type=int, default=400, help="samples timed per stage")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        if args.coco_ann:
            source, records = str(args.coco_ann), read_coco(args.coco_ann, args.coco_img_dir)
        else:
            data = generate_dataset(tmp, SyntheticConfig(coco_train=100, coco_val=0,
                                                         mpii_train=0, mpii_val=0))
            source = "generated COCO-format data"
            records = read_coco(data.coco_train_ann, data.coco_train_images)
        print(f"{len(records)} instances from {source}; {args.samples} samples per stage, "
              "1 thread")
        for name, augment in (("RTMPose stage-1 augmentation", AugmentConfig()),
                              ("no augmentation", AugmentConfig.none())):
            rates = run(records, args.samples, augment)
            print(f"\n{name}: samples/s per core")
            for stage, rate in rates.items():
                print(f"  {stage:<28}{rate:>10.1f}")
            print(f"  full sample / decode ratio  {rates['full sample'] / rates['decode image']:>10.2f}")


if __name__ == "__main__":
    main()
