"""Train a single-dataset teacher (the paper's "self-trained teacher") on Ray Train.

    python jobs/train_teacher.py --config demo --teacher mpii --output-dir outputs/demo

Same loop as the student, on one dataset with its own keypoint set and input size, no KD
terms. Writes an MMPose config + checkpoint that ``jobs/distill.py`` (or MMPose) can load.
"""

from __future__ import annotations

from dataclasses import replace

from unipose_ray.cli import add_run_flags, entry, job_parser
from unipose_ray.config import PRESETS, ConfigError, load_config
from unipose_ray.config.resume import check_resume
from unipose_ray.workflows.preflight import check_inputs


@entry
def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__)
    add_run_flags(parser, config="demo", presets=PRESETS, output_dir="outputs/demo",
                  resume=True, example="teacher_epochs=20")
    parser.add_argument("--teacher", required=True, help="name of a teacher in the config")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    teachers = {t.name: t for t in config.teachers}
    if args.teacher not in teachers:
        raise ConfigError(f"--teacher {args.teacher}: the config's teachers are {list(teachers)}")
    own = replace(config, teachers=(replace(teachers[args.teacher], checkpoint=None),))
    check_inputs(own)  # its checkpoint is what this job makes
    run = f"{config.run.name}_teacher_{args.teacher}"
    check_resume(replace(own, run=replace(own.run, name=run)), args.output_dir,
                 anyway=args.resume_anyway)

    from unipose_ray.runtime.distributed import init_ray  # noqa: PLC0415 (seconds: after the checks)
    from unipose_ray.workflows.training import run_train_teacher  # noqa: PLC0415

    init_ray(args.address)
    run_train_teacher(config, args.teacher, args.output_dir)


if __name__ == "__main__":
    main()
