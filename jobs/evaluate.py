"""Evaluate one MMPose-format checkpoint on COCO and MPII: the cross-dataset table.

    python jobs/evaluate.py --config rtmpose-t_unified.py --checkpoint best.pth \\
        --coco-ann person_keypoints_val2017.json --coco-img-dir val2017 \\
        --mpii-ann mpii_val.json --mpii-img-dir images --mpii-headbox-file mpii_gt_val.mat \\
        --output table.json

The model may be a 21-keypoint unified student or a 17-keypoint COCO / 16-keypoint MPII
teacher: its keypoint set follows from its keypoint count, and joints it does not predict
count as misses. ``--output`` writes the metrics as flat JSON (``coco_AP``, ``mpii_PCKh``,
``mpii_PCKh@0.1``, ``unified_AP``, ``score``, ...; NaN is written as ``null``).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

from unipose_ray.data.sources import DataConfig, DatasetFiles, prepare_records
from unipose_ray.data.transforms import CodecConfig
from unipose_ray.evaluation.cross_dataset import EvalSet, evaluate_model, format_table
from unipose_ray.models import PoseModelSpec, build_from_config
from unipose_ray.skeleton import KEYPOINT_SETS

KEYPOINT_SET_BY_COUNT = {ks.num_keypoints: name for name, ks in KEYPOINT_SETS.items()}
"""A model's keypoint count -> the keypoint set it predicts (21 unified, 17 coco, 16 mpii)."""


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="MMPose model config (.py)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="MMPose checkpoint (.pth)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle the checkpoint without restrictions (trusted files only)")
    parser.add_argument("--coco-ann", type=Path, help="COCO person-keypoints val file (17 joints)")
    parser.add_argument("--coco-img-dir", type=Path, help="its image folder")
    parser.add_argument("--coco-unified-ann", type=Path,
                        help="21-joint COCO-style file of the same images (unified AP)")
    parser.add_argument("--mpii-ann", type=Path, help="MPII val file in MMPose's JSON format")
    parser.add_argument("--mpii-img-dir", type=Path, help="its image folder")
    parser.add_argument("--mpii-headbox-file", type=Path,
                        help="official mpii_gt_val.mat (head sizes for PCKh; not needed when "
                             "the JSON has head_box fields)")
    parser.add_argument("--mpii-unified-ann", type=Path,
                        help="21-joint COCO-style file of the same images (unified AP)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=0,
                        help="evaluate the first N instances of each set (whole images; 0: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, help="write the metrics to this JSON file")
    return parser, parser.parse_args(argv)


def data_config(args: argparse.Namespace) -> DataConfig:
    """The validation files named on the command line (at least one dataset).

    Raises:
        ValueError: no dataset, or an annotation file without its image folder.
        FileNotFoundError: a named file or folder that does not exist.
    """
    splits = {}
    for dataset, extra in (("coco", {}), ("mpii", {"headbox_file": args.mpii_headbox_file})):
        ann, img_dir = getattr(args, f"{dataset}_ann"), getattr(args, f"{dataset}_img_dir")
        unified = getattr(args, f"{dataset}_unified_ann")
        given = [ann, img_dir, unified, *extra.values()]
        if not any(v is not None for v in given):
            continue
        if ann is None or img_dir is None:
            raise ValueError(f"--{dataset}-ann and --{dataset}-img-dir go together; "
                             f"pass both to evaluate on {dataset.upper()}")
        splits[f"{dataset}_val"] = DatasetFiles(
            str(ann), str(img_dir), unified_ann_file=None if unified is None else str(unified),
            **{k: None if v is None else str(v) for k, v in extra.items()})
    if not splits:
        raise ValueError("name at least one validation set: --coco-ann/--coco-img-dir "
                         "and/or --mpii-ann/--mpii-img-dir")
    config = DataConfig(**splits)
    config.check()
    return config


def codec_for(spec: PoseModelSpec) -> CodecConfig:
    """The evaluation crops and SimCC decoding of a model: its own input size and bins."""
    return CodecConfig(spec.input_size, spec.sigma, spec.simcc_split_ratio)


def keypoint_set_of(spec: PoseModelSpec) -> str:
    """The keypoint set a model predicts, from its keypoint count."""
    if spec.num_keypoints not in KEYPOINT_SET_BY_COUNT:
        raise ValueError(f"the model predicts {spec.num_keypoints} keypoints; known keypoint "
                         f"sets have {sorted(KEYPOINT_SET_BY_COUNT)}")
    return KEYPOINT_SET_BY_COUNT[spec.num_keypoints]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser, args = parse_args(argv)
    try:
        for what in ("config", "checkpoint"):
            if not getattr(args, what).is_file():
                raise FileNotFoundError(f"--{what} {getattr(args, what)} does not exist")
        data = data_config(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))

    with tempfile.TemporaryDirectory(prefix="unipose_eval_") as tmp:
        paths = prepare_records(data, tmp)
        eval_sets = [
            EvalSet(name.removesuffix("_val"), str(paths[name]), files.ann_file,
                    files.unified_ann_file, args.max_samples)
            for name, files in data.splits().items()
        ]
        model = build_from_config(args.config, args.checkpoint, device=args.device,
                                  trust_checkpoint=args.trust_checkpoint)
        keypoint_set = keypoint_set_of(model.spec)
        print(f"{args.checkpoint}: {keypoint_set} keypoints ({model.spec.num_keypoints}), "
              f"input {model.spec.input_size}, on {', '.join(s.name for s in eval_sets)}")
        metrics = evaluate_model(model, keypoint_set, codec_for(model.spec), eval_sets,
                                 batch_size=args.batch_size, device=args.device)

    print(format_table({args.config.stem: metrics}))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        plain = {k: None if math.isnan(v) else v for k, v in metrics.items()}
        args.output.write_text(json.dumps(plain, indent=2))
        print(f"metrics written to {args.output}")
    return metrics


if __name__ == "__main__":
    main()
