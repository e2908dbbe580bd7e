"""Evaluate one MMPose-format checkpoint on any datasets' validation sets: the cross-dataset table.

    python jobs/evaluate.py --checkpoint runs/demo/models/demo/best.pth \\
        --coco-ann person_keypoints_val2017.json --coco-img-dir val2017 \\
        --mpii-ann mpii_val.json --mpii-img-dir images --mpii-headbox-file mpii_gt_val.mat \\
        --output table.json
    python jobs/evaluate.py --checkpoint rtmpose-m.pth --model-config rtmpose-m_coco.py \\
        --coco-ann person_keypoints_val2017.json --coco-img-dir val2017

Without ``--model-config`` the ``model_config.py`` a run of this project writes beside its
``best.pth`` is used. The table's row is named after the checkpoint (its folder and file
name) and has the demo's columns.

Any dataset's flags (``--aic-ann``, ``--crowdpose-ann``, ``--halpe26-ann``, with their
``-img-dir``) add its validation set. The model may be a unified student or one dataset's
model: its keypoint set follows from the joint names its checkpoint carries (from its
keypoint count without names), and joints it does not predict count as misses. Predictions are MMPose's: the same crops, flip test as the config's
``test_cfg`` (``--no-flip-test`` to switch it off), and with ``--bbox-file`` the person
detections MMPose's published COCO numbers use instead of the GT boxes. ``--output`` writes
the metrics as flat JSON (``coco_AP``, ``mpii_PCKh``, ``mpii_PCKh@0.1``, ``unified_AP``,
``score``, ...; NaN is written as ``null``) in the table's units: AP and AR in %, like PCKh.

``--workers N`` runs the model on N Ray tasks instead of this process (the cluster of
``--address`` / ``RAY_ADDRESS``, or a local Ray), the boxes split among them in whole
batches, each task on a GPU where the cluster has GPUs; the metrics are computed here, once,
and equal this process's on the same device (``unipose_ray.workflows.evaluation``).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

from unipose_ray.cli import InputError, UsageError, add_model_flags, entry, job_parser
from unipose_ray.config.files import split_dataset
from unipose_ray.data.sources import DataConfig, DatasetFiles, prepare_records
from unipose_ray.deploy.predict import check_device, model_keypoints
from unipose_ray.evaluation.cross_dataset import (
    EvalSet,
    as_percent,
    eval_inputs,
    evaluate_model,
    format_table,
    table_columns,
)
from unipose_ray.models import build_from_config
from unipose_ray.models.checkpoints import model_config_for
from unipose_ray.skeleton import DATASET_SETS, KeypointSet, covering_skeleton
from unipose_ray.workflows.evaluation import EvalWorkers, submit_evaluation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    add_model_flags(parser)
    described = {"coco": "COCO person-keypoints val file (17 joints)",
                 "mpii": "MPII val file in MMPose's JSON format",
                 "aic": "AIC val file: MMPose's aic_val.json or AI Challenger's own list",
                 "crowdpose": "CrowdPose file (MMPose's mmpose_crowdpose_test.json)",
                 "halpe26": "Halpe-FullBody val file (136 joints, or 26)"}
    for dataset in DATASET_SETS:
        parser.add_argument(f"--{dataset}-ann", type=Path, help=described[dataset])
        parser.add_argument(f"--{dataset}-img-dir", type=Path, help="its image folder")
        parser.add_argument(f"--{dataset}-unified-ann", type=Path,
                            help="COCO-style file of the same images with every joint of the "
                                 "model's skeleton (unified AP; generated data)")
    parser.add_argument("--bbox-file", type=Path,
                        help="COCO person detections (results JSON, MMPose's bbox_file, e.g. "
                             "COCO_val2017_detections_AP_H_56_person.json) to run on instead "
                             "of the GT boxes")
    parser.add_argument("--bbox-score-thr", type=float, default=0.0,
                        help="drop detections scoring below this (default 0: keep all)")
    parser.add_argument("--mpii-headbox-file", type=Path,
                        help="official mpii_gt_val.mat (head sizes for PCKh; not needed when "
                             "the JSON has head_box fields)")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                        help="average with the mirrored crop (default: the config's "
                             "test_cfg.flip_test, on for RTMPose)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=0,
                        help="evaluate the first N instances of each set (whole images; 0: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="this process's device (without --workers)")
    parser.add_argument("--workers", type=int, default=0,
                        help="evaluate on N Ray tasks, each with a GPU where the cluster has "
                             "GPUs, else --worker-cpus CPUs (0: in this process)")
    parser.add_argument("--worker-cpus", type=float, default=1.0,
                        help="CPUs each task reserves (default 1)")
    parser.add_argument("--address", help="Ray cluster to run the tasks on (default: "
                                          "RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--output", type=Path,
                        help="write the metrics to this JSON file (AP and AR in %%)")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error(f"--workers {args.workers}: pass 0 (this process) or more Ray tasks")
    return args


PATH_FLAGS = (*(f"{d}_{f}" for d in DATASET_SETS for f in ("ann", "img_dir", "unified_ann")),
              "bbox_file", "mpii_headbox_file")


def check_paths(args: argparse.Namespace) -> None:
    """Every file or folder named on the command line that does not exist, in one error."""
    missing = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in PATH_FLAGS
               if getattr(args, name) is not None and not getattr(args, name).exists()]
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        raise InputError(f"{', '.join(missing)} {verb} not exist")


def data_config(args: argparse.Namespace) -> DataConfig:
    """The validation files named on the command line (at least one dataset).

    Raises:
        UsageError: no dataset, or an annotation file without its image folder.
        InputError: a named file or folder that does not exist.
    """
    check_paths(args)
    splits = {}
    if args.bbox_file is not None and args.coco_ann is None:
        raise UsageError("--bbox-file holds COCO person detections: pass --coco-ann and "
                         "--coco-img-dir too")
    extras = {"coco": {"bbox_file": args.bbox_file},
              "mpii": {"headbox_file": args.mpii_headbox_file}}
    for dataset in DATASET_SETS:
        extra = extras.get(dataset, {})
        ann, img_dir = getattr(args, f"{dataset}_ann"), getattr(args, f"{dataset}_img_dir")
        unified = getattr(args, f"{dataset}_unified_ann")
        given = [ann, img_dir, unified, *extra.values()]
        if not any(v is not None for v in given):
            continue
        if ann is None or img_dir is None:
            raise UsageError(f"--{dataset}-ann and --{dataset}-img-dir go together; "
                             f"pass both to evaluate on {dataset.upper()}")
        splits[f"{dataset}_val"] = DatasetFiles(
            str(ann), str(img_dir), unified_ann_file=None if unified is None else str(unified),
            **{k: None if v is None else str(v) for k, v in extra.items()},
            **({"bbox_score_thr": args.bbox_score_thr} if dataset == "coco" else {}))
    if not splits:
        raise UsageError("name at least one validation set: --<dataset>-ann and "
                         f"--<dataset>-img-dir for any of {', '.join(DATASET_SETS)}")
    config = DataConfig(**splits)
    config.check()
    return config


def row_name(checkpoint: Path) -> str:
    """The table row of a checkpoint: its folder and file name (``demo/best.pth``), so that
    two runs' ``best.pth`` stay apart."""
    folder = checkpoint.parent.name
    return f"{folder}/{checkpoint.name}" if folder else checkpoint.name


