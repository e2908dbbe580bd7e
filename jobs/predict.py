"""Predict the keypoints of the people in images with a trained model (top-down).

    python jobs/predict.py --checkpoint runs/demo/demo/best.pth images/ --out predictions/
    python jobs/predict.py --checkpoint rtmpose-m.pth --config rtmpose-m_coco.py \\
        val2017/ --bbox-file COCO_val2017_detections_AP_H_56_person.json --out preds/
    python jobs/predict.py --checkpoint student.onnx images/ --out predictions/

The model may be any here: the 21-joint student, a 17-joint COCO or 16-joint MPII model, as
an MMPose checkpoint (its config given, or the ``model_config.py`` a run of this project
writes beside it) or as an ONNX export from ``jobs/export.py``. Boxes come from a COCO
detection-results file (``--bbox-file``) or the person boxes of a COCO annotation file
(``--gt-boxes``), matched by image ids read from COCO-style file names
(``000000000785.jpg`` -> 785); else each image is one person. Writes ``predictions.json``
(COCO results format), ``keypoints.json`` (joint names) and one ``.png`` overlay per image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from unipose_ray.checkpoints import CheckpointError
from unipose_ray.evaluation.topdown import BoxFileError
from unipose_ray.export import load_pose_model
from unipose_ray.inference import ImageError, predict_images


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="MMPose checkpoint (.pth) or ONNX export (.onnx)")
    parser.add_argument("--config", type=Path,
                        help="MMPose config of a .pth (default: model_config.py beside it)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--bbox-file", type=Path,
                        help="COCO person detections (results JSON); default: whole images")
    parser.add_argument("--gt-boxes", type=Path, metavar="ANN_FILE",
                        help="use the person boxes of this COCO annotation file instead")
    parser.add_argument("--bbox-score-thr", type=float, default=0.0,
                        help="drop detections scoring below this")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                        help="average with the mirrored crop (default: the model's test_cfg)")
    parser.add_argument("--draw-thr", type=float, default=0.3,
                        help="people and joints scored below this are not drawn")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle the checkpoint without restrictions (trusted files only)")
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    parser, args = parse_args(argv)
    device = "cpu" if args.checkpoint.suffix.lower() == ".onnx" else args.device
    try:
        model = load_pose_model(args.checkpoint, args.config, device=device,
                                trust_checkpoint=args.trust_checkpoint)
        results = predict_images(model, args.inputs, args.out, args.bbox_file,
                                 args.bbox_score_thr, args.flip_test, args.batch_size, device,
                                 args.draw_thr, model_name=str(args.checkpoint),
                                 gt_ann_file=args.gt_boxes)
    except (FileNotFoundError, CheckpointError, ImageError, BoxFileError, ValueError) as err:
        parser.error(str(err))
    images = len({r["image_id"] for r in results})
    print(f"{len(results)} people in {images} images -> {args.out / 'predictions.json'}, "
          f"overlays in {args.out}")
    return results


if __name__ == "__main__":
    main()
