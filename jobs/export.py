"""Export a pose checkpoint to ONNX (the mmdeploy convention) and check it against PyTorch.

    python jobs/export.py --checkpoint runs/demo/student/best.pth --out student.onnx
    python jobs/export.py --checkpoint rtmpose-m_coco.pth \\
        --model-config rtmpose-m_8xb256-420e_coco-256x192.py --out rtmpose-m.onnx \\
        --check-images val2017_sample/

Without ``--model-config`` the checkpoint's ``model_config.py`` (written beside it by a run of this
project) is used. The file takes normalised ``(B, 3, H, W)`` crops and returns ``simcc_x``,
``simcc_y``; its metadata carries input size, SimCC settings, keypoint names, mean/std and
channel order (see :mod:`unipose_ray.deploy.onnx`). After writing it, the job runs the file with
onnxruntime and the model with PyTorch on the same crops: by default person crops of
generated images (:mod:`unipose_ray.data.synthetic`, drawn in memory), with
``--check-images DIR`` the person crops of a folder of images with a COCO person-keypoints
file, with ``--check-images none`` seeded random images. It fails, and removes the file,
when the logits differ by more than ``--atol`` or the decoded keypoints differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from unipose_ray.cli import InputError, UsageError, add_model_flags, entry, job_parser
from unipose_ray.deploy.onnx import OnnxPoseModel, export_onnx
from unipose_ray.deploy.onnx_check import (
    DEFAULT_ATOL,
    ExportCheck,
    coco_file_in,
    compare_with_pytorch,
    generated_crops,
    person_crops,
)
from unipose_ray.models import PoseModelSpec, build_from_config
from unipose_ray.models.checkpoints import model_config_for

RANDOM_IMAGES = "none"
"""``--check-images none``: seeded random images instead of person crops."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = job_parser(__doc__)
    add_model_flags(parser)
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--check-images", default=None, metavar="DIR_OR_NONE",
                        help="folder of images + COCO person-keypoints file to check on, or "
                             f"'{RANDOM_IMAGES}' for random images (default: person crops of "
                             "generated images)")
    parser.add_argument("--max-crops", type=int, default=16, help="crops (or images) checked")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help="largest |ONNX - PyTorch| logit difference accepted")
    return parser.parse_args(argv)


def check_folder(value: str | None) -> Path | None:
    """The folder to crop check images from; None for generated or random images.

    Raises:
        InputError: a named folder that is missing or has no COCO file.
    """
    if value is None or value.lower() == RANDOM_IMAGES:
        return None
    folder = Path(value)
    if not folder.is_dir():
        raise InputError(f"--check-images {folder} is not a folder (pass a folder of images "
                         f"with a COCO person-keypoints file, or '{RANDOM_IMAGES}')")
    coco_file_in(folder)
    return folder


def check_images(folder: Path | None, random_images: bool, spec: PoseModelSpec, count: int
                 ) -> tuple[torch.Tensor, str]:
    """``(N, 3, H, W)`` uint8 RGB images at the model's input size, and where they come
    from: the person crops of ``folder``, random images, else generated person crops."""
    if folder is not None:
        crops = person_crops(folder, spec, limit=count)
        return crops, f"{len(crops)} person crops from {folder}"
    if random_images:
        w, h = spec.input_size
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (count, 3, h, w), dtype=torch.uint8, generator=generator)
        return images, f"{count} random images (--check-images {RANDOM_IMAGES})"
    crops = generated_crops(spec, limit=count)
    return crops, f"{len(crops)} person crops of generated images (unipose_ray.data.synthetic)"


def report(check: ExportCheck, atol: float) -> str:
    """The printed verdict: the logit difference against its scales, keypoints, OK/FAILED."""
    keypoints = "yes"
    if not check.keypoints_equal:
        keypoints = f"NO, {check.keypoints_differing} of {check.num_keypoints} differ"
        if check.max_abs_diff <= atol:  # then only ties can move (see ExportCheck)
            keypoints += (f" (where PyTorch's two best bins are within "
                          f"{2 * check.max_abs_diff:.2g}: ties that float32 rounding decides)")
    return (f"max |logit diff| onnxruntime vs PyTorch: {check.max_abs_diff:.3g} "
            f"(atol {atol:g}; logits up to {check.max_abs_logit:.3g}; PyTorch float32 vs "
            f"float64: {check.float32_error:.3g})\n"
            f"decoded keypoints equal: {keypoints}\n"
            f"check {'OK' if check.passed(atol) else 'FAILED'}")


def make_out_folder(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission: the path given is wrong
        raise UsageError(f"cannot create the folder of --out {out}: {err}") from None


@entry
def main(argv: list[str] | None = None) -> ExportCheck:
    args = parse_args(argv)
    if args.max_crops < 1:
        raise UsageError(f"--max-crops must be >= 1, got {args.max_crops}")
    config = model_config_for(args.checkpoint, args.model_config)
    folder = check_folder(args.check_images)
    random_images = folder is None and args.check_images is not None
    make_out_folder(args.out)

    model = build_from_config(config, args.checkpoint, trust_checkpoint=args.trust_checkpoint,
                              trust_hint="--trust-checkpoint")
    spec = model.spec
    print(f"{args.checkpoint} ({config.name}): {spec.num_keypoints} keypoints, input "
          f"{spec.input_size}, SimCC bins {spec.simcc_bins}")
    export_onnx(model, args.out)
    print(f"wrote {args.out}")

    images, source = check_images(folder, random_images, spec, args.max_crops)
    print(f"checking on {source}")
    check = compare_with_pytorch(model, OnnxPoseModel(args.out), images)
    print(report(check, args.atol))
    if not check.passed(args.atol):
        args.out.unlink()
        print(f"the export does not reproduce the PyTorch model; removed {args.out}",
              file=sys.stderr)
        raise SystemExit(1)
    return check


if __name__ == "__main__":
    main()
