"""Generate the synthetic datasets in the COCO, MPII, AIC, CrowdPose and Halpe-26 formats.

    python jobs/make_dataset.py --out data/synthetic --seed 0 \\
        --coco-train 2048 --coco-val 256 --mpii-train 2048 --mpii-val 256

AIC, CrowdPose and Halpe-26 are written when given images (``--halpe26-train 512
--halpe26-val 64``, ...); Halpe-26 puts feet on every figure of the run.

The layout under ``--out`` is documented in :func:`unipose_ray.data.synthetic.dataset_paths`.
The same arguments always produce byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import time

from unipose_ray.cli import entry
from unipose_ray.data.synthetic import (
    DATASETS,
    SPLITS,
    SyntheticConfig,
    SyntheticDataset,
    generate_dataset,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    for dataset in DATASETS:
        for split in SPLITS:
            parser.add_argument(f"--{dataset}-{split}", type=int,
                                default=defaults.num_images(dataset, split),
                                help=f"number of {dataset} {split} images "
                                     f"(default {defaults.num_images(dataset, split)})")
    parser.add_argument("--image-size", type=int, nargs=2, default=defaults.image_size,
                        metavar=("MIN", "MAX"), help="side length range in pixels")
    parser.add_argument("--max-people", type=int, default=defaults.max_people)
    parser.add_argument("--jpeg-quality", type=int, default=defaults.jpeg_quality)
    return parser.parse_args(argv)


@entry
def main(argv: list[str] | None = None) -> SyntheticDataset:
    args = parse_args(argv)
    counts = {f"{d}_{s}": getattr(args, f"{d}_{s}") for d in DATASETS for s in SPLITS}
    config = SyntheticConfig(
        seed=args.seed,
        **counts,
        image_size=tuple(args.image_size),
        max_people=args.max_people,
        jpeg_quality=args.jpeg_quality,
    )
    start = time.perf_counter()
    data = generate_dataset(args.out, config)
    seconds = time.perf_counter() - start
    total = sum(config.num_images(d, s) for d in data.datasets for s in SPLITS)
    print(f"wrote {total} images in {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} img/s) "
          f"under {data.root}")
    for dataset in data.datasets:
        for split in SPLITS:
            ann = data.annotation_file(dataset, split)
            print(f"  {dataset} {split}: {config.num_images(dataset, split)} images in "
                  f"{data.images_dir(dataset, split)}, {_count_people(ann)} people in {ann}")
            if dataset == "aic":
                print(f"  {dataset} {split}, AI Challenger's format: "
                      f"{data.raw_annotation_file(dataset, split)}")
        print(f"  {dataset} val, {data.skeleton.num_keypoints} unified keypoints: "
              f"{data.unified_val_file(dataset)}")
    return data


def _count_people(ann_file) -> int:
    content = json.loads(ann_file.read_text())
    return len(content) if isinstance(content, list) else len(content["annotations"])


if __name__ == "__main__":
    main()