@entry
def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    config = model_config_for(args.checkpoint, args.model_config)
    device = "cpu" if args.workers else check_device(args.device)  # tasks pick their own
    data = data_config(args)
    model = build_from_config(config, args.checkpoint, device=device,
                              trust_checkpoint=args.trust_checkpoint,
                              trust_hint="--trust-checkpoint")
    keypoint_set = model_keypoints(model, str(args.checkpoint))
    # the union of the model's datasets and the evaluated ones: the slots of generated files
    skeleton = covering_skeleton(keypoint_set, data.datasets())
    flip_test = model.spec.flip_test if args.flip_test is None else args.flip_test

    with tempfile.TemporaryDirectory(prefix="unipose_eval_") as tmp:
        paths = prepare_records(data, tmp, skeleton)
        eval_sets = [
            EvalSet(split_dataset(name), str(paths[name]), files.ann_file,
                    files.unified_ann_file, args.max_samples, img_dir=files.img_dir,
                    bbox_file=files.bbox_file, bbox_score_thr=files.bbox_score_thr)
            for name, files in data.splits().items()
        ]
        boxes = f"detections of {args.bbox_file.name}" if args.bbox_file else "GT boxes"
        print(f"{args.checkpoint} ({config.name}): {keypoint_set.name} keypoints "
              f"({model.spec.num_keypoints}), input {model.spec.input_size}, flip test "
              f"{'on' if flip_test else 'off'}, on {', '.join(s.name for s in eval_sets)} "
              f"({boxes})")
        if args.workers:
            metrics = evaluate_on_ray(model, keypoint_set, eval_sets, args, flip_test, skeleton)
        else:
            metrics = evaluate_model(model, keypoint_set, model.spec.codec, eval_sets,
                                     batch_size=args.batch_size, device=device,
                                     flip_test=flip_test, skeleton=skeleton)

    print(format_table({row_name(args.checkpoint): metrics}, table_columns(data.datasets())))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(as_written(metrics), indent=2))
        print(f"metrics written to {args.output}")
    return metrics


def as_written(metrics: dict[str, float]) -> dict[str, float | None]:
    """The metrics as ``--output`` writes them: the table's units (AP, AR in %), NaN as null."""
    return {k: None if math.isnan(v) else as_percent(k, v) for k, v in metrics.items()}


def evaluate_on_ray(model, keypoint_set: KeypointSet, eval_sets: list[EvalSet],
                    args: argparse.Namespace, flip_test: bool, skeleton: KeypointSet
                    ) -> dict[str, float]:
    """The metrics from ``--workers`` Ray tasks, a GPU each where the cluster has GPUs."""
    import ray  # noqa: PLC0415

    from unipose_ray.runtime.distributed import init_ray  # noqa: PLC0415 (seconds)

    init_ray(args.address)
    gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    workers = EvalWorkers(args.workers, args.worker_cpus, gpus)
    print(f"on {args.workers} Ray task(s), each {args.worker_cpus:g} CPU(s)"
          + (" and a GPU" if gpus else ""))
    return submit_evaluation(model, keypoint_set, model.spec.codec, eval_inputs(eval_sets),
                             workers, flip_test, args.batch_size, skeleton).result()


if __name__ == "__main__":
    main()
