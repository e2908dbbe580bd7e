"""Predict the keypoints of the people in images with a trained model (top-down).

    python jobs/predict.py --checkpoint runs/demo/demo/best.pth images/ --out predictions/
    python jobs/predict.py --checkpoint rtmpose-m.pth --model-config rtmpose-m_coco.py \\
        val2017/ --bbox-file COCO_val2017_detections_AP_H_56_person.json --out preds/
    python jobs/predict.py --checkpoint student.onnx images/ --out predictions/

The model may be any here: the 21-joint student, a 17-joint COCO or 16-joint MPII model, as
an MMPose checkpoint (its config given, or the ``model_config.py`` a run of this project
writes beside it) or as an ONNX export from ``jobs/export.py``. Boxes come from a COCO
detection-results file (``--bbox-file``) or the person boxes of a COCO annotation file
(``--gt-boxes``), matched by image ids read from COCO-style file names
(``000000000785.jpg`` -> 785); else each image is one person. Writes ``predictions.json``
(COCO results format), ``keypoints.json`` (joint names) and one ``.png`` overlay per image,
and prints how many people and joints were drawn (``--draw-thr``) and which images got no box.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from unipose_ray.cli import add_model_flags, entry, job_parser
from unipose_ray.deploy.onnx import load_pose_model
from unipose_ray.deploy.predict import PredictionSummary, check_device, predict_images

MAX_NAMES = 5
"""Images without a box named in the summary; the rest are counted."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    parser.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders")
    add_model_flags(parser, onnx=True)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument("--bbox-file", type=Path,
                       help="COCO person detections (results JSON); default: whole images")
    boxes.add_argument("--gt-boxes", type=Path, metavar="ANN_FILE",
                       help="use the person boxes of this COCO annotation file instead")
    parser.add_argument("--bbox-score-thr", type=float, default=0.0,
                        help="drop detections scoring below this")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                        help="average with the mirrored crop (default: the model's test_cfg)")
    parser.add_argument("--draw-thr", type=float, default=0.3,
                        help="people and joints scored below this are not drawn")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def summary_lines(summary: PredictionSummary, args: argparse.Namespace) -> list[str]:
    """What was drawn (and what not, with the flag that decides it), and the images that
    got no box from the box file."""
    lines = []
    drawn = (f"drawn: {summary.people_drawn} of {summary.people} people (score >= "
             f"{summary.draw_thr:g}, --draw-thr)")
    if summary.people and not summary.people_drawn:
        lines.append(f"{drawn}: all scored below it; lower --draw-thr to draw them")
    elif summary.people:
        joints = summary.joints_drawn + summary.joints_hidden
        lines.append(f"{drawn}, with {summary.joints_drawn} of their {joints} joints "
                     f"({summary.joints_hidden} scored below it)")
    missing = summary.images_without_boxes
    if missing:
        source = args.bbox_file or args.gt_boxes or "the boxes"
        if args.bbox_file and args.bbox_score_thr > 0:
            source = f"{source} (boxes scoring >= {args.bbox_score_thr:g}, --bbox-score-thr)"
        names = ", ".join(missing[:MAX_NAMES])
        more = f" and {len(missing) - MAX_NAMES} more" if len(missing) > MAX_NAMES else ""
        lines.append(f"{len(missing)} of {summary.images} images got no box from {source}, "
                     f"so no prediction: {names}{more}")
    return lines


@entry
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    onnx = args.checkpoint.suffix.lower() == ".onnx"
    device = "cpu" if onnx else check_device(args.device)
    model = load_pose_model(args.checkpoint, args.model_config, device=device,
                            trust_checkpoint=args.trust_checkpoint,
                            trust_hint="--trust-checkpoint")
    results, summary = predict_images(
        model, args.inputs, args.out, args.bbox_file, args.bbox_score_thr, args.flip_test,
        args.batch_size, device, args.draw_thr, model_name=str(args.checkpoint),
        gt_ann_file=args.gt_boxes)
    print(f"{summary.people} people in {summary.images - len(summary.images_without_boxes)} "
          f"images -> {args.out / 'predictions.json'}, overlays in {args.out}")
    print("\n".join(summary_lines(summary, args)))
    return results


if __name__ == "__main__":
    main()
