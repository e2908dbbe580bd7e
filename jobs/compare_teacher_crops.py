"""How a teacher's crop choice changes its accuracy: each teacher of a finished run, on its
validation set, through its own crops and through the student's crop grown to its aspect.

    python jobs/compare_teacher_crops.py --config demo --output-dir outputs/demo

A teacher of another aspect ratio than the student (MPII's 256x256 against 192x256) can be
handed the person box as MMPose's pipeline crops it for that teacher (what training does),
or the student's crop grown to the teacher's aspect ratio (what it did before): for a person
wider than the student's aspect ratio the second shows the person up to 4/3 smaller than
the teacher was trained on. This prints the teacher's own metrics both ways and how many
people are that wide.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from unipose_ray.cli import add_run_flags, entry, job_parser
from unipose_ray.config import PRESETS, load_config
from unipose_ray.data.geometry import BOX_PADDING, box_center_scale, fix_aspect_ratio
from unipose_ray.data.records import InstanceRecord, write_records
from unipose_ray.evaluation.cross_dataset import EvalSet, evaluate_model, format_table
from unipose_ray.models import build_from_config
from unipose_ray.workflows.training import prepare_data, teacher_run_dir

COLUMNS = ("coco_AP", "mpii_PCKh", "mpii_PCKh@0.1", "score")


def student_crop_box(record: InstanceRecord, student_size: tuple[int, int]) -> InstanceRecord:
    """The record with its box replaced by the box of the student's crop (padding removed),
    so that any model crops it as the student's crop grown to its own aspect ratio."""
    center, scale = box_center_scale(record.bbox)
    size = fix_aspect_ratio(scale, student_size) / BOX_PADDING
    return replace(record, bbox=np.array([*(center - size / 2), *size], dtype=np.float32))


def grown_eval_set(eval_set: EvalSet, student_size: tuple[int, int], out: Path) -> EvalSet:
    """The set on its GT boxes (not detections) replaced by the student's crop boxes."""
    records = [student_crop_box(r, student_size) for r in eval_set.records()]
    return replace(eval_set, records_path=str(write_records(records, out)), bbox_file=None)


@entry
def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = job_parser(__doc__)
    add_run_flags(parser, config="demo", presets=PRESETS, output_dir=None,
                  output_help="the finished run's folder", address=False)
    args = parser.parse_args(argv)
    output_dir = args.output_dir.resolve()
    config, data = prepare_data(load_config(args.config, args.overrides), output_dir)
    student_size = config.student.codec.input_size
    rows = {}
    for teacher in config.teachers:
        if teacher.checkpoint is None:
            run_dir = teacher_run_dir(config, teacher, output_dir)
            if not (run_dir / "best.pth").is_file():
                parser.error(f"no trained teacher '{teacher.name}' in {run_dir}: run the "
                             "distillation first (jobs/distill.py) with this output folder")
            teacher = replace(teacher, config=str(run_dir / "model_config.py"),
                              checkpoint=str(run_dir / "best.pth"))
        model = build_from_config(teacher.config, teacher.checkpoint,
                                  trust_checkpoint=teacher.trust_checkpoint)
        own = [replace(s, bbox_file=None) for s in data.eval_sets if s.name == teacher.dataset]
        grown = [grown_eval_set(s, student_size, output_dir / "records" /
                                f"{s.name}_val_grown_{teacher.name}.parquet") for s in own]
        for label, sets in (("own crop", own), ("student crop grown", grown)):
            rows[f"{teacher.name} ({label})"] = evaluate_model(
                model, teacher.dataset, model.spec.codec, sets, flip_test=config.run.val_flip_test)
        records = [r for s in own for r in s.records()]
        wide = sum(r.bbox[2] / r.bbox[3] > student_size[0] / student_size[1] for r in records)
        print(f"teacher '{teacher.name}' (input {model.spec.input_size}, student "
              f"{student_size}): {wide} of {len(records)} people are wider than the student's "
              "aspect ratio")
    print(format_table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
